/**
 * matmul: 2-D and batched with NumPy-broadcast batch dims, with transpose flags instead of materialised
 * transposes.
 *
 * ```ts
 * const x = ml.randn([8, 16, 32]);             // (B, T, C)
 * const w = ml.randn([64, 32]);                // (out, in), as nn.Linear stores it
 * ml.matmul(x, w, { transB: true }).shape;     // [8, 16, 64]: x @ w^T without copying w
 * ml.matmul(ml.randn([2, 1, 3, 4]), ml.randn([5, 4, 2])).shape;   // [2, 5, 3, 2]
 * ```
 *
 * Both operands need at least 2 dims (a vector is a [1, n] or [n, 1] matrix: use unsqueeze). The trailing two
 * axes are the matrices; the leading ones broadcast. Gradients reuse the same kernel with the flags flipped
 * (dA = g @ op(B)^T, dB = op(A)^T @ g), and sum over the batch axes an operand was broadcast along by
 * accumulating into one output (beta = 1) rather than materialising the broadcast gradient.
 *
 * Half precision. Two bf16 (or two f16) operands multiply with f32 accumulation (AVX-512 BF16 dot products for
 * bf16 where the processor has them) and the result is f32, not the operands' dtype as in PyTorch: what reads a
 * matmul's output (bias adds, softmax, norms, losses) runs in f32 here anyway, so returning f32 saves a rounding
 * and a cast each way. Inside `ml.autocast('bf16' | 'f16', fn)`, operands of another float dtype are cast to
 * the autocast dtype first (a differentiable cast: gradients reach f32 master weights as f32), so the GEMM runs
 * in low precision. The backward multiplies in the operands' dtype too (the incoming f32 gradient is rounded to
 * it, as PyTorch's low-precision backward does), which is where f16 can overflow and GradScaler comes in.
 *
 * ```ts
 * const w = ml.randn([64, 32], { requiresGrad: true });                  // f32 master weights
 * const y = ml.autocast('bf16', () => ml.matmul(x, w, { transB: true }));  // bf16 GEMM, y is f32
 * ```
 */
import { binding } from '../binding';
import { record, needsGrad } from '../autograd';
import { autocastDtype } from '../amp';
import { DType, Device, dtypeCode } from '../dtype';
import { Tensor, Shape, shapeSize } from '../tensor';
import { cast } from './cast';
import { checkSameDevice, checkTensor, contiguousStrides, describe, shapeStr } from './util';

export interface MatmulOptions {
  /** Use a's transpose: a is [..., K, M] instead of [..., M, K]. */
  transA?: boolean;
  /** Use b's transpose: b is [..., N, K] instead of [..., K, N]. */
  transB?: boolean;
}

/** A new output tensor; an allocation that fails (too large, out of memory) throws naming the op and the shape. */
function output<D extends DType>(op: string, shape: Shape, dtype: D, device: Device): Tensor<D> {
  try {
    return Tensor._empty(shape, dtype, device);
  } catch (e) {
    throw new Error(`${op}: cannot allocate the output ${shapeStr(shape)} ${dtype}: ${(e as Error).message}`);
  }
}

/** One operand of a batched GEMM: its tensor, its batch shape padded with 1s to the output's batch rank. */
interface Operand { t: Tensor; batch: number[] }

/** Element strides of an operand's matrices over outBatch: contiguous over its own batch, 0 where broadcast. */
function batchStrides(batch: number[], outBatch: number[], matSize: number): number[] {
  const own = contiguousStrides(batch);
  return outBatch.map((d, i) => (batch[i] === 1 && d !== 1 ? 0 : own[i] * matSize));
}

/**
 * c (cBatch..., M, N) = op(A) @ op(B) over the output batch outBatch, summed over the axes where c has size 1
 * but outBatch does not (the axes along which c's tensor was broadcast in the forward). c's previous contents
 * are overwritten (beta = 0 on the first product written, 1 on the rest).
 */
