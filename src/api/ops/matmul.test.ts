/**
 * matmul: hand-computed values, every transpose flag, broadcast batches, gradients (against a plain JS loop),
 * empty sizes and the errors that name both shapes.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../../index';
import { assertClose, randomArray } from '../../../test/helpers';

const prod = (s: readonly number[]): number => s.reduce((p, d) => p * d, 1);

/** Index of a (possibly broadcast) batch entry of `shape`'s batch axes for output batch multi-index `ix`. */
function batchIndex(batch: readonly number[], outBatch: readonly number[], ix: number[]): number {
  const off = outBatch.length - batch.length;
  let lin = 0;
  for (let d = 0; d < batch.length; d++) lin = lin * batch[d] + (batch[d] === 1 ? 0 : ix[d + off]);
  return lin;
}

interface Case { a: number[]; b: number[]; transA?: boolean; transB?: boolean }

/** out = op(a) @ op(b), and the gradients of sum(out * g), in plain JS with double accumulators. */
function reference(c: Case, av: Float32Array, bv: Float32Array, gv?: Float32Array) {
  const { transA = false, transB = false } = c;
  const [ar, ac] = c.a.slice(-2), [br, bc] = c.b.slice(-2);
  const M = transA ? ac : ar, K = transA ? ar : ac, N = transB ? br : bc;
  const aB = c.a.slice(0, -2), bB = c.b.slice(0, -2);
  const nb = Math.max(aB.length, bB.length);
  const pad = (s: number[]) => [...new Array(nb - s.length).fill(1), ...s];
  const outBatch = pad(aB).map((d, i) => (d === 1 ? pad(bB)[i] : d));
  const out = new Float64Array(prod(outBatch) * M * N);
  const da = new Float64Array(av.length), db = new Float64Array(bv.length);
  const A = (t: number, i: number, k: number) => t * M * K + (transA ? k * M + i : i * K + k);
  const B = (t: number, k: number, j: number) => t * K * N + (transB ? j * K + k : k * N + j);
  const ix = new Array(nb).fill(0);
  for (let t = 0; t < prod(outBatch); t++) {
    let r = t;
    for (let d = nb - 1; d >= 0; d--) { ix[d] = r % outBatch[d]; r = Math.floor(r / outBatch[d]); }
    const ta = batchIndex(aB, outBatch, ix), tb = batchIndex(bB, outBatch, ix);
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        const g = gv ? gv[(t * M + i) * N + j] : 0;
        for (let k = 0; k < K; k++) {
          s += av[A(ta, i, k)] * bv[B(tb, k, j)];
          if (gv) {
            da[A(ta, i, k)] += g * bv[B(tb, k, j)];
            db[B(tb, k, j)] += g * av[A(ta, i, k)];
          }
        }
        out[(t * M + i) * N + j] = s;
      }
    }
  }
  return { out, da, db, shape: [...outBatch, M, N] };
}

function runCase(c: Case, seed: number, grad = true): void {
  const av = randomArray(prod(c.a), seed), bv = randomArray(prod(c.b), seed + 1);
  const a = ml.tensor(av, c.a, { requiresGrad: grad }), b = ml.tensor(bv, c.b, { requiresGrad: grad });
  const y = ml.matmul(a, b, { transA: c.transA, transB: c.transB });
  const gv = randomArray(y.size, seed + 2);
  const ref = reference(c, av, bv, gv);
  const what = `${JSON.stringify(c)}`;
  assert.deepEqual(y.shape, ref.shape, what);
  // Float32 sums of K terms: allow ~sqrt(K) rounding steps on top of the policy's rtol.
  const K = c.transA ? c.a[c.a.length - 2] : c.a[c.a.length - 1];
  const atol = 1e-6 * Math.max(4, Math.sqrt(K) * 4);
  assertClose(y.toArray(), ref.out, { what: `${what} forward`, atol });
  if (!grad) return;
  y.backward(ml.tensor(gv, y.shape));
  assertClose(a.grad!.toArray(), ref.da, { what: `${what} dA`, atol: atol * 4 });
  assertClose(b.grad!.toArray(), ref.db, { what: `${what} dB`, atol: atol * 4 });
}

test('matmul of 2x2 matrices, computed by hand', () => {
  const a = ml.tensor([[1, 2], [3, 4]]), b = ml.tensor([[5, 6], [7, 8]]);
  assertClose(ml.matmul(a, b).toArray(), [19, 22, 43, 50]);
  assertClose(a.matmul(b, { transA: true }).toArray(), [26, 30, 38, 44]);   // [[1,3],[2,4]] @ b
  assertClose(a.matmul(b, { transB: true }).toArray(), [17, 23, 39, 53]);   // a @ [[5,7],[6,8]]
});

test('matmul at uneven sizes with every transpose flag, against a JS loop', () => {
  let seed = 10;
  for (const [M, K, N] of [[1, 1, 1], [3, 5, 7], [17, 33, 65], [40, 70, 90]]) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        runCase({ a: transA ? [K, M] : [M, K], b: transB ? [N, K] : [K, N], transA, transB }, seed += 3);
      }
    }
  }
});

