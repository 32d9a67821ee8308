/**
 * crossEntropy: hand-computed losses, the three reductions, ignored rows, label smoothing, leading axes, bad
 * targets, and the fused backward against the analytic gradient (softmax - target distribution) / count and
 * against finite differences.
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

const i32 = (v: number[], shape?: number[]) => ml.tensor(v, shape ?? [v.length], { dtype: 'i32' });

/** Per-row loss and d(loss_row)/d(logits_row) in float64 (PyTorch's definition of label smoothing). */
function refRows(x: ArrayLike<number>, C: number, t: number[], e = 0, ignore = -100): { loss: number[]; grad: number[] } {
  const loss: number[] = [], grad: number[] = [];
  for (let n = 0; n < t.length; n++) {
    const row = Array.from({ length: C }, (_, c) => x[n * C + c]);
    if (t[n] === ignore) {
      loss.push(0);
      grad.push(...new Array(C).fill(0));
      continue;
    }
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    const mean = row.reduce((s, v) => s + v, 0) / C;
    loss.push((1 - e) * (lse - row[t[n]]) + e * (lse - mean));
    for (let c = 0; c < C; c++) grad.push(Math.exp(row[c] - lse) - (1 - e) * (c === t[n] ? 1 : 0) - e / C);
  }
  return { loss, grad };
}

test('crossEntropy of [[1, 2, 3], [1, 1, 1]] with targets [2, 0], reduction none (hand-computed)', () => {
  // row 0: log(e + e^2 + e^3) - 3 = 0.40760596; row 1: log(3) = 1.09861229
  const loss = ml.crossEntropy(ml.tensor([[1, 2, 3], [1, 1, 1]]), i32([2, 0]), { reduction: 'none' });
  assert.deepEqual(loss.shape, [2]);
  assertClose(loss.toArray(), [0.40760596, 1.09861229]);
});

test('crossEntropy reductions mean (default) and sum', () => {
  const logits = ml.tensor([[1, 2, 3], [1, 1, 1]]);
  const mean = ml.crossEntropy(logits, i32([2, 0]));
  assert.deepEqual(mean.shape, []);
  assertClose(mean.toArray(), [(0.40760596 + 1.09861229) / 2]);
  assertClose(ml.crossEntropy(logits, i32([2, 0]), { reduction: 'sum' }).toArray(), [0.40760596 + 1.09861229]);
});

test('crossEntropy with ignored rows: zero loss there, and mean divides by the counted rows only', () => {
  const xd = randomArray(20, 1, -3, 3);
  const t = [1, -100, 4, -100];
  const ref = refRows(xd, 5, t);
  const logits = ml.tensor(xd, [4, 5]);
  assertClose(ml.crossEntropy(logits, i32(t), { reduction: 'none' }).toArray(), ref.loss);
  assertClose(ml.crossEntropy(logits, i32(t)).toArray(), [(ref.loss[0] + ref.loss[2]) / 2]);
  assertClose(ml.crossEntropy(logits, i32(t), { reduction: 'sum' }).toArray(), [ref.loss[0] + ref.loss[2]]);
  // ignoreIndex may be a valid class id: those rows are skipped like any other.
  const t3 = [3, 0, 3, 2];
  const ref3 = refRows(xd, 5, t3, 0, 3);
  assertClose(ml.crossEntropy(logits, i32(t3), { ignoreIndex: 3 }).toArray(), [(ref3.loss[1] + ref3.loss[3]) / 2]);
});

test('crossEntropy with every target ignored: mean is NaN (as PyTorch), sum is 0, gradient is 0', () => {
  const x = ml.tensor(randomArray(6, 2), [2, 3], { requiresGrad: true });
  const t = i32([-100, -100]);
  const mean = ml.crossEntropy(x, t);
  assert.ok(Number.isNaN(mean.item()), `mean ${mean.item()}`);
  assertClose(ml.crossEntropy(x, t, { reduction: 'sum' }).toArray(), [0]);
  const [dx, dt] = grads(mean, [1]);
  assert.equal(dt, null);
  assertClose(dx!.toArray(), [0, 0, 0, 0, 0, 0]);
});

