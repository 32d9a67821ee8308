/**
 * Optimizers against hand-computed updates (float64 references in JS), weight-decay filtering, gradient
 * clipping, schedules, exact resume through a safetensors file, and memory: state survives tidy(), a step
 * makes no tensors.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ml from '../../index';
import * as optim from './index';
import { save, load } from '../io/safetensors';
import { assertClose } from '../../../test/helpers';

function param(values: number[], shape: number[]): ml.Tensor<'f32'> {
  return ml.tensor(Float32Array.from(values), shape).requiresGrad_();
}

function setGrad(p: ml.Tensor, values: number[]): void {
  if (p.grad) p.grad.dispose();
  p.grad = ml.tensor(Float32Array.from(values), p.shape).keep();
}

test('public names: ml.optim.*', () => {
  for (const k of ['AdamW', 'SGD', 'clipGradNorm', 'cosineWithWarmup', 'LRScheduler', 'Optimizer', 'toSafetensors', 'fromSafetensors'] as const) {
    assert.equal(ml.optim[k], optim[k], `ml.optim.${k}`);
  }
});

/** PyTorch's AdamW in float64, one parameter. */
function adamwRef(p: number[], grads: number[][], o: { lr: number; b1: number; b2: number; eps: number; wd: number }): number[] {
  const m = p.map(() => 0), v = p.map(() => 0);
  const x = p.slice();
  grads.forEach((g, k) => {
    const t = k + 1;
    for (let i = 0; i < x.length; i++) {
      x[i] -= o.lr * o.wd * x[i];
      m[i] = o.b1 * m[i] + (1 - o.b1) * g[i];
      v[i] = o.b2 * v[i] + (1 - o.b2) * g[i] * g[i];
      const mh = m[i] / (1 - o.b1 ** t), vh = v[i] / (1 - o.b2 ** t);
      x[i] -= o.lr * mh / (Math.sqrt(vh) + o.eps);
    }
  });
  return x;
}

test('AdamW: three steps match a hand-computed AdamW (bias correction, decoupled decay)', () => {
  const p0 = [0.5, -1.25, 2.0, 0.125, -0.75, 1.5];
  const grads = [[0.1, -0.2, 0.3, -0.4, 0.5, -0.6], [0.05, 0.1, -0.3, 0.2, -0.5, 0.01], [-1, 2, 0.5, 0.25, 0, 3]];
  const p = param(p0, [2, 3]);
  const opt = new optim.AdamW([p], { lr: 0.01, betas: [0.8, 0.95], eps: 1e-6, weightDecay: 0.1 });
  for (const g of grads) {
    setGrad(p, g);
    opt.step();
  }
  const ref = adamwRef(p0, grads, { lr: 0.01, b1: 0.8, b2: 0.95, eps: 1e-6, wd: 0.1 });
  assertClose(p.toArray(), ref, { rtol: 2e-6, atol: 1e-7, what: 'AdamW parameter' });
  const st = opt.stateDict().state[0];
  assert.equal(st.step, 3);
  opt.dispose();
});

test('AdamW: default weight decay skips 1-D parameters (biases, norm gains); a group that sets it decays them', () => {
  const w = param([1, 2, 3, 4], [2, 2]);
  const b = param([1, 2], [2]);
  const opt = new optim.AdamW([w, b], { lr: 0.1, weightDecay: 0.5 });
  setGrad(w, [0, 0, 0, 0]);
  setGrad(b, [0, 0]);
  opt.step();  // zero gradients: only the decay moves anything
  assertClose(w.toArray(), [1, 2, 3, 4].map((x) => x * (1 - 0.1 * 0.5)), { what: 'matrix decays' });
  assert.deepEqual(Array.from(b.toArray()), [1, 2], 'bias does not decay');
  assert.equal(opt.paramGroups[0].weightDecayFilter, 'ndim>=2');

  const b2 = param([1, 2], [2]);
  const opt2 = new optim.AdamW([{ params: [b2], weightDecay: 0.5 }], { lr: 0.1 });
  assert.equal(opt2.paramGroups[0].weightDecayFilter, 'all');
  setGrad(b2, [0, 0]);
  opt2.step();
  assertClose(b2.toArray(), [0.95, 1.9], { what: 'explicit group decays 1-D' });

  const b3 = param([1, 2], [2]);
  const opt3 = new optim.AdamW([{ params: [b3], weightDecayFilter: 'all' }], { lr: 0.1, weightDecay: 0.5 });
  setGrad(b3, [0, 0]);
  opt3.step();
  assertClose(b3.toArray(), [0.95, 1.9], { what: "weightDecayFilter 'all'" });
});

