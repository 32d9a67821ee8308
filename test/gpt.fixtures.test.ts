/**
 * Fidelity of the GPT decoder against PyTorch (bench/torch/gpt.py) from the same initial weights: the logits of a
 * batch (with and without a prefix of embeddings), the greedy continuation of two prompts (PyTorch re-runs the
 * whole sequence; modalab uses its KV cache), and the first 20 AdamW losses, in float32. The references are
 * test/fixtures/gpt_fidelity.json, written by test/fixtures/make_gpt_fixtures.py (see test/fixtures/gpt_fixtures.ts).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ml from '../src/index';
import { generate } from '../src/experiments/models/generate';
import { BATCH, CONFIG, HYPER, NEW_TOKENS, PREFIX, PROMPT, STEPS, checksums, initialModel, rawBatches, toTensors } from './fixtures/gpt_fixtures';

function fixture(): any {
  const candidates = [
    path.join(__dirname, 'fixtures', 'gpt_fidelity.json'),
    path.resolve(__dirname, '..', '..', 'test', 'fixtures', 'gpt_fidelity.json'),
    path.join(process.cwd(), 'test', 'fixtures', 'gpt_fidelity.json'),
  ];
  for (const f of candidates) if (fs.existsSync(f)) return JSON.parse(fs.readFileSync(f, 'utf8'));
  throw new Error(`gpt_fidelity.json not found in ${candidates.join(', ')}`);
}

const FX = fixture();
const RTOL = 1e-4;

/** |x - ref| <= atol + rtol |ref| everywhere; reports the worst element. */
function close(got: ArrayLike<number>, ref: number[], atol: number, rtol: number, what: string): void {
  assert.equal(got.length, ref.length, `${what}: length`);
  let worst = 0, at = -1;
  for (let i = 0; i < ref.length; i++) {
    const used = Math.abs(got[i] - ref[i]) / (atol + rtol * Math.abs(ref[i]));
    if (!(used <= worst)) { worst = used; at = i; }
  }
  assert.ok(worst <= 1, `${what}: element ${at} is ${got[at]}, PyTorch ${ref[at]} (${worst.toFixed(2)}x the tolerance)`);
}

test('GPT matches PyTorch: logits (with a prefix too), greedy tokens through the KV cache, 20 AdamW losses', () => {
  const model = initialModel();
  const sums = checksums(model.stateDict());
  assert.deepEqual(Object.keys(sums).sort(), Object.keys(FX.checksums).sort(), 'parameter names changed: regenerate the fixtures');
  for (const [k, [s, q, first]] of Object.entries(sums)) {
    const [rs, rq, rf] = FX.checksums[k] as number[];
    assert.ok(Math.abs(s - rs) <= 1e-9 * (1 + Math.abs(rs)) && Math.abs(q - rq) <= 1e-9 * (1 + rq) && first === rf,
      `initial ${k} differs from the fixtures' (the initialisation changed?): regenerate them (test/fixtures/gpt_fixtures.ts)`);
  }
  const { batches, prefix } = rawBatches();
  const T = CONFIG.contextLength - PREFIX;
  ml.noGrad(() => ml.tidy(() => {
    const { tokens, lengths } = toTensors(batches[0]);
    const two = ml.slice(tokens, 0, 0, 2);
    close(model.forward(two).toArray(), FX.logits0, 1e-5, 1e-4, 'logits');
    const pre = ml.tensor(prefix, [BATCH, PREFIX, CONFIG.width]);
    close(model.forwardEmbeds(ml.slice(pre, 0, 0, 2), two).toArray(), FX.logits0_prefix, 1e-5, 1e-4, 'logits after a prefix');
    close([model.loss(tokens, { lengths, prefix: pre }).item()], [FX.loss0_prefix], 0, RTOL, 'loss after a prefix');
    assert.equal(T, tokens.shape[1]);
  }));
  assert.deepEqual(generate(model, PROMPT, { maxNewTokens: NEW_TOKENS, greedy: true }).tokens, FX.greedy, 'greedy tokens (KV cache) equal PyTorch\'s (no cache)');

  const opt = new ml.optim.AdamW(model.parameters(), HYPER);
  const losses: number[] = [];
  for (let i = 0; i < STEPS; i++) {
    ml.tidy(() => {
      opt.zeroGrad();
      const { tokens, lengths } = toTensors(batches[i]);
      const l = model.loss(tokens, { lengths });
      l.backward();
      opt.step();
      losses.push(l.item());
    });
  }
  assert.ok(losses[STEPS - 1] < losses[0] - 0.3, `the loss falls: ${losses[0]} -> ${losses[STEPS - 1]}`);
  close(losses, FX.losses, 0, RTOL, 'AdamW losses');
  model.dispose();
});
