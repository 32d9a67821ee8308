/**
 * Learning-rate schedules as multiplier functions `(step) => factor`, and LRScheduler to apply one to an
 * optimizer (torch.optim.lr_scheduler.LambdaLR).
 *
 * ```ts
 * const lrAt = ml.optim.cosineWithWarmup({ warmupSteps: 100, totalSteps: 5000, minLrRatio: 0.1 });
 * const sched = new ml.optim.LRScheduler(opt, lrAt);   // lr = baseLr * lrAt(0) now
 * for (...) { ...; opt.step(); sched.step(); }          // lr = baseLr * lrAt(1), lrAt(2), ...
 * ```
 */
import { BaseHyper, Optimizer, finite } from './optimizer';

export type LrLambda = (step: number) => number;

export interface CosineWithWarmupOptions {
  /** Linear warmup steps. Default 0. */
  warmupSteps?: number;
  /** Where the cosine reaches minLrRatio; the factor stays there afterwards. */
  totalSteps: number;
  /** The final factor. Default 0. */
  minLrRatio?: number;
}

/**
 * Linear warmup then cosine decay (SGDR, Loshchilov & Hutter 2017, without restarts):
 *   step < W:        (step + 1) / (W + 1)         never 0, so the first step already learns; reaches 1 at W
 *   W <= step <= T:  r + (1 - r) * (1 + cos(pi * (step - W) / (T - W))) / 2
 *   step > T:        r
 */
export function cosineWithWarmup(opts: CosineWithWarmupOptions): LrLambda {
  if (!opts || typeof opts !== 'object') throw new TypeError('cosineWithWarmup: expected { warmupSteps, totalSteps, minLrRatio }');
  const W = opts.warmupSteps ?? 0;
  const T = opts.totalSteps;
  const r = opts.minLrRatio ?? 0;
  finite('cosineWithWarmup', 'options', 'warmupSteps', W, 0);
  finite('cosineWithWarmup', 'options', 'totalSteps', T, 1);
  finite('cosineWithWarmup', 'options', 'minLrRatio', r, 0, 1);
  if (!Number.isInteger(W) || !Number.isInteger(T)) throw new TypeError('cosineWithWarmup: warmupSteps and totalSteps must be integers');
  if (T < W) throw new RangeError(`cosineWithWarmup: totalSteps ${T} is below warmupSteps ${W}`);
  return (step: number): number => {
    if (typeof step !== 'number' || !Number.isFinite(step) || step < 0) {
      throw new RangeError(`cosineWithWarmup: step must be a non-negative number, got ${step}`);
    }
    if (step < W) return (step + 1) / (W + 1);
    if (step >= T) return r;
    const progress = (step - W) / (T - W);
    return r + (1 - r) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}

/** Linear warmup to 1, then constant. */
export function constantWithWarmup(opts: { warmupSteps: number }): LrLambda {
  const W = finite('constantWithWarmup', 'options', 'warmupSteps', opts?.warmupSteps, 0);
  return (step: number) => (step < W ? (step + 1) / (W + 1) : 1);
}

/**
 * Sets each group's lr to its base lr times `lrLambda(step)` (one function for all groups, or one per group).
 * The base lr is the group's `initialLr`, recorded on first use, so a resumed scheduler does not compound.
 */
export class LRScheduler {
  /** The step the current lr belongs to (0 after construction). */
  lastStep = 0;
  readonly baseLrs: number[];
  private readonly fns: LrLambda[];

  constructor(readonly optimizer: Optimizer<BaseHyper>, lrLambda: LrLambda | LrLambda[]) {
    const groups = optimizer.paramGroups;
    const fns = Array.isArray(lrLambda) ? lrLambda : groups.map(() => lrLambda);
    if (fns.length !== groups.length || fns.some((f) => typeof f !== 'function')) {
      throw new TypeError(`LRScheduler: expected one function or ${groups.length} (one per group)`);
    }
    this.fns = fns;
    this.baseLrs = groups.map((g) => (g.initialLr ??= g.lr));
    this.apply();
  }

  /** Advance one step (call after optimizer.step()). */
  step(): void {
    this.lastStep++;
    this.apply();
  }

  /** The lr of each group, as last set. */
  getLastLr(): number[] {
    return this.optimizer.paramGroups.map((g) => g.lr);
  }

  stateDict(): { lastStep: number; baseLrs: number[] } {
    return { lastStep: this.lastStep, baseLrs: this.baseLrs.slice() };
  }

  loadStateDict(sd: { lastStep: number; baseLrs?: number[] }): void {
    finite('LRScheduler.loadStateDict', 'state', 'lastStep', sd?.lastStep, 0);
    if (sd.baseLrs) {
      if (sd.baseLrs.length !== this.baseLrs.length) throw new Error('LRScheduler.loadStateDict: a different number of groups');
      sd.baseLrs.forEach((lr, i) => { this.baseLrs[i] = finite('LRScheduler.loadStateDict', 'state', 'baseLrs', lr, 0); });
    }
    this.lastStep = sd.lastStep;
    this.apply();
  }

  private apply(): void {
    this.optimizer.paramGroups.forEach((g, i) => {
      const f = this.fns[i](this.lastStep);
      if (typeof f !== 'number' || !Number.isFinite(f) || f < 0) {
        throw new RangeError(`LRScheduler: the schedule gave ${f} at step ${this.lastStep} (expected a finite factor >= 0)`);
      }
      g.lr = this.baseLrs[i] * f;
    });
  }
}
