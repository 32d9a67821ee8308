/** Stage 3, `instruct`: LoRA instruction tuning on the caption model, images spliced in place. See docs/instruct.md. */
export { INSTRUCT_DEFAULTS, INSTRUCT_PRESETS, resolveInstructConfig, validateInstructConfig } from './config';
export type { InstructConfig, InstructTaskName } from './config';
export { trainInstruct, buildInstructModel, captionExtra, evaluateInstruct, answerExamples, instructMetrics, loadInstruct, exportMerged } from './train';
export type { TrainInstructOptions, InstructResult, InstructStepInfo, InstructSample, InstructExtra, LoadedInstruct } from './train';
export { prepareInstructData, encodeExample, buildRows, taskCounts, alignTransform, userContent, instructBatchRows } from './data';
export type { InstructData, InstructExample, RowSet } from './data';
export { InstructModel, ImagePositions, addImagePositions, imageLength } from './model';
export type { AnswerOptions, SpliceRow } from './model';
