/**
 * Argument checks and shape arithmetic shared by the ops. Errors name the op, the argument and the shapes.
 * (Shape bookkeeping lives here in TypeScript; arithmetic on tensor data lives in native/.)
 */
import type { DType } from '../dtype';
import { Tensor, shapeStr, Shape } from '../tensor';

export { shapeStr };

export function isTensor(x: unknown): x is Tensor {
  return x instanceof Tensor;
}

/** Check that x is a live tensor; name the op and the argument otherwise. */
export function checkTensor(op: string, name: string, x: unknown): Tensor {
  if (!(x instanceof Tensor)) {
    throw new TypeError(`${op}: ${name} must be a Tensor, got ${describe(x)}`);
  }
  if (x.isDisposed) throw new Error(`${op}: ${name} ${shapeStr(x.shape)} was used after dispose()`);
  return x;
}

/** Check a tensor that must hold floats; f16/bf16 are accepted only where `allowHalf`. */
export function checkFloat(op: string, name: string, x: unknown, allowHalf = false): Tensor {
  const t = checkTensor(op, name, x);
  if (t.dtype === 'i32' || (!allowHalf && t.dtype !== 'f32')) {
    throw new TypeError(`${op}: ${name} must be f32${allowHalf ? '/f16/bf16' : ''}, got ${t.dtype} ${shapeStr(t.shape)}` +
      (t.dtype !== 'i32' ? ' (cast it with .cast(\'f32\'))' : ''));
  }
  return t;
}

export function checkDType(op: string, name: string, x: Tensor, dtype: DType): void {
  if (x.dtype !== dtype) throw new TypeError(`${op}: ${name} must be ${dtype}, got ${x.dtype} ${shapeStr(x.shape)}`);
}

export function checkSameDevice(op: string, a: Tensor, b: Tensor): void {
  if (a.device !== b.device) {
    throw new Error(`${op}: tensors are on different devices: ${a.device} ${shapeStr(a.shape)} and ${b.device} ${shapeStr(b.shape)}`);
  }
}

export function checkNumber(op: string, name: string, x: unknown, opts: { integer?: boolean; min?: number; max?: number } = {}): number {
  if (typeof x !== 'number' || (opts.integer ? !Number.isInteger(x) : false)) {
    throw new TypeError(`${op}: ${name} must be ${opts.integer ? 'an integer' : 'a number'}, got ${describe(x)}`);
  }
  if ((opts.min !== undefined && !(x >= opts.min)) || (opts.max !== undefined && !(x <= opts.max))) {
    throw new RangeError(`${op}: ${name} must be in [${opts.min ?? '-inf'}, ${opts.max ?? 'inf'}], got ${x}`);
  }
  return x;
}

export function describe(x: unknown): string {
  if (x instanceof Tensor) return `Tensor ${shapeStr(x.shape)} ${x.dtype}`;
  if (x === null) return 'null';
  if (Array.isArray(x)) return `an array of length ${x.length}`;
  if (typeof x === 'number') return `the number ${x}`;
  if (typeof x === 'string') return `the string ${JSON.stringify(x.slice(0, 40))}`;
  if (typeof x === 'bigint') return `the bigint ${x}`;
  return typeof x;
}

/** Normalise a possibly negative axis against ndim. */
export function normAxis(op: string, axis: unknown, ndim: number): number {
  if (typeof axis !== 'number' || !Number.isInteger(axis)) throw new TypeError(`${op}: axis must be an integer, got ${describe(axis)}`);
  const a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim) throw new RangeError(`${op}: axis ${axis} is out of range for a tensor with ${ndim} dims`);
  return a;
}

export function checkShape(op: string, shape: unknown): number[] {
  if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)) {
    const shown = Array.isArray(shape) ? `[${shape.map((d) => describe(d)).join(', ')}]` : describe(shape);
    throw new TypeError(`${op}: shape must be an array of non-negative integers, got ${shown}`);
  }
  return shape.slice();
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Row-major strides of a contiguous shape, in elements. */
export function contiguousStrides(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** NumPy broadcasting of two shapes; throws naming the op and both shapes. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = i < n - a.length ? 1 : a[i - (n - a.length)];
    const db = i < n - b.length ? 1 : b[i - (n - b.length)];
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`${op}: shapes ${shapeStr(a)} and ${shapeStr(b)} cannot be broadcast together`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Element strides of a contiguous tensor of `shape` laid over `outShape` (0 on broadcast axes). */
export function broadcastStrides(shape: Shape, outShape: Shape): number[] {
  const own = contiguousStrides(shape);
  const off = outShape.length - shape.length;
  return outShape.map((_, i) => (i < off || shape[i - off] === 1 ? 0 : own[i - off]));
}

/** Axes of outShape along which a tensor of `shape` was broadcast (to sum a gradient back down). */
export function broadcastAxes(shape: Shape, outShape: Shape): number[] {
  const off = outShape.length - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < outShape.length; i++) {
    if (i < off || (shape[i - off] === 1 && outShape[i] !== 1)) axes.push(i);
  }
  return axes;
}

/** (outer, len, inner) of one axis of a contiguous shape. */
export function axisSplit(shape: Shape, axis: number): [number, number, number] {
  let outer = 1, inner = 1;
  for (let i = 0; i < axis; i++) outer *= shape[i];
  for (let i = axis + 1; i < shape.length; i++) inner *= shape[i];
  return [outer, shape[axis], inner];
}
