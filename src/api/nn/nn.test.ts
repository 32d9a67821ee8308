/**
 * nn: the module tree (names, order, registration guards, tied weights), state dicts (round trip through a
 * safetensors file, strict errors that change nothing), train/eval, PyTorch's initialisation, and the forward
 * passes of every layer against float64 references written here.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ml from '../../index';
import * as nn from './index';
import { save, load } from '../io/safetensors';
import { AdamW } from '../optim';
import { assertClose, randomArray } from '../../../test/helpers';

/** A small GPT-shaped model: the names here are the contract checkpoints depend on. */
class TinyGPT extends nn.Module {
  embed = this.registerModule('embed', new nn.Embedding(11, 8));
  blocks = this.registerModule('blocks', new nn.ModuleList([0, 1].map(() => new nn.TransformerBlock(8, 2, { causal: true }))));
  lnF = this.registerModule('lnF', new nn.LayerNorm(8));
  head = this.registerModule('head', new nn.Linear(8, 11, { bias: false }));
  forward(idx: ml.Tensor<'i32'>): ml.Tensor<'f32'> {
    let h: ml.Tensor<'f32'> = this.embed.forward(idx);
    for (const b of this.blocks) h = b.forward(h);
    return this.head.forward(this.lnF.forward(h));
  }
}

const BLOCK_NAMES = ['ln1.weight', 'ln1.bias', 'attn.qkv.weight', 'attn.qkv.bias', 'attn.proj.weight', 'attn.proj.bias',
  'ln2.weight', 'ln2.bias', 'mlp.layers.0.weight', 'mlp.layers.0.bias', 'mlp.layers.1.weight', 'mlp.layers.1.bias'];

function values(t: ml.Tensor): number[] {
  return Array.from(t.toArray());
}

function snapshot(m: nn.Module): Record<string, number[]> {
  return Object.fromEntries(Object.entries(m.stateDict()).map(([k, t]) => [k, values(t)]));
}

// ------------------------------------------------------------------------------------------------ the tree

test('public names: ml.nn.*, ml.save, ml.load', () => {
  for (const k of ['Module', 'ModuleList', 'Sequential', 'Linear', 'LayerNorm', 'Embedding', 'Dropout', 'MLP',
    'MultiheadAttention', 'TransformerBlock', 'scaledDotProductAttention'] as const) {
    assert.equal(ml.nn[k], nn[k], `ml.nn.${k}`);
  }
  assert.equal(ml.save, save);
  assert.equal(ml.load, load);
});


test('module tree: dotted names in registration order, shapes like PyTorch, children and modules', () => {
  ml.manualSeed(0);
  const m = new TinyGPT();
  const names = m.namedParameters().map(([n]) => n);
  assert.deepEqual(names, ['embed.weight', ...BLOCK_NAMES.map((n) => `blocks.0.${n}`),
    ...BLOCK_NAMES.map((n) => `blocks.1.${n}`), 'lnF.weight', 'lnF.bias', 'head.weight']);
  const shapes = Object.fromEntries(m.namedParameters().map(([n, t]) => [n, t.shape]));
  assert.deepEqual(shapes['blocks.1.attn.qkv.weight'], [24, 8]);
  assert.deepEqual(shapes['blocks.0.mlp.layers.0.weight'], [32, 8]);
  assert.deepEqual(shapes['head.weight'], [11, 8]);
  assert.deepEqual([...m.namedChildren()].map(([n]) => n), ['embed', 'blocks', 'lnF', 'head']);
  const mods = m.namedModules().map(([n, x]) => `${n}:${x.constructor.name}`);
  assert.deepEqual(mods.slice(0, 6), [':TinyGPT', 'embed:Embedding', 'blocks:ModuleList', 'blocks.0:TransformerBlock',
    'blocks.0.ln1:LayerNorm', 'blocks.0.attn:MultiheadAttention']);
  assert.equal(m.parameters().length, names.length);
  assert.equal(m.numParameters(), m.parameters().reduce((s, p) => s + p.size, 0));
  assert.equal(m.numParameters(), 11 * 8 + 2 * (4 * 8 + 24 * 8 + 24 + 64 + 8 + 32 * 8 + 32 + 8 * 32 + 8) + 16 + 88);
  assert.ok(m.parameters().every((p) => p.requiresGrad && p.dtype === 'f32'));
  assert.equal(m.blocks.at(-1), m.blocks.at(1));
  assert.throws(() => m.blocks.at(2), /index out of range/);
  assert.deepEqual(Object.keys(m.stateDict()), names, 'the state dict lists the same names in the same order');
});

