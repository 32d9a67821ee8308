/**
 * clipGradNorm: scale every gradient so that their joint L2 norm is at most maxNorm
 * (torch.nn.utils.clip_grad_norm_), in place. Returns the total norm before clipping.
 *
 * ```ts
 * loss.backward();
 * const norm = ml.optim.clipGradNorm(model.parameters(), 1.0);   // log it: spikes show instability
 * opt.step();
 * ```
 */
import { binding } from '../binding';
import { Tensor, shapeStr } from '../tensor';
import { finite } from './optimizer';

export interface ClipGradNormOptions {
  /** Throw when the total norm is NaN or infinite (default false: return it and leave the gradients alone). */
  errorIfNonfinite?: boolean;
}

export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number, opts: ClipGradNormOptions = {}): number {
  if (opts === null || typeof opts !== 'object') throw new TypeError('clipGradNorm: options must be an object');
  finite('clipGradNorm', 'arguments', 'maxNorm', maxNorm, 0);
  if (params === null || typeof params !== 'object' || typeof (params as Iterable<Tensor>)[Symbol.iterator] !== 'function') {
    throw new TypeError('clipGradNorm: params must be an array (or iterable) of tensors');
  }
  const b = binding();
  const grads: Tensor[] = [];
  for (const p of params) {
    if (!(p instanceof Tensor)) throw new TypeError('clipGradNorm: params must contain only tensors');
    const g = p.grad;
    if (!g) continue;
    if (g.dtype !== 'f32') throw new TypeError(`clipGradNorm: gradient ${shapeStr(g.shape)} is ${g.dtype}, expected f32`);
    grads.push(g);
  }
  // Sum of squares per tensor is accumulated natively in double; the sum over tensors here in double too.
  let sq = 0;
  for (const g of grads) sq += b.sumSquares(g._h('clipGradNorm'), g._offset, g.size);
  const total = Math.sqrt(sq);
  if (!Number.isFinite(total)) {
    if (opts.errorIfNonfinite) {
      throw new Error(`clipGradNorm: the total gradient norm is ${total}; a NaN or infinity reached the gradients`);
    }
    return total;
  }
  // torch: clip_coef = max_norm / (total_norm + 1e-6), applied only when below 1.
  const coef = maxNorm / (total + 1e-6);
  if (coef < 1) for (const g of grads) b.scaleInplace(g._h('clipGradNorm'), g._offset, g.size, coef);
  return total;
}
