/**
 * Mixed precision: autocast (which ops run in bf16/f16) and GradScaler (dynamic loss scaling for f16).
 *
 * Inside `ml.autocast('bf16', fn)`, matmul, linear and attention cast their float inputs to the low precision
 * and accumulate in f32; softmax, normalisation, reductions and losses stay in f32; parameters stay f32
 * (master weights). Ops ask `autocastDtype()` whether they are inside such a region.
 *
 * f16 has 5 exponent bits: gradients below 2^-24 vanish and above 65504 overflow. GradScaler multiplies the
 * loss by a large factor before backward (so small gradients survive the f16 rounding of the backward GEMMs),
 * divides the gradients by it before the optimizer step, and skips the step when any gradient came out inf or
 * NaN, halving the factor; after `growthInterval` clean steps in a row it doubles it again (PyTorch's
 * torch.cuda.amp.GradScaler, same defaults and method names). bf16 has f32's exponent range and needs no scaler.
 *
 * ```ts
 * const scaler = new ml.GradScaler();
 * for (const batch of batches) {
 *   const loss = ml.autocast('f16', () => lossFn(model, batch));
 *   scaler.scale(loss).backward();
 *   scaler.step(opt);          // unscales the gradients, checks them, steps unless one is inf/NaN
 *   scaler.update();           // halve the scale after a skipped step, double it after 2000 clean ones
 *   opt.zeroGrad();
 * }
 * ```
 */
import { binding } from './binding';
import { Tensor } from './tensor';
import { mul } from './ops/elementwise';
import type { Optimizer } from './optim/optimizer';

export type AutocastDType = 'bf16' | 'f16';

let current: AutocastDType | null = null;

/** The low-precision dtype of the innermost autocast region, or null outside any. */
export function autocastDtype(): AutocastDType | null {
  return current;
}

/** Run fn with matmul, linear and attention in `dtype` (f32 accumulation). Regions nest; fn must be synchronous. */
export function autocast<T>(dtype: AutocastDType | null, fn: () => T): T {
  if (dtype !== null && dtype !== 'bf16' && dtype !== 'f16') {
    throw new TypeError(`autocast: dtype must be 'bf16', 'f16' or null (off), got ${String(dtype)}`);
  }
  if (typeof fn !== 'function') throw new TypeError('autocast: fn must be a function');
  const prev = current;
  current = dtype;
  try {
    const r = fn();
    if (r instanceof Promise) throw new Error('autocast: fn returned a Promise; autocast only works with synchronous functions');
    return r;
  } finally {
    current = prev;
  }
}

// ------------------------------------------------------------------------------------------------ GradScaler

export interface GradScalerOptions {
  /** The first scale. Default 2^16. */
  initScale?: number;
  /** The factor the scale grows by after `growthInterval` clean steps. Default 2. */
  growthFactor?: number;
  /** The factor the scale shrinks by after a step with inf/NaN gradients. Default 0.5. */
  backoffFactor?: number;
  /** Clean steps in a row before the scale grows. Default 2000. */
  growthInterval?: number;
  /** false: every method passes through (scale(loss) is loss, step() just steps). Default true. */
  enabled?: boolean;
}

/** What stateDict() returns and loadStateDict() takes (PyTorch's keys, in camelCase). */
export interface GradScalerState {
  scale: number;
  growthFactor: number;
  backoffFactor: number;
  growthInterval: number;
  /** Clean steps since the scale last changed. */
  growthTracker: number;
}

/** Where an optimizer is in the current iteration: unscaled (and whether an inf was found), then stepped. */
interface PerOptimizer { stage: 'unscaled' | 'stepped'; foundInf: boolean }

function positive(where: string, name: string, v: unknown, opts: { integer?: boolean; below1?: boolean; above1?: boolean } = {}): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || !(v > 0) || (opts.integer && !Number.isInteger(v)) ||
    (opts.below1 && !(v < 1)) || (opts.above1 && !(v > 1))) {
    const want = opts.integer ? 'a positive integer' : opts.below1 ? 'a number in (0, 1)' : opts.above1 ? 'a finite number above 1' : 'a positive finite number';
    throw new RangeError(`${where}: ${name} must be ${want}, got ${typeof v === 'number' ? v : typeof v}`);
  }
  return v;
}

/** Dynamic loss scaling for f16 training (see the top of this file). */
export class GradScaler {
  private _scale: number;
  private growthTracker = 0;
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;
  private readonly enabled: boolean;
  private perOptimizer = new Map<Optimizer, PerOptimizer>();

  constructor(opts: GradScalerOptions = {}) {
    if (opts === null || typeof opts !== 'object') throw new TypeError(`GradScaler: options must be an object, got ${opts === null ? 'null' : typeof opts}`);
    this._scale = positive('GradScaler', 'initScale', opts.initScale ?? 2 ** 16);
    this.growthFactor = positive('GradScaler', 'growthFactor', opts.growthFactor ?? 2, { above1: true });
    this.backoffFactor = positive('GradScaler', 'backoffFactor', opts.backoffFactor ?? 0.5, { below1: true });
    this.growthInterval = positive('GradScaler', 'growthInterval', opts.growthInterval ?? 2000, { integer: true });
    if (opts.enabled !== undefined && typeof opts.enabled !== 'boolean') throw new TypeError('GradScaler: enabled must be a boolean');
    this.enabled = opts.enabled ?? true;
  }

