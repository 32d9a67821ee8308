/**
 * AlignModel: the common shape of the stage-1 models (CLIP, Radford et al. 2021), and `dual`, the two-tower one.
 *
 * Every architecture exposes the same four tower hooks (image tokens, image pooling, text hidden states, text
 * pooling); the base class turns them into normalised embeddings, the symmetric InfoNCE loss with a learnable
 * logit scale (init log(1/0.07), clamped at 100 inside ml.infoNCE), the optional masked objective
 * (masked.ts), and whatever extra loss an architecture adds (fusion.ts: image-text matching).
 *
 * ```ts
 * const model = createAlignModel({ arch: 'dual' });
 * const { loss, parts, logitScale } = model.loss({ images, tokens, lengths });
 * loss.backward();   // parts: { infonce, [itm], [masked] } as numbers
 * ```
 */
import * as ml from '../../index';
import { AlignModelConfig } from './config';
import { l2normalize } from './common';
import { MaskedHead, createMaskedHead } from './masked';
import { PatchMasking, VisionTransformer } from './vit';
import { TextTransformer, TokenMasking, checkTokens } from './text';

export interface AlignBatch {
  /** [B, C, H, W] f32 */
  images: ml.Tensor;
  /** [B, T] i32, T <= contextLength */
  tokens: ml.Tensor;
  /** [B] i32: real tokens per caption, the end-of-text token last */
  lengths: ml.Tensor;
  /**
   * Hard negative captions for some rows: tokens [K, T] i32, lengths [K] i32, and rows [K] i32 (the batch row each
   * belongs to). Adds the `hardneg` term (AlignModelConfig.hardNegativeWeight).
   */
  negatives?: { tokens: ml.Tensor; lengths: ml.Tensor; rows: ml.Tensor };
}

export interface AlignLoss {
  /** The scalar to call backward() on: infonce + itmWeight itm + maskedWeight masked. */
  loss: ml.Tensor<'f32'>;
  /** Each term's value (unweighted): infonce, and itm / masked where enabled. */
  parts: Record<string, number>;
  /** exp(logitScale) as used, i.e. clamped at 100 (1 / temperature). */
  logitScale: number;
}

/** What the towers hand to the losses. */
export interface Encoded {
  imageTokens: ml.Tensor<'f32'>;
  textHidden: ml.Tensor<'f32'>;
  /** Normalised [B, E]. */
  imageEmbeds: ml.Tensor<'f32'>;
  textEmbeds: ml.Tensor<'f32'>;
}

export const INIT_LOGIT_SCALE = Math.log(1 / 0.07);

export abstract class AlignModel extends ml.nn.Module {
  /** log(1 / temperature), a parameter (learnableTemperature) or a persistent buffer. Declared, registered in finish(). */
  declare logitScale: ml.Tensor<'f32'>;
  declare masked: MaskedHead | null;

  constructor(readonly config: AlignModelConfig) {
    super();
  }

  /** Subclasses call this last: the logit scale and the masked-objective head come after the towers. */
  protected finish(): void {
    const ls = ml.noGrad(() => ml.tensor(INIT_LOGIT_SCALE, []));
    if (this.config.learnableTemperature) this.registerParameter('logitScale', ls);
    else this.registerBuffer('logitScale', ls);
    this.registerModule('masked', createMaskedHead(this.config));
  }

  // ----------------------------------------------------------------------------------------- tower hooks
  /** images [B, C, H, W] -> tokens [B, 1 + P, visionWidth] (the class token first). */
  abstract imageTokens(images: ml.Tensor, masking?: PatchMasking): ml.Tensor<'f32'>;
  /** The transformer blocks images run through (what adapters on the image path wrap; shared: the one stack). */
  abstract imageBlocks(): ml.nn.ModuleList;
  /** tokens -> [B, E], not normalised. */
  abstract poolImage(imageTokens: ml.Tensor): ml.Tensor<'f32'>;
  /** tokens [B, T] -> hidden states [B, T, textWidth]. */
  abstract textHidden(tokens: ml.Tensor, lengths: ml.Tensor, masking?: TokenMasking): ml.Tensor<'f32'>;
  /** hidden -> [B, E] at each row's end-of-text token, not normalised. */
  abstract poolText(hidden: ml.Tensor, lengths: ml.Tensor): ml.Tensor<'f32'>;

