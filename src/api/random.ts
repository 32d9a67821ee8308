/**
 * The global random stream: a seed plus a counter. Every random op takes the next block of counter values
 * and the native Philox generator maps (seed, counter) to numbers, so results do not depend on threads.
 */
let seed = Math.floor(Math.random() * 2 ** 32);
let counter = 0;

/** Seed every random op (randn, rand, dropout, parameter init) for reproducible runs. */
export function manualSeed(s: number): void {
  if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) {
    throw new TypeError(`manualSeed: expected a non-negative integer, got ${typeof s === 'number' ? s : typeof s}`);
  }
  seed = s;
  counter = 0;
}

/** Reserve n values of the stream; returns the seed and the first counter value. */
export function takeRandom(n: number): { seed: number; offset: number } {
  const offset = counter;
  counter += Math.ceil(n / 4) * 4 + 4;  // whole Philox blocks, and never overlapping
  return { seed, offset };
}

/** The generator state, to save with a checkpoint and restore for an exact resume. */
export function getRngState(): { seed: number; counter: number } {
  return { seed, counter };
}

export function setRngState(s: { seed: number; counter: number }): void {
  if (s === null || typeof s !== 'object') throw new TypeError('setRngState: expected an object { seed, counter }');
  if (!Number.isSafeInteger(s.seed) || !Number.isSafeInteger(s.counter) || s.seed < 0 || s.counter < 0) {
    throw new Error('setRngState: seed and counter must be non-negative integers');
  }
  seed = s.seed;
  counter = s.counter;
}
