import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AliasTable, BatchSampler, hashSeed, longTail, modalityBalanced, RandomSampler, Rng, SequentialSampler,
  WeightedRandomSampler,
} from './samplers';

/**
 * Tolerance policy for sampled proportions: a count of draws from a group with probability p out of n draws is
 * Binomial(n, p) with sigma = sqrt(n p (1 - p)); we accept |count - n p| <= 5 sigma. A correct sampler fails such a
 * check with probability < 6e-7 per comparison, and the seeds are fixed, so the tests are deterministic anyway;
 * a sampler off by a few percent of p fails it.
 */
function assertShare(count: number, n: number, p: number, what: string): void {
  const sigma = Math.sqrt(n * p * (1 - p));
  const dev = Math.abs(count - n * p);
  assert.ok(dev <= 5 * sigma, `${what}: ${count} of ${n} draws, expected ${(n * p).toFixed(1)} ± ${(5 * sigma).toFixed(1)} (5 sigma); off by ${(dev / sigma).toFixed(2)} sigma`);
}

function isPermutationOf(a: Int32Array, of: ArrayLike<number>): boolean {
  if (a.length !== of.length) return false;
  const x = Array.from(a).sort((p, q) => p - q);
  const y = Array.from(of).sort((p, q) => p - q);
  return x.every((v, i) => v === y[i]);
}

function groupCounts(keys: string[], draws: Int32Array): Map<string, number> {
  const m = new Map<string, number>();
  for (const i of draws) m.set(keys[i], (m.get(keys[i]) ?? 0) + 1);
  return m;
}

test('hashSeed: deterministic, order-sensitive, nearby inputs give unrelated seeds', () => {
  assert.equal(hashSeed(1, 2, 3), hashSeed(1, 2, 3));
  assert.notEqual(hashSeed(1, 2), hashSeed(2, 1));
  assert.notEqual(hashSeed(0, 0), hashSeed(0, 1));
  const seen = new Set<number>();
  for (let i = 0; i < 1000; i++) seen.add(hashSeed(7, i));
  assert.equal(seen.size, 1000);
  assert.throws(() => hashSeed(1.5), /part 0 must be an integer/);
});

test('Rng.int is uniform over a range that does not divide 2^32 (chi-square, 99.9% quantile)', () => {
  const rng = new Rng(42);
  const k = 7, n = 70000;
  const c = new Array(k).fill(0);
  for (let i = 0; i < n; i++) c[rng.int(k)]++;
  const e = n / k;
  const chi2 = c.reduce((s, x) => s + ((x - e) * (x - e)) / e, 0);
  assert.ok(chi2 < 22.46, `chi2 ${chi2} over 6 degrees of freedom exceeds the 99.9% quantile 22.46`);
  assert.throws(() => rng.int(0), /n must be an integer/);
});

test('RandomSampler: each epoch is a permutation; same (seed, epoch) same order; epochs and seeds differ', () => {
  const s = new RandomSampler(500, { seed: 3 });
  const e0 = s.indices(0);
  assert.ok(isPermutationOf(e0, Array.from({ length: 500 }, (_, i) => i)));
  assert.deepEqual(new RandomSampler(500, { seed: 3 }).indices(0), e0);
  const e1 = s.indices(1);
  assert.ok(isPermutationOf(e1, e0));
  assert.notDeepEqual(e1, e0);
  assert.notDeepEqual(new RandomSampler(500, { seed: 4 }).indices(0), e0);
  assert.equal(s.length, 500);
  assert.throws(() => s.indices(-1), /epoch must be a non-negative integer/);
});

test('RandomSampler and SequentialSampler with a filter visit exactly the kept indices', () => {
  const kept = [9, 2, 4, 7];
  const r = new RandomSampler(10, { seed: 1, filter: kept });
  assert.equal(r.length, 4);
  assert.ok(isPermutationOf(r.indices(5), kept));
  assert.deepEqual(Array.from(new SequentialSampler(10, { filter: kept }).indices(0)), [2, 4, 7, 9]);
  assert.deepEqual(Array.from(new SequentialSampler(6, { filter: (i) => i % 2 === 1 }).indices(0)), [1, 3, 5]);
  assert.throws(() => new RandomSampler(10, { filter: [3, 10] }), /filter entry 1 is 10/);
  assert.throws(() => new RandomSampler(10, { filter: [3, 3] }), /index 3 twice/);
});

test('BatchSampler: sizes with and without dropLast; the batches cover the epoch in order', () => {
  const s = new RandomSampler(10, { seed: 0 });
  const keep = new BatchSampler(s, 4, false);
  const drop = new BatchSampler(s, 4, true);
  assert.equal(keep.length, 3);
  assert.equal(drop.length, 2);
  assert.deepEqual(keep.batches(2).map((b) => b.length), [4, 4, 2]);
  assert.deepEqual(drop.batches(2).map((b) => b.length), [4, 4]);
  const flat = Int32Array.from(keep.batches(2).flatMap((b) => Array.from(b)));
  assert.deepEqual(flat, s.indices(2));
  assert.deepEqual(drop.indices(2), s.indices(2).slice(0, 8));
  assert.throws(() => new BatchSampler(s, 0), /batchSize must be a positive integer/);
});

