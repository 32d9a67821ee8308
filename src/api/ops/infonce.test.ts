/**
 * infoNCE: against the plain formulation (logits materialised with ml.matmul, two ml.crossEntropy calls) on fresh
 * random inputs, the logit-scale clamp, gradients only where asked, half-precision inputs, argument errors, and
 * memory: a batch whose logits would take 256 MB runs forward and backward in a few MB.
 * The PyTorch fixtures are in test/infonce.fixtures.test.ts; the kernel's own tests in native/test/test_infonce.cc.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../../index';
import { assertClose, lcg } from '../../../test/helpers';

/** N rows of D values, each row scaled to unit length (as CLIP feeds the loss), from a seeded generator. */
function unitRows(N: number, D: number, seed: number): Float32Array {
  const r = lcg(seed);
  const v = new Float32Array(N * D);
  for (let i = 0; i < N; i++) {
    let n = 0;
    for (let d = 0; d < D; d++) {
      const x = 2 * r() - 1 || 0.5;
      v[i * D + d] = x;
      n += x * x;
    }
    for (let d = 0; d < D; d++) v[i * D + d] /= Math.sqrt(n);
  }
  return v;
}

const leaf = (data: Float32Array, shape: number[]) => ml.tensor(data, shape, { requiresGrad: true });

/** The plain formulation: logits = s a b^T in memory, CE over rows and over columns, autograd through all of it. */
function plain(a: ml.Tensor, b: ml.Tensor, ls: ml.Tensor): ml.Tensor {
  const N = a.shape[0];
  const t = ml.arange(N, undefined, 1, { dtype: 'i32' });
  const s = ml.minimum(ml.exp(ls), 100);
  const logits = ml.mul(ml.matmul(a, b, { transB: true }), s);
  return ml.mul(ml.add(ml.crossEntropy(logits, t), ml.crossEntropy(ml.transpose(logits), t)), 0.5);
}

function both(N: number, D: number, logitScale: number, seed: number) {
  const A = unitRows(N, D, seed), B = unitRows(N, D, seed + 1);
  const a1 = leaf(A, [N, D]), b1 = leaf(B, [N, D]), l1 = ml.tensor(logitScale, [], { requiresGrad: true });
  const a2 = leaf(A, [N, D]), b2 = leaf(B, [N, D]), l2 = ml.tensor(logitScale, [], { requiresGrad: true });
  const fused = ml.infoNCE(a1, b1, l1);
  const ref = plain(a2, b2, l2);
  fused.backward();
  ref.backward();
  return { fused, ref, a1, b1, l1, a2, b2, l2 };
}

test('infoNCE matches matmul + crossEntropy on fresh random inputs (N = 300 spans three 128-row tiles)', () => {
  ml.tidy(() => {
    const N = 300, D = 48, l = Math.log(1 / 0.07);
    const r = both(N, D, l, 1);
    assertClose(r.fused.toArray(), r.ref.toArray(), { what: 'loss' });
    // Each gradient element sums N terms of size ~s/N: allow float32 cancellation on that scale.
    const atol = 1e-6 * Math.exp(l) / N * 10;
    assertClose(r.a1.grad!.toArray(), r.a2.grad!.toArray(), { rtol: 1e-4, atol, what: 'grad a' });
    assertClose(r.b1.grad!.toArray(), r.b2.grad!.toArray(), { rtol: 1e-4, atol, what: 'grad b' });
    assertClose(r.l1.grad!.toArray(), r.l2.grad!.toArray(), { rtol: 1e-4, what: 'grad logitScale' });
  });
});

test('infoNCE with N = 1 is 0 (one pair, nothing to confuse it with) and has zero gradients', () => {
  ml.tidy(() => {
    const a = leaf(unitRows(1, 5, 3), [1, 5]), b = leaf(unitRows(1, 5, 4), [1, 5]);
    const ls = ml.tensor([2], [1], { requiresGrad: true });
    const loss = ml.infoNCE(a, b, ls);
    assert.deepEqual(loss.shape, []);
    assert.equal(loss.item(), 0);
    loss.backward();
    assert.deepEqual(Array.from(a.grad!.toArray()), [0, 0, 0, 0, 0]);
    assert.deepEqual(ls.grad!.shape, [1]);
    assert.equal(ls.grad!.item(), 0);
  });
});

test('infoNCE logitScale clamp: gradient 0 at f32(log 100) (exp is just above 100) and past it, not below', () => {
  ml.tidy(() => {
    const at = Math.fround(Math.log(100));
    const below = at - 4.8e-7;  // the next float32 down: exp of it is 99.99996
    assert.ok(Math.fround(below) < at && Math.exp(Math.fround(below)) < 100);
    for (const [l, zero] of [[below, false], [at, true], [7, true]] as const) {
      const r = both(40, 16, l, 5);
      assertClose(r.fused.toArray(), r.ref.toArray(), { what: `loss at logitScale ${l}` });
      const g = r.l1.grad!.item();
      if (zero) assert.equal(g, 0, `logitScale ${l}: the clamp is active, gradient must be 0`);
      else assert.notEqual(g, 0);
    }
  });
});

test('infoNCE gradients only where asked: b without requiresGrad, logitScale as a plain number', () => {
  ml.tidy(() => {
    const N = 20, D = 8;
    const a = leaf(unitRows(N, D, 7), [N, D]), b = ml.tensor(unitRows(N, D, 8), [N, D]);
    const loss = ml.infoNCE(a, b, 2.5);
    loss.backward();
    assert.equal(b.grad, null);
    assert.deepEqual(a.grad!.shape, [N, D]);
    const ref = ml.infoNCE(a.detach(), b, ml.tensor(2.5));
    assert.equal(ref.requiresGrad, false);
    assert.equal(ref.item(), loss.item());
  });
});

