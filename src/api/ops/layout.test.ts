/**
 * Layout ops: views that share memory, permutes against a JS index loop for every dtype, slices with Python's
 * bounds, concat/stack, broadcastTo, clone, their gradients, and the errors.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../../index';
import { assertClose, randomArray } from '../../../test/helpers';

const prod = (s: readonly number[]): number => s.reduce((p, d) => p * d, 1);
const strides = (s: readonly number[]): number[] => {
  const out = new Array<number>(s.length);
  let acc = 1;
  for (let i = s.length - 1; i >= 0; i--) { out[i] = acc; acc *= s[i]; }
  return out;
};

/** out[i...] = x[i permuted...]: the obvious multi-index loop. */
function permuteRef(x: ArrayLike<number>, shape: number[], perm: number[]): number[] {
  const oshape = perm.map((p) => shape[p]);
  const xs = strides(shape);
  const out: number[] = [];
  const ix = new Array(oshape.length).fill(0);
  for (let t = 0; t < prod(oshape); t++) {
    let r = t;
    for (let d = oshape.length - 1; d >= 0; d--) { ix[d] = r % oshape[d]; r = Math.floor(r / oshape[d]); }
    out.push(x[ix.reduce((s, v, d) => s + v * xs[perm[d]], 0)]);
  }
  return out;
}

/** Exact small integers, so that f16 / bf16 / i32 hold them without rounding. */
const ints = (n: number): number[] => Array.from({ length: n }, (_, i) => (i * 7) % 23 - 11);

test('reshape is a view sharing memory; one -1 is inferred', () => {
  const x = ml.tensor(randomArray(24, 1), [2, 3, 4]);
  const y = x.reshape([4, -1]);
  assert.deepEqual(y.shape, [4, 6]);
  assert.equal(y._storage, x._storage);
  assert.equal(y._offset, x._offset);
  assertClose(y.toArray(), x.toArray());
  assert.deepEqual(ml.flatten(x).shape, [24]);
  assert.deepEqual(ml.flatten(x, 1).shape, [2, 12]);
  assert.deepEqual(ml.flatten(x, 0, 1).shape, [6, 4]);
  assert.deepEqual(ml.flatten(ml.tensor(5)).shape, [1]);
  assert.deepEqual(ml.unsqueeze(x, -1).shape, [2, 3, 4, 1]);
  assert.deepEqual(ml.unsqueeze(x, 0).shape, [1, 2, 3, 4]);
  const s = ml.tensor(randomArray(6, 2), [1, 3, 1, 2]);
  assert.deepEqual(ml.squeeze(s).shape, [3, 2]);
  assert.deepEqual(ml.squeeze(s, 2).shape, [1, 3, 2]);
  assert.deepEqual(ml.squeeze(s, 1).shape, [1, 3, 1, 2]);   // not size 1: unchanged, as in PyTorch
  assert.equal(ml.squeeze(s)._storage, s._storage);
});

test('reshape errors name the shapes', () => {
  const x = ml.tensor(randomArray(6, 1), [2, 3]);
  assert.throws(() => x.reshape([4, 2]), /reshape: cannot reshape x \[2, 3\] \(6 elements\) into \[4, 2\]/);
  assert.throws(() => x.reshape([-1, -1]), /more than one -1/);
  assert.throws(() => x.reshape([4, -1]), /cannot reshape x \[2, 3\]/);
  assert.throws(() => x.reshape([2.5, 2]), /reshape: shape/);
  assert.throws(() => ml.unsqueeze(x, 3), /unsqueeze: axis 3 is out of range/);
  assert.throws(() => ml.flatten(x, 1, 0), /flatten: startAxis 1 comes after endAxis 0/);
});

test('the gradient of a reshape is the incoming gradient viewed back', () => {
  const x = ml.tensor(randomArray(6, 1), [2, 3], { requiresGrad: true });
  const y = x.reshape([3, 2]);
  const g = randomArray(6, 2);
  y.backward(ml.tensor(g, [3, 2]));
  assert.deepEqual(x.grad!.shape, [2, 3]);
  assertClose(x.grad!.toArray(), g);
});

