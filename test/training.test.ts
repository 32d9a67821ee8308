/**
 * End-to-end training on the foundation: a small MLP learns a toy task, and 200 training steps leak nothing.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../src/index';

/** Two interleaved spirals: a task a linear model cannot solve (about 50%), a small MLP can (> 95%). */
function spirals(n: number, seed: number): { x: ml.Tensor<'f32'>; y: ml.Tensor<'i32'> } {
  let s = seed;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const xs = new Float32Array(n * 2);
  const ys = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const cls = i % 2;
    const r = 0.2 + 0.8 * rnd();
    const t = 3 * Math.PI * r / 1.0 + cls * Math.PI;
    xs[2 * i] = r * Math.cos(t) + 0.02 * (rnd() - 0.5);
    xs[2 * i + 1] = r * Math.sin(t) + 0.02 * (rnd() - 0.5);
    ys[i] = cls;
  }
  return { x: ml.tensor(xs, [n, 2]), y: ml.tensor(ys, [n], { dtype: 'i32' }) };
}

function accuracy(model: ml.nn.Module & { forward(x: ml.Tensor): ml.Tensor }, x: ml.Tensor, y: ml.Tensor<'i32'>): number {
  return ml.noGrad(() => ml.tidy(() => {
    const pred = model.forward(x).argmax(1).toArray();
    const yy = y.toArray();
    let ok = 0;
    for (let i = 0; i < yy.length; i++) ok += pred[i] === yy[i] ? 1 : 0;
    return ok / yy.length;
  }));
}

test('a small MLP learns two spirals (AdamW, cosine schedule, gradient clipping)', () => {
  ml.manualSeed(0);
  const train = spirals(512, 1);
  const heldOut = spirals(256, 2);
  const model = new ml.nn.MLP([2, 64, 64, 2], { activation: 'gelu' });
  const opt = new ml.optim.AdamW(model.parameters(), { lr: 1e-2, weightDecay: 1e-4 });
  const steps = 400;
  const lrAt = ml.optim.cosineWithWarmup({ warmupSteps: 20, totalSteps: steps });
  let first = NaN, last = NaN;
  for (let step = 0; step < steps; step++) {
    const loss = ml.tidy(() => {
      opt.setLr(1e-2 * lrAt(step));
      const l = ml.crossEntropy(model.forward(train.x), train.y);
      opt.zeroGrad();
      l.backward();
      ml.optim.clipGradNorm(model.parameters(), 1.0);
      opt.step();
      return l.item();
    });
    if (step === 0) first = loss;
    last = loss;
  }
  assert.ok(first > 0.6, `initial loss ${first} should be near ln 2`);
  assert.ok(last < 0.15, `final loss ${last}`);
  const acc = accuracy(model, heldOut.x, heldOut.y);
  assert.ok(acc > 0.95, `held-out accuracy ${acc}`);
});

test('200 training steps keep live tensors and bytes flat', () => {
  ml.manualSeed(1);
  const data = spirals(128, 3);
  const model = new ml.nn.MLP([2, 32, 32, 2], { activation: 'relu', dropout: 0.1 });
  const opt = new ml.optim.AdamW(model.parameters(), { lr: 1e-3 });
  const step = () => ml.tidy(() => {
    const l = ml.crossEntropy(model.forward(data.x), data.y);
    opt.zeroGrad();
    l.backward();
    opt.step();
  });
  for (let i = 0; i < 5; i++) step(); // optimizer state and gradients exist after the first steps
  const base = ml.memory();
  const samples: number[] = [];
  for (let i = 0; i < 200; i++) {
    step();
    if (i % 20 === 0) samples.push(ml.memory().numTensors);
  }
  const end = ml.memory();
  assert.equal(end.numTensors, base.numTensors, `live tensors went from ${base.numTensors} to ${end.numTensors} (${samples})`);
  assert.equal(end.numBytes, base.numBytes, `live bytes went from ${base.numBytes} to ${end.numBytes}`);
  assert.equal(end.numBuffers, base.numBuffers);
});
