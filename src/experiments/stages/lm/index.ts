/** Stage `lm`: pretrain the GPT decoder on the text corpus, with validation perplexity. See docs/lm.md. */
export { LM_DEFAULTS, LM_PRESETS, resolveLmConfig, validateLmConfig } from './config';
export type { LmConfig } from './config';
export { trainLm, evaluateLm, buildLmModel, loadLm } from './train';
export type { TrainLmOptions, LmResult, LmStepInfo } from './train';
export { prepareLmData, packDocuments, batchRows, gatherRows, isValDocument, alignCaptions, lmTokenizer } from './data';
export type { LmData, LmSplit, PrepareLmOptions } from './data';
