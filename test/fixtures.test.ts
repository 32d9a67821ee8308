/**
 * Every op against PyTorch: the fixtures written by test/fixtures/make_fixtures.py (run it with
 * `/usr/bin/python3 test/fixtures/make_fixtures.py`, the system Python that has torch).
 *
 * Each case gives the inputs, the output and the gradient of every float input for loss = sum(out * R); here the
 * op is called through the public API, `out.backward(R)` is run, and output and gradients are compared at the
 * float32 policy of test/helpers.ts (rtol 1e-5). The references are float64 results rounded once to float32, so
 * a failure here is a real error of the op, not torch's rounding (the generator checks that torch's own float32
 * answer meets the same policy). Casts are compared bit for bit, including every f16 and bf16 bit pattern.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ml from '../src/index';
import { binding } from '../src/api/binding';
import { assertClose } from './helpers';

// ------------------------------------------------------------------------------------------------ loading

/** The fixtures live in the source tree (test/fixtures); this file may run from a build directory. */
function fixtureDir(): string {
  const candidates = [
    path.join(__dirname, 'fixtures'),
    path.resolve(__dirname, '..', '..', 'test', 'fixtures'),
    path.join(process.cwd(), 'test', 'fixtures'),
  ];
  for (const d of candidates) if (fs.existsSync(path.join(d, 'ops.json'))) return d;
  throw new Error(`fixtures not found in ${candidates.join(', ')}: run /usr/bin/python3 test/fixtures/make_fixtures.py`);
}
const DIR = fixtureDir();

type Num = number | 'inf' | '-inf' | 'nan';
interface TensorSpec { shape: number[]; dtype: 'f32' | 'i32'; data: Num[]; grad?: boolean }
interface ScalarSpec { scalar: Num }
interface Case {
  name: string;
  op: string;
  attrs: Record<string, any>;
  inputs: Record<string, TensorSpec | ScalarSpec>;
  out: TensorSpec;
  R?: TensorSpec;
  grads?: Record<string, TensorSpec>;
  bitExact?: boolean;
}

function num(v: Num): number {
  if (typeof v === 'number') return v;
  return v === 'inf' ? Infinity : v === '-inf' ? -Infinity : NaN;
}

function f32(data: Num[]): Float32Array {
  return Float32Array.from(data, num);
}

function makeTensor(spec: TensorSpec, requiresGrad: boolean): ml.Tensor {
  if (spec.dtype === 'i32') return ml.tensor(Int32Array.from(spec.data as number[]), spec.shape, { dtype: 'i32' });
  return ml.tensor(f32(spec.data), spec.shape, { requiresGrad });
}

function readBin<T>(name: string, ctor: new (b: ArrayBuffer) => T): T {
  const buf = fs.readFileSync(path.join(DIR, 'casts', name));
  return new ctor(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer);
}

// ------------------------------------------------------------------------------------------------ op table
// Each fixture op name maps to one call of the public API; `t` holds the inputs by name, `a` the case's attrs.
// Absent attrs are passed as undefined so the API's own defaults apply.

type In = Record<string, any>;
const listed = (t: In): ml.Tensor[] => Object.keys(t).filter((k) => /^x\d+$/.test(k)).sort().map((k) => t[k]);

