/**
 * nn.Linear: y = x W^T + b, with PyTorch's layout ([out, in]) and default initialisation.
 *
 * ```ts
 * ml.manualSeed(0);
 * const fc = new ml.nn.Linear(8, 3);
 * fc.forward(ml.randn([4, 10, 8])).shape;   // [4, 10, 3]
 * ```
 */
import { noGrad } from '../autograd';
import { uniform } from '../creation';
import { Tensor, shapeStr } from '../tensor';
import { add } from '../ops/elementwise';
import { matmul } from '../ops/matmul';
import { reshape } from '../ops/layout';
import { checkNumber, checkTensor } from '../ops/util';
import { Module } from './module';

export interface LinearOptions {
  /** Default true. */
  bias?: boolean;
}

export class Linear extends Module {
  /** [outFeatures, inFeatures], like torch.nn.Linear. */
  weight: Tensor<'f32'>;
  /** [outFeatures], or null without bias. */
  bias: Tensor<'f32'> | null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LinearOptions = {}) {
    super();
    checkNumber('Linear', 'inFeatures', inFeatures, { integer: true, min: 0 });
    checkNumber('Linear', 'outFeatures', outFeatures, { integer: true, min: 0 });
    // PyTorch's reset_parameters: kaiming_uniform_(a=sqrt(5)) gives bound = gain * sqrt(3 / fan_in) with
    // gain = sqrt(2 / (1 + 5)), i.e. 1/sqrt(fan_in); the bias uses the same bound. Weight first, then bias,
    // so one seed gives one model.
    const bound = inFeatures > 0 ? 1 / Math.sqrt(inFeatures) : 0;
    this.weight = this.registerParameter('weight', noGrad(() => uniform([outFeatures, inFeatures], -bound, bound)));
    this.bias = this.registerParameter('bias', (opts.bias ?? true) ? noGrad(() => uniform([outFeatures], -bound, bound)) : null);
  }

  /** x [..., inFeatures] -> [..., outFeatures] */
  forward(x: Tensor): Tensor<'f32'> {
    checkTensor('Linear', 'x', x);
    const inF = this.inFeatures;
    if (x.ndim === 0 || x.shape[x.ndim - 1] !== inF) {
      throw new Error(`Linear(${inF}, ${this.outFeatures}): input ${shapeStr(x.shape)} must end in ${inF} (inFeatures)`);
    }
    // One 2-D GEMM over all leading axes: [rows, in] @ [out, in]^T, the transpose by flag, never materialised.
    const lead = x.shape.slice(0, -1);
    const rows = lead.reduce((a, b) => a * b, 1);
    const x2 = x.ndim === 2 ? x : reshape(x, [rows, inF]);
    let y = matmul(x2, this.weight, { transB: true });
    if (x2 !== x) x2.dispose();
    if (this.bias) {
      const yb = add(y, this.bias);
      y.dispose();
      y = yb;
    }
    if (x.ndim === 2) return y;
    const out = reshape(y, [...lead, this.outFeatures]);
    y.dispose();
    return out;
  }

  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, bias=${this.bias !== null}`;
  }
}
