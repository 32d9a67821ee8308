/**
 * ml.attention: forward and gradients against a plain float64 reference (the N x M matrix, written out) on fresh
 * random inputs for every mask option, f16 / bf16 inputs and autocast, rows that see nothing, results that do not
 * depend on the thread count, argument errors, and the memory promise: no N x M buffer, measured in a child
 * process at N = M = 4096 (a score matrix would be 64 MB).
 * (PyTorch fixtures for the same op: test/attention.fixtures.test.ts.)
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as ml from '../../index';
import { assertClose, randomArray } from '../../../test/helpers';

interface Opts { causal?: boolean; window?: number; scale?: number; pad?: number[][] }

/** out, dq, dk, dv of sum(attention(q, k, v) * R) in float64, with the mask convention of ml.attention. */
function reference(q: Float32Array, k: Float32Array, v: Float32Array, R: Float32Array, B: number, H: number,
  N: number, M: number, D: number, Dv: number, o: Opts) {
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const out = new Float64Array(B * H * N * Dv), dq = new Float64Array(B * H * N * D);
  const dk = new Float64Array(B * H * M * D), dv = new Float64Array(B * H * M * Dv);
  const seen = (b: number, i: number, j: number) => {
    const ii = i + M - N;
    if (o.pad && o.pad[b][j]) return false;
    if ((o.causal || o.window) && j > ii) return false;
    return !(o.window && j <= ii - o.window);
  };
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) {
    const bh = b * H + h;
    for (let i = 0; i < N; i++) {
      const qi = (bh * N + i) * D, oi = (bh * N + i) * Dv;
      const s = new Float64Array(M).fill(-Infinity);
      for (let j = 0; j < M; j++) {
        if (!seen(b, i, j)) continue;
        let d = 0;
        for (let c = 0; c < D; c++) d += q[qi + c] * k[(bh * M + j) * D + c];
        s[j] = d * scale;
      }
      const mx = Math.max(...s);
      if (mx === -Infinity) continue;  // sees nothing: zeros out, no gradient
      const p = s.map((x) => Math.exp(x - mx));
      const z = p.reduce((a, c) => a + c, 0);
      for (let j = 0; j < M; j++) p[j] /= z;
      for (let e = 0; e < Dv; e++) for (let j = 0; j < M; j++) out[oi + e] += p[j] * v[(bh * M + j) * Dv + e];
      // dP_j = R_i . v_j;  dS_j = p_j (dP_j - sum_k p_k dP_k)
      const dP = new Float64Array(M);
      let dot = 0;
      for (let j = 0; j < M; j++) {
        for (let e = 0; e < Dv; e++) dP[j] += R[oi + e] * v[(bh * M + j) * Dv + e];
        dot += p[j] * dP[j];
      }
      for (let j = 0; j < M; j++) {
        if (p[j] === 0) continue;
        const ds = p[j] * (dP[j] - dot) * scale;
        for (let e = 0; e < Dv; e++) dv[(bh * M + j) * Dv + e] += p[j] * R[oi + e];
        for (let c = 0; c < D; c++) {
          dq[qi + c] += ds * k[(bh * M + j) * D + c];
          dk[(bh * M + j) * D + c] += ds * q[qi + c];
        }
      }
    }
  }
  return { out, dq, dk, dv };
}

function check(name: string, B: number, H: number, N: number, M: number, D: number, Dv: number, o: Opts, seed: number) {
  ml.tidy(() => {
    const qa = randomArray(B * H * N * D, seed, -2, 2), ka = randomArray(B * H * M * D, seed + 1, -2, 2);
    const va = randomArray(B * H * M * Dv, seed + 2), Ra = randomArray(B * H * N * Dv, seed + 3);
    const q = ml.tensor(qa, [B, H, N, D], { requiresGrad: true }), k = ml.tensor(ka, [B, H, M, D], { requiresGrad: true });
    const v = ml.tensor(va, [B, H, M, Dv], { requiresGrad: true });
    const mask = o.pad ? ml.tensor(o.pad.flat(), [B, M]) : null;
    const out = ml.attention(q, k, v, { causal: o.causal, window: o.window, scale: o.scale, keyPaddingMask: mask });
    out.backward(ml.tensor(Ra, [B, H, N, Dv]));
    const r = reference(qa, ka, va, Ra, B, H, N, M, D, Dv, o);
    assertClose(out.toArray(), r.out, { what: `${name}: out` });
    assertClose(q.grad!.toArray(), r.dq, { what: `${name}: dq` });
    assertClose(k.grad!.toArray(), r.dk, { what: `${name}: dk` });
    assertClose(v.grad!.toArray(), r.dv, { what: `${name}: dv` });
    for (const t of [q, k, v]) t.grad!.dispose();
  });
}

