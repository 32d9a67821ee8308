/**
 * ml.attention against PyTorch: the fixtures written by test/fixtures/make_attention_fixtures.py (run it with
 * `/usr/bin/python3 test/fixtures/make_attention_fixtures.py`).
 *
 * Each case names its shapes and options; q, k, v and the output weights R are regenerated here from their seeds
 * with helpers.randomArray (the script reproduces that generator bit for bit), `out.backward(R)` is run, and the
 * output and the gradients of q, k and v are compared at the float32 policy (rtol 1e-5, atol 1e-6) against
 * float64 references rounded once. Cases without a window also go through nn.scaledDotProductAttention, which
 * runs on the fused kernel.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ml from '../src/index';
import { assertClose, randomArray } from './helpers';

interface Case {
  name: string;
  B: number; H: number; N: number; M: number; D: number; Dv: number;
  lo: number; hi: number;
  seeds: { q: number; k: number; v: number; R: number };
  causal: boolean;
  window: number;
  scale: number | null;
  keyPaddingMask: { dtype: 'f32' | 'i32'; data: number[] } | null;
  out: string;
  grads: { q: string; k: string; v: string };
}

function fixturePath(): string {
  const candidates = [
    path.join(__dirname, 'fixtures', 'attention.json'),
    path.resolve(__dirname, '..', '..', 'test', 'fixtures', 'attention.json'),
    path.join(process.cwd(), 'test', 'fixtures', 'attention.json'),
  ];
  for (const p of candidates) if (fs.existsSync(p)) return p;
  throw new Error(`attention fixtures not found in ${candidates.join(', ')}: run /usr/bin/python3 test/fixtures/make_attention_fixtures.py`);
}

function decode(b64: string): Float32Array {
  const buf = Buffer.from(b64, 'base64');
  const out = new Float32Array(buf.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = buf.readFloatLE(4 * i);
  return out;
}

const fixtures = JSON.parse(fs.readFileSync(fixturePath(), 'utf8')) as { cases: Case[] };

type Run = (q: ml.Tensor, k: ml.Tensor, v: ml.Tensor, mask: ml.Tensor | null, c: Case) => ml.Tensor;
const viaAttention: Run = (q, k, v, mask, c) =>
  ml.attention(q, k, v, { causal: c.causal, window: c.window || null, scale: c.scale ?? undefined, keyPaddingMask: mask });
const viaSdpa: Run = (q, k, v, mask, c) =>
  ml.nn.scaledDotProductAttention(q, k, v, { causal: c.causal, scale: c.scale ?? undefined, keyPaddingMask: mask });

function check(c: Case, run: Run, via: string): void {
  ml.tidy(() => {
    const n = (s: number[]) => s.reduce((a, b) => a * b, 1);
    const shapes = { q: [c.B, c.H, c.N, c.D], k: [c.B, c.H, c.M, c.D], v: [c.B, c.H, c.M, c.Dv], R: [c.B, c.H, c.N, c.Dv] };
    const make = (x: keyof typeof shapes, grad: boolean) =>
      ml.tensor(randomArray(n(shapes[x]), c.seeds[x], c.lo, c.hi), shapes[x], { requiresGrad: grad });
    const q = make('q', true), k = make('k', true), v = make('v', true), R = make('R', false);
    const mask = c.keyPaddingMask === null ? null
      : c.keyPaddingMask.dtype === 'i32' ? ml.tensor(Int32Array.from(c.keyPaddingMask.data), [c.B, c.M], { dtype: 'i32' })
        : ml.tensor(Float32Array.from(c.keyPaddingMask.data), [c.B, c.M]);
    const out = run(q, k, v, mask, c);
    assert.deepEqual(out.shape, shapes.R);
    out.backward(R);
    const what = `${c.name} (${via})`;
    assertClose(out.toArray(), decode(c.out), { what: `${what}: out` });
    assertClose(q.grad!.toArray(), decode(c.grads.q), { what: `${what}: dq` });
    assertClose(k.grad!.toArray(), decode(c.grads.k), { what: `${what}: dk` });
    assertClose(v.grad!.toArray(), decode(c.grads.v), { what: `${what}: dv` });
    for (const t of [q, k, v]) { t.grad!.dispose(); t.grad = null; }
  });
}

test('attention fixtures cover every option combination of the issue', () => {
  const cs = fixtures.cases;
  assert.ok(cs.some((c) => c.causal && c.N === c.M) && cs.some((c) => c.causal && c.N < c.M) && cs.some((c) => c.causal && c.N > c.M));
  assert.ok(cs.some((c) => c.keyPaddingMask?.dtype === 'f32') && cs.some((c) => c.keyPaddingMask?.dtype === 'i32'));
  assert.ok(cs.some((c) => c.window > 0 && !c.causal) && cs.some((c) => c.window > 0 && c.causal && c.keyPaddingMask));
  assert.ok(cs.some((c) => c.N % 64 !== 0 && c.N > 64) && cs.some((c) => c.M % 64 !== 0 && c.M > 64));
  for (const D of [32, 64, 128]) assert.ok(cs.some((c) => c.D === D), `D = ${D}`);
  assert.ok(cs.some((c) => c.scale !== null) && cs.some((c) => c.Dv !== c.D));
  assert.ok(cs.some((c) => /all-masked/.test(c.name)));
});

for (const c of fixtures.cases) {
  test(`attention fixture: ${c.name}`, () => {
    check(c, viaAttention, 'ml.attention');
    if (c.window === 0) check(c, viaSdpa, 'nn.scaledDotProductAttention');
  });
}