test('toString shows the tree with each layer\'s hyperparameters', () => {
  const m = new nn.MLP([2, 4, 3], { activation: 'relu' });
  assert.equal(m.toString(), [
    'MLP(',
    "  dims=[2, 4, 3], activation='relu'",
    '  (layers): ModuleList(',
    '    (0): Linear(inFeatures=2, outFeatures=4, bias=true)',
    '    (1): Linear(inFeatures=4, outFeatures=3, bias=true)',
    '  )',
    '  (drop): Dropout(p=0)',
    ')',
  ].join('\n'));
  assert.equal(new nn.LayerNorm(8, { eps: 1e-6 }).toString(), 'LayerNorm(8, eps=0.000001, elementwiseAffine=true)');
});

test('registration guards: an unregistered module or trainable tensor in a field is an error, not a silent omission', () => {
  class Forgot extends nn.Module {
    fc = new nn.Linear(2, 2);
    forward(x: ml.Tensor) { return this.fc.forward(x); }
  }
  assert.throws(() => new Forgot().parameters(), /Forgot\.fc holds a Linear that is not registered.*registerModule\('fc'/);
  class ForgotList extends nn.Module {
    layers = [new nn.Linear(2, 2)];
    forward() { return null; }
  }
  assert.throws(() => new ForgotList().stateDict(), /ForgotList\.layers is an array of modules that are not registered.*ModuleList/);
  class ForgotParam extends nn.Module {
    scale = ml.ones([1]).requiresGrad_();
    forward() { return null; }
  }
  assert.throws(() => new ForgotParam().namedParameters(), /ForgotParam\.scale holds a trainable tensor \[1\] that is not registered/);
  class Deliberate extends nn.Module {
    fc = this.registerModule('fc', new nn.Linear(2, 2));
    _teacher = new nn.Linear(2, 2);   // '_' fields are exempt
    cache = ml.zeros([4]);            // not trainable: a cache, not state
    alias = this.fc;                  // a second reference to a registered module is fine
    forward() { return null; }
  }
  assert.deepEqual(new Deliberate().namedParameters().map(([n]) => n), ['fc.weight', 'fc.bias']);

  class Bad extends nn.Module { forward() { return null; } }
  const b = new Bad();
  assert.throws(() => b.registerParameter('a.b', ml.zeros([1])), /must not contain '\.'/);
  assert.throws(() => b.registerParameter('training', ml.zeros([1])), /reserved/);
  assert.throws(() => b.registerParameter('forward', ml.zeros([1])), /would hide the method/);
  assert.throws(() => b.registerParameter('w', ml.zeros([1], { dtype: 'i32' })), /parameters must be float tensors/);
  b.registerModule('m', new nn.Linear(1, 1));
  assert.throws(() => b.registerParameter('m', ml.zeros([1])), /already registered as a module/);
  assert.throws(() => b.registerModule('self', b), /cannot contain itself/);
  // Reassigning a registered field to the wrong kind is caught on the next traversal.
  (b as unknown as { m: number }).m = 3;
  assert.throws(() => b.parameters(), /the registered module 'm' now holds a number/);
});

test('the field is the source of truth: reassignment and weight tying', () => {
  ml.manualSeed(1);
  class Tied extends nn.Module {
    embed = this.registerModule('embed', new nn.Embedding(5, 3));
    head = this.registerModule('head', new nn.Linear(3, 5, { bias: false }));
    constructor() {
      super();
      this.head.weight.dispose();
      this.head.weight = this.embed.weight;  // tie: [5, 3] both
    }
    forward() { return null; }
  }
  const m = new Tied();
  assert.deepEqual(m.namedParameters().map(([n]) => n), ['embed.weight'], 'a tied tensor is listed once');
  assert.equal(m.numParameters(), 15);
  const sd = m.stateDict();
  assert.deepEqual(Object.keys(sd), ['embed.weight', 'head.weight'], 'but saved under both names, as in PyTorch');
  assert.equal(sd['embed.weight'], sd['head.weight']);
});

test('a model built inside tidy() survives it; buffers are state but not parameters', () => {
  class WithBuffer extends nn.Module {
    fc = this.registerModule('fc', new nn.Linear(2, 2));
    pos = this.registerBuffer('pos', ml.arange(4));
    tmp = this.registerBuffer('tmp', ml.zeros([2]), { persistent: false });
    forward() { return null; }
  }
  const m = ml.tidy(() => new WithBuffer());
  assert.ok(m.parameters().every((p) => !p.isDisposed));
  assert.deepEqual(values(m.pos), [0, 1, 2, 3]);
  assert.deepEqual(m.namedBuffers().map(([n]) => n), ['pos', 'tmp']);
  // PyTorch's order: the module's own tensors before its children's.
  assert.deepEqual(Object.keys(m.stateDict()), ['pos', 'fc.weight', 'fc.bias']);
  const before = ml.memory().numTensors;
  m.dispose();
  assert.equal(ml.memory().numTensors, before - 4);
});

// ------------------------------------------------------------------------------------------------ state dicts

test('stateDict round trip through a safetensors file into a differently seeded model', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-nn-'));
  try {
    ml.manualSeed(3);
    const a = new TinyGPT();
    ml.manualSeed(4);
    const b = new TinyGPT();
    assert.notDeepEqual(snapshot(a)['head.weight'], snapshot(b)['head.weight']);
    const file = path.join(dir, 'gpt.safetensors');
    save(file, a.stateDict(), { arch: 'TinyGPT' });
    save(path.join(dir, 'direct.safetensors'), a);  // a module can be given directly
    const { tensors, metadata } = load(file);
    assert.equal(metadata.arch, 'TinyGPT');
    const pb = b.parameters();
    const res = b.loadStateDict(tensors);
    assert.deepEqual(res, { missingKeys: [], unexpectedKeys: [] });
    assert.deepEqual(snapshot(b), snapshot(a));
    assert.deepEqual(b.parameters(), pb, 'loaded in place: the same tensor objects (optimizers keep working)');
    for (const t of Object.values(tensors)) t.dispose();
    assert.deepEqual(snapshot(b), snapshot(a), 'copies, not aliases of the loaded tensors');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('strict loadStateDict reports missing, unexpected, wrong shape and wrong dtype together, and changes nothing', () => {
  ml.manualSeed(5);
  const m = new nn.MLP([3, 4, 2]);
  const before = snapshot(m);
  const sd: Record<string, ml.Tensor> = {
    // 'layers.0.weight' missing
    'layers.0.bias': ml.full([4], 7),                        // fine (would be copied if all were well)
    'layers.1.weight': ml.zeros([4, 2]),                     // transposed shape
    'layers.1.bias': ml.zeros([2], { dtype: 'bf16' }),       // wrong dtype
    'layers.2.weight': ml.zeros([1]),                        // unexpected
  };
  assert.throws(() => m.loadStateDict(sd), (e: Error) => {
    assert.match(e.message, /^loadStateDict: 4 problems loading into MLP \(nothing was changed\):/);
    assert.match(e.message, /missing 'layers\.0\.weight' \(\[4, 3\] f32\)/);
    assert.match(e.message, /'layers\.1\.weight': shape \[4, 2\] in the state dict, \[2, 4\] in the model/);
    assert.match(e.message, /'layers\.1\.bias': dtype bf16 in the state dict, f32 in the model/);
    assert.match(e.message, /unexpected 'layers\.2\.weight'/);
    return true;
  });
  assert.deepEqual(snapshot(m), before, 'nothing changed, not even the valid entry');
  // Non-strict: missing and unexpected are reported, shape and dtype still are errors.
  assert.throws(() => m.loadStateDict(sd, { strict: false }), /2 problems/);
  const res = m.loadStateDict(new Map([['layers.0.bias', sd['layers.0.bias']], ['extra', ml.zeros([1])]]), { strict: false });
  assert.deepEqual(res.missingKeys, ['layers.0.weight', 'layers.1.weight', 'layers.1.bias']);
  assert.deepEqual(res.unexpectedKeys, ['extra']);
  assert.deepEqual(values(m.layers.at(0).bias!), [7, 7, 7, 7]);
  const d = ml.zeros([4]);
  d.dispose();
  assert.throws(() => m.loadStateDict({ ...m.stateDict(), 'layers.0.bias': d }), /'layers\.0\.bias': the tensor was disposed/);
  assert.throws(() => m.loadStateDict({ ...m.stateDict(), 'layers.0.bias': 3 as unknown as ml.Tensor }), /expected a Tensor, got number/);
});

// ------------------------------------------------------------------------------------------------ init, modes

test('Linear init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, [out, in] layout, deterministic by seed', () => {
  ml.manualSeed(7);
  const fc = new nn.Linear(64, 32);
  assert.deepEqual(fc.weight.shape, [32, 64]);
  const w = values(fc.weight), b = values(fc.bias!);
  const bound = 1 / 8;
  assert.ok(w.every((x) => Math.abs(x) <= bound), 'weight within the bound');
  assert.ok(Math.max(...w.map(Math.abs)) > 0.95 * bound, 'weight fills the range');
  assert.ok(Math.abs(w.reduce((s, x) => s + x, 0) / w.length) < 0.01, 'weight mean near 0');
  const variance = w.reduce((s, x) => s + x * x, 0) / w.length;
  assert.ok(Math.abs(variance - bound * bound / 3) < 0.1 * bound * bound / 3, `variance ${variance} of U(-b, b)`);
  assert.ok(b.every((x) => Math.abs(x) <= bound) && b.some((x) => Math.abs(x) > bound / 2));
  ml.manualSeed(7);
  const again = new nn.Linear(64, 32);
  assert.deepEqual(values(again.weight), w, 'same seed, same weights');
  assert.deepEqual(values(again.bias!), b);
  ml.manualSeed(8);
  assert.notDeepEqual(values(new nn.Linear(64, 32).weight), w);
  assert.equal(new nn.Linear(4, 3, { bias: false }).bias, null);
  assert.throws(() => new nn.Linear(2.5, 3), /inFeatures must be an integer/);
});

test('Embedding init N(0, 1); LayerNorm ones and zeros', () => {
  ml.manualSeed(9);
  const e = values(new nn.Embedding(100, 64).weight);
  const mean = e.reduce((s, x) => s + x, 0) / e.length;
  const std = Math.sqrt(e.reduce((s, x) => s + (x - mean) ** 2, 0) / e.length);
  assert.ok(Math.abs(mean) < 0.05 && Math.abs(std - 1) < 0.05, `mean ${mean}, std ${std}`);
  const ln = new nn.LayerNorm(5);
  assert.deepEqual(values(ln.weight!), [1, 1, 1, 1, 1]);
  assert.deepEqual(values(ln.bias!), [0, 0, 0, 0, 0]);
  assert.equal(new nn.LayerNorm(5, { elementwiseAffine: false }).parameters().length, 0);
  assert.deepEqual(new nn.LayerNorm(5, { bias: false }).namedParameters().map(([n]) => n), ['weight']);
});

test('train()/eval() propagate to every descendant; zeroGrad frees gradients', () => {
  const m = new TinyGPT();
  m.eval();
  assert.ok(m.modules().every((x) => !x.training));
  m.blocks.at(0).train();
  assert.ok(m.blocks.at(0).attn.training && !m.blocks.at(1).attn.training);
  m.train();
  assert.ok(m.modules().every((x) => x.training));
  const p = m.head.weight;
  p.grad = ml.ones(p.shape).keep();
  m.zeroGrad();
  assert.equal(p.grad, null);
  m.requiresGrad_(false);
  assert.ok(m.parameters().every((x) => !x.requiresGrad));
  assert.equal(m.numParameters({ trainableOnly: true }), 0);
});

// ------------------------------------------------------------------------------------------------ forward passes
// (These need the ops: matmul, add, layerNorm, softmax, ...)

/** Float64 references. */
function linearRef(x: ArrayLike<number>, rows: number, w: ArrayLike<number>, b: ArrayLike<number> | null, inF: number, outF: number): number[] {
  const y: number[] = [];
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outF; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inF; i++) s += x[r * inF + i] * w[o * inF + i];
      y.push(s);
    }
  }
  return y;
}

