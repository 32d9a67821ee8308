/**
 * Cross-modal masked prediction, an optional second objective weighted against InfoNCE (maskedObjective):
 *
 * - 'image': a fraction maskRatio of each image's patches is replaced, at the embedding, by a learned mask
 *   token; the image tower encodes the masked image (a second pass), a small decoder (one transformer block)
 *   sees those tokens plus the caption's embedding as an extra token, and predicts the raw pixels of every
 *   patch. The loss is the mean squared error over the masked patches only (MAE, He et al. 2022, without the
 *   encoder dropping the masked tokens).
 * - 'text': a fraction of each caption's tokens (never its end-of-text token) is replaced, at the embedding, by
 *   a learned mask embedding; the text tower encodes the masked caption, one cross-attention block lets it see
 *   the image's tokens (from the contrastive pass), and a linear head predicts the original tokens. The loss is
 *   the cross entropy at the masked positions only. With the causal text tower, position i is predicted from the
 *   tokens before it and the image.
 *
 * Which positions are masked is drawn from ml's random stream (ml.rand), so a seed fixes it.
 */
import * as ml from '../../index';
import { AlignModelConfig } from './config';
import type { AlignBatch, AlignModel, Encoded } from './clip';
import { normalParam, patchify, readLengths } from './common';
import { CrossAttentionBlock } from './cross';

export interface MaskedHead extends ml.nn.Module {
  loss(model: AlignModel, enc: Encoded, batch: AlignBatch): ml.Tensor<'f32'>;
}

/** For each of B rows, the k = max(1, round(ratio n)) positions (of n) with the smallest uniform draws. */
function drawMasked(B: number, n: number[], width: number, ratio: number): number[][] {
  const u = ml.tidy(() => ml.rand([B, width]).toArray() as Float32Array);
  return n.map((count, b) => {
    if (count <= 0) return [];
    const k = Math.min(count, Math.max(1, Math.round(ratio * count)));
    const pos = Array.from({ length: count }, (_, i) => i);
    pos.sort((x, y) => u[b * width + x] - u[b * width + y] || x - y);
    return pos.slice(0, k).sort((x, y) => x - y);
  });
}

/**
 * The mean squared error between pred and target [N, D] over the rows listed in rows (flat indices), each row
 * averaged over D: rows not listed contribute nothing, to the value or to the gradient.
 */
export function maskedMSE(pred: ml.Tensor, target: ml.Tensor, rows: number[]): ml.Tensor<'f32'> {
  if (rows.length === 0) throw new Error('maskedMSE: no masked rows');
  return ml.tidy(() => {
    const idx = ml.tensor(Int32Array.from(rows), [rows.length], { dtype: 'i32' });
    return ml.mean(ml.square(ml.sub(ml.indexSelect(pred, 0, idx), ml.indexSelect(target, 0, idx))));
  });
}

export class MaskedImageHead extends ml.nn.Module implements MaskedHead {
  /** [W]: what a masked patch embeds to. */
  maskToken: ml.Tensor<'f32'>;
  /** Caption embedding [E] -> one decoder token [W]. */
  textIn: ml.nn.Linear;
  block: ml.nn.TransformerBlock;
  lnOut: ml.nn.LayerNorm;
  /** [W] -> the patch's pixels [C p p]. */
  out: ml.nn.Linear;
  /** The masked patches of the last loss() call, per image. */
  lastMasked: number[][] = [];

  constructor(readonly config: AlignModelConfig) {
    super();
    const c = config, W = c.visionWidth;
    this.maskToken = this.registerParameter('maskToken', normalParam([W], 0.02));
    this.textIn = this.registerModule('textIn', new ml.nn.Linear(c.embedDim, W));
    this.block = this.registerModule('block', new ml.nn.TransformerBlock(W, c.visionHeads, { mlpRatio: c.mlpRatio, dropout: c.dropout }));
    this.lnOut = this.registerModule('lnOut', new ml.nn.LayerNorm(W));
    this.out = this.registerModule('out', new ml.nn.Linear(W, c.channels * c.patchSize * c.patchSize));
  }

  /** decoder tokens [B, 1 + P, W] (caption token, then patches) -> pixels [B, P, C p p] */
  forward(tokens: ml.Tensor): ml.Tensor<'f32'> {
    const [B, N, W] = tokens.shape;
    return ml.tidy(() => this.out.forward(this.lnOut.forward(this.block.forward(tokens).slice(1, 1, N).reshape([B, N - 1, W]))));
  }

