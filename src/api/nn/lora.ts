/**
 * LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021): a frozen Linear W plus a
 * trainable low-rank update, y = x W^T + b + (dropout(x) A^T B^T) * (alpha / rank)   (section 4.1, eq. 3)
 * with A [rank, in] and B [out, rank]. B starts at zero, so a freshly wrapped model computes exactly what the
 * base model computes, and training moves only A and B (rank * (in + out) numbers per layer).
 *
 * ```ts
 * const names = ml.nn.applyLora(model, { rank: 8, alpha: 16, dropout: 0.05, targets: ['attn.qkv', 'attn.proj'] });
 * const opt = new ml.optim.AdamW(model.parameters().filter((p) => p.requiresGrad), { lr: 1e-3 });
 * // ... train ...
 * ml.save('adapter.safetensors', ml.nn.loraStateDict(model), { lora: JSON.stringify({ rank: 8, alpha: 16 }) });
 * ml.nn.mergeLora(model);   // plain Linears again, W + B A * alpha / rank folded in, for export
 * ```
 *
 * Names (docs/lora.md): a wrapped layer keeps its base parameters under their old names (`<name>.weight`,
 * `<name>.bias`), so a base checkpoint loads into a LoRA model and a merged model has exactly the base's names;
 * the adapter is `<name>.lora_A.weight` [rank, in] and `<name>.lora_B.weight` [out, rank], the names PEFT writes
 * in its adapter files. (PEFT >= 0.7 moves the live base weight to `<name>.base_layer.weight`; keeping the old
 * name here is what lets merge hand back the untouched Linear.)
 */
import { noGrad } from '../autograd';
import { zeros } from '../creation';
import { cast } from '../ops/cast';
import { add, mul } from '../ops/elementwise';
import { matmul } from '../ops/matmul';
import { checkNumber, checkTensor, describe } from '../ops/util';
import { Tensor } from '../tensor';
import { Dropout } from './dropout';
import { Linear } from './linear';
import { Module, StateDict } from './module';

export interface LoRAOptions {
  /** The rank r of the update B A (an integer >= 1). */
  rank: number;
  /** The update is scaled by alpha / rank. Default: rank (scale 1). */
  alpha?: number;
  /** Dropout probability on the LoRA branch's input (the base path sees x itself), in [0, 1). Default 0. */
  dropout?: number;
}

export interface ApplyLoraOptions extends LoRAOptions {
  /**
   * Which Linear layers to wrap, by dotted module name (as in namedModules()). A string matches a name equal to
   * it or ending in '.' + it ('attn.qkv' matches 'blocks.0.attn.qkv'); a RegExp matches when it finds a match
   * anywhere in the name (anchor it with ^ and $ to match whole names). Only Linear layers are wrapped; every
   * target must match at least one.
   */
  targets: ReadonlyArray<string | RegExp>;
  /**
   * Default true: afterwards only LoRA parameters (every lora_A / lora_B in the model) require grad; every other
   * parameter of the model is frozen. With false, parameters outside the wrapped layers keep their requiresGrad
   * (so a projector or a head can train beside the adapters). The base weight and bias of a wrapped layer are
   * frozen either way.
   */
  freezeBase?: boolean;
}

/**
 * A Linear with a low-rank adapter: forward(x) = base(x) + lora_B(lora_A(dropout(x))) * (alpha / rank).
 *
 * The base layer's weight and bias are registered here under their own names ('weight', 'bias': the same tensors,
 * not copies) and frozen (requiresGrad false). lora_A and lora_B are bias-free Linears: A [rank, in] initialised
 * as a Linear is (kaiming-uniform with a = sqrt(5), bound 1/sqrt(in), as PEFT does), B [out, rank] zeros, so the
 * wrapped layer starts equal to the base. It has Linear's fields (inFeatures, outFeatures, weight, bias), so code
 * typed against a Linear field keeps working; note that code reading `.weight` directly (MultiheadAttention's
 * cross-attention path) sees only the base weight, not the adapter.
 */
