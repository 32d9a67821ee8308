/**
 * nn.Module: a tree of modules that own parameters and buffers, with PyTorch's names and semantics.
 *
 * ```ts
 * class Net extends ml.nn.Module {
 *   fc1 = this.registerModule('fc1', new ml.nn.Linear(8, 32));
 *   fc2 = this.registerModule('fc2', new ml.nn.Linear(32, 2));
 *   forward(x: ml.Tensor) { return this.fc2.forward(this.fc1.forward(x).gelu()); }
 * }
 * const net = new Net();
 * [...net.namedParameters()].map(([n]) => n);  // ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']
 * ml.save('net.safetensors', net.stateDict());
 * ```
 *
 * Registration is explicit (`registerParameter`, `registerBuffer`, `registerModule`) and the field of the same
 * name is the single source of truth: the registry only remembers names, kinds and order, and every traversal
 * reads `this[name]`. So reassigning a registered field (`head.weight = embed.weight`, weight tying) is seen
 * everywhere, and names come out in registration order, deterministically.
 *
 * Explicit beats scanning fields because a module also holds tensors that are not state (a KV cache, a cached
 * mask). To keep explicit registration from failing silently, every traversal from the root checks the fields
 * of each module: a Module, an array of Modules, or a trainable leaf tensor in a field that is not part of the
 * registered tree throws an error naming the field (prefix a field with `_` to hold an unregistered one on
 * purpose).
 */
import { binding } from '../binding';
import { Device, dtypeSize, isDevice, isFloat } from '../dtype';
import { noGrad } from '../autograd';
import { Tensor, shapeStr } from '../tensor';

type Kind = 'parameter' | 'buffer' | 'module';

interface Entry {
  kind: Kind;
  /** Buffers only: whether it belongs to the state dict. */
  persistent: boolean;
}

export interface RegisterParameterOptions {
  /** Default true (like nn.Parameter); false registers a frozen parameter. */
  requiresGrad?: boolean;
}

export interface RegisterBufferOptions {
  /** Default true: the buffer is part of stateDict(). */
  persistent?: boolean;
}

export interface LoadStateDictOptions {
  /** Default true: missing and unexpected names are errors. Shape and dtype mismatches are errors either way. */
  strict?: boolean;
}

export interface LoadStateDictResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

export type StateDict = Record<string, Tensor>;

const RESERVED = new Set(['training', '_registry', 'constructor', '__proto__', 'prototype']);

export abstract class Module {
  /** Train mode (dropout active). Set with train() / eval(), which propagate to every child. */
  training = true;
  /** @internal name -> kind, in registration order; the values live in the fields of the same names. */
  private readonly _registry = new Map<string, Entry>();

  /** The computation. Subclasses narrow the signature, e.g. `forward(x: Tensor): Tensor<'f32'>`. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  abstract forward(...args: any[]): any;

  /** Alias of forward (PyTorch's `module(x)`). */
  call(...args: Parameters<this['forward']>): ReturnType<this['forward']> {
    return this.forward(...args);
  }

  // ------------------------------------------------------------------------------------------- registration

  /**
   * Register a parameter (or null, for an absent optional parameter such as a bias) under `name` and store
   * it in `this[name]`. The tensor must be a float leaf; it is set to require grad (unless
   * `{ requiresGrad: false }`) and kept out of tidy() scopes, so a model built inside tidy() survives it.
   * Returns the tensor, for `weight = this.registerParameter('weight', ...)`.
   */
  registerParameter<T extends Tensor | null>(name: string, t: T, opts: RegisterParameterOptions = {}): T {
    this._checkName('registerParameter', name, 'parameter', t);
    if (t !== null) {
      if (!(t instanceof Tensor)) throw new TypeError(`${this._cls()}.registerParameter('${name}'): expected a Tensor or null, got ${typeof t}`);
      if (t.isDisposed) throw new Error(`${this._cls()}.registerParameter('${name}'): the tensor was disposed`);
      if (!isFloat(t.dtype)) throw new TypeError(`${this._cls()}.registerParameter('${name}'): parameters must be float tensors, got ${t.dtype} ${shapeStr(t.shape)}`);
      if (t._node) {
        throw new Error(`${this._cls()}.registerParameter('${name}'): the tensor ${shapeStr(t.shape)} is not a leaf ` +
          `(it was computed by '${t._node.op}', so gradients would never reach it); create it under ml.noGrad() ` +
          'or pass t.detach()');
      }
      t.requiresGrad_(opts.requiresGrad ?? true);
      t.keep();
    }
    this._set(name, t, { kind: 'parameter', persistent: true });
    return t;
  }

