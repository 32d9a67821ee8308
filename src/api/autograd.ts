/**
 * Reverse-mode autograd: a graph of GradNodes built as ops run, walked once in reverse topological order.
 *
 * Gradients are data: every backward function is written with the same differentiable ops as the forward
 * (micrograd, tinygrad), run under noGrad. Only fused native ops (layerNorm, crossEntropy, softmax, ...) call
 * a native backward kernel. Tensors an op needs for its backward are retained by the node (`save`) and
 * released as soon as the node has run, so a training step holds no memory after `backward()`.
 */
import type { Tensor } from './tensor';

export type BackwardFn = (grad: Tensor<'f32'>) => Array<Tensor<'f32'> | null>;

let gradDepth = 0; // > 0 inside noGrad

export function isGradEnabled(): boolean {
  return gradDepth === 0;
}

/** Run fn with gradient recording off (like torch.no_grad). Tensors made inside require no gradient. */
export function noGrad<T>(fn: () => T): T {
  gradDepth++;
  try {
    return fn();
  } finally {
    gradDepth--;
  }
}

/**
 * Run fn with gradient recording on, also inside noGrad or a backward function (torch.enable_grad).
 * Gradient checkpointing needs it: its backward re-runs the segment with recording on.
 */
export function enableGrad<T>(fn: () => T): T {
  const saved = gradDepth;
  gradDepth = 0;
  try {
    return fn();
  } finally {
    gradDepth = saved;
  }
}

let nextNodeId = 0;

export class GradNode {
  readonly id = nextNodeId++;
  freed = false;
  constructor(
    readonly op: string,
    /** The op's tensor inputs, in the order the backward returns their gradients. */
    readonly inputs: ReadonlyArray<Tensor | null>,
    readonly backwardFn: BackwardFn,
    /** Retained tensors the backward reads; released after the node runs. */
    readonly saved: Tensor[],
  ) {}

  release(): void {
    for (const t of this.saved) t.dispose();
    this.saved.length = 0;
    this.freed = true;
  }
}

/**
 * Record `out = op(inputs)` for autograd when gradients are on and some input requires them.
 * `saved` tensors must come from `t.retainForBackward()`. When no node is recorded they are released here.
 */
export function record<T extends Tensor>(out: T, op: string, inputs: ReadonlyArray<Tensor | null>,
  backwardFn: BackwardFn, saved: Tensor[] = []): T {
  if (isGradEnabled() && inputs.some((t) => t !== null && t.requiresGrad)) {
    out.requiresGrad = true;
    out._node = new GradNode(op, inputs, backwardFn, saved);
  } else {
    for (const t of saved) t.dispose();
  }
  return out;
}

/** Whether an op with these inputs will record a node (so it knows whether to save tensors). */
export function needsGrad(...inputs: Array<Tensor | null | undefined>): boolean {
  return isGradEnabled() && inputs.some((t) => t != null && t.requiresGrad);
}

/** Walk the graph from `root` and accumulate gradients into the leaves' `.grad`. */
export function runBackward(root: Tensor, grad: Tensor<'f32'>, retainGraph: boolean): void {
  const { add } = require('./ops/elementwise') as typeof import('./ops/elementwise');
  if (!root._node) {
    // A leaf: the gradient is the seed itself.
    noGrad(() => accumulateLeaf(root, grad, add));
    return;
  }
  // Topological order by iterative DFS (deep graphs must not overflow the stack).
  const order: GradNode[] = [];
  const seen = new Set<GradNode>();
  const stack: Array<[GradNode, number]> = [[root._node, 0]];
  seen.add(root._node);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [node, i] = top;
    if (i < node.inputs.length) {
      top[1]++;
      const inp = node.inputs[i];
      const child = inp?._node;
      if (child && inp.requiresGrad && !seen.has(child)) {
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(node);
    }
  }
  for (const node of order) {
    if (node.freed) {
      throw new Error(`backward: the graph through '${node.op}' was already freed by an earlier backward(); ` +
        'pass { retainGraph: true } to the first backward() to go through it twice');
    }
  }
  const grads = new Map<GradNode, Tensor<'f32'>>();
  grads.set(root._node, grad.retainForBackward() as Tensor<'f32'>);
  noGrad(() => {
    for (let k = order.length - 1; k >= 0; k--) {
      const node = order[k];
      const g = grads.get(node);
      grads.delete(node);
      if (!g) continue;  // no gradient flowed here (e.g. all paths were non-differentiable)
      const inGrads = node.backwardFn(g);
      g.dispose();
      for (let i = 0; i < node.inputs.length; i++) {
        const inp = node.inputs[i];
        const gi = inGrads[i] ?? null;
        if (!inp || !inp.requiresGrad || !gi) {
          if (gi) gi.dispose();
          continue;
        }
        if (gi.shape.length !== inp.shape.length || gi.shape.some((d, j) => d !== inp.shape[j])) {
          throw new Error(`internal: backward of '${node.op}' gave a gradient of shape [${gi.shape}] ` +
            `for an input of shape [${inp.shape}]`);
        }
        if (inp._node) {
          const prev = grads.get(inp._node);
          if (prev) {
            grads.set(inp._node, add(prev, gi));
            prev.dispose();
            gi.dispose();
          } else {
            grads.set(inp._node, gi);
          }
        } else {
          accumulateLeaf(inp, gi, add);
          gi.dispose();
        }
      }
      if (!retainGraph) node.release();
    }
  });
}

function accumulateLeaf(leaf: Tensor, g: Tensor<'f32'>, add: (a: Tensor, b: Tensor) => Tensor<'f32'>): void {
  const prev = leaf.grad;
  const next = prev ? add(prev, g) : g.clone();
  next.keep();
  leaf.grad = next;
  if (prev) prev.dispose();
}
