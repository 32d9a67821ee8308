/** ml.optim: AdamW and SGD on fused native kernels, gradient clipping, learning-rate schedules. */
export { Optimizer, toSafetensors, fromSafetensors } from './optimizer';
export type { OptimizerStateDict, ParamGroup, ParamGroupSpec, Params, ParamState, BaseHyper, WeightDecayFilter } from './optimizer';
export { AdamW } from './adamw';
export type { AdamWOptions, AdamWHyper } from './adamw';
export { SGD } from './sgd';
export type { SGDOptions, SGDHyper } from './sgd';
export { clipGradNorm } from './clip';
export type { ClipGradNormOptions } from './clip';
export { cosineWithWarmup, constantWithWarmup, LRScheduler } from './schedule';
export type { CosineWithWarmupOptions, LrLambda } from './schedule';