  /**
   * Register a buffer: state that is not trained (running statistics, a fixed positional table). Persistent
   * buffers are part of stateDict(); none is returned by parameters().
   */
  registerBuffer<T extends Tensor | null>(name: string, t: T, opts: RegisterBufferOptions = {}): T {
    this._checkName('registerBuffer', name, 'buffer', t);
    if (t !== null) {
      if (!(t instanceof Tensor)) throw new TypeError(`${this._cls()}.registerBuffer('${name}'): expected a Tensor or null, got ${typeof t}`);
      if (t.isDisposed) throw new Error(`${this._cls()}.registerBuffer('${name}'): the tensor was disposed`);
      t.keep();
    }
    this._set(name, t, { kind: 'buffer', persistent: opts.persistent ?? true });
    return t;
  }

  /** Register a child module under `name` (its parameters are named `name.<...>`). Returns the module. */
  registerModule<M extends Module | null>(name: string, m: M): M {
    this._checkName('registerModule', name, 'module', m);
    if (m !== null && !(m instanceof Module)) {
      throw new TypeError(`${this._cls()}.registerModule('${name}'): expected a Module or null, got ${typeof m}`);
    }
    if ((m as unknown) === this) throw new Error(`${this._cls()}.registerModule('${name}'): a module cannot contain itself`);
    this._set(name, m, { kind: 'module', persistent: true });
    return m;
  }

  private _checkName(fn: string, name: unknown, kind: Kind, value: unknown): void {
    if (typeof name !== 'string' || name === '') throw new TypeError(`${this._cls()}.${fn}: name must be a non-empty string, got ${JSON.stringify(name)}`);
    if (name.includes('.')) throw new Error(`${this._cls()}.${fn}('${name}'): names must not contain '.' (dots separate the levels of the tree)`);
    if (RESERVED.has(name)) throw new Error(`${this._cls()}.${fn}('${name}'): '${name}' is reserved`);
    const prev = this._registry.get(name);
    if (prev) {
      if (prev.kind !== kind) throw new Error(`${this._cls()}.${fn}('${name}'): '${name}' is already registered as a ${prev.kind}`);
      return;
    }
    const self = this as unknown as Record<string, unknown>;
    if (name in this && !Object.prototype.hasOwnProperty.call(this, name)) {
      throw new Error(`${this._cls()}.${fn}('${name}'): '${name}' would hide the method or property of the same name`);
    }
    // A field declared before registration (`weight!: Tensor`) is own and undefined; that is fine.
    if (Object.prototype.hasOwnProperty.call(this, name) && self[name] !== undefined && self[name] !== value) {
      throw new Error(`${this._cls()}.${fn}('${name}'): the field '${name}' already holds another value`);
    }
  }

  private _set(name: string, value: unknown, entry: Entry): void {
    this._registry.set(name, entry);
    (this as unknown as Record<string, unknown>)[name] = value;
  }

  /** @internal the registered value of `name`, checked against its kind (fields can be reassigned). */
  private _value(name: string, entry: Entry): Tensor | Module | null {
    const v = (this as unknown as Record<string, unknown>)[name];
    if (v === null) return null;
    if (v === undefined) {
      throw new Error(`${this._cls()}: the registered ${entry.kind} '${name}' is undefined (was the field redeclared ` +
        'in a subclass without an initialiser? Declare it with `declare` instead)');
    }
    const ok = entry.kind === 'module' ? v instanceof Module : v instanceof Tensor;
    if (!ok) {
      throw new Error(`${this._cls()}: the registered ${entry.kind} '${name}' now holds ` +
        `${v instanceof Tensor ? 'a Tensor' : v instanceof Module ? `a ${v.constructor.name}` : `a ${typeof v}`}`);
    }
    return v as Tensor | Module;
  }

  private _cls(): string {
    return this.constructor.name || 'Module';
  }

  // ------------------------------------------------------------------------------------------- traversal

  /** Direct children, in registration order. */
  *namedChildren(): IterableIterator<[string, Module]> {
    for (const [name, e] of this._registry) {
      if (e.kind !== 'module') continue;
      const m = this._value(name, e);
      if (m) yield [name, m as Module];
    }
  }

  *children(): IterableIterator<Module> {
    for (const [, m] of this.namedChildren()) yield m;
  }

  /**
   * Every module of the tree, this one first ('' is its name), depth first in registration order. A module
   * reachable by two paths is listed once, under the first.
   */
  namedModules(prefix = ''): Array<[string, Module]> {
    const out = walk(this, prefix, true);
    checkFields(out.map(([, m]) => m));
    return out;
  }

