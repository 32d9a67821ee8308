/**
 * SGD with momentum and Nesterov momentum, PyTorch's formulation, one fused native kernel per parameter:
 *   g' = g + wd p;  buf = momentum buf + (1 - dampening) g'  (buf = g' on the first step);
 *   p -= lr * (nesterov ? g' + momentum buf : buf)          (plain g' without momentum).
 *
 * ```ts
 * const opt = new ml.optim.SGD(model.parameters(), { lr: 0.1, momentum: 0.9, nesterov: true });
 * ```
 */
import { binding } from '../binding';
import { Tensor } from '../tensor';
import { BaseHyper, Optimizer, Params, finite } from './optimizer';

export interface SGDHyper extends BaseHyper {
  momentum: number;
  dampening: number;
  nesterov: boolean;
}

export interface SGDOptions {
  /** Required: there is no sensible default learning rate for SGD. */
  lr: number;
  /** Default 0. */
  momentum?: number;
  /** Default 0. */
  dampening?: number;
  /** L2 penalty added to the gradient (coupled, unlike AdamW), applied to every parameter. Default 0. */
  weightDecay?: number;
  /** Default false. Needs momentum > 0 and dampening 0. */
  nesterov?: boolean;
}

export class SGD extends Optimizer<SGDHyper> {
  constructor(params: Params<SGDHyper>, opts: SGDOptions) {
    if (!opts || typeof opts !== 'object' || opts.lr === undefined) throw new TypeError('SGD: opts.lr is required');
    super('SGD', params, {
      lr: opts.lr,
      momentum: opts.momentum ?? 0,
      dampening: opts.dampening ?? 0,
      weightDecay: opts.weightDecay ?? 0,
      nesterov: opts.nesterov ?? false,
    }, 'all');
  }

  protected override checkHyper(h: SGDHyper, where: string): void {
    super.checkHyper(h, where);
    finite('SGD', where, 'momentum', h.momentum, 0);
    finite('SGD', where, 'dampening', h.dampening, 0, 1);
    if (typeof h.nesterov !== 'boolean') throw new TypeError(`SGD: ${where}: nesterov must be a boolean`);
    if (h.nesterov && (h.momentum <= 0 || h.dampening !== 0)) {
      throw new Error(`SGD: ${where}: Nesterov momentum needs momentum > 0 and dampening 0 (got momentum ${h.momentum}, dampening ${h.dampening})`);
    }
  }

  step(): void {
    const b = binding();
    this.paramGroups.forEach((group, gi) => {
      group.params.forEach((p, i) => {
        const g = this.gradOf(p, gi, i);
        if (!g) return;
        let buf: Tensor | null = null;
        let first = false;
        if (group.momentum !== 0) {
          let st = this.state.get(p);
          if (!st || !(st.momentumBuffer instanceof Tensor)) {
            // The kernel overwrites the buffer with g' on the first step, so its initial contents do not matter.
            st = { momentumBuffer: this.zerosState(p) };
            this.state.set(p, st);
            first = true;
          }
          buf = st.momentumBuffer as Tensor;
        }
        b.sgd(p._h('SGD.step'), p._offset, buf ? buf._h('SGD.step') : null, buf ? buf._offset : 0,
          g._h('SGD.step'), g._offset, p.size, group.lr, group.momentum, group.dampening, this.decayFor(group, p),
          group.nesterov, first);
      });
    });
  }
}