const OPS: Record<string, (t: In, a: In) => ml.Tensor> = {
  add: (t) => ml.add(t.a, t.b),
  sub: (t) => ml.sub(t.a, t.b),
  mul: (t) => ml.mul(t.a, t.b),
  div: (t) => ml.div(t.a, t.b),
  pow: (t) => ml.pow(t.a, t.b),
  maximum: (t) => ml.maximum(t.a, t.b),
  minimum: (t) => ml.minimum(t.a, t.b),
  eq: (t) => ml.eq(t.a, t.b),
  ne: (t) => ml.ne(t.a, t.b),
  lt: (t) => ml.lt(t.a, t.b),
  le: (t) => ml.le(t.a, t.b),
  gt: (t) => ml.gt(t.a, t.b),
  ge: (t) => ml.ge(t.a, t.b),
  neg: (t) => ml.neg(t.x),
  exp: (t) => ml.exp(t.x),
  log: (t) => ml.log(t.x),
  sqrt: (t) => ml.sqrt(t.x),
  abs: (t) => ml.abs(t.x),
  square: (t) => ml.square(t.x),
  tanh: (t) => ml.tanh(t.x),
  sigmoid: (t) => ml.sigmoid(t.x),
  relu: (t) => ml.relu(t.x),
  gelu: (t, a) => (a.approximate === undefined ? ml.gelu(t.x) : ml.gelu(t.x, { approximate: a.approximate })),
  silu: (t) => ml.silu(t.x),
  reciprocal: (t) => ml.reciprocal(t.x),
  sin: (t) => ml.sin(t.x),
  cos: (t) => ml.cos(t.x),
  where: (t) => ml.where(t.cond, t.a, t.b),
  maskedFill: (t) => ml.maskedFill(t.x, t.mask, t.value),
  dropout: (t, a) => ml.dropout(t.x, a.p, a.training),
  sum: (t, a) => ml.sum(t.x, a.axis, a.keepDims),
  mean: (t, a) => ml.mean(t.x, a.axis, a.keepDims),
  max: (t, a) => ml.max(t.x, a.axis, a.keepDims),
  min: (t, a) => ml.min(t.x, a.axis, a.keepDims),
  argmax: (t, a) => ml.argmax(t.x, a.axis, a.keepDims),
  argmin: (t, a) => ml.argmin(t.x, a.axis, a.keepDims),
  sumToShape: (t, a) => ml.sumToShape(t.x, a.shape),
  softmax: (t, a) => ml.softmax(t.x, a.axis),
  logSoftmax: (t, a) => ml.logSoftmax(t.x, a.axis),
  layerNorm: (t, a) => ml.layerNorm(t.x, t.weight ?? null, t.bias ?? null, a.eps),
  embedding: (t) => ml.embedding(t.weight, t.indices),
  crossEntropy: (t, a) => ml.crossEntropy(t.logits, t.targets, a),
  matmul: (t, a) => ml.matmul(t.a, t.b, a),
  reshape: (t, a) => ml.reshape(t.x, a.shape),
  flatten: (t, a) => ml.flatten(t.x, a.startAxis, a.endAxis),
  squeeze: (t, a) => ml.squeeze(t.x, a.axis),
  unsqueeze: (t, a) => ml.unsqueeze(t.x, a.axis),
  transpose: (t, a) => ml.transpose(t.x, a.axis0, a.axis1),
  permute: (t, a) => ml.permute(t.x, a.perm),
  slice: (t, a) => ml.slice(t.x, a.axis, a.start, a.end),
  concat: (t, a) => ml.concat(listed(t), a.axis),
  stack: (t, a) => ml.stack(listed(t), a.axis),
  broadcastTo: (t, a) => ml.broadcastTo(t.x, a.shape),
  clone: (t) => ml.clone(t.x),
  gather: (t, a) => ml.gather(t.x, a.axis, t.index),
  indexSelect: (t, a) => ml.indexSelect(t.x, a.axis, t.index),
  cast: (t, a) => ml.cast(t.x, a.dtype),
  castRoundTrip: (t, a) => ml.cast(ml.cast(t.x, a.via), 'f32'),
  scaledDotProductAttention: (t, a) => ml.nn.scaledDotProductAttention(t.q, t.k, t.v,
    { keyPaddingMask: t.keyPaddingMask, causal: a.causal, scale: a.scale }),
};

// ------------------------------------------------------------------------------------------------ comparisons

const bitsOf = (x: Float32Array): Uint32Array => new Uint32Array(x.buffer, x.byteOffset, x.length);

/** Bit-exact f32 comparison; any NaN matches any NaN (payloads are not part of the contract). */
function assertBitsEqual(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const ab = bitsOf(actual), eb = bitsOf(expected);
  for (let i = 0; i < actual.length; i++) {
    if (Number.isNaN(expected[i]) ? !Number.isNaN(actual[i]) : ab[i] !== eb[i]) {
      assert.fail(`${what}: element ${i} is ${actual[i]} (0x${ab[i].toString(16)}), expected ${expected[i]} ` +
        `(0x${eb[i].toString(16)})`);
    }
  }
}

function checkTensor(actual: ml.Tensor, spec: TensorSpec, what: string, bitExact = false): void {
  assert.deepEqual([...actual.shape], spec.shape, `${what}: shape ${JSON.stringify(actual.shape)}, expected ${JSON.stringify(spec.shape)}`);
  assert.equal(actual.dtype, spec.dtype, `${what}: dtype`);
  if (spec.dtype === 'i32') {
    assert.deepEqual([...(actual.toArray() as Int32Array)], spec.data, `${what}: values`);
  } else if (bitExact) {
    assertBitsEqual(actual.toArray() as Float32Array, f32(spec.data), what);
  } else {
    assertClose(actual.toArray(), f32(spec.data), { what });
  }
}