  modules(): Module[] {
    return this.namedModules().map(([, m]) => m);
  }

  /**
   * Parameters with dotted names ('blocks.0.attn.qkv.weight'), depth first in registration order. A tensor
   * shared by two modules (tied weights) is listed once, under its first name, as in PyTorch.
   */
  namedParameters(prefix = ''): Array<[string, Tensor]> {
    return this._namedTensors(prefix, 'parameter', true);
  }

  /** The trainable state, each tensor once: what an optimizer takes. */
  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  namedBuffers(prefix = ''): Array<[string, Tensor]> {
    return this._namedTensors(prefix, 'buffer', true);
  }

  buffers(): Tensor[] {
    return this.namedBuffers().map(([, t]) => t);
  }

  private _namedTensors(prefix: string, kind: Kind, dedupe: boolean): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    const seen = new Set<Tensor>();
    for (const [mname, m] of this.namedModules(prefix)) {
      for (const [name, e] of m._registry) {
        if (e.kind !== kind) continue;
        const t = m._value(name, e) as Tensor | null;
        if (!t || (dedupe && seen.has(t))) continue;
        seen.add(t);
        out.push([mname ? `${mname}.${name}` : name, t]);
      }
    }
    return out;
  }

  /** The number of parameter elements (each shared tensor counted once). */
  numParameters(opts: { trainableOnly?: boolean } = {}): number {
    let n = 0;
    for (const p of this.parameters()) if (!opts.trainableOnly || p.requiresGrad) n += p.size;
    return n;
  }

  /** Call fn on every module of the tree (this one first). Returns this. */
  apply(fn: (m: Module) => void): this {
    for (const m of this.modules()) fn(m);
    return this;
  }

  // ------------------------------------------------------------------------------------------- modes and grads

  /** Set train mode on this module and every descendant (dropout on). Returns this. */
  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }

  /** Eval mode (dropout off), for every descendant. Returns this. */
  eval(): this {
    return this.train(false);
  }

  /** Free every parameter's gradient (PyTorch's zero_grad(set_to_none=True)). */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      if (p.grad) {
        p.grad.dispose();
        p.grad = null;
      }
    }
  }

  /** Freeze (false) or unfreeze (true) every parameter. Returns this. */
  requiresGrad_(on = true): this {
    for (const p of this.parameters()) p.requiresGrad_(on);
    return this;
  }

  /**
   * Move every parameter and buffer to `device` (PyTorch's `module.to(device)`), in place: each tensor on another
   * device is replaced by its copy there (same requiresGrad; a tensor registered under several names, such as
   * tied embeddings, stays one tensor) and the original is freed. Gradients are dropped. Create optimizers after
   * moving the model, since they hold the tensors they were given. Returns this.
   */
  to(device: Device): this {
    if (!isDevice(device)) {
      throw new TypeError(`${this._cls()}.to: unknown device ${JSON.stringify(device)} (expected 'cpu' or 'cuda')`);
    }
    // Copy everything first and only then swap, so that a failure (out of memory) leaves the module as it was.
    const moved = new Map<Tensor, Tensor>();
    const slots: Array<[Module, string, Entry, Tensor]> = [];
    try {
      noGrad(() => {
        for (const [, m] of walk(this, '', true)) {
          for (const [name, e] of m._registry) {
            if (e.kind === 'module') continue;
            const t = m._value(name, e) as Tensor | null;
            if (t === null || t.device === device) continue;
            if (!moved.has(t)) {
              const n = t.to(device).keep();
              n.requiresGrad = t.requiresGrad;
              moved.set(t, n);
            }
            slots.push([m, name, e, t]);
          }
        }
      });
    } catch (err) {
      for (const n of moved.values()) n.dispose();
      throw new Error(`${this._cls()}.to('${device}'): ${(err as Error).message} (the module was left unchanged)`);
    }
    for (const [m, name, e, t] of slots) m._set(name, moved.get(t)!, e);
    for (const t of moved.keys()) t.dispose();
    return this;
  }

  /** Free every parameter and buffer now (and their gradients). The module is unusable afterwards. */
  dispose(): void {
    for (const t of [...this.parameters(), ...this.buffers()]) t.dispose();
  }

  // ------------------------------------------------------------------------------------------- state

  /**
   * Name -> tensor for every parameter and persistent buffer, in PyTorch's order (a module's own parameters,
   * its buffers, then its children's, depth first). These are the module's live tensors (no copy,
   * as PyTorch's state_dict shares storage): do not dispose them; clone() to snapshot. Tied tensors appear
   * under each of their names, as in PyTorch.
   */
  stateDict(): StateDict {
    const out: StateDict = {};
    const mods = walk(this, '', false);
    checkFields(mods.map(([, m]) => m));
    // PyTorch's order: each module's own parameters, then its persistent buffers, then its children.
    for (const [mname, m] of mods) {
      for (const kind of ['parameter', 'buffer'] as const) {
        for (const [name, e] of m._registry) {
          if (e.kind !== kind || !e.persistent) continue;
          const t = m._value(name, e) as Tensor | null;
          if (t) out[mname ? `${mname}.${name}` : name] = t;
        }
      }
    }
    return out;
  }

  /**
   * Copy tensors into this module's parameters and buffers (in place: optimizers holding the parameters keep
   * working). A tensor on another device is copied across (a CPU checkpoint into a GPU model). Every problem
   * (missing and unexpected names when strict, wrong shapes or dtypes, values that are not live tensors) is
   * reported in one error, and nothing is changed when it throws.
   */
  loadStateDict(sd: StateDict | Map<string, Tensor>, opts: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = opts.strict ?? true;
    const cls = this._cls();
    if (sd === null || typeof sd !== 'object') throw new TypeError(`loadStateDict: expected a Record or Map of tensors, got ${sd === null ? 'null' : typeof sd}`);
    const given: Array<[string, unknown]> = sd instanceof Map ? [...sd.entries()] : Object.entries(sd);
    const own = this.stateDict();
    const givenNames = new Set(given.map(([k]) => k));
    const missingKeys = Object.keys(own).filter((k) => !givenNames.has(k));
    const unexpectedKeys: string[] = [];
    const problems: string[] = [];
    const copies: Array<[Tensor, Tensor]> = [];
    for (const [name, v] of given) {
      const dst = Object.prototype.hasOwnProperty.call(own, name) ? own[name] : undefined;
      if (!dst) { unexpectedKeys.push(name); continue; }
      if (!(v instanceof Tensor)) { problems.push(`'${name}': expected a Tensor, got ${v === null ? 'null' : typeof v}`); continue; }
      if (v.isDisposed) { problems.push(`'${name}': the tensor was disposed`); continue; }
      const bad: string[] = [];
      if (v.shape.length !== dst.shape.length || v.shape.some((d, i) => d !== dst.shape[i])) {
        bad.push(`shape ${shapeStr(v.shape)} in the state dict, ${shapeStr(dst.shape)} in the model`);
      }
      if (v.dtype !== dst.dtype) bad.push(`dtype ${v.dtype} in the state dict, ${dst.dtype} in the model (cast it first)`);
      if (bad.length) problems.push(`'${name}': ${bad.join('; ')}`);
      else copies.push([dst, v]);
    }
    if (strict) {
      for (const k of missingKeys) problems.unshift(`missing '${k}' (${shapeStr(own[k].shape)} ${own[k].dtype})`);
      for (const k of unexpectedKeys) problems.push(`unexpected '${k}' (the model has no such parameter or buffer)`);
    }
    if (problems.length) {
      throw new Error(`loadStateDict: ${problems.length} problem${problems.length > 1 ? 's' : ''} loading into ${cls} ` +
        `(nothing was changed):\n  ${problems.join('\n  ')}`);
    }
    const b = binding();
    for (const [dst, src] of copies) {
      const es = dtypeSize(dst.dtype);
      b.copy(dst._h('loadStateDict'), dst._offset * es, src._h('loadStateDict'), src._offset * es, dst.size * es);
    }
    return { missingKeys, unexpectedKeys };
  }

  // ------------------------------------------------------------------------------------------- printing

  /** One line of hyperparameters shown after the class name (`Linear(8, 3, bias=true)`). */
  extraRepr(): string {
    return '';
  }

  /** The tree, like PyTorch's repr. */
  toString(): string {
    const extra = this.extraRepr();
    const kids = [...this.namedChildren()];
    if (kids.length === 0) return `${this._cls()}(${extra})`;
    const lines = kids.map(([n, m]) => `(${n}): ${m.toString().split('\n').join('\n  ')}`);
    if (extra) lines.unshift(extra);
    return `${this._cls()}(\n  ${lines.join('\n  ')}\n)`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  /** @internal for walk() and checkFields() */
  static _entries(m: Module): ReadonlyMap<string, Entry> {
    return m._registry;
  }

  /** @internal */
  static _get(m: Module, name: string): Tensor | Module | null {
    const e = m._registry.get(name);
    return e ? m._value(name, e) : null;
  }
}

