/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019), one fused native kernel per
 * parameter: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p).
 * The decay is decoupled from the moments (Algorithm 2, line 12), which is what torch.optim.AdamW computes.
 *
 * ```ts
 * const opt = new ml.optim.AdamW(model.parameters(), { lr: 3e-4, weightDecay: 0.1 });
 * loss.backward(); opt.step(); opt.zeroGrad();
 * ```
 *
 * By default weight decay reaches only parameters with two or more dims (weight matrices, embeddings): biases
 * and LayerNorm gains get none, as in GPT-2/nanoGPT training. A group that sets `weightDecay` itself applies it
 * to all of its parameters (or set `weightDecayFilter` on the group explicitly).
 */
import { binding } from '../binding';
import { Tensor } from '../tensor';
import { BaseHyper, Optimizer, Params, finite } from './optimizer';

export interface AdamWHyper extends BaseHyper {
  betas: [number, number];
  eps: number;
}

export interface AdamWOptions {
  /** Default 1e-3. */
  lr?: number;
  /** Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Default 0.01 (torch's), applied to tensors with >= 2 dims unless a group says otherwise. */
  weightDecay?: number;
}

export class AdamW extends Optimizer<AdamWHyper> {
  constructor(params: Params<AdamWHyper>, opts: AdamWOptions = {}) {
    super('AdamW', params, {
      lr: opts.lr ?? 1e-3,
      betas: opts.betas ?? [0.9, 0.999],
      eps: opts.eps ?? 1e-8,
      weightDecay: opts.weightDecay ?? 0.01,
    }, 'ndim>=2');
  }

  protected override checkHyper(h: AdamWHyper, where: string): void {
    super.checkHyper(h, where);
    if (!Array.isArray(h.betas) || h.betas.length !== 2) {
      throw new TypeError(`AdamW: ${where}: betas must be [beta1, beta2], got ${JSON.stringify(h.betas)}`);
    }
    finite('AdamW', where, 'betas[0]', h.betas[0], 0, 1, true);
    finite('AdamW', where, 'betas[1]', h.betas[1], 0, 1, true);
    finite('AdamW', where, 'eps', h.eps, 0);
  }

  step(): void {
    const b = binding();
    this.paramGroups.forEach((group, gi) => {
      const [beta1, beta2] = group.betas;
      group.params.forEach((p, i) => {
        const g = this.gradOf(p, gi, i);
        if (!g) return;
        let st = this.state.get(p);
        if (!st) {
          st = { step: 0, expAvg: this.zerosState(p), expAvgSq: this.zerosState(p) };
          this.state.set(p, st);
        }
        const t = (st.step as number) + 1;
        st.step = t;
        const m = st.expAvg as Tensor, v = st.expAvgSq as Tensor;
        // Bias corrections in double precision; the kernel divides by them (Kingma & Ba, Algorithm 1).
        const c1 = 1 - Math.pow(beta1, t);
        const c2 = 1 - Math.pow(beta2, t);
        b.adamw(p._h('AdamW.step'), p._offset, m._h('AdamW.step'), m._offset, v._h('AdamW.step'), v._offset,
          g._h('AdamW.step'), g._offset, p.size, group.lr, beta1, beta2, group.eps, this.decayFor(group, p), c1, c2);
      });
    });
  }
}