test('Linear forward on [B, N, in] and [rows, in] matches x W^T + b', () => {
  ml.manualSeed(10);
  const fc = new nn.Linear(5, 3);
  const xs = randomArray(2 * 4 * 5, 1);
  const y = fc.forward(ml.tensor(xs, [2, 4, 5]));
  assert.deepEqual(y.shape, [2, 4, 3]);
  const ref = linearRef(xs, 8, fc.weight.toArray(), fc.bias!.toArray(), 5, 3);
  assertClose(y.toArray(), ref);
  assertClose(fc.forward(ml.tensor(xs, [8, 5])).toArray(), ref);
  assertClose(fc.forward(ml.tensor(xs.subarray(0, 5), [5])).toArray(), ref.slice(0, 3), { what: '1-D input' });
  assert.throws(() => fc.forward(ml.zeros([2, 4])), /Linear\(5, 3\): input \[2, 4\] must end in 5/);
});

test('Linear backward gives dW = dy^T x, db = sum dy', () => {
  ml.manualSeed(11);
  const fc = new nn.Linear(3, 2);
  const xs = randomArray(4 * 3, 2);
  fc.forward(ml.tensor(xs, [4, 3])).sum().backward();
  const dW = [0, 1].flatMap(() => [0, 1, 2].map((i) => [0, 1, 2, 3].reduce((s, r) => s + xs[r * 3 + i], 0)));
  assertClose(fc.weight.grad!.toArray(), dW);
  assertClose(fc.bias!.grad!.toArray(), [4, 4]);
});

