/**
 * Multi-head attention with its core in one function, `scaledDotProductAttention`, which runs on the fused
 * kernel `ml.attention` (src/api/ops/attention.ts: FlashAttention-2, no N x M matrix) and falls back to plain
 * differentiable ops only for attention dropout in training, which the fused kernel does not do.
 *
 * ```ts
 * const mha = new ml.nn.MultiheadAttention(64, 4);
 * const x = ml.randn([2, 10, 64]);
 * mha.forward(x, { causal: true }).shape;   // [2, 10, 64]
 * ```
 */
import { tensor } from '../creation';
import { attention } from '../ops/attention';
import { cast } from '../ops/cast';
import { Tensor, shapeStr } from '../tensor';
import { add, dropout, maskedFill, mul } from '../ops/elementwise';
import { matmul } from '../ops/matmul';
import { softmax } from '../ops/softmax';
import { permute, reshape, slice } from '../ops/layout';
import { checkNumber, checkTensor } from '../ops/util';
import { Linear } from './linear';
import { Module } from './module';

export interface AttentionOptions {
  /**
   * Mask keys after the query's position. Aligned bottom-right: query i (of N) sees keys j <= i + M - N, which
   * is the usual causal mask when N = M and the right one for decoding with a KV cache (N < M).
   */
  causal?: boolean;
  /** [B, M], f32 or i32: nonzero (true) marks a key to ignore (padding), as in torch's key_padding_mask. */
  keyPaddingMask?: Tensor | null;
}

export interface SDPAOptions extends AttentionOptions {
  /** Default 1/sqrt(D). */
  scale?: number;
  /** Dropout on the attention weights, applied only when `training`. Default 0. */
  dropout?: number;
  /** Default false. */
  training?: boolean;
}

/**
 * softmax(q k^T * scale + masks) v, per batch and head (Vaswani et al. 2017, eq. 1).
 * q [B, H, N, D], k [B, H, M, D], v [B, H, M, Dv] -> [B, H, N, Dv]. Masked scores become -inf before the
 * softmax; a query row whose keys are all masked outputs zeros (and passes zero gradient), as PyTorch's SDPA.
 * Runs on the fused kernel (`ml.attention`, same masks and causal alignment) unless attention dropout is active
 * (dropout > 0 in training), which takes the plain path below. The result is f32 (f16 / bf16 inputs outside
 * autocast give an output of their dtype from the kernel, widened here).
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: SDPAOptions = {}): Tensor<'f32'> {
  const op = 'scaledDotProductAttention';
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${op}: options must be an object, got ${opts === null ? 'null' : typeof opts}`);
  checkTensor(op, 'q', q);
  checkTensor(op, 'k', k);
  checkTensor(op, 'v', v);
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) {
    throw new Error(`${op}: q, k, v must be [B, H, N, D], got q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}, v ${shapeStr(v.shape)}`);
  }
  const [B, H, N, D] = q.shape;
  const M = k.shape[2];
  if (k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== D || v.shape[0] !== B || v.shape[1] !== H || v.shape[2] !== M) {
    throw new Error(`${op}: q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)} and v ${shapeStr(v.shape)} do not agree ` +
      '(expected q [B, H, N, D], k [B, H, M, D], v [B, H, M, Dv])');
  }
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  checkNumber(op, 'scale', scale);
  const p = checkNumber(op, 'dropout', opts.dropout ?? 0, { min: 0, max: 1 });
  const kpm = opts.keyPaddingMask ?? null;
  if (kpm !== null) {
    checkTensor(op, 'keyPaddingMask', kpm);
    if (kpm.ndim !== 2 || kpm.shape[0] !== B || kpm.shape[1] !== M) {
      throw new Error(`${op}: keyPaddingMask ${shapeStr(kpm.shape)} must be [B, M] = [${B}, ${M}] for k ${shapeStr(k.shape)}`);
    }
  }

  if (!(p > 0 && opts.training)) {
    // Half-precision masks are read as f32 (the kernel takes f32 or i32: nonzero = masked).
    const mask = kpm !== null && kpm.dtype !== 'f32' && kpm.dtype !== 'i32' ? cast(kpm, 'f32') : kpm;
    try {
      const o = attention(q, k, v, { causal: !!opts.causal, keyPaddingMask: mask, scale });
      if (o.dtype === 'f32') return o as Tensor<'f32'>;
      return swap(o, cast(o, 'f32'));
    } finally {
      if (mask !== kpm) mask?.dispose();
    }
  }

  // The plain path, for attention dropout in training.
  // A query row whose every key is masked would give softmax(-inf, ..., -inf) = NaN, and NaN * 0 = NaN in the
  // backward pass would then poison every gradient (think of padded queries in cross-attention). Such rows
  // attend to nothing and output zeros instead, as PyTorch's SDPA does since 2.5 (_safe_softmax). They are found
  // on the host from the masks (B * M values); the common case, no dead row, pays nothing more.
  const dead = deadRows(B, N, M, !!opts.causal, kpm);

  // scores [B, H, N, M] = (q * scale) k^T: scaling q touches N*D values instead of N*M, and the transpose of k
  // is a GEMM flag, not a copy.
  const qs = mul(q, scale);
  let s = matmul(qs, k, { transB: true });
  qs.dispose();
  if (dead === null) {
    if (opts.causal) {
      const m = causalMask(N, M);
      s = swap(s, maskedFill(s, m, -Infinity));
      m.dispose();
    }
    if (kpm !== null) {
      const m = reshape(kpm, [B, 1, 1, M]);
      s = swap(s, maskedFill(s, m, -Infinity));
      m.dispose();
    }
  } else {
    // One host-built mask [B, 1, N, M] that leaves dead rows unmasked (finite softmax), zeroed after it.
    const m = combinedMask(B, N, M, !!opts.causal, dead.pad, dead.rows);
    s = swap(s, maskedFill(s, m, -Infinity));
    m.dispose();
  }
  let a = swap(s, softmax(s, -1));
  if (dead !== null) {
    const d = tensor(dead.rows, [B, 1, N, 1]);
    a = swap(a, maskedFill(a, d, 0));
    d.dispose();
  }
  if (p > 0 && opts.training) a = swap(a, dropout(a, p, true));
  const out = matmul(a, v);
  a.dispose();
  return out;
}

/** Rows (b, i) with no visible key, as an f32 [B * N] array of 1s, or null when there are none. */
function deadRows(B: number, N: number, M: number, causal: boolean, kpm: Tensor | null): { rows: Float32Array; pad: ArrayLike<number> | null } | null {
  if (kpm === null && !(causal && N > M)) return null;
  const pad = kpm ? kpm.toArray() as ArrayLike<number> : null;
  const rows = new Float32Array(B * N);
  let any = false;
  for (let b = 0; b < B; b++) {
    let first = 0;  // the first key not padded
    if (pad) while (first < M && pad[b * M + first] !== 0) first++;
    for (let i = 0; i < N; i++) {
      const last = causal ? i + M - N : M - 1;  // the last key query i may see
      if (first > last) { rows[b * N + i] = 1; any = true; }
    }
  }
  return any ? { rows, pad } : null;
}