function gemmInto(c: Tensor<'f32'>, cBatch: number[], A: Operand, B: Operand, outBatch: number[], M: number,
  N: number, K: number, transA: boolean, transB: boolean): void {
  if (c.size === 0) return;
  const b = binding();
  const ch = c._h('matmul'), ah = A.t._h('matmul'), bh = B.t._h('matmul');
  // f32 operands go to the f32 GEMM, two half operands (the same dtype: matmul() sees to it) to the half one.
  const dt = A.t.dtype;
  if (B.t.dtype !== dt) throw new Error(`internal: matmul operands of dtypes ${dt} and ${B.t.dtype}`);
  const gemm = dt === 'f32' ? b.matmul.bind(b) : (c: typeof ch, coff: number, a: typeof ah, aoff: number,
    bb: typeof bh, boff: number, M: number, N: number, K: number, ta: boolean, tb: boolean, bshape: number[],
    as: number[], bs: number[], alpha: number, beta: number) =>
    b.matmulHalf(c, coff, a, aoff, bb, boff, dtypeCode(dt), M, N, K, ta, tb, bshape, as, bs, alpha, beta);
  const nbatch = shapeSize(outBatch);
  const reduce = outBatch.map((d, i) => cBatch[i] === 1 && d !== 1);
  const full = (o: Operand): boolean => o.batch.every((d, i) => d === outBatch[i]);
  const noBatch = (o: Operand): boolean => o.batch.every((d) => d === 1);

  // Fold the batch into M: c and A are full stacks of (M, K) rows, B is one shared matrix. One GEMM with
  // M' = batch * M (x @ W in a Linear layer, and its input gradient).
  if (!reduce.some(Boolean) && full(A) && noBatch(B) && !transA) {
    gemm(ch, c._offset, ah, A.t._offset, bh, B.t._offset, nbatch * M, N, K, false, transB, [], [], [], 1, 0);
    return;
  }
  // Fold the batch into K: c is one matrix summed over every batch entry, A is a full stack of (K, M) and B of
  // (K, N); stacked, they are (batch * K, M) and (batch * K, N). One GEMM (the weight gradient of a Linear layer).
  if (cBatch.every((d) => d === 1) && full(A) && full(B) && transA && !transB) {
    gemm(ch, c._offset, ah, A.t._offset, bh, B.t._offset, M, N, nbatch * K, true, false, [], [], [], 1, 0);
    return;
  }

  // General case: one batched call per combination of the reduced axes, accumulating into c.
  const as = batchStrides(A.batch, outBatch, M * K);
  const bs = batchStrides(B.batch, outBatch, K * N);
  const raxes = outBatch.map((_, i) => i).filter((i) => reduce[i]);
  let combos = 1;
  for (const i of raxes) combos *= outBatch[i];
  for (let r = 0; r < combos; r++) {
    let rest = r, aoff = A.t._offset, boff = B.t._offset;
    for (let j = raxes.length - 1; j >= 0; j--) {
      const ax = raxes[j];
      const ix = rest % outBatch[ax];
      rest = Math.floor(rest / outBatch[ax]);
      aoff += ix * as[ax];
      boff += ix * bs[ax];
    }
    gemm(ch, c._offset, ah, aoff, bh, boff, M, N, K, transA, transB, cBatch, as, bs, 1, r === 0 ? 0 : 1);
  }
}

/** An operand: a live float tensor (f32, or f16/bf16 for the half GEMM). */
function checkOperand(name: string, x: unknown): Tensor {
  const t = checkTensor('matmul', name, x);
  if (t.dtype === 'i32') {
    throw new TypeError(`matmul: ${name} must be f32, got i32 ${shapeStr(t.shape)} (or two f16/bf16 operands; cast it with .cast('f32'))`);
  }
  return t;
}

function checkFlag(name: string, v: unknown): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new TypeError(`matmul: ${name} must be a boolean, got ${describe(v)}`);
  return v;
}