test('AdamW: per-group lr overrides, parameters without gradients are skipped', () => {
  const a = param([1, 1], [1, 2]);
  const c = param([1, 1], [1, 2]);
  const idle = param([5, 5], [1, 2]);
  const opt = new optim.AdamW([{ params: [a] }, { params: [c, idle], lr: 0.1 }], { lr: 0.01, weightDecay: 0 });
  setGrad(a, [1, -1]);
  setGrad(c, [1, -1]);
  opt.step();
  // First Adam step moves each element by lr * sign(g) (mhat / sqrt(vhat) = g / |g|).
  assertClose(a.toArray(), [0.99, 1.01], { rtol: 1e-6 });
  assertClose(c.toArray(), [0.9, 1.1], { rtol: 1e-6 });
  assert.deepEqual(Array.from(idle.toArray()), [5, 5]);
  assert.deepEqual(opt.getLr(), [0.01, 0.1]);
  opt.setLr(0.5);
  assert.deepEqual(opt.getLr(), [0.5, 0.5]);
});

/** torch.optim.SGD in float64. */
function sgdRef(p: number[], grads: number[][], o: { lr: number; mom: number; damp: number; wd: number; nesterov: boolean }): number[] {
  const x = p.slice();
  let buf: number[] | null = null;
  for (const g0 of grads) {
    const g = g0.map((gi, i) => gi + o.wd * x[i]);
    let d = g;
    if (o.mom !== 0) {
      buf = buf === null ? g.slice() : buf.map((bi, i) => o.mom * bi + (1 - o.damp) * g[i]);
      d = o.nesterov ? g.map((gi, i) => gi + o.mom * buf![i]) : buf;
    }
    for (let i = 0; i < x.length; i++) x[i] -= o.lr * d[i];
  }
  return x;
}

for (const cfg of [
  { name: 'plain', mom: 0, damp: 0, wd: 0, nesterov: false },
  { name: 'momentum with dampening and weight decay', mom: 0.9, damp: 0.1, wd: 0.01, nesterov: false },
  { name: 'nesterov', mom: 0.9, damp: 0, wd: 0.05, nesterov: true },
]) {
  test(`SGD ${cfg.name}: three steps match torch.optim.SGD's formulation`, () => {
    const p0 = [0.5, -1.0, 2.0, 3.0];
    const grads = [[0.1, 0.2, -0.3, 0.4], [0.5, -0.1, 0.2, 0.0], [-0.2, 0.3, 0.1, 1.0]];
    const p = param(p0, [4]);
    const opt = new optim.SGD([p], { lr: 0.1, momentum: cfg.mom, dampening: cfg.damp, weightDecay: cfg.wd, nesterov: cfg.nesterov });
    for (const g of grads) {
      setGrad(p, g);
      opt.step();
    }
    const ref = sgdRef(p0, grads, { lr: 0.1, mom: cfg.mom, damp: cfg.damp, wd: cfg.wd, nesterov: cfg.nesterov });
    assertClose(p.toArray(), ref, { rtol: 1e-6, atol: 1e-7 });
    opt.dispose();
  });
}

test('optimizer argument errors name the problem', () => {
  const p = param([1, 2], [2]);
  assert.throws(() => new optim.AdamW([]), /empty parameter list/);
  assert.throws(() => new optim.AdamW([p, p]), /more than once/);
  assert.throws(() => new optim.AdamW([{ params: [p] }, { params: [p] }]), /more than once/);
  assert.throws(() => new optim.AdamW([ml.tensor([1, 2], [2], { dtype: 'i32' })]), /is i32; optimizers update f32/);
  assert.throws(() => new optim.AdamW([p], { betas: [0.9, 1] }), /betas\[1\] must be a finite number in \[0, 1\)/);
  assert.throws(() => new optim.AdamW([p], { lr: -1 }), /lr must be/);
  assert.throws(() => new optim.AdamW([p], { lr: NaN }), /lr must be/);
  assert.throws(() => new optim.SGD([p], { lr: 0.1, nesterov: true }), /Nesterov momentum needs momentum > 0/);
  assert.throws(() => new optim.SGD([p], {} as optim.SGDOptions), /lr is required/);
  assert.throws(() => new optim.AdamW(null as unknown as ml.Tensor[]), /params must be/);
  const q = param([1, 2], [2]);
  const opt = new optim.AdamW([q]);
  q.grad = ml.tensor([1, 2, 3], [3]).keep();
  assert.throws(() => opt.step(), /has a gradient \[3\] f32; expected f32 of the same shape/);
});

