/**
 * Mixed precision: a small transformer trained under bf16 autocast follows the f32 loss curve; f16 with GradScaler
 * recovers from a forced overflow (the step is skipped, the scale halves, training goes on); GradScaler's
 * growth, state dict and misuse errors.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../index';

const V = 8, N = 8, B = 16, C = 32;

/** Embedding + learned positions, two causal TransformerBlocks, a Linear head: logits [B, N, V]. */
class Toy extends ml.nn.Module {
  emb: ml.nn.Embedding;
  pos: ml.Tensor;
  blocks: ml.nn.ModuleList<ml.nn.TransformerBlock>;
  head: ml.nn.Linear;
  constructor() {
    super();
    this.emb = this.registerModule('emb', new ml.nn.Embedding(V, C));
    this.pos = this.registerParameter('pos', ml.noGrad(() => ml.randn([N, C]).mul(0.1)));
    this.blocks = this.registerModule('blocks', new ml.nn.ModuleList([
      new ml.nn.TransformerBlock(C, 4, { causal: true }), new ml.nn.TransformerBlock(C, 4, { causal: true })]));
    this.head = this.registerModule('head', new ml.nn.Linear(C, V));
  }

  forward(tokens: ml.Tensor<'i32'>): ml.Tensor {
    let h: ml.Tensor = ml.add(this.emb.forward(tokens), this.pos);
    for (const b of this.blocks) {
      const next = b.forward(h);
      h.dispose();
      h = next;
    }
    const out = this.head.forward(h);
    h.dispose();
    return out;
  }
}

/** The toy task: at every position, predict the previous token (the first position predicts itself). */
function batch(step: number): { tokens: ml.Tensor<'i32'>; targets: ml.Tensor<'i32'> } {
  let s = step * 7919 + 1;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) % V;
  const toks = Int32Array.from({ length: B * N }, next);
  const tgt = Int32Array.from({ length: B * N }, (_, i) => toks[i - (i % N) + Math.max(0, (i % N) - 1)]);
  return { tokens: ml.tensor(toks, [B, N], { dtype: 'i32' }), targets: ml.tensor(tgt, [B * N], { dtype: 'i32' }) };
}

function lossOf(model: Toy, step: number, dtype: ml.AutocastDType | null): ml.Tensor {
  const { tokens, targets } = batch(step);
  return ml.autocast(dtype, () => ml.crossEntropy(model.forward(tokens).reshape([B * N, V]), targets));
}

/** 50 AdamW steps from seed 0; the loss of each step. */
function train(dtype: ml.AutocastDType | null): number[] {
  ml.manualSeed(0);
  const model = new Toy();
  const opt = new ml.optim.AdamW(model.parameters(), { lr: 3e-3 });
  const losses: number[] = [];
  for (let step = 0; step < 50; step++) {
    ml.tidy(() => {
      const loss = lossOf(model, step, dtype);
      losses.push(loss.item());
      loss.backward();
      opt.step();
      opt.zeroGrad();
    });
  }
  for (const p of model.parameters()) assert.equal(p.dtype, 'f32', 'parameters stay f32 (master weights)');
  opt.dispose();
  model.dispose();
  return losses;
}

test('a 2-block transformer trained 50 steps under bf16 autocast follows the f32 loss curve', () => {
  const f32 = train(null);
  const bf16 = train('bf16');
  // The task is learnt: the f32 loss falls from ln 8 = 2.08-ish to a small fraction of it.
  assert.ok(f32[49] < 0.2 * f32[0], `f32 loss fell only from ${f32[0]} to ${f32[49]}`);
  // Tolerance: bf16 keeps 8 significant bits, so every GEMM operand is off by up to 2^-9 (0.2%) relative and the
  // logits by a few tenths of a percent; the two runs then drift apart slowly through 50 AdamW steps (measured: at
  // most ~1% relative on this task). Each step's bf16 loss must be within 3% of the f32 loss, plus 0.005 for
  // the last steps where the loss is near zero: about 3x the measured drift, far below the loss's own fall.
  for (let i = 0; i < 50; i++) {
    const tol = 0.03 * f32[i] + 0.005;
    assert.ok(Math.abs(bf16[i] - f32[i]) <= tol, `step ${i}: bf16 loss ${bf16[i]}, f32 ${f32[i]} (tolerance ${tol})`);
  }
  assert.ok(bf16.some((v, i) => v !== f32[i]), 'the bf16 curve equals the f32 one: did autocast run in f32?');
});

