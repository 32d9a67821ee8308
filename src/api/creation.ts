/**
 * Creating tensors: from data, filled, ranges and random (seeded by manualSeed).
 *
 * ```ts
 * ml.manualSeed(0);
 * const x = ml.randn([2, 3], { requiresGrad: true });
 * const t = ml.tensor([[1, 2], [3, 4]]);          // f32 [2, 2]
 * const i = ml.tensor([0, 2, 1], [3], { dtype: 'i32' });
 * ```
 */
import { binding } from './binding';
import { DType, Device, dtypeCode, isDType, isDevice, isFloat } from './dtype';
import { takeRandom } from './random';
import { Tensor, Shape, shapeSize, shapeStr } from './tensor';
import { checkShape, describe } from './ops/util';

export interface TensorOptions<D extends DType = DType> {
  dtype?: D;
  device?: Device;
  requiresGrad?: boolean;
}

type Nested = number | boolean | Nested[];
export type TensorData = Nested | Float32Array | Int32Array | Float64Array | Uint8Array | Int8Array | Uint16Array |
  Int16Array | Uint32Array;

// The device that creation functions use when no `device` option is given (torch.set_default_device). Starts as
// MODALAB_DEVICE when that is set ('cpu' or 'cuda'), else 'cpu'. The test runner uses it to run the suite on
// every available device.
let defaultDevice: Device = (() => {
  const env = process.env.MODALAB_DEVICE;
  if (env === undefined || env === '') return 'cpu';
  if (!isDevice(env)) throw new Error(`MODALAB_DEVICE must be 'cpu' or 'cuda', got '${env}'`);
  return env;
})();

/** Set the device that creation functions use when no `device` option is given; returns the previous one. */
export function setDefaultDevice(device: Device): Device {
  if (!isDevice(device)) {
    throw new TypeError(`setDefaultDevice: unknown device ${describe(device)} (expected 'cpu' or 'cuda')`);
  }
  const prev = defaultDevice;
  defaultDevice = device;
  return prev;
}

/** The device creation functions use when no `device` option is given ('cpu' unless set). */
export function getDefaultDevice(): Device {
  return defaultDevice;
}

function resolve<D extends DType>(op: string, opts: TensorOptions<D> | undefined, fallback: DType): { dtype: D; device: Device; requiresGrad: boolean } {
  if (opts !== undefined && (opts === null || typeof opts !== 'object')) {
    throw new TypeError(`${op}: options must be an object, got ${describe(opts)}`);
  }
  const dtype = (opts?.dtype ?? fallback) as D;
  if (!isDType(dtype)) throw new TypeError(`${op}: unknown dtype ${describe(dtype)} (expected f32, f16, bf16 or i32)`);
  const device = opts?.device ?? defaultDevice;
  if (!isDevice(device)) throw new TypeError(`${op}: unknown device ${describe(device)}`);
  const requiresGrad = opts?.requiresGrad ?? false;
  if (requiresGrad && !isFloat(dtype)) throw new TypeError(`${op}: only float tensors can require grad, not ${dtype}`);
  return { dtype, device, requiresGrad };
}

function finish<D extends DType>(t: Tensor<D>, requiresGrad: boolean): Tensor<D> {
  t.requiresGrad = requiresGrad;
  return t;
}

/** Write f32 (or i32) host values into a new tensor of `dtype`, converting natively for the half types. */
function fromHost<D extends DType>(values: Float32Array | Int32Array, shape: Shape, dtype: D, device: Device): Tensor<D> {
  const b = binding();
  const hostDtype: DType = values instanceof Int32Array ? 'i32' : 'f32';
  const staging = Tensor._empty(shape, hostDtype, device, false, 'tensor');
  // N-API cannot read a view of a SharedArrayBuffer (the loader's shared image arrays): copy those once.
  b.write(staging._h('tensor'), 0, values.buffer instanceof SharedArrayBuffer ? values.slice() : values);
  if (hostDtype === dtype) return staging as unknown as Tensor<D>;
  const out = Tensor._empty(shape, dtype, device, false, 'tensor');
  b.cast(out._h('tensor'), 0, dtypeCode(dtype), staging._h('tensor'), 0, dtypeCode(hostDtype), values.length);
  staging.dispose();
  return out;
}

function inferShape(data: Nested, op: string): number[] {
  const shape: number[] = [];
  let cur: Nested = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0];
  }
  return shape;
}

