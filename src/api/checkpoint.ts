/**
 * ml.checkpoint(fn, ...inputs): gradient checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear
 * Memory Cost"; torch.utils.checkpoint). The forward runs fn without recording a graph, so none of the segment's
 * intermediate activations stay alive; only the inputs are kept. When backward reaches the segment, fn runs again
 * with gradients on, from the same inputs, the same random stream (dropout draws the same mask) and the same
 * autocast dtype, and the gradient is backpropagated through that recomputed graph, which is freed right after.
 * Memory: one segment's activations at a time instead of all of them, for one extra forward.
 *
 * ```ts
 * let h = x;
 * for (const block of blocks) h = ml.checkpoint((t) => block.forward(t), h);   // a stack of TransformerBlocks
 * lossFn(h).backward();   // the blocks' parameters get their gradients, as without checkpointing
 * ```
 *
 * - fn must return one Tensor, and compute the same thing when called again (it may draw random numbers: the
 *   stream is replayed). Non-tensor inputs are passed through unchanged.
 * - Parameters used inside fn get their gradients accumulated into `.grad` when the segment's backward runs.
 *   Since they are invisible from outside until then, the output requires grad whenever gradients are on
 *   (PyTorch's non-reentrant variant does the same), even when no input does: a segment whose parameters
 *   are the only trainable part works.
 * - Under noGrad (or with gradients off) it is a plain call of fn.
 */
import { GradNode, enableGrad, isGradEnabled, noGrad, runBackward } from './autograd';
import { autocast, autocastDtype } from './amp';
import { getRngState, setRngState } from './random';
import { tidy } from './scope';
import { Tensor, shapeStr } from './tensor';
import { describe } from './ops/util';

/** Run fn(...inputs) keeping only the inputs; recompute fn in backward (see the top of this file). */
export function checkpoint<A extends unknown[], T extends Tensor>(fn: (...args: A) => T, ...inputs: A): T {
  if (typeof fn !== 'function') throw new TypeError(`checkpoint: fn must be a function, got ${describe(fn)}`);
  inputs.forEach((x, i) => {
    if (x instanceof Tensor && x.isDisposed) throw new Error(`checkpoint: input ${i} ${shapeStr(x.shape)} was used after dispose()`);
  });
  if (!isGradEnabled()) return fn(...inputs);

  const rng = getRngState();
  const dtype = autocastDtype();
  const out = noGrad(() => tidy(() => fn(...inputs)));
  if (!(out instanceof Tensor)) throw new TypeError(`checkpoint: fn must return a Tensor, got ${describe(out)}`);
  // fn handed back a tensor it did not make (an input, a captured tensor): there is no segment to recompute.
  if (out.requiresGrad || out._node || inputs.includes(out)) return out;

  // The inputs are all the segment keeps: references to their memory, even if the caller disposes them.
  const saved = inputs.map((x) => (x instanceof Tensor ? x.retainForBackward() : x)) as A;
  const graphInputs = inputs.map((x) => (x instanceof Tensor ? x : null));
  const backward = (g: Tensor<'f32'>): Array<Tensor<'f32'> | null> => {
    // Fresh leaves over the saved inputs, requiring grad where the originals do: their .grad is the result.
    const leaves = saved.map((x, i) => {
      if (!(x instanceof Tensor)) return x;
      const leaf = x.detach();
      leaf.requiresGrad = (inputs[i] as Tensor).requiresGrad;
      return leaf;
    }) as A;
    const now = getRngState();
    setRngState(rng);
    let again: Tensor;
    try {
      again = enableGrad(() => autocast(dtype, () => tidy(() => fn(...leaves))));
    } finally {
      setRngState(now);
    }
    try {
      if (!(again instanceof Tensor)) throw new TypeError(`checkpoint: fn returned ${describe(again)} when recomputed`);
      if (again.shape.length !== out.shape.length || again.shape.some((d, i) => d !== out.shape[i])) {
        throw new Error(`checkpoint: fn returned ${shapeStr(again.shape)} when recomputed and ${shapeStr(out.shape)} ` +
          'the first time (it must compute the same thing)');
      }
      // Parameters used inside fn accumulate their gradients here, as in a plain backward.
      if (again.requiresGrad) runBackward(again, g, false);
    } finally {
      if (again instanceof Tensor && !(leaves as unknown[]).includes(again)) again.dispose();
    }
    return leaves.map((leaf) => {
      if (!(leaf instanceof Tensor)) return null;
      const grad = leaf.grad;
      leaf.grad = null;
      leaf.dispose();
      return grad;
    });
  };
  // The node is made directly rather than through record(): the output requires grad even when no input does
  // (parameters inside fn may), see the top of this file.
  out.requiresGrad = true;
  out._node = new GradNode('checkpoint', graphInputs, backward, saved.filter((x): x is Tensor => x instanceof Tensor));
  return out;
}
