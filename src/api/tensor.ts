/**
 * Tensor: a contiguous n-d array in native memory, with autograd.
 *
 * ```ts
 * const x = ml.randn([4, 8], { requiresGrad: true });
 * const loss = x.matmul(ml.randn([8, 3])).gelu().mean();
 * loss.backward();
 * x.grad!.toArray();   // Float32Array(32)
 * ```
 * Methods are thin forwards to the op functions in src/api/ops (one op family per file).
 */
import { binding } from './binding';
import { ArrayFor, DType, Device, dtypeCode, dtypeSize } from './dtype';
import { GradNode, runBackward } from './autograd';
import { Storage, allocStorage, countTensor } from './storage';
import { track, untrack } from './scope';
import * as el from './ops/elementwise';
import * as red from './ops/reduce';
import * as sm from './ops/softmax';
import * as mm from './ops/matmul';
import * as lay from './ops/layout';
import * as idx from './ops/indexing';
import * as cst from './ops/cast';

export type Shape = readonly number[];
export type Scalar = number;

const finalizer = new FinalizationRegistry<{ storage: Storage; device: Device }>((held) => {
  held.storage.release();
  countTensor(held.device, -1);
});

// The garbage-collector backstop. Registering with a FinalizationRegistry costs about half a microsecond,
// as much as a whole tiny op, and most tensors (every intermediate of a tidy() step) are disposed within the
// synchronous code that made them. So a new tensor is only queued here, and registered at the next microtask
// if it is still alive. Nothing is lost by waiting: finalizers never run during synchronous code anyway.
let young: Tensor[] = [];
const YOUNG_LIMIT = 256;
let flushQueued = false;
function flushYoung(): void {
  flushQueued = false;
  const batch = young;
  young = [];
  for (const t of batch) t._register();
}

let nextId = 0;
/** Larger single allocations are refused up front (2^48 bytes: beyond any machine's memory). */
const MAX_BYTES = 2 ** 48;

