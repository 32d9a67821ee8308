// Sweep specs: validation errors that name the key, grid / list / random expansion (seeded, reproducible), and
// every trial's config checked before anything runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { expandTrials, loadSweepSpec, normalizeSpec, sampleParams, specHash } from './spec';

const base = { name: 's', stage: 'align', metric: 'val/t2i/r@1', mode: 'max' };

test('spec validation: each error names the key at fault', () => {
  const bad: Array<[unknown, RegExp]> = [
    [[], /must be a JSON object/],
    [{ ...base, params: {}, bogus: 1 }, /key bogus is not a sweep spec key/],
    [{ ...base, name: 'a b', params: {} }, /key name must be/],
    [{ ...base, stage: 'caption', params: {} }, /key stage must be "align"/],
    [{ ...base, params: { 'train.lr': { grid: [] } } }, /key params\.train\.lr\.grid must be a non-empty array/],
    [{ ...base, params: { 'train.lr': { grid: [1], values: [2] } } }, /key params\.train\.lr must have exactly one of/],
    [{ ...base, params: { 'train.lr': [1, 2] } }, /key params\.train\.lr must be an object/],
    [{ ...base, params: { 'train.lr': { uniform: [0, 1] } } }, /key params\.train\.lr\.uniform is a range: it needs method "random"/],
    [{ ...base, method: 'random', trials: 2, params: { 'train.lr': { logUniform: [0, 1] } } }, /key params\.train\.lr\.logUniform needs low > 0/],
    [{ ...base, method: 'random', trials: 2, params: { 'train.steps': { int: [1.5, 3] } } }, /key params\.train\.steps\.int needs integer bounds/],
    [{ ...base, method: 'random', params: {} }, /key trials must be an integer/],
    [{ ...base, trials: 3, params: {} }, /key trials applies to method "random" only/],
    [{ ...base, method: 'bayes', params: {} }, /key method must be "grid" or "random"/],
    [{ ...base, mode: 'up', params: {} }, /key mode must be "max" or "min"/],
    [{ ...base, params: { 'a.b': { values: [1, 2] }, 'c.d': { values: [1] } } }, /key params\.c\.d\.values has 1 entries but another values list has 2/],
    [{ ...base, params: {}, halving: { rungs: [10, 5] } }, /key halving\.rungs must be a non-empty, strictly increasing/],
    [{ ...base, params: {}, halving: { rungs: [10], keep: 1.5 } }, /key halving\.keep must be a fraction/],
    [{ ...base, params: {}, halving: { rungs: [10], eta: 3, keep: 0.5 } }, /key halving takes keep or eta, not both/],
    [{ ...base, metric: 'test/t2i/r@1', params: {}, halving: { rungs: [10] } }, /key metric must be a val\/ metric with halving/],
  ];
  for (const [spec, re] of bad) assert.throws(() => normalizeSpec(spec), re, JSON.stringify(spec));
});

test('every trial config is checked up front: an unknown key or bad value names the trial and the key', () => {
  const unknown = normalizeSpec({ ...base, params: { 'train.lrr': { grid: [1e-3] } } });
  assert.throws(() => expandTrials(unknown), /trial 0 \(train\.lrr=0\.001\): align config: unknown key train\.lrr \(did you mean train\.lr\?\)/);
  const badValue = normalizeSpec({ ...base, params: { 'train.batchSize': { grid: [16, 1] } } });
  assert.throws(() => expandTrials(badValue), /trial 1 \(train\.batchSize=1\): align config: key train\.batchSize must be an integer/);
  const halving = normalizeSpec({ ...base, base: { train: { steps: 100, evalEvery: 30 } }, params: {}, halving: { rungs: [20, 40] } });
  assert.throws(() => expandTrials(halving), /key train\.evalEvery \(30\) must divide every halving rung \(20, 40\)/);
  const short = normalizeSpec({ ...base, base: { train: { steps: 40, warmupSteps: 5 } }, params: {}, halving: { rungs: [20, 40] } });
  assert.throws(() => expandTrials(short), /key train\.steps \(40\) must exceed the last halving rung \(40\)/);
});

