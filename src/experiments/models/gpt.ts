/**
 * GPT: a decoder-only language model (GPT-2's layout). Token + learned position embeddings, pre-norm causal
 * TransformerBlocks on the fused attention, a final LayerNorm, and an LM head tied to the token embedding
 * (logits = h @ tokenEmbed.weight^T, one matrix for both ends, as GPT-2 and nanoGPT do).
 *
 * ```ts
 * const gpt = new GPT({ vocabSize: 1024, contextLength: 64, width: 128, layers: 4, heads: 4 });
 * const tokens = ml.tensor(new Int32Array(2 * 16), [2, 16], { dtype: 'i32' });
 * gpt.forward(tokens).shape;                          // [2, 16, 1024]
 * gpt.loss(tokens, { lengths: ml.tensor([16, 9], [2], { dtype: 'i32' })}).item();   // next-token CE
 * gpt.forwardEmbeds(imagePrefix, tokens).shape;       // [2, P + 16, 1024]: a prefix of embeddings first
 * ```
 *
 * Parameter names (stable, they go into checkpoints): tokenEmbed.weight [V, W], posEmbed [T, W],
 * blocks.<i>.{ln1, attn.qkv, attn.proj, ln2, mlp.layers.0, mlp.layers.1}.*, lnFinal.*. There is no separate
 * head weight: tying removes V x W parameters and, at small scale, usually helps.
 *
 * The KV-cache path (`prefill` / `decode`, used by generate.ts) runs the same modules as `forward` (each block's
 * ln1, attn.qkv, attn.proj, ln2 and mlp through their own `forward`), so a module swapped in place (a LoRA-wrapped
 * Linear) is used by both paths.
 */
import * as ml from '../../index';
import { normalParam, reinit, runBlocks } from './common';

export interface GPTConfig {
  vocabSize: number;
  /** Longest sequence (prefix + tokens) the model sees: the number of learned positions. */
  contextLength: number;
  width: number;
  layers: number;
  heads: number;
  /** MLP hidden size = round(width * mlpRatio). */
  mlpRatio: number;
  /** Dropout on attention weights, MLP hidden and residual branches (train mode only). */
  dropout: number;
  /** Recompute each block in backward instead of storing its activations. */
  checkpointing: boolean;
}

export const DEFAULT_GPT_CONFIG: Omit<GPTConfig, 'vocabSize'> = {
  contextLength: 128,
  width: 128,
  layers: 4,
  heads: 4,
  mlpRatio: 4,
  dropout: 0,
  checkpointing: false,
};

