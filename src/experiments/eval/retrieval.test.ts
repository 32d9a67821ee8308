/** retrievalMetrics, relevantRanks, topK, chanceLevels: hand-computed ranks, many-to-many groups, chunks, ties. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { randn, tensor } from '../../api/creation';
import { manualSeed } from '../../api/random';
import { memory, resetPeak } from '../../api/storage';
import { chanceLevels, relevantRanks, retrievalMetrics, topK } from './retrieval';

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);

/** Rows of w scaled to unit norm, as a flat Float32Array. */
function unit(w: number[][]): Float32Array {
  const out: number[] = [];
  for (const row of w) {
    const n = Math.hypot(...row);
    out.push(...row.map((x) => x / n));
  }
  return Float32Array.from(out);
}

/** The identity matrix [n, n], flat: one-hot rows, so row i . one-hot j = w[i][j] exactly. */
function eye(n: number): Float32Array {
  const a = new Float32Array(n * n);
  for (let i = 0; i < n; i++) a[i * n + i] = 1;
  return a;
}

/** Unit-norm random rows, flat. */
function randomUnit(rows: number, dim: number, seed: number): Float32Array {
  manualSeed(seed);
  const x = randn([rows, dim]).toArray() as Float32Array;
  for (let i = 0; i < rows; i++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += x[i * dim + j] ** 2;
    const n = Math.sqrt(s);
    for (let j = 0; j < dim; j++) x[i * dim + j] /= n;
  }
  return x;
}

/**
 * The obviously-correct reference: sort each query's whole row with the pessimistic rule (score descending,
 * irrelevant before relevant on a tie) and read the ranks of the relevant items off the sorted order.
 */
function naive(sim: (q: number, g: number) => number, Q: number, G: number, qg: string[], gg: string[]) {
  const first: number[] = [];
  let ap = 0;
  let hits1 = 0;
  let hits5 = 0;
  for (let q = 0; q < Q; q++) {
    const order = Array.from({ length: G }, (_, g) => g);
    const rel = (g: number) => gg[g] === qg[q];
    order.sort((a, b) => sim(q, b) - sim(q, a) || Number(rel(a)) - Number(rel(b)));
    const ranks = order.map((g, i) => (rel(g) ? i + 1 : 0)).filter((r) => r > 0);
    first.push(ranks[0]);
    if (ranks[0] <= 1) hits1++;
    if (ranks[0] <= 5) hits5++;
    ap += ranks.reduce((a, r, i) => a + (i + 1) / r, 0) / ranks.length;
  }
  const sorted = [...first].sort((a, b) => a - b);
  const med = Q % 2 ? sorted[(Q - 1) / 2] : (sorted[Q / 2 - 1] + sorted[Q / 2]) / 2;
  return { r1: hits1 / Q, r5: hits5 / Q, mAP: ap / Q, medianRank: med, meanRank: first.reduce((a, x) => a + x, 0) / Q };
}

test('identity embeddings: R@1 = 1, mAP = 1, median rank 1 in both directions', () => {
  const groups = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
  const m = retrievalMetrics(eye(8), eye(8), groups, groups);
  for (const d of [m.i2t, m.t2i]) {
    assert.equal(d.r1, 1); assert.equal(d.r5, 1); assert.equal(d.r10, 1);
    assert.equal(d.mAP, 1); assert.equal(d.medianRank, 1); assert.equal(d.meanRank, 1);
    assert.equal(d.queries, 8); assert.equal(d.skipped, 0);
  }
  assert.deepEqual(Object.keys(m.flat()), [
    'i2t/r@1', 'i2t/r@5', 'i2t/r@10', 'i2t/map', 'i2t/median_rank', 'i2t/mean_rank',
    't2i/r@1', 't2i/r@5', 't2i/r@10', 't2i/map', 't2i/median_rank', 't2i/mean_rank',
  ]);
});

