/**
 * Element-wise ops: hand-computed values for every op, broadcasting (both sides, three ways for where),
 * number operands, the analytic gradient of each op on small cases, the random stream (seeded randn, thread
 * count independence, dropout's regenerated mask), f16/bf16 casts, and the errors bad input must raise.
 *
 * Most gradients are read by running the op's own backward function on a seed (out._node.backwardFn), so they
 * check this op alone; a few go through backward() end to end.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../../index';
import { assertClose, randomArray } from '../../../test/helpers';

/** The op's gradients for a seed, run as the engine would (under noGrad). */
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
const leaf = (data: number[] | number[][], shape?: number[]) => ml.tensor(data, shape, { requiresGrad: true });
const ones = (n: number) => new Array<number>(n).fill(1);

// ------------------------------------------------------------------------------------------------ arithmetic

test('add, sub, mul, div of same-shape tensors (hand-computed)', () => {
  const a = ml.tensor([[1, 2, 3], [4, 5, 6]]);
  const b = ml.tensor([[0.5, -1, 2], [8, 0.25, -3]]);
  assert.deepEqual(arr(ml.add(a, b)), [1.5, 1, 5, 12, 5.25, 3]);
  assert.deepEqual(arr(ml.sub(a, b)), [0.5, 3, 1, -4, 4.75, 9]);
  assert.deepEqual(arr(ml.mul(a, b)), [0.5, -2, 6, 32, 1.25, -18]);
  assert.deepEqual(arr(ml.div(a, b)), [2, -2, 1.5, 0.5, 20, -2]);
  assert.deepEqual(ml.add(a, b).shape, [2, 3]);
});

test('broadcasting: row [3] over [2, 3], column [2, 1] with row [1, 3], a 0-d tensor, and both sides', () => {
  const a = ml.tensor([[1, 2, 3], [4, 5, 6]]);
  assert.deepEqual(arr(ml.add(a, ml.tensor([10, 20, 30]))), [11, 22, 33, 14, 25, 36]);
  assert.deepEqual(arr(ml.sub(ml.tensor([10, 20, 30]), a)), [9, 18, 27, 6, 15, 24]);
  const col = ml.tensor([[1], [2]]);
  const row = ml.tensor([[10, 20, 30]]);
  const outer = ml.mul(col, row);
  assert.deepEqual(outer.shape, [2, 3]);
  assert.deepEqual(arr(outer), [10, 20, 30, 20, 40, 60]);
  assert.deepEqual(arr(ml.div(a, ml.tensor(2))), [0.5, 1, 1.5, 2, 2.5, 3]);
  // [4, 1, 3] + [2, 1] -> [4, 2, 3]
  const x = ml.tensor(Float32Array.from({ length: 12 }, (_, i) => i), [4, 1, 3]);
  const y = ml.tensor([[100], [200]]);
  const z = ml.add(x, y);
  assert.deepEqual(z.shape, [4, 2, 3]);
  const want: number[] = [];
  for (let i = 0; i < 4; i++) for (let j = 0; j < 2; j++) for (let k = 0; k < 3; k++) want.push(i * 3 + k + (j + 1) * 100);
  assert.deepEqual(arr(z), want);
});

test('number operands on either side: x + c, c - x, x * c, x / c, c / x', () => {
  const x = ml.tensor([1, -2, 4]);
  assert.deepEqual(arr(ml.add(x, 1.5)), [2.5, -0.5, 5.5]);
  assert.deepEqual(arr(ml.add(1.5, x)), [2.5, -0.5, 5.5]);
  assert.deepEqual(arr(ml.sub(x, 1)), [0, -3, 3]);
  assert.deepEqual(arr(ml.sub(1, x)), [0, 3, -3]);
  assert.deepEqual(arr(ml.mul(x, -3)), [-3, 6, -12]);
  assert.deepEqual(arr(ml.mul(0.5, x)), [0.5, -1, 2]);
  assert.deepEqual(arr(ml.div(x, 4)), [0.25, -0.5, 1]);
  assertClose(arr(ml.div(x, 3)), [1 / 3, -2 / 3, 4 / 3]);
  assert.deepEqual(arr(ml.div(2, x)), [2, -1, 0.5]);
  assert.deepEqual(arr(x.add(1).mul(2).sub(1).div(2)), [1.5, -1.5, 4.5]);
  // division by 0 and by a subnormal-sized number (the exact path): torch's IEEE results
  const d0 = arr(ml.div(ml.tensor([1, -1, 0]), 0));
  assert.deepEqual(d0.slice(0, 2), [Infinity, -Infinity]);
  assert.ok(Number.isNaN(d0[2]));
  assertClose(arr(ml.div(ml.tensor([1e-30]), 1e-39)), [1e9], { rtol: 1e-5 });
});