/** Defaults filled in, every value checked; errors name the key. vocabSize has no default. */
export function resolveGPTConfig(c: Partial<GPTConfig> & { vocabSize: number }): GPTConfig {
  if (c === null || typeof c !== 'object') throw new Error(`GPT config must be an object, got ${c === null ? 'null' : typeof c}`);
  const known = new Set(['vocabSize', ...Object.keys(DEFAULT_GPT_CONFIG)]);
  for (const k of Object.keys(c)) if (!known.has(k)) throw new Error(`GPT config: unknown key ${k} (known: ${[...known].join(', ')})`);
  const out = { ...DEFAULT_GPT_CONFIG, ...c } as GPTConfig;
  const int = (key: keyof GPTConfig, min: number, max: number): void => {
    const v = out[key] as number;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new Error(`GPT config: key ${key} must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
    }
  };
  int('vocabSize', 2, 1 << 21);
  int('contextLength', 1, 1 << 16);
  int('width', 1, 1 << 14);
  int('layers', 1, 256);
  int('heads', 1, 256);
  if (out.width % out.heads !== 0) throw new Error(`GPT config: key heads (${out.heads}) must divide key width (${out.width})`);
  if (typeof out.mlpRatio !== 'number' || !(out.mlpRatio > 0 && out.mlpRatio <= 64)) {
    throw new Error(`GPT config: key mlpRatio must be in (0, 64], got ${JSON.stringify(out.mlpRatio)}`);
  }
  if (typeof out.dropout !== 'number' || !(out.dropout >= 0 && out.dropout < 1)) {
    throw new Error(`GPT config: key dropout must be in [0, 1), got ${JSON.stringify(out.dropout)}`);
  }
  if (typeof out.checkpointing !== 'boolean') throw new Error(`GPT config: key checkpointing must be a boolean, got ${JSON.stringify(out.checkpointing)}`);
  return out;
}

export interface GPTLossOptions {
  /**
   * Row b holds lengths[b] real tokens; positions t < lengths[b] - 1 predict tokens[b, t + 1], the rest count
   * for nothing. Without lengths or targets every position but the last predicts the next token.
   */
  lengths?: ml.Tensor | null;
  /** i32 [B, T]: what each token position predicts (already shifted); ignoreIndex marks positions that count for nothing. */
  targets?: ml.Tensor | null;
  /** Default -100 (PyTorch's). */
  ignoreIndex?: number;
  /** [B, P, W] embeddings placed before the tokens (they predict nothing themselves). */
  prefix?: ml.Tensor | null;
  labelSmoothing?: number;
}

/** Per layer, keys and values of every position seen so far: [B, H, t, D] each. */
export interface KVCache {
  keys: ml.Tensor<'f32'>[];
  values: ml.Tensor<'f32'>[];
  /** Positions cached (t). */
  length: number;
  dispose(): void;
}

export class GPT extends ml.nn.Module {
  tokenEmbed: ml.nn.Embedding;
  posEmbed: ml.Tensor<'f32'>;
  blocks: ml.nn.ModuleList<ml.nn.TransformerBlock>;
  lnFinal: ml.nn.LayerNorm;
  readonly config: GPTConfig;

  constructor(config: Partial<GPTConfig> & { vocabSize: number }) {
    super();
    const c = resolveGPTConfig(config);
    this.config = c;
    const { vocabSize: V, contextLength: T, width: W } = c;
    // GPT-2's initialisation: N(0, 0.02^2) for embeddings and every Linear weight, zero biases, and the two
    // projections that write into the residual stream (attn.proj, mlp's last layer) scaled by 1/sqrt(2 layers),
    // so the residual's variance does not grow with depth (Radford et al. 2019, section 2.3).
    this.tokenEmbed = this.registerModule('tokenEmbed', new ml.nn.Embedding(V, W));
    reinit(this.tokenEmbed, 'weight', normalParam([V, W], 0.02));
    this.posEmbed = this.registerParameter('posEmbed', normalParam([T, W], 0.01));
    this.blocks = this.registerModule('blocks', new ml.nn.ModuleList(Array.from({ length: c.layers }, () =>
      new ml.nn.TransformerBlock(W, c.heads, { mlpRatio: c.mlpRatio, dropout: c.dropout, causal: true }))));
    const resid = 0.02 / Math.sqrt(2 * c.layers);
    for (const b of this.blocks) {
      const linears: Array<[ml.nn.Linear, number]> = [[b.attn.qkv, 0.02], [b.attn.proj, resid], [b.mlp.layers.at(0), 0.02], [b.mlp.layers.at(1), resid]];
      for (const [lin, std] of linears) {
        reinit(lin, 'weight', normalParam([...lin.weight.shape], std));
        if (lin.bias) reinit(lin, 'bias', ml.zeros([...lin.bias.shape]));
      }
    }
    this.lnFinal = this.registerModule('lnFinal', new ml.nn.LayerNorm(W));
  }

  get device(): ml.Device {
    return this.tokenEmbed.weight.device;
  }

  /** tokens [B, T] -> logits [B, T, V]. */
  forward(tokens: ml.Tensor): ml.Tensor<'f32'> {
    return this.forwardEmbeds(null, tokens);
  }

  /**
   * prefix [B, P, W] (or null) then tokens [B, T] -> logits [B, P + T, V]. P + T <= contextLength; the prefix
   * takes positions 0..P-1 and the tokens P..P+T-1.
   */
  forwardEmbeds(prefix: ml.Tensor | null, tokens: ml.Tensor): ml.Tensor<'f32'> {
    return ml.tidy(() => this.head(this.hidden(prefix, tokens)));
  }

  /** The hidden states after the final LayerNorm, [B, P + T, W]. */
  hidden(prefix: ml.Tensor | null, tokens: ml.Tensor): ml.Tensor<'f32'> {
    return ml.tidy(() => {
      const x = this.embed(prefix, tokens, 0);
      const h = runBlocks(this.blocks, x, { causal: true, keyPaddingMask: null, checkpointing: this.config.checkpointing });
      return this.lnFinal.forward(h);
    });
  }

  /** h [..., W] -> logits [..., V] = h @ tokenEmbed.weight^T (the tied head). */
  head(h: ml.Tensor): ml.Tensor<'f32'> {
    return ml.matmul(h, this.tokenEmbed.weight, { transB: true });
  }

  /**
   * Mean next-token cross entropy over the token positions (see GPTLossOptions for which count). With a prefix,
   * the prefix positions predict nothing: token position t still predicts token t + 1.
   */
  loss(tokens: ml.Tensor, opts: GPTLossOptions = {}): ml.Tensor<'f32'> {
    const [B, T] = this.checkTokens(tokens, opts.prefix ?? null);
    const ignore = opts.ignoreIndex ?? -100;
    if (opts.lengths && opts.targets) throw new Error('GPT.loss: give lengths or targets, not both');
    let targets: ml.Tensor;
    let ownTargets = false;
    if (opts.targets) {
      const tg = opts.targets;
      if (!(tg instanceof ml.Tensor) || tg.dtype !== 'i32' || tg.ndim !== 2 || tg.shape[0] !== B || tg.shape[1] !== T) {
        throw new Error(`GPT.loss: targets must be an i32 tensor [${B}, ${T}] like tokens, got ` +
          (tg instanceof ml.Tensor ? `${tg.dtype} ${JSON.stringify(tg.shape)}` : typeof tg));
      }
      targets = tg;
    } else {
      targets = ml.tensor(shiftedTargets(tokens, opts.lengths ?? null, B, T, ignore), [B, T], { dtype: 'i32', device: tokens.device });
      ownTargets = true;
    }
    try {
      return ml.tidy(() => {
        let h = this.hidden(opts.prefix ?? null, tokens);
        const P = h.shape[1] - T;
        if (P > 0) h = ml.slice(h, 1, P, P + T);
        const logits = this.head(h);
        return ml.crossEntropy(logits, targets, { ignoreIndex: ignore, labelSmoothing: opts.labelSmoothing ?? 0 });
      });
    } finally {
      if (ownTargets) targets.dispose();
    }
  }

  /** Token embeddings (plus a prefix) plus positions start.., as the first block sees them: [B, P + T, W]. */
  embed(prefix: ml.Tensor | null, tokens: ml.Tensor | null, start: number): ml.Tensor<'f32'> {
    return ml.tidy(() => {
      const parts: ml.Tensor[] = [];
      if (tokens) this.checkTokens(tokens, start === 0 ? prefix : null);
      if (prefix) parts.push(this.checkPrefix(prefix, tokens ? tokens.shape[0] : prefix.shape[0]));
      if (tokens) {
        parts.push(this.tokenEmbed.forward(tokens as ml.Tensor<'i32'>));
      }
      if (parts.length === 0) throw new Error('GPT.embed: nothing to embed (no prefix and no tokens)');
      const x = parts.length === 1 ? parts[0] : ml.concat(parts, 1);
      const L = x.shape[1];
      if (start + L > this.config.contextLength) {
        throw new Error(`GPT: ${start + L} positions (prefix + tokens${start ? `, from position ${start}` : ''}) exceed contextLength ${this.config.contextLength}`);
      }
      const pos = start === 0 && L === this.config.contextLength ? this.posEmbed : ml.slice(this.posEmbed, 0, start, start + L);
      return ml.add(x, pos);
    });
  }

  // ------------------------------------------------------------------------------------------ KV cache

  /** An empty cache (length 0). */
  emptyCache(): KVCache {
    const cache: KVCache = {
      keys: [], values: [], length: 0,
      dispose() {
        for (const t of [...cache.keys, ...cache.values]) t.dispose();
        cache.keys = [];
        cache.values = [];
        cache.length = 0;
      },
    };
    return cache;
  }

  /**
   * Run x [B, L, W] (embeddings with their positions, from `embed`) through the blocks, attending to the cached
   * positions and to x causally, and append x's keys and values to the cache. Returns the final hidden state of
   * x's last position [B, W], after lnFinal. No gradients; dropout is off (call in eval mode).
   *
   * Attention of L new queries against t + L keys is ml.attention with causal = true: its mask is aligned
   * bottom-right (query i sees keys j <= i + t), which is exactly "everything cached, then causal among the new".
   */
  step(x: ml.Tensor, cache: KVCache): ml.Tensor<'f32'> {
    if (x.ndim !== 3 || x.shape[2] !== this.config.width) {
      throw new Error(`GPT.step: x ${JSON.stringify(x.shape)} must be [B, L, ${this.config.width}]`);
    }
    const [B, L] = x.shape;
    if (cache.length > 0 && cache.keys[0].shape[0] !== B) {
      throw new Error(`GPT.step: x has batch ${B} but the cache holds ${cache.keys[0].shape[0]} rows`);
    }
    if (cache.length + L > this.config.contextLength) {
      throw new Error(`GPT.step: ${cache.length + L} positions exceed contextLength ${this.config.contextLength}`);
    }
    const H = this.config.heads, D = this.config.width / H, W = this.config.width;
    return ml.noGrad(() => {
      const out = ml.tidy(() => {
        let h = x as ml.Tensor<'f32'>;
        const keys: ml.Tensor[] = [], values: ml.Tensor[] = [];
        for (let i = 0; i < this.blocks.length; i++) {
          const b = this.blocks.at(i);
          const n1 = b.ln1.forward(h);
          // [B, L, 3W] -> [B, L, 3, H, D] -> [3, B, H, L, D]: rows [0, W) of qkv make q, [W, 2W) k, [2W, 3W) v,
          // the split MultiheadAttention.forward uses.
          const qkv = ml.permute(ml.reshape(b.attn.qkv.forward(n1), [B, L, 3, H, D]), [2, 0, 3, 1, 4]);
          const part = (j: number): ml.Tensor => ml.reshape(ml.slice(qkv, 0, j, j + 1), [B, H, L, D]);
          const q = part(0);
          let k = part(1), v = part(2);
          if (cache.length > 0) {
            k = ml.concat([cache.keys[i], k], 2);
            v = ml.concat([cache.values[i], v], 2);
          }
          keys.push(k);
          values.push(v);
          const o = ml.attention(q, k, v, { causal: true });
          const merged = ml.reshape(ml.permute(o, [0, 2, 1, 3]), [B, L, W]);
          h = ml.add(h, b.attn.proj.forward(merged));
          h = ml.add(h, b.mlp.forward(b.ln2.forward(h)));
        }
        const last = ml.reshape(L === 1 ? h : ml.slice(h, 1, L - 1, L), [B, W]);
        return { last: this.lnFinal.forward(last), keys, values };
      });
      // The cache outlives any tidy scope the caller runs this in (it is disposed by cache.dispose()).
      for (const t of [...out.keys, ...out.values]) t.keep();
      for (const t of [...cache.keys, ...cache.values]) t.dispose();
      cache.keys = out.keys as ml.Tensor<'f32'>[];
      cache.values = out.values as ml.Tensor<'f32'>[];
      cache.length += L;
      return out.last;
    });
  }

  // ------------------------------------------------------------------------------------------ checks

  private checkTokens(tokens: ml.Tensor, prefix: ml.Tensor | null): [number, number] {
    if (!(tokens instanceof ml.Tensor) || tokens.dtype !== 'i32' || tokens.ndim !== 2) {
      throw new Error('GPT: tokens must be an i32 tensor [B, T], got ' +
        (tokens instanceof ml.Tensor ? `${tokens.dtype} ${JSON.stringify(tokens.shape)}` : typeof tokens));
    }
    const [B, T] = tokens.shape;
    const P = prefix ? this.checkPrefix(prefix, B).shape[1] : 0;
    if (P + T > this.config.contextLength) {
      throw new Error(`GPT: tokens [${B}, ${T}]${P ? ` after a prefix of ${P}` : ''}: ${P + T} positions exceed contextLength ${this.config.contextLength}`);
    }
    return [B, T];
  }

  private checkPrefix(prefix: ml.Tensor, B: number): ml.Tensor {
    const W = this.config.width;
    if (!(prefix instanceof ml.Tensor) || prefix.ndim !== 3 || prefix.shape[0] !== B || prefix.shape[2] !== W) {
      throw new Error(`GPT: prefix must be a float tensor [${B}, P, ${W}] (batch of the tokens, model width), got ` +
        (prefix instanceof ml.Tensor ? `${prefix.dtype} ${JSON.stringify(prefix.shape)}` : typeof prefix));
    }
    return prefix;
  }

  override extraRepr(): string {
    const c = this.config;
    return `vocabSize=${c.vocabSize}, contextLength=${c.contextLength}, width=${c.width}, layers=${c.layers}, heads=${c.heads}`;
  }
}

/** Next-token targets [B * T]: position t predicts tokens[t + 1] while t + 1 < length; ignore elsewhere. */
function shiftedTargets(tokens: ml.Tensor, lengths: ml.Tensor | null, B: number, T: number, ignore: number): Int32Array {
  const ids = tokens.toArray() as Int32Array;
  let lens: ArrayLike<number>;
  if (lengths) {
    if (!(lengths instanceof ml.Tensor) || lengths.dtype !== 'i32' || lengths.ndim !== 1 || lengths.shape[0] !== B) {
      throw new Error(`GPT.loss: lengths must be an i32 tensor [${B}] (one per row), got ` +
        (lengths instanceof ml.Tensor ? `${lengths.dtype} ${JSON.stringify(lengths.shape)}` : typeof lengths));
    }
    lens = lengths.toArray() as Int32Array;
    for (let b = 0; b < B; b++) {
      if (lens[b] < 1 || lens[b] > T) throw new Error(`GPT.loss: lengths[${b}] = ${lens[b]} is outside [1, ${T}]`);
    }
  } else {
    lens = new Int32Array(B).fill(T);
  }
  const out = new Int32Array(B * T).fill(ignore);
  for (let b = 0; b < B; b++) for (let t = 0; t + 1 < lens[b]; t++) out[b * T + t] = ids[b * T + t + 1];
  return out;
}