// ------------------------------------------------------------------------------------------------ op cases

const ops = JSON.parse(fs.readFileSync(path.join(DIR, 'ops.json'), 'utf8')) as { cases: Case[] };

test('every exported op has a fixture case, and every fixture op is mapped', () => {
  const covered = new Set(ops.cases.map((c) => c.op));
  for (const op of covered) assert.ok(OPS[op], `fixture op ${op} has no entry in OPS`);
  const modules = ['elementwise', 'reduce', 'softmax', 'layernorm', 'loss', 'matmul', 'layout', 'indexing'];
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const exported = modules.flatMap((m) => Object.entries(require(`../src/api/ops/${m}`) as Record<string, unknown>)
    .filter(([, v]) => typeof v === 'function').map(([k]) => k));
  exported.push('scaledDotProductAttention');   // ml.nn's functional core
  const missing = exported.filter((k) => !covered.has(k));
  assert.deepEqual(missing, [], `exported ops without a fixture case: ${missing.join(', ')}`);
});

for (const c of ops.cases) {
  test(c.name, () => {
    ml.tidy(() => {
      const t: In = {};
      for (const [k, spec] of Object.entries(c.inputs)) {
        t[k] = 'scalar' in spec ? num(spec.scalar) : makeTensor(spec, c.grads?.[k] !== undefined);
      }
      const out = OPS[c.op](t, c.attrs);
      checkTensor(out, c.out, `${c.op} output`, c.bitExact);
      if (!c.R || !c.grads) return;
      out.backward(ml.tensor(f32(c.R.data), c.R.shape));
      for (const [k, g] of Object.entries(c.grads)) {
        const grad = (t[k] as ml.Tensor).grad;
        assert.ok(grad, `no gradient reached input ${k}`);
        checkTensor(grad, g, `gradient of ${k}`);
      }
    });
  });
}

// ------------------------------------------------------------------------------------------------ cast tables

/** A tensor of `dtype` (f16/bf16) holding exactly these bit patterns (written raw, not through a cast). */
function halfFromBits(bits: Uint16Array, dtype: 'f16' | 'bf16'): ml.Tensor {
  const t = ml.Tensor._empty([bits.length], dtype, 'cpu');
  binding().write(t._h('test'), t._offset * 2, bits);
  return t;
}

function halfBits(t: ml.Tensor): Uint16Array {
  return new Uint16Array(binding().read(t._h('test'), t._offset * 2, t.size * 2));
}

const ALL_PATTERNS = Uint16Array.from({ length: 65536 }, (_, i) => i);

