/**
 * Stage-1 models: image-text alignment (CLIP and relatives). One entry, createAlignModel(config), builds any of
 * the three architectures; see docs/models.md.
 *
 * ```ts
 * import { createAlignModel } from './experiments/models';
 * const model = createAlignModel({ arch: 'dual', imageSize: 32, patchSize: 4 });
 * const { loss, parts } = model.loss({ images, tokens, lengths });
 * ```
 */
import { AlignModelConfig, resolveAlignConfig } from './config';
import { AlignModel, DualEncoder } from './clip';
import { FusionEncoder } from './fusion';
import { SharedEncoder } from './shared';

export { AlignModelConfig, AlignArch, MaskedObjective, DEFAULT_ALIGN_CONFIG, resolveAlignConfig } from './config';
export { AlignModel, AlignBatch, AlignLoss, Encoded, DualEncoder, INIT_LOGIT_SCALE } from './clip';
export { FusionEncoder, mineHardNegatives } from './fusion';
export { CrossAttentionBlock } from './cross';
export { SharedEncoder } from './shared';
export { VisionTransformer, VisionTransformerOptions, PatchMasking } from './vit';
export { TextTransformer, TextTransformerOptions, TokenMasking } from './text';
export { MaskedImageHead, MaskedTextHead, MaskedHead, maskedMSE } from './masked';
export { patchify, l2normalize } from './common';

/** Build a model from a (partial) config: defaults filled in, every value validated (errors name the key). */
export function createAlignModel(config: Partial<AlignModelConfig> = {}): AlignModel {
  const c = resolveAlignConfig(config);
  switch (c.arch) {
    case 'dual': return new DualEncoder(c);
    case 'shared': return new SharedEncoder(c);
    case 'fusion': return new FusionEncoder(c);
  }
}
export { GPT, GPTConfig, GPTLossOptions, KVCache, DEFAULT_GPT_CONFIG, resolveGPTConfig } from './gpt';
export { generate, GenerateOptions, GenerateResult, SamplingOptions, sampleToken, samplingDistribution, seededRandom, argmaxRow } from './generate';
