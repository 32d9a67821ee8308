/**
 * Samplers: which dataset indices an epoch visits, in what order. Pure and seeded: `indices(epoch)` depends only
 * on the constructor arguments and `epoch`, so a run resumed at epoch e sees exactly the order it would have seen,
 * and nothing here touches Math.random or global state. No native code: this file is safe to load in workers.
 *
 *   const s = new RandomSampler(1000, { seed: 0 });
 *   s.indices(0);   // Int32Array, a permutation of 0..999 that is the same on every call with epoch 0
 *   const b = modalityBalanced(pairs, (p) => String(p.meta.source), { emoji: 1, shapes: 1 }, { seed: 0, numSamples: 5000 });
 *   b.groups;       // per group: count, the weight each of its items gets, and the share of draws it receives
 *
 * Formulas (docs/loader.md has the derivations and the test tolerances):
 * - modalityBalanced: item i in group g is drawn with probability  w_g / (sum_h w_h) / n_g,  so group g receives
 *   the share w_g / sum_h w_h of the draws whatever its size n_g.
 * - longTail (default): p_i ∝ n_g^-power; group g's share is ∝ n_g^(1-power)  (0: natural, 0.5: square-root
 *   sampling, 1: every group equal). With `threshold` t: LVIS repeat-factor sampling (Gupta et al. 2019, sec 3.3)
 *   r_g = max(1, (t / f_g)^power) with f_g = n_g / N, p_i ∝ r_g  (power 0.5 is the paper's sqrt).
 *   `minCount` m: counts below m are treated as m, which caps how often a singleton group is repeated.
 */

// ---------------------------------------------------------------------------------------------------------------
// Seeds and a small PRNG

/** Murmur3's 32-bit finaliser: a bijection on uint32 with full avalanche. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * A 32-bit seed from several integers (seed, epoch, step, index...): order matters, and nearby inputs give
 * unrelated outputs. Used for every derived seed, so that e.g. the augmentation of (step, index) does not depend
 * on which worker computed it. Non-integers and values beyond 2^32 are rejected rather than silently truncated.
 */
export function hashSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (!Number.isInteger(p) || p < -0x80000000 || p > 0xffffffff) {
      throw new Error(`hashSeed: part ${i} must be an integer in [-2^31, 2^32), got ${p}`);
    }
    h = fmix32((h ^ fmix32((p >>> 0) + i)) + 0x6a09e667);
  }
  return h;
}

/** sfc32 (Chris Doty-Humphrey's Small Fast Counting generator): 128-bit state, passes PractRand to 2^40+ bytes. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    if (!Number.isInteger(seed)) throw new Error(`Rng: seed must be an integer, got ${seed}`);
    // splitmix-style expansion of the 32-bit seed into the four state words, then a few rounds to mix.
    this.a = fmix32(seed ^ 0x243f6a88);
    this.b = fmix32(seed ^ 0x85a308d3);
    this.c = fmix32(seed ^ 0x13198a2e);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n), unbiased (rejects the top partial range of uint32). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > 4294967296) throw new Error(`Rng.int: n must be an integer in [1, 2^32], got ${n}`);
    const limit = 4294967296 - (4294967296 % n);
    let u = this.nextU32();
    while (u >= limit) u = this.nextU32();
    return u % n;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The sampler interface

/** Which dataset indices one epoch visits. `indices(e)` is a pure function of the sampler's arguments and e. */
export interface Sampler {
  /** How many indices every epoch yields. */
  readonly length: number;
  indices(epoch: number): Int32Array;
}

/**
 * Restricts a sampler to some dataset indices: the kept indices themselves (e.g. `filterByScore(...).keptIndices`),
 * or a predicate on the index.
 */
export type KeepFilter = ArrayLike<number> | ((index: number) => boolean);

/** The kept indices of a dataset of size n, ascending, checked (in range, integer, no duplicates). */
export function keptIndices(n: number, filter: KeepFilter | undefined, who: string): Int32Array {
  checkSize(n, who);
  if (filter === undefined) {
    const all = new Int32Array(n);
    for (let i = 0; i < n; i++) all[i] = i;
    return all;
  }
  if (typeof filter === 'function') {
    const out: number[] = [];
    for (let i = 0; i < n; i++) if (filter(i)) out.push(i);
    return Int32Array.from(out);
  }
  const seen = new Uint8Array(n);
  for (let k = 0; k < filter.length; k++) {
    const i = filter[k];
    if (!Number.isInteger(i) || i < 0 || i >= n) {
      throw new Error(`${who}: filter entry ${k} is ${i}, not an index of a dataset of ${n} items`);
    }
    if (seen[i]) throw new Error(`${who}: filter lists index ${i} twice`);
    seen[i] = 1;
  }
  const out = new Int32Array(filter.length);
  let j = 0;
  for (let i = 0; i < n; i++) if (seen[i]) out[j++] = i;
  return out;
}