test('zeroGrad frees gradients; state tensors survive tidy(); a step makes no tensors', () => {
  const w = param([1, 2, 3, 4], [2, 2]);
  const opt = new optim.AdamW([w], { lr: 0.1 });
  ml.tidy(() => {
    setGrad(w, [1, 1, 1, 1]);
    opt.step();  // creates the moments inside a tidy scope
  });
  const st = opt.stateDict().state[0];
  assert.ok(!(st.expAvg as ml.Tensor).isDisposed && !(st.expAvgSq as ml.Tensor).isDisposed, 'moments survive tidy');
  assertClose((st.expAvg as ml.Tensor).toArray(), [0.1, 0.1, 0.1, 0.1]);
  const before = ml.memory();
  for (let i = 0; i < 10; i++) opt.step();
  const after = ml.memory();
  assert.equal(after.numTensors, before.numTensors);
  assert.equal(after.numBytes, before.numBytes);
  opt.zeroGrad();
  assert.equal(w.grad, null);
  opt.dispose();
  assert.ok((st.expAvg as ml.Tensor).isDisposed, 'dispose() frees the state');
});

test('clipGradNorm returns the total norm and scales gradients to maxNorm', () => {
  const a = param([0, 0, 0], [3]);
  const b = param([0, 0], [1, 2]);
  const none = param([0], [1]);  // no gradient: ignored
  setGrad(a, [3, 0, 0]);
  setGrad(b, [0, 4]);
  const total = optim.clipGradNorm([a, b, none], 1);
  assertClose([total], [5], { rtol: 1e-12 });
  const coef = 1 / (5 + 1e-6);
  assertClose(a.grad!.toArray(), [3 * coef, 0, 0]);
  assertClose(b.grad!.toArray(), [0, 4 * coef]);
  // Under the limit: untouched.
  setGrad(a, [0.3, 0, 0]);
  setGrad(b, [0, 0.4]);
  assertClose([optim.clipGradNorm([a, b], 1)], [0.5], { rtol: 1e-7 });
  assert.deepEqual(Array.from(a.grad!.toArray()), [Math.fround(0.3), 0, 0]);
  // A non-finite norm is returned and the gradients are left alone (or an error, on request).
  setGrad(a, [NaN, 1, 1]);
  assert.ok(Number.isNaN(optim.clipGradNorm([a, b], 1)));
  assert.equal(a.grad!.toArray()[1], 1);
  assert.throws(() => optim.clipGradNorm([a, b], 1, { errorIfNonfinite: true }), /total gradient norm is NaN/);
  assert.throws(() => optim.clipGradNorm([a], -1), /maxNorm/);
  assert.equal(optim.clipGradNorm([none], 1), 0);
});

test('cosineWithWarmup: warmup, cosine, floor', () => {
  const f = optim.cosineWithWarmup({ warmupSteps: 4, totalSteps: 14, minLrRatio: 0.1 });
  const expected = [0.2, 0.4, 0.6, 0.8];
  for (let s = 4; s <= 14; s++) expected.push(0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * (s - 4) / 10)));
  expected.push(0.1, 0.1);
  const got = expected.map((_, s) => f(s));
  assertClose(got, expected, { rtol: 1e-12 });
  assert.equal(f(4), 1, 'the peak is exactly at warmupSteps');
  assert.equal(f(14), 0.1);
  const g = optim.cosineWithWarmup({ totalSteps: 10 });
  assert.equal(g(0), 1);
  assertClose([g(5)], [0.5], { rtol: 1e-12 });
  assert.equal(g(10), 0);
  assert.throws(() => optim.cosineWithWarmup({ warmupSteps: 10, totalSteps: 5 }), /below warmupSteps/);
  assert.throws(() => optim.cosineWithWarmup({ totalSteps: 10, minLrRatio: 2 }), /minLrRatio/);
  assert.throws(() => f(-1), /non-negative/);
});