test('permute and transpose match a JS index loop for every dtype', () => {
  const cases: Array<[number[], number[]]> = [
    [[5, 7], [1, 0]], [[3, 40, 33], [0, 2, 1]], [[2, 3, 4, 5], [0, 2, 1, 3]], [[2, 3, 4, 5], [3, 1, 0, 2]],
    [[4, 1, 6, 1, 3], [4, 2, 1, 0, 3]], [[67, 45], [1, 0]],
  ];
  for (const dtype of ['f32', 'i32', 'f16', 'bf16'] as const) {
    for (const [shape, perm] of cases) {
      const data = ints(prod(shape));
      const x = ml.tensor(dtype === 'i32' ? Int32Array.from(data) : Float32Array.from(data), shape, { dtype });
      const y = ml.permute(x, perm);
      assert.equal(y.dtype, dtype);
      assert.deepEqual(y.shape, perm.map((p) => shape[p]));
      assert.deepEqual(Array.from(y.toArray() as ArrayLike<number>), permuteRef(data, shape, perm),
        `${dtype} ${JSON.stringify(shape)} perm ${perm}`);
    }
  }
  const x = ml.tensor(randomArray(24, 3), [2, 3, 4]);
  assert.deepEqual(Array.from(x.transpose().toArray()), permuteRef(x.toArray(), [2, 3, 4], [0, 2, 1]));
  assert.deepEqual(Array.from(ml.transpose(x, 0, 2).toArray()), permuteRef(x.toArray(), [2, 3, 4], [2, 1, 0]));
});

test('a permute that only moves size-1 axes is a view', () => {
  const x = ml.tensor(randomArray(6, 1), [1, 6, 1]);
  const y = ml.permute(x, [2, 0, 1]);
  assert.deepEqual(y.shape, [1, 1, 6]);
  assert.equal(y._storage, x._storage);
});

test('the gradient of a permute is the inverse permute', () => {
  const shape = [2, 3, 4];
  const x = ml.tensor(randomArray(24, 1), shape, { requiresGrad: true });
  const y = ml.permute(x, [2, 0, 1]);      // [4, 2, 3]
  const g = randomArray(24, 2);
  y.backward(ml.tensor(g, [4, 2, 3]));
  assertClose(x.grad!.toArray(), permuteRef(g, [4, 2, 3], [1, 2, 0]));
});

test('permute errors', () => {
  const x = ml.tensor(randomArray(6, 1), [2, 3]);
  assert.throws(() => ml.permute(x, [0]), /permute: perm must list all 2 axes of x \[2, 3\]/);
  assert.throws(() => ml.permute(x, [1, 1]), /permute: perm \[1,1\] repeats an axis/);
  assert.throws(() => ml.permute(x, [0, 2]), /permute: axis 2 is out of range/);
  assert.throws(() => ml.transpose(ml.tensor([1, 2, 3])), /transpose: axis -2 is out of range/);
});

test('slice follows Python bounds; along the leading axis it is a view sharing memory', () => {
  const data = randomArray(4 * 5 * 3, 1);
  const x = ml.tensor(data, [4, 5, 3]);
  const ref = (a: number, s: number, e: number): number[] => {
    const out: number[] = [];
    for (let i = 0; i < 4; i++) for (let j = 0; j < 5; j++) for (let k = 0; k < 3; k++) {
      const v = [i, j, k][a];
      if (v >= s && v < e) out.push(data[(i * 5 + j) * 3 + k]);
    }
    return out;
  };
  const v = x.slice(0, 1, 3);
  assert.deepEqual(v.shape, [2, 5, 3]);
  assert.equal(v._storage, x._storage);
  assert.equal(v._offset, 15);
  assertClose(v.toArray(), ref(0, 1, 3));
  assertClose(x.slice(0, -1).toArray(), ref(0, 3, 4));            // negative start counts from the end
  assertClose(x.slice(1, 1, -1).toArray(), ref(1, 1, 4));          // a copy along axis 1
  assertClose(x.slice(2, -2, 100).toArray(), ref(2, 1, 3));        // end clamps
  assertClose(x.slice(-1, 0, 1).toArray(), ref(2, 0, 1));
  assert.deepEqual(x.slice(1, 3, 2).shape, [4, 0, 3]);             // end before start: empty
  assert.deepEqual(x.slice(1, -100, 2).shape, [4, 2, 3]);          // start clamps to 0
  // A slice of a slice keeps the offsets right.
  assertClose(x.slice(0, 1).slice(0, 1, 2).toArray(), ref(0, 2, 3));
  assert.throws(() => x.slice(3, 0), /slice: axis 3 is out of range/);
  assert.throws(() => x.slice(0, 0.5), /slice: start must be an integer/);
});