test('attention matches the plain reference on fresh inputs, for every mask option', () => {
  check('plain, N != M', 2, 2, 7, 5, 16, 16, {}, 10);
  check('causal, N = M', 1, 2, 9, 9, 32, 32, { causal: true }, 20);
  check('causal, N < M (KV cache)', 1, 1, 3, 10, 8, 8, { causal: true }, 30);
  check('causal, N > M (leading rows see nothing)', 1, 1, 10, 4, 8, 8, { causal: true }, 40);
  check('key padding', 2, 1, 6, 7, 8, 12, { pad: [[0, 1, 0, 0, 1, 0, 0], [1, 1, 0, 1, 1, 1, 1]] }, 50);
  check('window 3', 1, 2, 9, 9, 16, 16, { window: 3 }, 60);
  check('window 2 + causal + padding + scale 0.4, N < M', 2, 1, 4, 9, 8, 8,
    { causal: true, window: 2, scale: 0.4, pad: [[0, 0, 1, 0, 0, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1]] }, 70);
  check('two tiles each way, causal', 1, 1, 80, 70, 16, 16, { causal: true }, 80);
});

test('window: each query sees its own key and the window - 1 before it; a window of M is causal', () => {
  ml.tidy(() => {
    const q = ml.randn([1, 1, 6, 4]), k = ml.randn([1, 1, 6, 4]), v = ml.randn([1, 1, 6, 2]);
    const w1 = ml.attention(q, k, v, { window: 1 });
    assertClose(w1.toArray(), v.toArray(), { what: 'window 1 copies v' });
    assertClose(ml.attention(q, k, v, { window: 6 }).toArray(), ml.attention(q, k, v, { causal: true }).toArray(),
      { what: 'window M = causal', rtol: 0, atol: 0 });
  });
});

test('attention with an all-masked key row gives zeros and zero gradient, never NaN', () => {
  ml.tidy(() => {
    const q = ml.randn([2, 2, 3, 8], { requiresGrad: true }), k = ml.randn([2, 2, 4, 8], { requiresGrad: true });
    const v = ml.randn([2, 2, 4, 8], { requiresGrad: true });
    const pad = ml.tensor([[0, 1, 0, 0], [1, 1, 1, 1]], [2, 4], { dtype: 'i32' });
    const out = ml.attention(q, k, v, { keyPaddingMask: pad });
    out.sum().backward();
    const o = out.toArray(), dq = q.grad!.toArray(), dk = k.grad!.toArray(), dv = v.grad!.toArray();
    for (const a of [o, dq, dk, dv]) assert.ok(a.every(Number.isFinite));
    const half = (a: Float32Array) => Array.from(a.subarray(a.length / 2));
    for (const a of [o, dq, dk, dv]) assert.ok(half(a).every((x) => x === 0), 'batch 1 sees nothing');
  });
});

test('f16 and bf16 inputs accumulate in f32 and return their dtype; gradients are f32', () => {
  ml.tidy(() => {
    ml.manualSeed(3);
    const q = ml.randn([2, 2, 70, 32]), k = ml.randn([2, 2, 50, 32]), v = ml.randn([2, 2, 50, 32]);
    const ref = ml.attention(q, k, v, { causal: true }).toArray();
    for (const dt of ['f16', 'bf16'] as const) {
      const [qh, kh, vh] = [q, k, v].map((t) => t.cast(dt).detach().requiresGrad_());
      const out = ml.attention(qh, kh, vh, { causal: true });
      assert.equal(out.dtype, dt);
      assertClose(out.toArray(), ref, { dtype: dt, rtol: dt === 'bf16' ? 2e-2 : 2e-3, atol: dt === 'bf16' ? 2e-2 : 2e-3, what: dt });
      out.cast('f32').sum().backward();
      for (const t of [qh, kh, vh]) {
        assert.equal(t.grad!.dtype, 'f32');
        assert.deepEqual(t.grad!.shape, t.shape);
      }
    }
  });
});