  isEnabled(): boolean {
    return this.enabled;
  }

  /** The current scale (1 when disabled). */
  getScale(): number {
    return this.enabled ? this._scale : 1;
  }

  /** loss * scale, differentiable: call backward() on it. Disabled: loss itself. */
  scale(loss: Tensor): Tensor {
    if (!(loss instanceof Tensor)) throw new TypeError(`GradScaler.scale: loss must be a Tensor, got ${loss === null ? 'null' : typeof loss}`);
    if (loss.isDisposed) throw new Error('GradScaler.scale: loss was used after dispose()');
    if (!this.enabled) return loss;
    return mul(loss, this._scale);
  }

  /**
   * Divide the optimizer's gradients by the scale in place and record whether any of them is inf or NaN. Call
   * it before anything that reads the true gradients (clipGradNorm); step() calls it when you have not.
   */
  unscale_(optimizer: Optimizer): void {
    if (!this.enabled) return;
    this.checkOptimizer('unscale_', optimizer);
    const st = this.perOptimizer.get(optimizer);
    if (st?.stage === 'unscaled') throw new Error('GradScaler.unscale_: already called on this optimizer since the last update()');
    if (st?.stage === 'stepped') throw new Error('GradScaler.unscale_: called after step(); call update() first');
    const b = binding();
    const inv = Math.fround(1 / this._scale);
    let foundInf = false;
    for (const group of optimizer.paramGroups) {
      for (const p of group.params) {
        const g = p.grad;
        if (!g || g.isDisposed || g.size === 0) continue;
        const h = g._h('GradScaler.unscale_');
        // Checked before the division: an overflowed gradient must count even if it were to divide back into range.
        if (!foundInf && !b.allFinite(h, g._offset, g.size)) foundInf = true;
        b.scaleInplace(h, g._offset, g.size, inv);
      }
    }
    this.perOptimizer.set(optimizer, { stage: 'unscaled', foundInf });
  }

  /** Unscale (if not done yet) and step the optimizer, unless a gradient is inf/NaN. Returns whether it stepped. */
  step(optimizer: Optimizer): boolean {
    if (!this.enabled) {
      this.checkOptimizer('step', optimizer);
      optimizer.step();
      return true;
    }
    this.checkOptimizer('step', optimizer);
    if (this.perOptimizer.get(optimizer)?.stage === 'stepped') {
      throw new Error('GradScaler.step: already called on this optimizer since the last update()');
    }
    if (!this.perOptimizer.has(optimizer)) this.unscale_(optimizer);
    const st = this.perOptimizer.get(optimizer)!;
    st.stage = 'stepped';
    if (st.foundInf) return false;
    optimizer.step();
    return true;
  }

  /**
   * End the iteration: shrink the scale by backoffFactor if any optimizer saw inf/NaN gradients (its step was
   * skipped), else count a clean step and grow it by growthFactor after growthInterval of them. With newScale,
   * set the scale to it instead.
   */
  update(newScale?: number): void {
    if (!this.enabled) return;
    if (newScale !== undefined) {
      this._scale = positive('GradScaler.update', 'newScale', newScale);
    } else {
      if (this.perOptimizer.size === 0) {
        throw new Error('GradScaler.update: no gradients were checked since the last update() (call step() or unscale_() first)');
      }
      const foundInf = [...this.perOptimizer.values()].some((s) => s.foundInf);
      if (foundInf) {
        this._scale *= this.backoffFactor;
        this.growthTracker = 0;
      } else if (++this.growthTracker >= this.growthInterval) {
        this._scale *= this.growthFactor;
        this.growthTracker = 0;
      }
    }
    this.perOptimizer.clear();
  }

  stateDict(): GradScalerState {
    return {
      scale: this.getScale(), growthFactor: this.growthFactor, backoffFactor: this.backoffFactor,
      growthInterval: this.growthInterval, growthTracker: this.growthTracker,
    };
  }

  /** Restore the scale and the count of clean steps (the factors and interval must match this scaler's). */
  loadStateDict(state: GradScalerState): void {
    if (state === null || typeof state !== 'object') throw new TypeError('GradScaler.loadStateDict: expected an object from stateDict()');
    const scale = positive('GradScaler.loadStateDict', 'scale', state.scale);
    const tracker = state.growthTracker;
    if (typeof tracker !== 'number' || !Number.isInteger(tracker) || tracker < 0) {
      throw new RangeError(`GradScaler.loadStateDict: growthTracker must be a non-negative integer, got ${String(tracker)}`);
    }
    for (const k of ['growthFactor', 'backoffFactor', 'growthInterval'] as const) {
      if (state[k] !== undefined && state[k] !== this[k]) {
        throw new Error(`GradScaler.loadStateDict: ${k} is ${String(state[k])} in the state and ${this[k]} in this scaler`);
      }
    }
    this._scale = scale;
    this.growthTracker = tracker;
    this.perOptimizer.clear();
  }

  private checkOptimizer(method: string, optimizer: Optimizer): void {
    if (optimizer === null || typeof optimizer !== 'object' || !Array.isArray((optimizer as Optimizer).paramGroups) ||
      typeof (optimizer as Optimizer).step !== 'function') {
      throw new TypeError(`GradScaler.${method}: expected an optimizer (ml.optim.AdamW, SGD, ...), got ${optimizer === null ? 'null' : typeof optimizer}`);
    }
  }
}
