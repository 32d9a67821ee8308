/**
 * softmax and logSoftmax: hand-computed values, every axis position, the -inf and NaN edges, and the fused
 * backward against the analytic gradient of sum(w * softmax(x)) and against finite differences.
 *
 * Gradients are read by running the op's own backward function on a seed (out._node.backwardFn), so these tests
 * check this op alone, not the autograd engine or the other op families.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../../index';
import { assertClose, randomArray } from '../../../test/helpers';

/** The op's gradient for a seed, run as the engine would (under noGrad). */
function grads(out: ml.Tensor, seed: number[] | Float32Array): Array<ml.Tensor<'f32'> | null> {
  assert.ok(out._node, 'the op recorded no autograd node');
  const g = ml.tensor(Float32Array.from(seed), out.shape);
  try {
    return ml.noGrad(() => out._node!.backwardFn(g));
  } finally {
    g.dispose();
  }
}

/** Reference softmax (or log-softmax) in float64 along `axis` of a contiguous shape. */
function refSoftmax(x: ArrayLike<number>, shape: number[], axis: number, log = false): number[] {
  const len = shape[axis];
  const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  const outer = shape.slice(0, axis).reduce((p, d) => p * d, 1);
  const y = new Array<number>(x.length);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (l: number) => (o * len + l) * inner + i;
      let m = -Infinity;
      for (let l = 0; l < len; l++) m = Math.max(m, x[at(l)]);
      let s = 0;
      for (let l = 0; l < len; l++) s += Math.exp(x[at(l)] - m);
      for (let l = 0; l < len; l++) y[at(l)] = log ? x[at(l)] - m - Math.log(s) : Math.exp(x[at(l)] - m) / s;
    }
  }
  return y;
}

test('softmax of [1, 2, 3] and [0, 0] (hand-computed)', () => {
  const y = ml.softmax(ml.tensor([1, 2, 3]));
  assertClose(y.toArray(), [0.09003057, 0.24472847, 0.66524096]);
  const z = ml.softmax(ml.tensor([[0, 0], [5, 5]]));
  assertClose(z.toArray(), [0.5, 0.5, 0.5, 0.5]);
});

test('logSoftmax of [1, 2, 3] is x - logsumexp(x) (hand-computed)', () => {
  // logsumexp([1, 2, 3]) = 3 + log(1 + e^-1 + e^-2) = 3.40760596
  const y = ml.logSoftmax(ml.tensor([[1, 2, 3]]));
  assertClose(y.toArray(), [-2.40760596, -1.40760596, -0.40760596]);
  assert.deepEqual(y.shape, [1, 3]);
});

test('softmax and logSoftmax along the first, a middle and the last axis', () => {
  const shape = [3, 4, 5];
  const data = randomArray(60, 7, -3, 3);
  const x = ml.tensor(data, shape);
  for (const axis of [0, 1, 2, -1, -2]) {
    const a = axis < 0 ? axis + 3 : axis;
    assertClose(ml.softmax(x, axis).toArray(), refSoftmax(data, shape, a), { what: `softmax axis ${axis}` });
    assertClose(ml.logSoftmax(x, axis).toArray(), refSoftmax(data, shape, a, true), { what: `logSoftmax axis ${axis}` });
  }
  // The method forms are the same op.
  assertClose(x.softmax(1).toArray(), refSoftmax(data, shape, 1));
  assertClose(x.logSoftmax().toArray(), refSoftmax(data, shape, 2, true));
});

test('softmax over a strided axis wider than one kernel tile (inner 70)', () => {
  const shape = [2, 6, 70];
  const data = randomArray(2 * 6 * 70, 11, -4, 4);
  assertClose(ml.softmax(ml.tensor(data, shape), 1).toArray(), refSoftmax(data, shape, 1));
});

test('softmax of a long row (5000 logits) sums to 1', () => {
  const data = randomArray(5000, 3, -10, 10);
  const y = ml.softmax(ml.tensor(data)).toArray();
  assertClose(y, refSoftmax(data, [5000], 0));
  let s = 0;
  for (const v of y) s += v;
  assert.ok(Math.abs(s - 1) < 1e-5, `sum ${s}`);
});

test('softmax of large logits does not overflow', () => {
  const y = ml.softmax(ml.tensor([1000, 1001, 999])).toArray();
  assertClose(y, refSoftmax([1000, 1001, 999], [3], 0));
  const l = ml.logSoftmax(ml.tensor([-1000, 1000])).toArray();
  assertClose(l, [-2000, 0]);
});

test('softmax of a -inf row is NaN; -inf entries of other rows get probability 0', () => {
  const x = ml.tensor([[-Infinity, -Infinity, -Infinity], [0, -Infinity, 0]]);
  const y = ml.softmax(x).toArray();
  assert.ok(Number.isNaN(y[0]) && Number.isNaN(y[1]) && Number.isNaN(y[2]), `row 0 ${y.slice(0, 3)}`);
  assertClose(y.slice(3), [0.5, 0, 0.5]);
  const l = ml.logSoftmax(x).toArray();
  assert.ok(Number.isNaN(l[0]) && Number.isNaN(l[1]) && Number.isNaN(l[2]));
  assertClose(l.slice(3), [-Math.LN2, -Infinity, -Math.LN2]);
});

