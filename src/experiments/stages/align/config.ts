/**
 * The align stage's config: defaults, the `quick` and `small` presets, validation.
 *
 * ```ts
 * const cfg = resolveAlignConfig('quick', { train: { lr: 3e-4 } });      // or parseOverrides(['train.lr=3e-4'])
 * ```
 */
import { JsonObject, TrainSection, checkInt, checkOneOf, checkRange, checkTrainSection, resolveStageConfig } from '../config';

export const ARCHS = ['dual', 'shared', 'fusion'] as const;
export type Arch = (typeof ARCHS)[number];

export interface AlignConfig {
  /** The experiment (a group of runs) this run is filed under. */
  experiment: string;
  /** The run's name; '' for the default `align-<id>`. */
  name: string;
  seed: number;
  init: {
    /**
     * '' (default): start from random weights. Else an align checkpoint whose weights (and tokenizer) this run
     * starts from: fine-tuning, e.g. continuing a trained encoder with data.hardNegatives. The architecture keys
     * must match the checkpoint's; the optimizer and schedule start fresh.
     */
    checkpoint: string;
  };
  data: {
    /**
     * 'emoji' (default), 'shapes' (synthetic scenes and their captions), or 'mixed': both, split by split (train =
     * both trains, val = both vals, test = emoji's other-vendor test + shapes test, heldout = emoji's held-out
     * concepts), every pair with meta.source 'emoji' | 'shapes' (balance with balanceKey 'source').
     */
    dataset: 'emoji' | 'shapes' | 'mixed';
    /** Square image side, pixels. */
    imageSize: number;
    /** Caption languages of the emoji set (emojibase locales). */
    langs: string[];
    trainVendor: 'google' | 'twitter';
    testVendor: 'google' | 'twitter';
    /** Fraction of emoji concepts held out of training entirely. */
    heldOutFraction: number;
    /** Cap on training pairs (0: all). */
    maxTrain: number;
    /** Pairs of the validation split scored at each evaluation (0: all). */
    evalSize: number;
    /** At the end, also evaluate on the whole test split and the held-out concepts. */
    finalEval: boolean;
    /** Scenes in the shapes dataset, for 'shapes' and 'mixed' (train; val and test get a fifth each). */
    shapesScenes: number;
    augment: { cropScale: [number, number]; jitter: number };
    /**
     * Modality/source balancing: the share of each value of `meta[balanceKey]` in a batch (e.g. { "en": 1,
     * "zh": 1 } with balanceKey "lang"); null samples in proportion to the data.
     */
    balance: { [value: string]: number } | null;
    balanceKey: string;
    /** Repeat-factor threshold for long-tail oversampling of rare `group`s (0: off). */
    longTail: number;
    /** Fraction of training captions shuffled into wrong pairs (to study CLIP-score cleaning). */
    noise: number;
    /** CLIP-score cleaning with a trained align checkpoint: keep pairs scoring >= threshold or the top keepFraction. */
    filter: { checkpoint: string; threshold?: number; keepFraction?: number } | null;
    /**
     * Hard negative captions for the training pairs: 'relation' gives every shapes caption that states a spatial
     * relation a negative with the relation reversed ("left of" -> "right of"), scored against the image by the
     * `hardneg` loss term (model.hardNegativeWeight). Without it nothing in a batch rewards an encoder for knowing
     * where things are: captions differ in their objects long before they differ in a relation.
     */
    hardNegatives: 'none' | 'relation';
    /** Worker threads preparing batches (0: on the main thread). */
    workers: number;
    /** Where preprocessed images and the tokenizer are cached. */
    cacheDir: string;
  };
  tokenizer: {
    vocabSize: number;
    contextLength: number;
    /** WordNet synsets whose glosses join the captions as tokenizer training text. */
    glosses: number;
  };
  model: {
    arch: Arch;
    patchSize: number;
    visionWidth: number;
    visionLayers: number;
    visionHeads: number;
    textWidth: number;
    textLayers: number;
    textHeads: number;
    embedDim: number;
    mlpRatio: number;
    dropout: number;
    learnableTemperature: boolean;
    fusionLayers: number;
    itmWeight: number;
    maskedObjective: 'none' | 'image' | 'text';
    maskRatio: number;
    maskedWeight: number;
    /** loss += hardNegativeWeight * hardneg (data.hardNegatives). */
    hardNegativeWeight: number;
  };
  train: TrainSection & {
    /** Micro-batches accumulated per optimizer step (batchSize is split into this many). */
    accumulate: number;
    amp: 'none' | 'bf16';
    /** Recompute each transformer block in backward instead of storing its activations. */
    checkpointing: boolean;
  };
}

