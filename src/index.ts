/**
 * modalab: train multimodal models in TypeScript.
 *
 * ```ts
 * import * as ml from 'modalab';
 * ml.manualSeed(0);
 * const x = ml.randn([4, 8], { requiresGrad: true });
 * ml.matmul(x, ml.randn([8, 3])).gelu().mean().backward();
 * ```
 * See ../shared/DESIGN.md (the API names are a contract) and docs/.
 */
export { Tensor, shapeSize } from './api/tensor';
export type { Shape } from './api/tensor';
export type { DType, Device, FloatDType, ArrayFor } from './api/dtype';
export { noGrad, isGradEnabled } from './api/autograd';
export { tidy } from './api/scope';
export { memory, emptyCache, resetPeak } from './api/storage';
export type { MemoryInfo } from './api/storage';
export { manualSeed, getRngState, setRngState } from './api/random';
export * from './api/creation';
export * from './api/ops/elementwise';
export * from './api/ops/reduce';
export * from './api/ops/softmax';
export * from './api/ops/layernorm';
export * from './api/ops/loss';
export * from './api/ops/matmul';
export * from './api/ops/layout';
export * from './api/ops/indexing';
export * from './api/ops/attention';
export * from './api/ops/infonce';
export { cast, to } from './api/ops/cast';
export { backendInfo, setNumThreads } from './api/runtime';
export * as cuda from './api/cuda';
export * as nn from './api/nn';
export * as optim from './api/optim';
export { save, load, loadHeader } from './api/io/safetensors';
export type { Loaded, TensorMap, SafetensorsHeader } from './api/io/safetensors';
export { autocast, autocastDtype, GradScaler } from './api/amp';
export type { AutocastDType, GradScalerOptions, GradScalerState } from './api/amp';
export { checkpoint } from './api/checkpoint';
export * as plots from './experiments/plots';
export * as tracking from './experiments/tracking';
export * as evaluation from './experiments/eval';
export * as data from './experiments/data';
export * as tokenizer from './experiments/tokenizer';
export * as models from './experiments/models';
export * as stages from './experiments/stages';
export * as report from './experiments/report';
export * as sweeps from './experiments/sweeps';
export * as dashboard from './experiments/dashboard';
