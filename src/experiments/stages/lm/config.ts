/**
 * The lm stage's config: defaults, the `quick` and `small` presets, validation (errors name the key).
 *
 * ```ts
 * const cfg = resolveLmConfig('quick', { train: { lr: 1e-3 } });      // or parseOverrides(['train.lr=1e-3'], ...)
 * ```
 */
import { JsonObject, TrainSection, checkInt, checkOneOf, checkRange, checkTrainSection, resolveStageConfig } from '../config';

export interface LmConfig {
  /** The experiment (a group of runs) this run is filed under. */
  experiment: string;
  /** The run's name; '' for the default. */
  name: string;
  seed: number;
  data: {
    /**
     * The emoji captions that join the corpus: the training split of the align stage's emoji set, chosen with
     * the same keys (and the run's seed) as there, so that the default tokenizer is the align stage's (same cache file).
     */
    langs: string[];
    trainVendor: 'google' | 'twitter';
    testVendor: 'google' | 'twitter';
    heldOutFraction: number;
    /** Put the emoji captions in the corpus (they are in the tokenizer's training text either way). */
    captions: boolean;
    /** WordNet synsets whose definition and examples join the corpus (0: captions only). */
    glosses: number;
    /**
     * Text-only questions about generated `shapes` scenes that join the training corpus, each as the words an
     * instruct answer with `data.rationale: 'scene'` ends in: "is there a green star? a small blue square at the top
     * left and a large red circle in the middle, so no" (sceneQaTexts). They teach the GPT to read an answer off a
     * scene description before it ever sees an image. 0 (default): none.
     */
    sceneQa: number;
    /** The words of the scene questions: 'scene' (default) or 'marks' (instruct's data.rationale of that name). */
    sceneQaRationale: 'scene' | 'marks';
    /** Held-out scene questions (another stream of scenes) answered at each evaluation when sceneQa > 0: val/scene_qa_acc. */
    sceneQaEval: number;
    /** Fraction of the corpus's documents (one string each) held out for validation. */
    valFraction: number;
    /** Validation sequences scored at each evaluation (0: all). */
    evalSequences: number;
    /** Where the tokenizer is cached (as the align stage's data.cacheDir). */
    cacheDir: string;
  };
  tokenizer: {
    /** A tokenizer.json to use (e.g. runs/align-3/tokenizer.json); '' trains or reuses the cached default one. */
    path: string;
    /** For the default tokenizer: as the align stage's tokenizer.vocabSize and tokenizer.glosses. */
    vocabSize: number;
    glosses: number;
    /**
     * For the default tokenizer: that many text-only scene questions (sceneQaTexts, stream 'tokenizer') join its
     * training text, so that the shapes world's words ("circle", "purple", "yes") become whole tokens instead of
     * 2-4 pieces. The tokenizer is then the lm stage's own (another cache file), not the align stage's; the caption
     * and instruct stages use the GPT's. 0 (default): the align stage's tokenizer.
     */
    sceneTexts: number;
  };
  model: {
    /** Positions the model has; training sequences are this long. */
    contextLength: number;
    width: number;
    layers: number;
    heads: number;
    mlpRatio: number;
    dropout: number;
  };
  train: TrainSection & {
    amp: 'none' | 'bf16';
    /** Recompute each block in backward instead of storing its activations. */
    checkpointing: boolean;
    /** Texts generated from <bos> at the end of a finished run (written to samples.txt; 0: none). */
    samples: number;
  };
}

export const LM_DEFAULTS: LmConfig = {
  experiment: 'lm',
  name: '',
  seed: 0,
  data: {
    langs: ['en'],
    trainVendor: 'google',
    testVendor: 'twitter',
    heldOutFraction: 0.1,
    captions: true,
    glosses: 20000,
    sceneQa: 0,
    sceneQaRationale: 'scene',
    sceneQaEval: 500,
    valFraction: 0.05,
    evalSequences: 256,
    cacheDir: 'runs/cache',
  },
  tokenizer: { path: '', vocabSize: 1024, glosses: 20000, sceneTexts: 0 },
  model: { contextLength: 128, width: 128, layers: 4, heads: 4, mlpRatio: 4, dropout: 0 },
  train: {
    steps: 3000,
    batchSize: 32,
    lr: 1e-3,
    minLrRatio: 0.1,
    warmupSteps: 100,
    weightDecay: 0.1,
    betas: [0.9, 0.95],
    eps: 1e-8,
    gradClip: 1,
    amp: 'none',
    checkpointing: false,
    evalEvery: 250,
    checkpointEvery: 500,
    logEvery: 1,
    samples: 4,
  },
};