test('permuted scores: hand-computed recall, mAP, median and mean rank (with pessimistic ties in t2i)', () => {
  // Texts are one-hot, so sim(img i, text j) = W[i][j] / sqrt(30) exactly (every row is a permutation of 1..4).
  // i2t: img0 ranks t0 1st; img1 [4,2,3,1] ranks t1 3rd; img2 [1,2,3,4] ranks t2 2nd; img3 ranks t3 4th.
  //   first ranks [1, 3, 2, 4]: R@1 = 1/4, R@5 = 1, mAP = (1 + 1/3 + 1/2 + 1/4) / 4 = 25/48,
  //   median (2 + 3) / 2 = 2.5, mean 10/4 = 2.5.
  // t2i (columns): t0 [4,4,1,4]: img0 ties img1 and img3 -> rank 3 (pessimistic); t1 [3,2,2,3]: img1 = 2 with
  //   img0 3, img2 2 (tie), img3 3 ahead -> rank 4; t2 [2,3,3,2]: img2 = 3, img1 ties -> rank 2;
  //   t3 [1,1,4,1]: img3 = 1, all three tie or beat it -> rank 4.
  //   first ranks [3, 4, 2, 4]: R@1 = 0, R@5 = 1, mAP = (1/3 + 1/4 + 1/2 + 1/4) / 4 = 1/3,
  //   median (3 + 4) / 2 = 3.5, mean 13/4.
  const W = [[4, 3, 2, 1], [4, 2, 3, 1], [1, 2, 3, 4], [4, 3, 2, 1]];
  const g = ['g0', 'g1', 'g2', 'g3'];
  const m = retrievalMetrics(unit(W), eye(4), g, g);
  close(m.i2t.r1, 1 / 4); close(m.i2t.r5, 1); close(m.i2t.mAP, 25 / 48);
  close(m.i2t.medianRank, 2.5); close(m.i2t.meanRank, 2.5);
  close(m.t2i.r1, 0); close(m.t2i.r5, 1); close(m.t2i.mAP, 1 / 3);
  close(m.t2i.medianRank, 3.5); close(m.t2i.meanRank, 13 / 4);
  const f = m.flat();
  close(f['i2t/map'], 25 / 48); close(f['t2i/median_rank'], 3.5); close(f['i2t/r@1'], 0.25);
});

test('several relevant texts per image: AP over all of them, hand-computed', () => {
  // Texts one-hot (groups a a b b c c); image rows are permutations of 1..6 (same norm).
  // img0 (a) [6,4,5,3,2,1]: t0 rank 1, t1 rank 3 -> AP (1/1 + 2/3) / 2 = 5/6, first 1.
  // img1 (b) [6,5,4,3,2,1]: t2 rank 3, t3 rank 4 -> AP (1/3 + 2/4) / 2 = 5/12, first 3.
  // img2 (c) [1,2,3,4,6,5]: t4 rank 1, t5 rank 2 -> AP 1, first 1.
  // i2t: R@1 = 2/3, mAP = (5/6 + 5/12 + 1) / 3 = 3/4, median 1, mean 5/3.
  // t2i columns: t0 [6,6,1] rank 2 (tie); t1 [4,5,2] rank 2; t2 [5,4,3] rank 2; t3 [3,3,4] rank 3 (tie);
  //   t4 [2,2,6] rank 1; t5 [1,1,5] rank 1 -> R@1 = 1/3, mAP = (3 * 1/2 + 1/3 + 1 + 1) / 6 = 23/36,
  //   median of [1,1,2,2,2,3] = 2, mean 11/6.
  const W = [[6, 4, 5, 3, 2, 1], [6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 6, 5]];
  const m = retrievalMetrics(unit(W), eye(6), ['a', 'b', 'c'], ['a', 'a', 'b', 'b', 'c', 'c']);
  close(m.i2t.r1, 2 / 3); close(m.i2t.mAP, 3 / 4); close(m.i2t.medianRank, 1); close(m.i2t.meanRank, 5 / 3);
  close(m.t2i.r1, 1 / 3); close(m.t2i.mAP, 23 / 36); close(m.t2i.medianRank, 2); close(m.t2i.meanRank, 11 / 6);
});