test('batched broadcast matmul [2,1,3,4] @ [5,4,2] -> [2,5,3,2], with gradients summed over broadcast axes', () => {
  runCase({ a: [2, 1, 3, 4], b: [5, 4, 2] }, 100);
  runCase({ a: [2, 1, 4, 3], b: [5, 2, 4], transA: true, transB: true }, 110);
  runCase({ a: [3, 4], b: [2, 3, 4, 5] }, 120);           // a shared by every batch entry
  runCase({ a: [2, 3, 6, 5], b: [1, 3, 5, 4] }, 130);     // size-1 batch axis in b
});

test('matmul of a batch with a shared weight (the Linear-layer layouts, folded into one GEMM)', () => {
  runCase({ a: [3, 4, 5], b: [5, 6] }, 200);                        // x @ W
  runCase({ a: [3, 4, 5], b: [6, 5], transB: true }, 210);           // x @ W^T
  runCase({ a: [2, 3, 5, 4], b: [5, 6], transA: true }, 220);        // transposed activations
  runCase({ a: [2, 3, 40, 30], b: [30, 50] }, 230);                  // large enough for the BLAS path
});

test('matmul where only one input requires grad', () => {
  const av = randomArray(12, 1), bv = randomArray(20, 2);
  const a = ml.tensor(av, [3, 4], { requiresGrad: true }), b = ml.tensor(bv, [4, 5]);
  const y = ml.matmul(a, b);
  const gv = randomArray(15, 3);
  y.backward(ml.tensor(gv, [3, 5]));
  assertClose(a.grad!.toArray(), reference({ a: [3, 4], b: [4, 5] }, av, bv, gv).da);
  assert.equal(b.grad, null);
});

test('matmul with empty sizes: K = 0 gives zeros, M = 0 or an empty batch gives an empty result', () => {
  const z = ml.matmul(ml.tensor(new Float32Array(0), [2, 0], { requiresGrad: true }), ml.tensor(new Float32Array(0), [0, 3]));
  assert.deepEqual(z.shape, [2, 3]);
  assertClose(z.toArray(), [0, 0, 0, 0, 0, 0]);
  assert.deepEqual(ml.matmul(ml.tensor(new Float32Array(0), [0, 3]), ml.tensor(randomArray(6, 1), [3, 2])).shape, [0, 2]);
  // An empty batch: b's gradient is a sum over nothing, so zeros of b's shape.
  const b = ml.tensor(randomArray(6, 2), [3, 2], { requiresGrad: true });
  const y = ml.matmul(ml.tensor(new Float32Array(0), [0, 4, 3]), b);
  assert.deepEqual(y.shape, [0, 4, 2]);
  y.backward(ml.tensor(new Float32Array(0), [0, 4, 2]));
  assertClose(b.grad!.toArray(), [0, 0, 0, 0, 0, 0]);
});

test('matmul errors name the op and both shapes', () => {
  const a = ml.tensor(randomArray(6, 1), [2, 3]), b = ml.tensor(randomArray(20, 2), [4, 5]);
  assert.throws(() => ml.matmul(a, b), /matmul: a \[2, 3\] and b \[4, 5\]: inner dimensions 3 and 4 differ/);
  assert.throws(() => ml.matmul(ml.tensor([1, 2, 3]), b), /matmul: a \[3\] and b \[4, 5\]: both operands need at least 2 dims/);
  assert.throws(() => ml.matmul(ml.tensor(randomArray(24, 3), [2, 3, 4]), ml.tensor(randomArray(60, 4), [3, 4, 5])),
    /matmul: a \[2, 3, 4\] and b \[3, 4, 5\]: batch dimensions \[2\] and \[3\] cannot be broadcast/);
  assert.throws(() => ml.matmul(a, b, { transA: true }), /a \[2, 3\] \(transA\) and b \[4, 5\]: inner dimensions 2 and 4/);
  assert.throws(() => ml.matmul(ml.tensor([[1, 2]], undefined, { dtype: 'i32' }), b), /matmul: a must be f32, got i32/);
  assert.throws(() => ml.matmul(a, b, { transA: 1 as unknown as boolean }), /matmul: transA must be a boolean/);
  assert.throws(() => ml.matmul(a, 3 as unknown as ml.Tensor), /matmul: b must be a Tensor/);
});

test('matmul leaks no tensors: forward and backward inside tidy', () => {
  const a = ml.tensor(randomArray(24, 1), [2, 3, 4], { requiresGrad: true });
  const b = ml.tensor(randomArray(20, 2), [4, 5], { requiresGrad: true });
  const before = ml.memory().numTensors;
  ml.tidy(() => {
    const y = ml.matmul(a, b);
    y.backward(ml.tensor(randomArray(30, 3), y.shape));
  });
  assert.equal(ml.memory().numTensors, before + 2);   // a.grad and b.grad
});
