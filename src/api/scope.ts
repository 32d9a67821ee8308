/**
 * tidy(): dispose every tensor made inside fn except those it returns (tfjs's tidy), and keep().
 */
import type { Tensor } from './tensor';

// A scope is a plain array of the tensors made inside it: pushing is the whole per-tensor cost. Tensors that
// were disposed early stay in the array (disposing again is a no-op), and kept tensors carry a flag that every
// scope honours, so neither needs a search through the scopes.
const scopes: Tensor[][] = [];

/** Called for every new tensor. */
export function track(t: Tensor): boolean {
  if (scopes.length === 0) return false;
  scopes[scopes.length - 1].push(t);
  return true;
}

/** Let a tensor outlive every enclosing tidy scope (keep(), gradients, autograd's retained tensors). */
export function untrack(t: Tensor): void {
  t._kept = true;
  t._scoped = false;
  t._register();
}

function collect(x: unknown, out: Set<Tensor>, depth = 0): void {
  if (x == null || depth > 8 || typeof x !== 'object') return;
  const { Tensor: T } = require('./tensor') as typeof import('./tensor');
  if (x instanceof T) { out.add(x); return; }
  if (Array.isArray(x)) { for (const v of x) collect(v, out, depth + 1); return; }
  if (x instanceof Map) { for (const v of x.values()) collect(v, out, depth + 1); return; }
  if (Object.getPrototypeOf(x) === Object.prototype) for (const v of Object.values(x)) collect(v, out, depth + 1);
}

/**
 * Run fn and dispose every tensor it created that is not part of its result (tensors in the returned value,
 * arrays, Maps or plain objects are kept and handed to the enclosing scope). fn must be synchronous.
 * Gradients written by backward() and optimizer state are kept automatically.
 */
export function tidy<T>(fn: () => T): T {
  const scope: Tensor[] = [];
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    for (const t of scope) t.dispose();
    throw new Error('tidy: fn returned a Promise; tidy only works with synchronous functions');
  }
  const keep = new Set<Tensor>();
  collect(result, keep);
  for (const t of scope) {
    if (t._kept || t.isDisposed) continue;
    if (!keep.has(t)) t.dispose();
    else if (!track(t)) {
      t._scoped = false;   // escaped the outermost scope: from now on only the garbage collector backstop
      t._register();
    }
  }
  return result;
}
