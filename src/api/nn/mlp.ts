/**
 * nn.MLP: Linear layers with an activation (and optional dropout) between them, plus the activation modules.
 *
 * ```ts
 * const mlp = new ml.nn.MLP([2, 64, 64, 2], { activation: 'gelu', dropout: 0.1 });
 * mlp.forward(ml.randn([8, 2])).shape;   // [8, 2]; parameters 'layers.0.weight', ..., 'layers.2.bias'
 * ```
 */
import { Tensor } from '../tensor';
import { gelu, relu, silu } from '../ops/elementwise';
import { checkNumber, checkTensor } from '../ops/util';
import { Dropout } from './dropout';
import { Linear } from './linear';
import { Module, ModuleList } from './module';

export type Activation = 'gelu' | 'gelu_tanh' | 'relu' | 'silu';
const ACTIVATIONS: readonly Activation[] = ['gelu', 'gelu_tanh', 'relu', 'silu'];

/** Apply an activation by name ('gelu' is the exact erf form, torch's default; 'gelu_tanh' the approximation). */
export function activate(x: Tensor, activation: Activation): Tensor<'f32'> {
  switch (checkActivation('activate', activation)) {
    case 'gelu': return gelu(x);
    case 'gelu_tanh': return gelu(x, { approximate: 'tanh' });
    case 'relu': return relu(x);
    case 'silu': return silu(x);
  }
}

export function checkActivation(op: string, a: unknown): Activation {
  if (!(ACTIVATIONS as readonly unknown[]).includes(a)) {
    throw new TypeError(`${op}: activation must be one of ${ACTIVATIONS.map((s) => `'${s}'`).join(', ')}, got ${typeof a === 'string' ? `'${a}'` : typeof a}`);
  }
  return a as Activation;
}

export class GELU extends Module {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') { super(); }
  forward(x: Tensor): Tensor<'f32'> { return gelu(x, { approximate: this.approximate }); }
  override extraRepr(): string { return this.approximate === 'tanh' ? "approximate='tanh'" : ''; }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor<'f32'> { return relu(x); }
}

export class SiLU extends Module {
  forward(x: Tensor): Tensor<'f32'> { return silu(x); }
}

export interface MLPOptions {
  /** Between layers, not after the last. Default 'gelu'. */
  activation?: Activation;
  /** Dropout probability after each hidden activation. Default 0. */
  dropout?: number;
  /** Biases in every Linear. Default true. */
  bias?: boolean;
}

export class MLP extends Module {
  /** layers.at(i) maps dims[i] -> dims[i + 1]. */
  layers: ModuleList<Linear>;
  drop: Dropout;
  readonly activation: Activation;

  /** dims = [in, hidden..., out], at least two entries. */
  constructor(readonly dims: readonly number[], opts: MLPOptions = {}) {
    super();
    if (!Array.isArray(dims) || dims.length < 2) {
      throw new Error(`MLP: dims must list at least an input and an output size, got ${JSON.stringify(dims)}`);
    }
    dims.forEach((d, i) => checkNumber('MLP', `dims[${i}]`, d, { integer: true, min: 1 }));
    this.dims = dims.slice();
    this.activation = checkActivation('MLP', opts.activation ?? 'gelu');
    const layers: Linear[] = [];
    for (let i = 0; i + 1 < dims.length; i++) layers.push(new Linear(dims[i], dims[i + 1], { bias: opts.bias ?? true }));
    this.layers = this.registerModule('layers', new ModuleList(layers));
    this.drop = this.registerModule('drop', new Dropout(opts.dropout ?? 0));
  }

  /** x [..., dims[0]] -> [..., dims.at(-1)] */
  forward(x: Tensor): Tensor<'f32'> {
    checkTensor('MLP', 'x', x);
    let h: Tensor = x;
    const n = this.layers.length;
    for (let i = 0; i < n; i++) {
      const y = this.layers.at(i).forward(h);
      if (h !== x) h.dispose();
      h = y;
      if (i + 1 < n) {
        const a = activate(h, this.activation);
        h.dispose();
        h = a;
        const d = this.drop.forward(h);
        if (d !== h) h.dispose();
        h = d;
      }
    }
    return h as Tensor<'f32'>;
  }

  override extraRepr(): string {
    return `dims=[${this.dims.join(', ')}], activation='${this.activation}'`;
  }
}
