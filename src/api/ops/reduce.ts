/**
 * Reductions over axes: sum, mean, max, min (all axes, one axis or several, negative axes, keepDims), argmax,
 * argmin, and sumToShape (how every broadcasting op sums its gradient back down).
 *
 * ```ts
 * const x = ml.tensor([[1, 5, 2], [7, 0, 7]]);
 * x.sum().item();               // 22          (all axes: shape [])
 * x.mean(1).toArray();          // [8/3, 14/3]
 * x.max(-1, true).shape;        // [2, 1]
 * ml.argmax(x, 1).toArray();    // Int32Array [1, 0]   (the first index on ties, like torch)
 * x.sum([0, 1]).item();         // 22
 * ```
 *
 * Every reduction is a few passes of one native kernel over the middle axis of (outer, len, inner). Adjacent
 * reduced axes, and axes of size 1, fold into one pass; non-adjacent axes take one pass each, innermost first.
 * The backward replays the passes in reverse: broadcastAxis for sum and mean, scatterArg (the gradient goes to
 * the first arg index, torch's max(dim) rule) for max and min. A sum over an empty axis is 0 and a mean NaN,
 * like torch; max, min, argmax and argmin over an empty axis throw, as torch does.
 */
import { binding, ReduceOp } from '../binding';
import { needsGrad, record } from '../autograd';
import { Tensor, Shape, shapeSize } from '../tensor';
import { broadcastAxes, broadcastShapes, checkShape, checkTensor, describe, normAxis, sameShape, shapeStr } from './util';

/** One pass: x (outer, len, inner) -> (outer, inner). */
interface Pass { outer: number; len: number; inner: number }

function checkF32(op: string, name: string, x: unknown): Tensor<'f32'> {
  const t = checkTensor(op, name, x);
  if (t.dtype !== 'f32') {
    throw new TypeError(`${op}: ${name} must be f32, got ${t.dtype} ${shapeStr(t.shape)} (cast it with .cast('f32'))`);
  }
  return t as Tensor<'f32'>;
}

/** Sorted, distinct, non-negative axes; undefined or [] mean every axis (torch's convention for dim=[]). */
function normAxes(op: string, axis: unknown, ndim: number): number[] {
  if (axis === undefined || (Array.isArray(axis) && axis.length === 0)) return Array.from({ length: ndim }, (_, i) => i);
  const list = Array.isArray(axis) ? axis : [axis];
  // A 0-d tensor accepts axis 0 or -1, like torch.
  if (ndim === 0) {
    for (const a of list) {
      if (a !== 0 && a !== -1) throw new RangeError(`${op}: axis ${typeof a === 'number' ? a : describe(a)} is out of range for a tensor with 0 dims`);
    }
    return [];
  }
  const out = list.map((a) => normAxis(op, a, ndim));
  const seen = new Set<number>();
  for (let i = 0; i < out.length; i++) {
    if (seen.has(out[i])) throw new RangeError(`${op}: axis ${list[i]} appears more than once in [${list.join(', ')}]`);
    seen.add(out[i]);
  }
  return out.sort((a, b) => a - b);
}

function checkKeepDims(op: string, keepDims: unknown): boolean {
  if (typeof keepDims !== 'boolean') throw new TypeError(`${op}: keepDims must be a boolean, got ${describe(keepDims)}`);
  return keepDims;
}

function reducedShape(shape: Shape, axes: number[], keepDims: boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    if (!axes.includes(i)) out.push(shape[i]);
    else if (keepDims) out.push(1);
  }
  return out;
}

/**
 * The passes that reduce `axes` of `shape`. Axes of size 1 are dropped (reducing them is free and keeping
 * them would split groups), neighbouring axes with the same role merge, and the reduced groups are taken
 * innermost first so that each pass sees the current (already reduced) layout.
 */
function planPasses(shape: Shape, axes: number[]): Pass[] {
  const dims: Array<{ size: number; red: boolean }> = [];
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] === 1) continue;
    const red = axes.includes(i);
    const last = dims[dims.length - 1];
    if (last && last.red === red) last.size *= shape[i];
    else dims.push({ size: shape[i], red });
  }
  const passes: Pass[] = [];
  for (let g = dims.length - 1; g >= 0; g--) {
    if (!dims[g].red) continue;
    let outer = 1, inner = 1;
    for (let i = 0; i < g; i++) outer *= dims[i].size;
    for (let i = g + 1; i < dims.length; i++) inner *= dims[i].size;
    passes.push({ outer, len: dims[g].size, inner });
    dims.splice(g, 1);
  }
  // Nothing to reduce (every reduced axis has size 1): one pass with len 1 copies, and gives arg index 0.
  if (passes.length === 0) passes.push({ outer: shapeSize(shape), len: 1, inner: 1 });
  return passes;
}