test('Dropout: identity in eval mode, zeroes and rescales in train mode, p = 0 is the identity', () => {
  ml.manualSeed(12);
  const d = new nn.Dropout(0.25);
  const x = ml.ones([2000]);
  const y = values(d.forward(x));
  const kept = y.filter((v) => v !== 0);
  assert.ok(kept.every((v) => Math.abs(v - 1 / 0.75) < 1e-6), 'kept values are scaled by 1/(1-p)');
  const frac = 1 - kept.length / y.length;
  assert.ok(Math.abs(frac - 0.25) < 0.04, `dropped fraction ${frac}`);
  d.eval();
  assert.equal(d.forward(x), x, 'eval: the input itself');
  assert.equal(new nn.Dropout(0).forward(x), x);
  assert.throws(() => new nn.Dropout(1.5), /p must be in \[0, 1\]/);
  const mlp = new nn.MLP([4, 16, 4], { dropout: 0.5 });
  const inp = ml.tensor(randomArray(8, 3), [2, 4]);
  mlp.eval();
  assert.deepEqual(values(mlp.forward(inp)), values(mlp.forward(inp)), 'eval is deterministic');
  mlp.train();
  assert.notDeepEqual(values(mlp.forward(inp)), values(mlp.forward(inp)), 'train mode draws new masks');
});

