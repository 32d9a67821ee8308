/** Sweeps: grids, random search and successive halving over a stage's config, in worker processes. See docs/sweeps.md. */
export { normalizeSpec, loadSweepSpec, expandTrials, sampleParams, specHash, trialName, mulberry32, MAX_TRIALS } from './spec';
export type { SweepSpec, NormalizedSpec, ParamSpec, HalvingSpec, Trial } from './spec';
export { decide, keepCount, targetStep, compareTrials } from './halving';
export type { TrialOutcome, TrialState, Decision } from './halving';
export { runSweep, WorkerPool, trialWorkerPath } from './runner';
export type { RunSweepOptions, SweepSummary, SweepEvent } from './runner';
export { runTrial, trialCheckpoint } from './trial';
export type { TrialJob, TrialResult, TrialContext, TrialExecutor } from './trial';
export { sweepResults, formatResults, sweepFigures } from './results';
export type { SweepResultRow, SweepResults } from './results';
export { findSweep, sweepsNamed, loadTrials } from './store';
export type { SweepRow, TrialRow, SweepStatus } from './store';
