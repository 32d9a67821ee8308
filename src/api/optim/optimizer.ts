/**
 * Optimizer: parameter groups with per-group hyperparameters, per-parameter state, zeroGrad(), and a state
 * dict for an exact resume. AdamW and SGD implement `step()` with one fused native kernel per parameter.
 *
 * ```ts
 * const opt = new ml.optim.AdamW([
 *   { params: decay, weightDecay: 0.1 },
 *   { params: noDecay, weightDecay: 0, lr: 3e-4 },
 * ], { lr: 1e-3 });
 * // checkpoint
 * const { tensors, metadata } = ml.optim.toSafetensors(opt.stateDict());
 * ml.save('opt.safetensors', tensors, metadata);
 * opt2.loadStateDict(ml.optim.fromSafetensors(ml.load('opt.safetensors')));
 * ```
 *
 * State tensors live outside every tidy() scope (they are kept) and are freed by dispose(); a step makes no
 * tensors, so a training loop leaks nothing.
 */
import { describe } from '../ops/util';
import { binding } from '../binding';
import { Tensor, shapeStr } from '../tensor';

/** Which parameters of a group get weight decay. */
export type WeightDecayFilter = 'all' | 'ndim>=2';

export interface BaseHyper {
  lr: number;
  weightDecay: number;
}

/** A group as given to the constructor: params plus any hyperparameter overrides. */
export type ParamGroupSpec<H extends BaseHyper = BaseHyper> = Partial<H> & {
  params: Iterable<Tensor>;
  weightDecayFilter?: WeightDecayFilter;
};

/** A resolved group: every hyperparameter present. Change `lr` (or any other) between steps freely. */
export type ParamGroup<H extends BaseHyper = BaseHyper> = H & {
  params: Tensor[];
  /** 'ndim>=2' (AdamW's default when the group does not set weightDecay itself) skips biases and norm weights. */
  weightDecayFilter: WeightDecayFilter;
  /** The lr before any scheduler touched it (set by LRScheduler). */
  initialLr?: number;
};

export type Params<H extends BaseHyper = BaseHyper> = Iterable<Tensor> | Iterable<ParamGroupSpec<H>>;

/** Per-parameter state: tensors (moments, momentum buffers) and numbers (the step count). */
export type ParamState = Record<string, Tensor | number>;

/** PyTorch's layout: parameters are named by their index in the flattened groups. */
export interface OptimizerStateDict {
  state: Record<number, ParamState>;
  paramGroups: Array<Record<string, unknown> & { params: number[] }>;
}

export abstract class Optimizer<H extends BaseHyper = BaseHyper> {
  readonly paramGroups: Array<ParamGroup<H>> = [];
  /** @internal */
  protected readonly state = new Map<Tensor, ParamState>();

  protected constructor(protected readonly name: string, params: Params<H>, protected readonly defaults: H,
    private readonly defaultFilter: WeightDecayFilter) {
    if (params === null || typeof params !== 'object' || typeof (params as Iterable<unknown>)[Symbol.iterator] !== 'function') {
      throw new TypeError(`${name}: params must be an array of tensors or of parameter groups, got ${params === null ? 'null' : typeof params}`);
    }
    this.checkHyper(defaults, 'defaults');
    const items = [...(params as Iterable<Tensor | ParamGroupSpec<H>>)];
    if (items.length === 0) throw new Error(`${name}: got an empty parameter list`);
    if (items.every((x) => x instanceof Tensor)) this.addParamGroup({ params: items as Tensor[] } as unknown as ParamGroupSpec<H>);
    else if (items.some((x) => x instanceof Tensor)) throw new TypeError(`${name}: params mixes tensors and parameter groups`);
    else for (const g of items as Array<ParamGroupSpec<H>>) this.addParamGroup(g);
  }