/**
 * Depth-first, registration order. With `dedupe`, a module reached twice is listed once (namedModules);
 * without, every path is listed (stateDict, like PyTorch). A module that contains itself is an error.
 */
function walk(root: Module, prefix: string, dedupe: boolean): Array<[string, Module]> {
  const out: Array<[string, Module]> = [];
  const seen = new Set<Module>();
  const onPath = new Set<Module>();
  const visit = (m: Module, name: string): void => {
    if (onPath.has(m)) throw new Error(`${m.constructor.name} at '${name}' contains itself (a cycle in the module tree)`);
    if (dedupe && seen.has(m)) return;
    seen.add(m);
    out.push([name, m]);
    onPath.add(m);
    for (const [n, e] of Module._entries(m)) {
      if (e.kind !== 'module') continue;
      const c = Module._get(m, n) as Module | null;
      if (c) visit(c, name ? `${name}.${n}` : n);
    }
    onPath.delete(m);
  };
  visit(root, prefix);
  return out;
}

/**
 * The guard that keeps explicit registration from failing silently: a field that holds a Module (or an array
 * of Modules, or a trainable leaf tensor) that the registered tree does not contain means its weights would
 * never train or be saved. Fields starting with '_' are exempt.
 */
function checkFields(mods: Module[]): void {
  const inTree = new Set<Module>(mods);
  const params = new Set<Tensor>();
  for (const m of mods) {
    for (const [n, e] of Module._entries(m)) {
      if (e.kind === 'module') continue;
      const t = Module._get(m, n);
      if (t) params.add(t as Tensor);
    }
  }
  for (const m of mods) {
    const entries = Module._entries(m);
    for (const key of Object.keys(m)) {
      if (key.startsWith('_') || entries.has(key)) continue;
      const v = (m as unknown as Record<string, unknown>)[key];
      const cls = m.constructor.name;
      if (v instanceof Module && !inTree.has(v)) {
        throw new Error(`${cls}.${key} holds a ${v.constructor.name} that is not registered, so its parameters would ` +
          `never be trained or saved: write \`this.${key} = this.registerModule('${key}', ...)\` ` +
          `(or name the field '_${key}' if it is deliberately not part of the model)`);
      }
      if (Array.isArray(v) && v.some((x) => x instanceof Module && !inTree.has(x))) {
        throw new Error(`${cls}.${key} is an array of modules that are not registered: use ` +
          `\`this.${key} = this.registerModule('${key}', new ModuleList([...]))\``);
      }
      if (v instanceof Tensor && !v.isDisposed && v.requiresGrad && !v._node && !params.has(v)) {
        throw new Error(`${cls}.${key} holds a trainable tensor ${shapeStr(v.shape)} that is not registered: write ` +
          `\`this.${key} = this.registerParameter('${key}', ...)\` (or name the field '_${key}')`);
      }
    }
  }
}

