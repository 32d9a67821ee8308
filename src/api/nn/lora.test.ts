/**
 * LoRA: a fresh adapter leaves the model exactly as it was; training moves only the adapter; merging gives the
 * same outputs; the forward and the gradients of A and B match PyTorch (test/fixtures/make_lora_fixtures.py);
 * names, adapter checkpoints, errors that name the problem, and no leak per training step.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ml from '../../index';
import * as nn from './index';
import { AdamW } from '../optim';
import { assertClose } from '../../../test/helpers';

/** Two causal transformer blocks and an MLP head: the shapes of the language model the instruct stage tunes. */
class TinyLM extends nn.Module {
  blocks = this.registerModule('blocks', new nn.ModuleList([0, 1].map(() => new nn.TransformerBlock(8, 2, { causal: true }))));
  head = this.registerModule('head', new nn.MLP([8, 16, 4]));
  forward(x: ml.Tensor): ml.Tensor<'f32'> {
    let h: ml.Tensor<'f32'> = x as ml.Tensor<'f32'>;
    for (const b of this.blocks) {
      const next = b.forward(h);
      if (h !== x) h.dispose();
      h = next;
    }
    const out = this.head.forward(h);
    if (h !== x) h.dispose();
    return out;
  }
}

const TARGETS = ['attn.qkv', 'attn.proj', /mlp\.layers\.\d+$/];
const WRAPPED = ['blocks.0.attn.qkv', 'blocks.0.attn.proj', 'blocks.0.mlp.layers.0', 'blocks.0.mlp.layers.1',
  'blocks.1.attn.qkv', 'blocks.1.attn.proj', 'blocks.1.mlp.layers.0', 'blocks.1.mlp.layers.1'];

function model(seed = 0): TinyLM {
  ml.manualSeed(seed);
  return new TinyLM();
}

function input(seed = 1): ml.Tensor<'f32'> {
  ml.manualSeed(seed);
  return ml.randn([2, 5, 8]);
}

const values = (t: ml.Tensor): Float32Array => t.toArray() as Float32Array;

/** Bitwise equality, reporting the first differing element (=== would call -0 and 0 equal; Object.is would not). */
function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths differ`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} is ${a[i]}, expected ${b[i]}`);
}

function snapshot(m: nn.Module): Record<string, Float32Array> {
  return Object.fromEntries(Object.entries(m.stateDict()).map(([k, t]) => [k, values(t).slice()]));
}

/** A few AdamW steps on mean(out^2) (B starts at 0, so the first step moves B only; later steps move A too). */
function train(m: TinyLM, steps: number, onStep?: (i: number) => void): void {
  const opt = new AdamW(m.parameters().filter((p) => p.requiresGrad), { lr: 1e-2 });
  for (let i = 0; i < steps; i++) {
    ml.tidy(() => {
      const loss = m.forward(input(10 + i)).square().mean();
      loss.backward();
    });
    opt.step();
    m.zeroGrad();
    onStep?.(i);
  }
}

test('a fresh LoRA model (B = 0) gives bitwise the base model\'s output, even with LoRA dropout in train mode', () => {
  const m = model();
  const x = input();
  const before = values(m.forward(x));
  const names = nn.applyLora(m, { rank: 4, alpha: 8, dropout: 0.2, targets: TARGETS });
  assert.deepEqual(names, WRAPPED);
  assert.ok(m.training, 'train mode: the LoRA dropout is active');
  for (const n of WRAPPED) assert.ok(m.namedModules().find(([k]) => k === n)![1] instanceof nn.LoRALinear, `${n} is wrapped`);
  assertSameBits(values(m.forward(x)), before, 'TransformerBlock stack + MLP after applyLora');
  m.eval();
  assertSameBits(values(m.forward(x)), before, 'the same in eval mode');
});

