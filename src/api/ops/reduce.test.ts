/**
 * Reductions: hand-computed sums, means, maxima and minima over all axes, one axis (negative too), several
 * adjacent and non-adjacent axes, keepDims; max/min gradients to the first arg index; argmax/argmin; sumToShape;
 * the empty-axis, NaN and long-row edges; and the errors bad input must raise.
 *
 * Gradients are read by running the op's own backward function on a seed (out._node.backwardFn).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../../index';
import { assertClose, randomArray } from '../../../test/helpers';

function grads(out: ml.Tensor, seed: ArrayLike<number>): Array<ml.Tensor<'f32'> | null> {
  assert.ok(out._node, 'the op recorded no autograd node');
  const g = ml.tensor(Float32Array.from(seed), out.shape);
  try {
    return ml.noGrad(() => out._node!.backwardFn(g));
  } finally {
    g.dispose();
  }
}

const arr = (t: ml.Tensor | null): number[] => Array.from(t!.toArray() as ArrayLike<number>);

/** Reference reduction in double over `axes` of a contiguous shape: values (and first arg flat index). */
function refReduce(x: ArrayLike<number>, shape: number[], axes: number[], op: 'sum' | 'mean' | 'max' | 'min'): number[] {
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((p, d) => p * d, 1));
  const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const nOut = outShape.reduce((p, d) => p * d, 1);
  const acc = new Array<number>(nOut).fill(op === 'max' ? -Infinity : op === 'min' ? Infinity : 0);
  const count = axes.reduce((p, a) => p * shape[a], 1);
  for (let f = 0; f < x.length; f++) {
    let o = 0, os = 1;
    const idx = shape.map((_, i) => Math.floor(f / strides[i]) % shape[i]);
    for (let i = shape.length - 1; i >= 0; i--) {
      o += (axes.includes(i) ? 0 : idx[i]) * os;
      os *= outShape[i];
    }
    const v = x[f];
    if (op === 'sum' || op === 'mean') acc[o] += v;
    else if (op === 'max') acc[o] = Math.max(acc[o], v);
    else acc[o] = Math.min(acc[o], v);
  }
  return op === 'mean' ? acc.map((s) => s / count) : acc;
}

test('sum, mean, max, min over all axes give shape [] (hand-computed)', () => {
  const x = ml.tensor([[1, 5, 2], [7, 0, 7]]);
  for (const [f, v] of [[ml.sum, 22], [ml.mean, 22 / 6], [ml.max, 7], [ml.min, 0]] as const) {
    const y = f(x);
    assert.deepEqual(y.shape, []);
    assertClose([y.item()], [v]);
  }
  assert.equal(x.sum().item(), 22);
  assert.deepEqual(x.max(undefined, true).shape, [1, 1]);
  assert.deepEqual(x.sum([0, 1]).shape, []);
});

test('one axis, negative axes and keepDims', () => {
  const x = ml.tensor([[1, 5, 2], [7, 0, 7]]);
  assert.deepEqual(arr(x.sum(0)), [8, 5, 9]);
  assert.deepEqual(arr(x.sum(1)), [8, 14]);
  assert.deepEqual(arr(x.sum(-1)), [8, 14]);
  assertClose(arr(x.mean(1)), [8 / 3, 14 / 3]);
  assert.deepEqual(arr(x.max(-1)), [5, 7]);
  assert.deepEqual(arr(x.min(0)), [1, 0, 2]);
  assert.deepEqual(x.max(-1, true).shape, [2, 1]);
  assert.deepEqual(x.mean(0, true).shape, [1, 3]);
  assert.deepEqual(x.sum(-2).shape, [3]);
});

test('several axes, adjacent and not, against a reference, with keepDims', () => {
  const shape = [3, 4, 5, 2];
  const data = randomArray(120, 1, -4, 4);
  const x = ml.tensor(data, shape);
  const cases: number[][] = [[0, 1], [1, 2], [2, 3], [0, 2], [1, 3], [0, 3], [0, 1, 3], [0, 2, 3], [0, 1, 2, 3], [3], [-1, -3]];
  for (const axes of cases) {
    const pos = axes.map((a) => (a < 0 ? a + 4 : a)).sort();
    for (const op of ['sum', 'mean', 'max', 'min'] as const) {
      const y = ml[op](x, axes, true);
      assert.deepEqual(y.shape, shape.map((d, i) => (pos.includes(i) ? 1 : d)), `${op} ${axes} keepDims`);
      assertClose(arr(y), refReduce(data, shape, pos, op), { what: `${op} over [${axes}]` });
      const z = ml[op](x, axes);
      assert.deepEqual(z.shape, shape.filter((_, i) => !pos.includes(i)));
    }
  }
});