export const ALIGN_DEFAULTS: AlignConfig = {
  experiment: 'align',
  name: '',
  seed: 0,
  init: { checkpoint: '' },
  data: {
    dataset: 'emoji',
    imageSize: 32,
    langs: ['en'],
    trainVendor: 'google',
    testVendor: 'twitter',
    heldOutFraction: 0.1,
    maxTrain: 0,
    evalSize: 512,
    finalEval: true,
    shapesScenes: 4000,
    augment: { cropScale: [0.8, 1], jitter: 0.1 },
    balance: null,
    balanceKey: 'lang',
    longTail: 0,
    noise: 0,
    filter: null,
    hardNegatives: 'none',
    workers: 1,
    cacheDir: 'runs/cache',
  },
  tokenizer: { vocabSize: 1024, contextLength: 32, glosses: 20000 },
  model: {
    arch: 'dual',
    patchSize: 4,
    visionWidth: 128,
    visionLayers: 4,
    visionHeads: 4,
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
    maskedWeight: 0.5,
    hardNegativeWeight: 1,
  },
  train: {
    steps: 2000,
    batchSize: 128,
    accumulate: 1,
    lr: 1e-3,
    minLrRatio: 0.05,
    warmupSteps: 100,
    weightDecay: 0.1,
    betas: [0.9, 0.98],
    eps: 1e-6,
    gradClip: 1,
    amp: 'none',
    checkpointing: false,
    evalEvery: 200,
    checkpointEvery: 500,
    logEvery: 1,
  },
};

/** Presets: patches over the defaults. `quick`: a couple of minutes on 2 cores; `small`: a real run. */
export const ALIGN_PRESETS: Record<string, JsonObject> = {
  quick: {
    model: { visionWidth: 96, visionLayers: 3, visionHeads: 4, textWidth: 96, textLayers: 3, textHeads: 4, embedDim: 96 },
    train: { steps: 400, batchSize: 128, lr: 2e-3, warmupSteps: 40, evalEvery: 100, checkpointEvery: 200 },
  },
  small: {
    train: { steps: 3000, batchSize: 128, lr: 1e-3, warmupSteps: 150, evalEvery: 250, checkpointEvery: 500 },
  },
};

const WHERE = 'align config';

/** Defaults ← preset ← overrides, validated. */
export function resolveAlignConfig(preset: string | null = null, overrides: unknown = {}): AlignConfig {
  return resolveStageConfig(WHERE, ALIGN_DEFAULTS, ALIGN_PRESETS, preset, overrides, validateAlignConfig);
}