test('LRScheduler applies the factor to each group\'s base lr and resumes without compounding', () => {
  const a = param([1], [1]);
  const b = param([1], [1]);
  const opt = new optim.SGD([{ params: [a] }, { params: [b], lr: 0.5 }], { lr: 1 });
  const sched = new optim.LRScheduler(opt, optim.cosineWithWarmup({ warmupSteps: 1, totalSteps: 3 }));
  assert.deepEqual(sched.getLastLr(), [0.5, 0.25]);  // step 0: factor 1/2
  sched.step();
  assert.deepEqual(sched.getLastLr(), [1, 0.5]);
  sched.step();
  assertClose(sched.getLastLr(), [0.5, 0.25], { rtol: 1e-12 });
  const sd = sched.stateDict();
  const sched2 = new optim.LRScheduler(opt, optim.cosineWithWarmup({ warmupSteps: 1, totalSteps: 3 }));
  assert.deepEqual(sched2.baseLrs, [1, 0.5], 'base lrs come from initialLr, not the scheduled lr');
  sched2.loadStateDict(sd);
  assertClose(sched2.getLastLr(), [0.5, 0.25], { rtol: 1e-12 });
  assert.throws(() => new optim.LRScheduler(opt, () => NaN), /gave NaN at step 0/);
});

test('exact resume: AdamW state through stateDict -> safetensors file -> loadStateDict continues bit for bit', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-optim-'));
  try {
    const init = { w: [0.5, -1, 2, 0.25, 1.5, -0.5], b: [0.1, -0.2, 0.3] };
    const mk = () => [param(init.w, [2, 3]), param(init.b, [3])];
    const gradsAt = (k: number) => [init.w.map((x, i) => Math.sin(k + i) * x), init.b.map((x, i) => Math.cos(k * i) + x)];
    const run = (ps: ml.Tensor[], opt: optim.AdamW, from: number, to: number) => {
      for (let k = from; k < to; k++) {
        const g = gradsAt(k);
        ps.forEach((p, i) => setGrad(p, g[i]));
        opt.step();
      }
    };
    const groups = (ps: ml.Tensor[]) => [{ params: [ps[0]] }, { params: [ps[1]], lr: 0.02 }];
    // Reference: 5 uninterrupted steps.
    const ref = mk();
    const optRef = new optim.AdamW(groups(ref), { lr: 0.01, weightDecay: 0.1 });
    run(ref, optRef, 0, 5);
    // Interrupted: 3 steps, checkpoint model and optimizer to one file, resume in fresh objects, 2 more steps.
    const a = mk();
    const optA = new optim.AdamW(groups(a), { lr: 0.01, weightDecay: 0.1 });
    run(a, optA, 0, 3);
    const file = path.join(dir, 'ckpt.safetensors');
    const flat = optim.toSafetensors(optA.stateDict());
    save(file, { w: a[0], b: a[1], ...flat.tensors }, flat.metadata);
    const loaded = load(file);
    // Copy the weights in (as Module.loadStateDict would) and the optimizer state.
    const wArr = loaded.tensors.w.toArray(), bArr = loaded.tensors.b.toArray();
    const bw = param(Array.from(wArr), [2, 3]), bb = param(Array.from(bArr), [3]);
    const optB = new optim.AdamW(groups([bw, bb]), { lr: 0.5 /* replaced by the loaded groups */ });
    optB.loadStateDict(optim.fromSafetensors(loaded));
    for (const t of Object.values(loaded.tensors)) t.dispose();  // the optimizer copied what it needs
    assert.deepEqual(optB.getLr(), [0.01, 0.02]);
    run([bw, bb], optB, 3, 5);
    assert.deepEqual(Array.from(bw.toArray()), Array.from(ref[0].toArray()), 'weights bit for bit');
    assert.deepEqual(Array.from(bb.toArray()), Array.from(ref[1].toArray()), 'biases bit for bit');
    assert.equal(optB.stateDict().state[0].step, 5);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('loadStateDict checks everything first and changes nothing on error', () => {
  const p = param([1, 2, 3, 4], [2, 2]);
  const opt = new optim.AdamW([p]);
  setGrad(p, [1, 1, 1, 1]);
  opt.step();
  const sd = opt.stateDict();
  const q = param([1, 2, 3], [3]);
  const other = new optim.AdamW([q]);
  assert.throws(() => other.loadStateDict(sd), /state 0\.expAvg is \[2, 2\] f32, the parameter \[3\] f32/);
  assert.equal(other.stateDict().state[0], undefined);
  assert.throws(() => opt.loadStateDict({ state: {}, paramGroups: [] }), /has 0 parameter groups, this optimizer 1/);
  const bad = { ...sd, paramGroups: [{ ...sd.paramGroups[0], lr: -1 }] };
  assert.throws(() => opt.loadStateDict(bad), /lr must be/);
  assert.equal(opt.getLr()[0], 1e-3);
});