test('under autocast, f32 inputs run in the low dtype, the output is f32 and gradients reach them as f32', () => {
  ml.tidy(() => {
    const q = ml.randn([1, 2, 5, 8], { requiresGrad: true }), k = ml.randn([1, 2, 6, 8], { requiresGrad: true });
    const v = ml.randn([1, 2, 6, 8], { requiresGrad: true });
    const out = ml.autocast('bf16', () => ml.attention(q, k, v));
    assert.equal(out.dtype, 'f32');
    // The same bf16 inputs with the output left unrounded: within one bf16 rounding of the explicit bf16 call,
    // and a clear bf16-sized distance from the f32 call.
    const explicit = ml.attention(q.cast('bf16'), k.cast('bf16'), v.cast('bf16'));
    assertClose(out.toArray(), explicit.toArray(), { dtype: 'bf16', what: 'autocast vs explicit bf16' });
    const full = ml.attention(q, k, v).toArray();
    assertClose(out.toArray(), full, { rtol: 3e-2, atol: 3e-2, what: 'autocast vs f32' });
    assert.ok(Array.from(out.toArray()).some((x, i) => x !== full[i]), 'autocast really ran in bf16');
    out.sum().backward();
    for (const t of [q, k, v]) assert.equal(t.grad!.dtype, 'f32');
  });
});

test('attention results do not depend on the thread count', () => {
  const before = ml.backendInfo().threads;
  try {
    const run = (threads: number) => ml.tidy(() => {
      ml.setNumThreads(threads);
      ml.manualSeed(9);
      const q = ml.randn([1, 1, 200, 32], { requiresGrad: true }), k = ml.randn([1, 1, 300, 32], { requiresGrad: true });
      const v = ml.randn([1, 1, 300, 32], { requiresGrad: true });
      const out = ml.attention(q, k, v, { causal: true });
      out.square().sum().backward();
      return [out, q.grad!, k.grad!, v.grad!].map((t) => Array.from(t.toArray()));
    });
    assert.deepEqual(run(1), run(2));
  } finally {
    ml.setNumThreads(before);
  }
});

test('attention of empty sizes: no keys gives zeros, no queries gives zero key gradients', () => {
  ml.tidy(() => {
    const q = ml.randn([1, 2, 3, 4], { requiresGrad: true });
    const k0 = ml.randn([1, 2, 0, 4], { requiresGrad: true }), v0 = ml.randn([1, 2, 0, 5], { requiresGrad: true });
    const out = ml.attention(q, k0, v0);
    assert.deepEqual(out.shape, [1, 2, 3, 5]);
    assert.ok(Array.from(out.toArray()).every((x) => x === 0));
    out.sum().backward();
    assert.ok(Array.from(q.grad!.toArray()).every((x) => x === 0));
    const q0 = ml.randn([1, 2, 0, 4]), k = ml.randn([1, 2, 3, 4], { requiresGrad: true }), v = ml.randn([1, 2, 3, 4]);
    const o0 = ml.attention(q0, k, v, { causal: true });
    assert.deepEqual(o0.shape, [1, 2, 0, 4]);
    o0.sum().backward();
    assert.ok(Array.from(k.grad!.toArray()).every((x) => x === 0));
  });
});

