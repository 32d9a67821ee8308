/**
 * CrossAttentionBlock: queries from one sequence attend to another (fusion layers, the masked-text decoder).
 */
import * as ml from '../../index';

/** Pre-norm cross-attention block: h = x + attn(lnQ(x), context = lnKV(ctx)); out = h + mlp(ln2(h)). */
export class CrossAttentionBlock extends ml.nn.Module {
  lnQ: ml.nn.LayerNorm;
  lnKV: ml.nn.LayerNorm;
  attn: ml.nn.MultiheadAttention;
  ln2: ml.nn.LayerNorm;
  mlp: ml.nn.MLP;
  drop: ml.nn.Dropout;

  constructor(readonly dim: number, heads: number, mlpRatio = 4, dropout = 0) {
    super();
    this.lnQ = this.registerModule('lnQ', new ml.nn.LayerNorm(dim));
    this.lnKV = this.registerModule('lnKV', new ml.nn.LayerNorm(dim));
    this.attn = this.registerModule('attn', new ml.nn.MultiheadAttention(dim, heads, { dropout }));
    this.ln2 = this.registerModule('ln2', new ml.nn.LayerNorm(dim));
    this.mlp = this.registerModule('mlp', new ml.nn.MLP([dim, Math.max(1, Math.round(dim * mlpRatio)), dim], { dropout }));
    this.drop = this.registerModule('drop', new ml.nn.Dropout(dropout));
  }

  /** x [B, N, dim] queries, context [B, M, dim] -> [B, N, dim] */
  forward(x: ml.Tensor, context: ml.Tensor): ml.Tensor<'f32'> {
    return ml.tidy(() => {
      const a = this.attn.forward(this.lnQ.forward(x), { context: this.lnKV.forward(context) });
      const h = ml.add(x, this.drop.forward(a));
      return ml.add(h, this.drop.forward(this.mlp.forward(this.ln2.forward(h))));
    });
  }
}
