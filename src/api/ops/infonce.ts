/**
 * infoNCE: CLIP's symmetric contrastive loss, fused so that the N x N logits never exist (Inf-CL).
 *
 * ```ts
 * const img = ml.randn([8, 32]), txt = ml.randn([8, 32]);   // in real use, L2-normalise the rows first
 * const logitScale = ml.tensor(Math.log(1 / 0.07), [], { requiresGrad: true });
 * const loss = ml.infoNCE(img, txt, logitScale);             // a scalar
 * loss.backward();                                           // gradients for img, txt (if they need them), logitScale
 * ```
 * With s = min(exp(logitScale), 100) and S = s a b^T, the loss is (CE(S, arange N) + CE(S^T, arange N)) / 2:
 * row i of `a` should pick row i of `b` among all N, and the other way round. The native kernel (native/cpu/
 * infonce.cc) computes S tile by tile with an online logsumexp along rows and columns and keeps O(N) statistics;
 * the backward recomputes the tiles. Memory is O(N D) where the plain formulation needs O(N^2), so N = 65536
 * pairs fit in a few hundred MB. logitScale gets no gradient while the clamp at 100 is active (as with PyTorch's
 * `logit_scale.exp().clamp(max=100)`, whose clamp still passes it at exactly 100).
 */
import { binding } from '../binding';
import { needsGrad, record } from '../autograd';
import { Tensor } from '../tensor';
import { cast } from './cast';
import { checkFloat, checkSameDevice, checkTensor, describe, sameShape, shapeStr } from './util';

const OP = 'infoNCE';

/**
 * The symmetric InfoNCE loss of paired rows a [N, D] and b [N, D] (f32, or f16/bf16, which are widened to f32)
 * with a learnable log temperature `logitScale` (a one-element f32 tensor of shape [] or [1], or a plain number).
 * Returns a scalar f32 tensor. Gradients flow to a, b and logitScale, each if it requires them.
 */
export function infoNCE(a: Tensor, b: Tensor, logitScale: Tensor | number): Tensor<'f32'> {
  checkFloat(OP, 'a', a, true);
  checkFloat(OP, 'b', b, true);
  checkSameDevice(OP, a, b);
  if (a.ndim !== 2) throw new Error(`${OP}: a must be 2-D [N, D], got ${shapeStr(a.shape)}`);
  if (!sameShape(a.shape, b.shape)) {
    throw new Error(`${OP}: a ${shapeStr(a.shape)} and b ${shapeStr(b.shape)} must have the same shape [N, D] ` +
      '(row i of a is paired with row i of b)');
  }
  const [N, D] = a.shape;
  if (N === 0) throw new Error(`${OP}: a and b ${shapeStr(a.shape)} hold no pairs: the loss needs N >= 1`);
  let ls: Tensor;
  if (typeof logitScale === 'number') {
    ls = Tensor._empty([], 'f32', a.device, false, OP);
    binding().fillF32(ls._h(OP), ls._offset, 1, logitScale);
  } else {
    if (!(logitScale instanceof Tensor)) {
      throw new TypeError(`${OP}: logitScale must be a Tensor or a number, got ${describe(logitScale)}`);
    }
    checkTensor(OP, 'logitScale', logitScale);
    checkFloat(OP, 'logitScale', logitScale);
    checkSameDevice(OP, a, logitScale);
    if (logitScale.size !== 1 || logitScale.ndim > 1) {
      throw new Error(`${OP}: logitScale must hold one value (shape [] or [1]), got ${shapeStr(logitScale.shape)}`);
    }
    ls = logitScale;
  }

  // Half-precision inputs: one f32 copy each (O(N D)); cast is differentiable, so their gradients flow back.
  const a32 = a.dtype === 'f32' ? a : cast(a, 'f32');
  const b32 = b.dtype === 'f32' ? b : cast(b, 'f32');
  const temps = [a32, b32, ls].filter((t) => t !== a && t !== b && t !== logitScale);
  const bb = binding();
  const out = Tensor._empty([], 'f32', a.device, false, OP);
  const stats = Tensor._empty([4 * N], 'f32', a.device, false, OP);  // row/column max and log-sum, for backward
  try {
    bb.infoNCE(out._h(OP), out._offset, stats._h(OP), stats._offset, a32._h(OP), a32._offset, b32._h(OP),
      b32._offset, ls._h(OP), ls._offset, N, D);
  } catch (e) {
    out.dispose();
    stats.dispose();
    for (const t of temps) t.dispose();
    throw e;
  }

  if (!needsGrad(a32, b32, ls)) {
    stats.dispose();
    for (const t of temps) t.dispose();
    return out;
  }
  const wantA = a32.requiresGrad, wantB = b32.requiresGrad, wantL = ls.requiresGrad;
  const sa = a32.retainForBackward(), sb = b32.retainForBackward(), sls = ls.retainForBackward();
  const sstats = stats.retainForBackward();
  stats.dispose();
  // The graph keeps a32/b32 as nodes (their casts link back to a, b); their memory lives on in sa/sb only.
  const res = record(out, OP, [a32, b32, ls], (g) => {
    const k = binding();
    const da = wantA ? Tensor._empty([N, D], 'f32', g.device, false, OP) : null;
    const db = wantB ? Tensor._empty([N, D], 'f32', g.device, false, OP) : null;
    const dls = wantL ? Tensor._empty(sls.shape, 'f32', g.device, false, OP) : null;
    try {
      k.infoNCEBackward(da ? da._h(OP) : null, da ? da._offset : 0, db ? db._h(OP) : null, db ? db._offset : 0,
        dls ? dls._h(OP) : null, dls ? dls._offset : 0, g._h(OP), g._offset, sa._h(OP), sa._offset, sb._h(OP),
        sb._offset, sstats._h(OP), sstats._offset, sls._h(OP), sls._offset, N, D);
    } catch (e) {
      da?.dispose();
      db?.dispose();
      dls?.dispose();
      throw e;
    }
    return [da, db, dls];
  }, [sa, sb, sstats, sls]);
  for (const t of temps) t.dispose();
  return res;
}
