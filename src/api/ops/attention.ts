/**
 * attention: fused scaled dot-product attention, softmax(scale * q k^T + masks) v, that never forms the N x M
 * score matrix (FlashAttention-2 on the CPU: native/cpu/attention.cc).
 *
 * ```ts
 * const q = ml.randn([2, 4, 128, 64], { requiresGrad: true });   // [B, H, N, D]
 * const k = ml.randn([2, 4, 128, 64]), v = ml.randn([2, 4, 128, 64]);
 * const o = ml.attention(q, k, v, { causal: true });            // [2, 4, 128, 64]
 * o.sum().backward();                                            // q.grad: [2, 4, 128, 64]
 * const local = ml.attention(q, k, v, { window: 16 });           // each query sees its previous 16 keys
 * ```
 * The forward streams key/value tiles through an online softmax and keeps one logsumexp per query row; the
 * backward recomputes the score tiles from it. Memory beyond the inputs and outputs is O(N D), so long sequences
 * (N = M = 8192: 256 MB per head as a score matrix) cost a few MB. See native/cpu/attention.cc for the algorithm.
 */
import { binding } from '../binding';
import { needsGrad, record } from '../autograd';
import { autocastDtype } from '../amp';
import { dtypeCode, FloatDType } from '../dtype';
import { Tensor } from '../tensor';
import { cast } from './cast';
import { checkFloat, checkNumber, checkSameDevice, checkTensor, describe, shapeStr } from './util';

const OP = 'attention';

export interface FusedAttentionOptions {
  /**
   * Hide the keys after each query's position, aligned bottom-right: query i (of N) sees keys j <= i + M - N.
   * With N = M that is the usual causal mask; with N < M (decoding with a KV cache) the last query sees every
   * key; with N > M the first N - M queries see nothing (and output zeros). Default false.
   */
  causal?: boolean;
  /**
   * [B, M], f32 or i32: nonzero marks a key to ignore for every query of that batch entry (padding), as
   * PyTorch's key_padding_mask. A query that ends up seeing no key at all outputs zeros and passes zero gradient.
   */
  keyPaddingMask?: Tensor | null;
  /**
   * Sliding-window (local) attention: with i' = i + M - N, query i sees keys j with i' - window < j <= i', its
   * own position and the window - 1 before it. Implies the causal bound. A positive integer; null or undefined
   * for none.
   */
  window?: number | null;
  /** Multiplies q k^T. Default 1 / sqrt(D). */
  scale?: number;
}

