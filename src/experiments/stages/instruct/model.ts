/**
 * The instruct stage's model: the caption checkpoint's parts (the frozen align image encoder, its projector, its
 * GPT) with LoRA adapters on the GPT's linear layers (base weights frozen). Only the adapters and the projector
 * train.
 *
 * Images go IN PLACE: the chat row holds N `<image>` positions per image; the GPT's input embeddings are its
 * token embeddings with each such block replaced by the image's projected tokens. The splice concatenates
 * segments along time (no in-place write), so gradients flow into the projector. Loss: cross entropy on the
 * answer tokens only (the tokenizer's chat mask). Generation: the prompt, images spliced, goes in as prefix
 * embeddings before the final `<|assistant|>` token, then KV-cached decoding until `<|end|>` or `<eos>`.
 */
import * as ml from '../../../index';
import type { AlignModel as AlignNet } from '../../models';
import { GPT } from '../../models/gpt';
import { generate } from '../../models/generate';
import { runBlocks } from '../../models/common';
import { Tokenizer } from '../../tokenizer';
import { END } from '../../tokenizer/specials';

/** Positions one image takes: the CLS token plus the patch grid average-pooled by `pool`. */
export function imageLength(imageSize: number, patchSize: number, pool: number): number {
  const g = imageSize / patchSize;
  if (!Number.isInteger(g) || g % pool !== 0) {
    throw new Error(`instruct: key model.imagePool (${pool}) must divide the encoder's patch grid (${g} = imageSize ${imageSize} / patchSize ${patchSize})`);
  }
  return 1 + (g / pool) ** 2;
}

/**
 * 2-D positions for one image's projected tokens, added after the projector: a trainable table [N, W] whose CLS
 * row starts at zero and whose grid rows start as the fixed 2-D sine-cosine code of their cell (half the width for
 * the column, half for the row, as in MAE), scaled to `rms`. The GPT's own position table is frozen under LoRA and
 * was learnt on text, so without this nothing trainable tells the GPT which cell an image token came from.
 * Parameter: `table` (in the projector's state dict as `projector.3.table`).
 */
export class ImagePositions extends ml.nn.Module {
  table: ml.Tensor<'f32'>;

  constructor(readonly grid: number, readonly width: number, rms: number) {
    super();
    if (width % 4 !== 0) throw new Error(`instruct: model.imagePositions '2d' needs a GPT width divisible by 4, got ${width}`);
    const N = 1 + grid * grid;
    const t = new Float32Array(N * width);
    const q = width / 4;
    // sin/cos pairs have RMS 1/sqrt(2); scale so every entry of the grid rows has RMS `rms`.
    const s = rms * Math.SQRT2;
    for (let r = 0; r < grid; r++) {
      for (let c = 0; c < grid; c++) {
        const row = (1 + r * grid + c) * width;
        for (let k = 0; k < q; k++) {
          const f = 1 / 10000 ** (k / q);
          t[row + k] = s * Math.sin(c * f);
          t[row + q + k] = s * Math.cos(c * f);
          t[row + 2 * q + k] = s * Math.sin(r * f);
          t[row + 3 * q + k] = s * Math.cos(r * f);
        }
      }
    }
    this.table = this.registerParameter('table', ml.tensor(t, [N, width]));
  }

  /** [K, N, W] -> [K, N, W] + table. */
  forward(x: ml.Tensor): ml.Tensor<'f32'> {
    return ml.add(x, this.table);
  }
}

/** Adds `ImagePositions` to a caption projector (Linear-GELU-Linear) for `grid` x `grid` pooled cells of GPT width `width`. */
export function addImagePositions(projector: ml.nn.Sequential, grid: number, width: number, rms: number): void {
  if (projector.length !== 3) throw new Error(`instruct: model.imagePositions expects the caption projector's 3 layers, found ${projector.length}`);
  projector.push(new ImagePositions(grid, width, rms));
}

/** How a pooled cell's patch tokens become one token (config `model.imagePoolMode`). */
export type ImagePoolMode = 'mean' | 'concat' | 'window';

/**
 * The caption projector with its first Linear W1 [H, Wv] widened to `scales.length` blocks of Wv inputs, block j
 * initialised to W1 * scales[j]. Returns a new Sequential sharing the other layers; the old first Linear is disposed.
 */