  /** Add a group; hyperparameters it does not set come from the constructor's defaults. */
  addParamGroup(spec: ParamGroupSpec<H>): void {
    const gi = this.paramGroups.length;
    if (spec === null || typeof spec !== 'object' || !spec.params || typeof spec.params[Symbol.iterator] !== 'function') {
      throw new TypeError(`${this.name}: parameter group ${gi} needs a 'params' array of tensors`);
    }
    const params = [...spec.params];
    const seen = new Set<Tensor>(this.paramGroups.flatMap((g) => g.params));
    params.forEach((p, i) => {
      const where = `parameter ${i} of group ${gi}`;
      if (!(p instanceof Tensor)) throw new TypeError(`${this.name}: ${where} is not a Tensor`);
      if (p.isDisposed) throw new Error(`${this.name}: ${where} ${shapeStr(p.shape)} was disposed`);
      if (p.dtype !== 'f32') {
        throw new TypeError(`${this.name}: ${where} ${shapeStr(p.shape)} is ${p.dtype}; optimizers update f32 parameters ` +
          '(keep f32 master weights and cast copies for compute)');
      }
      if (p._node) throw new Error(`${this.name}: ${where} ${shapeStr(p.shape)} is not a leaf (it was computed by '${p._node.op}')`);
      if (seen.has(p)) throw new Error(`${this.name}: ${where} ${shapeStr(p.shape)} appears more than once in the parameter groups`);
      seen.add(p);
    });
    const { params: _, weightDecayFilter, ...overrides } = spec;
    const group = { ...this.defaults, ...overrides, params } as ParamGroup<H>;
    // A group that sets weightDecay itself means it for all its parameters; otherwise the optimizer's default
    // filter applies (AdamW: only matrices decay, never biases or norm gains).
    group.weightDecayFilter = weightDecayFilter ?? ('weightDecay' in overrides ? 'all' : this.defaultFilter);
    if (group.weightDecayFilter !== 'all' && group.weightDecayFilter !== 'ndim>=2') {
      throw new TypeError(`${this.name}: weightDecayFilter must be 'all' or 'ndim>=2', got ${JSON.stringify(group.weightDecayFilter)}`);
    }
    this.checkHyper(group, `group ${gi}`);
    this.paramGroups.push(group);
  }

  /** Validate hyperparameters; subclasses extend with their own. */
  protected checkHyper(h: H, where: string): void {
    finite(this.name, where, 'lr', h.lr, 0);
    finite(this.name, where, 'weightDecay', h.weightDecay, 0);
  }

  /** Update every parameter that has a gradient. */
  abstract step(): void;

  /** Set the learning rate of every group. */
  setLr(lr: number): void {
    finite(this.name, 'setLr', 'lr', lr, 0);
    for (const g of this.paramGroups) g.lr = lr;
  }

  /** The learning rate of each group. */
  getLr(): number[] {
    return this.paramGroups.map((g) => g.lr);
  }

  /** Free every parameter's gradient (PyTorch's zero_grad(set_to_none=True)). */
  zeroGrad(): void {
    for (const g of this.paramGroups) {
      for (const p of g.params) {
        if (p.grad) {
          p.grad.dispose();
          p.grad = null;
        }
      }
    }
  }

  /** The decay this parameter gets in this group. */
  protected decayFor(group: ParamGroup<H>, p: Tensor): number {
    return group.weightDecayFilter === 'all' || p.ndim >= 2 ? group.weightDecay : 0;
  }

  /** Checks before a kernel touches p and its gradient; returns the gradient. */
  protected gradOf(p: Tensor, gi: number, i: number): Tensor | null {
    const g = p.grad;
    if (!g) return null;
    p._h(`${this.name}.step`);
    if (g.dtype !== 'f32' || g.size !== p.size) {
      throw new Error(`${this.name}.step: parameter ${i} of group ${gi} ${shapeStr(p.shape)} has a gradient ` +
        `${shapeStr(g.shape)} ${g.dtype}; expected f32 of the same shape`);
    }
    return g;
  }

  /** A zero f32 state tensor shaped like p, kept out of tidy() scopes. */
  protected zerosState(p: Tensor): Tensor {
    return Tensor._empty(p.shape, 'f32', p.device, true).keep();
  }