test('grid crosses grid axes; values lists are zipped; names, experiment and evalEvery are filled in', () => {
  const spec = normalizeSpec({
    ...base, preset: 'quick', base: { train: { steps: 90 } },
    params: {
      'model.arch': { grid: ['dual', 'shared'] },
      'train.lr': { values: [1e-3, 2e-3, 3e-3] },
      'train.batchSize': { values: [32, 64, 128] },
    },
    halving: { rungs: [20, 60], eta: 2 },
  });
  const trials = expandTrials(spec);
  assert.equal(trials.length, 6);
  assert.deepEqual(trials.map((t) => [t.params['model.arch'], t.params['train.lr'], t.params['train.batchSize']]), [
    ['dual', 1e-3, 32], ['dual', 2e-3, 64], ['dual', 3e-3, 128], ['shared', 1e-3, 32], ['shared', 2e-3, 64], ['shared', 3e-3, 128],
  ]);
  assert.deepEqual(Object.keys(trials[0].params), ['model.arch', 'train.lr', 'train.batchSize']);
  assert.equal(trials[4].config.model.arch, 'shared');
  assert.equal(trials[4].config.train.lr, 2e-3);
  assert.equal(trials[4].config.model.visionWidth, 96, 'the preset applies');
  assert.equal(trials[4].config.train.steps, 90, 'the base applies');
  assert.equal(trials[4].config.name, 's-t4');
  assert.equal(trials[4].config.experiment, 's');
  assert.equal(trials[4].config.train.evalEvery, 20, 'gcd of the rungs');
  assert.equal(spec.halving!.keep, 0.5);
});

test('random search is seeded: the same seed gives the same trials, another seed others; ranges are respected', () => {
  const mk = (seed: number) => normalizeSpec({
    ...base, method: 'random', trials: 50, seed,
    params: {
      'train.lr': { logUniform: [1e-4, 1e-2] }, 'train.weightDecay': { uniform: [0, 0.2] },
      'train.warmupSteps': { int: [1, 3] }, 'model.arch': { choice: ['dual', 'shared', 'fusion'] },
    },
  });
  const a = sampleParams(mk(7));
  assert.deepEqual(sampleParams(mk(7)), a);
  assert.notDeepEqual(sampleParams(mk(8)), a);
  for (const r of a) {
    assert.ok((r['train.lr'] as number) >= 1e-4 && (r['train.lr'] as number) <= 1e-2);
    assert.ok((r['train.weightDecay'] as number) >= 0 && (r['train.weightDecay'] as number) <= 0.2);
    assert.ok([1, 2, 3].includes(r['train.warmupSteps'] as number));
  }
  assert.deepEqual(new Set(a.map((r) => r['train.warmupSteps'])), new Set([1, 2, 3]), 'every integer of the range is drawn in 50 trials');
  assert.deepEqual(new Set(a.map((r) => r['model.arch'])), new Set(['dual', 'shared', 'fusion']));
  // log-uniform: about half the draws below the geometric midpoint 1e-3
  const below = a.filter((r) => (r['train.lr'] as number) < 1e-3).length;
  assert.ok(below > 10 && below < 40, `${below} of 50 below 1e-3`);
});

test('spec files: JSON errors name the file and line; the hash ignores key order', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-spec-'));
  try {
    const f = path.join(dir, 'bad.json');
    fs.writeFileSync(f, '{\n  "name": "x",\n  "stage": "align",,\n}');
    assert.throws(() => loadSweepSpec(f), new RegExp(`sweep spec ${f.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: not valid JSON \\(line 3\\)`));
    assert.throws(() => loadSweepSpec(path.join(dir, 'missing.json')), /missing\.json: cannot read it/);
    const g = path.join(dir, 'ok.json');
    fs.writeFileSync(g, JSON.stringify({ ...base, params: { 'train.lr': { grid: [1] } } }));
    const h1 = specHash(loadSweepSpec(g));
    assert.equal(h1, specHash(normalizeSpec({ params: { 'train.lr': { grid: [1] } }, mode: 'max', metric: 'val/t2i/r@1', stage: 'align', name: 's' })));
    assert.notEqual(h1, specHash(normalizeSpec({ ...base, params: { 'train.lr': { grid: [2] } } })));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
