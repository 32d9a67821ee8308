/**
 * The caption stage's model: the align checkpoint's image encoder, frozen (no gradients, eval mode, run under
 * noGrad), an MLP projector (Linear-GELU-Linear) from the vision width to the GPT width, and the GPT, which
 * reads the projected image tokens as a prefix and learns `<bos> caption <eos>` (cross entropy on the caption
 * tokens only; the prefix positions predict nothing).
 *
 * Only `CaptionNet` (projector + GPT) is a trainable module and goes into the stage's checkpoint; the encoder
 * is rebuilt from the align checkpoint recorded in the state.
 */
import * as ml from '../../../index';
import type { AlignModel as AlignNet } from '../../models';
import { GPT } from '../../models/gpt';
import { generate } from '../../models/generate';

/** The trainable part: projector + GPT. */
export class CaptionNet extends ml.nn.Module {
  projector: ml.nn.Sequential;
  gpt: GPT;

  constructor(visionWidth: number, hidden: number, gpt: GPT) {
    super();
    this.projector = this.registerModule('projector', new ml.nn.Sequential(
      new ml.nn.Linear(visionWidth, hidden), new ml.nn.GELU(), new ml.nn.Linear(hidden, gpt.config.width)));
    this.gpt = this.registerModule('gpt', gpt);
  }

  forward(features: ml.Tensor): ml.Tensor<'f32'> {
    return this.project(features);
  }

  /** image features [B, P, Wv] -> prefix [B, P, W]. */
  project(features: ml.Tensor): ml.Tensor<'f32'> {
    return this.projector.forward(features) as ml.Tensor<'f32'>;
  }
}

export class CaptionModel {
  constructor(
    /** The align model; only its image path is used. Frozen. */
    readonly encoder: AlignNet,
    readonly net: CaptionNet,
    readonly imageSize: number,
    readonly prefix: 'tokens' | 'pooled' | 'cls',
  ) {
    encoder.requiresGrad_(false);
    encoder.eval();
  }

  /** Number of prefix positions the image takes. */
  get prefixLength(): number {
    if (this.prefix !== 'tokens') return 1;
    const c = this.encoder.config;
    return 1 + (c.imageSize / c.patchSize) ** 2;
  }

  /** images f32 [B*3*S*S] -> frozen image features [B, P, Wv] (no graph). */
  features(images: Float32Array, B: number): ml.Tensor<'f32'> {
    const S = this.imageSize;
    return ml.noGrad(() => ml.tidy(() => {
      const x = ml.tensor(images, [B, 3, S, S]);
      const tok = this.encoder.imageTokens(x);
      if (this.prefix === 'pooled') return ml.mean(tok, 1, true);
      // The class token: the position the align stage's contrastive loss trains (its embedding is a projection of it).
      if (this.prefix === 'cls') return ml.slice(tok, 1, 0, 1);
      return tok;
    }));
  }

  /** Mean CE over caption tokens of `<bos> caption <eos>` rows after the image prefix. */
  loss(images: Float32Array, tokens: Int32Array, lengths: Int32Array, B: number, T: number): ml.Tensor<'f32'> {
    return ml.tidy(() => {
      const prefix = this.net.project(this.features(images, B));
      const tok = ml.tensor(tokens, [B, T], { dtype: 'i32' });
      const len = ml.tensor(lengths, [B], { dtype: 'i32' });
      return this.net.gpt.loss(tok, { prefix, lengths: len });
    });
  }

  /** Greedy (or sampled) captions of B images, KV-cached; token ids without <bos>/<eos>. */
  caption(images: Float32Array, B: number, bosId: number, eosId: number, opts: { greedy: boolean; temperature: number; maxNewTokens: number; seed: number }): number[][] {
    const gpt = this.net.gpt;
    const was = this.net.training;
    this.net.eval();
    try {
      return ml.noGrad(() => {
        const prefix = ml.tidy(() => this.net.project(this.features(images, B)));
        try {
          const room = gpt.config.contextLength - prefix.shape[1] - 1;
          const out = generate(gpt, Array.from({ length: B }, () => [bosId]), {
            maxNewTokens: Math.max(1, Math.min(opts.maxNewTokens, room)), greedy: opts.greedy,
            temperature: opts.temperature, eosId, seed: opts.seed, prefixEmbeds: prefix,
          });
          return out.tokens;
        } finally {
          prefix.dispose();
        }
      });
    } finally {
      this.net.train(was);
    }
  }

  dispose(): void {
    this.net.dispose();
    this.encoder.dispose();
  }
}

/**
 * KL(p_ref || p_model) per caption position, averaged over the positions that predict a real token, on
 * text-only rows (no image prefix): keeps the captioner's language near the pretrained lm's.
 */
export function textKl(model: GPT, ref: GPT, tokens: Int32Array, lengths: Int32Array, B: number, T: number): ml.Tensor<'f32'> {
  return ml.tidy(() => {
    const tok = ml.tensor(tokens, [B, T], { dtype: 'i32' });
    const refLogp = ml.noGrad(() => ml.logSoftmax(ref.forward(tok), -1));
    const logp = ml.logSoftmax(model.forward(tok), -1);
    const kl = ml.sum(ml.mul(ml.exp(refLogp), ml.sub(refLogp, logp)), -1); // [B, T]
    const mask = new Float32Array(B * T);
    let n = 0;
    for (let b = 0; b < B; b++) for (let t = 0; t < lengths[b] - 1; t++) { mask[b * T + t] = 1; n++; }
    return ml.mul(ml.sum(ml.mul(kl, ml.tensor(mask, [B, T]))), 1 / Math.max(1, n));
  });
}