function flattenNested(data: Nested, shape: number[], op: string): number[] {
  const out: number[] = [];
  const walk = (x: Nested, dim: number): void => {
    if (dim === shape.length) {
      if (typeof x === 'boolean') { out.push(x ? 1 : 0); return; }
      if (typeof x !== 'number') throw new TypeError(`${op}: expected a number at depth ${dim}, got ${describe(x)}`);
      out.push(x);
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[dim]) {
      throw new TypeError(`${op}: ragged nested array: expected length ${shape[dim]} at depth ${dim}, got ${describe(x)}`);
    }
    for (const v of x) walk(v, dim + 1);
  };
  walk(data, 0);
  return out;
}

/**
 * A tensor from data: a number, nested arrays, or a typed array (flat, with `shape`).
 * The dtype defaults to i32 for an Int32Array and f32 otherwise.
 */
export function tensor<D extends DType = 'f32'>(data: TensorData, shape?: Shape, opts?: TensorOptions<D>): Tensor<D> {
  const fallback: DType = data instanceof Int32Array ? 'i32' : 'f32';
  const { dtype, device, requiresGrad } = resolve('tensor', opts, fallback);
  let flat: ArrayLike<number>;
  let inferred: number[];
  if (ArrayBuffer.isView(data)) {
    flat = data as unknown as ArrayLike<number>;
    inferred = [flat.length];
  } else if (typeof data === 'number' || typeof data === 'boolean') {
    flat = [Number(data)];
    inferred = [];
  } else if (Array.isArray(data)) {
    inferred = inferShape(data, 'tensor');
    flat = flattenNested(data, inferred, 'tensor');
  } else {
    throw new TypeError(`tensor: data must be a number, a nested array or a typed array, got ${describe(data)}`);
  }
  const finalShape = shape === undefined ? inferred : checkShape('tensor', shape);
  if (shapeSize(finalShape) !== flat.length) {
    throw new Error(`tensor: ${flat.length} values do not fill shape ${shapeStr(finalShape)} (${shapeSize(finalShape)} elements)`);
  }
  let host: Float32Array | Int32Array;
  if (dtype === 'i32') {
    host = new Int32Array(flat.length);
    for (let i = 0; i < flat.length; i++) {
      const v = flat[i];
      if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647) {
        throw new RangeError(`tensor: value ${v} at position ${i} is not a 32-bit integer (dtype i32)`);
      }
      host[i] = v;
    }
  } else {
    host = data instanceof Float32Array ? data : Float32Array.from(flat);
  }
  return finish(fromHost(host, finalShape, dtype, device), requiresGrad);
}

function filled<D extends DType>(op: string, shape: Shape, value: number, opts?: TensorOptions<D>): Tensor<D> {
  const { dtype, device, requiresGrad } = resolve(op, opts, 'f32');
  const s = checkShape(op, shape);
  if (typeof value !== 'number') throw new TypeError(`${op}: value must be a number, got ${describe(value)}`);
  const b = binding();
  if (dtype === 'i32') {
    if (!Number.isInteger(value) || value < -2147483648 || value > 2147483647) {
      throw new RangeError(`${op}: value ${value} is not a 32-bit integer (dtype i32)`);
    }
    const out = Tensor._empty(s, 'i32', device, false, op);
    b.fillI32(out._h(op), 0, out.size, value);
    return finish(out as unknown as Tensor<D>, requiresGrad);
  }
  const f = Tensor._empty(s, 'f32', device, false, op);
  b.fillF32(f._h(op), 0, f.size, value);
  if (dtype === 'f32') return finish(f as unknown as Tensor<D>, requiresGrad);
  const out = Tensor._empty(s, dtype, device, false, op);
  b.cast(out._h(op), 0, dtypeCode(dtype), f._h(op), 0, dtypeCode('f32'), f.size);
  f.dispose();
  return finish(out, requiresGrad);
}

/** A tensor of `shape` filled with `value`. */
export function full<D extends DType = 'f32'>(shape: Shape, value: number, opts?: TensorOptions<D>): Tensor<D> {
  return filled('full', shape, value, opts);
}

export function zeros<D extends DType = 'f32'>(shape: Shape, opts?: TensorOptions<D>): Tensor<D> {
  return filled('zeros', shape, 0, opts);
}

export function ones<D extends DType = 'f32'>(shape: Shape, opts?: TensorOptions<D>): Tensor<D> {
  return filled('ones', shape, 1, opts);
}

function checkLike(op: string, x: unknown): Tensor {
  if (!(x instanceof Tensor)) throw new TypeError(`${op}: x must be a Tensor, got ${describe(x)}`);
  return x;
}

