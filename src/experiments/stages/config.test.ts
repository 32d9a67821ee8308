import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { mergePatches, parseOverrides } from './config';
import { ALIGN_DEFAULTS, ALIGN_PRESETS, resolveAlignConfig } from './align/config';

test('defaults, presets and overrides compose in that order', () => {
  const d = resolveAlignConfig();
  assert.deepEqual(d, ALIGN_DEFAULTS);
  const q = resolveAlignConfig('quick');
  assert.equal(q.train.steps, (ALIGN_PRESETS.quick.train as { steps: number }).steps);
  assert.equal(q.train.weightDecay, ALIGN_DEFAULTS.train.weightDecay, 'keys the preset leaves alone keep the default');
  const o = resolveAlignConfig('quick', parseOverrides(['train.lr=3e-4', 'model.arch=shared', 'train.betas=[0.9,0.95]'], 't'));
  assert.equal(o.train.lr, 3e-4);
  assert.equal(o.model.arch, 'shared');
  assert.deepEqual(o.train.betas, [0.9, 0.95]);
  assert.equal(o.train.steps, q.train.steps, 'an override does not reset the preset');
  assert.equal(ALIGN_DEFAULTS.train.lr, 1e-3, 'the defaults object is not mutated');
});

test('unknown keys are named, with a suggestion', () => {
  assert.throws(() => resolveAlignConfig(null, { train: { lrr: 1 } }), /unknown key train\.lrr \(did you mean train\.lr\?\)/);
  assert.throws(() => resolveAlignConfig(null, { modle: {} }), /unknown key modle \(did you mean model/);
  assert.throws(() => resolveAlignConfig('huge'), /unknown preset "huge"; presets: quick, small/);
});

test('wrong types and ranges name the key', () => {
  assert.throws(() => resolveAlignConfig(null, parseOverrides(['train.lr=fast'], 't')), /key train\.lr must be a finite number, got "fast"/);
  assert.throws(() => resolveAlignConfig(null, { train: { steps: 0 } }), /key train\.steps must be an integer in \[1/);
  assert.throws(() => resolveAlignConfig(null, { model: { arch: 'triple' } }), /key model\.arch must be one of "dual", "shared", "fusion", got "triple"/);
  assert.throws(() => resolveAlignConfig(null, { model: { patchSize: 5 } }), /model\.patchSize \(5\) must divide data\.imageSize \(32\)/);
  assert.throws(() => resolveAlignConfig(null, { train: { accumulate: 3 } }), /train\.accumulate \(3\) must divide train\.batchSize/);
  assert.throws(() => resolveAlignConfig(null, { data: { langs: 'en' } }), /key data\.langs must be an array/);
  assert.throws(() => resolveAlignConfig(null, { data: { filter: { checkpoint: 'x.safetensors' } } }), /exactly one of threshold and keepFraction/);
  assert.throws(() => resolveAlignConfig(null, { data: { balance: { en: -1 } } }), /key data\.balance\.en must be a weight >= 0/);
});

test('parseOverrides: JSON values, strings, nesting and bad items', () => {
  assert.deepEqual(parseOverrides(['a.b=1', 'a.c=true', 'd=hello', 'e=null'], 't'), { a: { b: 1, c: true }, d: 'hello', e: null });
  assert.throws(() => parseOverrides(['novalue'], 't'), /--set expects key=value, got "novalue"/);
  assert.throws(() => parseOverrides(['a..b=1'], 't'), /bad key "a\.\.b"/);
  assert.throws(() => parseOverrides(['a=1', 'a.b=2'], 't'), /conflicts/);
  assert.deepEqual(mergePatches({ a: { b: 1, c: 2 } }, { a: { c: 3 }, d: 4 }), { a: { b: 1, c: 3 }, d: 4 });
});
