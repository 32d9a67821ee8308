/**
 * layerNorm: hand-computed values, any rank, null weight/bias, and the fused backward against the analytic
 * gradients of sum(dy * layerNorm(x, w, b)) and against finite differences.
 *
 * Gradients are read by running the op's own backward function on a seed (out._node.backwardFn), so these tests
 * check this op alone, not the autograd engine or the other op families.
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

/** Reference layerNorm and its gradients for L = sum(dy * y), in float64, rows of C. */
function refLayerNorm(x: ArrayLike<number>, C: number, w: ArrayLike<number> | null, b: ArrayLike<number> | null,
  dy: ArrayLike<number>, eps = 1e-5): { y: number[]; dx: number[]; dw: number[]; db: number[] } {
  const rows = x.length / C;
  const y: number[] = [], dx: number[] = [], dw = new Array<number>(C).fill(0), db = new Array<number>(C).fill(0);
  for (let r = 0; r < rows; r++) {
    const xr = Array.from({ length: C }, (_, c) => x[r * C + c]);
    const mean = xr.reduce((s, v) => s + v, 0) / C;
    const v = xr.reduce((s, q) => s + (q - mean) ** 2, 0) / C;
    const rstd = 1 / Math.sqrt(v + eps);
    const xh = xr.map((q) => (q - mean) * rstd);
    const g = xh.map((_, c) => dy[r * C + c] * (w ? w[c] : 1));
    const gm = g.reduce((s, q) => s + q, 0) / C;
    const gxm = g.reduce((s, q, c) => s + q * xh[c], 0) / C;
    for (let c = 0; c < C; c++) {
      y.push(xh[c] * (w ? w[c] : 1) + (b ? b[c] : 0));
      dx.push(rstd * (g[c] - gm - xh[c] * gxm));
      dw[c] += dy[r * C + c] * xh[c];
      db[c] += dy[r * C + c];
    }
  }
  return { y, dx, dw, db };
}

test('layerNorm of [1, 2, 3, 4] without weight and bias (hand-computed)', () => {
  // mean 2.5, biased variance 1.25: y = (x - 2.5) / sqrt(1.25 + 1e-5)
  const s = 1 / Math.sqrt(1.25 + 1e-5);
  const y = ml.layerNorm(ml.tensor([1, 2, 3, 4]), null, null);
  assertClose(y.toArray(), [-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s]);
});

test('layerNorm with weight and bias over the last axis of a rank-3 tensor', () => {
  const shape = [2, 3, 8];
  const xd = randomArray(48, 1, -2, 3), wd = randomArray(8, 2, 0.5, 1.5), bd = randomArray(8, 3);
  const y = ml.layerNorm(ml.tensor(xd, shape), ml.tensor(wd), ml.tensor(bd));
  assert.deepEqual(y.shape, shape);
  assertClose(y.toArray(), refLayerNorm(xd, 8, wd, bd, new Array(48).fill(0)).y);
});

test('layerNorm with weight only, bias only, and a custom eps', () => {
  const xd = randomArray(20, 4), wd = randomArray(5, 5), bd = randomArray(5, 6);
  const zero = new Array(20).fill(0);
  assertClose(ml.layerNorm(ml.tensor(xd, [4, 5]), ml.tensor(wd), null).toArray(), refLayerNorm(xd, 5, wd, null, zero).y);
  assertClose(ml.layerNorm(ml.tensor(xd, [4, 5]), null, ml.tensor(bd)).toArray(), refLayerNorm(xd, 5, null, bd, zero).y);
  assertClose(ml.layerNorm(ml.tensor(xd, [4, 5]), null, null, 0.5).toArray(),
    refLayerNorm(xd, 5, null, null, zero, 0.5).y);
});

test('layerNorm of rows with a large common offset keeps its precision', () => {
  const xd = Float32Array.from(randomArray(64, 7), (v) => v + 1000);
  assertClose(ml.layerNorm(ml.tensor(xd, [2, 32]), null, null).toArray(),
    refLayerNorm(xd, 32, null, null, new Array(64).fill(0)).y, { rtol: 1e-4, atol: 1e-4 });
});

test('layerNorm of a constant row gives the bias and a finite gradient', () => {
  const x = ml.tensor([[3, 3, 3, 3]], undefined, { requiresGrad: true });
  const y = ml.layerNorm(x, null, ml.tensor([1, 2, 3, 4]));
  assertClose(y.toArray(), [1, 2, 3, 4]);
  const [dx] = grads(y, [1, -1, 2, 0.5]);
  assert.ok(Array.from(dx!.toArray()).every(Number.isFinite));
});

test('layerNorm gradients for x, weight and bias match the analytic formula', () => {
  const shape = [3, 2, 6];
  const xd = randomArray(36, 11, -2, 2), wd = randomArray(6, 12, 0.5, 1.5), bd = randomArray(6, 13), dy = randomArray(36, 14);
  const x = ml.tensor(xd, shape, { requiresGrad: true });
  const w = ml.tensor(wd, [6], { requiresGrad: true });
  const b = ml.tensor(bd, [6], { requiresGrad: true });
  const [dx, dw, db] = grads(ml.layerNorm(x, w, b), dy);
  const ref = refLayerNorm(xd, 6, wd, bd, dy);
  assert.deepEqual(dx!.shape, shape);
  assert.deepEqual(dw!.shape, [6]);
  assert.deepEqual(db!.shape, [6]);
  assertClose(dx!.toArray(), ref.dx, { what: 'dx' });
  assertClose(dw!.toArray(), ref.dw, { what: 'dweight' });
  assertClose(db!.toArray(), ref.db, { what: 'dbias' });
});

