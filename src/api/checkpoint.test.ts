/**
 * ml.checkpoint: the same gradients as the plain run (to f32 tolerance) and a lower peak memory for a stack of 4
 * TransformerBlocks; dropout replayed; parameters as the only trainable part; autocast inside; inputs the caller
 * disposes; no leaks; errors.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../index';
import { assertClose } from '../../test/helpers';

// The backward recomputes the segment with gradients on, which needs autograd's enableGrad().

type Blocks = ml.nn.TransformerBlock[];

function makeBlocks(n: number, dim: number, opts: ml.nn.TransformerBlockOptions = {}): Blocks {
  return Array.from({ length: n }, () => new ml.nn.TransformerBlock(dim, 4, { causal: true, ...opts }));
}

/** loss = mean(h^2) after the blocks, each run plainly or checkpointed; the input may be disposed early. */
function forward(blocks: Blocks, x: ml.Tensor, ckpt: boolean): ml.Tensor {
  let h: ml.Tensor = x;
  for (const b of blocks) {
    const next = ckpt ? ml.checkpoint((t: ml.Tensor) => b.forward(t), h) : b.forward(h);
    if (h !== x) h.dispose();   // the checkpoint keeps its own reference to the input
    h = next;
  }
  const loss = h.square().mean();
  h.dispose();
  return loss;
}

function params(blocks: Blocks): ml.Tensor[] {
  return blocks.flatMap((b) => b.parameters());
}

/** Gradients of x and every parameter after one backward, copied out; grads then cleared. */
function gradsOf(blocks: Blocks, x: ml.Tensor, ckpt: boolean, dtype: ml.AutocastDType | null = null): Float32Array[] {
  return ml.tidy(() => {
    ml.manualSeed(99);   // the same dropout masks for both runs
    const loss = ml.autocast(dtype, () => forward(blocks, x, ckpt));
    loss.backward();
    const out = [x, ...params(blocks)].map((t) => t.grad!.toArray());
    for (const t of [x, ...params(blocks)]) { t.grad?.dispose(); t.grad = null; }
    return out;
  });
}

test('checkpoint: a stack of 4 TransformerBlocks gives the plain run\'s gradients with a lower peak memory', () => {
  ml.tidy(() => {
    ml.manualSeed(5);
    const blocks = makeBlocks(4, 64);
    const x = ml.randn([4, 64, 64], { requiresGrad: true });
    const plain = gradsOf(blocks, x, false);
    const ckpt = gradsOf(blocks, x, true);
    assert.equal(ckpt.length, plain.length);
    // The recompute runs the same kernels on the same inputs, so f32 tolerance (in practice: equal).
    ckpt.forEach((g, i) => assertClose(g, plain[i], { what: i === 0 ? 'dx' : `parameter ${i - 1} grad` }));

    // Peak live bytes of one forward + backward above what was live before it.
    const peak = (ckptOn: boolean): number => ml.tidy(() => {
      const base = ml.memory().numBytes;
      ml.resetPeak();
      const loss = forward(blocks, x, ckptOn);
      loss.backward();
      const p = ml.memory().peakBytes - base;
      for (const t of [x, ...params(blocks)]) { t.grad?.dispose(); t.grad = null; }
      return p;
    });
    const plainPeak = peak(false), ckptPeak = peak(true);
    // Plain: every block's activations (attention weights, the 4x MLP hidden, norms) live until backward.
    // Checkpointed: the 4 block inputs, plus one block's activations while it is recomputed.
    assert.ok(ckptPeak < 0.6 * plainPeak, `peak with checkpoint ${ckptPeak} B, without ${plainPeak} B`);
  });
});

test('checkpoint replays dropout, and works when only the parameters inside require grad', () => {
  ml.tidy(() => {
    ml.manualSeed(6);
    const blocks = makeBlocks(2, 32, { dropout: 0.2 });
    const x = ml.randn([2, 8, 32]);   // data: no gradient of its own
    const plain = ml.tidy(() => {
      ml.manualSeed(7);
      forward(blocks, x, false).backward();
      const g = params(blocks).map((p) => p.grad!.toArray());
      for (const b of blocks) b.zeroGrad();
      return g;
    });
    ml.manualSeed(7);
    const loss = forward(blocks, x, true);
    assert.equal(loss.requiresGrad, true, 'the output requires grad through the parameters inside');
    ml.randn([100]);   // draws between forward and backward must not change the recomputed masks
    loss.backward();
    params(blocks).forEach((p, i) => assertClose(p.grad!.toArray(), plain[i], { what: `parameter ${i} grad with dropout` }));
    assert.equal(x.grad, null);
  });
});

test('checkpoint under autocast recomputes in the same dtype; under noGrad it is a plain call', () => {
  ml.tidy(() => {
    ml.manualSeed(8);
    const blocks = makeBlocks(2, 32);
    const x = ml.randn([2, 8, 32], { requiresGrad: true });
    const plain = gradsOf(blocks, x, false, 'bf16');
    const ckpt = gradsOf(blocks, x, true, 'bf16');
    ckpt.forEach((g, i) => assertClose(g, plain[i], { what: `bf16 grad ${i}` }));
    const y = ml.noGrad(() => ml.checkpoint((t: ml.Tensor) => blocks[0].forward(t), x));
    assert.equal(y.requiresGrad, false);
    assert.equal(y._node, null);
  });
});

test('checkpoint leaks nothing: tensors and bytes return to where they were after a step', () => {
  ml.tidy(() => {
    ml.manualSeed(9);
    const blocks = makeBlocks(2, 32);
    const x = ml.randn([2, 8, 32], { requiresGrad: true });
    gradsOf(blocks, x, true);   // warm up caches
    const before = ml.memory();
    gradsOf(blocks, x, true);
    const after = ml.memory();
    assert.equal(after.numTensors, before.numTensors);
    assert.equal(after.numBytes, before.numBytes);
  });
});

test('checkpoint errors name the function and the argument', () => {
  ml.tidy(() => {
    const x = ml.randn([2, 3]);
    assert.throws(() => ml.checkpoint(5 as unknown as () => ml.Tensor), /checkpoint: fn must be a function, got the number 5/);
    assert.throws(() => ml.checkpoint((() => 'x') as unknown as () => ml.Tensor), /checkpoint: fn must return a Tensor, got the string "x"/);
    const d = ml.randn([2]);
    d.dispose();
    assert.throws(() => ml.checkpoint((t: ml.Tensor) => t.mul(2), d), /checkpoint: input 0 \[2\] was used after dispose\(\)/);
    // fn returning its input: nothing to recompute, the input comes back as it is
    assert.equal(ml.checkpoint((t: ml.Tensor) => t, x), x);
  });
});
