/**
 * Small pieces shared by the image and text towers: patchify, L2 normalisation, running a stack of blocks
 * (optionally checkpointed), padding masks and end-of-text pooling from caption lengths.
 */
import * as ml from '../../index';

/** A learned tensor created under noGrad from N(0, std^2) (class tokens, positions, modality embeddings). */
export function normalParam(shape: number[], std: number): ml.Tensor<'f32'> {
  return ml.noGrad(() => ml.mul(ml.randn(shape), std));
}

/**
 * [B, C, H, W] -> [B, (H/p)(W/p), C p p]: patches in row-major order, each flattened channel-first, which is
 * what a stride-p Conv2d(C, W, p) sees (so `patchEmbed.weight.reshape([W, C, p, p])` is that conv's weight).
 */
export function patchify(x: ml.Tensor, channels: number, imageSize: number, patch: number): ml.Tensor<'f32'> {
  if (x.ndim !== 4 || x.shape[1] !== channels || x.shape[2] !== imageSize || x.shape[3] !== imageSize) {
    throw new Error(`patchify: images ${JSON.stringify(x.shape)} must be [B, ${channels}, ${imageSize}, ${imageSize}]`);
  }
  const B = x.shape[0], g = imageSize / patch;
  return ml.tidy(() => x.reshape([B, channels, g, patch, g, patch]).permute([0, 2, 4, 1, 3, 5])
    .reshape([B, g * g, channels * patch * patch])) as ml.Tensor<'f32'>;
}

/** x / ||x|| along the last axis (CLIP's `x / x.norm(dim=-1, keepdim=True)`, no epsilon, as there). */
export function l2normalize(x: ml.Tensor): ml.Tensor<'f32'> {
  return ml.tidy(() => ml.div(x, ml.sqrt(ml.sum(ml.square(x), -1, true))));
}

/** Checked caption lengths (1 <= len <= T) as numbers. */
export function readLengths(lengths: ml.Tensor, B: number, T: number): number[] {
  if (!(lengths instanceof ml.Tensor) || lengths.dtype !== 'i32' || lengths.ndim !== 1 || lengths.shape[0] !== B) {
    throw new Error(`lengths must be an i32 tensor [${B}] (one length per caption), got ` +
      (lengths instanceof ml.Tensor ? `${lengths.dtype} ${JSON.stringify(lengths.shape)}` : typeof lengths));
  }
  const out = Array.from(lengths.toArray() as Int32Array);
  out.forEach((n, i) => {
    if (n < 1 || n > T) throw new Error(`lengths[${i}] = ${n} is outside [1, ${T}] (tokens are [${B}, ${T}], the eos is at length - 1)`);
  });
  return out;
}

/** [B, T] f32, 1 at padding positions (index >= length), or null when no row is padded. */
export function paddingMask(lens: number[], T: number): ml.Tensor<'f32'> | null {
  if (lens.every((n) => n === T)) return null;
  const m = new Float32Array(lens.length * T);
  lens.forEach((n, b) => m.fill(1, b * T + n, (b + 1) * T));
  return ml.tensor(m, [lens.length, T]);
}

/** h [B, T, W] -> [B, W]: row b's hidden state at its end-of-text token (position lengths[b] - 1). */
export function poolAt(h: ml.Tensor, lens: number[]): ml.Tensor<'f32'> {
  const [B, T, W] = h.shape;
  return ml.tidy(() => {
    const idx = ml.tensor(Int32Array.from(lens, (n, b) => b * T + n - 1), [B], { dtype: 'i32' });
    return ml.indexSelect(h.reshape([B * T, W]), 0, idx) as ml.Tensor<'f32'>;
  });
}

/** Run x through blocks in order; with checkpointing, each block is one ml.checkpoint segment. */
export function runBlocks(blocks: ml.nn.ModuleList<ml.nn.TransformerBlock>, x: ml.Tensor, opts: {
  causal: boolean; keyPaddingMask: ml.Tensor | null; checkpointing: boolean;
}): ml.Tensor<'f32'> {
  let h = x as ml.Tensor<'f32'>;
  for (let i = 0; i < blocks.length; i++) {
    const block = blocks.at(i);
    const f = (t: ml.Tensor, m: ml.Tensor | null): ml.Tensor<'f32'> => block.forward(t, { causal: opts.causal, keyPaddingMask: m });
    const next = opts.checkpointing ? ml.checkpoint(f, h, opts.keyPaddingMask) : f(h, opts.keyPaddingMask);
    if (h !== x) h.dispose();
    h = next;
  }
  return h;
}

export function makeBlocks(n: number, width: number, heads: number, mlpRatio: number, dropout: number, causal: boolean): ml.nn.ModuleList<ml.nn.TransformerBlock> {
  return new ml.nn.ModuleList(Array.from({ length: n }, () =>
    new ml.nn.TransformerBlock(width, heads, { mlpRatio, dropout, causal })));
}

/** Replace a module's parameter by a fresh one (a different initialisation), disposing the old. */
export function reinit(m: ml.nn.Module, name: string, t: ml.Tensor<'f32'>): ml.Tensor<'f32'> {
  const old = (m as unknown as Record<string, ml.Tensor>)[name];
  const p = m.registerParameter(name, t);
  if (old && old !== p) old.dispose();
  return p;
}