  /**
   * The state in PyTorch's layout: `state[i]` for the i-th parameter across the groups in order, and each
   * group's hyperparameters with `params` as indices. The tensors are the live state (no copy).
   */
  stateDict(): OptimizerStateDict {
    const state: Record<number, ParamState> = {};
    const paramGroups: OptimizerStateDict['paramGroups'] = [];
    let idx = 0;
    for (const g of this.paramGroups) {
      const { params, ...hyper } = g;
      const ids: number[] = [];
      for (const p of params) {
        const s = this.state.get(p);
        if (s) state[idx] = { ...s };
        ids.push(idx++);
      }
      paramGroups.push({ ...JSON.parse(JSON.stringify(hyper)), params: ids });
    }
    return { state, paramGroups };
  }

  /**
   * Restore a state dict from an optimizer over parameters of the same shapes in the same groups. Hyperparameters
   * (lr included) come from the state dict, as in PyTorch. State tensors are copied, so the source may be
   * disposed afterwards. Everything is checked before anything changes.
   */
  loadStateDict(sd: OptimizerStateDict): void {
    const n = this.name;
    if (!sd || typeof sd !== 'object' || !Array.isArray(sd.paramGroups) || !sd.state || typeof sd.state !== 'object') {
      throw new TypeError(`${n}.loadStateDict: expected { state, paramGroups }`);
    }
    if (sd.paramGroups.length !== this.paramGroups.length) {
      throw new Error(`${n}.loadStateDict: the state dict has ${sd.paramGroups.length} parameter groups, this optimizer ${this.paramGroups.length}`);
    }
    const byIndex = new Map<number, Tensor>();
    sd.paramGroups.forEach((sg, gi) => {
      const mine = this.paramGroups[gi].params;
      if (!Array.isArray(sg.params) || sg.params.length !== mine.length) {
        throw new Error(`${n}.loadStateDict: group ${gi} has ${Array.isArray(sg.params) ? sg.params.length : '?'} parameters in the state dict, ${mine.length} here`);
      }
      sg.params.forEach((id, i) => byIndex.set(id, mine[i]));
    });
    const problems: string[] = [];
    const next = new Map<Tensor, ParamState>();
    for (const [key, st] of Object.entries(sd.state)) {
      const p = byIndex.get(Number(key));
      if (!p) { problems.push(`state for parameter ${key}, which no group lists`); continue; }
      if (!st || typeof st !== 'object') { problems.push(`state ${key} is not an object`); continue; }
      for (const [k, v] of Object.entries(st)) {
        if (v instanceof Tensor) {
          if (v.isDisposed) problems.push(`state ${key}.${k} was disposed`);
          else if (v.dtype !== 'f32' || v.size !== p.size || v.shape.some((d, j) => d !== p.shape[j]) || v.ndim !== p.ndim) {
            problems.push(`state ${key}.${k} is ${shapeStr(v.shape)} ${v.dtype}, the parameter ${shapeStr(p.shape)} f32`);
          }
        } else if (typeof v !== 'number' || !Number.isFinite(v)) {
          problems.push(`state ${key}.${k} must be a tensor or a finite number`);
        }
      }
      next.set(p, st);
    }
    const groups = sd.paramGroups.map((sg, gi) => {
      const { params: _, ...hyper } = sg;
      const g = { ...this.paramGroups[gi], ...hyper } as ParamGroup<H>;
      try { this.checkHyper(g, `group ${gi}`); } catch (e) { problems.push((e as Error).message); }
      return g;
    });
    if (problems.length) throw new Error(`${n}.loadStateDict: ${problems.length} problem(s), nothing was changed:\n  ${problems.join('\n  ')}`);

    const b = binding();
    const copied = new Map<Tensor, ParamState>();
    for (const [p, st] of next) {
      const s: ParamState = {};
      for (const [k, v] of Object.entries(st)) {
        if (v instanceof Tensor) {
          const t = Tensor._empty(v.shape, 'f32', p.device).keep();
          b.copy(t._h('loadStateDict'), 0, v._h('loadStateDict'), v._offset * 4, v.size * 4);
          s[k] = t;
        } else {
          s[k] = v;
        }
      }
      copied.set(p, s);
    }
    this.disposeState();
    for (const [p, s] of copied) this.state.set(p, s);
    groups.forEach((g, gi) => { Object.assign(this.paramGroups[gi], g, { params: this.paramGroups[gi].params }); });
  }