export class LoRALinear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** The base weight [out, in], frozen. */
  weight: Tensor<'f32'>;
  /** The base bias [out] (or null), frozen. */
  bias: Tensor<'f32'> | null;
  /** A [rank, in] in lora_A.weight. */
  lora_A: Linear;
  /** B [out, rank] in lora_B.weight, zeros at first. */
  lora_B: Linear;
  lora_dropout: Dropout;
  readonly rank: number;
  readonly alpha: number;
  /** alpha / rank. */
  readonly scaling: number;
  /** The wrapped module itself, handed back (with the merged weight) by merge(). Not part of the tree. */
  private _base: Linear;
  private _merged = false;

  constructor(base: Linear, opts: LoRAOptions) {
    super();
    const op = 'LoRALinear';
    if (!(base instanceof Linear)) {
      const b: unknown = base;
      throw new TypeError(`${op}: base must be an nn.Linear, got ${b instanceof Module ? b.constructor.name : describe(b)}`);
    }
    if (opts === null || typeof opts !== 'object') throw new TypeError(`${op}: options must be an object { rank, alpha?, dropout? }, got ${describe(opts)}`);
    const { rank, alpha, dropout } = checkLoraOptions(op, opts);
    checkTensor(op, 'base.weight', base.weight);
    this._base = base;
    this.inFeatures = base.inFeatures;
    this.outFeatures = base.outFeatures;
    this.rank = rank;
    this.alpha = alpha;
    this.scaling = alpha / rank;
    this.weight = this.registerParameter('weight', base.weight, { requiresGrad: false });
    this.bias = this.registerParameter('bias', base.bias, { requiresGrad: false });
    const device = base.weight.device;
    this.lora_A = this.registerModule('lora_A', new Linear(this.inFeatures, rank, { bias: false }));
    this.lora_B = this.registerModule('lora_B', new Linear(rank, this.outFeatures, { bias: false }));
    noGrad(() => {
      // B = 0 (PEFT's init): the update B A is zero until the first step.
      const b0 = this.lora_B.weight;
      this.lora_B.weight = this.lora_B.registerParameter('weight', zeros([this.outFeatures, rank], { device }));
      b0.dispose();
      if (device !== 'cpu') {
        const a0 = this.lora_A.weight;
        this.lora_A.weight = this.lora_A.registerParameter('weight', a0.to(device) as Tensor<'f32'>);
        a0.dispose();
      }
    });
    this.lora_dropout = this.registerModule('lora_dropout', new Dropout(dropout));
    this.train(base.training);
  }

  /** x [..., inFeatures] -> [..., outFeatures] */
  forward(x: Tensor): Tensor<'f32'> {
    if (this._merged) throw new Error('LoRALinear: this layer was merged into its base Linear (mergeLora / merge()); use the Linear that replaced it');
    // The base path is Linear's own forward on the shared weight and bias (same checks, same GEMM).
    const y = Linear.prototype.forward.call(this, x);
    const d = this.lora_dropout.forward(x);
    const a = this.lora_A.forward(d);
    if (d !== x) d.dispose();
    let u = this.lora_B.forward(a);
    a.dispose();
    if (this.scaling !== 1) {
      const s = mul(u, this.scaling);
      u.dispose();
      u = s;
    }
    const out = add(y, u);
    y.dispose();
    u.dispose();
    return out;
  }

  /**
   * Fold the adapter into the base weight, in place: W <- W + (B A) * (alpha / rank), computed in float32 and
   * rounded once to W's dtype. Frees A and B and returns the original Linear (its weight now merged, still
   * frozen); this module cannot be used afterwards. mergeLora(model) does this for every layer and puts the
   * Linear back in the tree.
   */
  merge(): Linear {
    if (this._merged) throw new Error('LoRALinear.merge: this layer was already merged');
    const w = this.weight;
    noGrad(() => {
      const ba = matmul(this.lora_B.weight, this.lora_A.weight);   // [out, rank] @ [rank, in]
      const delta = this.scaling === 1 ? ba : mul(ba, this.scaling);
      const sum = add(w, delta);
      const merged = sum.dtype === w.dtype ? sum : cast(sum, w.dtype);
      // loadStateDict copies into the live tensor: whoever holds W (an optimizer, a tie) sees the merged values.
      this.loadStateDict({ weight: merged }, { strict: false });
      for (const t of new Set([ba, delta, sum, merged])) t.dispose();
    });
    this.lora_A.dispose();
    this.lora_B.dispose();
    this._merged = true;
    const base = this._base;
    base.weight = w;
    base.bias = this.bias;
    base.training = this.training;
    return base;
  }

  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, bias=${this.bias !== null}, ` +
      `rank=${this.rank}, alpha=${this.alpha}` + (this.lora_dropout.p ? `, dropout=${this.lora_dropout.p}` : '');
  }
}

function checkLoraOptions(op: string, opts: LoRAOptions): { rank: number; alpha: number; dropout: number } {
  const rank = checkNumber(op, 'rank', opts.rank, { integer: true, min: 1 });
  const alpha = checkNumber(op, 'alpha', opts.alpha ?? rank);
  if (!(alpha > 0) || !Number.isFinite(alpha)) throw new RangeError(`${op}: alpha must be a finite number > 0, got ${alpha}`);
  const dropout = checkNumber(op, 'dropout', opts.dropout ?? 0, { min: 0, max: 1 });
  if (dropout >= 1) throw new RangeError(`${op}: dropout must be in [0, 1), got ${dropout} (1 would drop the whole branch)`);
  return { rank, alpha, dropout };
}

function checkModel(op: string, model: unknown): asserts model is Module {
  if (!(model instanceof Module)) throw new TypeError(`${op}: model must be an nn.Module, got ${describe(model)}`);
}

/** Every (parent, key) in the tree whose registered child is `child` (a shared module has several). */
function parentsOf(model: Module, child: Module): Array<[Module, string]> {
  const out: Array<[Module, string]> = [];
  for (const m of model.modules()) for (const [k, c] of m.namedChildren()) if (c === child) out.push([m, k]);
  return out;
}

/** LoRA layers of the tree, with their names (nothing inside a LoRALinear is listed). */
function loraLayers(model: Module): Array<[string, LoRALinear]> {
  return model.namedModules().filter((e): e is [string, LoRALinear] => e[1] instanceof LoRALinear);
}

function matches(target: string | RegExp, name: string): boolean {
  if (typeof target === 'string') return name === target || name.endsWith(`.${target}`);
  target.lastIndex = 0;   // a /g or /y RegExp keeps state between test() calls
  return target.test(name);
}

const showTarget = (t: string | RegExp): string => (typeof t === 'string' ? `'${t}'` : String(t));

/**
 * Wrap every Linear of `model` whose dotted name matches one of `opts.targets` in a LoRALinear, in place, and
 * return the wrapped names in tree order. Checks everything before changing anything: a target that matches
 * no Linear, a target that matches a layer that already has LoRA, or bad rank / alpha / dropout throw and leave
 * the model as it was. The root module itself cannot be wrapped (wrap it with `new LoRALinear(linear, ...)`).
 * See ApplyLoraOptions.freezeBase for which parameters stay trainable.
 */
export function applyLora(model: Module, opts: ApplyLoraOptions): string[] {
  const op = 'applyLora';
  checkModel(op, model);
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${op}: options must be an object { rank, alpha?, dropout?, targets, freezeBase? }, got ${describe(opts)}`);
  const lora = checkLoraOptions(op, opts);
  const targets = opts.targets;
  if (!Array.isArray(targets) || targets.length === 0) {
    throw new TypeError(`${op}: targets must be a non-empty array of module names or RegExps (e.g. ['attn.qkv', /mlp\\.layers\\.\\d+$/]), got ${describe(targets)}`);
  }
  targets.forEach((t, i) => {
    if (!(t instanceof RegExp) && (typeof t !== 'string' || t === '')) throw new TypeError(`${op}: targets[${i}] must be a non-empty string or a RegExp, got ${describe(t)}`);
  });
  const freezeBase = opts.freezeBase ?? true;
  if (typeof freezeBase !== 'boolean') throw new TypeError(`${op}: freezeBase must be a boolean, got ${describe(freezeBase)}`);

  // Candidates: named modules except the root and anything inside an existing LoRALinear (its lora_A / lora_B).
  const tree = model.namedModules();
  const all = tree.filter(([n]) => n !== '');
  const inside = tree.filter(([, m]) => m instanceof LoRALinear).map(([n]) => (n ? `${n}.` : ''));
  const named = all.filter(([n]) => !inside.some((p) => n.startsWith(p)));
  const chosen: Array<[string, Linear]> = [];
  const problems: string[] = [];
  for (const t of targets) {
    const hit = named.filter(([n]) => matches(t, n));
    const wrapped = hit.filter(([, m]) => m instanceof LoRALinear).map(([n]) => n);
    const linears = hit.filter((e): e is [string, Linear] => e[1] instanceof Linear);
    if (wrapped.length) problems.push(`target ${showTarget(t)} matches ${wrapped.map((n) => `'${n}'`).join(', ')}, which already ha${wrapped.length > 1 ? 've' : 's'} LoRA (applyLora was applied twice; mergeLora first to stack a new adapter)`);
    else if (linears.length === 0) {
      const others = hit.map(([n, m]) => `'${n}' (${m.constructor.name})`);
      problems.push(`target ${showTarget(t)} matches no Linear layer` +
        (others.length ? `; it matches ${others.slice(0, 4).join(', ')}${others.length > 4 ? ', ...' : ''}, which ${others.length > 1 ? 'are' : 'is'} not a Linear` : ''));
    }
    for (const e of linears) if (!chosen.some(([, m]) => m === e[1])) chosen.push(e);
  }
  if (problems.length) {
    const lin = named.filter(([, m]) => m instanceof Linear).map(([n]) => n);
    throw new Error(`${op}: ${problems.join('; ')}. Nothing was changed. The model's Linear layers: ` +
      (lin.length ? lin.slice(0, 12).join(', ') + (lin.length > 12 ? `, ... (${lin.length} in all)` : '') : 'none'));
  }

  for (const [n, linear] of chosen) {
    checkTensor(op, `${n}.weight`, linear.weight);
    if (linear.bias !== null) checkTensor(op, `${n}.bias`, linear.bias);
  }
  chosen.sort((a, b) => all.findIndex(([n]) => n === a[0]) - all.findIndex(([n]) => n === b[0]));
  for (const [, linear] of chosen) {
    const wrapped = new LoRALinear(linear, lora);
    for (const [parent, key] of parentsOf(model, linear)) parent.registerModule(key, wrapped);   // re-registering replaces
  }
  if (freezeBase) model.requiresGrad_(false);
  for (const [, m] of loraLayers(model)) {
    m.lora_A.requiresGrad_(true);
    m.lora_B.requiresGrad_(true);
  }
  return chosen.map(([n]) => n);
}

