/**
 * crossEntropy: fused log-softmax + NLL that never stores the probability matrix.
 *
 * ```ts
 * const logits = ml.randn([4, 10], { requiresGrad: true });
 * const targets = ml.tensor([3, 0, 9, -100], [4], { dtype: 'i32' });   // -100: ignored
 * const loss = ml.crossEntropy(logits, targets, { labelSmoothing: 0.1 }); // mean over the 3 counted rows
 * loss.backward();
 * ```
 * Semantics are PyTorch's F.cross_entropy with class indices: rows whose target is `ignoreIndex` count for
 * nothing; 'mean' divides by the number of counted rows (NaN when there are none); label smoothing e mixes
 * the one-hot target with the uniform distribution: loss = (1 - e) nll + e * mean_c(-log p_c). The forward keeps
 * one log-sum-exp per row; the backward recomputes the softmax from it (gradients flow to logits only).
 */
import { binding, ReduceOp } from '../binding';
import { record, needsGrad } from '../autograd';
import { Tensor, shapeSize } from '../tensor';
import { checkDType, checkFloat, checkNumber, checkSameDevice, checkTensor, describe, sameShape, shapeStr } from './util';

export interface CrossEntropyOptions {
  /** Rows with this target contribute no loss and no gradient (default -100, as PyTorch). */
  ignoreIndex?: number;
  /** e in [0, 1]: the target distribution becomes (1 - e) onehot + e / C (default 0). */
  labelSmoothing?: number;
  /** 'mean' over the counted rows (default), 'sum', or 'none' (one loss per row, shaped like targets). */
  reduction?: 'mean' | 'sum' | 'none';
}

const OP = 'crossEntropy';
const REDUCTIONS = ['mean', 'sum', 'none'];

/**
 * Cross entropy between `logits` [..., C] (f32, unnormalised) and class indices `targets` [...] (i32) of the same
 * leading shape; [N, C] with [N] is the usual case. Returns a scalar for 'mean' and 'sum', targets' shape for
 * 'none'. A target outside [0, C) that is not ignoreIndex throws, naming the row.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor<'f32'> {
  checkFloat(OP, 'logits', logits);
  checkTensor(OP, 'targets', targets);
  checkDType(OP, 'targets', targets, 'i32');
  checkSameDevice(OP, logits, targets);
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${OP}: options must be an object, got ${describe(opts)}`);
  const ignoreIndex = opts.ignoreIndex ?? -100;
  checkNumber(OP, 'ignoreIndex', ignoreIndex, { integer: true, min: -2147483648, max: 2147483647 });
  const smoothing = opts.labelSmoothing ?? 0;
  checkNumber(OP, 'labelSmoothing', smoothing, { min: 0, max: 1 });
  const reduction = opts.reduction ?? 'mean';
  if (!REDUCTIONS.includes(reduction)) {
    throw new TypeError(`${OP}: reduction must be 'mean', 'sum' or 'none', got ${describe(reduction)}`);
  }
  if (logits.ndim === 0) throw new Error(`${OP}: logits must have a class axis, got a 0-d tensor`);
  const C = logits.shape[logits.ndim - 1];
  const lead = logits.shape.slice(0, -1);
  if (!sameShape(targets.shape, lead)) {
    throw new Error(`${OP}: logits ${shapeStr(logits.shape)} and targets ${shapeStr(targets.shape)}: targets must ` +
      `have shape ${shapeStr(lead)} (the logits without their class axis)`);
  }
  const N = shapeSize(lead);

  const b = binding();
  const rows = Tensor._empty(targets.shape, 'f32', logits.device);  // loss per row: the result for 'none'
  const lse = Tensor._empty([N], 'f32', logits.device);
  try {
    b.crossEntropy(rows._h(OP), rows._offset, lse._h(OP), lse._offset, logits._h(OP), logits._offset, targets._h(OP),
      targets._offset, N, C, ignoreIndex, smoothing);
  } catch (e) {
    rows.dispose();
    lse.dispose();
    throw e;
  }

  // 'mean' divides by the rows that count. The count is integer bookkeeping on the labels, done here; the sum
  // over rows is the native reduction (in double).
  let scale = 1;
  if (reduction === 'mean') {
    const t = targets.toArray() as Int32Array;
    let counted = 0;
    for (let i = 0; i < t.length; i++) if (t[i] !== ignoreIndex) counted++;
    scale = counted > 0 ? 1 / counted : NaN;  // all rows ignored: 0 / 0, as in PyTorch
  }
  let out: Tensor<'f32'>;
  if (reduction === 'none') {
    out = rows;
  } else {
    out = Tensor._empty([], 'f32', logits.device);
    b.reduce(ReduceOp.Sum, out._h(OP), out._offset, null, 0, rows._h(OP), rows._offset, 1, N, 1);
    if (scale !== 1) b.scaleInplace(out._h(OP), out._offset, 1, scale);
    rows.dispose();
  }

  if (!needsGrad(logits)) {
    lse.dispose();
    return out;
  }
  const sx = logits.retainForBackward(), st = targets.retainForBackward(), slse = lse.retainForBackward();
  lse.dispose();
  // dloss per row: the seed itself for 'none'; the scalar seed spread over the rows (times 1/count) otherwise.
  // Ignored rows get a zero gradient from the kernel whatever their dloss, so a NaN scale never reaches them.
  const rowScale = Number.isNaN(scale) ? 0 : scale;
  return record(out, OP, [logits, targets], (g) => {
    const bb = binding();
    let dloss = g;
    if (reduction !== 'none') {
      dloss = Tensor._empty([N], 'f32', g.device);
      bb.broadcastAxis(dloss._h(OP), dloss._offset, g._h(OP), g._offset, 1, N, 1, rowScale);
    }
    const dx = Tensor._empty(sx.shape, 'f32', sx.device);
    try {
      bb.crossEntropyBackward(dx._h(OP), dx._offset, dloss._h(OP), dloss._offset, sx._h(OP), sx._offset, slse._h(OP),
        slse._offset, st._h(OP), st._offset, N, C, ignoreIndex, smoothing);
    } finally {
      if (dloss !== g) dloss.dispose();
    }
    return [dx, null];
  }, [sx, st, slse]);
}