test('infoNCE of the same tensor for both sides gets both gradients added', () => {
  ml.tidy(() => {
    const N = 12, D = 6, X = unitRows(N, D, 9);
    const x = leaf(X, [N, D]);
    ml.infoNCE(x, x, 1.5).backward();
    const a = leaf(X, [N, D]), b = leaf(X, [N, D]);
    ml.infoNCE(a, b, 1.5).backward();
    assertClose(x.grad!.toArray(), ml.add(a.grad!, b.grad!).toArray());
  });
});

test('infoNCE with bf16 and f16 inputs equals the f32 loss of the same (widened) values; gradients are f32', () => {
  ml.tidy(() => {
    const N = 30, D = 10;
    for (const dt of ['bf16', 'f16'] as const) {
      const a = ml.tensor(unitRows(N, D, 11), [N, D]).cast(dt).requiresGrad_();
      const b = ml.tensor(unitRows(N, D, 12), [N, D]).cast(dt).requiresGrad_();
      const loss = ml.infoNCE(a, b, 3);
      const ref = ml.infoNCE(a.cast('f32'), b.cast('f32'), 3);
      assert.equal(loss.item(), ref.item());
      loss.backward();
      assert.equal(a.grad!.dtype, 'f32');
      assert.deepEqual(a.grad!.shape, [N, D]);
      assert.deepEqual(b.grad!.shape, [N, D]);
    }
  });
});

test('infoNCE argument errors name the op and the shapes', () => {
  ml.tidy(() => {
    const a = ml.randn([4, 8]);
    assert.throws(() => ml.infoNCE(a, ml.randn([4, 9]), 1), /infoNCE: a \[4, 8\] and b \[4, 9\] must have the same shape/);
    assert.throws(() => ml.infoNCE(a, ml.randn([5, 8]), 1), /infoNCE: a \[4, 8\] and b \[5, 8\]/);
    assert.throws(() => ml.infoNCE(ml.randn([8]), ml.randn([8]), 1), /infoNCE: a must be 2-D \[N, D\], got \[8\]/);
    assert.throws(() => ml.infoNCE(ml.randn([0, 8]), ml.randn([0, 8]), 1), /infoNCE: .*\[0, 8\] hold no pairs/);
    assert.throws(() => ml.infoNCE(a, a, ml.randn([2])), /infoNCE: logitScale must hold one value .*got \[2\]/);
    assert.throws(() => ml.infoNCE(a, a, ml.randn([1, 1])), /infoNCE: logitScale must hold one value/);
    assert.throws(() => ml.infoNCE(a, a, 'x' as unknown as number), /infoNCE: logitScale must be a Tensor or a number/);
    assert.throws(() => ml.infoNCE(ml.zeros([4, 8], { dtype: 'i32' }), a, 1), /infoNCE: a must be f32\/f16\/bf16, got i32/);
    assert.throws(() => ml.infoNCE(a, a, ml.zeros([], { dtype: 'i32' })), /infoNCE: logitScale must be f32/);
    const d = ml.randn([4, 8]);
    d.dispose();
    assert.throws(() => ml.infoNCE(d, a, 1), /infoNCE: a \[4, 8\] was used after dispose/);
  });
});

test('infoNCE with NaN or infinite inputs gives NaN, not a crash', () => {
  ml.tidy(() => {
    const A = unitRows(10, 4, 13);
    A[3] = NaN;
    assert.ok(Number.isNaN(ml.infoNCE(ml.tensor(A, [10, 4]), ml.tensor(unitRows(10, 4, 14), [10, 4]), 1).item()));
    assert.ok(Number.isNaN(ml.infoNCE(ml.randn([3, 2]), ml.randn([3, 2]), NaN).item()));
  });
});

test('infoNCE memory: N = 8192 (logits would be 256 MB) forward + backward in O(N D), and nothing leaks', () => {
  const N = 8192, D = 64;
  const before = ml.memory();
  const maxRss0 = process.resourceUsage().maxRSS * 1024;
  ml.resetPeak();
  ml.tidy(() => {
    const a = leaf(unitRows(N, D, 15), [N, D]), b = leaf(unitRows(N, D, 16), [N, D]);
    const ls = ml.tensor(Math.log(1 / 0.07), [], { requiresGrad: true });
    const loss = ml.infoNCE(a, b, ls);
    loss.backward();
    assert.ok(Number.isFinite(loss.item()) && loss.item() > 0);
  });
  const nd = N * D * 4;
  // Live tensors at the peak: a, b and their gradients (each made once by the kernel, once as the leaf's .grad),
  // the 4N statistics; the naive version would add the 256 MB logits and as much again for their gradient.
  const peak = ml.memory().peakBytes - before.numBytes;
  assert.ok(peak <= 7 * nd, `peak tensor bytes ${peak} exceed 7 N D floats (${7 * nd})`);
  // Native scratch (the packed copy of b, tiles) is outside the tensor count: the process's peak RSS covers it.
  const rss = process.resourceUsage().maxRSS * 1024 - maxRss0;
  assert.ok(rss < 64e6, `peak RSS grew by ${rss} bytes`);
  const after = ml.memory();
  assert.equal(after.numTensors, before.numTensors);
  assert.equal(after.numBytes, before.numBytes);
});