/** [B, 1, N, M] f32: 1 where a key is masked (causal or padding), except on dead rows, which stay unmasked. */
function combinedMask(B: number, N: number, M: number, causal: boolean, pad: ArrayLike<number> | null, dead: Float32Array): Tensor<'f32'> {
  const data = new Float32Array(B * N * M);
  for (let b = 0; b < B; b++) for (let i = 0; i < N; i++) {
    if (dead[b * N + i]) continue;
    for (let j = 0; j < M; j++) {
      if ((causal && j > i + M - N) || (pad !== null && pad[b * M + j] !== 0)) data[(b * N + i) * M + j] = 1;
    }
  }
  return tensor(data, [B, 1, N, M]);
}

/** [N, M] f32, 1 where query i must not see key j (j > i + M - N). */
function causalMask(N: number, M: number): Tensor<'f32'> {
  const data = new Float32Array(N * M);
  for (let i = 0; i < N; i++) data.fill(1, i * M + Math.max(0, i + M - N + 1), (i + 1) * M);
  return tensor(data, [N, M]);
}

/** Dispose an intermediate as soon as the next one exists (autograd keeps what it needs by its own reference). */
function swap<T extends Tensor>(old: Tensor, next: T): T {
  if (old !== next) old.dispose();
  return next;
}

export interface MultiheadAttentionOptions {
  /** Biases in the qkv and output projections. Default true. */
  bias?: boolean;
  /** Dropout on the attention weights in train mode (as torch.nn.MultiheadAttention). Default 0. */
  dropout?: number;
}

export interface MultiheadAttentionForward extends AttentionOptions {
  /** Cross-attention: keys and values come from context [B, M, E] (queries from x). Default: x itself. */
  context?: Tensor | null;
}

export class MultiheadAttention extends Module {
  /** Fused q, k, v projection: weight [3E, E], rows [0, E) make q, [E, 2E) k, [2E, 3E) v. */
  qkv: Linear;
  /** Output projection [E, E]. */
  proj: Linear;
  readonly headDim: number;
  readonly dropout: number;

  constructor(readonly embedDim: number, readonly numHeads: number, opts: MultiheadAttentionOptions = {}) {
    super();
    checkNumber('MultiheadAttention', 'embedDim', embedDim, { integer: true, min: 1 });
    checkNumber('MultiheadAttention', 'numHeads', numHeads, { integer: true, min: 1 });
    if (embedDim % numHeads !== 0) {
      throw new Error(`MultiheadAttention: embedDim ${embedDim} is not divisible by numHeads ${numHeads}`);
    }
    this.headDim = embedDim / numHeads;
    this.dropout = checkNumber('MultiheadAttention', 'dropout', opts.dropout ?? 0, { min: 0, max: 1 });
    const bias = opts.bias ?? true;
    this.qkv = this.registerModule('qkv', new Linear(embedDim, 3 * embedDim, { bias }));
    this.proj = this.registerModule('proj', new Linear(embedDim, embedDim, { bias }));
  }

