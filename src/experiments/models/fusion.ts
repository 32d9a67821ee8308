/**
 * `fusion`: the dual encoder plus K cross-attention layers in which the caption's hidden states (queries) attend
 * to the image's patch tokens (keys and values), and an image-text matching (ITM) head on the fused end-of-text
 * state: a 2-way classifier "is this the caption of this image?" (ALBEF, Li et al. 2021, section 3.2).
 *
 * ITM trains on the B matched pairs and on B hard negatives mined from the contrastive similarities of the batch:
 * for each caption, the most similar image that is not its own (argmax, so it is deterministic). The loss is the
 * mean cross entropy over the 2B pairs, added to InfoNCE as itmWeight * itm.
 *
 * Simplification against ALBEF: a fusion layer has no text self-attention (the text tower already mixed the
 * caption causally) and negatives are mined in one direction only (text -> image).
 */
import * as ml from '../../index';
import { AlignModelConfig } from './config';
import { AlignBatch, DualEncoder, Encoded } from './clip';
import { poolAt, readLengths } from './common';
import { CrossAttentionBlock } from './cross';

/**
 * For each row i of sim [B, B] (sim[i][j] = similarity of caption i and image j), the column j != i with the
 * largest value: the hardest negative image of caption i. Ties go to the lowest j.
 */
export function mineHardNegatives(sim: Float32Array, B: number): number[] {
  if (B < 2) throw new Error(`mineHardNegatives: a batch of ${B} has no negatives (need B >= 2)`);
  const out: number[] = [];
  for (let i = 0; i < B; i++) {
    let best = -1, bestV = -Infinity;
    for (let j = 0; j < B; j++) {
      if (j === i) continue;
      const v = sim[i * B + j];
      if (best < 0 || v > bestV) { best = j; bestV = v; }
    }
    out.push(best);
  }
  return out;
}

export class FusionEncoder extends DualEncoder {
  /** Image tokens (visionWidth) -> textWidth, the width of the fusion layers. */
  fusionContext: ml.nn.Linear;
  fusion: ml.nn.ModuleList<CrossAttentionBlock>;
  itmHead: ml.nn.Linear;
  /** The hard negatives of the last loss() call (image index per caption), for inspection and tests. */
  lastHardNegatives: number[] = [];

  constructor(config: AlignModelConfig) {
    super(config, false);
    const c = config;
    this.fusionContext = this.registerModule('fusionContext', new ml.nn.Linear(c.visionWidth, c.textWidth));
    this.fusion = this.registerModule('fusion', new ml.nn.ModuleList(Array.from({ length: c.fusionLayers }, () =>
      new CrossAttentionBlock(c.textWidth, c.textHeads, c.mlpRatio, c.dropout))));
    this.itmHead = this.registerModule('itmHead', new ml.nn.Linear(c.textWidth, 2));
    this.finish();
  }

  /** ITM logits [n, 2] (class 1 = matched) for captions textHidden [n, T, Wt] against images imageTokens [n, 1 + P, Wv]. */
  itmLogits(textHidden: ml.Tensor, imageTokens: ml.Tensor, lengths: ml.Tensor): ml.Tensor<'f32'> {
    const lens = readLengths(lengths, textHidden.shape[0], textHidden.shape[1]);
    return ml.tidy(() => {
      const ctx = this.fusionContext.forward(imageTokens);
      let h: ml.Tensor = textHidden;
      for (const layer of this.fusion) h = layer.forward(h, ctx);
      return this.itmHead.forward(poolAt(h, lens));
    });
  }

  protected override extraLosses(enc: Encoded, batch: AlignBatch): Array<{ name: string; value: ml.Tensor<'f32'>; weight: number }> {
    const B = enc.imageEmbeds.shape[0];
    const value = ml.tidy(() => {
      // Similarities from the contrastive embeddings, without gradient: they only choose the negatives.
      const sim = ml.noGrad(() => ml.matmul(enc.textEmbeds, enc.imageEmbeds, { transB: true }));
      const neg = mineHardNegatives(sim.toArray() as Float32Array, B);
      this.lastHardNegatives = neg;
      const negIdx = ml.tensor(Int32Array.from(neg), [B], { dtype: 'i32' });
      const images = ml.concat([enc.imageTokens, ml.indexSelect(enc.imageTokens, 0, negIdx)], 0);
      const texts = ml.concat([enc.textHidden, enc.textHidden], 0);
      const lengths = ml.concat([batch.lengths, batch.lengths], 0);
      const labels = ml.tensor(Int32Array.from({ length: 2 * B }, (_, i) => (i < B ? 1 : 0)), [2 * B], { dtype: 'i32' });
      return ml.crossEntropy(this.itmLogits(texts, images, lengths), labels);
    });
    return [{ name: 'itm', value, weight: this.config.itmWeight }];
  }
}