test('MLP forward matches Linear -> activation -> Linear for gelu, relu and silu', () => {
  const acts: Record<string, (v: number) => number> = {
    relu: (v) => Math.max(0, v),
    silu: (v) => v / (1 + Math.exp(-v)),
    gelu: (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
  };
  for (const [name, f] of Object.entries(acts)) {
    ml.manualSeed(13);
    const mlp = new nn.MLP([3, 6, 2], { activation: name as nn.Activation });
    const xs = randomArray(4 * 3, 4, -2, 2);
    const l0 = mlp.layers.at(0), l1 = mlp.layers.at(1);
    const h = linearRef(xs, 4, l0.weight.toArray(), l0.bias!.toArray(), 3, 6).map(f);
    const ref = linearRef(h, 4, l1.weight.toArray(), l1.bias!.toArray(), 6, 2);
    assertClose(mlp.forward(ml.tensor(xs, [4, 3])).toArray(), ref, { rtol: 1e-5, atol: 1e-5, what: name });
  }
  assert.throws(() => new nn.MLP([3]), /at least an input and an output/);
  assert.throws(() => new nn.MLP([3, 2], { activation: 'tanh' as nn.Activation }), /activation must be one of/);
});

test('Sequential chains modules (names 0, 1, 2 like torch); call() is forward', () => {
  ml.manualSeed(18);
  const seq = new nn.Sequential(new nn.Linear(3, 4), new nn.ReLU(), new nn.Linear(4, 2));
  assert.deepEqual(seq.namedParameters().map(([n]) => n), ['0.weight', '0.bias', '2.weight', '2.bias']);
  const xs = randomArray(2 * 3, 19);
  const l0 = seq.at(0) as nn.Linear, l2 = seq.at(2) as nn.Linear;
  const h = linearRef(xs, 2, l0.weight.toArray(), l0.bias!.toArray(), 3, 4).map((v) => Math.max(0, v));
  const ref = linearRef(h, 2, l2.weight.toArray(), l2.bias!.toArray(), 4, 2);
  assertClose(seq.call(ml.tensor(xs, [2, 3])).toArray(), ref);
  const y: ml.Tensor<'f32'> = l0.call(ml.tensor(xs, [2, 3]));  // typed like forward
  assert.deepEqual(y.shape, [2, 4]);
  assert.throws(() => new nn.ModuleList([l0]).forward(), /ModuleList has no forward/);
});

/** Abramowitz-Stegun 7.1.26 is not enough at 1e-5; use a series / continued fraction in float64. */
function erf(x: number): number {
  const t = Math.abs(x);
  if (t < 3) {
    let sum = 0, term = t, n = 0;
    while (Math.abs(term) > 1e-17 * Math.abs(sum) || n < 5) {
      sum += term / (2 * n + 1);
      n++;
      term *= -t * t / n;
      if (n > 200) break;
    }
    return Math.sign(x) * 2 / Math.sqrt(Math.PI) * sum;
  }
  return Math.sign(x) * (1 - Math.exp(-t * t) / (t * Math.sqrt(Math.PI)) * (1 - 1 / (2 * t * t) + 3 / (4 * t ** 4)));
}

/** Attention reference in float64: q [B,H,N,D], k,v [B,H,M,D]; mask(b, i, j) true = masked. */
function sdpaRef(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, B: number, H: number, N: number,
  M: number, D: number, masked: (b: number, i: number, j: number) => boolean): number[] {
  const out: number[] = [];
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
    const qo = (b * H + h) * N * D, ko = (b * H + h) * M * D;
    for (let i = 0; i < N; i++) {
      const s: number[] = [];
      for (let j = 0; j < M; j++) {
        let d = 0;
        for (let c = 0; c < D; c++) d += q[qo + i * D + c] * k[ko + j * D + c];
        s.push(masked(b, i, j) ? -Infinity : d / Math.sqrt(D));
      }
      const mx = Math.max(...s);
      const e = s.map((x) => Math.exp(x - mx));
      const z = e.reduce((a, c) => a + c, 0);
      for (let c = 0; c < D; c++) out.push(e.reduce((a, w, j) => a + (w / z) * v[ko + j * D + c], 0));
    }
  }
  return out;
}