function widenProjector(projector: ml.nn.Sequential, scales: number[], mode: string): ml.nn.Sequential {
  const first = projector.at(0);
  if (!(first instanceof ml.nn.Linear)) throw new Error(`instruct: model.imagePoolMode ${mode} expects the caption projector to start with a Linear`);
  const [H, Wv] = first.weight.shape;
  const wide = new ml.nn.Linear(Wv * scales.length, H);
  ml.noGrad(() => {
    const blocks = scales.map((s) => ml.mul(first.weight, s));
    wide.weight.dispose();
    wide.weight = wide.registerParameter('weight', ml.concat(blocks, 1));
    for (const b of blocks) b.dispose();
    if (first.bias && wide.bias) {
      wide.bias.dispose();
      wide.bias = wide.registerParameter('bias', first.bias.clone());
    }
  });
  const rest: ml.nn.Module[] = [];
  for (let i = 1; i < projector.length; i++) rest.push(projector.at(i));
  first.dispose();
  return new ml.nn.Sequential(wide, ...rest);
}

/**
 * The projector for `imagePoolMode` 'concat': the caption projector with its first Linear widened from Wv to
 * k2 * Wv inputs (one block per patch of a pooled cell), each block initialised to W1 / k2. A cell's concatenated
 * patches then project exactly as their mean did under the caption projector, so training starts from the mean
 * pooling's output and can learn to tell the patches of a cell apart.
 */
export function concatProjector(projector: ml.nn.Sequential, k2: number): ml.nn.Sequential {
  return widenProjector(projector, new Array<number>(k2).fill(1 / k2), 'concat');
}

/**
 * The projector for `imagePoolMode` 'window' with cells of k x k patches: its first Linear takes the (k + 2)^2
 * patches of the window around a cell (row-major), the k x k inner blocks initialised to W1 / k^2 and the ring's
 * to zero, so it starts out as mean pooling. A Linear on such windows is a convolution of kernel k + 2 and stride
 * k over the patch grid (padding 1): each cell also sees the patches just outside it, where the rest of an object
 * that straddles a cell border lies.
 */
export function windowProjector(projector: ml.nn.Sequential, k: number): ml.nn.Sequential {
  const K = k + 2;
  const scales: number[] = [];
  for (let dy = 0; dy < K; dy++) for (let dx = 0; dx < K; dx++) scales.push(dy >= 1 && dy <= k && dx >= 1 && dx <= k ? 1 / (k * k) : 0);
  return widenProjector(projector, scales, 'window');
}

/** The caption projector adapted to `mode` for cells of k x k patches (unchanged for 'mean'). */
export function poolProjector(projector: ml.nn.Sequential, mode: ImagePoolMode, k: number): ml.nn.Sequential {
  if (mode === 'concat') return concatProjector(projector, k * k);
  if (mode === 'window') return windowProjector(projector, k);
  return projector;
}

/**
 * 'window' pooling: tokens [n, 1 + g*g, W] (CLS first) -> [n, 1 + (g/k)^2, (k+2)^2 W], each cell's k x k patches
 * with the ring of one patch around them, row-major over the (k + 2) x (k + 2) window, zeros beyond the grid.
 * The CLS token fills the inner blocks (zeros in the ring), so the window projector maps it as the caption one did.
 */
function windowCells(tok: ml.Tensor<'f32'>, cls: ml.Tensor<'f32'>, n: number, g: number, k: number, W: number): ml.Tensor<'f32'> {
  const c = g / k;
  const grid = ml.reshape(ml.slice(tok, 1, 1, 1 + g * g), [n, g, g, W]);
  // One patch of zeros above and left, k below and right: window row dy of cell r is padded row dy + k r, and
  // the slice [dy, dy + g) stays inside for every dy <= k + 1.
  const rows = ml.concat([ml.zeros([n, 1, g, W]), grid, ml.zeros([n, k, g, W])], 1);
  const P = g + 1 + k;
  const padded = ml.concat([ml.zeros([n, P, 1, W]), rows, ml.zeros([n, P, k, W])], 2);
  const planes: ml.Tensor<'f32'>[] = [];
  const clsBlocks: ml.Tensor<'f32'>[] = [];
  const none = ml.zerosLike(cls);
  for (let dy = 0; dy < k + 2; dy++) {
    for (let dx = 0; dx < k + 2; dx++) {
      const win = ml.reshape(ml.slice(ml.slice(padded, 1, dy, dy + g), 2, dx, dx + g), [n, c, k, c, k, W]);
      // Every k-th row and column from (dy, dx): window position (dy, dx) of every cell.
      planes.push(ml.reshape(ml.slice(ml.slice(win, 2, 0, 1), 4, 0, 1), [n, c * c, W]));
      clsBlocks.push(dy >= 1 && dy <= k && dx >= 1 && dx <= k ? cls : none);
    }
  }
  return ml.concat([ml.concat(clsBlocks, 2), ml.concat(planes, 2)], 1);
}