for (const dtype of ['f16', 'bf16'] as const) {
  test(`cast ${dtype} -> f32 of all 65536 bit patterns is bit-exact`, () => {
    ml.tidy(() => {
      const expected = readBin(`${dtype}_to_f32.bin`, Float32Array);
      const out = ml.cast(halfFromBits(ALL_PATTERNS, dtype), 'f32');
      assertBitsEqual(out.toArray(), expected, `${dtype} -> f32`);
    });
  });

  test(`cast f32 -> ${dtype} of 100k values (ties, subnormals, overflow, NaN) is bit-exact`, () => {
    ml.tidy(() => {
      const x = readBin('f32_samples.bin', Float32Array);
      const expected = readBin(`f32_to_${dtype}.bin`, Uint16Array);
      const xt = ml.tensor(x, [x.length]);
      // The input must arrive untouched (NaN payloads included) for the comparison to mean anything.
      assert.deepEqual(bitsOf(xt.toArray()), bitsOf(x), 'input bits changed on the way in');
      const got = halfBits(ml.cast(xt, dtype));
      const isNaN16 = (b: number) => (dtype === 'f16' ? (b & 0x7c00) === 0x7c00 && (b & 0x3ff) !== 0
        : (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0);
      const xb = bitsOf(x);
      for (let i = 0; i < x.length; i++) {
        if (isNaN16(expected[i]) ? !isNaN16(got[i]) : got[i] !== expected[i]) {
          assert.fail(`f32 -> ${dtype}: input ${i} = ${x[i]} (0x${xb[i].toString(16)}) gave 0x${got[i].toString(16)}, ` +
            `torch gives 0x${expected[i].toString(16)}`);
        }
      }
    });
  });
}

// ------------------------------------------------------------------------------------------------ optimizers
// nn/optim/io may land after this file: reach them through the public index when it exports them, else by path.

interface Optimizer { zeroGrad(): void; step(): void }
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const api = ml as any;
function optimModule(): { AdamW: new (p: unknown[], o: object) => Optimizer; SGD: new (p: unknown[], o: object) => Optimizer } {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return api.optim ?? require('../src/api/optim');
}

const optimFx = JSON.parse(fs.readFileSync(path.join(DIR, 'optim.json'), 'utf8'));

for (const kind of ['adamw', 'sgd'] as const) {
  test(`optimizer ${kind === 'adamw' ? 'AdamW (weight decay on 2-D weights only)' : 'SGD nesterov momentum'}: ` +
    '5 steps of an MLP match torch losses and weights', () => {
    ml.tidy(() => {
      const optim = optimModule();
      const fx = optimFx[kind];
      const p: Record<string, ml.Tensor> = {};
      for (const [k, spec] of Object.entries(optimFx.init as Record<string, TensorSpec>)) p[k] = makeTensor(spec, true);
      const o = fx.options;
      // torch's param groups: decay on the 2-D weights, none on the biases.
      const opts: Optimizer[] = kind === 'adamw'
        ? [new optim.AdamW([{ params: [p.w1, p.w2], weightDecay: o.weightDecay }, { params: [p.b1, p.b2], weightDecay: 0 }],
          { lr: o.lr, betas: o.betas, eps: o.eps })]
        : [new optim.SGD([p.w1, p.b1, p.w2, p.b2], { lr: o.lr, momentum: o.momentum, nesterov: o.nesterov,
          dampening: o.dampening, weightDecay: o.weightDecay })];
      const lossAt = (i: number): ml.Tensor => {
        const b = optimFx.batches[i];
        const x = makeTensor(b.x, false), tgt = makeTensor(b.t, false);
        const h = ml.gelu(ml.add(ml.matmul(x, p.w1, { transB: true }), p.b1));
        return ml.crossEntropy(ml.add(ml.matmul(h, p.w2, { transB: true }), p.b2), tgt);
      };
      const losses: number[] = [];
      for (let i = 0; i < 5; i++) {
        ml.tidy(() => {
          for (const opt of opts) opt.zeroGrad();
          const loss = lossAt(i);
          losses.push(loss.item());
          loss.backward();
          for (const opt of opts) opt.step();
        });
      }
      losses.push(ml.noGrad(() => ml.tidy(() => lossAt(5).item())));
      assertClose(losses, f32(fx.losses), { what: `${kind} losses` });
      for (const [k, spec] of Object.entries(fx.weights as Record<string, TensorSpec>)) {
        checkTensor(p[k], spec, `${kind} final ${k}`);
      }
    });
  });
}

// ------------------------------------------------------------------------------------------------ safetensors

test('load reads a safetensors file written by torch (F32, I32, BF16, F16, 0-d, metadata)', () => {
  ml.tidy(() => {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const load: (p: string) => { tensors: unknown; metadata: Record<string, string> } =
      api.load ?? require('../src/api/io/safetensors').load;
    const fx = JSON.parse(fs.readFileSync(path.join(DIR, 'safetensors.json'), 'utf8'));
    const got = load(path.join(DIR, 'torch_written.safetensors'));
    assert.deepEqual({ ...got.metadata }, fx.metadata);
    const tensors = got.tensors instanceof Map ? Object.fromEntries(got.tensors) : got.tensors as Record<string, ml.Tensor>;
    assert.deepEqual(Object.keys(tensors).sort(), Object.keys(fx.tensors).sort());
    for (const [name, spec] of Object.entries(fx.tensors as Record<string, { dtype: string; shape: number[]; data: Num[] }>)) {
      const t = tensors[name] as ml.Tensor;
      assert.equal(t.dtype, spec.dtype, `${name}: dtype`);
      assert.deepEqual([...t.shape], spec.shape, `${name}: shape`);
      if (spec.dtype === 'i32') assert.deepEqual([...(t.toArray() as Int32Array)], spec.data, `${name}: values`);
      else assertBitsEqual(t.toArray() as Float32Array, f32(spec.data), `${name}: values`);
    }
  });
});
