/**
 * Layout ops: reshape (a view), flatten, squeeze/unsqueeze, transpose/permute, slice, concat, stack,
 * broadcastTo, clone. Every dtype works (elements move as 2- or 4-byte words); gradients flow for float inputs.
 *
 * ```ts
 * const x = ml.arange(24).reshape([2, 3, 4]);     // a view: same memory
 * x.permute([2, 0, 1]).shape;                      // [4, 2, 3] (a copy, native strided gather)
 * x.slice(0, 1).shape;                             // [1, 3, 4] (leading axis: a view)
 * ml.concat([x, x], 1).shape;                      // [2, 6, 4]
 * ```
 *
 * Tensors are always contiguous, so a reshape, or any change that only moves size-1 axes, is a view sharing
 * memory; a slice is a view when every axis before the sliced one has size 1 (the leading axis, in particular).
 * Everything else copies through one native kernel (copyStrided / sliceCopy / sliceAssign).
 */
import { binding } from '../binding';
import type { DType, Device } from '../dtype';
import { dtypeSize } from '../dtype';
import { record, needsGrad } from '../autograd';
import { Tensor, Shape, shapeSize } from '../tensor';
import {
  axisSplit, broadcastStrides, checkNumber, checkSameDevice, checkTensor, contiguousStrides, describe, normAxis,
  sameShape, shapeStr,
} from './util';
import { sumToShape } from './reduce';

/** A new output tensor; an allocation that fails (too large, out of memory) throws naming the op and the shape. */
function output<D extends DType>(op: string, shape: Shape, dtype: D, device: Device): Tensor<D> {
  try {
    return Tensor._empty(shape, dtype, device);
  } catch (e) {
    throw new Error(`${op}: cannot allocate the output ${shapeStr(shape)} ${dtype}: ${(e as Error).message}`);
  }
}

// ------------------------------------------------------------------------------------------------ views

/** A view of x with another shape (same size); its gradient is the incoming gradient viewed back. */
function viewAs<D extends DType>(op: string, x: Tensor<D>, shape: Shape): Tensor<D> {
  const out = x._view(shape);
  return record(out, op, [x], (g) => [g._view(x.shape)]);
}

/**
 * x.reshape([2, -1]): the same elements in another shape, as a view sharing x's memory. One axis may be -1
 * and is inferred.
 */
export function reshape<D extends DType>(x: Tensor<D>, shape: Shape): Tensor<D> {
  checkTensor('reshape', 'x', x);
  if (!Array.isArray(shape)) throw new TypeError(`reshape: shape must be an array of integers, got ${describe(shape)}`);
  let infer = -1;
  let known = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < -1) {
      throw new TypeError(`reshape: shape ${JSON.stringify(shape)} must hold non-negative integers (or one -1)`);
    }
    if (d === -1) {
      if (infer >= 0) throw new Error(`reshape: shape ${shapeStr(shape)} has more than one -1`);
      infer = i;
    } else {
      known *= d;
    }
  }
  const out = shape.slice();
  if (infer >= 0) {
    if (known === 0 || x.size % known !== 0) {
      throw new Error(`reshape: cannot reshape x ${shapeStr(x.shape)} (${x.size} elements) into ${shapeStr(shape)}`);
    }
    out[infer] = x.size / known;
  } else if (known !== x.size) {
    throw new Error(`reshape: cannot reshape x ${shapeStr(x.shape)} (${x.size} elements) into ${shapeStr(shape)} ` +
      `(${known} elements)`);
  }
  return viewAs('reshape', x, out);
}

/** Merge axes startAxis..endAxis (inclusive) into one; a view. A 0-d tensor flattens to [1]. */
export function flatten<D extends DType>(x: Tensor<D>, startAxis = 0, endAxis = -1): Tensor<D> {
  checkTensor('flatten', 'x', x);
  if (x.ndim === 0) return viewAs('flatten', x, [1]);
  const s = normAxis('flatten', startAxis, x.ndim);
  const e = normAxis('flatten', endAxis, x.ndim);
  if (s > e) throw new RangeError(`flatten: startAxis ${startAxis} comes after endAxis ${endAxis} for x ${shapeStr(x.shape)}`);
  const merged = shapeSize(x.shape.slice(s, e + 1));
  return viewAs('flatten', x, [...x.shape.slice(0, s), merged, ...x.shape.slice(e + 1)]);
}

