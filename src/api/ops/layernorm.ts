/**
 * layerNorm over the last axis: one fused native kernel each way (llm.c's formulation).
 *
 * ```ts
 * const x = ml.randn([2, 5, 8], { requiresGrad: true });
 * const w = ml.ones([8], { requiresGrad: true }), b = ml.zeros([8], { requiresGrad: true });
 * const y = ml.layerNorm(x, w, b);          // [2, 5, 8]: every row of 8 has mean 0 and variance 1, then * w + b
 * ```
 * y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance (as PyTorch). The forward saves the
 * per-row mean and 1/std; the backward gives the gradients of x, weight and bias in one pass.
 */
import { binding } from '../binding';
import { record, needsGrad } from '../autograd';
import { Tensor } from '../tensor';
import { checkFloat, checkNumber, checkSameDevice, shapeStr } from './util';

const OP = 'layerNorm';

function checkAffine(name: string, t: Tensor | null, x: Tensor, C: number): Tensor | null {
  if (t === null || t === undefined) return null;
  checkFloat(OP, name, t);
  checkSameDevice(OP, x, t);
  if (t.ndim !== 1 || t.shape[0] !== C) {
    throw new Error(`${OP}: ${name} ${shapeStr(t.shape)} must have shape [${C}] to match the last axis of x ` +
      `${shapeStr(x.shape)}`);
  }
  return t;
}

/**
 * Normalise x over its last axis (any rank >= 1; rows = the product of the leading axes). weight and bias
 * are [C] or null (no scale, no shift). Gradients flow to x, weight and bias.
 */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor<'f32'> {
  checkFloat(OP, 'x', x);
  if (x.ndim === 0) throw new Error(`${OP}: x must have at least one axis, got a 0-d tensor`);
  checkNumber(OP, 'eps', eps, { min: 0 });
  if (!Number.isFinite(eps)) throw new RangeError(`${OP}: eps must be finite, got ${eps}`);
  const C = x.shape[x.ndim - 1];
  const rows = x.shape.slice(0, -1).reduce((p, d) => p * d, 1);
  const w = checkAffine('weight', weight, x, C);
  const b = checkAffine('bias', bias, x, C);

  const grad = needsGrad(x, w, b);
  const out = Tensor._empty(x.shape, 'f32', x.device);
  const mean = Tensor._empty([rows], 'f32', x.device);
  const rstd = Tensor._empty([rows], 'f32', x.device);
  try {
    binding().layerNorm(out._h(OP), out._offset, mean._h(OP), mean._offset, rstd._h(OP), rstd._offset, x._h(OP),
      x._offset, w ? w._h(OP) : null, w ? w._offset : 0, b ? b._h(OP) : null, b ? b._offset : 0, rows, C, eps);
  } catch (e) {
    for (const t of [out, mean, rstd]) t.dispose();
    throw e;
  }
  // The statistics are only for the backward, which holds its own references to them.
  const saved = grad ? [x.retainForBackward(), mean.retainForBackward(), rstd.retainForBackward()] : [];
  mean.dispose();
  rstd.dispose();
  if (!grad) return out;
  const [sx, smean, srstd] = saved;
  const sw = w ? w.retainForBackward() : null;
  if (sw) saved.push(sw);
  const wantW = w !== null && w.requiresGrad;
  const wantB = b !== null && b.requiresGrad;
  return record(out, OP, [x, w, b], (g) => {
    const bb = binding();
    const dx = Tensor._empty(x.shape, 'f32', x.device);
    const dw = wantW ? Tensor._empty([C], 'f32', x.device) : null;
    const db = wantB ? Tensor._empty([C], 'f32', x.device) : null;
    bb.layerNormBackward(dx._h(OP), dx._offset, dw ? dw._h(OP) : null, dw ? dw._offset : 0, db ? db._h(OP) : null,
      db ? db._offset : 0, g._h(OP), g._offset, sx._h(OP), sx._offset, sw ? sw._h(OP) : null, sw ? sw._offset : 0,
      smean._h(OP), smean._offset, srstd._h(OP), srstd._offset, rows, C);
    // The kernel always writes dx; hand it back only when x wants it.
    if (!x.requiresGrad) {
      dx.dispose();
      return [null, dw, db];
    }
    return [dx, dw, db];
  }, saved);
}