test('applyLora names: base parameters keep their names, the adapter is <name>.lora_A.weight / lora_B.weight', () => {
  const m = model();
  const baseNames = Object.keys(m.stateDict());
  nn.applyLora(m, { rank: 2, targets: ['blocks.1.attn.qkv'] });
  const names = Object.keys(m.stateDict());
  const i = names.indexOf('blocks.1.attn.qkv.weight');
  assert.deepEqual(names.slice(i, i + 4), ['blocks.1.attn.qkv.weight', 'blocks.1.attn.qkv.bias',
    'blocks.1.attn.qkv.lora_A.weight', 'blocks.1.attn.qkv.lora_B.weight']);
  assert.deepEqual(names.filter((n) => !n.includes('lora_')), baseNames, 'every base name is still there, in order');
  const sd = m.stateDict();
  assert.deepEqual(sd['blocks.1.attn.qkv.lora_A.weight'].shape, [2, 8], 'A [rank, in]');
  assert.deepEqual(sd['blocks.1.attn.qkv.lora_B.weight'].shape, [24, 2], 'B [out, rank]');
  assert.ok(values(sd['blocks.1.attn.qkv.lora_B.weight']).every((v) => v === 0), 'B starts at zero');
  // A is initialised like a Linear (kaiming-uniform a = sqrt(5)): uniform within 1/sqrt(in), not all equal.
  const a = values(sd['blocks.1.attn.qkv.lora_A.weight']);
  assert.ok(a.every((v) => Math.abs(v) <= 1 / Math.sqrt(8)) && new Set(a).size === a.length);
  // Only the adapter is trainable (freezeBase defaults to true).
  const trainable = m.namedParameters().filter(([, p]) => p.requiresGrad).map(([n]) => n);
  assert.deepEqual(trainable, ['blocks.1.attn.qkv.lora_A.weight', 'blocks.1.attn.qkv.lora_B.weight']);
  assert.equal(m.numParameters({ trainableOnly: true }), 2 * (8 + 24));
  assert.deepEqual(Object.keys(nn.loraStateDict(m)), trainable);
  assert.match(String(m), /\(qkv\): LoRALinear\(\n\s+inFeatures=8, outFeatures=24, bias=true, rank=2, alpha=2\n\s+\(lora_A\): Linear\(inFeatures=8, outFeatures=2, bias=false\)/);
});

test('applyLora with freezeBase: false leaves the other parameters trainable; a wrapped base is frozen anyway', () => {
  const m = model();
  nn.applyLora(m, { rank: 2, targets: ['head.layers.0'], freezeBase: false });
  const frozen = m.namedParameters().filter(([, p]) => !p.requiresGrad).map(([n]) => n);
  assert.deepEqual(frozen, ['head.layers.0.weight', 'head.layers.0.bias']);
});

test('a Linear shared by two parents is wrapped once and replaced in both', () => {
  class Shared extends nn.Module {
    a = this.registerModule('a', new nn.Sequential(new nn.Linear(3, 3)));
    b = this.registerModule('b', new nn.Sequential());
    constructor() { super(); this.b.push(this.a.at(0)); }
    forward() { return null; }
  }
  ml.manualSeed(0);
  const m = new Shared();
  assert.deepEqual(nn.applyLora(m, { rank: 1, targets: ['a.0'] }), ['a.0']);
  assert.ok(m.b.at(0) instanceof nn.LoRALinear);
  assert.equal(m.a.at(0), m.b.at(0));
});

test('after AdamW steps only LoRA parameters changed (base bitwise unchanged); merged equals unmerged', () => {
  const m = model();
  nn.applyLora(m, { rank: 4, alpha: 8, targets: TARGETS });
  const before = snapshot(m);
  train(m, 3);
  const after = snapshot(m);
  for (const k of Object.keys(before)) {
    if (k.includes('.lora_')) {
      assert.ok(after[k].some((v, i) => v !== before[k][i]), `${k} was trained`);
    } else {
      assertSameBits(after[k], before[k], `${k} (frozen)`);
    }
  }
  const x = input(3);
  m.eval();
  const unmerged = values(m.forward(x));
  const baseNames = Object.keys(model().stateDict());
  const lora = nn.loraStateDict(m);
  const merged = nn.mergeLora(m);
  assert.deepEqual(merged, WRAPPED);
  assert.ok(Object.values(lora).every((t) => t.isDisposed), 'the adapter tensors are freed by the merge');
  assert.deepEqual(Object.keys(m.stateDict()), baseNames, 'plain Linears and the base names again');
  assert.ok(m.modules().every((mod) => !(mod instanceof nn.LoRALinear)));
  assert.ok(m.blocks.at(0).attn.qkv instanceof nn.Linear);
  assertClose(values(m.forward(x)), unmerged, { rtol: 1e-5, atol: 1e-5, what: 'merged vs unmerged output' });
  // The merged weight really moved: it is not the base weight any more.
  assert.ok(values(m.blocks.at(0).attn.qkv.weight).some((v, i) => v !== before['blocks.0.attn.qkv.weight'][i]));
  assert.throws(() => nn.mergeLora(m), /mergeLora: the model \(TinyLM\) has no LoRA layers/);
});

test('an adapter checkpoint round-trips: save loraStateDict, load it into a fresh base with the same LoRA', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-lora-'));
  try {
    const m1 = model();
    nn.applyLora(m1, { rank: 2, alpha: 4, targets: TARGETS });
    train(m1, 2);
    const file = path.join(dir, 'adapter.safetensors');
    ml.save(file, nn.loraStateDict(m1), { lora: JSON.stringify({ rank: 2, alpha: 4 }) });
    const m2 = model();   // the same base weights (same seed)
    const fresh = model(7);   // other base weights: a base checkpoint loads into a LoRA model by its own names
    nn.applyLora(fresh, { rank: 2, alpha: 4, targets: TARGETS });
    const r = fresh.loadStateDict(m2.stateDict(), { strict: false });
    assert.deepEqual(r.missingKeys, Object.keys(nn.loraStateDict(fresh)), 'only the adapter is missing');
    assert.deepEqual(r.unexpectedKeys, []);
    const { tensors } = ml.load(file);
    nn.loadLoraStateDict(fresh, tensors);
    m1.eval();
    fresh.eval();
    const x = input(4);
    assertSameBits(values(fresh.forward(x)), values(m1.forward(x)), 'reloaded adapter on the same base');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('LoRALinear forward and the gradients of x, A and B match PyTorch (make_lora_fixtures.py)', () => {
  interface Case {
    name: string; xShape: number[]; inFeatures: number; outFeatures: number; rank: number; alpha: number;
    x: number[]; W: number[]; b: number[] | null; A: number[]; B: number[]; R: number[]; out: number[];
    grads: { x: number[]; A: number[]; B: number[] };
  }
  const candidates = [
    path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures', 'lora.json'),
    path.resolve(__dirname, '..', '..', '..', '..', 'test', 'fixtures', 'lora.json'),
    path.join(process.cwd(), 'test', 'fixtures', 'lora.json'),
  ];
  const file = candidates.find((p) => fs.existsSync(p));
  if (!file) throw new Error(`lora fixtures not found in ${candidates.join(', ')}: run /usr/bin/python3 test/fixtures/make_lora_fixtures.py`);
  const { cases } = JSON.parse(fs.readFileSync(file, 'utf8')) as { cases: Case[] };
  assert.equal(cases.length, 3);
  for (const c of cases) {
    const lin = new nn.Linear(c.inFeatures, c.outFeatures, { bias: c.b !== null });
    lin.loadStateDict({ weight: ml.tensor(c.W, [c.outFeatures, c.inFeatures]), ...(c.b ? { bias: ml.tensor(c.b, [c.outFeatures]) } : {}) });
    const l = new nn.LoRALinear(lin, { rank: c.rank, alpha: c.alpha });
    nn.loadLoraStateDict(l, { 'lora_A.weight': ml.tensor(c.A, [c.rank, c.inFeatures]), 'lora_B.weight': ml.tensor(c.B, [c.outFeatures, c.rank]) });
    const x = ml.tensor(c.x, [...c.xShape, c.inFeatures], { requiresGrad: true });
    const out = l.forward(x);
    assertClose(values(out), c.out, { what: `${c.name}: output` });
    out.backward(ml.tensor(c.R, [...c.xShape, c.outFeatures]));
    assertClose(values(x.grad!), c.grads.x, { what: `${c.name}: grad x` });
    assertClose(values(l.lora_A.weight.grad!), c.grads.A, { what: `${c.name}: grad A` });
    assertClose(values(l.lora_B.weight.grad!), c.grads.B, { what: `${c.name}: grad B` });
    assert.equal(l.weight.grad, null, 'the frozen base weight gets no gradient');
    assert.equal(l.bias?.grad ?? null, null, 'nor the bias');
  }
});

test('errors name the problem and change nothing', () => {
  const m = model();
  const names = Object.keys(m.stateDict());
  assert.throws(() => nn.applyLora(m, { rank: 0, targets: ['attn.qkv'] }), /applyLora: rank must be in \[1, inf\], got 0/);
  assert.throws(() => nn.applyLora(m, { rank: 1.5, targets: ['attn.qkv'] }), /applyLora: rank must be an integer/);
  assert.throws(() => nn.applyLora(m, { rank: 2, alpha: 0, targets: ['attn.qkv'] }), /applyLora: alpha must be a finite number > 0/);
  assert.throws(() => nn.applyLora(m, { rank: 2, dropout: 1, targets: ['attn.qkv'] }), /applyLora: dropout must be in \[0, 1\)/);
  assert.throws(() => nn.applyLora(m, { rank: 2, targets: [] }), /applyLora: targets must be a non-empty array/);
  assert.throws(() => nn.applyLora(m, { rank: 2, targets: ['attn.qkv', 'attn.nope', /^nothing$/] }),
    (e: Error) => /target 'attn\.nope' matches no Linear layer; target \/\^nothing\$\/ matches no Linear layer\. Nothing was changed/.test(e.message)
      && e.message.includes('blocks.0.attn.qkv, blocks.0.attn.proj') && !e.message.includes("'attn.qkv'"));
  assert.throws(() => nn.applyLora(m, { rank: 2, targets: ['attn'] }), /target 'attn' matches no Linear layer; it matches 'blocks\.0\.attn' \(MultiheadAttention\), 'blocks\.1\.attn' \(MultiheadAttention\), which are not a Linear/);
  assert.deepEqual(Object.keys(m.stateDict()), names, 'a failed applyLora changed nothing (even its matching targets)');
  assert.ok(m.parameters().every((p) => p.requiresGrad), 'nothing frozen either');
  assert.throws(() => nn.applyLora({} as nn.Module, { rank: 2, targets: ['x'] }), /applyLora: model must be an nn.Module/);
  assert.throws(() => nn.mergeLora(m), /mergeLora: the model \(TinyLM\) has no LoRA layers/);
  assert.throws(() => nn.loraStateDict(m), /loraStateDict: the model \(TinyLM\) has no LoRA layers/);

  nn.applyLora(m, { rank: 2, targets: ['attn.qkv'] });
  assert.throws(() => nn.applyLora(m, { rank: 2, targets: ['attn.qkv'] }),
    /applyLora: target 'attn\.qkv' matches 'blocks\.0\.attn\.qkv', 'blocks\.1\.attn\.qkv', which already have LoRA/);
  assert.throws(() => nn.applyLora(m, { rank: 2, targets: [/lora_A/] }), /matches no Linear layer/, 'the adapter\'s own Linears are not targets');
  // A second, disjoint call adds LoRA to more layers.
  assert.deepEqual(nn.applyLora(m, { rank: 3, targets: ['attn.proj'] }), ['blocks.0.attn.proj', 'blocks.1.attn.proj']);

  const sd = nn.loraStateDict(m);
  const wrongRank = model();
  nn.applyLora(wrongRank, { rank: 4, targets: ['attn.qkv'] });
  nn.applyLora(wrongRank, { rank: 3, targets: ['attn.proj'] });
  assert.throws(() => nn.loadLoraStateDict(wrongRank, sd), /loadLoraStateDict: loadStateDict: 4 problems[\s\S]*'blocks\.0\.attn\.qkv\.lora_A\.weight': shape \[2, 8\] in the state dict, \[4, 8\] in the model[\s\S]*another rank/);
  const { ['blocks.0.attn.proj.lora_B.weight']: _dropped, ...partial } = sd;
  assert.throws(() => nn.loadLoraStateDict(m, partial), /loadLoraStateDict: the adapter does not fit the model's LoRA layers: missing 'blocks\.0\.attn\.proj\.lora_B\.weight'/);
  assert.throws(() => nn.loadLoraStateDict(m, { ...sd, 'head.layers.0.weight': ml.zeros([16, 8]) }), /unexpected 'head\.layers\.0\.weight' \(not a LoRA tensor of this model/);

  assert.throws(() => new nn.LoRALinear(new nn.LayerNorm(3) as unknown as nn.Linear, { rank: 1 }), /LoRALinear: base must be an nn.Linear, got LayerNorm/);
  assert.throws(() => new nn.LoRALinear(new nn.Linear(3, 3), { rank: -1 }), /LoRALinear: rank must be in \[1, inf\]/);

  // A weight tied to another parameter is not merged in place (that would change the other user too).
  class Tied extends nn.Module {
    embed = this.registerModule('embed', new nn.Embedding(5, 3));
    head = this.registerModule('head', new nn.Linear(3, 5, { bias: false }));
    constructor() { super(); this.head.weight.dispose(); this.head.weight = this.embed.weight; }
    forward() { return null; }
  }
  const t = new Tied();
  nn.applyLora(t, { rank: 1, targets: ['head'] });
  assert.throws(() => nn.mergeLora(t), /mergeLora: 'head\.weight' is tied to 'embed\.weight'.*Nothing was changed/);
  assert.ok(t.head instanceof nn.LoRALinear);
  const lone = new nn.LoRALinear(new nn.Linear(2, 2), { rank: 1 });
  assert.throws(() => nn.mergeLora(lone), /mergeLora: the model itself is a LoRALinear; call its merge\(\)/);
  assert.throws(() => nn.applyLora(lone, { rank: 1, targets: ['lora_A'] }), /applyLora: target 'lora_A' matches no Linear layer/,
    'a root LoRALinear\'s own adapter is not a target');
  const merged = lone.merge();
  assert.ok(merged instanceof nn.Linear);
  assert.throws(() => lone.forward(ml.ones([1, 2])), /LoRALinear: this layer was merged into its base Linear/);
});

test('no leak: live tensors stay flat over LoRA training steps (dropout on)', () => {
  const m = model();
  nn.applyLora(m, { rank: 2, dropout: 0.1, targets: TARGETS });
  const counts: number[] = [];
  // Step 0 creates the optimizer's moments; from step 1 on, every step must end with the same live tensors.
  train(m, 5, () => counts.push(ml.memory().numTensors));
  assert.deepEqual(counts.slice(1), Array(4).fill(counts[1]), `live tensors per step: ${counts.join(', ')}`);
});

test('cross-attention through a LoRA-wrapped qkv uses the adapter (equals the merged model)', () => {
  ml.manualSeed(11);
  const mha = new nn.MultiheadAttention(16, 2);
  nn.applyLora(mha, { rank: 2, alpha: 4, targets: ['qkv'] });
  // Give B non-zero values (a fresh adapter is exactly the base model) through the adapter state dict.
  const sd = nn.loraStateDict(mha);
  const bKey = Object.keys(sd).find((k) => k.endsWith('lora_B.weight'))!;
  nn.loadLoraStateDict(mha, { ...sd, [bKey]: ml.randn(sd[bKey].shape) });
  const x = ml.randn([2, 3, 16]);
  const ctx = ml.randn([2, 5, 16]);
  const before = mha.forward(x, { context: ctx }).toArray();
  nn.mergeLora(mha);
  const after = mha.forward(x, { context: ctx }).toArray();
  assertClose(before, after, { rtol: 1e-5, atol: 1e-6 });
});