/** Drop size-1 axes: all of them, or only `axis` (left as is when its size is not 1, as in PyTorch). A view. */
export function squeeze<D extends DType>(x: Tensor<D>, axis?: number): Tensor<D> {
  checkTensor('squeeze', 'x', x);
  if (axis === undefined) return viewAs('squeeze', x, x.shape.filter((d) => d !== 1));
  if (x.ndim === 0) {
    if (axis === 0 || axis === -1) return viewAs('squeeze', x, []);
    throw new RangeError(`squeeze: axis ${axis} is out of range for a tensor with 0 dims`);
  }
  const a = normAxis('squeeze', axis, x.ndim);
  if (x.shape[a] !== 1) return viewAs('squeeze', x, x.shape);
  return viewAs('squeeze', x, [...x.shape.slice(0, a), ...x.shape.slice(a + 1)]);
}

/** Insert a size-1 axis at `axis` (in [-ndim-1, ndim]). A view. */
export function unsqueeze<D extends DType>(x: Tensor<D>, axis: number): Tensor<D> {
  checkTensor('unsqueeze', 'x', x);
  const a = normAxis('unsqueeze', axis, x.ndim + 1);
  return viewAs('unsqueeze', x, [...x.shape.slice(0, a), 1, ...x.shape.slice(a)]);
}

// ------------------------------------------------------------------------------------------------ permute

/** Swap two axes (the last two by default). A copy, unless only size-1 axes move. */
export function transpose<D extends DType>(x: Tensor<D>, axis0 = -2, axis1 = -1): Tensor<D> {
  checkTensor('transpose', 'x', x);
  const a = normAxis('transpose', axis0, x.ndim);
  const b = normAxis('transpose', axis1, x.ndim);
  const perm = x.shape.map((_, i) => i);
  perm[a] = b;
  perm[b] = a;
  return permuteImpl('transpose', x, perm);
}

/** Reorder the axes: out.shape[i] = x.shape[perm[i]]. A copy, unless only size-1 axes move. */
export function permute<D extends DType>(x: Tensor<D>, perm: readonly number[]): Tensor<D> {
  checkTensor('permute', 'x', x);
  if (!Array.isArray(perm) || perm.length !== x.ndim) {
    throw new TypeError(`permute: perm must list all ${x.ndim} axes of x ${shapeStr(x.shape)}, got ${describe(perm)}`);
  }
  const p = perm.map((a) => normAxis('permute', a, x.ndim));
  if (new Set(p).size !== p.length) {
    throw new Error(`permute: perm ${JSON.stringify(perm)} repeats an axis (x ${shapeStr(x.shape)})`);
  }
  return permuteImpl('permute', x, p);
}

function permuteImpl<D extends DType>(op: string, x: Tensor<D>, perm: number[]): Tensor<D> {
  const shape = perm.map((a) => x.shape[a]);
  // When the axes of size > 1 keep their order, memory order is unchanged: a view does.
  const moved = perm.filter((a) => x.shape[a] !== 1);
  if (moved.every((a, i) => i === 0 || moved[i - 1] < a)) return viewAs(op, x, shape);
  const out = Tensor._empty(shape, x.dtype, x.device);
  if (out.size > 0) {
    const xs = contiguousStrides(x.shape);
    binding().copyStrided(out._h(op), out._offset, x._h(op), x._offset, shape, perm.map((a) => xs[a]),
      dtypeSize(x.dtype));
  }
  const inverse = new Array<number>(perm.length);
  perm.forEach((a, i) => { inverse[a] = i; });
  return record(out, op, [x], (g) => [permuteImpl(op, g, inverse)]);
}

// ------------------------------------------------------------------------------------------------ slice