/**
 * A list of modules, registered as '0', '1', ... (so parameters are named 'blocks.0.attn.qkv.weight').
 * `list.at(i)`, `list.length`, `for (const m of list)`.
 */
export class ModuleList<M extends Module = Module> extends Module {
  private _items: M[] = [];

  constructor(modules: Iterable<M> = []) {
    super();
    for (const m of modules) this.push(m);
  }

  push(m: M): this {
    const i = this._items.length;
    this.registerModule(String(i), m);
    this._items.push(m);
    return this;
  }

  get length(): number {
    return this._items.length;
  }

  /** The i-th module (negative i counts from the end). */
  at(i: number): M {
    const j = i < 0 ? i + this._items.length : i;
    if (!Number.isInteger(j) || j < 0 || j >= this._items.length) {
      throw new RangeError(`ModuleList.at(${i}): index out of range for a list of ${this._items.length}`);
    }
    return Module._get(this, String(j)) as M;
  }

  *[Symbol.iterator](): IterableIterator<M> {
    for (let i = 0; i < this._items.length; i++) yield this.at(i);
  }

  forward(..._args: unknown[]): unknown {
    throw new Error('ModuleList has no forward(); iterate over it (or use Sequential)');
  }
}

/** Modules applied in order: `new Sequential(new Linear(2, 8), new GELU(), new Linear(8, 1))`. */
export class Sequential extends ModuleList {
  constructor(...modules: Module[]) {
    super(modules);
  }

  override forward(x: Tensor): Tensor {
    let h = x;
    for (const m of this) {
      const next = m.forward(h) as Tensor;
      if (h !== x && h !== next) h.dispose();
      h = next;
    }
    return h;
  }
}
