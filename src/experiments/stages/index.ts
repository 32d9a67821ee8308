/** The training stages of the recipe (DESIGN.md): align, lm, caption, instruct, and the pipeline that runs them all. */
export * as align from './align';
export * as lm from './lm';
export * as caption from './caption';
export * as instruct from './instruct';
export { runPipeline, pipelineTable, resolvePipelineConfigs, splitStageOverrides, stageHeadline, PIPELINE_STAGES, PIPELINE_PATCHES } from './pipeline';
export type { PipelineOptions, PipelineResult, PipelineStage, PipelineStepInfo, StageOutcome } from './pipeline';
export { parseOverrides, mergePatches, mergeConfig } from './config';
export { saveCheckpoint, loadCheckpoint, readCheckpointState, loadModelWeights } from './checkpoint';
export type { TrainingState } from './checkpoint';