/**
 * x.slice(axis, start, end): elements start..end-1 along `axis`, with Python's rules (negative counts from the
 * end, out-of-range bounds clamp, end <= start gives an empty axis). Along the leading axis it is a view
 * sharing memory; along another axis, a copy.
 */
export function slice<D extends DType>(x: Tensor<D>, axis: number, start: number, end?: number): Tensor<D> {
  checkTensor('slice', 'x', x);
  if (x.ndim === 0) throw new RangeError('slice: x is a 0-d tensor (nothing to slice)');
  const a = normAxis('slice', axis, x.ndim);
  const n = x.shape[a];
  checkNumber('slice', 'start', start, { integer: true });
  if (end !== undefined) checkNumber('slice', 'end', end, { integer: true });
  const clamp = (i: number): number => (i < 0 ? Math.max(0, i + n) : Math.min(i, n));
  const s = clamp(start);
  const len = Math.max(0, clamp(end ?? n) - s);
  const [outer, , inner] = axisSplit(x.shape, a);
  const shape = x.shape.slice();
  shape[a] = len;
  let out: Tensor<D>;
  if (outer === 1) {
    out = x._view(shape, x._offset + s * inner);  // every axis before `a` has size 1: the window is contiguous
  } else {
    out = Tensor._empty(shape, x.dtype, x.device);
    if (out.size > 0) {
      binding().sliceCopy(out._h('slice'), out._offset, x._h('slice'), x._offset, outer, n, inner, s, len,
        dtypeSize(x.dtype));
    }
  }
  return record(out, 'slice', [x], (g) => {
    const dx = Tensor._empty(x.shape, 'f32', x.device, true);
    if (g.size > 0) binding().sliceAddBackward(dx._h('slice'), 0, g._h('slice'), g._offset, outer, n, inner, s, len);
    return [dx];
  });
}

// ------------------------------------------------------------------------------------------------ concat, stack

function checkParts(op: string, xs: unknown): Tensor[] {
  if (!Array.isArray(xs) || xs.length === 0) throw new TypeError(`${op}: xs must be a non-empty array of tensors, got ${describe(xs)}`);
  xs.forEach((x, i) => checkTensor(op, `xs[${i}]`, x));
  const first = xs[0] as Tensor;
  for (let i = 1; i < xs.length; i++) {
    const t = xs[i] as Tensor;
    if (t.dtype !== first.dtype) {
      throw new TypeError(`${op}: xs[${i}] is ${t.dtype} ${shapeStr(t.shape)} but xs[0] is ${first.dtype} ${shapeStr(first.shape)}`);
    }
    checkSameDevice(op, first, t);
  }
  return xs as Tensor[];
}

/** Join tensors along an existing axis; all other sizes must agree. */
export function concat<D extends DType>(xs: Tensor<D>[], axis = 0): Tensor<D> {
  const parts = checkParts('concat', xs) as Tensor<D>[];
  const first = parts[0];
  if (first.ndim === 0) throw new RangeError('concat: 0-d tensors cannot be concatenated (use stack)');
  const a = normAxis('concat', axis, first.ndim);
  let total = 0;
  parts.forEach((t, i) => {
    const ok = t.ndim === first.ndim && t.shape.every((d, j) => j === a || d === first.shape[j]);
    if (!ok) {
      throw new Error(`concat: xs[${i}] ${shapeStr(t.shape)} does not match xs[0] ${shapeStr(first.shape)} ` +
        `on every axis but ${a}`);
    }
    total += t.shape[a];
  });
  const shape = first.shape.slice();
  shape[a] = total;
  const out = output('concat', shape, first.dtype, first.device);
  const [outer, , inner] = axisSplit(shape, a);
  const b = binding();
  const el = dtypeSize(first.dtype);
  const starts: number[] = [];
  let at = 0;
  for (const t of parts) {
    starts.push(at);
    const len = t.shape[a];
    if (t.size > 0) b.sliceAssign(out._h('concat'), out._offset, t._h('concat'), t._offset, outer, total, inner, at, len, el);
    at += len;
  }
  return record(out, 'concat', parts, (g) => parts.map((t, i) => {
    if (!t.requiresGrad) return null;
    const dx = Tensor._empty(t.shape, 'f32', t.device);
    if (dx.size > 0) b.sliceCopy(dx._h('concat'), 0, g._h('concat'), g._offset, outer, total, inner, starts[i], t.shape[a], 4);
    return dx;
  }));
}