test('scaledDotProductAttention: plain, causal (N = M and KV-cache N < M), key padding', () => {
  const B = 2, H = 2, N = 3, M = 5, D = 4;
  const q = randomArray(B * H * N * D, 5), k = randomArray(B * H * M * D, 6), v = randomArray(B * H * M * D, 7);
  const Q = ml.tensor(q, [B, H, N, D]), K = ml.tensor(k, [B, H, M, D]), V = ml.tensor(v, [B, H, M, D]);
  const none = () => false;
  assertClose(nn.scaledDotProductAttention(Q, K, V).toArray(), sdpaRef(q, k, v, B, H, N, M, D, none), { what: 'plain' });
  // Bottom-right causal: query i of 3 sees keys j <= i + 2.
  assertClose(nn.scaledDotProductAttention(Q, K, V, { causal: true }).toArray(),
    sdpaRef(q, k, v, B, H, N, M, D, (_b, i, j) => j > i + M - N), { what: 'causal, N < M' });
  const pad = [[0, 0, 0, 1, 1], [0, 1, 0, 0, 0]];
  const kpm = ml.tensor(pad.flat(), [B, M]);
  assertClose(nn.scaledDotProductAttention(Q, K, V, { keyPaddingMask: kpm }).toArray(),
    sdpaRef(q, k, v, B, H, N, M, D, (b, _i, j) => pad[b][j] === 1), { what: 'key padding (f32 mask)' });
  const kpmI = ml.tensor(pad.flat(), [B, M], { dtype: 'i32' });
  assertClose(nn.scaledDotProductAttention(Q, K, V, { keyPaddingMask: kpmI, causal: true }).toArray(),
    sdpaRef(q, k, v, B, H, N, M, D, (b, i, j) => pad[b][j] === 1 || j > i + M - N), { what: 'causal + padding (i32 mask)' });
  const Ks = ml.tensor(k.subarray(0, B * H * N * D), [B, H, N, D]), Vs = ml.tensor(v.subarray(0, B * H * N * D), [B, H, N, D]);
  assertClose(nn.scaledDotProductAttention(Q, Ks, Vs, { causal: true }).toArray(),
    sdpaRef(q, k.subarray(0, B * H * N * D), v.subarray(0, B * H * N * D), B, H, N, N, D, (_b, i, j) => j > i), { what: 'causal, N = M' });
  assert.throws(() => nn.scaledDotProductAttention(Q, ml.zeros([B, H, M, 3]), V), /do not agree/);
  assert.throws(() => nn.scaledDotProductAttention(Q, K, V, { keyPaddingMask: ml.zeros([B, N]) }), /keyPaddingMask \[2, 3\] must be \[B, M\] = \[2, 5\]/);
  assert.throws(() => nn.scaledDotProductAttention(ml.zeros([2, 3]), K, V), /must be \[B, H, N, D\]/);
});