/** Range and consistency checks; every error names the key. */
export function validateAlignConfig(c: AlignConfig): void {
  const w = WHERE;
  if (c.experiment.trim() === '') throw new Error(`${w}: key experiment must not be empty`);
  checkInt(w, 'seed', c.seed, 0, 2 ** 31 - 1);
  if (c.init === null || typeof c.init !== 'object' || typeof c.init.checkpoint !== 'string') {
    throw new Error(`${w}: key init.checkpoint must be a path ('' for random initialisation), got ${JSON.stringify(c.init)}`);
  }
  const d = c.data;
  checkOneOf(w, 'data.dataset', d.dataset, ['emoji', 'shapes', 'mixed'] as const);
  checkInt(w, 'data.imageSize', d.imageSize, 8, 512);
  if (d.langs.length === 0 || d.langs.some((l) => typeof l !== 'string' || l === '')) {
    throw new Error(`${w}: key data.langs must be a non-empty array of locale names, got ${JSON.stringify(d.langs)}`);
  }
  checkOneOf(w, 'data.trainVendor', d.trainVendor, ['google', 'twitter'] as const);
  checkOneOf(w, 'data.testVendor', d.testVendor, ['google', 'twitter'] as const);
  checkRange(w, 'data.heldOutFraction', d.heldOutFraction, 0, 0.9);
  checkInt(w, 'data.maxTrain', d.maxTrain, 0);
  checkInt(w, 'data.evalSize', d.evalSize, 0);
  checkInt(w, 'data.shapesScenes', d.shapesScenes, 10);
  if (d.augment.cropScale.length !== 2 || !(d.augment.cropScale[0] > 0 && d.augment.cropScale[0] <= d.augment.cropScale[1] && d.augment.cropScale[1] <= 1)) {
    throw new Error(`${w}: key data.augment.cropScale must be [min, max] with 0 < min <= max <= 1, got ${JSON.stringify(d.augment.cropScale)}`);
  }
  checkRange(w, 'data.augment.jitter', d.augment.jitter, 0, 1);
  if (d.balance !== null) {
    if (typeof d.balance !== 'object' || Array.isArray(d.balance) || Object.keys(d.balance).length === 0) {
      throw new Error(`${w}: key data.balance must be null or an object of value -> weight, got ${JSON.stringify(d.balance)}`);
    }
    for (const [k, v] of Object.entries(d.balance)) {
      if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) throw new Error(`${w}: key data.balance.${k} must be a weight >= 0, got ${JSON.stringify(v)}`);
    }
  }
  checkRange(w, 'data.longTail', d.longTail, 0, 1);
  checkRange(w, 'data.noise', d.noise, 0, 1);
  if (d.filter !== null) {
    const f = d.filter;
    if (typeof f !== 'object' || typeof f.checkpoint !== 'string' || f.checkpoint === '') {
      throw new Error(`${w}: key data.filter must be null or { checkpoint, threshold | keepFraction }, got ${JSON.stringify(f)}`);
    }
    if ((f.threshold === undefined) === (f.keepFraction === undefined)) {
      throw new Error(`${w}: key data.filter needs exactly one of threshold and keepFraction`);
    }
    if (f.keepFraction !== undefined) checkRange(w, 'data.filter.keepFraction', f.keepFraction, 0, 1, true);
    if (f.threshold !== undefined && (typeof f.threshold !== 'number' || !Number.isFinite(f.threshold))) {
      throw new Error(`${w}: key data.filter.threshold must be a number, got ${JSON.stringify(f.threshold)}`);
    }
  }
  checkOneOf(w, 'data.hardNegatives', d.hardNegatives, ['none', 'relation'] as const);
  if (d.hardNegatives === 'relation' && d.dataset === 'emoji') {
    throw new Error(`${w}: key data.hardNegatives 'relation' needs shapes captions (data.dataset 'shapes' or 'mixed'); emoji captions state no relation`);
  }
  checkInt(w, 'data.workers', d.workers, 0, 16);
  checkInt(w, 'tokenizer.vocabSize', c.tokenizer.vocabSize, 300, 65536);
  checkInt(w, 'tokenizer.contextLength', c.tokenizer.contextLength, 4, 1024);
  checkInt(w, 'tokenizer.glosses', c.tokenizer.glosses, 0);
  const m = c.model;
  checkOneOf(w, 'model.arch', m.arch, ARCHS);
  checkInt(w, 'model.patchSize', m.patchSize, 1, d.imageSize);
  if (d.imageSize % m.patchSize !== 0) throw new Error(`${w}: key model.patchSize (${m.patchSize}) must divide data.imageSize (${d.imageSize})`);
  for (const k of ['visionWidth', 'textWidth', 'embedDim'] as const) checkInt(w, `model.${k}`, m[k], 1, 8192);
  for (const k of ['visionLayers', 'textLayers'] as const) checkInt(w, `model.${k}`, m[k], 1, 64);
  checkInt(w, 'model.visionHeads', m.visionHeads, 1, 64);
  checkInt(w, 'model.textHeads', m.textHeads, 1, 64);
  if (m.visionWidth % m.visionHeads !== 0) throw new Error(`${w}: key model.visionHeads (${m.visionHeads}) must divide model.visionWidth (${m.visionWidth})`);
  if (m.textWidth % m.textHeads !== 0) throw new Error(`${w}: key model.textHeads (${m.textHeads}) must divide model.textWidth (${m.textWidth})`);
  checkRange(w, 'model.mlpRatio', m.mlpRatio, 0, 16, true);
  checkRange(w, 'model.dropout', m.dropout, 0, 0.9);
  checkInt(w, 'model.fusionLayers', m.fusionLayers, 0, 32);
  checkRange(w, 'model.itmWeight', m.itmWeight, 0, 100);
  checkOneOf(w, 'model.maskedObjective', m.maskedObjective, ['none', 'image', 'text'] as const);
  checkRange(w, 'model.maskRatio', m.maskRatio, 0, 1, true);
  checkRange(w, 'model.maskedWeight', m.maskedWeight, 0, 100);
  checkRange(w, 'model.hardNegativeWeight', m.hardNegativeWeight, 0, 100);
  const t = c.train;
  checkTrainSection(w, t, { min: 2, max: Number.MAX_SAFE_INTEGER });
  checkInt(w, 'train.accumulate', t.accumulate, 1, t.batchSize);
  if (t.batchSize % t.accumulate !== 0) throw new Error(`${w}: key train.accumulate (${t.accumulate}) must divide train.batchSize (${t.batchSize})`);
  if (t.batchSize / t.accumulate < 2) throw new Error(`${w}: key train.accumulate leaves micro-batches of ${t.batchSize / t.accumulate}; InfoNCE needs at least 2`);
  checkOneOf(w, 'train.amp', t.amp, ['none', 'bf16'] as const);
}
