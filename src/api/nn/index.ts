/** ml.nn: modules with PyTorch's names, layouts and initialisation. */
export { Module, ModuleList, Sequential } from './module';
export type { StateDict, LoadStateDictOptions, LoadStateDictResult, RegisterParameterOptions, RegisterBufferOptions } from './module';
export { Linear } from './linear';
export type { LinearOptions } from './linear';
export { LayerNorm } from './layernorm';
export type { LayerNormOptions } from './layernorm';
export { Embedding } from './embedding';
export { Dropout } from './dropout';
export { MLP, GELU, ReLU, SiLU, activate } from './mlp';
export type { MLPOptions, Activation } from './mlp';
export { MultiheadAttention, scaledDotProductAttention } from './attention';
export type { AttentionOptions, SDPAOptions, MultiheadAttentionOptions, MultiheadAttentionForward } from './attention';
export { TransformerBlock } from './transformer';
export type { TransformerBlockOptions, TransformerBlockForward } from './transformer';
export { LoRALinear, applyLora, mergeLora, loraStateDict, loadLoraStateDict } from './lora';
export type { LoRAOptions, ApplyLoraOptions } from './lora';
