/**
 * `shared`: the single-tower design. ONE stack of transformer blocks (and one final LayerNorm) encodes images and
 * captions; what tells them apart is the input: patch embeddings + image positions + the image modality
 * embedding, or token embeddings + text positions + the text modality embedding. The two modalities run through
 * the blocks separately (two sequences, not one concatenated sequence), so InfoNCE works exactly as for `dual`,
 * and each has its own projection head.
 *
 * Text attention here is bidirectional with a key padding mask (not causal): there is no generation in this
 * stage, the pooled end-of-text token then sees the whole caption either way, and the same blocks serve images,
 * which have no order. Pooling: the class token for images, the end-of-text token for captions.
 * The tower has visionWidth / visionLayers / visionHeads; textWidth must equal visionWidth, textLayers and
 * textHeads are unused.
 */
import * as ml from '../../index';
import { AlignModelConfig } from './config';
import { AlignModel } from './clip';
import { makeBlocks, normalParam, paddingMask, patchify, poolAt, readLengths, reinit, runBlocks } from './common';
import { PatchMasking } from './vit';
import { TokenMasking, checkTokens } from './text';

export class SharedEncoder extends AlignModel {
  patchEmbed: ml.nn.Linear;
  classToken: ml.Tensor<'f32'>;
  imagePos: ml.Tensor<'f32'>;
  tokenEmbed: ml.nn.Embedding;
  textPos: ml.Tensor<'f32'>;
  /** [2, W]: row 0 is added to every image token, row 1 to every text token. */
  modalityEmbed: ml.Tensor<'f32'>;
  blocks: ml.nn.ModuleList<ml.nn.TransformerBlock>;
  lnFinal: ml.nn.LayerNorm;
  visualProj: ml.nn.Linear;
  textProj: ml.nn.Linear;

  constructor(config: AlignModelConfig) {
    super(config);
    const c = config, W = c.visionWidth;
    const P = (c.imageSize / c.patchSize) ** 2;
    this.patchEmbed = this.registerModule('patchEmbed', new ml.nn.Linear(c.channels * c.patchSize * c.patchSize, W));
    this.classToken = this.registerParameter('classToken', normalParam([1, 1, W], W ** -0.5));
    this.imagePos = this.registerParameter('imagePos', normalParam([1 + P, W], W ** -0.5));
    this.tokenEmbed = this.registerModule('tokenEmbed', new ml.nn.Embedding(c.vocabSize, W));
    reinit(this.tokenEmbed, 'weight', normalParam([c.vocabSize, W], 0.02));
    this.textPos = this.registerParameter('textPos', normalParam([c.contextLength, W], 0.01));
    this.modalityEmbed = this.registerParameter('modalityEmbed', normalParam([2, W], 0.02));
    this.blocks = this.registerModule('blocks', makeBlocks(c.visionLayers, W, c.visionHeads, c.mlpRatio, c.dropout, false));
    this.lnFinal = this.registerModule('lnFinal', new ml.nn.LayerNorm(W));
    this.visualProj = this.registerModule('visualProj', new ml.nn.Linear(W, c.embedDim, { bias: false }));
    this.textProj = this.registerModule('textProj', new ml.nn.Linear(W, c.embedDim, { bias: false }));
    this.finish();
  }

  private modality(i: number): ml.Tensor {
    return this.modalityEmbed.slice(0, i, i + 1);
  }

  imageTokens(images: ml.Tensor, masking?: PatchMasking): ml.Tensor<'f32'> {
    const c = this.config, W = c.visionWidth;
    return ml.tidy(() => {
      const B = images.shape[0];
      let x = this.patchEmbed.forward(patchify(images, c.channels, c.imageSize, c.patchSize));
      if (masking) x = ml.add(ml.mul(x, ml.sub(1, masking.patchMask)), ml.mul(masking.maskToken, masking.patchMask));
      x = ml.add(ml.add(ml.concat([this.classToken.broadcastTo([B, 1, W]), x], 1), this.imagePos), this.modality(0));
      const h = runBlocks(this.blocks, x, { causal: false, keyPaddingMask: null, checkpointing: c.checkpointing });
      return this.lnFinal.forward(h);
    });
  }

  imageBlocks(): ml.nn.ModuleList { return this.blocks; }

  poolImage(tokens: ml.Tensor): ml.Tensor<'f32'> {
    const [B, , W] = tokens.shape;
    return ml.tidy(() => this.visualProj.forward(tokens.slice(1, 0, 1).reshape([B, W])));
  }

  textHidden(tokens: ml.Tensor, lengths: ml.Tensor, masking?: TokenMasking): ml.Tensor<'f32'> {
    const c = this.config;
    const lens = checkTokens(tokens, lengths, c.contextLength);
    const T = tokens.shape[1];
    return ml.tidy(() => {
      let x = this.tokenEmbed.forward(tokens as ml.Tensor<'i32'>);
      if (masking) x = ml.where(masking.tokenMask, masking.maskEmbed, x);
      x = ml.add(ml.add(x, this.textPos.slice(0, 0, T)), this.modality(1));
      const h = runBlocks(this.blocks, x, { causal: false, keyPaddingMask: paddingMask(lens, T), checkpointing: c.checkpointing });
      return this.lnFinal.forward(h);
    });
  }

  poolText(hidden: ml.Tensor, lengths: ml.Tensor): ml.Tensor<'f32'> {
    const lens = readLengths(lengths, hidden.shape[0], hidden.shape[1]);
    return ml.tidy(() => this.textProj.forward(poolAt(hidden, lens)));
  }
}
