/**
 * TextTransformer: CLIP's text tower. Token + learned position embeddings, causal pre-norm TransformerBlocks,
 * a final LayerNorm, the hidden state at each caption's end-of-text token -> projection (no bias).
 *
 * Captions are i32 tokens [B, T] (T <= contextLength) with lengths [B]: row b holds lengths[b] real tokens, the
 * last of which is its end-of-text token (so it is pooled at position lengths[b] - 1); the rest is padding,
 * hidden from every query by a key padding mask (with causal attention the mask changes nothing a real token
 * sees, since padding comes after it, but it keeps padded rows well defined and bidirectional use correct).
 *
 * ```ts
 * const txt = new TextTransformer({ vocabSize: 1024, contextLength: 32, width: 128, layers: 4, heads: 4, embedDim: 128 });
 * const tokens = ml.tensor(new Int32Array(2 * 32), [2, 32], { dtype: 'i32' });
 * txt.forward(tokens, ml.tensor([5, 32], [2], { dtype: 'i32' })).shape;   // [2, 128]
 * ```
 * Parameter names: tokenEmbed.weight [V, W], posEmbed [T, W], blocks.<i>.*, lnFinal.*, proj.weight [E, W].
 */
import * as ml from '../../index';
import { makeBlocks, normalParam, paddingMask, poolAt, readLengths, reinit, runBlocks } from './common';

export interface TextTransformerOptions {
  vocabSize: number;
  contextLength: number;
  width: number;
  layers: number;
  heads: number;
  embedDim: number;
  mlpRatio?: number;
  dropout?: number;
  /** Default true (CLIP); the fused attention is causal. */
  causal?: boolean;
  checkpointing?: boolean;
}

/** Masked caption modelling: token embeddings where tokenMask [B, T, 1] is 1 become maskEmbed [W]. */
export interface TokenMasking {
  maskEmbed: ml.Tensor;
  tokenMask: ml.Tensor;
}

/** Checked tokens [B, T] i32 with T <= contextLength, and their lengths as numbers. */
export function checkTokens(tokens: ml.Tensor, lengths: ml.Tensor, contextLength: number): number[] {
  if (!(tokens instanceof ml.Tensor) || tokens.dtype !== 'i32' || tokens.ndim !== 2) {
    throw new Error('tokens must be an i32 tensor [B, T], got ' +
      (tokens instanceof ml.Tensor ? `${tokens.dtype} ${JSON.stringify(tokens.shape)}` : typeof tokens));
  }
  const [B, T] = tokens.shape;
  if (T > contextLength) throw new Error(`tokens [${B}, ${T}]: ${T} positions exceed contextLength ${contextLength}`);
  return readLengths(lengths, B, T);
}

export class TextTransformer extends ml.nn.Module {
  tokenEmbed: ml.nn.Embedding;
  posEmbed: ml.Tensor<'f32'>;
  blocks: ml.nn.ModuleList<ml.nn.TransformerBlock>;
  lnFinal: ml.nn.LayerNorm;
  proj: ml.nn.Linear;
  readonly causal: boolean;
  checkpointing: boolean;

  constructor(readonly opts: TextTransformerOptions) {
    super();
    const { vocabSize, contextLength, width } = opts;
    this.causal = opts.causal ?? true;
    this.checkpointing = opts.checkpointing ?? false;
    this.tokenEmbed = this.registerModule('tokenEmbed', new ml.nn.Embedding(vocabSize, width));
    // CLIP's initialisation: token embeddings N(0, 0.02^2), positions N(0, 0.01^2).
    reinit(this.tokenEmbed, 'weight', normalParam([vocabSize, width], 0.02));
    this.posEmbed = this.registerParameter('posEmbed', normalParam([contextLength, width], 0.01));
    this.blocks = this.registerModule('blocks', makeBlocks(opts.layers, width, opts.heads, opts.mlpRatio ?? 4, opts.dropout ?? 0, this.causal));
    this.lnFinal = this.registerModule('lnFinal', new ml.nn.LayerNorm(width));
    this.proj = this.registerModule('proj', new ml.nn.Linear(width, opts.embedDim, { bias: false }));
  }

  /** tokens [B, T] -> every hidden state after the final LayerNorm, [B, T, W]. */
  forwardTokens(tokens: ml.Tensor, lengths: ml.Tensor, masking?: TokenMasking): ml.Tensor<'f32'> {
    const lens = checkTokens(tokens, lengths, this.opts.contextLength);
    const T = tokens.shape[1];
    return ml.tidy(() => {
      let x = this.tokenEmbed.forward(tokens as ml.Tensor<'i32'>);
      if (masking) x = ml.where(masking.tokenMask, masking.maskEmbed, x);
      x = ml.add(x, T === this.opts.contextLength ? this.posEmbed : this.posEmbed.slice(0, 0, T));
      const h = runBlocks(this.blocks, x, { causal: this.causal, keyPaddingMask: paddingMask(lens, T), checkpointing: this.checkpointing });
      return this.lnFinal.forward(h);
    });
  }

  /** hidden [B, T, W] -> the projected end-of-text states [B, E] (not normalised). */
  pool(hidden: ml.Tensor, lengths: ml.Tensor): ml.Tensor<'f32'> {
    const lens = readLengths(lengths, hidden.shape[0], hidden.shape[1]);
    return ml.tidy(() => this.proj.forward(poolAt(hidden, lens)));
  }

  /** tokens [B, T], lengths [B] -> [B, E] (not normalised). */
  forward(tokens: ml.Tensor, lengths: ml.Tensor): ml.Tensor<'f32'> {
    return ml.tidy(() => this.pool(this.forwardTokens(tokens, lengths), lengths));
  }
}