test('relevantRanks: irrelevant items tied with a relevant one rank ahead of it', () => {
  // Relevant 1 (0.5) and 4 (0.1); irrelevant 0.9, 0.7 and 0.5 (tied) are all ahead of item 1 -> rank 4;
  // item 4 comes after those three and item 1 -> rank 5.
  const scores = Float32Array.from([0.9, 0.5, 0.7, 0.5, 0.1]);
  const isRel = Uint8Array.from([0, 1, 0, 0, 1]);
  assert.deepEqual(Array.from(relevantRanks(scores, [1, 4], isRel)), [4, 5]);
  // Relevant items tied with each other take consecutive ranks.
  assert.deepEqual(Array.from(relevantRanks(Float32Array.from([0.3, 0.3, 0.3]), [0, 2], Uint8Array.from([1, 0, 1]))), [2, 3]);
});

test('collapsed embeddings (every score tied) rank each relevant item last: below chance, not perfect', () => {
  const n = 5;
  const same = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) same[i * 2] = 1;
  const g = ['a', 'b', 'c', 'd', 'e'];
  const m = retrievalMetrics(same, same, g, g);
  assert.equal(m.i2t.r1, 0); assert.equal(m.i2t.medianRank, 5); assert.equal(m.t2i.mAP, 1 / 5);
});

test('many-to-many groups on random embeddings match a brute-force sort; chunked equals unchunked', () => {
  const N = 37;
  const M = 53;
  const D = 16;
  const img = randomUnit(N, D, 1);
  const txt = randomUnit(M, D, 2);
  // 9 groups, repeated on both sides (several images and several texts per group).
  const ig = Array.from({ length: N }, (_, i) => `g${i % 9}`);
  const tg = Array.from({ length: M }, (_, j) => `g${(j * 5) % 9}`);
  const full = retrievalMetrics(img, txt, ig, tg);
  // The reference computes every score in float64 from the same f32 inputs and sorts whole rows (random data:
  // no two scores are close enough for the f32 GEMM's rounding to reorder them).
  const S = Array.from({ length: N }, (_, i) => Float64Array.from({ length: M }, (_, j) => {
    let s = 0;
    for (let k = 0; k < D; k++) s += img[i * D + k] * txt[j * D + k];
    return s;
  }));
  const refI = naive((q, g) => S[q][g], N, M, ig, tg);
  const refT = naive((q, g) => S[g][q], M, N, tg, ig);
  for (const [got, ref] of [[full.i2t, refI], [full.t2i, refT]] as const) {
    close(got.r1, ref.r1); close(got.r5, ref.r5); close(got.mAP, ref.mAP, 1e-12);
    close(got.medianRank, ref.medianRank); close(got.meanRank, ref.meanRank, 1e-12);
  }
  for (const chunk of [1, 4, 50]) {
    assert.deepEqual(retrievalMetrics(img, txt, ig, tg, { chunk }).flat(), full.flat(), `chunk ${chunk}`);
  }
});

test('Tensor inputs give the same metrics as Float32Array; extra ks add r@K keys', () => {
  const img = randomUnit(12, 8, 3);
  const txt = randomUnit(20, 8, 4);
  const ig = Array.from({ length: 12 }, (_, i) => `c${i}`);
  const tg = Array.from({ length: 20 }, (_, j) => `c${j % 12}`);
  const a = retrievalMetrics(img, txt, ig, tg, { ks: [3] }).flat();
  const b = retrievalMetrics(tensor(img, [12, 8]), tensor(txt, [20, 8]), ig, tg, { ks: [3] }).flat();
  assert.deepEqual(a, b);
  assert.ok('i2t/r@3' in a && 't2i/r@3' in a);
  assert.ok(a['i2t/r@1'] <= a['i2t/r@3'] && a['i2t/r@3'] <= a['i2t/r@5']);
});

