/** The training stages of the recipe (DESIGN.md): align, then caption and instruct (issue 8). */
export * as align from './align';
export * as lm from './lm';
export * as caption from './caption';
export { parseOverrides, mergePatches, mergeConfig } from './config';
export { saveCheckpoint, loadCheckpoint, readCheckpointState, loadModelWeights } from './checkpoint';
export type { TrainingState } from './checkpoint';