/**
 * Fold every LoRA layer of `model` into its base weight (LoRALinear.merge) and put the base Linear back in its
 * place, so the model has plain Linears and exactly its original parameter names again. Returns the merged
 * names. Throws, changing nothing, when the model has no LoRA layer or when a merged weight is shared with a
 * parameter outside its layer (a tied weight: merging in place would change the other user too).
 */
export function mergeLora(model: Module): string[] {
  const op = 'mergeLora';
  checkModel(op, model);
  if (model instanceof LoRALinear) throw new Error(`${op}: the model itself is a LoRALinear; call its merge(), which returns the merged Linear`);
  const layers = loraLayers(model);
  if (layers.length === 0) throw new Error(`${op}: the model (${model.constructor.name}) has no LoRA layers (applyLora was not called, or they were already merged)`);
  const sd = model.stateDict();
  const namesOf = new Map<Tensor, string[]>();
  for (const [k, t] of Object.entries(sd)) namesOf.set(t, [...(namesOf.get(t) ?? []), k]);
  const problems: string[] = [];
  for (const [name, m] of layers) {
    const others = (namesOf.get(m.weight) ?? []).filter((k) => !k.startsWith(`${name}.`));
    if (others.length) problems.push(`'${name}.weight' is tied to ${others.map((k) => `'${k}'`).join(', ')}`);
  }
  for (const [name, m] of layers) {
    const p = name ? `${name}.` : '';
    checkTensor(op, `${p}weight`, m.weight);
    checkTensor(op, `${p}lora_A.weight`, m.lora_A.weight);
    checkTensor(op, `${p}lora_B.weight`, m.lora_B.weight);
  }
  if (problems.length) {
    throw new Error(`${op}: ${problems.join('; ')}: merging in place would change the tied parameter too. Nothing was changed; untie the weight first (or leave that layer unmerged)`);
  }
  for (const [, m] of layers) {
    const parents = parentsOf(model, m);
    const base = m.merge();
    for (const [parent, key] of parents) parent.registerModule(key, base);
  }
  return layers.map(([n]) => n);
}