test('layerNorm gradients without weight and bias, and for weight alone', () => {
  const xd = randomArray(15, 21), dy = randomArray(15, 22), wd = randomArray(5, 23, 0.5, 1.5);
  const x = ml.tensor(xd, [3, 5], { requiresGrad: true });
  const g1 = grads(ml.layerNorm(x, null, null), dy);
  assert.equal(g1[1], null);
  assert.equal(g1[2], null);
  assertClose(g1[0]!.toArray(), refLayerNorm(xd, 5, null, null, dy).dx);
  // x without requiresGrad: only the weight gets a gradient.
  const w = ml.tensor(wd, [5], { requiresGrad: true });
  const g2 = grads(ml.layerNorm(ml.tensor(xd, [3, 5]), w, ml.tensor(randomArray(5, 24))), dy);
  assert.equal(g2[0], null);
  assert.equal(g2[2], null);
  assertClose(g2[1]!.toArray(), refLayerNorm(xd, 5, wd, null, dy).dw);
});

test('layerNorm gradient of x agrees with finite differences', () => {
  const xd = randomArray(12, 31, -1, 1), wd = randomArray(4, 32, 0.5, 1.5), bd = randomArray(4, 33), dy = randomArray(12, 34);
  const f = (v: Float32Array): number => {
    const y = ml.layerNorm(ml.tensor(v, [3, 4]), ml.tensor(wd), ml.tensor(bd)).toArray();
    let s = 0;
    for (let i = 0; i < 12; i++) s += dy[i] * y[i];
    return s;
  };
  const [dx] = grads(ml.layerNorm(ml.tensor(xd, [3, 4], { requiresGrad: true }), ml.tensor(wd), ml.tensor(bd)), dy);
  const h = 1e-2, fd: number[] = [];
  for (let i = 0; i < 12; i++) {
    const a = Float32Array.from(xd), b = Float32Array.from(xd);
    a[i] += h;
    b[i] -= h;
    fd.push((f(a) - f(b)) / (2 * h));
  }
  assertClose(dx!.toArray(), fd, { rtol: 5e-3, atol: 1e-3 });
});

test('layerNorm of an empty batch gives an empty output and zero weight/bias gradients', () => {
  const x = ml.tensor([], [0, 4], { requiresGrad: true });
  const w = ml.tensor([1, 1, 1, 1], [4], { requiresGrad: true }), b = ml.tensor([0, 0, 0, 0], [4], { requiresGrad: true });
  const y = ml.layerNorm(x, w, b);
  assert.deepEqual(y.shape, [0, 4]);
  const [dx, dw, db] = grads(y, []);
  assert.deepEqual(dx!.shape, [0, 4]);
  assertClose(dw!.toArray(), [0, 0, 0, 0]);
  assertClose(db!.toArray(), [0, 0, 0, 0]);
});

test('layerNorm frees its statistics when no gradient is needed and after the node is released', () => {
  const xd = randomArray(12, 41);
  const x = ml.tensor(xd, [3, 4]);
  const before = ml.memory();
  ml.layerNorm(x, null, null).dispose();
  assert.equal(ml.memory().numBytes, before.numBytes);
  assert.equal(ml.memory().numTensors, before.numTensors);
  const xg = ml.tensor(xd, [3, 4], { requiresGrad: true });
  const before2 = ml.memory();
  const y = ml.layerNorm(xg, null, null);
  for (const t of grads(y, randomArray(12, 42))) t?.dispose();
  y._node!.release();
  y.dispose();
  assert.equal(ml.memory().numBytes, before2.numBytes);
  assert.equal(ml.memory().numTensors, before2.numTensors);
});

test('layerNorm argument errors name the op, the argument and the shapes', () => {
  const x = ml.tensor(randomArray(6, 51), [2, 3]);
  assert.throws(() => ml.layerNorm(x, ml.tensor([1, 1]), null),
    /layerNorm: weight \[2\] must have shape \[3\] to match the last axis of x \[2, 3\]/);
  assert.throws(() => ml.layerNorm(x, null, ml.tensor([[1, 1, 1]])), /layerNorm: bias \[1, 3\] must have shape \[3\]/);
  assert.throws(() => ml.layerNorm(x, ml.tensor([1, 1, 1], [3], { dtype: 'i32' }), null), /layerNorm: weight must be f32/);
  assert.throws(() => ml.layerNorm(ml.tensor(3), null, null), /layerNorm: x must have at least one axis/);
  assert.throws(() => ml.layerNorm(x, null, null, -1), /layerNorm: eps must be in \[0, inf\], got -1/);
  assert.throws(() => ml.layerNorm(x, null, null, NaN), /layerNorm: eps/);
  assert.throws(() => ml.layerNorm('x' as never, null, null), /layerNorm: x must be a Tensor/);
});