  /** Extra loss terms of the architecture (fusion: itm), given the encoded batch. Default none. */
  protected extraLosses(_enc: Encoded, _batch: AlignBatch): Array<{ name: string; value: ml.Tensor<'f32'>; weight: number }> {
    return [];
  }

  // ----------------------------------------------------------------------------------------- public
  /** images [B, C, H, W] -> L2-normalised embeddings [B, embedDim]. */
  encodeImage(images: ml.Tensor): ml.Tensor<'f32'> {
    return ml.tidy(() => l2normalize(this.poolImage(this.imageTokens(images))));
  }

  /** tokens i32 [B, T], lengths i32 [B] -> L2-normalised embeddings [B, embedDim]. */
  encodeText(tokens: ml.Tensor, lengths: ml.Tensor): ml.Tensor<'f32'> {
    return ml.tidy(() => {
      const t = trimTokens(tokens, lengths, this.config.contextLength);
      return l2normalize(this.poolText(this.textHidden(t, lengths), lengths));
    });
  }

  /** Both towers on a batch: tokens, hidden states and normalised embeddings. */
  encode(batch: AlignBatch): Encoded {
    checkBatch(batch, this.config);
    return ml.tidy(() => {
      batch = { ...batch, tokens: trimTokens(batch.tokens, batch.lengths, this.config.contextLength) };
      const imageTokens = this.imageTokens(batch.images);
      const textHidden = this.textHidden(batch.tokens, batch.lengths);
      return {
        imageTokens, textHidden,
        imageEmbeds: l2normalize(this.poolImage(imageTokens)),
        textEmbeds: l2normalize(this.poolText(textHidden, batch.lengths)),
      };
    });
  }

  /** The training loss of a batch (see AlignLoss). */
  loss(batch: AlignBatch): AlignLoss {
    const parts: Record<string, number> = {};
    const loss = ml.tidy(() => {
      checkBatch(batch, this.config);
      // Positions past the longest caption are padding in every row: drop them (same result, less work).
      batch = { ...batch, tokens: trimTokens(batch.tokens, batch.lengths, this.config.contextLength) };
      const enc = this.encode(batch);
      let total = ml.infoNCE(enc.imageEmbeds, enc.textEmbeds, this.logitScale);
      parts.infonce = total.item();
      const extra = this.extraLosses(enc, batch);
      if (this.masked) extra.push({ name: 'masked', value: this.masked.loss(this, enc, batch), weight: this.config.maskedWeight });
      if (batch.negatives && batch.negatives.rows.shape[0] > 0) extra.push({ name: 'hardneg', value: this.hardNegativeLoss(enc, batch.negatives), weight: this.config.hardNegativeWeight });
      for (const e of extra) {
        parts[e.name] = e.value.item();
        total = ml.add(total, ml.mul(e.value, e.weight));
      }
      return total;
    });
    return { loss, parts, logitScale: Math.min(Math.exp(this.logitScale.item()), 100) };
  }

  /**
   * The hard-negative term (NegCLIP's idea as a two-way choice): for each row with a negative caption, cross
   * entropy of [s cos(image, caption), s cos(image, negative)] against the caption, s the InfoNCE logit scale
   * (exp(logitScale), at most 100). Mean over those rows.
   */
  hardNegativeLoss(enc: Encoded, neg: { tokens: ml.Tensor; lengths: ml.Tensor; rows: ml.Tensor }): ml.Tensor<'f32'> {
    return ml.tidy(() => {
      const t = trimTokens(neg.tokens, neg.lengths, this.config.contextLength);
      const negEmb = l2normalize(this.poolText(this.textHidden(t, neg.lengths), neg.lengths));
      const rows = neg.rows as ml.Tensor<'i32'>;
      const img = ml.indexSelect(enc.imageEmbeds, 0, rows);
      const pos = ml.sum(ml.mul(img, ml.indexSelect(enc.textEmbeds, 0, rows)), 1);
      const bad = ml.sum(ml.mul(img, negEmb), 1);
      const scale = ml.minimum(ml.exp(this.logitScale), 100);
      const logits = ml.mul(ml.stack([pos, bad], 1), scale);
      const K = rows.shape[0];
      return ml.crossEntropy(logits, ml.tensor(new Int32Array(K), [K], { dtype: 'i32' }));
    });
  }