function checkSize(n: number, who: string): void {
  if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new Error(`${who}: dataset size must be an integer in [0, 2^31), got ${n}`);
}

function checkEpoch(epoch: number, who: string): void {
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) throw new Error(`${who}: epoch must be a non-negative integer, got ${epoch}`);
}

function checkSeed(seed: number | undefined, who: string): number {
  const s = seed ?? 0;
  if (!Number.isInteger(s) || s < -0x80000000 || s > 0xffffffff) throw new Error(`${who}: seed must be an integer in [-2^31, 2^32), got ${seed}`);
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Sequential, random, batch

/** 0, 1, ..., n-1 (or the kept indices, ascending) every epoch. */
export class SequentialSampler implements Sampler {
  readonly length: number;
  private readonly order: Int32Array;

  constructor(n: number, opts: { filter?: KeepFilter } = {}) {
    this.order = keptIndices(n, opts.filter, 'SequentialSampler');
    this.length = this.order.length;
  }

  indices(epoch: number): Int32Array {
    checkEpoch(epoch, 'SequentialSampler.indices');
    return this.order.slice();
  }
}

/** A fresh permutation of the (kept) indices every epoch, drawn from (seed, epoch) by Fisher-Yates. */
export class RandomSampler implements Sampler {
  readonly length: number;
  readonly seed: number;
  private readonly pool: Int32Array;

  constructor(n: number, opts: { seed?: number; filter?: KeepFilter } = {}) {
    this.seed = checkSeed(opts.seed, 'RandomSampler');
    this.pool = keptIndices(n, opts.filter, 'RandomSampler');
    this.length = this.pool.length;
  }

  indices(epoch: number): Int32Array {
    checkEpoch(epoch, 'RandomSampler.indices');
    const out = this.pool.slice();
    const rng = new Rng(hashSeed(this.seed, epoch, 0x5eed));
    for (let i = out.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = out[i];
      out[i] = out[j];
      out[j] = t;
    }
    return out;
  }
}

/** Cuts an epoch of another sampler into batches; `dropLast` drops a final partial batch. */
export class BatchSampler {
  /** Batches per epoch. */
  readonly length: number;

  constructor(readonly sampler: Sampler, readonly batchSize: number, readonly dropLast = false) {
    if (!Number.isInteger(batchSize) || batchSize <= 0) throw new Error(`BatchSampler: batchSize must be a positive integer, got ${batchSize}`);
    this.length = batchCount(sampler.length, batchSize, dropLast);
  }

  /** Batch `b` (0-based) of epoch `epoch`. */
  batch(epoch: number, b: number, epochIndices = this.sampler.indices(epoch)): Int32Array {
    if (!Number.isInteger(b) || b < 0 || b >= this.length) throw new Error(`BatchSampler.batch: batch ${b} is outside 0..${this.length - 1}`);
    return epochIndices.slice(b * this.batchSize, Math.min((b + 1) * this.batchSize, epochIndices.length));
  }

  batches(epoch: number): Int32Array[] {
    const idx = this.sampler.indices(epoch);
    const out: Int32Array[] = [];
    for (let b = 0; b < this.length; b++) out.push(this.batch(epoch, b, idx));
    return out;
  }

  /** The indices of one epoch that end up in some batch (all of them unless dropLast cut a partial batch). */
  indices(epoch: number): Int32Array {
    return this.sampler.indices(epoch).slice(0, Math.min(this.sampler.length, this.length * this.batchSize));
  }
}

export function batchCount(n: number, batchSize: number, dropLast: boolean): number {
  return dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
}

// ---------------------------------------------------------------------------------------------------------------
// Weighted sampling with replacement (Vose's alias method)

/**
 * Walker's alias table built by Vose's method (Vose 1991, "A linear algorithm for generating random numbers with
 * a given distribution"): O(n) to build, O(1) per draw: pick a column uniformly, keep it with probability
 * prob[col], else take its alias.
 */
export class AliasTable {
  readonly prob: Float64Array;
  readonly alias: Int32Array;
  /** The normalised probabilities the table samples from. */
  readonly p: Float64Array;

  constructor(weights: ArrayLike<number>, who = 'AliasTable') {
    const n = weights.length;
    if (n === 0) throw new Error(`${who}: no weights`);
    let total = 0;
    for (let i = 0; i < n; i++) {
      const w = weights[i];
      if (!Number.isFinite(w) || w < 0) throw new Error(`${who}: weight ${i} is ${w}; weights must be finite and >= 0`);
      total += w;
    }
    if (!(total > 0)) throw new Error(`${who}: all ${n} weights are zero`);
    this.p = new Float64Array(n);
    this.prob = new Float64Array(n);
    this.alias = new Int32Array(n);
    const scaled = new Float64Array(n);
    const small: number[] = [];
    const large: number[] = [];
    for (let i = 0; i < n; i++) {
      this.p[i] = weights[i] / total;
      scaled[i] = this.p[i] * n;
      (scaled[i] < 1 ? small : large).push(i);
    }
    while (small.length && large.length) {
      const s = small.pop()!;
      const l = large.pop()!;
      this.prob[s] = scaled[s];
      this.alias[s] = l;
      scaled[l] = scaled[l] + scaled[s] - 1;
      (scaled[l] < 1 ? small : large).push(l);
    }
    // What is left is 1 up to rounding error.
    for (const i of large) { this.prob[i] = 1; this.alias[i] = i; }
    for (const i of small) { this.prob[i] = 1; this.alias[i] = i; }
  }

  draw(rng: Rng): number {
    const col = rng.int(this.prob.length);
    return rng.next() < this.prob[col] ? col : this.alias[col];
  }
}

export interface WeightedRandomSamplerOptions {
  seed?: number;
  /** Draws per epoch (default: the number of weights). */
  numSamples?: number;
  /** Only these indices may be drawn (others get weight 0). */
  filter?: KeepFilter;
}

/** `numSamples` draws with replacement per epoch, index i with probability weights[i] / sum(weights). */
export class WeightedRandomSampler implements Sampler {
  readonly length: number;
  readonly seed: number;
  private readonly table: AliasTable;

  constructor(weights: ArrayLike<number>, opts: WeightedRandomSamplerOptions = {}, who = 'WeightedRandomSampler') {
    this.seed = checkSeed(opts.seed, who);
    const n = opts.numSamples ?? weights.length;
    if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new Error(`${who}: numSamples must be a non-negative integer, got ${opts.numSamples}`);
    this.length = n;
    let w: ArrayLike<number> = weights;
    if (opts.filter !== undefined) {
      const keep = keptIndices(weights.length, opts.filter, who);
      const masked = new Float64Array(weights.length);
      for (const i of keep) masked[i] = weights[i];
      w = masked;
    }
    this.table = new AliasTable(w, who);
  }

  /** The probability with which each index is drawn. */
  get probabilities(): Float64Array {
    return this.table.p;
  }

  indices(epoch: number): Int32Array {
    checkEpoch(epoch, 'WeightedRandomSampler.indices');
    const rng = new Rng(hashSeed(this.seed, epoch, 0xa11a5));
    const out = new Int32Array(this.length);
    for (let k = 0; k < out.length; k++) out[k] = this.table.draw(rng);
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Grouped samplers: modality balancing and long-tail oversampling

/** One group of a grouped sampler: its size, the weight each of its items got, and its expected share of draws. */
export interface GroupInfo {
  key: string;
  count: number;
  itemWeight: number;
  share: number;
}

/** A weighted sampler that also reports how it weighted each group. */
export class GroupedSampler extends WeightedRandomSampler {
  constructor(
    weights: Float64Array,
    opts: WeightedRandomSamplerOptions,
    /** Per group, in order of first appearance. */
    readonly groups: GroupInfo[],
    /** The group key of every item ('' for items the filter removed). */
    readonly keys: string[],
    who: string,
  ) {
    super(weights, opts, who);
  }
}

interface Grouping {
  keys: string[];
  counts: Map<string, number>;
  kept: Int32Array;
}

function groupItems<T>(items: readonly T[], keyFn: (item: T, index: number) => string, filter: KeepFilter | undefined, who: string): Grouping {
  if (!Array.isArray(items)) throw new Error(`${who}: items must be an array`);
  const kept = keptIndices(items.length, filter, who);
  if (kept.length === 0) throw new Error(`${who}: no items${filter ? ' left after the filter' : ''}`);
  const keys = new Array<string>(items.length).fill('');
  const counts = new Map<string, number>();
  for (const i of kept) {
    const k = keyFn(items[i], i);
    if (typeof k !== 'string') throw new Error(`${who}: keyFn returned ${typeof k} for item ${i}; it must return a string`);
    keys[i] = k;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return { keys, counts, kept };
}

function groupedSampler(g: Grouping, n: number, groupItemWeight: Map<string, number>, opts: { seed?: number; numSamples: number }, who: string): GroupedSampler {
  if (!Number.isInteger(opts.numSamples) || opts.numSamples < 0) throw new Error(`${who}: numSamples must be a non-negative integer, got ${opts.numSamples}`);
  const w = new Float64Array(n);
  for (const i of g.kept) w[i] = groupItemWeight.get(g.keys[i])!;
  let total = 0;
  for (const [k, c] of g.counts) total += c * groupItemWeight.get(k)!;
  const groups: GroupInfo[] = [...g.counts].map(([key, count]) => {
    const itemWeight = groupItemWeight.get(key)!;
    return { key, count, itemWeight, share: (count * itemWeight) / total };
  });
  return new GroupedSampler(w, { seed: opts.seed, numSamples: opts.numSamples }, groups, g.keys, who);
}

/**
 * Sample so that each group (modality, source...) receives the configured share of draws instead of its size
 * share: item i of group g has probability w_g / W / n_g with W the sum of the weights of the groups present.
 * Every group present needs a weight (0 excludes it); a positive weight for a group with no items is an error,
 * since its share could not be honoured.
 */
export function modalityBalanced<T>(
  items: readonly T[],
  keyFn: (item: T, index: number) => string,
  weights: Record<string, number>,
  opts: { seed?: number; numSamples: number; filter?: KeepFilter },
): GroupedSampler {
  const who = 'modalityBalanced';
  const g = groupItems(items, keyFn, opts.filter, who);
  for (const [k, w] of Object.entries(weights)) {
    if (!Number.isFinite(w) || w < 0) throw new Error(`${who}: weight of group '${k}' is ${w}; weights must be finite and >= 0`);
    if (w > 0 && !g.counts.has(k)) throw new Error(`${who}: group '${k}' has weight ${w} but no items (groups present: ${[...g.counts.keys()].join(', ')})`);
  }
  const per = new Map<string, number>();
  for (const [k, c] of g.counts) {
    if (!Object.prototype.hasOwnProperty.call(weights, k)) {
      throw new Error(`${who}: group '${k}' (${c} items) has no weight; give it one (0 to leave it out)`);
    }
    per.set(k, weights[k] / c);
  }
  return groupedSampler(g, items.length, per, opts, who);
}

export interface LongTailOptions {
  seed?: number;
  numSamples: number;
  /** Exponent: default 0.5. Without `threshold`, p_i ∝ n_g^-power; with it, r_g = max(1, (t / f_g)^power). */
  power?: number;
  /** LVIS repeat-factor threshold t in (0, 1]: groups whose frequency f_g = n_g / N is below t are repeated. */
  threshold?: number;
  /** Counts below minCount are treated as minCount (caps the repetition of very rare groups). Default 1. */
  minCount?: number;
  filter?: KeepFilter;
}

/**
 * Oversample rare groups. The key can be a class or a combination (`${modality}|${lang}`) to oversample rare
 * combinations. Two formulas (see the file header): power-law reweighting p_i ∝ max(n_g, m)^-power (default), or
 * with `threshold` LVIS repeat-factor sampling r_g = max(1, (t / f_g)^power), f_g = max(n_g, m) / N.
 */
export function longTail<T>(items: readonly T[], keyFn: (item: T, index: number) => string, opts: LongTailOptions): GroupedSampler {
  const who = 'longTail';
  const power = opts.power ?? 0.5;
  if (!Number.isFinite(power) || power < 0) throw new Error(`${who}: power must be finite and >= 0, got ${opts.power}`);
  const minCount = opts.minCount ?? 1;
  if (!Number.isFinite(minCount) || minCount < 1) throw new Error(`${who}: minCount must be >= 1, got ${opts.minCount}`);
  const t = opts.threshold;
  if (t !== undefined && !(t > 0 && t <= 1)) throw new Error(`${who}: threshold must be in (0, 1], got ${t}`);
  const g = groupItems(items, keyFn, opts.filter, who);
  const N = g.kept.length;
  const per = new Map<string, number>();
  for (const [k, c] of g.counts) {
    const n = Math.max(c, minCount);
    per.set(k, t === undefined ? Math.pow(n, -power) : Math.max(1, Math.pow(t / (n / N), power)));
  }
  return groupedSampler(g, items.length, per, opts, who);
}
