import { test } from 'node:test';
import assert from 'node:assert/strict';
import { filterByScore } from './filter';
import { DataLoader } from './loader';
import { RandomSampler } from './samplers';

interface Item { id: number; score: number }
const items: Item[] = [0.9, 0.1, 0.5, 0.7, 0.3, 0.5, 0.95, 0.2].map((score, id) => ({ id, score }));
const scoreOf = (batch: Item[]): Float32Array => Float32Array.from(batch.map((x) => x.score));

test('filterByScore with a threshold keeps items scoring >= threshold, scoring in batches of batchSize', async () => {
  const sizes: number[] = [];
  const r = await filterByScore(items, async (b) => { sizes.push(b.length); return scoreOf(b); }, { threshold: 0.5, batchSize: 3 });
  assert.deepEqual(sizes, [3, 3, 2]);
  assert.deepEqual(r.kept.map((x) => x.id), [0, 2, 3, 5, 6]);
  assert.deepEqual(r.dropped.map((x) => x.id), [1, 4, 7]);
  assert.deepEqual(Array.from(r.keptIndices), [0, 2, 3, 5, 6]);
  assert.deepEqual(Array.from(r.droppedIndices), [1, 4, 7]);
  assert.deepEqual(r.scores, Float32Array.from(items.map((x) => x.score)));
  assert.equal(r.threshold, 0.5);
});

test('filterByScore with keepFraction keeps the best ceil(f N), ties at the cut broken by index', async () => {
  const r = await filterByScore(items, scoreOf, { keepFraction: 0.5 });
  // Scores sorted: 0.95 (6), 0.9 (0), 0.7 (3), 0.5 (2), 0.5 (5): the fourth place goes to index 2.
  assert.deepEqual(r.kept.map((x) => x.id), [0, 2, 3, 6]);
  assert.equal(r.threshold, Math.fround(0.5));
  const none = await filterByScore(items, scoreOf, { keepFraction: 0 });
  assert.equal(none.kept.length, 0);
  assert.equal(none.threshold, Infinity);
  const all = await filterByScore(items, scoreOf, { keepFraction: 1 });
  assert.equal(all.dropped.length, 0);
});

test('filterByScore: both or neither of threshold/keepFraction, a wrong-length or NaN score are errors', async () => {
  await assert.rejects(filterByScore(items, scoreOf, {}), /exactly one of threshold and keepFraction \(got neither\)/);
  await assert.rejects(filterByScore(items, scoreOf, { threshold: 0, keepFraction: 0.5 }), /got both/);
  await assert.rejects(filterByScore(items, scoreOf, { keepFraction: 1.5 }), /keepFraction must be in \[0, 1\]/);
  await assert.rejects(filterByScore(items, (b) => new Float32Array(b.length - 1), { threshold: 0, batchSize: 4 }), /for items 0\.\.3 it returned a Float32Array of length 3/);
  await assert.rejects(filterByScore(items, (b) => new Float32Array(b.length).fill(NaN), { threshold: 0 }), /score of item 0 is NaN/);
});

test('the kept indices restrict a sampler and a loader: an epoch visits each kept index once and nothing else', async () => {
  const r = await filterByScore(items, scoreOf, { threshold: 0.5 });
  const sampled = new RandomSampler(items.length, { seed: 1, filter: r.keptIndices }).indices(0);
  assert.deepEqual(Array.from(sampled).sort(), Array.from(r.keptIndices));
  const loader = new DataLoader({ length: items.length, filter: r.keptIndices, batchSize: 2, seed: 3, makeBatch: (idx) => Array.from(idx) });
  const seen: number[] = [];
  for await (const b of loader.epoch(0)) seen.push(...b);
  assert.deepEqual(seen.sort(), Array.from(r.keptIndices));
  assert.equal(loader.stepsPerEpoch, 3);
});
