/** Stage 1, `align`: contrastive image-text training. See docs/align.md. */
export { ALIGN_DEFAULTS, ALIGN_PRESETS, ARCHS, resolveAlignConfig, validateAlignConfig } from './config';
export type { AlignConfig, Arch } from './config';
export { trainAlign, resolveResume } from './train';
export type { TrainAlignOptions, AlignResult, StepInfo } from './train';
export { prepareAlignData, buildSplit, alignPairs, addCaptionNoise, makeBatchStream } from './data';
export type { AlignData, SplitData, Batch, BatchStream, PrepareOptions } from './data';
export { AlignModel, buildAlignModel, evaluateRetrieval } from './model';
export { loadScorer, scorePairs, cleanPairs, noiseReport } from './filter';
export type { Scorer, CleanOptions } from './filter';