  loss(model: AlignModel, enc: Encoded, batch: AlignBatch): ml.Tensor<'f32'> {
    const c = this.config, B = batch.images.shape[0];
    const P = (c.imageSize / c.patchSize) ** 2, D = c.channels * c.patchSize * c.patchSize;
    const masked = drawMasked(B, new Array(B).fill(P), P, c.maskRatio);
    this.lastMasked = masked;
    return ml.tidy(() => {
      const m = new Float32Array(B * P);
      masked.forEach((ps, b) => ps.forEach((p) => { m[b * P + p] = 1; }));
      const patchMask = ml.tensor(m, [B, P, 1]);
      const tok = model.imageTokens(batch.images, { maskToken: this.maskToken, patchMask });
      const W = tok.shape[2];
      // The class token's slot carries the caption instead: [caption, patch_1 .. patch_P].
      const cap = this.textIn.forward(enc.textEmbeds).reshape([B, 1, W]);
      const pred = this.forward(ml.concat([cap, tok.slice(1, 1, 1 + P)], 1)).reshape([B * P, D]);
      const target = patchify(batch.images, c.channels, c.imageSize, c.patchSize).reshape([B * P, D]);
      return maskedMSE(pred, target, masked.flatMap((ps, b) => ps.map((p) => b * P + p)));
    });
  }
}

export class MaskedTextHead extends ml.nn.Module implements MaskedHead {
  /** [Wt]: what a masked token embeds to. */
  maskEmbed: ml.Tensor<'f32'>;
  /** Image tokens (visionWidth) -> textWidth. */
  imageIn: ml.nn.Linear;
  cross: CrossAttentionBlock;
  lnOut: ml.nn.LayerNorm;
  /** [Wt] -> vocabulary logits. */
  out: ml.nn.Linear;
  /** The masked positions of the last loss() call, per caption. */
  lastMasked: number[][] = [];

  constructor(readonly config: AlignModelConfig) {
    super();
    const c = config, W = c.textWidth;
    this.maskEmbed = this.registerParameter('maskEmbed', normalParam([W], 0.02));
    this.imageIn = this.registerModule('imageIn', new ml.nn.Linear(c.visionWidth, W));
    this.cross = this.registerModule('cross', new CrossAttentionBlock(W, c.arch === 'shared' ? c.visionHeads : c.textHeads, c.mlpRatio, c.dropout));
    this.lnOut = this.registerModule('lnOut', new ml.nn.LayerNorm(W));
    this.out = this.registerModule('out', new ml.nn.Linear(W, c.vocabSize));
  }

  /** text hidden [B, T, Wt], image tokens [B, 1 + P, Wv] -> logits [B, T, V] */
  forward(hidden: ml.Tensor, imageTokens: ml.Tensor): ml.Tensor<'f32'> {
    return ml.tidy(() => this.out.forward(this.lnOut.forward(this.cross.forward(hidden, this.imageIn.forward(imageTokens)))));
  }

  loss(model: AlignModel, enc: Encoded, batch: AlignBatch): ml.Tensor<'f32'> {
    const [B, T] = batch.tokens.shape;
    const lens = readLengths(batch.lengths, B, T);
    // Candidates: every real token but the end-of-text token (positions 0 .. length - 2).
    const masked = drawMasked(B, lens.map((n) => n - 1), T, this.config.maskRatio);
    this.lastMasked = masked;
    return ml.tidy(() => {
      const ids = batch.tokens.toArray() as Int32Array;
      const m = new Float32Array(B * T);
      const targets = new Int32Array(B * T).fill(-100);
      masked.forEach((ps, b) => ps.forEach((p) => { m[b * T + p] = 1; targets[b * T + p] = ids[b * T + p]; }));
      if (!m.some((v) => v)) return ml.zeros([]);  // every caption is a lone end-of-text token: nothing to predict
      const tokenMask = ml.tensor(m, [B, T, 1]);
      const hidden = model.textHidden(batch.tokens, batch.lengths, { maskEmbed: this.maskEmbed, tokenMask });
      const logits = this.forward(hidden, enc.imageTokens).reshape([B * T, this.config.vocabSize]);
      return ml.crossEntropy(logits, ml.tensor(targets, [B * T], { dtype: 'i32' }));
    });
  }
}

export function createMaskedHead(c: AlignModelConfig): MaskedHead | null {
  if (c.maskedObjective === 'image') return new MaskedImageHead(c);
  if (c.maskedObjective === 'text') return new MaskedTextHead(c);
  return null;
}