  /** x [B, N, E] (or [N, E]) -> same shape. */
  forward(x: Tensor, opts: MultiheadAttentionForward = {}): Tensor<'f32'> {
    const op = 'MultiheadAttention';
    checkTensor(op, 'x', x);
    const E = this.embedDim, H = this.numHeads, D = this.headDim;
    const ctx = opts.context ?? null;
    if (x.ndim === 2) {
      // Unbatched, as torch allows: add a batch axis of 1 and take it off again.
      const xb = reshape(x, [1, ...x.shape]);
      const cb = ctx && ctx.ndim === 2 ? reshape(ctx, [1, ...ctx.shape]) : ctx;
      const kb = opts.keyPaddingMask && opts.keyPaddingMask.ndim === 1 ? reshape(opts.keyPaddingMask, [1, ...opts.keyPaddingMask.shape]) : opts.keyPaddingMask;
      const yb = this.forward(xb, { ...opts, context: cb, keyPaddingMask: kb });
      for (const t of [xb, cb, kb]) if (t && t !== ctx && t !== opts.keyPaddingMask) t.dispose();
      const y = reshape(yb, x.shape);
      yb.dispose();
      return y;
    }
    if (x.ndim !== 3 || x.shape[2] !== E) {
      throw new Error(`${op}(${E}, ${H}): x ${shapeStr(x.shape)} must be [B, N, ${E}]`);
    }
    const [B, N] = x.shape;
    let q: Tensor, k: Tensor, v: Tensor;
    if (ctx === null) {
      // One GEMM for q, k and v: [B, N, 3E] -> [B, N, 3, H, D] -> [3, B, H, N, D] (one copy), then views.
      [q, k, v] = this.heads(this.qkv.forward(x), B, N, 3);
    } else {
      checkTensor(op, 'context', ctx);
      if (ctx.ndim !== 3 || ctx.shape[0] !== B || ctx.shape[2] !== E) {
        throw new Error(`${op}(${E}, ${H}): context ${shapeStr(ctx.shape)} must be [B, M, ${E}] with B = ${B} (x ${shapeStr(x.shape)})`);
      }
      // Cross-attention uses the same fused weight: rows [0, E) project x to q, rows [E, 3E) project context to k, v.
      const M = ctx.shape[1];
      q = this.heads(this.project(x, 0, E), B, N, 1)[0];
      [k, v] = this.heads(this.project(ctx, E, 3 * E), B, M, 2);
    }
    const o = scaledDotProductAttention(q, k, v, {
      causal: opts.causal, keyPaddingMask: opts.keyPaddingMask, dropout: this.dropout, training: this.training,
    });
    q.dispose(); k.dispose(); v.dispose();
    // [B, H, N, D] -> [B, N, H, D] -> [B, N, E]
    const ot = permute(o, [0, 2, 1, 3]);
    o.dispose();
    const merged = reshape(ot, [B, N, E]);
    ot.dispose();
    const out = this.proj.forward(merged);
    merged.dispose();
    return out;
  }

  /** x [B, L, E] @ qkv.weight[r0:r1]^T + qkv.bias[r0:r1] -> [B, L, r1 - r0] */
  private project(x: Tensor, r0: number, r1: number): Tensor<'f32'> {
    const [B, L, E] = x.shape;
    if (!(this.qkv instanceof Linear)) {
      // A wrapped projection (LoRA) is more than its weight: run it whole and keep the columns [r0, r1).
      const all = (this.qkv as Module & { forward(t: Tensor): Tensor<'f32'> }).forward(x);
      const part = slice(all, 2, r0, r1);
      all.dispose();
      return part as Tensor<'f32'>;
    }
    const w = slice(this.qkv.weight, 0, r0, r1);
    const x2 = reshape(x, [B * L, E]);
    let y = matmul(x2, w, { transB: true });
    x2.dispose();
    w.dispose();
    if (this.qkv.bias) {
      const b = slice(this.qkv.bias, 0, r0, r1);
      y = swap(y, add(y, b));
      b.dispose();
    }
    const out = reshape(y, [B, L, r1 - r0]);
    y.dispose();
    return out;
  }

  /** y [B, L, parts * E] -> parts tensors [B, H, L, D] */
  private heads(y: Tensor, B: number, L: number, parts: number): Tensor[] {
    const H = this.numHeads, D = this.headDim;
    const y5 = reshape(y, [B, L, parts, H, D]);
    y.dispose();
    const t = permute(y5, [2, 0, 3, 1, 4]);
    y5.dispose();
    const out = Array.from({ length: parts }, (_, i) => {
      const s = slice(t, 0, i, i + 1);
      const r = reshape(s, [B, H, L, D]);
      s.dispose();
      return r;
    });
    t.dispose();
    return out;
  }

  override extraRepr(): string {
    return `embedDim=${this.embedDim}, numHeads=${this.numHeads}` + (this.dropout ? `, dropout=${this.dropout}` : '');
  }
}