export interface AnswerOptions {
  maxNewTokens?: number;
  /** Default true. */
  greedy?: boolean;
  temperature?: number;
  seed?: number;
}

/** A batch row for the embedding splice: expanded ids and where each image block starts. */
export interface SpliceRow {
  ids: Int32Array;
  slots: number[];
}

export class InstructModel {
  readonly N: number;
  readonly endId: number;
  /**
   * Token ids whose embedding rows train (the chat tokens the lm never saw); empty: the embedding stays frozen.
   * The GPT's head is tied to its embedding, so a frozen, never-trained `<|end|>` row is one the model can hardly
   * predict; training just these rows (gradients of every other row zeroed) fixes that.
   */
  trainTokenIds: number[] = [];
  /** Prompts put the images after the question (config model.questionFirst). */
  questionFirst = false;
  /** No adapters: the GPT's own weights train (config lora.rank 0). */
  fullFineTune = false;
  private rowMask: ml.Tensor<'f32'> | null = null;

  constructor(
    /** The align model; only its image path is used. Frozen. */
    readonly encoder: AlignNet,
    readonly projector: ml.nn.Module,
    /** The caption GPT, with LoRA layers (or merged). */
    readonly gpt: GPT,
    readonly tokenizer: Tokenizer,
    readonly imageSize: number,
    readonly imagePool: number,
    /** How a pooled cell's k x k patch tokens become one token: their mean, concatenated (k^2 Wv wide), or with
     * the ring of patches around them ((k + 2)^2 Wv wide). */
    readonly imagePoolMode: ImagePoolMode = 'mean',
  ) {
    encoder.requiresGrad_(false);
    encoder.eval();
    const c = encoder.config;
    this.N = imageLength(imageSize, c.patchSize, imagePool);
    const end = tokenizer.tokenToId(END);
    if (end === undefined) throw new Error(`instruct: the tokenizer has no ${END} token (needed for the chat template)`);
    this.endId = end;
  }

  /** Let the embedding rows of `ids` train (call before building the optimizer). */
  setTrainTokens(ids: number[]): void {
    this.trainTokenIds = [...ids];
    this.rowMask?.dispose();
    this.rowMask = null;
    const E = this.gpt.tokenEmbed.weight;
    if (ids.length === 0) { E.requiresGrad_(false); return; }
    const [V, W] = E.shape;
    const m = new Float32Array(V * W);
    for (const id of ids) m.fill(1, id * W, (id + 1) * W);
    this.rowMask = ml.tensor(m, [V, W]);
    E.requiresGrad_(true);
  }

  /** Zero the embedding gradient outside the trained token rows (after backward, before the optimizer step). */
  maskTokenGrad(): void {
    const E = this.gpt.tokenEmbed.weight;
    if (!this.rowMask || !E.grad) return;
    const g = E.grad;
    E.grad = ml.noGrad(() => ml.mul(g, this.rowMask!));
    g.dispose();
  }

  /**
   * Adapters on the encoder's image blocks (`lora.encoderTargets`): base weights stay frozen; features then depend
   * on training and are computed per batch with a graph (`encode`). The encoder stays in eval mode, so its
   * adapters run without dropout. Returns the wrapped names.
   */
  adaptEncoder(targets: string[], rank: number, alpha: number): string[] {
    if (targets.length === 0) return [];
    const names = ml.nn.applyLora(this.encoder.imageBlocks(), { rank, alpha, dropout: 0, targets, freezeBase: true });
    this.encoder.eval();
    this.encoderAdapted = names.length > 0;
    return names;
  }

  /** True once the encoder has adapters: its features are no longer fixed. */
  encoderAdapted = false;

  /** The trainable parameters: the projector's, the GPT's LoRA adapters', the encoder's (in tree order); not the embedding. */
  trainableParameters(): ml.Tensor[] {
    const E = this.gpt.tokenEmbed.weight;
    return [...this.projector.parameters(), ...this.gpt.parameters().filter((p) => p.requiresGrad && p !== E),
      ...this.encoder.imageBlocks().parameters().filter((p) => p.requiresGrad)];
  }

  /** The trained token rows [k, W] (a copy). */
  tokenRows(): ml.Tensor<'f32'> | null {
    if (this.trainTokenIds.length === 0) return null;
    const E = this.gpt.tokenEmbed.weight.toArray() as Float32Array;
    const W = this.gpt.config.width;
    const out = new Float32Array(this.trainTokenIds.length * W);
    this.trainTokenIds.forEach((id, i) => out.set(E.subarray(id * W, (id + 1) * W), i * W));
    return ml.tensor(out, [this.trainTokenIds.length, W]);
  }