test('pow: by numbers (2, 3, 0.5, -1, 0, 1.5), of a number, and tensor ** tensor with broadcasting', () => {
  const x = ml.tensor([1, 2, 4]);
  assert.deepEqual(arr(ml.pow(x, 2)), [1, 4, 16]);
  assert.deepEqual(arr(ml.pow(x, 3)), [1, 8, 64]);
  assert.deepEqual(arr(ml.pow(x, 0.5)), [1, Math.SQRT2, 2].map(Math.fround));
  assert.deepEqual(arr(ml.pow(x, -1)), [1, 0.5, 0.25]);
  assert.deepEqual(arr(ml.pow(x, 0)), [1, 1, 1]);
  assertClose(arr(ml.pow(x, 1.5)), [1, 2 * Math.SQRT2, 8]);
  assert.deepEqual(arr(ml.pow(2, x)), [2, 4, 16]);
  const b = ml.tensor([[1], [2]]);
  assert.deepEqual(arr(ml.pow(x, b)), [1, 2, 4, 1, 4, 16]);
  assert.ok(Number.isNaN(arr(ml.pow(ml.tensor([-2]), 0.5))[0]));
  assert.deepEqual(arr(ml.pow(ml.tensor([-2]), 3)), [-8]);
});

test('maximum and minimum, with numbers, broadcasting and NaN propagation', () => {
  const a = ml.tensor([1, 5, NaN, -2]);
  const b = ml.tensor([3, 5, 0, NaN]);
  const mx = arr(ml.maximum(a, b));
  const mn = arr(ml.minimum(a, b));
  assert.deepEqual(mx.slice(0, 2), [3, 5]);
  assert.deepEqual(mn.slice(0, 2), [1, 5]);
  assert.ok(Number.isNaN(mx[2]) && Number.isNaN(mx[3]) && Number.isNaN(mn[2]) && Number.isNaN(mn[3]));
  assert.deepEqual(arr(ml.maximum(ml.tensor([-1, 0.5, 2]), 0)), [0, 0.5, 2]);
  assert.deepEqual(arr(ml.minimum(1, ml.tensor([-1, 0.5, 2]))), [-1, 0.5, 1]);
  assert.deepEqual(arr(ml.maximum(ml.tensor([[1], [4]]), ml.tensor([2, 3]))), [2, 3, 4, 4]);
});

// ------------------------------------------------------------------------------------------------ comparisons

test('comparisons give f32 0/1 with broadcasting, numbers, NaN, and no gradient', () => {
  const a = ml.tensor([[1, 2, 3], [3, 2, 1]], undefined, { requiresGrad: true });
  const b = ml.tensor([2, 2, 2]);
  assert.deepEqual(arr(ml.eq(a, b)), [0, 1, 0, 0, 1, 0]);
  assert.deepEqual(arr(ml.ne(a, b)), [1, 0, 1, 1, 0, 1]);
  assert.deepEqual(arr(ml.lt(a, b)), [1, 0, 0, 0, 0, 1]);
  assert.deepEqual(arr(ml.le(a, b)), [1, 1, 0, 0, 1, 1]);
  assert.deepEqual(arr(ml.gt(a, 2)), [0, 0, 1, 1, 0, 0]);
  assert.deepEqual(arr(ml.ge(2, a)), [1, 1, 0, 0, 1, 1]);
  const c = ml.gt(a, b);
  assert.equal(c.dtype, 'f32');
  assert.equal(c.requiresGrad, false);
  const n = ml.tensor([NaN, 1]);
  assert.deepEqual(arr(ml.eq(n, n)), [0, 1]);
  assert.deepEqual(arr(ml.ne(n, n)), [1, 0]);
  assert.deepEqual(arr(ml.lt(n, 2)), [0, 1]);
  assert.deepEqual(arr(a.eq(2)), [0, 1, 0, 0, 1, 0]);
  assert.deepEqual(arr(a.lt(2)), [1, 0, 0, 0, 0, 1]);
});