  /** Free the state tensors (moments, momentum buffers). The optimizer starts fresh afterwards. */
  dispose(): void {
    this.disposeState();
  }

  private disposeState(): void {
    for (const s of this.state.values()) for (const v of Object.values(s)) if (v instanceof Tensor) v.dispose();
    this.state.clear();
  }
}

export function finite(op: string, where: string, name: string, x: unknown, min: number, max = Infinity, maxOpen = false): number {
  if (typeof x !== 'number' || !Number.isFinite(x) || x < min || x > max || (maxOpen && x === max)) {
    const range = `[${min}, ${max === Infinity ? 'inf' : max}${maxOpen ? ')' : ']'}`;
    throw new RangeError(`${op}: ${where}: ${name} must be a finite number in ${range}, got ${describe(x)}`);
  }
  return x;
}

const PREFIX = 'optim.';

/**
 * Flatten an optimizer state dict for ml.save: tensors named 'optim.state.<i>.<key>', numbers and the groups
 * as JSON in the metadata. The prefix lets one file hold a model and its optimizer.
 */
export function toSafetensors(sd: OptimizerStateDict): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  if (sd === null || typeof sd !== 'object' || typeof sd.state !== 'object' || sd.state === null || !Array.isArray(sd.paramGroups)) {
    throw new TypeError('toSafetensors: expected an optimizer state dict { state, paramGroups } (from opt.stateDict())');
  }
  const tensors: Record<string, Tensor> = {};
  const scalars: Record<string, Record<string, number>> = {};
  for (const [i, st] of Object.entries(sd.state)) {
    for (const [k, v] of Object.entries(st)) {
      if (v instanceof Tensor) tensors[`${PREFIX}state.${i}.${k}`] = v;
      else (scalars[i] ??= {})[k] = v;
    }
  }
  return {
    tensors,
    metadata: { [`${PREFIX}scalars`]: JSON.stringify(scalars), [`${PREFIX}paramGroups`]: JSON.stringify(sd.paramGroups) },
  };
}

/** The inverse of toSafetensors, from what ml.load returns (other tensors in the file are ignored). */
export function fromSafetensors(file: { tensors: Record<string, Tensor>; metadata: Record<string, string> }): OptimizerStateDict {
  if (file === null || typeof file !== 'object' || ArrayBuffer.isView(file)) {
    throw new TypeError('fromSafetensors: expected what ml.load returns ({ tensors, metadata })');
  }
  const md = file.metadata ?? {};
  if (!(`${PREFIX}paramGroups` in md) || !(`${PREFIX}scalars` in md)) {
    throw new Error(`fromSafetensors: the metadata has no '${PREFIX}paramGroups' / '${PREFIX}scalars' (not written by optim.toSafetensors?)`);
  }
  let paramGroups: OptimizerStateDict['paramGroups'];
  let scalars: Record<string, Record<string, number>>;
  try {
    paramGroups = JSON.parse(md[`${PREFIX}paramGroups`]);
    scalars = JSON.parse(md[`${PREFIX}scalars`]);
  } catch (e) {
    throw new Error(`fromSafetensors: invalid JSON in the optimizer metadata: ${(e as Error).message}`);
  }
  const state: Record<number, ParamState> = {};
  for (const [i, st] of Object.entries(scalars)) state[Number(i)] = { ...st };
  for (const [name, t] of Object.entries(file.tensors)) {
    const m = /^optim\.state\.(\d+)\.(.+)$/.exec(name);
    if (!m) continue;
    (state[Number(m[1])] ??= {})[m[2]] = t;
  }
  return { state, paramGroups };
}