test('AliasTable reproduces the requested probabilities exactly (column mass adds up to p_i)', () => {
  const w = [5, 0, 1, 3, 0.5, 10, 2];
  const t = new AliasTable(w);
  const n = w.length;
  const total = w.reduce((a, b) => a + b, 0);
  const mass = new Float64Array(n);
  for (let col = 0; col < n; col++) {
    mass[col] += t.prob[col] / n;
    mass[t.alias[col]] += (1 - t.prob[col]) / n;
  }
  for (let i = 0; i < n; i++) assert.ok(Math.abs(mass[i] - w[i] / total) < 1e-12, `index ${i}: mass ${mass[i]} vs ${w[i] / total}`);
  assert.throws(() => new AliasTable([1, -1]), /weight 1 is -1/);
  assert.throws(() => new AliasTable([0, 0]), /all 2 weights are zero/);
});

test('WeightedRandomSampler: draw frequencies match the weights (5 sigma); zero weight never drawn; seeded', () => {
  const w = [1, 2, 0, 4, 8];
  const n = 40000;
  const s = new WeightedRandomSampler(w, { seed: 11, numSamples: n });
  const d = s.indices(0);
  assert.equal(d.length, n);
  const c = new Array(w.length).fill(0);
  for (const i of d) c[i]++;
  assert.equal(c[2], 0);
  for (let i = 0; i < w.length; i++) if (w[i] > 0) assertShare(c[i], n, w[i] / 15, `index ${i}`);
  assert.deepEqual(new WeightedRandomSampler(w, { seed: 11, numSamples: n }).indices(0), d);
  assert.notDeepEqual(s.indices(1), d);
  const f = new WeightedRandomSampler(w, { seed: 1, numSamples: 1000, filter: [0, 1] }).indices(0);
  assert.ok(f.every((i) => i === 0 || i === 1));
});

test('modalityBalanced: groups of 1000/100/10 items with weights 1:1:1 each get 1/3 of the draws', () => {
  const items = [
    ...Array.from({ length: 1000 }, () => ({ m: 'text' })),
    ...Array.from({ length: 100 }, () => ({ m: 'image' })),
    ...Array.from({ length: 10 }, () => ({ m: 'audio' })),
  ];
  const n = 30000;
  const s = modalityBalanced(items, (x) => x.m, { text: 1, image: 1, audio: 1 }, { seed: 5, numSamples: n });
  assert.equal(s.length, n);
  const d = s.indices(0);
  const c = groupCounts(s.keys, d);
  for (const g of ['text', 'image', 'audio']) assertShare(c.get(g) ?? 0, n, 1 / 3, `group ${g}`);
  for (const g of s.groups) assert.ok(Math.abs(g.share - 1 / 3) < 1e-12);
  // Within the small group every item is equally likely: 10000 draws over 10 items.
  const per = new Array(10).fill(0);
  for (const i of d) if (i >= 1100) per[i - 1100]++;
  const inGroup = per.reduce((a, b) => a + b, 0);
  for (let j = 0; j < 10; j++) assertShare(per[j], inGroup, 1 / 10, `audio item ${j}`);
});

test('modalityBalanced: unequal weights 2:1:0 give shares 2/3, 1/3 and none', () => {
  const items = [...Array(50).fill('a'), ...Array(500).fill('b'), ...Array(5).fill('c')] as string[];
  const n = 20000;
  const s = modalityBalanced(items, (x) => x, { a: 2, b: 1, c: 0 }, { seed: 9, numSamples: n });
  const c = groupCounts(s.keys, s.indices(3));
  assertShare(c.get('a') ?? 0, n, 2 / 3, 'group a');
  assertShare(c.get('b') ?? 0, n, 1 / 3, 'group b');
  assert.equal(c.get('c') ?? 0, 0);
});

test('modalityBalanced: a group without a weight, or a weight without a group, is an error naming it', () => {
  const items = ['a', 'b'];
  assert.throws(() => modalityBalanced(items, (x) => x, { a: 1 }, { seed: 0, numSamples: 10 }), /group 'b' \(1 items\) has no weight/);
  assert.throws(() => modalityBalanced(items, (x) => x, { a: 1, b: 1, z: 2 }, { seed: 0, numSamples: 10 }), /group 'z' has weight 2 but no items/);
  assert.throws(() => modalityBalanced(items, (x) => x, { a: -1, b: 1 }, { seed: 0, numSamples: 10 }), /weight of group 'a' is -1/);
});

