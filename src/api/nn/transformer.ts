/**
 * nn.TransformerBlock: the pre-norm block of GPT-2 and ViT,
 *   h = x + drop(attn(ln1(x)));  out = h + drop(mlp(ln2(h)))
 * which is torch.nn.TransformerEncoderLayer with norm_first=True (dropout on the attention weights, after the
 * MLP's hidden activation, and on each residual branch).
 *
 * ```ts
 * const block = new ml.nn.TransformerBlock(64, 4, { causal: true });
 * block.forward(ml.randn([2, 10, 64])).shape;   // [2, 10, 64]
 * ```
 */
import { Tensor, shapeStr } from '../tensor';
import { add } from '../ops/elementwise';
import { checkNumber, checkTensor } from '../ops/util';
import { MultiheadAttention } from './attention';
import { Dropout } from './dropout';
import { LayerNorm } from './layernorm';
import { Activation, MLP, checkActivation } from './mlp';
import { Module } from './module';

export interface TransformerBlockOptions {
  /** MLP hidden size = round(dim * mlpRatio). Default 4. */
  mlpRatio?: number;
  /** Dropout probability (attention weights, MLP hidden, residual branches). Default 0. */
  dropout?: number;
  /** Causal self-attention by default (a forward call may override). Default false. */
  causal?: boolean;
  /** Default 'gelu'. */
  activation?: Activation;
  /** Biases in the linear layers. Default true. */
  bias?: boolean;
  /** LayerNorm eps. Default 1e-5. */
  eps?: number;
}

export interface TransformerBlockForward {
  /** [B, N], nonzero marks padding keys to ignore. */
  keyPaddingMask?: Tensor | null;
  /** Overrides the block's `causal` for this call. */
  causal?: boolean;
}

export class TransformerBlock extends Module {
  ln1: LayerNorm;
  attn: MultiheadAttention;
  ln2: LayerNorm;
  mlp: MLP;
  drop: Dropout;
  readonly causal: boolean;

  constructor(readonly dim: number, readonly numHeads: number, opts: TransformerBlockOptions = {}) {
    super();
    checkNumber('TransformerBlock', 'dim', dim, { integer: true, min: 1 });
    const ratio = checkNumber('TransformerBlock', 'mlpRatio', opts.mlpRatio ?? 4, { min: 0 });
    const hidden = Math.max(1, Math.round(dim * ratio));
    const p = checkNumber('TransformerBlock', 'dropout', opts.dropout ?? 0, { min: 0, max: 1 });
    const bias = opts.bias ?? true;
    const activation = checkActivation('TransformerBlock', opts.activation ?? 'gelu');
    this.causal = opts.causal ?? false;
    this.ln1 = this.registerModule('ln1', new LayerNorm(dim, { eps: opts.eps }));
    this.attn = this.registerModule('attn', new MultiheadAttention(dim, numHeads, { bias, dropout: p }));
    this.ln2 = this.registerModule('ln2', new LayerNorm(dim, { eps: opts.eps }));
    this.mlp = this.registerModule('mlp', new MLP([dim, hidden, dim], { activation, dropout: p, bias }));
    this.drop = this.registerModule('drop', new Dropout(p));
  }

  /** x [B, N, dim] -> [B, N, dim] */
  forward(x: Tensor, opts: TransformerBlockForward = {}): Tensor<'f32'> {
    checkTensor('TransformerBlock', 'x', x);
    if (x.ndim !== 3 || x.shape[2] !== this.dim) {
      throw new Error(`TransformerBlock(${this.dim}, ${this.numHeads}): x ${shapeStr(x.shape)} must be [B, N, ${this.dim}]`);
    }
    const h = this.residual(x, (t) => this.attn.forward(t, {
      causal: opts.causal ?? this.causal, keyPaddingMask: opts.keyPaddingMask,
    }), this.ln1);
    const out = this.residual(h, (t) => this.mlp.forward(t), this.ln2);
    h.dispose();
    return out;
  }

  /** x + drop(f(norm(x))) */
  private residual(x: Tensor, f: (t: Tensor) => Tensor, norm: LayerNorm): Tensor<'f32'> {
    const n = norm.forward(x);
    const y = f(n);
    n.dispose();
    const d = this.drop.forward(y);
    if (d !== y) y.dispose();
    const out = add(x, d);
    d.dispose();
    return out;
  }

  override extraRepr(): string {
    return this.causal ? 'causal=true' : '';
  }
}