/**
 * Scaled dot-product attention of q [B, H, N, D] with k [B, H, M, D] and v [B, H, M, Dv]: returns
 * [B, H, N, Dv] in the inputs' dtype. q, k, v must share a dtype: f32, or f16 / bf16 (read in low precision,
 * accumulated in f32, the output rounded once). Inside `ml.autocast(dtype, fn)` they are cast to that dtype
 * first and the output is f32 (unrounded), as matmul's is there: what reads it (residual adds, norms) runs in
 * f32. Gradients for q, k, v (whichever require them) are f32, as every gradient.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: FusedAttentionOptions = {}): Tensor<FloatDType> {
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${OP}: options must be an object, got ${describe(opts)}`);
  checkFloat(OP, 'q', q, true);
  checkFloat(OP, 'k', k, true);
  checkFloat(OP, 'v', v, true);
  checkSameDevice(OP, q, k);
  checkSameDevice(OP, q, v);
  const shapes = `q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}, v ${shapeStr(v.shape)}`;
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) throw new Error(`${OP}: q, k, v must be [B, H, N, D], got ${shapes}`);
  const [B, H, N, D] = q.shape;
  const M = k.shape[2], Dv = v.shape[3];
  if (k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== D || v.shape[0] !== B || v.shape[1] !== H || v.shape[2] !== M) {
    throw new Error(`${OP}: ${shapes} do not agree (expected q [B, H, N, D], k [B, H, M, D], v [B, H, M, Dv])`);
  }
  const causal = opts.causal ?? false;
  if (typeof causal !== 'boolean') throw new TypeError(`${OP}: causal must be a boolean, got ${describe(causal)}`);
  const window = opts.window == null ? 0 : checkNumber(OP, 'window', opts.window, { integer: true, min: 1 });
  const scale = opts.scale ?? (D > 0 ? 1 / Math.sqrt(D) : 1);
  checkNumber(OP, 'scale', scale);
  const mask = opts.keyPaddingMask ?? null;
  if (mask !== null) {
    checkTensor(OP, 'keyPaddingMask', mask);
    checkSameDevice(OP, q, mask);
    if (mask.dtype !== 'f32' && mask.dtype !== 'i32') {
      throw new TypeError(`${OP}: keyPaddingMask must be f32 or i32 (nonzero = padded), got ${mask.dtype} ${shapeStr(mask.shape)}`);
    }
    if (mask.ndim !== 2 || mask.shape[0] !== B || mask.shape[1] !== M) {
      throw new Error(`${OP}: keyPaddingMask ${shapeStr(mask.shape)} must be [B, M] = [${B}, ${M}] for ${shapes}`);
    }
  }

  // Autocast: the inputs in the region's dtype (differentiable casts: their gradients flow back as f32).
  const low = autocastDtype();
  if (low !== null) {
    const [q16, k16, v16] = [q, k, v].map((t) => (t.dtype === low ? t : cast(t, low)));
    try {
      return run(q16, k16, v16, mask, scale, causal, window, 'f32');
    } finally {
      for (const [t, orig] of [[q16, q], [k16, k], [v16, v]]) if (t !== orig) t.dispose();
    }
  }
  if (q.dtype !== k.dtype || q.dtype !== v.dtype) {
    throw new TypeError(`${OP}: q, k and v must share a dtype, got q ${q.dtype}, k ${k.dtype}, v ${v.dtype} ` +
      '(cast them, or run inside ml.autocast)');
  }
  return run(q, k, v, mask, scale, causal, window, q.dtype as FloatDType);
}

/** The checked call: q, k, v of one dtype; out in outDtype (that dtype or f32). */
function run(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null, scale: number, causal: boolean, window: number,
  outDtype: FloatDType): Tensor<FloatDType> {
  const [B, H, N, D] = q.shape;
  const M = k.shape[2], Dv = v.shape[3];
  const dtype = q.dtype as FloatDType;

  const b = binding();
  const out = Tensor._empty([B, H, N, Dv], outDtype, q.device, false, OP);
  const stats = Tensor._empty([B, H, N, 2], 'f32', q.device, false, OP);  // row max and log-sum, for backward
  const maskH = mask === null ? null : mask._h(OP);
  const maskOff = mask === null ? 0 : mask._offset;
  const maskI32 = mask !== null && mask.dtype === 'i32';
  try {
    b.attention(out._h(OP), out._offset, stats._h(OP), stats._offset, q._h(OP), q._offset, k._h(OP), k._offset, v._h(OP),
      v._offset, dtypeCode(dtype), dtypeCode(outDtype), maskH, maskOff, maskI32, B, H, N, M, D, Dv, scale, causal,
      window);
  } catch (e) {
    out.dispose();
    stats.dispose();
    throw e;
  }
  if (!needsGrad(q, k, v)) {
    stats.dispose();
    return out;
  }

  // The backward recomputes the scores and probabilities from q, k and stats, and dP from v; not the output.
  const saved = [q, k, v, stats].map((t) => t.retainForBackward());
  stats.dispose();
  const sm = mask === null ? null : mask.retainForBackward();
  if (sm) saved.push(sm);
  const [sq, sk, sv, ss] = saved;
  return record(out, OP, [q, k, v], (g) => {
    const dq = Tensor._empty(q.shape, 'f32', q.device, false, OP);
    const dk = Tensor._empty(k.shape, 'f32', k.device, false, OP);
    const dv = Tensor._empty(v.shape, 'f32', v.device, false, OP);
    try {
      b.attentionBackward(dq._h(OP), dq._offset, dk._h(OP), dk._offset, dv._h(OP), dv._offset, g._h(OP), g._offset,
        sq._h(OP), sq._offset, sk._h(OP), sk._offset, sv._h(OP), sv._offset, ss._h(OP), ss._offset, dtypeCode(dtype),
        sm === null ? null : sm._h(OP), sm === null ? 0 : sm._offset, maskI32, B, H, N, M, D, Dv, scale, causal, window);
    } catch (e) {
      dq.dispose();
      dk.dispose();
      dv.dispose();
      throw e;
    }
    return [q.requiresGrad ? dq : (dq.dispose(), null), k.requiresGrad ? dk : (dk.dispose(), null),
      v.requiresGrad ? dv : (dv.dispose(), null)];
  }, saved);
}
