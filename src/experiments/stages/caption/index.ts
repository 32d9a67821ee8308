/** Stage 2, `caption`: a GPT captions images through a frozen align encoder and a projector. See docs/caption.md. */
export { CAPTION_DEFAULTS, CAPTION_PRESETS, resolveCaptionConfig, validateCaptionConfig } from './config';
export type { CaptionConfig } from './config';
export { trainCaption, evaluateCaptions, findStageCheckpoint, scoreCaptions, priorBaseline, sampleRows } from './train';
export type { TrainCaptionOptions, CaptionResult, CaptionStepInfo, CaptionSample } from './train';
export { prepareCaptionData, captionBatch, pairRefs, pairSource, priorCaptions } from './data';
export { objectMentions, objectScores } from './objects';
export type { ObjectScores } from './objects';
export type { CaptionData } from './data';
export { CaptionModel, CaptionNet, textKl } from './model';
