/**
 * The GPT decoder and generation: config errors name the key, the tied head, causality, the next-token loss
 * (lengths, targets, prefix), a few steps of training lower the loss, cached and uncached generation agree
 * token for token (greedy and seeded sampling, with and without a prefix), and the samplers keep what they
 * promise (top-k, top-p mass, temperature -> 0).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../../index';
import { GPT, resolveGPTConfig } from './gpt';
import { generate, samplingDistribution, sampleToken, seededRandom } from './generate';

const V = 61;
function tiny(over: Record<string, unknown> = {}): GPT {
  ml.manualSeed(7);
  return new GPT({ vocabSize: V, contextLength: 24, width: 32, layers: 2, heads: 4, ...over });
}

function ids(B: number, T: number, seed: number): ml.Tensor<'i32'> {
  const r = seededRandom(seed);
  return ml.tensor(Int32Array.from({ length: B * T }, () => Math.floor(r() * V)), [B, T], { dtype: 'i32' });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('GPT config: bad values throw errors naming the key', () => {
  assert.throws(() => resolveGPTConfig({ vocabSize: 0 }), /key vocabSize/);
  assert.throws(() => resolveGPTConfig({ vocabSize: 10, width: 30, heads: 4 }), /key heads \(4\) must divide key width \(30\)/);
  assert.throws(() => resolveGPTConfig({ vocabSize: 10, layers: 1.5 }), /key layers/);
  assert.throws(() => resolveGPTConfig({ vocabSize: 10, dropout: 1 }), /key dropout/);
  assert.throws(() => resolveGPTConfig({ vocabSize: 10, mlpRatio: 0 }), /key mlpRatio/);
  assert.throws(() => resolveGPTConfig({ vocabSize: 10, contextLenght: 5 } as never), /unknown key contextLenght/);
  const c = resolveGPTConfig({ vocabSize: 10 });
  assert.equal(c.contextLength, 128);
  assert.equal(c.width, 128);
});

test('GPT: stable parameter names, the head tied to the token embedding, shapes and context errors', () => {
  const m = tiny();
  const names = Object.keys(m.stateDict());
  for (const n of ['tokenEmbed.weight', 'posEmbed', 'blocks.0.attn.qkv.weight', 'blocks.1.mlp.layers.1.bias', 'lnFinal.weight']) {
    assert.ok(names.includes(n), n);
  }
  assert.ok(!names.some((n) => n.startsWith('head')), 'no separate head weight');
  ml.tidy(() => {
    const tok = ids(2, 5, 1);
    const logits = m.forward(tok);
    assert.deepEqual(logits.shape, [2, 5, V]);
    // logits = lnFinal(h) @ tokenEmbed.weight^T
    const h = m.hidden(null, tok);
    const manual = ml.matmul(h, m.tokenEmbed.weight, { transB: true });
    assert.ok(maxAbsDiff(logits.toArray(), manual.toArray()) < 1e-6);
    assert.throws(() => m.forward(ids(1, 25, 2)), /25 positions exceed contextLength 24/);
    assert.throws(() => m.forward(ml.zeros([1, 4])), /tokens must be an i32 tensor/);
    assert.throws(() => m.forwardEmbeds(ml.randn([1, 3, 31]), tok), /prefix must be a float tensor \[2, P, 32\]/);
    assert.throws(() => m.forwardEmbeds(ml.randn([2, 20, 32]), tok), /25 positions exceed/);
  });
  m.dispose();
});

test('GPT is causal: a later token changes no earlier logit; a prefix changes every token logit', () => {
  const m = tiny();
  ml.tidy(() => {
    const a = ids(1, 8, 3);
    const arr = a.toArray() as Int32Array;
    const b2 = Int32Array.from(arr);
    b2[6] = (b2[6] + 1) % V;
    const la = m.forward(a).toArray() as Float32Array;
    const lb = m.forward(ml.tensor(b2, [1, 8], { dtype: 'i32' })).toArray() as Float32Array;
    assert.ok(maxAbsDiff(la.subarray(0, 6 * V), lb.subarray(0, 6 * V)) < 1e-6, 'positions 0..5 unchanged');
    assert.ok(maxAbsDiff(la.subarray(6 * V), lb.subarray(6 * V)) > 1e-4, 'positions 6.. changed');
    const withPrefix = m.forwardEmbeds(ml.randn([1, 3, 32]), a);
    assert.deepEqual(withPrefix.shape, [1, 11, V]);
    const tokPart = withPrefix.toArray() as Float32Array;
    assert.ok(maxAbsDiff(tokPart.subarray(3 * V, 4 * V), la.subarray(0, V)) > 1e-4);
  });
  m.dispose();
});

test('GPT.loss: next-token CE; lengths equal explicit targets; prefix positions predict nothing', () => {
  const m = tiny();
  ml.tidy(() => {
    const tok = ids(2, 6, 4);
    const t = tok.toArray() as Int32Array;
    // By hand: mean over counted positions of -log softmax(logits)[next].
    const logits = m.forward(tok).toArray() as Float32Array;
    const lens = [6, 3];
    let sum = 0, n = 0;
    for (let b = 0; b < 2; b++) for (let p = 0; p + 1 < lens[b]; p++) {
      const row = logits.subarray((b * 6 + p) * V, (b * 6 + p + 1) * V);
      const mx = Math.max(...row);
      const lse = mx + Math.log(row.reduce((s, x) => s + Math.exp(x - mx), 0));
      sum += lse - row[t[b * 6 + p + 1]];
      n++;
    }
    const byLen = m.loss(tok, { lengths: ml.tensor(lens, [2], { dtype: 'i32' }) }).item();
    assert.ok(Math.abs(byLen - sum / n) < 1e-5, `${byLen} vs ${sum / n}`);
    const targets = new Int32Array(12).fill(-100);
    for (let b = 0; b < 2; b++) for (let p = 0; p + 1 < lens[b]; p++) targets[b * 6 + p] = t[b * 6 + p + 1];
    const byTargets = m.loss(tok, { targets: ml.tensor(targets, [2, 6], { dtype: 'i32' }) }).item();
    assert.equal(byTargets, byLen);
    // Untrained: near ln V.
    assert.ok(Math.abs(m.loss(tok).item() - Math.log(V)) < 0.5);
    // With a prefix the loss is over the same token positions (shifted by P inside the model).
    const prefix = ml.randn([2, 4, 32]);
    const lp = m.loss(tok, { prefix }).item();
    const full = m.forwardEmbeds(prefix, tok);
    const tokLogits = ml.slice(full, 1, 4, 10);
    const tgt = new Int32Array(12).fill(-100);
    for (let b = 0; b < 2; b++) for (let p = 0; p < 5; p++) tgt[b * 6 + p] = t[b * 6 + p + 1];
    const ref = ml.crossEntropy(tokLogits, ml.tensor(tgt, [2, 6], { dtype: 'i32' })).item();
    assert.ok(Math.abs(lp - ref) < 1e-6);
    assert.throws(() => m.loss(tok, { lengths: ml.tensor([7, 1], [2], { dtype: 'i32' }) }), /lengths\[0\] = 7 is outside \[1, 6\]/);
    assert.throws(() => m.loss(tok, { targets: ml.tensor(new Int32Array(6), [1, 6], { dtype: 'i32' }) }), /targets must be an i32 tensor \[2, 6\]/);
  });
  m.dispose();
});

test('GPT trains: AdamW on one repeated batch lowers the loss; gradients reach the tied embedding', () => {
  const m = tiny({ dropout: 0.1 });
  const tok = ids(4, 12, 5);
  const opt = new ml.optim.AdamW(m.parameters(), { lr: 3e-3 });
  const losses: number[] = [];
  for (let s = 0; s < 25; s++) {
    opt.zeroGrad();
    ml.tidy(() => {
      const l = m.loss(tok);
      l.backward();
      losses.push(l.item());
    });
    if (s === 0) assert.ok(m.tokenEmbed.weight.grad !== null);
    opt.step();
  }
  assert.ok(losses[24] < losses[0] - 1, `loss ${losses[0]} -> ${losses[24]}`);
  tok.dispose();
  m.dispose();
});

test('generation: cached and uncached give the same tokens and the same logits (greedy, sampling, prefix)', () => {
  const m = tiny();
  const before = ml.memory().numTensors;
  const prompts = [[1, 5, 9], [2, 7, 3], [4, 4, 4]];
  const cases: Array<Record<string, unknown>> = [
    { greedy: true },
    { temperature: 1.3, seed: 11 },
    { temperature: 0.8, topK: 5, seed: 3 },
    { temperature: 1, topP: 0.7, seed: 5 },
  ];
  for (const c of cases) {
    const logs: Float32Array[][] = [[], []];
    const run = (useCache: boolean, k: number) => generate(m, prompts, {
      maxNewTokens: 12, useCache, ...c, onLogits: (_s, l) => logs[k].push(Float32Array.from(l)),
    });
    const a = run(true, 0);
    const b = run(false, 1);
    assert.deepEqual(a.tokens, b.tokens, JSON.stringify(c));
    assert.equal(a.tokens[0].length, 12);
    assert.equal(logs[0].length, 12);
    for (let s = 0; s < logs[0].length; s++) assert.ok(maxAbsDiff(logs[0][s], logs[1][s]) < 1e-5, `step ${s}: ${maxAbsDiff(logs[0][s], logs[1][s])}`);
  }
  // The first step's logits are those of forward() at the prompt's last position.
  let first: Float32Array | null = null;
  generate(m, prompts[0], { maxNewTokens: 1, greedy: true, onLogits: (_s, l) => { first = Float32Array.from(l); } });
  ml.noGrad(() => ml.tidy(() => {
    const f = m.forward(ml.tensor(prompts[0], [1, 3], { dtype: 'i32' })).toArray() as Float32Array;
    assert.ok(maxAbsDiff(first!, f.subarray(2 * V)) < 1e-5);
  }));
  // With a prefix of embeddings.
  const prefix = ml.randn([3, 4, 32]);
  const logs: Float32Array[][] = [[], []];
  const pa = generate(m, prompts, { maxNewTokens: 8, prefixEmbeds: prefix, seed: 2, onLogits: (_s, l) => logs[0].push(Float32Array.from(l)) });
  const pb = generate(m, prompts, { maxNewTokens: 8, prefixEmbeds: prefix, seed: 2, useCache: false, onLogits: (_s, l) => logs[1].push(Float32Array.from(l)) });
  assert.deepEqual(pa.tokens, pb.tokens);
  for (let s = 0; s < 8; s++) assert.ok(maxAbsDiff(logs[0][s], logs[1][s]) < 1e-5);
  const noPrefix = generate(m, prompts, { maxNewTokens: 8, seed: 2 });
  assert.notDeepEqual(noPrefix.tokens, pa.tokens, 'the prefix conditions the output');
  prefix.dispose();
  assert.equal(ml.memory().numTensors, before, 'generation leaks no tensor');
  m.dispose();
});

test('generation stops at eos (not included) and at the context length; same seed, same tokens', () => {
  const m = tiny();
  const free = generate(m, [3, 1], { maxNewTokens: 10, temperature: 1, seed: 9 });
  const again = generate(m, [3, 1], { maxNewTokens: 10, temperature: 1, seed: 9 });
  assert.deepEqual(free.tokens, again.tokens);
  const other = generate(m, [3, 1], { maxNewTokens: 10, temperature: 1, seed: 10 });
  assert.notDeepEqual(free.tokens, other.tokens);
  const toks = free.tokens[0];
  const eos = toks[4];
  const cut = toks.indexOf(eos);
  const stopped = generate(m, [3, 1], { maxNewTokens: 10, temperature: 1, seed: 9, eosId: eos });
  assert.deepEqual(stopped.tokens[0], toks.slice(0, cut));
  assert.deepEqual(stopped.finishReason, ['eos']);
  // Context 24, prompt 2: logits exist for 23 more tokens.
  const long = generate(m, [3, 1], { maxNewTokens: 100, greedy: true });
  assert.equal(long.tokens[0].length, 23);
  assert.deepEqual(long.finishReason, ['length']);
  assert.throws(() => generate(m, [[1, 2], [3]], { maxNewTokens: 2 }), /row 0 has 2 tokens, row 1 has 1/);
  assert.throws(() => generate(m, [1, V], { maxNewTokens: 2 }), /token 1 = 61 is not an id/);
  assert.throws(() => generate(m, [1], { maxNewTokens: 0 }), /maxNewTokens/);
  assert.throws(() => generate(m, [1], { maxNewTokens: 2, topP: 0 }), /topP must be in \(0, 1\]/);
  m.dispose();
});

test('sampling: top-k never leaves the k best, top-p keeps the smallest set reaching p, temperature -> 0 is greedy', () => {
  const r = seededRandom(1);
  const logits = Float32Array.from({ length: 50 }, () => r() * 6 - 3);
  const order = Array.from({ length: 50 }, (_, i) => i).sort((a, b) => logits[b] - logits[a]);
  const best5 = new Set(order.slice(0, 5));
  const rand = seededRandom(2);
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const id = sampleToken(logits, { topK: 5, temperature: 2 }, rand);
    assert.ok(best5.has(id), `top-k drew ${id}`);
    seen.add(id);
  }
  assert.equal(seen.size, 5, 'with temperature 2 all five are drawn');
  // top-p: the kept mass reaches p, and without the last kept token it would not.
  const mx = Math.max(...logits);
  const z = logits.reduce((s, x) => s + Math.exp(x - mx), 0);
  const p = (i: number) => Math.exp(logits[i] - mx) / z;
  for (const topP of [0.3, 0.5, 0.9]) {
    const d = samplingDistribution(logits, { topP });
    const mass = Array.from(d.ids).reduce((s, i) => s + p(i), 0);
    assert.ok(mass >= topP - 1e-9, `kept ${mass} < ${topP}`);
    assert.ok(mass - p(d.ids[d.ids.length - 1]) < topP, 'the set is the smallest');
    assert.deepEqual(Array.from(d.ids), order.slice(0, d.ids.length), 'the most likely first');
    assert.ok(Math.abs(d.probs.reduce((s, x) => s + x, 0) - 1) < 1e-12);
  }
  const small = samplingDistribution(logits, { topP: 1e-6 });
  assert.deepEqual(Array.from(small.ids), [order[0]]);
  // temperature -> 0: sampling equals greedy.
  for (const temperature of [0, 1e-4]) {
    for (let i = 0; i < 50; i++) assert.equal(sampleToken(logits, { temperature }, rand), order[0]);
  }
  // Ties: greedy takes the lowest id.
  assert.equal(sampleToken([1, 3, 3, 0], { greedy: true }, rand), 1);
});

test('generation with LoRA adapters on the blocks: the cached path runs the wrapped layers too', () => {
  const m = tiny();
  const prompt = [[1, 5, 9], [2, 7, 3]];
  const base: Float32Array[] = [];
  generate(m, prompt, { maxNewTokens: 1, greedy: true, onLogits: (_s, l) => base.push(Float32Array.from(l)) });
  const wrapped = ml.nn.applyLora(m, { rank: 4, alpha: 8, targets: ['attn.qkv', 'attn.proj', 'mlp.layers.0', 'mlp.layers.1'] });
  assert.equal(wrapped.length, 8);
  // Non-zero B, so that the adapters change what the model computes.
  for (const [name, mod] of m.namedModules()) {
    if (name.endsWith('lora_B')) {
      const lin = mod as ml.nn.Linear;
      const old = lin.weight;
      lin.weight = lin.registerParameter('weight', ml.noGrad(() => ml.mul(ml.randn([...old.shape]), 0.2)));
      old.dispose();
    }
  }
  const logs: Float32Array[][] = [[], []];
  const a = generate(m, prompt, { maxNewTokens: 10, temperature: 1, seed: 4, onLogits: (_s, l) => logs[0].push(Float32Array.from(l)) });
  const b = generate(m, prompt, { maxNewTokens: 10, temperature: 1, seed: 4, useCache: false, onLogits: (_s, l) => logs[1].push(Float32Array.from(l)) });
  assert.deepEqual(a.tokens, b.tokens);
  for (let s = 0; s < 10; s++) assert.ok(maxAbsDiff(logs[0][s], logs[1][s]) < 1e-5);
  assert.ok(maxAbsDiff(logs[0][0], base[0]) > 1e-3, 'the adapters change the first logits');
  m.dispose();
});