test('axes of size 1 between reduced axes, and reducing only size-1 axes', () => {
  const x = ml.tensor(randomArray(12, 2), [3, 1, 4]);
  assertClose(arr(x.sum([0, 2])), [refReduce(x.toArray(), [3, 1, 4], [0, 2], 'sum')[0]]);
  const y = x.sum(1);
  assert.deepEqual(y.shape, [3, 4]);
  assert.deepEqual(arr(y), arr(x));
  const [am] = [ml.argmax(x, 1)];
  assert.deepEqual(arr(am), new Array(12).fill(0));
});

test('sum and mean gradients broadcast back (mean scaled by 1 / count)', () => {
  const x = ml.tensor(randomArray(24, 3), [2, 3, 4], { requiresGrad: true });
  const [g0] = grads(ml.sum(x, 1), [1, 2, 3, 4, 5, 6, 7, 8]);
  const want: number[] = [];
  for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 4; k++) want.push(i * 4 + k + 1);
  assert.deepEqual(arr(g0), want);
  const [g1] = grads(ml.mean(x, [0, 2]), [3, 6, 9]);
  assert.deepEqual(g1!.shape, [2, 3, 4]);
  assertClose(arr(g1), want.map((_, f) => [3, 6, 9][Math.floor(f / 4) % 3] / 8));
  const [g2] = grads(ml.mean(x), [2]);
  assertClose(arr(g2), new Array(24).fill(2 / 24));
  const [g3] = grads(ml.sum(x, [-1], true), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(arr(g3), Array.from({ length: 24 }, (_, f) => Math.floor(f / 4) + 1));
});

test('max/min gradients go to the first arg index; the all-axes max to the first max element', () => {
  const x = ml.tensor([[3, 1, 3], [2, 5, 5]], undefined, { requiresGrad: true });
  const [g] = grads(ml.max(x, 1), [10, 20]);
  assert.deepEqual(arr(g), [10, 0, 0, 0, 20, 0]);
  const [h] = grads(ml.min(x, 0), [1, 2, 3]);
  assert.deepEqual(arr(h), [0, 2, 3, 1, 0, 0]);
  const [a] = grads(ml.max(x), [7]);
  assert.deepEqual(arr(a), [0, 0, 0, 0, 7, 0]);
  const [k] = grads(ml.max(x, -1, true), [1, 1]);
  assert.deepEqual(arr(k), [1, 0, 0, 0, 1, 0]);
  // several axes: [2, 2, 2] max over [0, 2]
  const y = ml.tensor([1, 9, 4, 2, 9, 3, 5, 8], [2, 2, 2], { requiresGrad: true });
  const m = ml.max(y, [0, 2]);
  assert.deepEqual(arr(m), [9, 8]);
  const [gy] = grads(m, [1, 2]);
  const gyv = arr(gy);
  assert.equal(gyv.reduce((s, v) => s + v, 0), 3);
  assert.equal(gyv[1], 1, 'the first 9 (flat index 1) gets the gradient');
  assert.equal(gyv[7], 2);
});

test('end to end: mean(max(x, 1)) backward', () => {
  const x = ml.tensor([[0, 2, 1], [4, 3, 4]], undefined, { requiresGrad: true });
  ml.mean(ml.max(x, 1)).backward();
  assert.deepEqual(arr(x.grad), [0, 0.5, 0, 0.5, 0, 0]);
});

test('argmax and argmin return i32 first indices, with NaN as the maximum, and keepDims', () => {
  const x = ml.tensor([[1, 5, 5], [7, 0, 7], [-1, -1, -2]]);
  const am = ml.argmax(x, 1);
  assert.equal(am.dtype, 'i32');
  assert.deepEqual(arr(am), [1, 0, 0]);
  assert.deepEqual(arr(ml.argmin(x, 1)), [0, 1, 2]);
  assert.deepEqual(arr(ml.argmax(x, 0)), [1, 0, 1]);
  assert.deepEqual(arr(x.argmax(-1)), [1, 0, 0]);
  assert.deepEqual(ml.argmax(x, 0, true).shape, [1, 3]);
  const n = ml.tensor([1, NaN, 3, NaN]);
  assert.deepEqual(arr(ml.argmax(n, 0)), [1]);
  assert.ok(Number.isNaN(ml.max(n).item()));
  assert.ok(Number.isNaN(ml.min(n).item()));
  assert.equal(ml.argmax(ml.tensor(Float32Array.from({ length: 200000 }, (_, i) => (i === 150001 ? 5 : 1))), 0).item(), 150001);
});