test('crossEntropy label smoothing 0.1 uses (1 - e) nll + e * mean(-log p)', () => {
  // Hand-computed row: logits [1, 2, 3], target 0, e = 0.1, lse = 3.40760596:
  //   0.9 * (3.40760596 - 1) + 0.1 * (3.40760596 - 2) = 2.30760596
  const one = ml.crossEntropy(ml.tensor([[1, 2, 3]]), i32([0]), { labelSmoothing: 0.1 });
  assertClose(one.toArray(), [2.30760596]);
  const xd = randomArray(24, 3, -2, 2), t = [0, 5, -100, 2];
  const ref = refRows(xd, 6, t, 0.1);
  const logits = ml.tensor(xd, [4, 6]);
  assertClose(ml.crossEntropy(logits, i32(t), { labelSmoothing: 0.1, reduction: 'none' }).toArray(), ref.loss);
  assertClose(ml.crossEntropy(logits, i32(t), { labelSmoothing: 0.1 }).toArray(), [(ref.loss[0] + ref.loss[1] + ref.loss[3]) / 3]);
});

test('crossEntropy of [B, T, C] logits with [B, T] targets', () => {
  const xd = randomArray(2 * 3 * 4, 4, -2, 2), t = [0, 3, 1, -100, 2, 2];
  const ref = refRows(xd, 4, t);
  const logits = ml.tensor(xd, [2, 3, 4]);
  const none = ml.crossEntropy(logits, i32(t, [2, 3]), { reduction: 'none' });
  assert.deepEqual(none.shape, [2, 3]);
  assertClose(none.toArray(), ref.loss);
  assertClose(ml.crossEntropy(logits, i32(t, [2, 3])).toArray(), [ref.loss.reduce((s, v) => s + v, 0) / 5]);
  // Unbatched: logits [C] with a 0-d target.
  const single = ml.crossEntropy(ml.tensor([1, 2, 3]), ml.tensor(2, [], { dtype: 'i32' }), { reduction: 'none' });
  assert.deepEqual(single.shape, []);
  assertClose(single.toArray(), [0.40760596]);
});

test('crossEntropy of large logits is stable', () => {
  const xd = [1000, -1000, 999, 0, 500, 501];
  const ref = refRows(xd, 3, [0, 2]);
  assertClose(ml.crossEntropy(ml.tensor(xd, [2, 3]), i32([0, 2]), { reduction: 'none' }).toArray(), ref.loss);
});

test('crossEntropy of a wide vocabulary (3 x 5000)', () => {
  const xd = randomArray(15000, 5, -4, 4), t = [17, 4999, 0];
  const ref = refRows(xd, 5000, t);
  assertClose(ml.crossEntropy(ml.tensor(xd, [3, 5000]), i32(t), { reduction: 'none' }).toArray(), ref.loss);
});

test('crossEntropy gradient: (softmax - onehot) / count, zero on ignored rows', () => {
  const xd = randomArray(20, 6, -2, 2), t = [1, -100, 4, 0];
  const ref = refRows(xd, 5, t);
  const x = ml.tensor(xd, [4, 5], { requiresGrad: true });
  // mean, seeded with 2: d/dx = 2 * grad_row / 3
  const [dmean] = grads(ml.crossEntropy(x, i32(t)), [2]);
  assert.deepEqual(dmean!.shape, [4, 5]);
  assertClose(dmean!.toArray(), ref.grad.map((v) => (2 * v) / 3));
  // sum
  const [dsum] = grads(ml.crossEntropy(x, i32(t), { reduction: 'sum' }), [1]);
  assertClose(dsum!.toArray(), ref.grad);
  // none, with a different dloss per row
  const dl = [0.5, 7, -1, 3];
  const [dnone] = grads(ml.crossEntropy(x, i32(t), { reduction: 'none' }), dl);
  assertClose(dnone!.toArray(), ref.grad.map((v, i) => v * dl[Math.floor(i / 5)]));
});

test('crossEntropy gradient with label smoothing 0.1 and leading axes', () => {
  const xd = randomArray(2 * 2 * 6, 7, -2, 2), t = [5, 0, -100, 3];
  const ref = refRows(xd, 6, t, 0.1);
  const x = ml.tensor(xd, [2, 2, 6], { requiresGrad: true });
  const [dx] = grads(ml.crossEntropy(x, i32(t, [2, 2]), { labelSmoothing: 0.1 }), [1]);
  assert.deepEqual(dx!.shape, [2, 2, 6]);
  assertClose(dx!.toArray(), ref.grad.map((v) => v / 3));
});