export function zerosLike<D extends DType>(x: Tensor<D>, opts?: TensorOptions<D>): Tensor<D> {
  checkLike('zerosLike', x);
  return filled('zerosLike', x.shape, 0, { dtype: x.dtype, device: x.device, ...opts });
}

export function onesLike<D extends DType>(x: Tensor<D>, opts?: TensorOptions<D>): Tensor<D> {
  checkLike('onesLike', x);
  return filled('onesLike', x.shape, 1, { dtype: x.dtype, device: x.device, ...opts });
}

/** arange(end) or arange(start, end, step), like torch.arange: values start, start+step, ... below end. */
export function arange<D extends DType = 'f32'>(start: number, end?: number, step = 1, opts?: TensorOptions<D>): Tensor<D> {
  if (end === undefined) { end = start; start = 0; }
  for (const [k, v] of [['start', start], ['end', end], ['step', step]] as const) {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError(`arange: ${k} must be a finite number, got ${describe(v)}`);
  }
  if (step === 0) throw new RangeError('arange: step must not be 0');
  const n = Math.max(0, Math.ceil((end - start) / step));
  const { dtype, device, requiresGrad } = resolve('arange', opts, 'f32');
  const b = binding();
  if (dtype === 'i32') {
    if (![start, step].every(Number.isInteger)) throw new RangeError('arange: start and step must be integers for dtype i32');
    const out = Tensor._empty([n], 'i32', device, false, 'arange');
    b.arangeI32(out._h('arange'), 0, n, start, step);
    return out as unknown as Tensor<D>;
  }
  const f = Tensor._empty([n], 'f32', device, false, 'arange');
  b.arangeF32(f._h('arange'), 0, n, start, step);
  if (dtype === 'f32') return finish(f as unknown as Tensor<D>, requiresGrad);
  const out = Tensor._empty([n], dtype, device, false, 'arange');
  b.cast(out._h('arange'), 0, dtypeCode(dtype), f._h('arange'), 0, dtypeCode('f32'), n);
  f.dispose();
  return finish(out, requiresGrad);
}

function random<D extends DType>(op: string, shape: Shape, opts: TensorOptions<D> | undefined,
  fill: (h: Tensor<'f32'>, seed: number, offset: number) => void): Tensor<D> {
  const { dtype, device, requiresGrad } = resolve(op, opts, 'f32');
  if (!isFloat(dtype)) throw new TypeError(`${op}: dtype must be a float type, not ${dtype}`);
  const s = checkShape(op, shape);
  const f = Tensor._empty(s, 'f32', device, false, op);
  const { seed, offset } = takeRandom(f.size);
  fill(f, seed, offset);
  if (dtype === 'f32') return finish(f as unknown as Tensor<D>, requiresGrad);
  const out = Tensor._empty(s, dtype, device, false, op);
  binding().cast(out._h(op), 0, dtypeCode(dtype), f._h(op), 0, dtypeCode('f32'), f.size);
  f.dispose();
  return finish(out, requiresGrad);
}

/** Standard normal samples (mean 0, std 1), from the seeded counter-based generator. */
export function randn<D extends DType = 'f32'>(shape: Shape, opts?: TensorOptions<D>): Tensor<D> {
  return random('randn', shape, opts, (t, seed, offset) => binding().randNormal(t._h('randn'), 0, t.size, seed, offset, 0, 1));
}

/** Uniform samples in [0, 1), from the seeded counter-based generator. */
export function rand<D extends DType = 'f32'>(shape: Shape, opts?: TensorOptions<D>): Tensor<D> {
  return random('rand', shape, opts, (t, seed, offset) => binding().randUniform(t._h('rand'), 0, t.size, seed, offset, 0, 1));
}

/** Uniform samples in [lo, hi) (parameter initialisation). */
export function uniform<D extends DType = 'f32'>(shape: Shape, lo: number, hi: number, opts?: TensorOptions<D>): Tensor<D> {
  if (typeof lo !== 'number' || typeof hi !== 'number' || !Number.isFinite(lo) || !Number.isFinite(hi) || lo > hi) {
    throw new RangeError(`uniform: expected finite bounds lo <= hi, got ${describe(lo)} and ${describe(hi)}`);
  }
  return random('uniform', shape, opts, (t, seed, offset) => binding().randUniform(t._h('uniform'), 0, t.size, seed, offset, lo, hi));
}