test('sumToShape sums a broadcast gradient back down (leading axes and size-1 axes)', () => {
  const g = ml.tensor(Float32Array.from({ length: 24 }, (_, i) => i), [2, 3, 4]);
  const a = ml.sumToShape(g, [3, 1]);
  assert.deepEqual(a.shape, [3, 1]);
  assert.deepEqual(arr(a), refReduce(g.toArray(), [2, 3, 4], [0, 2], 'sum'));
  assert.deepEqual(arr(ml.sumToShape(g, [4])), refReduce(g.toArray(), [2, 3, 4], [0, 1], 'sum'));
  assert.deepEqual(arr(ml.sumToShape(g, [])), [276]);
  assert.deepEqual(arr(ml.sumToShape(g, [2, 1, 4])), refReduce(g.toArray(), [2, 3, 4], [1], 'sum'));
  assert.deepEqual(arr(ml.sumToShape(g, [1, 1, 1])), [276]);
  const same = ml.sumToShape(g, [2, 3, 4]);
  assert.deepEqual(arr(same), arr(g));
  assert.throws(() => ml.sumToShape(g, [3]), /sumToShape: a gradient of shape \[2, 3, 4\] cannot be summed to \[3\]/);
  assert.throws(() => ml.sumToShape(g, [1, 2, 3, 4]), /cannot be summed to \[1, 2, 3, 4\]/);
});

test('empty axes: a sum is 0, a mean NaN; max, min and argmax throw', () => {
  const e = ml.zeros([2, 0]);
  assert.deepEqual(arr(e.sum(1)), [0, 0]);
  assert.deepEqual(arr(e.mean(1)).map(String), ['NaN', 'NaN']);
  assert.deepEqual(e.sum(0).shape, [0]);
  assert.equal(e.sum().item(), 0);
  assert.ok(Number.isNaN(e.mean().item()));
  assert.throws(() => e.max(1), /max: cannot reduce over axis 1 of size 0 in \[2, 0\]/);
  assert.throws(() => e.min(), /min: cannot reduce over axis 1 of size 0/);
  assert.throws(() => ml.argmax(e, 1), /argmax: cannot reduce over axis 1 of size 0/);
  assert.deepEqual(e.max(0).shape, [0], 'reducing a non-empty axis of an empty tensor is fine');
  // gradient of a sum over an empty axis is an empty tensor
  const ez = ml.zeros([2, 0], { requiresGrad: true });
  const [g] = grads(ml.sum(ez, 1), [1, 1]);
  assert.deepEqual(g!.shape, [2, 0]);
});

test('0-d tensors: every reduction is the value itself; axis 0 and -1 are accepted', () => {
  const s = ml.tensor(3.5);
  for (const f of [ml.sum, ml.mean, ml.max, ml.min]) {
    assert.deepEqual(f(s).shape, []);
    assert.equal(f(s).item(), 3.5);
    assert.equal(f(s, 0).item(), 3.5);
    assert.equal(f(s, -1).item(), 3.5);
  }
  assert.throws(() => ml.sum(s, 1), /sum: axis 1 is out of range for a tensor with 0 dims/);
});

test('long rows are summed in double: a million 0.1s sum to 100000 within f32 precision', () => {
  const n = 1_000_000;
  const x = ml.full([n], 0.1);
  assertClose([x.sum().item()], [Math.fround(0.1) * n], { rtol: 1e-6 });
  assertClose([x.mean().item()], [Math.fround(0.1)], { rtol: 1e-6 });
  const y = ml.full([1000, 1000], 0.1);
  assertClose(arr(y.sum(0)), new Array(1000).fill(Math.fround(0.1) * 1000), { rtol: 1e-6 });
});

test('clear errors: dtypes, axes, keepDims', () => {
  const x = ml.zeros([2, 3]);
  assert.throws(() => ml.sum(ml.zeros([2], { dtype: 'i32' })), /sum: x must be f32, got i32 \[2\] \(cast it with \.cast\('f32'\)\)/);
  assert.throws(() => ml.mean(x.cast('bf16')), /mean: x must be f32, got bf16/);
  assert.throws(() => ml.sum(x, 2), /sum: axis 2 is out of range for a tensor with 2 dims/);
  assert.throws(() => ml.max(x, [0, -2]), /max: axis -2 appears more than once in \[0, -2\]/);
  assert.throws(() => ml.sum(x, 0.5), /sum: axis must be an integer, got the number 0.5/);
  assert.throws(() => ml.sum(x, 0, 'yes' as never), /sum: keepDims must be a boolean/);
  assert.throws(() => ml.argmax(x, undefined as never), /argmax: axis is required/);
  const d = ml.zeros([2]);
  d.dispose();
  assert.throws(() => d.sum(), /sum: x \[2\] was used after dispose\(\)/);
});

test('max and sum with gradients leave no tensor behind', () => {
  const x = ml.tensor(randomArray(60, 5), [3, 4, 5], { requiresGrad: true });
  const before = ml.memory().numTensors;
  ml.tidy(() => {
    const y = ml.max(x, [0, 2]);
    ml.sum(ml.mean(x, 1)).backward();
    ml.sum(y).backward();
  });
  assert.equal(ml.memory().numTensors, before + 1);   // x.grad
});
