/**
 * AlignModelConfig: every knob of the stage-1 image-text models, with commented defaults (the defaults are the
 * `npm run bench -- clip` model), and the validation that turns a bad value into an error naming its key.
 */

export type AlignArch = 'dual' | 'shared' | 'fusion';
export type MaskedObjective = 'none' | 'image' | 'text';

export interface AlignModelConfig {
  /** 'dual': two towers + InfoNCE; 'shared': one transformer for both modalities; 'fusion': dual + cross-attention + ITM. */
  arch: AlignArch;
  /** Square input images of imageSize x imageSize pixels. */
  imageSize: number;
  /** Square patches of patchSize pixels; imageSize must be a multiple. */
  patchSize: number;
  /** Image channels (3 for RGB). */
  channels: number;
  /** ViT width, depth and heads ('shared' uses these for its single tower). */
  visionWidth: number;
  visionLayers: number;
  visionHeads: number;
  /** Token ids are in [0, vocabSize). */
  vocabSize: number;
  /** The longest caption, in tokens (the learned positions). */
  contextLength: number;
  /** Text transformer width, depth and heads (for 'shared', textWidth must equal visionWidth; the others are unused). */
  textWidth: number;
  textLayers: number;
  textHeads: number;
  /** The joint embedding size (the projections' output). */
  embedDim: number;
  /** Transformer MLP hidden size = width * mlpRatio. */
  mlpRatio: number;
  /** Dropout in the transformer blocks (attention weights, MLP, residuals). */
  dropout: number;
  /** true: the log temperature is a trained parameter; false: fixed at log(1 / 0.07). */
  learnableTemperature: boolean;
  /** 'fusion' only: the number of cross-attention layers (text queries, image patch keys). */
  fusionLayers: number;
  /** 'fusion' only: loss = infonce + itmWeight * itm. */
  itmWeight: number;
  /** Optional cross-modal masked prediction: 'image' (reconstruct masked patches with the text) or 'text' (predict masked tokens with the image). */
  maskedObjective: MaskedObjective;
  /** The fraction of patches (or caption tokens) masked. */
  maskRatio: number;
  /** loss += maskedWeight * masked. */
  maskedWeight: number;
  /**
   * loss += hardNegativeWeight * hardneg, where a batch carries hard negative captions (AlignBatch.negatives):
   * for each such row, the cross entropy of its image choosing its own caption over its negative.
   */
  hardNegativeWeight: number;
  /** Gradient checkpointing: every transformer block is recomputed in backward (ml.checkpoint). */
  checkpointing: boolean;
}

export const DEFAULT_ALIGN_CONFIG: Readonly<AlignModelConfig> = Object.freeze({
  arch: 'dual',
  imageSize: 32,
  patchSize: 4,
  channels: 3,
  visionWidth: 128,
  visionLayers: 4,
  visionHeads: 4,
  vocabSize: 1024,
  contextLength: 32,
  textWidth: 128,
  textLayers: 4,
  textHeads: 4,
  embedDim: 128,
  mlpRatio: 4,
  dropout: 0,
  learnableTemperature: true,
  fusionLayers: 2,
  itmWeight: 1,
  maskedObjective: 'none',
  maskRatio: 0.5,
  maskedWeight: 1,
  hardNegativeWeight: 1,
  checkpointing: false,
} as AlignModelConfig);

const KEYS = Object.keys(DEFAULT_ALIGN_CONFIG) as Array<keyof AlignModelConfig>;

function fail(key: string, msg: string): never {
  throw new Error(`AlignModelConfig.${key}: ${msg}`);
}

function int(c: Record<string, unknown>, key: string, min: number): number {
  const v = c[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(key, `expected an integer >= ${min}, got ${JSON.stringify(v)}`);
  return v;
}

function num(c: Record<string, unknown>, key: string, min: number, max: number, openMin = false): number {
  const v = c[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (openMin && v === min)) {
    fail(key, `expected a number in ${openMin ? '(' : '['}${min}, ${max}], got ${JSON.stringify(v)}`);
  }
  return v;
}

function oneOf<T extends string>(c: Record<string, unknown>, key: string, allowed: readonly T[]): T {
  const v = c[key];
  if (!(allowed as readonly unknown[]).includes(v)) fail(key, `expected one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(v)}`);
  return v as T;
}

/** Defaults filled in, every value checked; throws an Error naming the first bad key. */
export function resolveAlignConfig(partial: Partial<AlignModelConfig> = {}): AlignModelConfig {
  if (partial === null || typeof partial !== 'object' || Array.isArray(partial)) {
    throw new TypeError(`AlignModelConfig: expected an object, got ${partial === null ? 'null' : typeof partial}`);
  }
  for (const k of Object.keys(partial)) {
    if (!(KEYS as string[]).includes(k)) throw new Error(`AlignModelConfig.${k}: unknown key (known: ${KEYS.join(', ')})`);
  }
  const c = { ...DEFAULT_ALIGN_CONFIG, ...partial } as AlignModelConfig;
  const r = c as unknown as Record<string, unknown>;
  oneOf(r, 'arch', ['dual', 'shared', 'fusion'] as const);
  int(r, 'imageSize', 1);
  int(r, 'patchSize', 1);
  if (c.imageSize % c.patchSize !== 0) fail('patchSize', `${c.patchSize} does not divide imageSize ${c.imageSize}`);
  int(r, 'channels', 1);
  for (const k of ['visionWidth', 'visionLayers', 'visionHeads', 'textWidth', 'textLayers', 'textHeads', 'embedDim'] as const) int(r, k, 1);
  if (c.visionWidth % c.visionHeads !== 0) fail('visionHeads', `${c.visionHeads} does not divide visionWidth ${c.visionWidth}`);
  if (c.textWidth % c.textHeads !== 0) fail('textHeads', `${c.textHeads} does not divide textWidth ${c.textWidth}`);
  if (c.arch === 'shared' && c.textWidth !== c.visionWidth) {
    fail('textWidth', `arch 'shared' runs both modalities through one tower of visionWidth ${c.visionWidth}: textWidth must equal it, got ${c.textWidth}`);
  }
  int(r, 'vocabSize', 2);
  int(r, 'contextLength', 1);
  num(r, 'mlpRatio', 0, 64, true);
  num(r, 'dropout', 0, 1);
  if (c.dropout >= 1) fail('dropout', `must be below 1, got ${c.dropout}`);
  if (typeof c.learnableTemperature !== 'boolean') fail('learnableTemperature', `expected true or false, got ${JSON.stringify(c.learnableTemperature)}`);
  int(r, 'fusionLayers', c.arch === 'fusion' ? 1 : 0);
  num(r, 'itmWeight', 0, 1e6);
  oneOf(r, 'maskedObjective', ['none', 'image', 'text'] as const);
  num(r, 'maskRatio', 0, 1, true);
  if (c.maskRatio >= 1) fail('maskRatio', `must be below 1 (something must stay visible), got ${c.maskRatio}`);
  num(r, 'maskedWeight', 0, 1e6);
  num(r, 'hardNegativeWeight', 0, 1e6);
  if (typeof c.checkpointing !== 'boolean') fail('checkpointing', `expected true or false, got ${JSON.stringify(c.checkpointing)}`);
  return c;
}