test('f16 + GradScaler: a forced overflow skips that step, halves the scale, and training continues', () => {
  ml.tidy(() => {
    ml.manualSeed(1);
    const model = new Toy();
    const opt = new ml.optim.AdamW(model.parameters(), { lr: 3e-3 });
    const scaler = new ml.GradScaler();
    assert.equal(scaler.getScale(), 2 ** 16);
    const losses: number[] = [];
    const FORCED = 10;
    for (let step = 0; step < 30; step++) {
      ml.tidy(() => {
        const loss = lossOf(model, step, 'f16');
        losses.push(loss.item());
        // The forced overflow: 1e30 times the loss, times the scale, makes every f16 gradient GEMM overflow.
        const toBackprop = step === FORCED ? loss.mul(1e30) : loss;
        scaler.scale(toBackprop).backward();
        const before = step === FORCED ? model.parameters().map((p) => p.toArray()) : null;
        const scaleBefore = scaler.getScale();
        const stepped = scaler.step(opt);
        scaler.update();
        if (step === FORCED) {
          assert.equal(stepped, false, 'the step with inf gradients must be skipped');
          assert.equal(scaler.getScale(), scaleBefore / 2, 'the scale halves after an overflow');
          model.parameters().forEach((p, i) => assert.deepEqual(p.toArray(), before![i], 'a skipped step changes no parameter'));
        } else if (step > FORCED) {
          assert.equal(stepped, true, `step ${step} after the overflow was skipped too`);
          assert.equal(scaler.getScale(), scaleBefore, 'no growth within growthInterval');
        }
        opt.zeroGrad();
      });
    }
    assert.ok(losses.every(Number.isFinite), `non-finite loss: ${losses}`);
    assert.ok(losses[29] < 0.5 * losses[FORCED], `training did not continue after the overflow: ${losses[FORCED]} -> ${losses[29]}`);
    model.dispose();
  });
});

test('GradScaler grows the scale after growthInterval clean steps, and unscales gradients exactly', () => {
  ml.tidy(() => {
    const w = ml.tensor([1, 2, 3], [3], { requiresGrad: true });
    const opt = new ml.optim.SGD([w], { lr: 0.5 });
    const scaler = new ml.GradScaler({ initScale: 8, growthInterval: 3 });
    const scales: number[] = [];
    for (let i = 0; i < 7; i++) {
      scaler.scale(w.mul(ml.tensor([1, -1, 2], [3])).sum()).backward();
      scaler.unscale_(opt);
      assert.deepEqual(Array.from(w.grad!.toArray()), [1, -1, 2], 'unscale_ divides the gradients by the scale');
      assert.equal(scaler.step(opt), true);
      scaler.update();
      scales.push(scaler.getScale());
      opt.zeroGrad();
    }
    assert.deepEqual(scales, [8, 8, 16, 16, 16, 32, 32]);
    // SGD took 7 real steps of lr * grad
    assert.deepEqual(Array.from(w.toArray()), [1 - 3.5, 2 + 3.5, 3 - 7]);
    const sd = scaler.stateDict();
    assert.deepEqual(sd, { scale: 32, growthFactor: 2, backoffFactor: 0.5, growthInterval: 3, growthTracker: 1 });
    const other = new ml.GradScaler({ growthInterval: 3 });
    other.loadStateDict(sd);
    assert.equal(other.getScale(), 32);
    assert.deepEqual(other.stateDict(), sd);
    assert.throws(() => new ml.GradScaler().loadStateDict(sd), /growthInterval is 3 in the state and 2000 in this scaler/);
  });
});

test('GradScaler: NaN gradients are caught too; misuse throws naming the method; disabled passes through', () => {
  ml.tidy(() => {
    const w = ml.tensor([1, 2], [2], { requiresGrad: true });
    const opt = new ml.optim.SGD([w], { lr: 1 });
    const scaler = new ml.GradScaler({ initScale: 4 });
    scaler.scale(w.mul(NaN).sum()).backward();
    assert.equal(scaler.step(opt), false);
    assert.throws(() => scaler.step(opt), /GradScaler.step: already called on this optimizer since the last update\(\)/);
    scaler.update();
    assert.equal(scaler.getScale(), 2);
    assert.deepEqual(Array.from(w.toArray()), [1, 2]);
    assert.throws(() => scaler.update(), /GradScaler.update: no gradients were checked/);
    opt.zeroGrad();
    scaler.scale(w.sum()).backward();
    scaler.unscale_(opt);
    assert.throws(() => scaler.unscale_(opt), /GradScaler.unscale_: already called/);
    scaler.update(1024);
    assert.equal(scaler.getScale(), 1024);
    assert.throws(() => new ml.GradScaler({ initScale: 0 }), /GradScaler: initScale must be a positive finite number/);
    assert.throws(() => new ml.GradScaler({ backoffFactor: 2 }), /backoffFactor must be a number in \(0, 1\)/);
    assert.throws(() => scaler.scale(3 as unknown as ml.Tensor), /GradScaler.scale: loss must be a Tensor/);
    assert.throws(() => scaler.step({} as ml.optim.Optimizer), /GradScaler.step: expected an optimizer/);
    const off = new ml.GradScaler({ enabled: false });
    const l = w.sum();
    assert.equal(off.scale(l), l);
    assert.equal(off.getScale(), 1);
  });
});
