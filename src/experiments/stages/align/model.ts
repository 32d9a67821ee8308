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
    const run = () => this.net.loss({ images, tokens, lengths });
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
  return out;
}