/**
 * a @ b over the last two axes, with NumPy broadcasting of the leading (batch) axes:
 * a [..., M, K] @ b [..., K, N] -> [..., M, N]; `transA` / `transB` read a or b transposed without copying.
 * f32, or two bf16 / two f16 operands (f32 accumulation); the result is f32. Under ml.autocast, operands are
 * cast to the autocast dtype first.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor<'f32'> {
  checkOperand('a', a);
  checkOperand('b', b);
  checkSameDevice('matmul', a, b);
  if (opts === null || typeof opts !== 'object') throw new TypeError(`matmul: options must be an object, got ${describe(opts)}`);
  const transA = checkFlag('transA', opts.transA);
  const transB = checkFlag('transB', opts.transB);
  const both = `a ${shapeStr(a.shape)}${transA ? ' (transA)' : ''} and b ${shapeStr(b.shape)}${transB ? ' (transB)' : ''}`;
  if (a.ndim < 2 || b.ndim < 2) {
    throw new Error(`matmul: ${both}: both operands need at least 2 dims (unsqueeze a vector into a [1, n] or [n, 1] matrix)`);
  }
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const M = transA ? ac : ar, K = transA ? ar : ac;
  const Kb = transB ? bc : br, N = transB ? br : bc;
  if (K !== Kb) throw new Error(`matmul: ${both}: inner dimensions ${K} and ${Kb} differ`);

  // Broadcast the batch axes.
  const aB = a.shape.slice(0, -2), bB = b.shape.slice(0, -2);
  const nb = Math.max(aB.length, bB.length);
  const aBatch = [...new Array<number>(nb - aB.length).fill(1), ...aB];
  const bBatch = [...new Array<number>(nb - bB.length).fill(1), ...bB];
  const outBatch = aBatch.map((d, i) => {
    const e = bBatch[i];
    if (d !== e && d !== 1 && e !== 1) {
      throw new Error(`matmul: ${both}: batch dimensions ${shapeStr(aB)} and ${shapeStr(bB)} cannot be broadcast together`);
    }
    return d === 1 ? e : d;
  });

  // Autocast: operands in the region's dtype (the casts are graph nodes, so gradients flow back as f32).
  const low = autocastDtype();
  if (low !== null && (a.dtype !== low || b.dtype !== low)) {
    const a16 = a.dtype === low ? a : cast(a, low);
    const b16 = b.dtype === low ? b : cast(b, low);
    try {
      return matmul(a16, b16, opts);
    } finally {
      if (a16 !== a) a16.dispose();
      if (b16 !== b) b16.dispose();
    }
  }
  if (a.dtype !== b.dtype) {
    throw new TypeError(`matmul: ${both}: a is ${a.dtype} and b is ${b.dtype}; both operands must have the same dtype ` +
      '(cast one of them, or run the matmul inside ml.autocast)');
  }

  const out = output('matmul', [...outBatch, M, N], 'f32', a.device);
  gemmInto(out, outBatch, { t: a, batch: aBatch }, { t: b, batch: bBatch }, outBatch, M, N, K, transA, transB);
  if (!needsGrad(a, b)) return out;

  // dA needs b and dB needs a: keep only what the backward will read.
  const sa = b.requiresGrad ? a.retainForBackward() : null;
  const sb = a.requiresGrad ? b.retainForBackward() : null;
  const saved = [sa, sb].filter((t): t is Tensor => t !== null);
  const dt = a.dtype;
  return record(out, 'matmul', [a, b], (gf) => {
    // Half operands: the gradient is rounded to their dtype and the products run in it (f32 accumulation).
    const g = dt === 'f32' ? gf : cast(gf, dt);
    const G: Operand = { t: g, batch: outBatch };
    // A gradient summed over an empty batch is all zeros: allocate it zeroed, nothing will be written.
    const empty = shapeSize(outBatch) === 0;
    let da: Tensor<'f32'> | null = null, db: Tensor<'f32'> | null = null;
    if (a.requiresGrad && sb) {
      da = Tensor._empty(a.shape, 'f32', a.device, empty);
      const B: Operand = { t: sb, batch: bBatch };
      if (!transA) gemmInto(da, aBatch, G, B, outBatch, M, K, N, false, !transB);  // dA = g @ op(B)^T
      else gemmInto(da, aBatch, B, G, outBatch, K, M, N, transB, true);            // dA = op(B) @ g^T
    }
    if (b.requiresGrad && sa) {
      db = Tensor._empty(b.shape, 'f32', b.device, empty);
      const A: Operand = { t: sa, batch: aBatch };
      if (!transB) gemmInto(db, bBatch, A, G, outBatch, K, N, M, !transA, false);  // dB = op(A)^T @ g
      else gemmInto(db, bBatch, G, A, outBatch, N, K, M, true, transA);            // dB = g^T @ op(A)
    }
    if (g !== gf) g.dispose();
    return [da, db];
  }, saved);
}