test('softmax of a row with NaN is NaN in that row only', () => {
  const y = ml.softmax(ml.tensor([[1, NaN, 2], [1, 2, 3]])).toArray();
  assert.ok([0, 1, 2].every((i) => Number.isNaN(y[i])));
  assertClose(y.slice(3), [0.09003057, 0.24472847, 0.66524096]);
});

test('softmax of an empty tensor and of a 0-d tensor', () => {
  assert.deepEqual(ml.softmax(ml.tensor([], [0, 3])).shape, [0, 3]);
  assert.deepEqual(ml.softmax(ml.tensor([], [2, 0]), -1).shape, [2, 0]);
  const s = ml.softmax(ml.tensor(4));
  assert.deepEqual(s.shape, []);
  assertClose(s.toArray(), [1]);
  assertClose(ml.logSoftmax(ml.tensor(4)).toArray(), [0]);
});

test('softmax gradient: d/dx sum(w * softmax(x)) = y * (w - sum(w * y))', () => {
  const shape = [2, 3, 4];
  const xd = randomArray(24, 21, -2, 2), w = randomArray(24, 22, -1, 1);
  for (const axis of [2, 1, 0]) {
    const x = ml.tensor(xd, shape, { requiresGrad: true });
    const y = ml.softmax(x, axis);
    const [dx] = grads(y, w);
    const yr = refSoftmax(xd, shape, axis);
    // Expected: per softmax row, dx_i = y_i (w_i - sum_j w_j y_j).
    const len = shape[axis], inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
    const outer = 24 / (len * inner);
    const expected = new Array<number>(24);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const at = (l: number) => (o * len + l) * inner + i;
        let d = 0;
        for (let l = 0; l < len; l++) d += w[at(l)] * yr[at(l)];
        for (let l = 0; l < len; l++) expected[at(l)] = yr[at(l)] * (w[at(l)] - d);
      }
    }
    assert.deepEqual(dx!.shape, shape);
    assertClose(dx!.toArray(), expected, { what: `softmax dx axis ${axis}` });
  }
});

test('logSoftmax gradient: d/dx sum(w * logSoftmax(x)) = w - softmax(x) * sum(w)', () => {
  const xd = randomArray(12, 31, -2, 2), w = randomArray(12, 32, -1, 1);
  const x = ml.tensor(xd, [3, 4], { requiresGrad: true });
  const [dx] = grads(ml.logSoftmax(x), w);
  const p = refSoftmax(xd, [3, 4], 1);
  const expected: number[] = [];
  for (let r = 0; r < 3; r++) {
    let s = 0;
    for (let c = 0; c < 4; c++) s += w[r * 4 + c];
    for (let c = 0; c < 4; c++) expected.push(w[r * 4 + c] - p[r * 4 + c] * s);
  }
  assertClose(dx!.toArray(), expected);
});

test('softmax and logSoftmax gradients agree with finite differences', () => {
  const xd = randomArray(10, 41, -2, 2), w = randomArray(10, 42, -1, 1);
  for (const fn of [ml.softmax, ml.logSoftmax]) {
    const f = (v: Float32Array): number => {
      const y = ml.noGrad(() => fn(ml.tensor(v, [2, 5]))).toArray();
      let s = 0;
      for (let i = 0; i < 10; i++) s += w[i] * y[i];
      return s;
    };
    const [dx] = grads(fn(ml.tensor(xd, [2, 5], { requiresGrad: true })), w);
    const h = 1e-2, fd: number[] = [];
    for (let i = 0; i < 10; i++) {
      const a = Float32Array.from(xd), b = Float32Array.from(xd);
      a[i] += h;
      b[i] -= h;
      fd.push((f(a) - f(b)) / (2 * h));
    }
    assertClose(dx!.toArray(), fd, { rtol: 2e-3, atol: 2e-4, what: `${fn.name} finite differences` });
  }
});

test('softmax records no graph without requiresGrad and frees everything it made', () => {
  const x = ml.tensor(randomArray(8, 51), [2, 4]);
  const before = ml.memory();
  const y = ml.softmax(x);
  assert.equal(y.requiresGrad, false);
  assert.equal(y._node, null);
  y.dispose();
  assert.equal(ml.memory().numTensors, before.numTensors);
  assert.equal(ml.memory().numBytes, before.numBytes);
  // With a graph: the saved output is released with the node.
  const xg = ml.tensor(randomArray(8, 52), [2, 4], { requiresGrad: true });
  const before2 = ml.memory();
  const yg = ml.softmax(xg);
  const [dx] = grads(yg, randomArray(8, 53));
  dx!.dispose();
  yg._node!.release();
  yg.dispose();
  assert.equal(ml.memory().numTensors, before2.numTensors);
  assert.equal(ml.memory().numBytes, before2.numBytes);
});

test('softmax argument errors name the op and the argument', () => {
  assert.throws(() => ml.softmax(ml.tensor([1, 2], [2], { dtype: 'i32' })), /softmax: x must be f32, got i32 \[2\]/);
  assert.throws(() => ml.softmax(ml.tensor([1, 2]), 1), /softmax: axis 1 is out of range for a tensor with 1 dims/);
  assert.throws(() => ml.logSoftmax(ml.tensor([1, 2]), 0.5), /logSoftmax: axis must be an integer/);
  assert.throws(() => ml.softmax([1, 2] as never), /softmax: x must be a Tensor/);
  const d = ml.tensor([1, 2]);
  d.dispose();
  assert.throws(() => ml.softmax(d), /softmax: x \[2\] was used after dispose/);
});
