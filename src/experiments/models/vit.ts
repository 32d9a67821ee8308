/**
 * VisionTransformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"), CLIP's image tower without the
 * pre-LayerNorm: patches -> Linear embedding, a learned class token in front, learned positions, pre-norm
 * TransformerBlocks on the fused attention, a final LayerNorm, the class token -> projection (no bias).
 *
 * ```ts
 * const vit = new VisionTransformer({ imageSize: 32, patchSize: 4, channels: 3, width: 128, layers: 4, heads: 4, embedDim: 128 });
 * vit.forwardTokens(ml.randn([2, 3, 32, 32])).shape;   // [2, 65, 128]: class token + 64 patches
 * vit.forward(ml.randn([2, 3, 32, 32])).shape;         // [2, 128] (not normalised)
 * ```
 * Parameter names (bench/torch/clip_model.py uses the same): patchEmbed.{weight,bias}, classToken [1, 1, W],
 * posEmbed [1 + P, W], blocks.<i>.*, lnPost.*, proj.weight [E, W].
 */
import * as ml from '../../index';
import { makeBlocks, normalParam, patchify, runBlocks } from './common';

export interface VisionTransformerOptions {
  imageSize: number;
  patchSize: number;
  channels: number;
  width: number;
  layers: number;
  heads: number;
  embedDim: number;
  mlpRatio?: number;
  dropout?: number;
  checkpointing?: boolean;
}

/** Masked image modelling: patches where patchMask [B, P, 1] is 1 are replaced by maskToken [W] before positions. */
export interface PatchMasking {
  maskToken: ml.Tensor;
  patchMask: ml.Tensor;
}

export class VisionTransformer extends ml.nn.Module {
  patchEmbed: ml.nn.Linear;
  classToken: ml.Tensor<'f32'>;
  posEmbed: ml.Tensor<'f32'>;
  blocks: ml.nn.ModuleList<ml.nn.TransformerBlock>;
  lnPost: ml.nn.LayerNorm;
  proj: ml.nn.Linear;
  readonly numPatches: number;
  checkpointing: boolean;

  constructor(readonly opts: VisionTransformerOptions) {
    super();
    const { imageSize, patchSize, channels, width } = opts;
    this.numPatches = (imageSize / patchSize) ** 2;
    this.checkpointing = opts.checkpointing ?? false;
    this.patchEmbed = this.registerModule('patchEmbed', new ml.nn.Linear(channels * patchSize * patchSize, width));
    // CLIP: scale = width^-0.5 for the class token and the positions.
    this.classToken = this.registerParameter('classToken', normalParam([1, 1, width], width ** -0.5));
    this.posEmbed = this.registerParameter('posEmbed', normalParam([1 + this.numPatches, width], width ** -0.5));
    this.blocks = this.registerModule('blocks', makeBlocks(opts.layers, width, opts.heads, opts.mlpRatio ?? 4, opts.dropout ?? 0, false));
    this.lnPost = this.registerModule('lnPost', new ml.nn.LayerNorm(width));
    this.proj = this.registerModule('proj', new ml.nn.Linear(width, opts.embedDim, { bias: false }));
  }

  /** The embedded input sequence [B, 1 + P, W] (class token, patches, positions), before the blocks. */
  embed(images: ml.Tensor, masking?: PatchMasking): ml.Tensor<'f32'> {
    const { imageSize, patchSize, channels, width } = this.opts;
    return ml.tidy(() => {
      const B = images.shape[0];
      let x = this.patchEmbed.forward(patchify(images, channels, imageSize, patchSize));
      if (masking) {
        // x (1 - m) + token m: arithmetic, so both the kept patches and the mask token get their gradients.
        const m = masking.patchMask;
        x = ml.add(ml.mul(x, ml.sub(1, m)), ml.mul(masking.maskToken, m));
      }
      const cls = this.classToken.broadcastTo([B, 1, width]);
      return ml.add(ml.concat([cls, x], 1), this.posEmbed);
    });
  }

  /** images [B, C, H, W] -> every token after the final LayerNorm, [B, 1 + P, W] (the class token first). */
  forwardTokens(images: ml.Tensor, masking?: PatchMasking): ml.Tensor<'f32'> {
    return ml.tidy(() => {
      const h = runBlocks(this.blocks, this.embed(images, masking), { causal: false, keyPaddingMask: null, checkpointing: this.checkpointing });
      return this.lnPost.forward(h);
    });
  }

  /** tokens [B, 1 + P, W] -> the projected class token [B, E] (not normalised). */
  pool(tokens: ml.Tensor): ml.Tensor<'f32'> {
    const [B, , W] = tokens.shape;
    return ml.tidy(() => this.proj.forward(tokens.slice(1, 0, 1).reshape([B, W])));
  }

  /** images [B, C, H, W] -> [B, E] (not normalised). */
  forward(images: ml.Tensor): ml.Tensor<'f32'> {
    return ml.tidy(() => this.pool(this.forwardTokens(images)));
  }
}