/** Presets: patches over the defaults. `quick`: a few minutes on 2 cores; `small`: a real run. */
export const LM_PRESETS: Record<string, JsonObject> = {
  quick: {
    data: { evalSequences: 64 },
    train: { steps: 300, batchSize: 16, lr: 2e-3, warmupSteps: 30, evalEvery: 100, checkpointEvery: 150 },
  },
  small: {
    train: { steps: 3000, batchSize: 32, lr: 1e-3, warmupSteps: 100, evalEvery: 250, checkpointEvery: 500 },
  },
};

const WHERE = 'lm config';

/** Defaults ← preset ← overrides, validated. */
export function resolveLmConfig(preset: string | null = null, overrides: unknown = {}): LmConfig {
  return resolveStageConfig(WHERE, LM_DEFAULTS, LM_PRESETS, preset, overrides, validateLmConfig);
}

/** Range and consistency checks; every error names the key. */
export function validateLmConfig(c: LmConfig): void {
  const w = WHERE;
  if (c.experiment.trim() === '') throw new Error(`${w}: key experiment must not be empty`);
  checkInt(w, 'seed', c.seed, 0, 2 ** 31 - 1);
  const d = c.data;
  if (d.langs.length === 0 || d.langs.some((l) => typeof l !== 'string' || l === '')) {
    throw new Error(`${w}: key data.langs must be a non-empty array of locale names, got ${JSON.stringify(d.langs)}`);
  }
  checkOneOf(w, 'data.trainVendor', d.trainVendor, ['google', 'twitter'] as const);
  checkOneOf(w, 'data.testVendor', d.testVendor, ['google', 'twitter'] as const);
  checkRange(w, 'data.heldOutFraction', d.heldOutFraction, 0, 0.9);
  checkInt(w, 'data.glosses', d.glosses, 0);
  checkInt(w, 'data.sceneQa', d.sceneQa, 0, 10_000_000);
  checkInt(w, 'data.sceneQaEval', d.sceneQaEval, 0, 100_000);
  checkOneOf(w, 'data.sceneQaRationale', d.sceneQaRationale, ['scene', 'marks'] as const);
  if (!d.captions && d.glosses === 0) throw new Error(`${w}: keys data.captions (false) and data.glosses (0) leave the corpus empty`);
  checkRange(w, 'data.valFraction', d.valFraction, 0, 0.5, true);
  checkInt(w, 'data.evalSequences', d.evalSequences, 0);
  if (d.cacheDir.trim() === '') throw new Error(`${w}: key data.cacheDir must not be empty`);
  checkInt(w, 'tokenizer.vocabSize', c.tokenizer.vocabSize, 300, 65536);
  checkInt(w, 'tokenizer.glosses', c.tokenizer.glosses, 0);
  checkInt(w, 'tokenizer.sceneTexts', c.tokenizer.sceneTexts, 0, 1_000_000);
  if (c.tokenizer.sceneTexts > 0 && c.tokenizer.path !== '') throw new Error(`${w}: key tokenizer.sceneTexts trains the default tokenizer; it cannot be used with tokenizer.path`);
  const m = c.model;
  checkInt(w, 'model.contextLength', m.contextLength, 4, 4096);
  checkInt(w, 'model.width', m.width, 1, 8192);
  checkInt(w, 'model.layers', m.layers, 1, 64);
  checkInt(w, 'model.heads', m.heads, 1, 64);
  if (m.width % m.heads !== 0) throw new Error(`${w}: key model.heads (${m.heads}) must divide model.width (${m.width})`);
  checkRange(w, 'model.mlpRatio', m.mlpRatio, 0, 16, true);
  checkRange(w, 'model.dropout', m.dropout, 0, 0.9);
  const t = c.train;
  checkTrainSection(w, t);
  checkOneOf(w, 'train.amp', t.amp, ['none', 'bf16'] as const);
  checkInt(w, 'train.samples', t.samples, 0, 64);
}