  /** Writes trained rows back into the embedding (replaces the weight tensor: call before building an optimizer). */
  loadTokenRows(rows: ml.Tensor): void {
    const ids = this.trainTokenIds;
    const W = this.gpt.config.width;
    if (rows.ndim !== 2 || rows.shape[0] !== ids.length || rows.shape[1] !== W) {
      throw new Error(`instruct: token rows ${JSON.stringify(rows.shape)} do not match the ${ids.length} trained tokens x width ${W}`);
    }
    const old = this.gpt.tokenEmbed.weight;
    const E = (old.toArray() as Float32Array).slice();
    const r = rows.toArray() as Float32Array;
    ids.forEach((id, i) => E.set(r.subarray(i * W, (i + 1) * W), id * W));
    const t = ml.tensor(E, [...old.shape]);
    this.gpt.tokenEmbed.weight = this.gpt.tokenEmbed.registerParameter('weight', t, { requiresGrad: old.requiresGrad });
    old.dispose();
  }

  /** Width of one pooled image feature: the encoder's, k^2 times it for 'concat', (k + 2)^2 times for 'window'. */
  get featureWidth(): number {
    const W = this.encoder.config.visionWidth;
    const k = this.imagePool;
    return this.imagePoolMode === 'concat' ? W * k * k : this.imagePoolMode === 'window' ? W * (k + 2) * (k + 2) : W;
  }

  /** images f32 [n * 3 * S * S] -> pooled image features [n, N, Wv] (no graph). */
  features(images: Float32Array, n: number): ml.Tensor<'f32'> {
    return ml.noGrad(() => this.encode(images, n));
  }

  /** images f32 [n * 3 * S * S] -> pooled image features [n, N, Wv], with a graph when grad is on (adapted encoder). */
  encode(images: Float32Array, n: number): ml.Tensor<'f32'> {
    const S = this.imageSize;
    return ml.tidy(() => {
      const tok = this.encoder.imageTokens(ml.tensor(images, [n, 3, S, S]));
      const [, L, W] = tok.shape;
      const g = Math.round(Math.sqrt(L - 1));
      const k = this.imagePool;
      const cls = ml.slice(tok, 1, 0, 1);
      if (this.imagePoolMode === 'window') return windowCells(tok, cls, n, g, k, W);
      if (this.imagePool === 1) return tok;
      // [n, g*g, W] -> [n, g/k, k, g/k, k, W] -> mean over the two k axes -> [n, (g/k)^2, W].
      const grid = ml.reshape(ml.slice(tok, 1, 1, L), [n, g / k, k, g / k, k, W]);
      if (this.imagePoolMode === 'concat') {
        // -> [n, g/k, g/k, k, k, W] -> [n, (g/k)^2, k*k*W]: a cell's patches side by side (row-major); the CLS
        // token repeated k*k times, so the widened projector maps it as the caption projector did.
        const cells = ml.reshape(ml.permute(grid, [0, 1, 3, 2, 4, 5]), [n, (g / k) ** 2, k * k * W]);
        return ml.concat([ml.concat(new Array(k * k).fill(cls), 2), cells], 1);
      }
      const pooled = ml.mean(grid, [2, 4]);
      return ml.concat([cls, ml.reshape(pooled, [n, (g / k) ** 2, W])], 1);
    });
  }

  /** Features of a table of images, computed in chunks: f32 [n * N * Wv]. */
  featureTable(images: Float32Array, n: number, chunk = 64): Float32Array {
    const px = 3 * this.imageSize * this.imageSize;
    const Wv = this.featureWidth;
    const out = new Float32Array(n * this.N * Wv);
    for (let i = 0; i < n; i += chunk) {
      const m = Math.min(chunk, n - i);
      const f = this.features(images.subarray(i * px, (i + m) * px), m);
      out.set(f.toArray() as Float32Array, i * this.N * Wv);
      f.dispose();
    }
    return out;
  }

  /** Pooled features [K, N, Wv] -> projected image tokens [K, N, W] (with a graph when grad is on). */
  project(features: ml.Tensor): ml.Tensor<'f32'> {
    return this.projector.forward(features) as ml.Tensor<'f32'>;
  }

