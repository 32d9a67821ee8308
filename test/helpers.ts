/**
 * Test helpers. Tolerance is a policy in one place: |x - ref| <= atol + rtol * |ref|, rtol chosen by dtype,
 * and a failure reports the worst element and how much of the budget it used.
 */
import * as assert from 'node:assert/strict';
import type { DType } from '../src/api/dtype';

export const RTOL: Record<DType, number> = { f32: 1e-5, f16: 1e-3, bf16: 1e-2, i32: 0 };
export const ATOL: Record<DType, number> = { f32: 1e-6, f16: 1e-4, bf16: 1e-3, i32: 0 };

export interface CloseOptions { rtol?: number; atol?: number; dtype?: DType; what?: string }

/** Assert that two arrays agree elementwise within tolerance; NaN matches NaN and infinities must be equal. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, opts: CloseOptions = {}): void {
  const dtype = opts.dtype ?? 'f32';
  const rtol = opts.rtol ?? RTOL[dtype];
  const atol = opts.atol ?? ATOL[dtype];
  const what = opts.what ?? 'values';
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} != expected ${expected.length}`);
  let worst = 0;
  let wi = -1;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(e) || Number.isNaN(a)) {
      if (Number.isNaN(e) && Number.isNaN(a)) continue;
      worst = Infinity; wi = i; break;
    }
    if (!Number.isFinite(e) || !Number.isFinite(a)) {
      if (a === e) continue;
      worst = Infinity; wi = i; break;
    }
    const used = Math.abs(a - e) / (atol + rtol * Math.abs(e));
    if (used > worst) { worst = used; wi = i; }
  }
  if (worst > 1) {
    assert.fail(`${what}: element ${wi} is ${actual[wi]}, expected ${expected[wi]} ` +
      `(${worst === Infinity ? 'mismatch' : worst.toFixed(2) + 'x the tolerance'}; rtol ${rtol}, atol ${atol})`);
  }
}

/** Deterministic pseudo-random numbers for building test inputs in JS (never zeros). */
export function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = lcg(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
}