  /** Module.forward: the loss (so `model.call(batch)` trains). */
  forward(batch: AlignBatch): AlignLoss {
    return this.loss(batch);
  }
}

/**
 * tokens [B, T] cut to [B, max(lengths)]: the columns after the longest caption are padding in every row, and
 * neither causal nor padding-masked attention lets a real token see them, so the embeddings do not change.
 */
export function trimTokens(tokens: ml.Tensor, lengths: ml.Tensor, contextLength: number): ml.Tensor {
  const T = tokens.shape[1];
  const lens = checkTokens(tokens, lengths, contextLength);
  const longest = Math.max(...lens);
  return longest < T ? tokens.slice(1, 0, longest) : tokens;
}

export function checkBatch(batch: AlignBatch, c: AlignModelConfig): void {
  if (batch === null || typeof batch !== 'object') throw new TypeError('AlignModel.loss: batch must be { images, tokens, lengths }');
  const { images, tokens, lengths } = batch;
  if (!(images instanceof ml.Tensor) || images.ndim !== 4 || images.shape[1] !== c.channels ||
      images.shape[2] !== c.imageSize || images.shape[3] !== c.imageSize) {
    throw new Error(`batch.images must be [B, ${c.channels}, ${c.imageSize}, ${c.imageSize}], got ` +
      (images instanceof ml.Tensor ? JSON.stringify(images.shape) : typeof images));
  }
  checkTokens(tokens, lengths, c.contextLength);
  if (tokens.shape[0] !== images.shape[0]) {
    throw new Error(`batch: ${images.shape[0]} images but ${tokens.shape[0]} captions (row i of each is a pair)`);
  }
}

/** `dual`: a ViT and a text transformer, each with its own projection; only InfoNCE ties them. */
export class DualEncoder extends AlignModel {
  visual: VisionTransformer;
  text: TextTransformer;

  constructor(config: AlignModelConfig, finish = true) {
    super(config);
    const c = config;
    this.visual = this.registerModule('visual', new VisionTransformer({
      imageSize: c.imageSize, patchSize: c.patchSize, channels: c.channels, width: c.visionWidth, layers: c.visionLayers,
      heads: c.visionHeads, embedDim: c.embedDim, mlpRatio: c.mlpRatio, dropout: c.dropout, checkpointing: c.checkpointing,
    }));
    this.text = this.registerModule('text', new TextTransformer({
      vocabSize: c.vocabSize, contextLength: c.contextLength, width: c.textWidth, layers: c.textLayers, heads: c.textHeads,
      embedDim: c.embedDim, mlpRatio: c.mlpRatio, dropout: c.dropout, causal: true, checkpointing: c.checkpointing,
    }));
    if (finish) this.finish();
  }

  imageTokens(images: ml.Tensor, masking?: PatchMasking): ml.Tensor<'f32'> { return this.visual.forwardTokens(images, masking); }
  imageBlocks(): ml.nn.ModuleList { return this.visual.blocks; }
  poolImage(tokens: ml.Tensor): ml.Tensor<'f32'> { return this.visual.pool(tokens); }
  textHidden(tokens: ml.Tensor, lengths: ml.Tensor, masking?: TokenMasking): ml.Tensor<'f32'> { return this.text.forwardTokens(tokens, lengths, masking); }
  poolText(hidden: ml.Tensor, lengths: ml.Tensor): ml.Tensor<'f32'> { return this.text.pool(hidden, lengths); }
}