  /**
   * The GPT's input embeddings for B rows of length L: token embeddings with each image block
   * [slot, slot + N) replaced by the next image of `imageTokens` [K, N, W] (images in row order). Returns
   * [B, L, W] without positions.
   */
  spliceEmbeds(rows: SpliceRow[], L: number, imageTokens: ml.Tensor): ml.Tensor<'f32'> {
    const N = this.N;
    return ml.tidy(() => {
      const B = rows.length;
      const ids = new Int32Array(B * L).fill(this.tokenizer.padId);
      rows.forEach((r, b) => ids.set(r.ids.subarray(0, Math.min(L, r.ids.length)), b * L));
      const tok = this.gpt.tokenEmbed.forward(ml.tensor(ids, [B, L], { dtype: 'i32' }) as ml.Tensor<'i32'>);
      let k = 0;
      const out: ml.Tensor[] = [];
      rows.forEach((r, b) => {
        const row = ml.slice(tok, 0, b, b + 1);
        const parts: ml.Tensor[] = [];
        let at = 0;
        for (const s of r.slots) {
          if (s + N > L) throw new Error(`instruct: image block at ${s} runs past the row length ${L}`);
          if (s > at) parts.push(ml.slice(row, 1, at, s));
          parts.push(ml.slice(imageTokens, 0, k, k + 1));
          k++;
          at = s + N;
        }
        if (at < L) parts.push(ml.slice(row, 1, at, L));
        out.push(parts.length === 1 ? parts[0] : ml.concat(parts, 1));
      });
      if (k !== imageTokens.shape[0]) throw new Error(`instruct: ${imageTokens.shape[0]} images given for ${k} <image> blocks`);
      return (B === 1 ? out[0] : ml.concat(out, 0)) as ml.Tensor<'f32'>;
    });
  }

  /** Input embeddings [B, L, W] (no positions) -> logits [B, L, V], causal, through the LoRA GPT. */
  logitsFromEmbeds(x: ml.Tensor): ml.Tensor<'f32'> {
    const gpt = this.gpt;
    return ml.tidy(() => {
      const h = runBlocks(gpt.blocks, gpt.embed(x, null, 0), { causal: true, keyPaddingMask: null, checkpointing: gpt.config.checkpointing });
      return gpt.head(gpt.lnFinal.forward(h));
    });
  }

  /**
   * Mean cross entropy over answer tokens: position t predicts ids[t + 1] where mask[t + 1] is 1. `features`
   * [K, N, Wv] are the rows' images in order.
   */
  loss(rows: Array<SpliceRow & { mask: Uint8Array }>, features: ml.Tensor): ml.Tensor<'f32'> {
    const L = Math.max(...rows.map((r) => r.ids.length));
    const B = rows.length;
    const targets = new Int32Array(B * L).fill(-100);
    rows.forEach((r, b) => {
      for (let t = 0; t + 1 < r.ids.length; t++) if (r.mask[t + 1]) targets[b * L + t] = r.ids[t + 1];
    });
    return ml.tidy(() => {
      const x = this.spliceEmbeds(rows, L, this.project(features));
      const logits = this.logitsFromEmbeds(x);
      return ml.crossEntropy(logits, ml.tensor(targets, [B, L], { dtype: 'i32' }), { ignoreIndex: -100 });
    });
  }

  /**
   * Answers for prompt rows (expanded ids ending in `<|assistant|>`, all of one length) and their images'
   * features [K, N, Wv]: the prompt up to `<|assistant|>` goes in as prefix embeddings, then KV-cached decoding
   * stops at `<|end|>` (or `<eos>`). Token ids of the answers.
   */
  generateIds(rows: SpliceRow[], features: ml.Tensor, opts: AnswerOptions = {}): number[][] {
    const L = rows[0].ids.length;
    if (rows.some((r) => r.ids.length !== L)) throw new Error('instruct: generateIds needs prompt rows of one length');
    const last = rows.map((r) => [r.ids[L - 1]]);
    const was = this.projector.training;
    this.projector.eval();
    try {
      return ml.noGrad(() => {
        const prefix = ml.tidy(() => this.spliceEmbeds(rows.map((r) => ({ ids: r.ids.subarray(0, L - 1), slots: r.slots })), L - 1, this.project(features)));
        try {
          const room = this.gpt.config.contextLength - L + 1;
          const out = generate(this.gpt, last, {
            maxNewTokens: Math.max(1, Math.min(opts.maxNewTokens ?? 16, room)), greedy: opts.greedy ?? true,
            temperature: opts.temperature ?? 1, seed: opts.seed ?? 0, eosId: this.endId, prefixEmbeds: prefix,
          });
          const eos = this.tokenizer.eosId;
          return out.tokens.map((t) => (t.includes(eos) ? t.slice(0, t.indexOf(eos)) : t));
        } finally {
          prefix.dispose();
        }
      });
    } finally {
      this.projector.train(was);
    }
  }

  dispose(): void {
    this.rowMask?.dispose();
    this.projector.dispose();
    this.gpt.dispose();
    this.encoder.dispose();
  }
}
