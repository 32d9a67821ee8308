/**
 * cast between dtypes and `to(device)`. Float-to-float casts are differentiable (the gradient is cast back,
 * and gradients are always f32); casts to or from i32 are not.
 */
import { binding } from '../binding';
import { DType, Device, dtypeCode, dtypeSize, isDType, isDevice, isFloat } from '../dtype';
import { record } from '../autograd';
import { Tensor } from '../tensor';
import { checkTensor, describe } from './util';

/** x.cast('bf16'): a copy in another dtype (round to nearest even; NaN stays NaN; overflow to infinity). */
export function cast<E extends DType>(x: Tensor, dtype: E): Tensor<E> {
  checkTensor('cast', 'x', x);
  if (!isDType(dtype)) throw new TypeError(`cast: unknown dtype ${describe(dtype)} (expected f32, f16, bf16 or i32)`);
  if (x.dtype === dtype) {
    const v = x._view(x.shape) as unknown as Tensor<E>;
    return record(v, 'cast', [x], (g) => [g.retainForBackward() as Tensor<'f32'>]);
  }
  const out = Tensor._empty(x.shape, dtype, x.device);
  binding().cast(out._h('cast'), out._offset, dtypeCode(dtype), x._h('cast'), x._offset, dtypeCode(x.dtype), x.size);
  if (!isFloat(dtype) || !isFloat(x.dtype)) return out;
  return record(out, 'cast', [x], (g) => [g.retainForBackward() as Tensor<'f32'>]);
}

/**
 * Move to a device: 'cpu', or 'cuda' where `ml.cuda.isAvailable()`. The same device returns a view (no copy); another
 * device a copy there. Differentiable: the gradient goes back to x's device.
 */
export function to<D extends DType>(x: Tensor<D>, device: Device): Tensor<D> {
  checkTensor('to', 'x', x);
  if (!isDevice(device)) {
    throw new TypeError(`to: unknown device ${describe(device)} (expected 'cpu' or 'cuda')`);
  }
  if (device === x.device) {
    const v = x._view(x.shape);
    return record(v, 'to', [x], (g) => [g.retainForBackward() as Tensor<'f32'>]);
  }
  const out = Tensor._empty(x.shape, x.dtype, device, false, 'to');   // names the missing device when absent
  const es = dtypeSize(x.dtype);
  binding().copy(out._h('to'), out._offset * es, x._h('to'), x._offset * es, x.size * es);
  if (!isFloat(x.dtype)) return out;
  const from = x.device;
  return record(out, 'to', [x], (g) => [to(g, from)]);
}

/** @internal ones in f32 with x's shape and device (the seed of backward). */
export function onesLikeF32(x: Tensor): Tensor<'f32'> {
  const out = Tensor._empty(x.shape, 'f32', x.device);
  binding().fillF32(out._h('ones'), 0, out.size, 1);
  return out;
}
