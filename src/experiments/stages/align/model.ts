/**
 * The align stage's view of a model: build it from the stage config, compute a (micro-)batch's loss from the
 * loader's arrays, and embed a split for retrieval evaluation.
 */
import * as ml from '../../../index';
import { createAlignModel, AlignModel as Net } from '../../models';
import { retrievalMetrics } from '../../eval/retrieval';
import { AlignConfig } from './config';
import type { Batch, SplitData } from './data';

export class AlignModel {
  constructor(readonly net: Net, readonly imageSize: number, readonly contextLength: number) {}

  parameters(): ml.Tensor[] {
    return this.net.parameters();
  }

  /** The loss of rows [offset, offset + n) of a batch (a micro-batch under gradient accumulation). */
  stepLoss(b: Batch, offset: number, n: number, amp: 'none' | 'bf16'): { loss: ml.Tensor; parts: Record<string, number> } {
    const S = this.imageSize;
    const T = this.contextLength;
    const px = 3 * S * S;
    const images = ml.tensor(b.images.subarray(offset * px, (offset + n) * px), [n, 3, S, S]);
    const tokens = ml.tensor(b.tokens.subarray(offset * T, (offset + n) * T), [n, T], { dtype: 'i32' });
    const lengths = ml.tensor(b.lengths.subarray(offset, offset + n), [n], { dtype: 'i32' });
    let negatives: { tokens: ml.Tensor; lengths: ml.Tensor; rows: ml.Tensor } | undefined;
    if (b.negatives) {
      // The negatives of this micro-batch's rows, re-indexed from 0.
      const ks: number[] = [];
      b.negatives.rows.forEach((r, k) => { if (r >= offset && r < offset + n) ks.push(k); });
      const nt = new Int32Array(ks.length * T);
      ks.forEach((k, j) => nt.set(b.negatives!.tokens.subarray(k * T, (k + 1) * T), j * T));
      negatives = {
        tokens: ml.tensor(nt, [ks.length, T], { dtype: 'i32' }),
        lengths: ml.tensor(Int32Array.from(ks, (k) => b.negatives!.lengths[k]), [ks.length], { dtype: 'i32' }),
        rows: ml.tensor(Int32Array.from(ks, (k) => b.negatives!.rows[k] - offset), [ks.length], { dtype: 'i32' }),
      };
    }
    const run = () => this.net.loss({ images, tokens, lengths, negatives });
    const out = amp === 'bf16' ? ml.autocast('bf16', run) : run();
    return { loss: out.loss, parts: out.parts };
  }

  /** exp(logit scale), clamped at 100 as the loss uses it. */
  temperatureScale(): number {
    return Math.min(Math.exp(this.net.logitScale.item()), 100);
  }

  /** Unit-norm embeddings of a split's images and texts, in chunks, without gradients. */
  embed(split: SplitData, chunk = 256): { img: Float32Array; txt: Float32Array; dim: number } {
    const S = this.imageSize;
    const T = this.contextLength;
    const px = 3 * S * S;
    const wasTraining = this.net.training;
    this.net.eval();
    try {
      return ml.noGrad(() => {
        const imgParts: Float32Array[] = [];
        const txtParts: Float32Array[] = [];
        for (let i = 0; i < split.numImages; i += chunk) {
          const n = Math.min(chunk, split.numImages - i);
          ml.tidy(() => {
            const x = ml.tensor(split.images.subarray(i * px, (i + n) * px), [n, 3, S, S]);
            imgParts.push(this.net.encodeImage(x).toArray() as Float32Array);
          });
        }
        for (let i = 0; i < split.numTexts; i += chunk) {
          const n = Math.min(chunk, split.numTexts - i);
          ml.tidy(() => {
            const tok = ml.tensor(split.tokens.subarray(i * T, (i + n) * T), [n, T], { dtype: 'i32' });
            const len = ml.tensor(split.lengths.subarray(i, i + n), [n], { dtype: 'i32' });
            txtParts.push(this.net.encodeText(tok, len).toArray() as Float32Array);
          });
        }
        const img = concatF32(imgParts);
        const txt = concatF32(txtParts);
        return { img, txt, dim: img.length / split.numImages };
      });
    } finally {
      this.net.train(wasTraining);
    }
  }

  /**
   * The relation test (as ARO's VG-Relation, on shapes): the share of a split's pairs with a reversed-relation
   * caption (`negTokens`) whose image is closer to its own caption than to the reversed one. 0.5 is chance: an
   * encoder that ignores where things are. NaN when the split has no such pair.
   */
  relationAccuracy(split: SplitData, chunk = 256): number {
    const T = this.contextLength;
    const S = this.imageSize;
    const px = 3 * S * S;
    const idx: number[] = [];
    for (let i = 0; i < split.numTexts; i++) if (split.negLengths[i] > 0) idx.push(i);
    if (idx.length === 0) return NaN;
    const wasTraining = this.net.training;
    this.net.eval();
    let right = 0;
    try {
      ml.noGrad(() => {
        for (let i = 0; i < idx.length; i += chunk) {
          const rows = idx.slice(i, i + chunk);
          const n = rows.length;
          ml.tidy(() => {
            const im = new Float32Array(n * px);
            const tk = new Int32Array(n * T), nk = new Int32Array(n * T);
            const tl = new Int32Array(n), nl = new Int32Array(n);
            rows.forEach((r, j) => {
              const m = split.pairImage[r];
              im.set(split.images.subarray(m * px, (m + 1) * px), j * px);
              tk.set(split.tokens.subarray(r * T, (r + 1) * T), j * T);
              nk.set(split.negTokens.subarray(r * T, (r + 1) * T), j * T);
              tl[j] = split.lengths[r];
              nl[j] = split.negLengths[r];
            });
            const img = this.net.encodeImage(ml.tensor(im, [n, 3, S, S]));
            const pos = ml.sum(ml.mul(img, this.net.encodeText(ml.tensor(tk, [n, T], { dtype: 'i32' }), ml.tensor(tl, [n], { dtype: 'i32' }))), 1).toArray() as Float32Array;
            const neg = ml.sum(ml.mul(img, this.net.encodeText(ml.tensor(nk, [n, T], { dtype: 'i32' }), ml.tensor(nl, [n], { dtype: 'i32' }))), 1).toArray() as Float32Array;
            for (let j = 0; j < n; j++) if (pos[j] > neg[j]) right++;
          });
        }
      });
    } finally {
      this.net.train(wasTraining);
    }
    return right / idx.length;
  }

  dispose(): void {
    this.net.dispose();
  }
}

export function concatF32(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function buildAlignModel(cfg: AlignConfig, vocabSize: number): AlignModel {
  const net = createAlignModel({
    ...cfg.model,
    imageSize: cfg.data.imageSize,
    channels: 3,
    vocabSize,
    contextLength: cfg.tokenizer.contextLength,
    checkpointing: cfg.train.checkpointing,
  });
  return new AlignModel(net, cfg.data.imageSize, cfg.tokenizer.contextLength);
}

/** Retrieval metrics of a split, keys prefixed (e.g. 'val/i2t/r@1'). */
export function evaluateRetrieval(model: AlignModel, split: SplitData, prefix: string): Record<string, number> {
  const { img, txt } = model.embed(split);
  const m = retrievalMetrics(img, txt, split.imageGroups, split.textGroups, { normalize: true, skipMissing: true }).flat();
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) out[prefix + k] = v;
  const rel = model.relationAccuracy(split);
  if (!Number.isNaN(rel)) out[prefix + 'relation'] = rel;
  return out;
}
