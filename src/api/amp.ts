/**
 * Mixed precision: autocast (which ops run in bf16/f16) and, later in this file's family, GradScaler.
 *
 * Inside `ml.autocast('bf16', fn)`, matmul, linear and attention cast their float inputs to the low precision
 * and accumulate in f32; softmax, normalisation, reductions and losses stay in f32; parameters stay f32
 * (master weights). Ops ask `autocastDtype()` whether they are inside such a region.
 */
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
