/**
 * matmul on bf16 / f16 operands and under ml.autocast: the half GEMM against the f32 GEMM (on the same values,
 * and on the f32 values before rounding, with a stated bf16/f16 tolerance), every transpose, broadcast batches,
 * gradients through the autocast casts to f32 master weights, nn.Linear under autocast, and the errors.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../../index';
import { binding } from '../binding';
import { assertClose, randomArray } from '../../../test/helpers';

type Half = 'bf16' | 'f16';
const HALF: Half[] = ['bf16', 'f16'];
/** Unit roundoff of each dtype: rounding moves a value by at most this fraction of itself. */
const UNIT: Record<Half, number> = { bf16: 2 ** -9, f16: 2 ** -11 };

/** sum_k |op(a)_ik| |op(b)_kj| for 2-D operands: the scale of the rounding error of element (i, j). */
function absProducts(a: Float32Array, b: Float32Array, M: number, N: number, K: number, ta: boolean, tb: boolean): Float64Array {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += Math.abs((ta ? a[k * M + i] : a[i * K + k]) * (tb ? b[j * K + k] : b[k * N + j]));
      out[i * N + j] = s;
    }
  }
  return out;
}

/**
 * |x - ref| <= bound_i for every element, naming the worst one. `bound` is the error budget element by element
 * (rounding error scales with sum |a||b|, not with |result|, which can cancel to near zero).
 */
function assertWithin(x: Float32Array, ref: Float32Array, bound: ArrayLike<number>, what: string): void {
  let worst = 0, wi = -1;
  for (let i = 0; i < x.length; i++) {
    const used = Math.abs(x[i] - ref[i]) / bound[i];
    if (!(used <= worst)) { worst = used; wi = i; }
  }
  if (!(worst <= 1)) assert.fail(`${what}: element ${wi} is ${x[wi]}, reference ${ref[wi]} (${worst.toFixed(2)}x the bound ${bound[wi]})`);
}

test('half matmul equals the f32 GEMM of the same values (products exact, f32 accumulation), every transpose', () => {
  ml.tidy(() => {
    for (const dt of HALF) {
      for (const [M, N, K] of [[1, 1, 1], [7, 5, 3], [33, 65, 129], [64, 48, 300]]) {
        for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]]) {
          const a = ml.tensor(randomArray(M * K, M + K, -2, 2), transA ? [K, M] : [M, K]).cast(dt);
          const b = ml.tensor(randomArray(K * N, N + 7 * K, -2, 2), transB ? [N, K] : [K, N]).cast(dt);
          const got = ml.matmul(a, b, { transA, transB });
          assert.equal(got.dtype, 'f32');
          const ref = ml.matmul(a.cast('f32'), b.cast('f32'), { transA, transB });
          // Only the summation order differs from the f32 GEMM: f32 tolerance, widened by sqrt(K) for long sums.
          assertClose(got.toArray(), ref.toArray(), { rtol: 1e-5, atol: 4e-6 * Math.sqrt(K) * 4,
            what: `${dt} ${M}x${N}x${K} transA=${transA} transB=${transB}` });
        }
      }
    }
  });
});

test('bf16/f16 matmul of rounded f32 inputs stays within the rounding bound of the f32 result', () => {
  // Rounding each operand to the half dtype moves it by at most u (2^-9 bf16, 2^-11 f16) relative, so each
  // product moves by at most (1 + u)^2 - 1 < 2.01 u, and element (i, j) by at most 2.01 u sum_k |a_ik b_kj|.
  // The f32 accumulation adds ~K 2^-24 sum |a b|; the stated bound is 2.01 u + 1e-5 times sum |a b|.
  ml.tidy(() => {
    const M = 40, N = 56, K = 200;
    const av = randomArray(M * K, 1, -3, 3), bv = randomArray(K * N, 2, -3, 3);
    const a = ml.tensor(av, [M, K]), b = ml.tensor(bv, [K, N]);
    const exact = ml.matmul(a, b).toArray();
    const scale = absProducts(av, bv, M, N, K, false, false);
    for (const dt of HALF) {
      const got = ml.matmul(a.cast(dt), b.cast(dt)).toArray();
      assertWithin(got, exact, scale.map((s) => (2.01 * UNIT[dt] + 1e-5) * s), `${dt} GEMM vs f32`);
      // and the bound is not vacuous: the half result does differ from the f32 one
      assert.ok(got.some((v, i) => v !== exact[i]), `${dt}: no element differs from f32 (was the GEMM run in f32?)`);
    }
  });
});