// ------------------------------------------------------------------------------------------------ unary

test('unary ops at hand-computed points', () => {
  const x = ml.tensor([-1, 0, 0.5, 2]);
  assertClose(arr(ml.neg(x)), [1, -0, -0.5, -2]);
  assertClose(arr(ml.exp(x)), [0.36787944, 1, 1.64872127, 7.3890561]);
  assertClose(arr(ml.log(ml.tensor([1, Math.E, 0.5]))), [0, 1, -0.69314718]);
  assert.deepEqual(arr(ml.log(ml.tensor([0, -1]))).map(String), ['-Infinity', 'NaN']);
  assert.deepEqual(arr(ml.sqrt(ml.tensor([4, 2.25, 0]))), [2, 1.5, 0]);
  assertClose(arr(ml.tanh(x)), [-0.76159416, 0, 0.46211716, 0.96402758]);
  assertClose(arr(ml.sigmoid(x)), [0.26894142, 0.5, 0.62245933, 0.88079708]);
  assert.deepEqual(arr(ml.relu(x)), [0, 0, 0.5, 2]);
  assert.deepEqual(arr(ml.abs(x)), [1, 0, 0.5, 2]);
  assert.deepEqual(arr(ml.square(x)), [1, 0, 0.25, 4]);
  assertClose(arr(ml.silu(x)), [-0.26894142, 0, 0.31122967, 1.76159416]);
  assertClose(arr(ml.reciprocal(ml.tensor([2, -4, 0.5]))), [0.5, -0.25, 2]);
  assertClose(arr(ml.sin(x)), [-0.84147098, 0, 0.47942554, 0.90929743]);
  assertClose(arr(ml.cos(x)), [0.54030231, 1, 0.87758256, -0.41614684]);
  // GELU: x * Phi(x), and PyTorch's tanh approximation
  assertClose(arr(ml.gelu(x)), [-0.15865525, 0, 0.34573123, 1.95449974]);
  assertClose(arr(x.gelu({ approximate: 'none' })), [-0.15865525, 0, 0.34573123, 1.95449974]);
  assertClose(arr(ml.gelu(x, { approximate: 'tanh' })), [-0.15880801, 0, 0.34571401, 1.95459769]);
  assert.ok(Number.isNaN(arr(ml.relu(ml.tensor([NaN])))[0]), 'relu keeps NaN, like torch');
});