test('attention argument errors name the op, the argument and the shapes', () => {
  ml.tidy(() => {
    const q = ml.randn([1, 2, 3, 4]), k = ml.randn([1, 2, 5, 4]), v = ml.randn([1, 2, 5, 6]);
    assert.throws(() => ml.attention(q, ml.randn([1, 2, 5, 3]), v), /attention: q \[1, 2, 3, 4\], k \[1, 2, 5, 3\], v \[1, 2, 5, 6\] do not agree/);
    assert.throws(() => ml.attention(q, k, ml.randn([1, 2, 4, 6])), /do not agree/);
    assert.throws(() => ml.attention(ml.randn([2, 3, 4]), k, v), /attention: q, k, v must be \[B, H, N, D\]/);
    assert.throws(() => ml.attention(q, k.cast('bf16'), v), /attention: q, k and v must share a dtype, got q f32, k bf16, v f32/);
    assert.throws(() => ml.attention(q, k, v, { keyPaddingMask: ml.zeros([1, 3]) }), /keyPaddingMask \[1, 3\] must be \[B, M\] = \[1, 5\]/);
    assert.throws(() => ml.attention(q, k, v, { keyPaddingMask: ml.zeros([1, 5]).cast('f16') }), /keyPaddingMask must be f32 or i32/);
    assert.throws(() => ml.attention(q, k, v, { window: 0 }), /attention: window must be in \[1, inf\]/);
    assert.throws(() => ml.attention(q, k, v, { window: 2.5 }), /attention: window must be an integer/);
    assert.throws(() => ml.attention(q, k, v, { causal: 'yes' as unknown as boolean }), /attention: causal must be a boolean/);
    assert.throws(() => ml.attention(q, k, v, { scale: 'x' as unknown as number }), /attention: scale must be a number/);
    assert.throws(() => ml.attention(q, k, v, null as unknown as {}), /attention: options must be an object/);
    assert.throws(() => ml.attention(q, ml.zeros([1, 2, 5, 4], { dtype: 'i32' }), v), /attention: k must be f32\/f16\/bf16, got i32/);
    const d = ml.randn([1, 2, 5, 4]);
    d.dispose();
    assert.throws(() => ml.attention(q, d, v), /attention: k \[1, 2, 5, 4\] was used after dispose/);
  });
});

test('attention leaves no tensors behind after forward and backward', () => {
  const q = ml.randn([2, 2, 40, 16], { requiresGrad: true }), k = ml.randn([2, 2, 30, 16], { requiresGrad: true });
  const v = ml.randn([2, 2, 30, 16], { requiresGrad: true });
  const step = () => ml.tidy(() => {
    ml.attention(q, k, v, { causal: true, window: 7 }).sum().backward();
    for (const t of [q, k, v]) { t.grad!.dispose(); t.grad = null; }
  });
  step();
  const before = ml.memory();
  step();
  const after = ml.memory();
  assert.equal(after.numTensors, before.numTensors);
  assert.equal(after.numBytes, before.numBytes);
  for (const t of [q, k, v]) t.dispose();
});

test('no N x M buffer: N = M = 4096 forward and backward peak far below one 64 MB score matrix', () => {
  // In a fresh process, so that the peak resident size (maxRSS) is this call's. A score matrix of one head would
  // be 4096 * 4096 * 4 B = 64 MB (and the plain backward holds two or three of them).
  const indexJs = path.join(__dirname, '..', '..', 'index.js');
  const code = `
    const ml = require(${JSON.stringify(indexJs)});
    ml.manualSeed(0);
    const N = 4096, D = 64;
    const mk = (s) => ml.randn(s, { requiresGrad: true });
    { const o = ml.attention(mk([1, 1, 128, D]), mk([1, 1, 128, D]), mk([1, 1, 128, D])); o.sum().backward(); }
    const q = mk([1, 1, N, D]), k = mk([1, 1, N, D]), v = mk([1, 1, N, D]), g = ml.randn([1, 1, N, D]);
    const rss0 = process.resourceUsage().maxRSS;
    ml.resetPeak();
    const live0 = ml.memory().numBytes;
    const t0 = Date.now();
    const o = ml.attention(q, k, v);
    o.backward(g);
    const ms = Date.now() - t0;
    const peak = ml.memory().peakBytes - live0;
    const rss1 = process.resourceUsage().maxRSS;
    const ok = [q, k, v].every((t) => t.grad && t.grad.toArray().every(Number.isFinite));
    console.log(JSON.stringify({ rssMB: (rss1 - rss0) / 1024, tensorMB: peak / 2 ** 20, ms, ok }));`;
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const m = JSON.parse(r.stdout.trim().split('\n').pop()!) as { rssMB: number; tensorMB: number; ms: number; ok: boolean };
  assert.ok(m.ok, 'gradients are finite');
  // Tensors: out, lse and the three gradients (and their copies into .grad): about 7 MB.
  assert.ok(m.tensorMB < 16, `tensor peak ${m.tensorMB.toFixed(1)} MB`);
  // The whole process: those tensors plus the kernel's tiles and dq groups (8 x 1 MB here).
  assert.ok(m.rssMB < 40, `peak resident size grew by ${m.rssMB.toFixed(1)} MB (a score matrix is 64 MB)`);
});