export function shapeSize(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeStr(shape: Shape): string {
  if (!Array.isArray(shape)) return String(typeof shape);
  return `[${shape.map((d) => String(d)).join(', ')}]`;
}

export class Tensor<D extends DType = DType> {
  readonly id = nextId++;
  readonly shape: Shape;
  readonly size: number;
  /** Whether gradients flow into this tensor. Set on leaves (parameters); ops set it on their outputs. */
  requiresGrad = false;
  /** The accumulated gradient (f32) after backward(), for tensors that require it. */
  grad: Tensor<'f32'> | null = null;
  /** @internal the op that made this tensor, for autograd */
  _node: GradNode | null = null;
  /** @internal */
  _storage: Storage;
  private disposed = false;
  private registered = false;
  /** @internal kept past every tidy() scope (see scope.ts) */
  _kept = false;
  /** @internal made inside a tidy() scope that will dispose it: no finalizer registration needed */
  _scoped = false;
  private readonly held: { storage: Storage; device: Device };

  /** @internal Use the creation functions (ml.tensor, ml.zeros, ...) instead. */
  constructor(storage: Storage, readonly _offset: number, shape: Shape, readonly dtype: D, readonly device: Device) {
    this._storage = storage;
    this.shape = shape.slice();
    this.size = shapeSize(shape);
    this.held = { storage, device };
    countTensor(device, 1);
    // A tensor made inside tidy() is disposed by it, or registered when it escapes the outermost scope
    // (scope.ts); any other is queued for registration at the next microtask.
    this._scoped = track(this);
    if (this._scoped) return;
    // Bounded, so that a long synchronous loop does not keep thousands of disposed tensors reachable.
    if (young.push(this) >= YOUNG_LIMIT) flushYoung();
    else if (!flushQueued) {
      flushQueued = true;
      queueMicrotask(flushYoung);
    }
  }

  /** @internal Register with the finalizer backstop (see `young`). */
  _register(): void {
    if (this.disposed || this.registered || this._scoped) return;
    this.registered = true;
    finalizer.register(this, this.held, this);
  }

  /**
   * @internal A new uninitialised (or zeroed) tensor of this shape and dtype. `op` names the caller in errors
   * (an invalid or unallocatable shape, a device this build lacks).
   */
  static _empty<D extends DType>(shape: Shape, dtype: D, device: Device = 'cpu', zero = false, op = 'alloc'): Tensor<D> {
    for (const d of shape) {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
        throw new RangeError(`${op}: invalid shape ${shapeStr(shape)}: sizes must be non-negative integers`);
      }
    }
    const n = shapeSize(shape);
    const nbytes = n * dtypeSize(dtype);
    if (!Number.isSafeInteger(nbytes) || nbytes > MAX_BYTES) {
      throw new RangeError(`${op}: cannot allocate ${shapeStr(shape)} ${dtype}: ${nbytes} bytes is more than this process can address`);
    }
    let storage: Storage;
    try {
      storage = allocStorage(nbytes, device, zero);
    } catch (e) {
      throw new Error(`${op}: cannot allocate ${shapeStr(shape)} ${dtype} on ${device}: ${(e as Error).message}`);
    }
    return new Tensor(storage, 0, shape, dtype, device);
  }

  get ndim(): number {
    return this.shape.length;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** @internal the storage handle, checking that the tensor is still alive */
  _h(op: string): import('./binding').Handle {
    if (this.disposed) throw new Error(`${op}: tensor ${shapeStr(this.shape)} ${this.dtype} was used after dispose()`);
    return this._storage.handle;
  }

  /** Free the memory now (it is also freed by tidy() or, eventually, by the garbage collector). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.registered) finalizer.unregister(this);
    this._storage.release();
    countTensor(this.device, -1);
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** Keep this tensor past the end of enclosing tidy() scopes. */
  keep(): this {
    untrack(this);
    return this;
  }

  /** @internal Another reference to the same memory, owned by autograd, invisible to tidy(). */
  retainForBackward(): Tensor<D> {
    const t = new Tensor(this._storage.retain(), this._offset, this.shape, this.dtype, this.device);
    untrack(t);
    return t;
  }

  /** @internal A view (same memory) with another shape and offset. */
  _view(shape: Shape, offset = this._offset): Tensor<D> {
    this._h('view');
    return new Tensor(this._storage.retain(), offset, shape, this.dtype, this.device);
  }

  /** Copy the data out: Float32Array for float dtypes (f16/bf16 widened), Int32Array for i32. */
  toArray(): ArrayFor<D> {
    const h = this._h('toArray');
    const b = binding();
    if (this.dtype === 'f32' || this.dtype === 'i32') {
      const buf = b.read(h, this._offset * 4, this.size * 4);
      return (this.dtype === 'i32' ? new Int32Array(buf) : new Float32Array(buf)) as ArrayFor<D>;
    }
    const tmp = allocStorage(this.size * 4, this.device);
    try {
      b.cast(tmp.handle, 0, dtypeCode('f32'), h, this._offset, dtypeCode(this.dtype), this.size);
      return new Float32Array(b.read(tmp.handle, 0, this.size * 4)) as ArrayFor<D>;
    } finally {
      tmp.release();
    }
  }

  /** Nested JavaScript arrays, for printing and tests. */
  toNested(): unknown {
    const flat = Array.from(this.toArray() as ArrayLike<number>);
    const build = (dim: number, off: number): unknown => {
      if (dim === this.shape.length) return flat[off];
      const stride = shapeSize(this.shape.slice(dim + 1));
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, off + i * stride));
    };
    return build(0, 0);
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new Error(`item: expected a tensor with one element, got shape ${shapeStr(this.shape)}`);
    return this.toArray()[0];
  }

  /**
   * Backpropagate from this tensor. A scalar needs no seed gradient; any other shape needs `grad` of its shape.
   * Gradients accumulate into the leaves' `.grad` (call `zeroGrad` on the optimizer between steps).
   */
  backward(grad?: Tensor, opts: { retainGraph?: boolean } = {}): void {
    this._h('backward');
    if (!this.requiresGrad) {
      throw new Error('backward: this tensor does not require grad (no input had requiresGrad, or it was made under noGrad)');
    }
    let seed: Tensor<'f32'>;
    if (grad === undefined) {
      if (this.size !== 1) {
        throw new Error(`backward: a gradient argument is needed for a non-scalar tensor of shape ${shapeStr(this.shape)}`);
      }
      seed = cst.onesLikeF32(this);
    } else {
      if (grad.shape.length !== this.shape.length || grad.shape.some((d, i) => d !== this.shape[i])) {
        throw new Error(`backward: gradient shape ${shapeStr(grad.shape)} does not match tensor shape ${shapeStr(this.shape)}`);
      }
      seed = grad.dtype === 'f32' ? (grad as Tensor<'f32'>).retainForBackward() : cst.cast(grad, 'f32').keep();
    }
    try {
      runBackward(this, seed, opts.retainGraph ?? false);
    } finally {
      seed.dispose();
    }
  }

  /** A tensor sharing this memory but cut from the graph (requires no grad). */
  detach(): Tensor<D> {
    return this._view(this.shape);
  }

  /** A copy in new memory (differentiable). */
  clone(): Tensor<D> {
    return lay.clone(this);
  }

  /** Set requiresGrad (for leaves) and return this, for chaining. */
  requiresGrad_(on = true): this {
    if (this._node) throw new Error('requiresGrad_: only leaf tensors can change requiresGrad (use detach() first)');
    if (on && this.dtype === 'i32') throw new Error('requiresGrad_: i32 tensors cannot require grad');
    this.requiresGrad = on;
    return this;
  }

  toString(): string {
    const values = this.disposed ? '<disposed>' : this.size <= 64 ? JSON.stringify(this.toNested()) : `(${this.size} values)`;
    return `Tensor(${shapeStr(this.shape)}, ${this.dtype}, ${this.device}${this.requiresGrad ? ', requiresGrad' : ''}) ${values}`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  // ------------------------------------------------------------------ forwards to ops (one line each)
  add(b: Tensor | Scalar): Tensor<'f32'> { return el.add(this, b); }
  sub(b: Tensor | Scalar): Tensor<'f32'> { return el.sub(this, b); }
  mul(b: Tensor | Scalar): Tensor<'f32'> { return el.mul(this, b); }
  div(b: Tensor | Scalar): Tensor<'f32'> { return el.div(this, b); }
  pow(b: Tensor | Scalar): Tensor<'f32'> { return el.pow(this, b); }
  maximum(b: Tensor | Scalar): Tensor<'f32'> { return el.maximum(this, b); }
  minimum(b: Tensor | Scalar): Tensor<'f32'> { return el.minimum(this, b); }
  neg(): Tensor<'f32'> { return el.neg(this); }
  exp(): Tensor<'f32'> { return el.exp(this); }
  log(): Tensor<'f32'> { return el.log(this); }
  sqrt(): Tensor<'f32'> { return el.sqrt(this); }
  abs(): Tensor<'f32'> { return el.abs(this); }
  square(): Tensor<'f32'> { return el.square(this); }
  tanh(): Tensor<'f32'> { return el.tanh(this); }
  sigmoid(): Tensor<'f32'> { return el.sigmoid(this); }
  relu(): Tensor<'f32'> { return el.relu(this); }
  gelu(opts?: el.GeluOptions): Tensor<'f32'> { return el.gelu(this, opts); }
  silu(): Tensor<'f32'> { return el.silu(this); }
  eq(b: Tensor | Scalar): Tensor<'f32'> { return el.eq(this, b); }
  lt(b: Tensor | Scalar): Tensor<'f32'> { return el.lt(this, b); }
  gt(b: Tensor | Scalar): Tensor<'f32'> { return el.gt(this, b); }
  ne(b: Tensor | Scalar): Tensor<'f32'> { return el.ne(this, b); }
  le(b: Tensor | Scalar): Tensor<'f32'> { return el.le(this, b); }
  ge(b: Tensor | Scalar): Tensor<'f32'> { return el.ge(this, b); }
  reciprocal(): Tensor<'f32'> { return el.reciprocal(this); }
  sin(): Tensor<'f32'> { return el.sin(this); }
  cos(): Tensor<'f32'> { return el.cos(this); }
  maskedFill(mask: Tensor, value: number): Tensor<'f32'> { return el.maskedFill(this, mask, value); }
  dropout(p: number, training = true): Tensor<'f32'> { return el.dropout(this, p, training); }

  sum(axis?: number | number[], keepDims = false): Tensor<'f32'> { return red.sum(this, axis, keepDims); }
  mean(axis?: number | number[], keepDims = false): Tensor<'f32'> { return red.mean(this, axis, keepDims); }
  max(axis?: number | number[], keepDims = false): Tensor<'f32'> { return red.max(this, axis, keepDims); }
  min(axis?: number | number[], keepDims = false): Tensor<'f32'> { return red.min(this, axis, keepDims); }
  argmax(axis: number, keepDims = false): Tensor<'i32'> { return red.argmax(this, axis, keepDims); }
  argmin(axis: number, keepDims = false): Tensor<'i32'> { return red.argmin(this, axis, keepDims); }
  softmax(axis = -1): Tensor<'f32'> { return sm.softmax(this, axis); }
  logSoftmax(axis = -1): Tensor<'f32'> { return sm.logSoftmax(this, axis); }

  matmul(b: Tensor, opts?: mm.MatmulOptions): Tensor<'f32'> { return mm.matmul(this, b, opts); }

  reshape(shape: Shape): Tensor<D> { return lay.reshape(this, shape); }
  flatten(startAxis = 0, endAxis = -1): Tensor<D> { return lay.flatten(this, startAxis, endAxis); }
  squeeze(axis?: number): Tensor<D> { return lay.squeeze(this, axis); }
  unsqueeze(axis: number): Tensor<D> { return lay.unsqueeze(this, axis); }
  transpose(axis0 = -2, axis1 = -1): Tensor<D> { return lay.transpose(this, axis0, axis1); }
  permute(perm: readonly number[]): Tensor<D> { return lay.permute(this, perm); }
  slice(axis: number, start: number, end?: number): Tensor<D> { return lay.slice(this, axis, start, end); }
  broadcastTo(shape: Shape): Tensor<D> { return lay.broadcastTo(this, shape); }

  gather(axis: number, index: Tensor<'i32'>): Tensor<'f32'> { return idx.gather(this, axis, index); }
  indexSelect(axis: number, index: Tensor<'i32'>): Tensor<D> { return idx.indexSelect(this, axis, index); }

  cast<E extends DType>(dtype: E): Tensor<E> { return cst.cast(this, dtype); }
  to(device: Device): Tensor<D> { return cst.to(this, device); }
}

// `using t = ml.randn(...)` (explicit resource management) disposes the tensor at the end of the block.
const symbolDispose = (Symbol as unknown as { dispose?: symbol }).dispose;
if (symbolDispose) {
  Object.defineProperty(Tensor.prototype, symbolDispose, {
    value(this: Tensor) { this.dispose(); },
    writable: true, configurable: true,
  });
}