/** Analytic derivatives in double, for the unary gradient test. */
const PHI = (v: number) => Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI);
function erf(v: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse for 1e-5; integrate the series instead (|v| <= 3 here).
  let sum = 0, term = v;
  for (let n = 0; n < 200; n++) {
    sum += term / (2 * n + 1);
    term *= -v * v / (n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}
const sig = (v: number) => 1 / (1 + Math.exp(-v));
const K = Math.sqrt(2 / Math.PI);
const UNARY: Array<[string, (t: ml.Tensor) => ml.Tensor, (v: number) => number, boolean?]> = [
  ['neg', ml.neg, () => -1],
  ['exp', ml.exp, (v) => Math.exp(v)],
  ['log', ml.log, (v) => 1 / v, true],
  ['sqrt', ml.sqrt, (v) => 0.5 / Math.sqrt(v), true],
  ['tanh', ml.tanh, (v) => 1 - Math.tanh(v) ** 2],
  ['sigmoid', ml.sigmoid, (v) => sig(v) * (1 - sig(v))],
  ['relu', ml.relu, (v) => (v > 0 ? 1 : 0)],
  ['gelu', (t) => ml.gelu(t), (v) => 0.5 * (1 + erf(v / Math.SQRT2)) + v * PHI(v)],
  ['gelu tanh', (t) => ml.gelu(t, { approximate: 'tanh' }), (v) => {
    const u = K * (v + 0.044715 * v ** 3);
    return 0.5 * (1 + Math.tanh(u)) + 0.5 * v * (1 - Math.tanh(u) ** 2) * K * (1 + 3 * 0.044715 * v * v);
  }],
  ['silu', ml.silu, (v) => sig(v) * (1 + v * (1 - sig(v)))],
  ['abs', ml.abs, (v) => Math.sign(v)],
  ['square', ml.square, (v) => 2 * v],
  ['reciprocal', ml.reciprocal, (v) => -1 / (v * v), true],
  ['sin', ml.sin, (v) => Math.cos(v)],
  ['cos', ml.cos, (v) => -Math.sin(v)],
];

test('unary gradients match the analytic derivatives (times a random seed gradient)', () => {
  const xs = randomArray(40, 3, -3, 3);
  const seed = randomArray(40, 4, -2, 2);
  for (const [name, f, df, positive] of UNARY) {
    const data = positive ? xs.map((v) => Math.abs(v) + 0.2) : xs;
    const x = ml.tensor(data, [5, 8], { requiresGrad: true });
    const y = f(x);
    const [dx] = grads(y, seed);
    assert.deepEqual(dx!.shape, [5, 8], name);
    assertClose(arr(dx), Array.from(data, (v, i) => seed[i] * df(v)), { what: `${name} gradient`, rtol: 1e-5, atol: 1e-5 });
  }
});

test('end to end: y = sum(gelu(x * w + b)) backward fills x, w and b gradients', () => {
  const x = leaf([[0.5, -1], [2, 0.25]]);
  const w = leaf([1.5, -0.5]);
  const b = leaf([0.1]);
  const z = ml.add(ml.mul(x, w), b);
  ml.sum(ml.gelu(z)).backward();
  const zs = [0.5 * 1.5 + 0.1, -1 * -0.5 + 0.1, 2 * 1.5 + 0.1, 0.25 * -0.5 + 0.1];
  const dg = zs.map((v) => 0.5 * (1 + erf(v / Math.SQRT2)) + v * PHI(v));
  assertClose(arr(x.grad), [dg[0] * 1.5, dg[1] * -0.5, dg[2] * 1.5, dg[3] * -0.5]);
  assertClose(arr(w.grad), [dg[0] * 0.5 + dg[2] * 2, dg[1] * -1 + dg[3] * 0.25]);
  assertClose(arr(b.grad), [dg[0] + dg[1] + dg[2] + dg[3]]);
});

// ------------------------------------------------------------------------------------------------ gradients of binary ops

test('broadcast gradients are summed back: add, sub, mul, div of [2, 3] with [3] and [2, 1]', () => {
  const A = [[1, 2, 3], [4, 5, 6]];
  const seed = [1, 2, 3, 4, 5, 6];
  {
    const a = leaf(A), b = leaf([10, 20, 30]);
    const [ga, gb] = grads(ml.add(a, b), seed);
    assert.deepEqual(arr(ga), seed);
    assert.deepEqual(arr(gb), [5, 7, 9]);
  }
  {
    const a = leaf(A), b = leaf([[1], [2]]);
    const [ga, gb] = grads(ml.sub(a, b), seed);
    assert.deepEqual(arr(ga), seed);
    assert.deepEqual(gb!.shape, [2, 1]);
    assert.deepEqual(arr(gb), [-6, -15]);
  }
  {
    const a = leaf(A), b = leaf([2, -1, 0.5]);
    const [ga, gb] = grads(ml.mul(a, b), seed);
    assert.deepEqual(arr(ga), [2, -2, 1.5, 8, -5, 3]);
    assert.deepEqual(arr(gb), [1 * 1 + 4 * 4, 2 * 2 + 5 * 5, 3 * 3 + 6 * 6]);
  }
  {
    const a = leaf(A), b = leaf([2, -1, 0.5]);
    const [ga, gb] = grads(ml.div(a, b), seed);
    assertClose(arr(ga), [0.5, -2, 6, 2, -5, 12]);
    // d/db (a/b) = -a/b^2
    assertClose(arr(gb), [-(1 * 1 + 4 * 4) / 4, -(2 * 2 + 5 * 5) / 1, -(3 * 3 + 6 * 6) / 0.25]);
  }
  {
    // only one side requires grad: the other gets null
    const a = ml.tensor(A), b = leaf([2, -1, 0.5]);
    const [ga, gb] = grads(ml.mul(a, b), seed);
    assert.equal(ga, null);
    assert.deepEqual(arr(gb), [17, 29, 45]);
  }
});

test('gradients with number operands: x + c, c - x, x * c, x / c, c / x', () => {
  const seed = [1, -2, 3];
  const x = () => leaf([1, 2, 4]);
  assert.deepEqual(arr(grads(ml.add(x(), 3), seed)[0]), seed);
  assert.deepEqual(arr(grads(ml.sub(3, x()), seed)[0]), [-1, 2, -3]);
  assert.deepEqual(arr(grads(ml.mul(x(), -2), seed)[0]), [-2, 4, -6]);
  assert.deepEqual(arr(grads(ml.div(x(), 4), seed)[0]), [0.25, -0.5, 0.75]);
  assertClose(arr(grads(ml.div(2, x()), seed)[1]), [-2 * 1, 2 * 2 / 4, -2 * 3 / 16]);   // inputs [2, x]
});

test('pow gradients: x ** c, c ** x and a ** b (with torch\'s zeros at b = 0 and at a = 0)', () => {
  const seed = [1, 1, 1];
  assertClose(arr(grads(ml.pow(leaf([1, 2, 3]), 3), seed)[0]), [3, 12, 27]);
  assertClose(arr(grads(ml.pow(leaf([1, 4, 9]), 0.5), seed)[0]), [0.5, 0.25, 1 / 6]);
  assert.deepEqual(arr(grads(ml.pow(leaf([0, 2, 3]), 0), seed)[0]), [0, 0, 0]);
  assertClose(arr(grads(ml.pow(2, leaf([0, 1, 3])), seed)[1]), [1, 2, 8].map((v) => v * Math.LN2));
  const a = leaf([2, 3, 0, 0]), b = leaf([3, 0, 2, -1]);
  const [ga, gb] = grads(ml.pow(a, b), [1, 1, 1, 1]);
  // d/da = b a^(b-1): 12, 0 (b = 0), 0 (0 * 0^1), -1 * 0^-2 = -inf
  assert.deepEqual(arr(ga), [12, 0, 0, -Infinity]);
  // d/db = a^b log a: 8 ln 2, ln 3, 0 (a = 0, b >= 0), inf * -inf = -inf (a = 0, b < 0)
  assertClose(arr(gb), [8 * Math.LN2, Math.log(3), 0, -Infinity]);
  // broadcasting: a [2, 1] ** b [3]
  const a2 = leaf([[2], [3]]), b2 = leaf([1, 2, 3]);
  const [ga2, gb2] = grads(ml.pow(a2, b2), ones(6));
  assertClose(arr(ga2), [1 + 2 * 2 + 3 * 4, 1 + 2 * 3 + 3 * 9]);
  assertClose(arr(gb2), [1, 2, 3].map((e) => 2 ** e * Math.LN2 + 3 ** e * Math.log(3)));
});

test('maximum/minimum gradients go to the winner and split half/half on ties', () => {
  const a = leaf([1, 5, 3, 2]), b = leaf([2, 5, 1, 2]);
  const seed = [1, 2, 4, 8];
  const [ga, gb] = grads(ml.maximum(a, b), seed);
  assert.deepEqual(arr(ga), [0, 1, 4, 4]);
  assert.deepEqual(arr(gb), [1, 1, 0, 4]);
  const [ha, hb] = grads(ml.minimum(a, b), seed);
  assert.deepEqual(arr(ha), [1, 1, 0, 4]);
  assert.deepEqual(arr(hb), [0, 1, 4, 4]);
  const x = leaf([-1, 0, 3]);
  assert.deepEqual(arr(grads(ml.maximum(x, 0), [1, 1, 1])[0]), [0, 0.5, 1]);
  // broadcast: b [1] collects from every position it won
  const c = leaf([1, 4, 2]), d = leaf([3]);
  const [gc, gd] = grads(ml.maximum(c, d), [1, 1, 1]);
  assert.deepEqual(arr(gc), [0, 1, 0]);
  assert.deepEqual(arr(gd), [2]);
});

// ------------------------------------------------------------------------------------------------ where, maskedFill

test('where broadcasts cond, a and b three ways; cond f32 or i32, nonzero is true', () => {
  const cond = ml.tensor([[1], [0]]);                                 // [2, 1]
  const a = ml.tensor([1, 2, 3]);                                     // [3]
  const b = ml.tensor([[[10, 20, 30], [40, 50, 60]]]);               // [1, 2, 3]
  const out = ml.where(cond, a, b);
  assert.deepEqual(out.shape, [1, 2, 3]);
  assert.deepEqual(arr(out), [1, 2, 3, 40, 50, 60]);
  const ci = ml.tensor([-3, 0, 7], [3], { dtype: 'i32' });
  assert.deepEqual(arr(ml.where(ci, a, 0)), [1, 0, 3]);
  assert.deepEqual(arr(ml.where(ml.tensor([0.5, 0, -0]), 1, -1)), [1, -1, -1]);
  assert.deepEqual(arr(ml.where(ml.tensor([NaN]), 1, -1)), [1], 'NaN is nonzero');
});

test('where gradients go to the chosen side and are summed over broadcast axes', () => {
  const cond = ml.tensor([[1, 0, 1], [0, 0, 1]]);
  const a = leaf([[1, 2, 3], [4, 5, 6]]);
  const b = leaf([7, 8, 9]);
  const [ga, gb] = grads(ml.where(cond, a, b), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(arr(ga), [1, 0, 3, 0, 0, 6]);
  assert.deepEqual(arr(gb), [4, 2 + 5, 0]);
  const [gn] = grads(ml.where(cond, 0, a), [1, 2, 3, 4, 5, 6]);   // a as b; a number as a
  assert.equal(gn, null);
});

test('maskedFill puts a value (e.g. -inf) where the mask is set; the mask broadcasts to x', () => {
  const x = leaf([[1, 2, 3], [4, 5, 6]]);
  const mask = ml.tensor([0, 1, 0]);
  const y = ml.maskedFill(x, mask, -Infinity);
  assert.deepEqual(arr(y), [1, -Infinity, 3, 4, -Infinity, 6]);
  assert.deepEqual(arr(x.maskedFill(ml.tensor([[1], [0]], undefined, { dtype: 'i32' }), 0)), [0, 0, 0, 4, 5, 6]);
  const [gv, gx] = grads(y, [1, 1, 1, 1, 1, 1]);   // maskedFill is where(mask, value, x)
  assert.equal(gv, null);
  assert.deepEqual(arr(gx), [1, 0, 1, 1, 0, 1]);
  assert.throws(() => ml.maskedFill(ml.tensor([1, 2]), ml.tensor([[1, 0], [0, 1]]), 0),
    /maskedFill: mask \[2, 2\] cannot be broadcast to x \[2\]/);
});

// ------------------------------------------------------------------------------------------------ random

test('randn is deterministic by seed, and differs between seeds and between calls', () => {
  ml.manualSeed(42);
  const a = arr(ml.randn([1000]));
  const a2 = arr(ml.randn([1000]));
  ml.manualSeed(42);
  const b = arr(ml.randn([1000]));
  ml.manualSeed(43);
  const c = arr(ml.randn([1000]));
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, a2);
  assert.notDeepEqual(a, c);
  const mean = a.reduce((s, v) => s + v, 0) / a.length;
  const v = a.reduce((s, x) => s + (x - mean) ** 2, 0) / a.length;
  assert.ok(Math.abs(mean) < 0.1 && Math.abs(v - 1) < 0.15, `mean ${mean}, var ${v}`);
});

test('randn and rand are bitwise the same with 1 and 2 threads', () => {
  const before = ml.backendInfo().threads;
  const draw = () => {
    ml.manualSeed(7);
    const z = ml.randn([300001]).toArray();
    const u = ml.rand([70001]).toArray();
    return [Buffer.from(z.buffer), Buffer.from(u.buffer)];
  };
  try {
    ml.setNumThreads(1);
    const [z1, u1] = draw();
    ml.setNumThreads(2);
    const [z2, u2] = draw();
    assert.ok(z1.equals(z2), 'randn differs between thread counts');
    assert.ok(u1.equals(u2), 'rand differs between thread counts');
  } finally {
    ml.setNumThreads(before);
  }
});

test('dropout: identity for p = 0 or eval, zeros for p = 1, kept values scaled by 1/(1-p), seeded', () => {
  const x = ml.tensor(randomArray(1000, 9, 0.5, 2), [10, 100]);
  assert.deepEqual(arr(ml.dropout(x, 0)), arr(x));
  assert.deepEqual(arr(ml.dropout(x, 0.7, false)), arr(x));
  assert.deepEqual(arr(x.dropout(1)), new Array(1000).fill(0));
  ml.manualSeed(3);
  const y = arr(ml.dropout(x, 0.25));
  ml.manualSeed(3);
  assert.deepEqual(arr(ml.dropout(x, 0.25)), y);
  const xs = arr(x);
  let kept = 0;
  for (let i = 0; i < 1000; i++) {
    if (y[i] !== 0) {
      kept++;
      assertClose([y[i]], [xs[i] / 0.75]);
    }
  }
  assert.ok(kept > 690 && kept < 810, `kept ${kept} of 1000 at p = 0.25`);
});

test('dropout backward regenerates the forward mask', () => {
  const x = ml.tensor(randomArray(4096, 10, 0.5, 2), [4096], { requiresGrad: true });
  ml.manualSeed(11);
  const y = ml.dropout(x, 0.5);
  const ys = arr(y), xs = arr(x);
  const [gx] = grads(y, ones(4096));
  const g = arr(gx);
  for (let i = 0; i < 4096; i++) assert.equal(g[i], ys[i] === 0 ? 0 : 2, `element ${i}`);
  // and the gradient ratio matches y / x
  for (let i = 0; i < 4096; i += 97) assertClose([ys[i]], [xs[i] * g[i]]);
  // eval mode passes the gradient through
  const [ge] = grads(ml.dropout(x, 0.5, false), ones(4096));
  assert.deepEqual(arr(ge), ones(4096));
});

// ------------------------------------------------------------------------------------------------ casts

test('casts to f16 and bf16 round to nearest even and round-trip exactly representable values', () => {
  const exact = [0, -0, 1, -2, 0.5, 1024, 65504, 2 ** -24, -(2 ** -14), 0.333251953125];
  assert.deepEqual(arr(ml.tensor(exact).cast('f16')), exact);
  assert.deepEqual(arr(ml.tensor(exact).cast('f16').cast('f32')), exact);
  assert.deepEqual(arr(ml.tensor([1 / 3, 65519, 65520, 1e6, -1e6, 2 ** -26]).cast('f16')),
    [0.333251953125, 65504, Infinity, Infinity, -Infinity, 0]);
  assert.deepEqual(arr(ml.tensor([1 + 2 ** -11, 1 + 3 * 2 ** -11]).cast('f16')), [1, 1 + 2 ** -9], 'ties to even');
  const bexact = [1, -3, 0.5, 3.38953139e38, 2 ** -133, 1.5];
  assert.deepEqual(arr(ml.tensor(bexact).cast('bf16')), bexact.map(Math.fround));
  assert.deepEqual(arr(ml.tensor([1 / 3, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38]).cast('bf16')),
    [0.333984375, 1, 1 + 2 ** -6, Infinity]);
  const nan = ml.tensor([NaN, Infinity, -Infinity]);
  assert.deepEqual(arr(nan.cast('f16')).map(String), ['NaN', 'Infinity', '-Infinity']);
  assert.deepEqual(arr(nan.cast('bf16')).map(String), ['NaN', 'Infinity', '-Infinity']);
  assert.deepEqual(arr(ml.tensor([2.9, -2.9, 0.5]).cast('i32')), [2, -2, 0], 'f32 -> i32 truncates toward zero');
  assert.deepEqual(arr(ml.tensor([1.5, 2.5]).cast('f16').cast('bf16')), [1.5, 2.5]);
});

// ------------------------------------------------------------------------------------------------ errors

test('clear errors: dtypes, shapes, operands, options, disposed tensors', () => {
  const i = ml.tensor([1, 2], [2], { dtype: 'i32' });
  assert.throws(() => ml.add(i, 1), /add: a must be f32, got i32 \[2\] \(cast it with \.cast\('f32'\)\)/);
  assert.throws(() => ml.exp(ml.tensor([1]).cast('f16')), /exp: x must be f32, got f16 \[1\] \(cast it with \.cast\('f32'\)\)/);
  assert.throws(() => ml.mul(ml.zeros([2, 3]), ml.zeros([4])), /mul: shapes \[2, 3\] and \[4\] cannot be broadcast together/);
  assert.throws(() => ml.add(1 as never, 2), /add: at least one operand must be a Tensor/);
  assert.throws(() => ml.add(ml.zeros([1]), 'x' as never), /add: b must be a Tensor or a number, got the string "x"/);
  assert.throws(() => ml.gelu(ml.zeros([1]), { approximate: 'fast' as never }), /gelu: approximate must be 'none' or 'tanh'/);
  assert.throws(() => ml.dropout(ml.zeros([1]), 1.5), /dropout: p must be in \[0, 1\], got the number 1.5/);
  assert.throws(() => ml.dropout(ml.zeros([1]), NaN), /dropout: p must be in \[0, 1\]/);
  assert.throws(() => ml.where(ml.zeros([2]).cast('bf16'), 1, 0), /where: cond must be f32 or i32/);
  assert.throws(() => ml.where(ml.zeros([2]), ml.zeros([3]), 0), /where: cond \[2\], a \[3\] and b \[\] cannot be broadcast together/);
  const d = ml.zeros([2]);
  d.dispose();
  assert.throws(() => ml.relu(d), /relu: x \[2\] was used after dispose\(\)/);
  assert.throws(() => ml.maskedFill(ml.zeros([2]), ml.zeros([2]), 'a' as never), /maskedFill: value must be a number/);
});

test('empty tensors pass through every op', () => {
  const e = ml.zeros([0, 3]);
  assert.deepEqual(ml.add(e, ml.ones([3])).shape, [0, 3]);
  assert.deepEqual(ml.exp(e).shape, [0, 3]);
  assert.deepEqual(ml.where(e, 1, 0).shape, [0, 3]);
  assert.deepEqual(ml.dropout(e, 0.5).shape, [0, 3]);
  assert.deepEqual(ml.mul(e, 2).shape, [0, 3]);
});

test('a forward and backward through these ops leaves no tensor behind', () => {
  const x = leaf([[1, -2, 3], [0.5, 4, -1]]);
  const b = leaf([1, 2, 3]);
  const before = ml.memory().numTensors;
  ml.tidy(() => {
    const y = ml.where(ml.gt(x, 0), ml.mul(x, b), ml.div(x, 2));
    const z = ml.maximum(y, ml.pow(b, 2)).sub(1).gelu().dropout(0.1);
    ml.sum(z).backward();
  });
  assert.ok(x.grad && b.grad);
  // the two gradients are the only new tensors
  assert.equal(ml.memory().numTensors, before + 2);
});