test('crossEntropy gradient agrees with finite differences', () => {
  const xd = randomArray(12, 8, -2, 2), t = [2, 0, 3];
  const f = (v: Float32Array) => ml.crossEntropy(ml.tensor(v, [3, 4]), i32(t), { labelSmoothing: 0.2 }).item();
  const [dx] = grads(ml.crossEntropy(ml.tensor(xd, [3, 4], { requiresGrad: true }), i32(t), { labelSmoothing: 0.2 }), [1]);
  const h = 1e-2, fd: number[] = [];
  for (let i = 0; i < 12; i++) {
    const a = Float32Array.from(xd), b = Float32Array.from(xd);
    a[i] += h;
    b[i] -= h;
    fd.push((f(a) - f(b)) / (2 * h));
  }
  assertClose(dx!.toArray(), fd, { rtol: 5e-3, atol: 5e-4 });
});

test('crossEntropy: an out-of-range target throws naming the row, and leaks nothing', () => {
  const logits = ml.tensor(randomArray(9, 9), [3, 3], { requiresGrad: true });
  const [t5, tneg, t100] = [i32([0, 5, 1]), i32([0, 1, -1]), i32([-100, 1, 1])];
  const before = ml.memory();
  assert.throws(() => ml.crossEntropy(logits, t5), /crossEntropy: target 5 at row 1 is outside \[0, 3\)/);
  assert.throws(() => ml.crossEntropy(logits, tneg), /crossEntropy: target -1 at row 2 is outside \[0, 3\)/);
  // -100 is only special while it is the ignoreIndex.
  assert.throws(() => ml.crossEntropy(logits, t100, { ignoreIndex: 1 }), /target -100 at row 0/);
  assert.equal(ml.memory().numTensors, before.numTensors);
  assert.equal(ml.memory().numBytes, before.numBytes);
});

test('crossEntropy frees its row buffers and the saved tensors when the node is released', () => {
  const x = ml.tensor(randomArray(12, 10), [3, 4], { requiresGrad: true });
  const t = i32([0, 1, 2]);
  const before = ml.memory();
  const loss = ml.crossEntropy(x, t);
  for (const g of grads(loss, [1])) g?.dispose();
  loss._node!.release();
  loss.dispose();
  ml.noGrad(() => ml.crossEntropy(x, t, { reduction: 'none' })).dispose();
  assert.equal(ml.memory().numTensors, before.numTensors);
  assert.equal(ml.memory().numBytes, before.numBytes);
});

test('crossEntropy of an empty batch: sum 0, mean NaN', () => {
  const logits = ml.tensor([], [0, 4]), t = ml.tensor([], [0], { dtype: 'i32' });
  assertClose(ml.crossEntropy(logits, t, { reduction: 'sum' }).toArray(), [0]);
  assert.ok(Number.isNaN(ml.crossEntropy(logits, t).item()));
  assert.deepEqual(ml.crossEntropy(logits, t, { reduction: 'none' }).shape, [0]);
});

test('crossEntropy argument errors name the op, the argument and the shapes', () => {
  const logits = ml.tensor(randomArray(6, 11), [2, 3]);
  assert.throws(() => ml.crossEntropy(logits, i32([0, 1, 2])),
    /crossEntropy: logits \[2, 3\] and targets \[3\]: targets must have shape \[2\]/);
  assert.throws(() => ml.crossEntropy(logits, ml.tensor([0, 1])), /crossEntropy: targets must be i32, got f32 \[2\]/);
  assert.throws(() => ml.crossEntropy(i32([0, 1, 2]), i32([0])), /crossEntropy: logits must be f32, got i32/);
  assert.throws(() => ml.crossEntropy(logits, i32([0, 1]), { labelSmoothing: 1.5 }),
    /crossEntropy: labelSmoothing must be in \[0, 1\], got 1.5/);
  assert.throws(() => ml.crossEntropy(logits, i32([0, 1]), { reduction: 'avg' as never }),
    /crossEntropy: reduction must be 'mean', 'sum' or 'none'/);
  assert.throws(() => ml.crossEntropy(logits, i32([0, 1]), { ignoreIndex: 0.5 }), /crossEntropy: ignoreIndex must be an integer/);
  assert.throws(() => ml.crossEntropy(ml.tensor(1), ml.tensor(0, [], { dtype: 'i32' })), /crossEntropy: logits must have a class axis/);
});