test('attention with an all-masked key row: zeros out, finite gradients (PyTorch SDPA >= 2.5)', () => {
  const B = 2, H = 1, N = 3, M = 3, D = 2;
  const q = randomArray(B * H * N * D, 21), k = randomArray(B * H * M * D, 22), v = randomArray(B * H * M * D, 23);
  const Q = ml.tensor(q, [B, H, N, D]).requiresGrad_(), K = ml.tensor(k, [B, H, M, D]).requiresGrad_();
  const V = ml.tensor(v, [B, H, M, D]).requiresGrad_();
  // Batch 0: every key padded (all rows dead). Batch 1: key 0 padded, so with causal masking row 0 sees nothing.
  const pad = [[1, 1, 1], [1, 0, 0]];
  const out = nn.scaledDotProductAttention(Q, K, V, { keyPaddingMask: ml.tensor(pad.flat(), [B, M]), causal: true });
  const ref = sdpaRef(q, k, v, B, H, N, M, D, (b, i, j) => pad[b][j] === 1 || j > i);
  const dead = (b: number, i: number) => b === 0 || i === 0;
  for (let b = 0; b < B; b++) for (let i = 0; i < N; i++) for (let d = 0; d < D; d++) {
    const at = (b * N + i) * D + d;
    if (dead(b, i)) ref[at] = 0;
  }
  assertClose(out.toArray(), ref, { what: 'dead rows are zero, live rows unchanged' });
  out.square().sum().backward();
  for (const [n, t] of [['q', Q], ['k', K], ['v', V]] as const) {
    assert.ok(values(t.grad!).every(Number.isFinite), `d${n} is finite`);
  }
  assert.deepEqual(values(Q.grad!).slice(0, N * D), new Array(N * D).fill(0), 'no gradient through dead rows');
  // N > M with causal masking: the first N - M queries see no key.
  const Q2 = ml.tensor(randomArray(1 * 1 * 4 * 2, 24), [1, 1, 4, 2]);
  const K2 = ml.tensor(k.subarray(0, 4), [1, 1, 2, 2]), V2 = ml.tensor(v.subarray(0, 4), [1, 1, 2, 2]);
  const o2 = values(nn.scaledDotProductAttention(Q2, K2, V2, { causal: true }));
  assert.deepEqual(o2.slice(0, 4), [0, 0, 0, 0]);
  assert.ok(o2.every(Number.isFinite));
});

test('MultiheadAttention matches a reference built from its own weights (self and cross attention)', () => {
  ml.manualSeed(14);
  const E = 8, H = 2, D = 4, B = 2, N = 3, M = 4;
  const mha = new nn.MultiheadAttention(E, H);
  const W = mha.qkv.weight.toArray(), bq = mha.qkv.bias!.toArray();
  const Wo = mha.proj.weight.toArray(), bo = mha.proj.bias!.toArray();
  const xs = randomArray(B * N * E, 8), cs = randomArray(B * M * E, 9);
  /** project rows [r0, r0+E) of the fused weight and split heads: [B, L, E] -> [B, H, L, D] */
  const proj = (x: Float32Array, L: number, r0: number) => {
    const y = linearRef(x, B * L, W.subarray(r0 * E, (r0 + E) * E), bq.subarray(r0, r0 + E), E, E);
    const out = new Float64Array(B * H * L * D);
    for (let b = 0; b < B; b++) for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) {
      out[((b * H + h) * L + l) * D + d] = y[(b * L + l) * E + h * D + d];
    }
    return out;
  };
  const merge = (o: number[], L: number) => {
    const out: number[] = new Array(B * L * E);
    for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let l = 0; l < L; l++) for (let d = 0; d < D; d++) {
      out[(b * L + l) * E + h * D + d] = o[((b * H + h) * L + l) * D + d];
    }
    return linearRef(out, B * L, Wo, bo, E, E);
  };
  const x = ml.tensor(xs, [B, N, E]);
  const self = sdpaRef(proj(xs, N, 0), proj(xs, N, E), proj(xs, N, 2 * E), B, H, N, N, D, (_b, i, j) => j > i);
  assertClose(mha.forward(x, { causal: true }).toArray(), merge(self, N), { what: 'causal self-attention' });
  const cross = sdpaRef(proj(xs, N, 0), proj(cs, M, E), proj(cs, M, 2 * E), B, H, N, M, D, () => false);
  assertClose(mha.forward(x, { context: ml.tensor(cs, [B, M, E]) }).toArray(), merge(cross, N), { what: 'cross-attention' });
  const unbatched = mha.forward(ml.tensor(xs.subarray(0, N * E), [N, E]), { causal: true });
  assert.deepEqual(unbatched.shape, [N, E]);
  assertClose(unbatched.toArray(), merge(self, N).slice(0, N * E), { what: 'unbatched' });
  assert.throws(() => new nn.MultiheadAttention(10, 3), /not divisible/);
  assert.throws(() => mha.forward(ml.zeros([2, 3, 5])), /x \[2, 3, 5\] must be \[B, N, 8\]/);
});