test('half matmul broadcasts batches like the f32 one (stride-0 operands, 4-D against 3-D)', () => {
  ml.tidy(() => {
    for (const dt of HALF) {
      for (const [sa, sb] of [[[2, 1, 5, 6], [3, 6, 4]], [[5, 6], [4, 6, 7]], [[3, 5, 6], [6, 2]]]) {
        const a = ml.tensor(randomArray(sa.reduce((p, d) => p * d, 1), 3), sa).cast(dt);
        const b = ml.tensor(randomArray(sb.reduce((p, d) => p * d, 1), 4), sb).cast(dt);
        const got = ml.matmul(a, b);
        const ref = ml.matmul(a.cast('f32'), b.cast('f32'));
        assert.deepEqual(got.shape, ref.shape);
        assertClose(got.toArray(), ref.toArray(), { what: `${dt} ${JSON.stringify(sa)} @ ${JSON.stringify(sb)}` });
      }
    }
  });
});

test('half matmul with an empty dimension: [0, 3] @ [3, 4] is empty, K = 0 gives zeros', () => {
  ml.tidy(() => {
    for (const dt of HALF) {
      assert.deepEqual(ml.matmul(ml.zeros([0, 3]).cast(dt), ml.zeros([3, 4]).cast(dt)).shape, [0, 4]);
      const z = ml.matmul(ml.zeros([2, 0]).cast(dt), ml.zeros([0, 3]).cast(dt));
      assert.deepEqual(Array.from(z.toArray()), [0, 0, 0, 0, 0, 0]);
    }
  });
});

test('gradients of half leaves are f32 of their shape and match the f32 gradients within half rounding', () => {
  ml.tidy(() => {
    const M = 6, N = 5, K = 9;
    const av = randomArray(M * K, 11), bv = randomArray(K * N, 12), gv = randomArray(M * N, 13);
    for (const dt of HALF) {
      const a = ml.tensor(av, [M, K]).cast(dt).requiresGrad_();
      const b = ml.tensor(bv, [N, K]).cast(dt).requiresGrad_();
      ml.matmul(a, b, { transB: true }).backward(ml.tensor(gv, [M, N]));
      const af = a.cast('f32').detach().requiresGrad_(), bf = b.cast('f32').detach().requiresGrad_();
      ml.matmul(af, bf, { transB: true }).backward(ml.tensor(gv, [M, N]));
      assert.equal(a.grad!.dtype, 'f32');
      assert.deepEqual(a.grad!.shape, [M, K]);
      assert.deepEqual(b.grad!.shape, [N, K]);
      // The backward rounds g to dt, the operands are exact: error <= u |g| |b| summed over N (or M).
      assertClose(a.grad!.toArray(), af.grad!.toArray(), { rtol: 4 * UNIT[dt], atol: 4 * UNIT[dt] * N, what: `${dt} dA` });
      assertClose(b.grad!.toArray(), bf.grad!.toArray(), { rtol: 4 * UNIT[dt], atol: 4 * UNIT[dt] * M, what: `${dt} dB` });
    }
  });
});

test('half matmul gradients over broadcast batches sum like the f32 ones', () => {
  ml.tidy(() => {
    for (const dt of HALF) {
      for (const [sa, sb, tA, tB] of [[[2, 1, 5, 6], [3, 6, 4], false, false], [[4, 6, 5], [5, 6], true, true],
        [[3, 5, 6], [3, 4, 6], false, true]] as Array<[number[], number[], boolean, boolean]>) {
        const n = (s: number[]) => s.reduce((p, d) => p * d, 1);
        const a = ml.tensor(randomArray(n(sa), 5), sa).cast(dt).requiresGrad_();
        const b = ml.tensor(randomArray(n(sb), 6), sb).cast(dt).requiresGrad_();
        const y = ml.matmul(a, b, { transA: tA, transB: tB });
        const g = ml.tensor(randomArray(y.size, 7), y.shape);
        y.backward(g);
        const af = a.cast('f32').detach().requiresGrad_(), bf = b.cast('f32').detach().requiresGrad_();
        ml.matmul(af, bf, { transA: tA, transB: tB }).backward(g);
        const what = `${dt} ${JSON.stringify(sa)} @ ${JSON.stringify(sb)}`;
        assertClose(a.grad!.toArray(), af.grad!.toArray(), { rtol: 4 * UNIT[dt], atol: 4 * UNIT[dt] * 12, what: `${what} dA` });
        assertClose(b.grad!.toArray(), bf.grad!.toArray(), { rtol: 4 * UNIT[dt], atol: 4 * UNIT[dt] * 12, what: `${what} dB` });
      }
    }
  });
});

