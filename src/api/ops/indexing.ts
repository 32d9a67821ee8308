/**
 * Indexing: gather (torch.gather), indexSelect, embedding. Indices are i32 tensors; an index out of range throws
 * naming its value, its position and the bound ("embedding: index 70 at position 3 is outside [0, 50)"), and
 * nothing is read or written outside memory. Gradients are scatter-adds in native code (repeated indices sum).
 *
 * ```ts
 * const table = ml.randn([50, 8], { requiresGrad: true });
 * const ids = ml.tensor([[3, 7, 3]], undefined, { dtype: 'i32' });
 * ml.embedding(table, ids).shape;                       // [1, 3, 8]
 * ml.indexSelect(table, 0, ids.reshape([3])).shape;     // [3, 8]
 * ml.gather(ml.randn([2, 5]), 1, ml.tensor([[0], [4]], undefined, { dtype: 'i32' })).shape;   // [2, 1]
 * ```
 */
import { binding } from '../binding';
import type { DType, Device } from '../dtype';
import { dtypeSize } from '../dtype';
import { record, needsGrad } from '../autograd';
import { Tensor, Shape } from '../tensor';
import { axisSplit, checkDType, checkFloat, checkSameDevice, checkTensor, normAxis, shapeStr } from './util';

/** A new output tensor; an allocation that fails (too large, out of memory) throws naming the op and the shape. */
function output<D extends DType>(op: string, shape: Shape, dtype: D, device: Device): Tensor<D> {
  try {
    return Tensor._empty(shape, dtype, device);
  } catch (e) {
    throw new Error(`${op}: cannot allocate the output ${shapeStr(shape)} ${dtype}: ${(e as Error).message}`);
  }
}

function checkIndex(op: string, x: Tensor, index: unknown): Tensor<'i32'> {
  const idx = checkTensor(op, 'index', index);
  checkDType(op, 'index', idx, 'i32');
  checkSameDevice(op, x, idx);
  return idx as Tensor<'i32'>;
}

/**
 * torch.gather: out[..., j, ...] = x[..., index[..., j, ...], ...] along `axis`. index has x's rank and x's
 * sizes on every other axis; the output has index's shape.
 */
export function gather(x: Tensor, axis: number, index: Tensor<'i32'>): Tensor<'f32'> {
  checkFloat('gather', 'x', x);
  const idx = checkIndex('gather', x, index);
  if (x.ndim === 0) throw new RangeError('gather: x is a 0-d tensor (nothing to gather along)');
  const a = normAxis('gather', axis, x.ndim);
  if (idx.ndim !== x.ndim || idx.shape.some((d, i) => i !== a && d !== x.shape[i])) {
    throw new Error(`gather: index ${shapeStr(idx.shape)} must have x ${shapeStr(x.shape)}'s rank and sizes on ` +
      `every axis but ${a}`);
  }
  const [outer, xlen, inner] = axisSplit(x.shape, a);
  const glen = idx.shape[a];
  const out = output('gather', idx.shape, 'f32', x.device);
  const b = binding();
  if (out.size > 0) {
    b.gather(out._h('gather'), out._offset, x._h('gather'), x._offset, idx._h('gather'), idx._offset, outer, xlen,
      inner, glen);
  }
  if (!needsGrad(x)) return out;
  const saved = idx.retainForBackward();
  return record(out, 'gather', [x], (g) => {
    const dx = Tensor._empty(x.shape, 'f32', x.device, true);
    if (g.size > 0) {
      b.gatherBackward(dx._h('gather'), 0, g._h('gather'), g._offset, saved._h('gather'), saved._offset, outer,
        xlen, inner, glen);
    }
    return [dx];
  }, [saved]);
}

/** Rows (or slices along `axis`) of x picked by a 1-D index: out.shape[axis] = index.size. Any dtype. */
export function indexSelect<D extends DType>(x: Tensor<D>, axis: number, index: Tensor<'i32'>): Tensor<D> {
  checkTensor('indexSelect', 'x', x);
  const idx = checkIndex('indexSelect', x, index);
  if (x.ndim === 0) throw new RangeError('indexSelect: x is a 0-d tensor (nothing to select along)');
  const a = normAxis('indexSelect', axis, x.ndim);
  if (idx.ndim !== 1) throw new Error(`indexSelect: index must be 1-D, got ${shapeStr(idx.shape)} (x ${shapeStr(x.shape)})`);
  const [outer, xlen, inner] = axisSplit(x.shape, a);
  const nidx = idx.size;
  const shape = x.shape.slice();
  shape[a] = nidx;
  const out = output('indexSelect', shape, x.dtype, x.device);
  const b = binding();
  // Run the kernel even for an empty output when there are indices: it still validates them.
  if (out.size > 0 || nidx > 0) {
    b.indexSelect(out._h('indexSelect'), out._offset, x._h('indexSelect'), x._offset, idx._h('indexSelect'),
      idx._offset, outer, xlen, inner, nidx, dtypeSize(x.dtype));
  }
  if (!needsGrad(x)) return out;
  const saved = idx.retainForBackward();
  return record(out, 'indexSelect', [x], (g) => {
    const dx = Tensor._empty(x.shape, 'f32', x.device, true);
    if (g.size > 0) {
      b.indexSelectBackward(dx._h('indexSelect'), 0, g._h('indexSelect'), g._offset, saved._h('indexSelect'),
        saved._offset, outer, xlen, inner, nidx);
    }
    return [dx];
  }, [saved]);
}

/** Rows of weight [V, C] picked by indices (i32, any shape): out = [...indices.shape, C]. */
export function embedding(weight: Tensor, indices: Tensor<'i32'>): Tensor<'f32'> {
  checkFloat('embedding', 'weight', weight);
  const idx = checkTensor('embedding', 'indices', indices);
  checkDType('embedding', 'indices', idx, 'i32');
  checkSameDevice('embedding', weight, idx);
  if (weight.ndim !== 2) throw new Error(`embedding: weight must be [V, C], got ${shapeStr(weight.shape)}`);
  const [V, C] = weight.shape;
  const n = idx.size;
  const out = output('embedding', [...idx.shape, C], 'f32', weight.device);
  const b = binding();
  if (n > 0) {
    b.embedding(out._h('embedding'), out._offset, weight._h('embedding'), weight._offset, idx._h('embedding'),
      idx._offset, n, V, C);
  }
  if (!needsGrad(weight)) return out;
  const saved = idx.retainForBackward();
  return record(out, 'embedding', [weight], (g) => {
    const dw = Tensor._empty(weight.shape, 'f32', weight.device, true);
    if (g.size > 0) {
      b.embeddingBackward(dw._h('embedding'), 0, g._h('embedding'), g._offset, saved._h('embedding'), saved._offset,
        n, V, C);
    }
    return [dw];
  }, [saved]);
}