test('normalize: true accepts unnormalised rows and equals pre-normalised input', () => {
  const W = [[4, 3, 2, 1], [4, 2, 3, 1], [1, 2, 3, 4], [4, 3, 2, 1]];
  const g = ['g0', 'g1', 'g2', 'g3'];
  const raw = Float32Array.from(W.flat());
  assert.throws(() => retrievalMetrics(raw, eye(4), g, g), /img row 0 has L2 norm 5\.477.*normalize: true/);
  assert.deepEqual(retrievalMetrics(raw, eye(4), g, g, { normalize: true }).flat(), retrievalMetrics(unit(W), eye(4), g, g).flat());
});

test('skipMissing: a query whose group has no match is an error by default, counted when skipped', () => {
  assert.throws(() => retrievalMetrics(eye(3), eye(3).subarray(0, 6), ['a', 'b', 'z'], ['a', 'b']),
    /i2t query 2 \(group "z"\) has no relevant item/);
  const m = retrievalMetrics(eye(3), eye(3).subarray(0, 6), ['a', 'b', 'z'], ['a', 'b'], { skipMissing: true });
  assert.equal(m.i2t.queries, 2); assert.equal(m.i2t.skipped, 1); assert.equal(m.i2t.r1, 1);
  assert.equal(m.t2i.queries, 2); assert.equal(m.t2i.skipped, 0);
});

test('bad input: errors name the argument', () => {
  const g2 = ['a', 'b'];
  assert.throws(() => retrievalMetrics(eye(2), eye(2), ['a', 'b', 'c'], g2), /img has 4 values, not a whole number of rows for 3 rows/);
  assert.throws(() => retrievalMetrics(tensor(eye(2), [2, 2]), eye(2), ['a'], g2), /img has 2 rows but its group labels have 1 entries/);
  assert.throws(() => retrievalMetrics(eye(2), new Float32Array(6), g2, g2), /txt has width 3 but the other embeddings have width 2/);
  const nan = eye(2); nan[3] = NaN;
  assert.throws(() => retrievalMetrics(eye(2), nan, g2, g2), /txt has a non-finite value NaN at row 1, column 1/);
  const inf = eye(2); inf[0] = Infinity;
  assert.throws(() => retrievalMetrics(inf, eye(2), g2, g2), /img has a non-finite value Infinity at row 0, column 0/);
  assert.throws(() => retrievalMetrics(new Float32Array(0), eye(2), [], g2), /imgGroups is empty/);
  assert.throws(() => retrievalMetrics(eye(2), new Float32Array(0), g2, []), /txtGroups is empty/);
  assert.throws(() => retrievalMetrics(eye(2), eye(2), g2, ['a', 3 as unknown as string]), /txtGroups\[1\] must be a string/);
  assert.throws(() => retrievalMetrics(eye(2), new Float32Array(4), g2, g2), /txt row 0 is all zeros/);
  assert.throws(() => retrievalMetrics(tensor(eye(2), [1, 2, 2]), eye(2), g2, g2), /img must be a 2-D tensor/);
  assert.throws(() => retrievalMetrics([1, 0] as unknown as Float32Array, eye(2), g2, g2), /img must be a Tensor or a Float32Array/);
  assert.throws(() => retrievalMetrics(eye(2), eye(2), g2, g2, { chunk: 0 }), /opts\.chunk must be a positive integer/);
  assert.throws(() => retrievalMetrics(eye(2), eye(2), g2, g2, { ks: [0] }), /opts\.ks has 0/);
});