test('autocast: f32 operands are cast to the region dtype, the result is f32 and gradients reach the f32 weights', () => {
  ml.tidy(() => {
    ml.manualSeed(3);
    const x = ml.randn([4, 5, 16], { requiresGrad: true });
    const w = ml.randn([8, 16], { requiresGrad: true });
    const y = ml.matmul(x, w, { transB: true });
    y.sum().backward();
    const gx = x.grad!.toArray(), gw = w.grad!.toArray(), yf = y.toArray();
    x.grad = null; w.grad = null;
    for (const dt of HALF) {
      const yh = ml.autocast(dt, () => ml.matmul(x, w, { transB: true }));
      assert.equal(yh.dtype, 'f32');
      // It really ran in low precision: the result equals the matmul of the rounded operands.
      const yr = ml.matmul(x.cast(dt), w.cast(dt), { transB: true });
      assertClose(yh.toArray(), yr.toArray(), { what: `${dt} autocast forward vs rounded operands` });
      assert.ok(yh.toArray().some((v, i) => v !== yf[i]), `${dt}: autocast gave the f32 result`);
      yh.sum().backward();
      assert.equal(w.grad!.dtype, 'f32');
      assertClose(x.grad!.toArray(), gx, { rtol: 8 * UNIT[dt], atol: 8 * UNIT[dt] * 8, what: `${dt} dx` });
      assertClose(w.grad!.toArray(), gw, { rtol: 8 * UNIT[dt], atol: 8 * UNIT[dt] * 20, what: `${dt} dw` });
      x.grad = null; w.grad = null;
    }
    // Mixed half dtypes inside a region are cast to the region's dtype; outside a region they are an error.
    const p = ml.randn([3, 4]).cast('f16'), q = ml.randn([4, 2]).cast('bf16');
    assert.equal(ml.autocast('bf16', () => ml.matmul(p, q)).dtype, 'f32');
    assert.throws(() => ml.matmul(p, q), /matmul: a \[3, 4\] and b \[4, 2\]: a is f16 and b is bf16/);
    assert.equal(ml.autocastDtype(), null);
  });
});

test('nn.Linear under autocast: bf16 GEMM, f32 output and bias, f32 gradients for weight and bias', () => {
  ml.tidy(() => {
    ml.manualSeed(4);
    const lin = new ml.nn.Linear(32, 12);
    const x = ml.randn([3, 7, 32]);
    const ref = lin.forward(x);
    ref.square().mean().backward();
    const gw = lin.weight.grad!.toArray(), gb = lin.bias!.grad!.toArray();
    lin.zeroGrad();
    const y = ml.autocast('bf16', () => lin.forward(x));
    assert.equal(y.dtype, 'f32');
    assert.deepEqual(y.shape, [3, 7, 12]);
    // Each output sums 32 products of values below ~3 in size: bf16 error below 2 * 2^-9 * 32 * 3.
    assertClose(y.toArray(), ref.toArray(), { rtol: 0, atol: 2 * 2 ** -9 * 32 * 3, what: 'Linear bf16 forward' });
    y.square().mean().backward();
    assert.equal(lin.weight.grad!.dtype, 'f32');
    assert.equal(lin.weight.dtype, 'f32');
    assertClose(lin.weight.grad!.toArray(), gw, { rtol: 0.05, atol: 2e-3, what: 'Linear bf16 dW' });
    assertClose(lin.bias!.grad!.toArray(), gb, { rtol: 0.05, atol: 2e-3, what: 'Linear bf16 db' });
  });
});

test('half matmul errors name the op and both shapes; i32 is refused', () => {
  ml.tidy(() => {
    const a = ml.zeros([2, 3]).cast('bf16');
    assert.throws(() => ml.matmul(a, ml.zeros([4, 5]).cast('bf16')), /matmul: a \[2, 3\] and b \[4, 5\]: inner dimensions 3 and 4 differ/);
    assert.throws(() => ml.matmul(a, ml.zeros([3, 2])), /a is bf16 and b is f32/);
    assert.throws(() => ml.matmul(a, ml.zeros([3, 2], { dtype: 'i32' })), /matmul: b must be f32, got i32 \[3, 2\] \(or two f16\/bf16 operands/);
    const paths = binding().halfPaths();
    assert.ok(['avx512_bf16', 'f32'].includes(paths.gemmBf16), `unexpected bf16 GEMM path ${paths.gemmBf16}`);
  });
});