/**
 * Only the adapter tensors: `<name>.lora_A.weight` and `<name>.lora_B.weight` for every LoRA layer, the same
 * names (and the same live tensors, no copies) as in model.stateDict(). Save it for a small adapter checkpoint;
 * rank and alpha are not in it (store them in the file's metadata). Throws when the model has no LoRA layers.
 */
export function loraStateDict(model: Module): StateDict {
  const op = 'loraStateDict';
  checkModel(op, model);
  const layers = loraLayers(model);
  if (layers.length === 0) throw new Error(`${op}: the model (${model.constructor.name}) has no LoRA layers (call applyLora first)`);
  const out: StateDict = {};
  for (const [name, m] of layers) {
    const p = name ? `${name}.` : '';
    out[`${p}lora_A.weight`] = m.lora_A.weight;
    out[`${p}lora_B.weight`] = m.lora_B.weight;
  }
  return out;
}

/**
 * Load an adapter (from loraStateDict, or a file of those names) into a model that has the same LoRA layers
 * (applyLora with the same targets and rank): copies in place. The names must be exactly the model's adapter
 * names: a missing or unexpected name (a base weight: load those with model.loadStateDict), or a shape that
 * differs (another rank), throws and changes nothing.
 */
export function loadLoraStateDict(model: Module, sd: StateDict | Map<string, Tensor>): void {
  const op = 'loadLoraStateDict';
  checkModel(op, model);
  if (sd === null || typeof sd !== 'object') throw new TypeError(`${op}: expected a Record or Map of tensors, got ${describe(sd)}`);
  const own = loraStateDict(model);
  const given = sd instanceof Map ? [...sd.keys()] : Object.keys(sd);
  const missing = Object.keys(own).filter((k) => !given.includes(k));
  const unexpected = given.filter((k) => !Object.prototype.hasOwnProperty.call(own, k));
  if (missing.length || unexpected.length) {
    const parts: string[] = [];
    if (missing.length) parts.push(`missing ${missing.map((k) => `'${k}'`).join(', ')}`);
    if (unexpected.length) parts.push(`unexpected ${unexpected.map((k) => `'${k}'`).join(', ')} (not a LoRA tensor of this model; base weights load with model.loadStateDict)`);
    throw new Error(`${op}: the adapter does not fit the model's LoRA layers: ${parts.join('; ')}. Nothing was changed`);
  }
  try {
    model.loadStateDict(sd, { strict: false });
  } catch (e) {
    throw new Error(`${op}: ${(e as Error).message}${/shape/.test((e as Error).message) ? '\n(a different shape usually means another rank)' : ''}`);
  }
}
