/** `modalab generate` argument parsing: defaults, flags, and errors that say what was wrong. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseGenerateArgs, stageOfResume } from './lm';

test('generate arguments: checkpoint, prompt, sampling flags; bad input names the flag', () => {
  const a = parseGenerateArgs(['runs/lm-1/last.safetensors', 'a red', '--greedy', '--max-new', '12', '--samples', '2', '--no-cache']);
  assert.equal(a.target, 'runs/lm-1/last.safetensors');
  assert.equal(a.prompt, 'a red');
  assert.equal(a.greedy, true);
  assert.equal(a.maxNew, 12);
  assert.equal(a.samples, 2);
  assert.equal(a.useCache, false);
  const d = parseGenerateArgs(['7']);
  assert.deepEqual([d.prompt, d.temperature, d.topP, d.topK, d.seed, d.useCache], ['', 0.8, 0.9, 0, 0, true]);
  assert.throws(() => parseGenerateArgs([]), /usage: modalab generate/);
  assert.throws(() => parseGenerateArgs(['x', '--top-p']), /--top-p needs a number/);
  assert.throws(() => parseGenerateArgs(['x', '--temprature', '1']), /unknown argument "--temprature"/);
  assert.throws(() => parseGenerateArgs(['x', '--samples', '0']), /--samples must be an integer in \[1, 64\]/);
});

test('stageOfResume: a missing checkpoint file is a clear error', () => {
  assert.throws(() => stageOfResume('/nonexistent/last.safetensors'), /does not exist/);
});