test('the gradient of a slice is zero outside the window', () => {
  for (const axis of [0, 1]) {
    const x = ml.tensor(randomArray(12, 1), [3, 4], { requiresGrad: true });
    const y = x.slice(axis, 1, 3);
    const g = randomArray(y.size, 2);
    y.backward(ml.tensor(g, y.shape));
    const expect = new Array(12).fill(0);
    let p = 0;
    for (let i = 0; i < 3; i++) for (let j = 0; j < 4; j++) {
      const v = axis === 0 ? i : j;
      if (v >= 1 && v < 3) expect[i * 4 + j] = g[p++];
    }
    assertClose(x.grad!.toArray(), expect);
  }
});

test('concat and stack, values and gradients', () => {
  const a = ml.tensor(randomArray(6, 1), [2, 3], { requiresGrad: true });
  const b = ml.tensor(randomArray(4, 2), [2, 2], { requiresGrad: true });
  const c = ml.concat([a, b], 1);
  assert.deepEqual(c.shape, [2, 5]);
  const av = a.toArray(), bv = b.toArray();
  assertClose(c.toArray(), [av[0], av[1], av[2], bv[0], bv[1], av[3], av[4], av[5], bv[2], bv[3]]);
  const g = randomArray(10, 3);
  c.backward(ml.tensor(g, [2, 5]));
  assertClose(a.grad!.toArray(), [g[0], g[1], g[2], g[5], g[6], g[7]]);
  assertClose(b.grad!.toArray(), [g[3], g[4], g[8], g[9]]);

  const p = ml.tensor(randomArray(6, 4), [2, 3], { requiresGrad: true });
  const q = ml.tensor(randomArray(6, 5), [2, 3], { requiresGrad: true });
  const s = ml.stack([p, q], 1);        // [2, 2, 3]
  assert.deepEqual(s.shape, [2, 2, 3]);
  const pv = p.toArray(), qv = q.toArray();
  assertClose(s.toArray(), [...pv.slice(0, 3), ...qv.slice(0, 3), ...pv.slice(3), ...qv.slice(3)]);
  const gs = randomArray(12, 6);
  s.backward(ml.tensor(gs, [2, 2, 3]));
  assertClose(p.grad!.toArray(), [...gs.slice(0, 3), ...gs.slice(6, 9)]);
  assertClose(q.grad!.toArray(), [...gs.slice(3, 6), ...gs.slice(9, 12)]);
  assert.deepEqual(ml.stack([p, q], -1).shape, [2, 3, 2]);
  assert.deepEqual(ml.stack([p, q]).shape, [2, 2, 3]);
  // i32 and 2-byte dtypes move unchanged; an empty part is fine.
  const i = ml.concat([ml.tensor(Int32Array.from([1, 2])), ml.tensor(new Int32Array(0)), ml.tensor(Int32Array.from([3]))]);
  assert.deepEqual(Array.from(i.toArray()), [1, 2, 3]);
  const h = ml.stack([ml.tensor([1, 2], undefined, { dtype: 'bf16' }), ml.tensor([3, 4], undefined, { dtype: 'bf16' })], 1);
  assert.equal(h.dtype, 'bf16');
  assert.deepEqual(Array.from(h.toArray()), [1, 3, 2, 4]);
});

test('concat and stack errors name the parts', () => {
  const a = ml.tensor(randomArray(6, 1), [2, 3]);
  assert.throws(() => ml.concat([], 0), /concat: xs must be a non-empty array/);
  assert.throws(() => ml.concat([a, ml.tensor(randomArray(6, 1), [3, 2])], 1),
    /concat: xs\[1\] \[3, 2\] does not match xs\[0\] \[2, 3\] on every axis but 1/);
  assert.throws(() => ml.concat([a, ml.tensor([[1, 2, 3]], undefined, { dtype: 'i32' })], 0), /concat: xs\[1\] is i32/);
  assert.throws(() => ml.stack([a, ml.tensor(randomArray(4, 1), [2, 2])]), /stack: xs\[1\] \[2, 2\] differs from xs\[0\] \[2, 3\]/);
  assert.throws(() => ml.stack([a], 3), /stack: axis 3 is out of range/);
});