test('modalityBalanced with a filter never draws a removed item and counts groups after filtering', () => {
  const items = Array.from({ length: 200 }, (_, i) => (i < 100 ? 'x' : 'y'));
  const kept = Array.from({ length: 200 }, (_, i) => i).filter((i) => i % 4 !== 0);
  const s = modalityBalanced(items, (v) => v, { x: 1, y: 1 }, { seed: 2, numSamples: 5000, filter: kept });
  const keptSet = new Set(kept);
  assert.ok(s.indices(0).every((i) => keptSet.has(i)));
  assert.deepEqual(s.groups.map((g) => g.count), [75, 75]);
});

const tailItems = [
  ...Array.from({ length: 1000 }, () => 'common'),
  ...Array.from({ length: 100 }, () => 'rare'),
  ...Array.from({ length: 10 }, () => 'rarest'),
];

test('longTail (power law): p_i ∝ n_g^-power, so group shares are ∝ n_g^(1-power), and draws follow them', () => {
  const n = 30000;
  const s = longTail(tailItems, (x) => x, { seed: 1, numSamples: n, power: 0.5 });
  const counts: Record<string, number> = { common: 1000, rare: 100, rarest: 10 };
  const z = Object.values(counts).reduce((a, c) => a + Math.sqrt(c), 0);
  const c = groupCounts(s.keys, s.indices(0));
  for (const g of s.groups) {
    assert.ok(Math.abs(g.itemWeight - Math.pow(counts[g.key], -0.5)) < 1e-12, `${g.key} weight`);
    const share = Math.sqrt(counts[g.key]) / z;
    assert.ok(Math.abs(g.share - share) < 1e-12, `${g.key} share`);
    assertShare(c.get(g.key) ?? 0, n, share, `group ${g.key}`);
  }
  // power 1: every group equal; power 0: the natural distribution.
  for (const g of longTail(tailItems, (x) => x, { numSamples: 1, power: 1 }).groups) assert.ok(Math.abs(g.share - 1 / 3) < 1e-12);
  for (const g of longTail(tailItems, (x) => x, { numSamples: 1, power: 0 }).groups) assert.ok(Math.abs(g.share - counts[g.key] / 1110) < 1e-12);
});

test('longTail (LVIS repeat factors): r_g = max(1, sqrt(t / f_g)) and draws follow r_g * n_g', () => {
  const t = 0.1;
  const n = 30000;
  const s = longTail(tailItems, (x) => x, { seed: 4, numSamples: n, threshold: t });
  const counts: Record<string, number> = { common: 1000, rare: 100, rarest: 10 };
  const r: Record<string, number> = {};
  for (const k of Object.keys(counts)) r[k] = Math.max(1, Math.sqrt(t / (counts[k] / 1110)));
  assert.ok(Math.abs(r.common - 1) < 1e-12 && r.rare > 1.05 && r.rarest > 3.3);
  const z = Object.keys(counts).reduce((a, k) => a + r[k] * counts[k], 0);
  const c = groupCounts(s.keys, s.indices(0));
  for (const g of s.groups) {
    assert.ok(Math.abs(g.itemWeight - r[g.key]) < 1e-12, `${g.key}: repeat factor ${g.itemWeight} vs ${r[g.key]}`);
    assertShare(c.get(g.key) ?? 0, n, (r[g.key] * counts[g.key]) / z, `group ${g.key}`);
  }
});

test('longTail: minCount caps how much a singleton group is repeated; bad options are errors', () => {
  const items = [...Array(99).fill('a'), 'b'] as string[];
  const capped = longTail(items, (x) => x, { numSamples: 1, power: 1, minCount: 9 });
  const b = capped.groups.find((g) => g.key === 'b')!;
  assert.ok(Math.abs(b.itemWeight - 1 / 9) < 1e-12);
  assert.throws(() => longTail(items, (x) => x, { numSamples: 1, threshold: 2 }), /threshold must be in \(0, 1\]/);
  assert.throws(() => longTail(items, (x) => x, { numSamples: 1, power: -1 }), /power must be finite and >= 0/);
  assert.throws(() => longTail(items, (x) => x, { numSamples: 1, minCount: 0 }), /minCount must be >= 1/);
});

test('rare combinations: a composite key oversamples the rare (modality, lang) pairs', () => {
  const items = [
    ...Array.from({ length: 300 }, () => ({ m: 'image', lang: 'en' })),
    ...Array.from({ length: 30 }, () => ({ m: 'image', lang: 'zh' })),
    ...Array.from({ length: 300 }, () => ({ m: 'audio', lang: 'en' })),
    ...Array.from({ length: 3 }, () => ({ m: 'audio', lang: 'zh' })),
  ];
  const n = 20000;
  const s = longTail(items, (x) => `${x.m}|${x.lang}`, { seed: 8, numSamples: n, power: 1 });
  const c = groupCounts(s.keys, s.indices(0));
  for (const k of ['image|en', 'image|zh', 'audio|en', 'audio|zh']) assertShare(c.get(k) ?? 0, n, 1 / 4, k);
});