interface Reduced { out: Tensor<'f32'>; args: Array<Tensor<'i32'>>; passes: Pass[] }

/** Run the passes; the last pass writes a tensor of outShape. Arg indices are kept only when wantArgs. */
function runPasses(op: string, code: ReduceOp, x: Tensor<'f32'>, axes: number[], outShape: number[],
  wantArgs: boolean): Reduced {
  const b = binding();
  const passes = planPasses(x.shape, axes);
  const args: Array<Tensor<'i32'>> = [];
  let cur: Tensor<'f32'> = x;
  try {
    for (let k = 0; k < passes.length; k++) {
      const p = passes[k];
      const last = k === passes.length - 1;
      const next = Tensor._empty(last ? outShape : [p.outer * p.inner], 'f32', x.device);
      let arg: Tensor<'i32'> | null = null;
      if (wantArgs) {
        arg = Tensor._empty([p.outer * p.inner], 'i32', x.device);
        args.push(arg);
      }
      b.reduce(code, next._h(op), next._offset, arg ? arg._h(op) : null, arg ? arg._offset : 0, cur._h(op), cur._offset,
        p.outer, p.len, p.inner);
      if (cur !== x) cur.dispose();
      cur = next;
    }
  } catch (e) {
    if (cur !== x) cur.dispose();
    for (const a of args) a.dispose();
    throw e;
  }
  return { out: cur, args, passes };
}

/** The size (after all earlier passes) of the input of pass k, as a flat length. */
function passInputSize(p: Pass): number {
  return p.outer * p.len * p.inner;
}

function sumOrMean(op: 'sum' | 'mean' | 'sumToShape', code: ReduceOp.Sum | ReduceOp.Mean, x: Tensor<'f32'>,
  axes: number[], outShape: number[]): Tensor<'f32'> {
  const { out, passes } = runPasses(op, code, x, axes, outShape, false);
  const xShape = x.shape;
  const device = x.device;
  return record(out, op, [x], (g) => {
    // Replay the passes backwards: each broadcasts the gradient along its axis (scaled by 1/len for mean).
    const b = binding();
    let cur: Tensor<'f32'> = g;
    for (let k = passes.length - 1; k >= 0; k--) {
      const p = passes[k];
      const next = Tensor._empty(k === 0 ? xShape : [passInputSize(p)], 'f32', device);
      const scale = code === ReduceOp.Mean ? 1 / p.len : 1;
      b.broadcastAxis(next._h(op), next._offset, cur._h(op), cur._offset, p.outer, p.len, p.inner, scale);
      if (cur !== g) cur.dispose();
      cur = next;
    }
    return [cur];
  });
}

function maxOrMin(op: 'max' | 'min', code: ReduceOp.Max | ReduceOp.Min, x: Tensor<'f32'>, axes: number[],
  outShape: number[]): Tensor<'f32'> {
  checkNonEmpty(op, x, axes);
  const grad = needsGrad(x);
  const { out, args, passes } = runPasses(op, code, x, axes, outShape, grad);
  if (!grad) return out;
  // The arg indices belong to the graph node from here on (released after its backward), not to tidy().
  for (const a of args) a.keep();
  const xShape = x.shape;
  const device = x.device;
  return record(out, op, [x], (g) => {
    // Replay the passes backwards: each sends the gradient to the first arg index along its axis.
    const b = binding();
    let cur: Tensor<'f32'> = g;
    for (let k = passes.length - 1; k >= 0; k--) {
      const p = passes[k];
      const next = Tensor._empty(k === 0 ? xShape : [passInputSize(p)], 'f32', device);
      b.scatterArg(next._h(op), next._offset, cur._h(op), cur._offset, args[k]._h(op), args[k]._offset, p.outer, p.len,
        p.inner);
      if (cur !== g) cur.dispose();
      cur = next;
    }
    return [cur];
  }, args);
}

/** max/min/argmax/argmin of nothing is undefined: throw, as torch does. */
function checkNonEmpty(op: string, x: Tensor, axes: number[]): void {
  for (const a of axes) {
    if (x.shape[a] === 0) {
      throw new RangeError(`${op}: cannot reduce over axis ${a} of size 0 in ${shapeStr(x.shape)} (the result is undefined)`);
    }
  }
  if (x.size === 0 && axes.length === x.ndim) {
    throw new RangeError(`${op}: cannot reduce an empty tensor ${shapeStr(x.shape)}`);
  }
}