/** Join same-shape tensors along a new axis inserted at `axis` (in [-ndim-1, ndim]). */
export function stack<D extends DType>(xs: Tensor<D>[], axis = 0): Tensor<D> {
  const parts = checkParts('stack', xs) as Tensor<D>[];
  const first = parts[0];
  parts.forEach((t, i) => {
    if (!sameShape(t.shape, first.shape)) {
      throw new Error(`stack: xs[${i}] ${shapeStr(t.shape)} differs from xs[0] ${shapeStr(first.shape)}`);
    }
  });
  const a = normAxis('stack', axis, first.ndim + 1);
  const n = parts.length;
  const shape = [...first.shape.slice(0, a), n, ...first.shape.slice(a)];
  const out = output('stack', shape, first.dtype, first.device);
  // Each part is (outer, 1, inner) inside out (outer, n, inner).
  const outer = shapeSize(first.shape.slice(0, a));
  const inner = shapeSize(first.shape.slice(a));
  const b = binding();
  const el = dtypeSize(first.dtype);
  if (out.size > 0) {
    parts.forEach((t, k) => b.sliceAssign(out._h('stack'), out._offset, t._h('stack'), t._offset, outer, n, inner, k, 1, el));
  }
  return record(out, 'stack', parts, (g) => parts.map((t, k) => {
    if (!t.requiresGrad) return null;
    const dx = Tensor._empty(t.shape, 'f32', t.device);
    if (dx.size > 0) b.sliceCopy(dx._h('stack'), 0, g._h('stack'), g._offset, outer, n, inner, k, 1, 4);
    return dx;
  }));
}

// ------------------------------------------------------------------------------------------------ broadcast, clone

/**
 * Repeat x along its size-1 axes (and new leading axes) to `shape`, by NumPy's rules. A copy (a view when only
 * size-1 axes are added); the gradient is summed back to x's shape.
 */
export function broadcastTo<D extends DType>(x: Tensor<D>, shape: Shape): Tensor<D> {
  checkTensor('broadcastTo', 'x', x);
  if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)) {
    throw new TypeError(`broadcastTo: shape must be an array of non-negative integers, got ${describe(shape)}`);
  }
  const off = shape.length - x.ndim;
  const ok = off >= 0 && x.shape.every((d, i) => d === shape[i + off] || d === 1);
  if (!ok) throw new Error(`broadcastTo: x ${shapeStr(x.shape)} cannot be broadcast to ${shapeStr(shape)}`);
  const target = shape.slice();
  if (shapeSize(target) === x.size) return viewAs('broadcastTo', x, target);  // only size-1 axes added
  const out = output('broadcastTo', target, x.dtype, x.device);
  if (out.size > 0) {
    binding().copyStrided(out._h('broadcastTo'), out._offset, x._h('broadcastTo'), x._offset, target,
      broadcastStrides(x.shape, target), dtypeSize(x.dtype));
  }
  return record(out, 'broadcastTo', [x], (g) => [sumToShape(g, x.shape)]);
}

/** A copy in new memory (differentiable: the gradient passes through). */
export function clone<D extends DType>(x: Tensor<D>): Tensor<D> {
  checkTensor('clone', 'x', x);
  const out = Tensor._empty(x.shape, x.dtype, x.device);
  const el = dtypeSize(x.dtype);
  if (x.size > 0) binding().copy(out._h('clone'), 0, x._h('clone'), x._offset * el, x.size * el);
  if (!needsGrad(x)) return out;
  return record(out, 'clone', [x], (g) => [g.retainForBackward() as Tensor<'f32'>]);
}
