/**
 * Stable softmax and logSoftmax along an axis, fused forward and backward.
 *
 * ```ts
 * const p = ml.softmax(ml.tensor([[1, 2, 3]]), -1);     // [[0.0900, 0.2447, 0.6652]]
 * const lp = ml.logSoftmax(ml.tensor([[1, 2, 3]]));     // [[-2.4076, -1.4076, -0.4076]]
 * ```
 * The row max is subtracted before exp (no overflow); a row of all -inf gives NaN, as in PyTorch. The backward
 * reads only the saved output y: softmax dx = y * (dy - sum(dy * y)); logSoftmax dx = dy - exp(y) * sum(dy).
 */
import { binding } from '../binding';
import { record, needsGrad } from '../autograd';
import { Tensor } from '../tensor';
import { axisSplit, checkFloat, normAxis } from './util';

function run(op: 'softmax' | 'logSoftmax', x: Tensor, axis: number): Tensor<'f32'> {
  checkFloat(op, 'x', x);
  // A 0-d tensor is a single row of length 1 (PyTorch accepts dim 0 or -1 there).
  const a = normAxis(op, axis, Math.max(x.ndim, 1));
  const [outer, len, inner] = x.ndim === 0 ? [1, 1, 1] : axisSplit(x.shape, a);
  const log = op === 'logSoftmax';
  const out = Tensor._empty(x.shape, 'f32', x.device);
  if (out.size > 0) {
    binding().softmax(out._h(op), out._offset, x._h(op), x._offset, outer, len, inner, log);
  }
  if (!needsGrad(x)) return out;
  const y = out.retainForBackward();
  return record(out, op, [x], (g) => {
    const dx = Tensor._empty(x.shape, 'f32', x.device);
    if (dx.size > 0) {
      binding().softmaxBackward(dx._h(op), dx._offset, g._h(op), g._offset, y._h(op), y._offset, outer, len, inner,
        log);
    }
    return [dx];
  }, [y]);
}

/** softmax(x)_i = exp(x_i) / sum_j exp(x_j) along `axis` (default the last). f32 in, f32 out. */
export function softmax(x: Tensor, axis = -1): Tensor<'f32'> {
  return run('softmax', x, axis);
}

/** logSoftmax(x)_i = x_i - log(sum_j exp(x_j)) along `axis`, computed without forming softmax first. */
export function logSoftmax(x: Tensor, axis = -1): Tensor<'f32'> {
  return run('logSoftmax', x, axis);
}
