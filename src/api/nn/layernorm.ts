/**
 * nn.LayerNorm over the last axis (one fused native kernel each way).
 *
 * ```ts
 * const ln = new ml.nn.LayerNorm(32);
 * ln.forward(ml.randn([4, 10, 32])).shape;   // [4, 10, 32]
 * ```
 */
import { noGrad } from '../autograd';
import { ones, zeros } from '../creation';
import { Tensor, shapeStr } from '../tensor';
import { layerNorm } from '../ops/layernorm';
import { checkNumber, checkTensor } from '../ops/util';
import { Module } from './module';

export interface LayerNormOptions {
  /** Default 1e-5 (PyTorch's). */
  eps?: number;
  /** Default true: a learned scale (ones) and shift (zeros). */
  elementwiseAffine?: boolean;
  /** Default true; false keeps the scale but drops the shift (torch >= 2.1's bias=False). */
  bias?: boolean;
}

export class LayerNorm extends Module {
  readonly eps: number;
  /** [C] ones, or null without elementwiseAffine. */
  weight: Tensor<'f32'> | null;
  /** [C] zeros, or null. */
  bias: Tensor<'f32'> | null;

  constructor(readonly normalizedShape: number, opts: LayerNormOptions = {}) {
    super();
    checkNumber('LayerNorm', 'normalizedShape', normalizedShape, { integer: true, min: 1 });
    this.eps = checkNumber('LayerNorm', 'eps', opts.eps ?? 1e-5, { min: 0 });
    const affine = opts.elementwiseAffine ?? true;
    this.weight = this.registerParameter('weight', affine ? noGrad(() => ones([normalizedShape])) : null);
    this.bias = this.registerParameter('bias', affine && (opts.bias ?? true) ? noGrad(() => zeros([normalizedShape])) : null);
  }

  /** x [..., C] -> [..., C] */
  forward(x: Tensor): Tensor<'f32'> {
    checkTensor('LayerNorm', 'x', x);
    const C = this.normalizedShape;
    if (x.ndim === 0 || x.shape[x.ndim - 1] !== C) {
      throw new Error(`LayerNorm(${C}): input ${shapeStr(x.shape)} must end in ${C}`);
    }
    return layerNorm(x, this.weight, this.bias, this.eps);
  }

  override extraRepr(): string {
    return `${this.normalizedShape}, eps=${this.eps}, elementwiseAffine=${this.weight !== null}` +
      (this.weight && !this.bias ? ', bias=false' : '');
  }
}