/** Sum over all axes (shape []), one axis, or several; `keepDims` keeps reduced axes as size 1. */
export function sum(x: Tensor, axis?: number | number[], keepDims = false): Tensor<'f32'> {
  const t = checkF32('sum', 'x', x);
  const axes = normAxes('sum', axis, t.ndim);
  return sumOrMean('sum', ReduceOp.Sum, t, axes, reducedShape(t.shape, axes, checkKeepDims('sum', keepDims)));
}

/** Mean over all axes (shape []), one axis, or several. A mean over an empty axis is NaN, like torch. */
export function mean(x: Tensor, axis?: number | number[], keepDims = false): Tensor<'f32'> {
  const t = checkF32('mean', 'x', x);
  const axes = normAxes('mean', axis, t.ndim);
  return sumOrMean('mean', ReduceOp.Mean, t, axes, reducedShape(t.shape, axes, checkKeepDims('mean', keepDims)));
}

/** Maximum over axes (NaN propagates). The gradient goes to the first maximal element, as torch.max(dim). */
export function max(x: Tensor, axis?: number | number[], keepDims = false): Tensor<'f32'> {
  const t = checkF32('max', 'x', x);
  const axes = normAxes('max', axis, t.ndim);
  return maxOrMin('max', ReduceOp.Max, t, axes, reducedShape(t.shape, axes, checkKeepDims('max', keepDims)));
}

/** Minimum over axes (NaN propagates). The gradient goes to the first minimal element. */
export function min(x: Tensor, axis?: number | number[], keepDims = false): Tensor<'f32'> {
  const t = checkF32('min', 'x', x);
  const axes = normAxes('min', axis, t.ndim);
  return maxOrMin('min', ReduceOp.Min, t, axes, reducedShape(t.shape, axes, checkKeepDims('min', keepDims)));
}

function argReduce(op: 'argmax' | 'argmin', code: ReduceOp.Max | ReduceOp.Min, x: Tensor, axis: number,
  keepDims: boolean): Tensor<'i32'> {
  const t = checkF32(op, 'x', x);
  if (axis === undefined) throw new TypeError(`${op}: axis is required`);
  const axes = normAxes(op, axis, t.ndim);
  checkNonEmpty(op, t, axes);
  const outShape = reducedShape(t.shape, axes, checkKeepDims(op, keepDims));
  const { out, args } = runPasses(op, code, t, axes, outShape, true);
  out.dispose();
  // One axis is always one pass, so the indices are along that axis; the i32 result has no gradient.
  const arg = args[0];
  const res = arg._view(outShape) as Tensor<'i32'>;
  arg.dispose();
  return res;
}

/** Index of the first maximum along `axis` (i32; NaN counts as the maximum, like torch). */
export function argmax(x: Tensor, axis: number, keepDims = false): Tensor<'i32'> {
  return argReduce('argmax', ReduceOp.Max, x, axis, keepDims);
}

/** Index of the first minimum along `axis` (i32). */
export function argmin(x: Tensor, axis: number, keepDims = false): Tensor<'i32'> {
  return argReduce('argmin', ReduceOp.Min, x, axis, keepDims);
}

/**
 * Sum a broadcast gradient back down to `shape` (used by every broadcasting op's backward): sums over the
 * leading axes `shape` lacks and over the axes where `shape` has 1. Returns a view of g when nothing is summed.
 */
export function sumToShape(g: Tensor<'f32'>, shape: readonly number[]): Tensor<'f32'> {
  const t = checkF32('sumToShape', 'g', g);
  const target = checkShape('sumToShape', shape);
  let ok = target.length <= t.ndim;
  if (ok) {
    try {
      ok = sameShape(broadcastShapes('sumToShape', target, t.shape), t.shape);
    } catch {
      ok = false;
    }
  }
  if (!ok) throw new Error(`sumToShape: a gradient of shape ${shapeStr(t.shape)} cannot be summed to ${shapeStr(target)}`);
  const axes = broadcastAxes(target, t.shape);
  if (axes.length === 0) {
    const v = t._view(target);
    return record(v, 'sumToShape', [t], (gg) => [gg.retainForBackward() as Tensor<'f32'>]);
  }
  return sumOrMean('sumToShape', ReduceOp.Sum, t, axes, target);
}
