/**
 * Indexing: gather, indexSelect and embedding against JS loops, their scatter-add gradients with repeated
 * indices, and out-of-range indices that throw naming the value, the position and the bound.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../../index';
import { assertClose, randomArray } from '../../../test/helpers';

const i32 = (data: number[], shape?: number[]): ml.Tensor<'i32'> =>
  ml.tensor(Int32Array.from(data), shape ?? [data.length], { dtype: 'i32' });

test('gather along each axis matches torch.gather, and its gradient scatter-adds repeats', () => {
  const xv = randomArray(12, 1);
  // axis 1: out[i][j] = x[i][idx[i][j]]
  const x = ml.tensor(xv, [3, 4], { requiresGrad: true });
  const idx = [3, 0, 3, 1, 1, 1, 2, 0, 2];   // [3, 3] with repeats
  const y = ml.gather(x, 1, i32(idx, [3, 3]));
  assert.deepEqual(y.shape, [3, 3]);
  const expect = idx.map((v, p) => xv[Math.floor(p / 3) * 4 + v]);
  assertClose(y.toArray(), expect);
  const g = randomArray(9, 2);
  y.backward(ml.tensor(g, [3, 3]));
  const dx = new Array(12).fill(0);
  idx.forEach((v, p) => { dx[Math.floor(p / 3) * 4 + v] += g[p]; });
  assertClose(x.grad!.toArray(), dx);

  // axis 0 with a longer index than x's axis: out[i][j] = x[idx[i][j]][j]
  const x0 = ml.tensor(xv, [3, 4]);
  const idx0 = [2, 0, 1, 1, 0, 0, 2, 2, 1, 2, 0, 1, 0, 1, 1, 0, 2, 2, 2, 2];   // [5, 4]
  const y0 = ml.gather(x0, 0, i32(idx0, [5, 4]));
  assertClose(y0.toArray(), idx0.map((v, p) => xv[v * 4 + (p % 4)]));
  // negative axis, 3-D
  const x3 = ml.tensor(randomArray(24, 3), [2, 3, 4]);
  const idx3 = Array.from({ length: 12 }, (_, p) => (p * 5) % 4);
  const y3 = ml.gather(x3, -1, i32(idx3, [2, 3, 2]));
  const xv3 = x3.toArray();
  assertClose(y3.toArray(), idx3.map((v, p) => xv3[Math.floor(p / 2) * 4 + v]));
});

test('gather errors: index shape, dtype, and an out-of-range index', () => {
  const x = ml.tensor(randomArray(12, 1), [3, 4]);
  assert.throws(() => ml.gather(x, 1, i32([0, 1], [2, 1])),
    /gather: index \[2, 1\] must have x \[3, 4\]'s rank and sizes on every axis but 1/);
  assert.throws(() => ml.gather(x, 1, ml.tensor([[0], [1], [2]]) as unknown as ml.Tensor<'i32'>), /gather: index must be i32, got f32/);
  assert.throws(() => ml.gather(x, 1, i32([0, 4, 1], [3, 1])), /gather: index 4 at position 1 is outside \[0, 4\)/);
  assert.throws(() => ml.gather(x, 0, i32([0, 0, -1, 0], [1, 4])), /gather: index -1 at position 2 is outside \[0, 3\)/);
  assert.throws(() => ml.gather(x, 2, i32([0], [1, 1])), /gather: axis 2 is out of range/);
});

test('indexSelect picks slices along an axis for every dtype; its gradient adds repeated picks', () => {
  const xv = randomArray(2 * 5 * 3, 1);
  const x = ml.tensor(xv, [2, 5, 3], { requiresGrad: true });
  const idx = [4, 0, 4, 2];
  const y = ml.indexSelect(x, 1, i32(idx));
  assert.deepEqual(y.shape, [2, 4, 3]);
  const expect: number[] = [];
  for (let o = 0; o < 2; o++) for (const j of idx) for (let i = 0; i < 3; i++) expect.push(xv[(o * 5 + j) * 3 + i]);
  assertClose(y.toArray(), expect);
  const g = randomArray(24, 2);
  y.backward(ml.tensor(g, [2, 4, 3]));
  const dx = new Array(30).fill(0);
  let p = 0;
  for (let o = 0; o < 2; o++) for (const j of idx) for (let i = 0; i < 3; i++) dx[(o * 5 + j) * 3 + i] += g[p++];
  assertClose(x.grad!.toArray(), dx);

  const rows = ml.indexSelect(i32([1, 2, 3, 4, 5, 6], [3, 2]), 0, i32([2, 2, 0]));
  assert.equal(rows.dtype, 'i32');
  assert.deepEqual(Array.from(rows.toArray()), [5, 6, 5, 6, 1, 2]);
  const h = ml.indexSelect(ml.tensor([1, 2, 3], undefined, { dtype: 'bf16' }), -1, i32([1, 1, 2]));
  assert.equal(h.dtype, 'bf16');
  assert.deepEqual(Array.from(h.toArray()), [2, 2, 3]);
  assert.deepEqual(ml.indexSelect(x, 0, i32([])).shape, [0, 5, 3]);
});

test('indexSelect errors', () => {
  const x = ml.tensor(randomArray(6, 1), [2, 3]);
  assert.throws(() => ml.indexSelect(x, 1, i32([0, 3])), /indexSelect: index 3 at position 1 is outside \[0, 3\)/);
  assert.throws(() => ml.indexSelect(x, 0, i32([0, 1], [1, 2])), /indexSelect: index must be 1-D, got \[1, 2\]/);
  // Indices are checked even when the output is empty (inner size 0).
  assert.throws(() => ml.indexSelect(ml.tensor(new Float32Array(0), [2, 0]), 0, i32([5])), /index 5 at position 0 is outside \[0, 2\)/);
});

test('embedding gives [...indices.shape, C]; its gradient scatter-adds repeated tokens', () => {
  const V = 6, C = 4;
  const wv = randomArray(V * C, 1);
  const w = ml.tensor(wv, [V, C], { requiresGrad: true });
  const ids = [1, 5, 1, 0, 1, 3];
  const y = ml.embedding(w, i32(ids, [2, 3]));
  assert.deepEqual(y.shape, [2, 3, C]);
  assertClose(y.toArray(), ids.flatMap((v) => Array.from(wv.slice(v * C, v * C + C))));
  const g = randomArray(ids.length * C, 2);
  y.backward(ml.tensor(g, [2, 3, C]));
  const dw = new Array(V * C).fill(0);
  ids.forEach((v, r) => { for (let c = 0; c < C; c++) dw[v * C + c] += g[r * C + c]; });
  assertClose(w.grad!.toArray(), dw);
  // Scalar indices give one row; no indices give an empty result.
  assert.deepEqual(ml.embedding(w, i32([2], [])).shape, [C]);
  assert.deepEqual(ml.embedding(w, i32([], [0, 5])).shape, [0, 5, C]);
});

test('embedding with an out-of-range index throws, naming the index, its position and the bound', () => {
  const w = ml.tensor(randomArray(50 * 8, 1), [50, 8]);
  assert.throws(() => ml.embedding(w, i32([1, 2, 3, 70, 4])), /embedding: index 70 at position 3 is outside \[0, 50\)/);
  assert.throws(() => ml.embedding(w, i32([-1])), /embedding: index -1 at position 0 is outside \[0, 50\)/);
  assert.throws(() => ml.embedding(w, ml.tensor([1, 2]) as unknown as ml.Tensor<'i32'>), /embedding: indices must be i32, got f32/);
  assert.throws(() => ml.embedding(ml.tensor(randomArray(8, 1), [8]), i32([0])), /embedding: weight must be \[V, C\], got \[8\]/);
  assert.throws(() => ml.embedding(w.cast('bf16'), i32([0])), /embedding: weight must be f32, got bf16/);
});

test('indexing ops leak nothing inside tidy', () => {
  const w = ml.tensor(randomArray(40, 1), [10, 4], { requiresGrad: true });
  const x = ml.tensor(randomArray(40, 2), [10, 4], { requiresGrad: true });
  const before = ml.memory();
  ml.tidy(() => {
    const e = ml.embedding(w, i32([1, 1, 9], [3]));
    e.backward(ml.tensor(randomArray(12, 3), [3, 4]));
    const s = ml.indexSelect(x, 0, i32([0, 0]));
    s.backward(ml.tensor(randomArray(8, 4), [2, 4]));
  });
  for (const t of [w, x]) { t.grad!.dispose(); t.grad = null; }
  const after = ml.memory();
  assert.equal(after.numTensors, before.numTensors);
  assert.equal(after.numBytes, before.numBytes);
});