test('topK: best first, ties to the lower index, k capped at the gallery size', () => {
  const gallery = unit([[1, 0], [0, 1], [1, 1], [1, 0]]);
  const { indices, scores } = topK(Float32Array.from([1, 0]), gallery, 3, { dim: 2 });
  assert.deepEqual(indices, [[0, 3, 2]]);
  close(scores[0][0], 1, 1e-6); close(scores[0][2], Math.SQRT1_2, 1e-6);
  const all = topK(tensor(unit([[0, 1], [1, 0]]), [2, 2]), gallery, 10);
  assert.deepEqual(all.indices, [[1, 2, 0, 3], [0, 3, 2, 1]]);
  assert.throws(() => topK(Float32Array.from([1, 0]), Float32Array.from([1, 0]), 1), /width is unknown: pass \{ dim \}/);
  assert.throws(() => topK(Float32Array.from([1, 0]), gallery, 0, { dim: 2 }), /k must be a positive integer/);
  assert.throws(() => topK(Float32Array.from([1, 0, 0]), gallery, 1, { dim: 2 }), /query has 3 values, not a multiple of dim 2/);
});

test('chanceLevels: K / G for one relevant item, the hypergeometric rule for several', () => {
  const g = Array.from({ length: 100 }, (_, i) => `g${i}`);
  const c = chanceLevels(g, g);
  close(c['i2t/r@1'], 0.01); close(c['i2t/r@5'], 0.05); close(c['t2i/r@10'], 0.1, 1e-12);
  close(c['i2t/mean_rank'], 101 / 2);
  // Two relevant among four: P(miss@1) = C(2,1)/C(4,1) = 1/2; P(miss@2) = C(2,2)/C(4,2) = 1/6.
  // E[first rank] = (4 + 1) / (2 + 1) = 5/3 (ranks 1, 2, 3 with probabilities 1/2, 1/3, 1/6).
  const d = chanceLevels(['a'], ['a', 'a', 'b', 'b'], [2]);
  close(d['i2t/r@1'], 1 / 2); close(d['i2t/r@2'], 5 / 6); close(d['i2t/r@5'], 1);
  close(d['i2t/mean_rank'], 5 / 3);
  // t2i: text queries of group b have no image in the gallery and are left out; 'a' texts have one of one.
  close(d['t2i/r@1'], 1);
});

test('random embeddings score near the chance level (R@10 over 400 x 400, unique groups)', () => {
  // Expected R@10 = 10/400 = 0.025; over 400 queries the standard deviation is sqrt(.025 * .975 / 400) = 0.0078.
  const n = 400;
  const g = Array.from({ length: n }, (_, i) => `g${i}`);
  const m = retrievalMetrics(randomUnit(n, 32, 5), randomUnit(n, 32, 6), g, g);
  const c = chanceLevels(g, g);
  assert.ok(Math.abs(m.i2t.r10 - c['i2t/r@10']) < 0.04, `i2t R@10 ${m.i2t.r10} vs chance ${c['i2t/r@10']}`);
  assert.ok(Math.abs(m.t2i.meanRank - c['t2i/mean_rank']) < 40, `t2i mean rank ${m.t2i.meanRank} vs ${c['t2i/mean_rank']}`);
});

test('memory: nothing leaks, and a small chunk never holds the N x M score matrix', () => {
  const n = 64;
  const D = 8;
  const img = randomUnit(n, D, 7);
  const txt = randomUnit(n, D, 8);
  const g = Array.from({ length: n }, (_, i) => `g${i % 16}`);
  const before = memory();
  resetPeak();
  retrievalMetrics(img, txt, g, g, { chunk: 2 });
  const after = memory();
  assert.equal(after.numTensors, before.numTensors);
  assert.equal(after.numBytes, before.numBytes);
  // Inputs 2 x 64 x 8 f32 (4 KiB) plus a [2, 64] chunk (512 B); the full matrix alone would be 16 KiB.
  assert.ok(after.peakBytes - before.numBytes < n * n * 4, `peak ${after.peakBytes - before.numBytes} bytes`);
  assert.throws(() => retrievalMetrics(img, txt, g, g.map((x, i) => (i === 3 ? 'zz' : x)), { chunk: 2 }), /no relevant item/);
  assert.equal(memory().numTensors, before.numTensors);
});