test('broadcastTo repeats size-1 and new leading axes', () => {
  const x = ml.tensor([10, 20, 30], [3, 1]);
  const y = ml.broadcastTo(x, [2, 3, 4]);
  assert.deepEqual(y.shape, [2, 3, 4]);
  const expect: number[] = [];
  for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 4; k++) expect.push([10, 20, 30][j]);
  assertClose(y.toArray(), expect);
  const v = ml.broadcastTo(x, [1, 3, 1]);            // only size-1 axes added: a view
  assert.equal(v._storage, x._storage);
  const i = ml.broadcastTo(ml.tensor(Int32Array.from([1, 2]), [2]), [2, 2]);
  assert.deepEqual(Array.from(i.toArray()), [1, 2, 1, 2]);
  assert.throws(() => ml.broadcastTo(x, [4, 4]), /broadcastTo: x \[3, 1\] cannot be broadcast to \[4, 4\]/);
  assert.throws(() => ml.broadcastTo(x, [1]), /broadcastTo: x \[3, 1\] cannot be broadcast to \[1\]/);
  assert.throws(() => ml.broadcastTo(ml.tensor([1]), [1e15, 1e15]), /broadcastTo: cannot allocate the output \[1000000000000000, 1000000000000000\] f32/);
});

test('the gradient of broadcastTo sums back to the input shape', (t) => {
  const x = ml.tensor([1, 2, 3], [3, 1], { requiresGrad: true });
  const y = ml.broadcastTo(x, [2, 3, 4]);
  const g = randomArray(24, 1);
  try {
    y.backward(ml.tensor(g, [2, 3, 4]));
  } catch (e) {
    // sumToShape lives with the reductions (src/api/ops/reduce.ts); skip until that family lands.
    if (/not implemented yet/.test((e as Error).message)) { t.skip('sumToShape not implemented yet'); return; }
    throw e;
  }
  const expect = [0, 0, 0];
  for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 4; k++) expect[j] += g[(i * 3 + j) * 4 + k];
  assertClose(x.grad!.toArray(), expect);
});

test('clone copies into new memory and passes the gradient through', () => {
  const x = ml.tensor(randomArray(6, 1), [2, 3], { requiresGrad: true });
  const y = ml.clone(x);
  assert.notEqual(y._storage, x._storage);
  assertClose(y.toArray(), x.toArray());
  const g = randomArray(6, 2);
  y.backward(ml.tensor(g, [2, 3]));
  assertClose(x.grad!.toArray(), g);
  const h = ml.tensor([1.5, -2], undefined, { dtype: 'f16' }).clone();
  assert.equal(h.dtype, 'f16');
  assertClose(h.toArray(), [1.5, -2]);
  // A clone of a view copies only the view's window.
  const w = ml.tensor(randomArray(12, 3), [4, 3]).slice(0, 2);
  assertClose(w.clone().toArray(), w.toArray());
});

test('layout ops on empty tensors', () => {
  const e = ml.tensor(new Float32Array(0), [0, 3]);
  assert.deepEqual(e.transpose().shape, [3, 0]);
  assert.deepEqual(ml.concat([e, e], 0).shape, [0, 3]);
  assert.deepEqual(ml.broadcastTo(ml.tensor(new Float32Array(0), [0, 1]), [2, 0, 3]).shape, [2, 0, 3]);
  assert.deepEqual(e.reshape([3, -1]).shape, [3, 0]);
  assert.deepEqual(e.slice(1, 1).shape, [0, 2]);
});

test('layout ops leak nothing inside tidy', () => {
  // Two leaves, each used once (so backward needs no elementwise add to merge paths).
  const x = ml.tensor(randomArray(24, 1), [2, 3, 4], { requiresGrad: true });
  const z = ml.tensor(randomArray(24, 3), [2, 3, 4], { requiresGrad: true });
  const before = ml.memory();
  ml.tidy(() => {
    const y = ml.concat([x.permute([2, 0, 1]).reshape([4, 6]), z.slice(1, 1).reshape([4, 4])], 1);
    y.backward(ml.tensor(randomArray(40, 2), [4, 10]));
  });
  for (const t of [x, z]) {
    t.grad!.dispose();
    t.grad = null;
  }
  const after = ml.memory();
  assert.equal(after.numTensors, before.numTensors);
  assert.equal(after.numBytes, before.numBytes);
});