test('TransformerBlock: shape, causality (a later token does not change earlier outputs), gradients reach every parameter', () => {
  ml.manualSeed(15);
  const blk = new nn.TransformerBlock(8, 2, { causal: true });
  const xs = randomArray(1 * 4 * 8, 10);
  const y = blk.forward(ml.tensor(xs, [1, 4, 8]));
  assert.deepEqual(y.shape, [1, 4, 8]);
  const xs2 = xs.slice();
  for (let c = 0; c < 8; c++) xs2[3 * 8 + c] += 1;  // change the last token only
  const y2 = blk.forward(ml.tensor(xs2, [1, 4, 8]));
  assertClose(y2.toArray().subarray(0, 24), y.toArray().subarray(0, 24), { what: 'earlier positions unchanged' });
  assert.notDeepEqual(Array.from(y2.toArray().subarray(24)), Array.from(y.toArray().subarray(24)));
  const x = ml.tensor(xs, [1, 4, 8]).requiresGrad_();
  blk.forward(x).square().mean().backward();
  for (const [n, p] of blk.namedParameters()) {
    assert.ok(p.grad, `${n} has a gradient`);
    assert.deepEqual(p.grad!.shape, p.shape);
    assert.ok(values(p.grad!).some((g) => g !== 0), `${n} gradient is not all zero`);
  }
  assert.ok(x.grad && values(x.grad).every(Number.isFinite));
});

test('forward passes free their intermediates: under noGrad only the output stays alive; after backward, nothing', () => {
  ml.manualSeed(17);
  const blk = new nn.TransformerBlock(8, 2, { causal: true, dropout: 0.1 });
  const x = ml.tensor(randomArray(2 * 5 * 8, 11), [2, 5, 8]);
  const kpm = ml.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [2, 5]);  // batch 1 has dead rows
  const base = ml.memory().numTensors;
  const y = ml.noGrad(() => blk.forward(x, { keyPaddingMask: kpm }));
  assert.equal(ml.memory().numTensors, base + 1, 'only the output');
  y.dispose();
  const y2 = blk.forward(x, { keyPaddingMask: kpm });
  const loss = y2.sum();
  loss.backward();
  blk.zeroGrad();
  y2.dispose();
  loss.dispose();
  assert.equal(ml.memory().numTensors, base, 'the graph released everything it held');
});

test('TinyGPT trains: AdamW steps reduce the loss on a fixed batch, and a step leaks nothing', () => {
  ml.manualSeed(16);
  const m = new TinyGPT();
  const opt = new AdamW(m.parameters(), { lr: 1e-2 });
  const idx = ml.tensor([1, 2, 3, 4, 5, 6, 7, 8], [2, 4], { dtype: 'i32' });
  const tgt = ml.tensor([2, 3, 4, 5, 6, 7, 8, 9], [8], { dtype: 'i32' });
  const step = () => ml.tidy(() => {
    const logits = m.forward(idx).reshape([8, 11]);
    const loss = ml.crossEntropy(logits, tgt);
    opt.zeroGrad();
    loss.backward();
    opt.step();
    return loss.item();
  });
  const first = step();
  for (let i = 0; i < 3; i++) step();
  const before = ml.memory();
  let last = first;
  for (let i = 0; i < 20; i++) last = step();
  const after = ml.memory();
  assert.ok(last < first * 0.5, `loss ${first} -> ${last}`);
  assert.equal(after.numTensors, before.numTensors, 'no tensor leaks per step');
  assert.equal(after.numBytes, before.numBytes);
});
