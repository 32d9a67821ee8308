/**
 * The caption stage's config: defaults, the `quick` and `small` presets, validation (errors name the key).
 *
 * ```ts
 * const cfg = resolveCaptionConfig('quick', { align: { checkpoint: 'runs/align-3/last.safetensors' } });
 * ```
 */
import { JsonObject, TrainSection, checkInt, checkOneOf, checkRange, checkTrainSection, resolveStageConfig } from '../config';

export interface CaptionConfig {
  /** The experiment (a group of runs) this run is filed under. */
  experiment: string;
  /** The run's name; '' for the default. */
  name: string;
  seed: number;
  align: {
    /** An align checkpoint; '' = the latest finished align run in the db (its 'checkpoint' artifact). */
    checkpoint: string;
  };
  lm: {
    /** An lm checkpoint; '' = the latest finished lm run in the db; none found: the GPT trains from scratch. */
    checkpoint: string;
    /** The GPT's shape when it trains from scratch (ignored when an lm checkpoint is used). */
    scratch: { contextLength: number; width: number; layers: number; heads: number; mlpRatio: number };
  };
  data: {
    /** Cap on training pairs (0: all of the align stage's train split). */
    maxTrain: number;
    /** Caption tokens per row, `<bos>` and `<eos>` included (the image prefix comes on top). */
    maxTextLen: number;
    /** Val pairs captioned at each evaluation (0: all). */
    evalSamples: number;
    /** Examples written to samples.json at the end. */
    samples: number;
    /** Where preprocessed images are cached ('' = the align run's data.cacheDir). */
    cacheDir: string;
    /**
     * What a shapes scene's caption says. 'scene': the align dataset's caption (every object, one relation).
     * 'grounded': every object with its place in a 3 x 3 division of the picture, in reading order ("a small blue
     * square at the top left and a large red circle in the middle"), for training and as the references; the
     * captioner then has to find each object among the image tokens, which the instruct stage's questions need
     * (docs/instruct.md). Needs a longer data.maxTextLen (48 holds four objects). Emoji captions are unchanged.
     */
    shapesCaptions: 'scene' | 'grounded';
    /** Shapes scenes to caption-train on (0: the align run's data.shapesScenes); more scenes, new images. */
    shapesScenes: number;
    /**
     * Text-only scene questions replayed while captioning (0: none): the first N of the lm stage's
     * `data.sceneQa` questions (sceneQaTexts, stream 'train', this seed), packed into rows of the GPT's context
     * length; train.sceneQaBatch rows a step add train.sceneQaWeight times their next-token loss. Captioning
     * moves every GPT weight and erases the question-answering an lm run learned from them (docs/instruct.md, t6);
     * replaying them keeps it for the instruct stage.
     */
    sceneQa: number;
    /** Held-out scene questions (the lm stage's 'val' stream) scored at each evaluation when sceneQa > 0: val/scene_qa_acc. */
    sceneQaEval: number;
  };
  model: {
    /** Hidden size of the projector MLP (Linear-GELU-Linear), vision width -> hidden -> GPT width. */
    projectorHidden: number;
    /**
     * The prefix: all 1+P image tokens ('tokens', what the instruct stage needs), their mean ('pooled', one
     * position), or the class token alone ('cls', one position: the one the align loss trains).
     */
    prefix: 'tokens' | 'pooled' | 'cls';
  };
  train: TrainSection & {
    /**
     * Weight of KL(p_lm || p_model) on text-only batches (the caption tokens without the image), against the
     * frozen lm checkpoint's distribution; 0 = off. Needs an lm checkpoint.
     */
    klWeight: number;
    /** Rows of scene questions (of the GPT's context length) a step when data.sceneQa > 0. */
    sceneQaBatch: number;
    /** Weight of their mean next-token loss, added to the caption loss. */
    sceneQaWeight: number;
  };
  generate: {
    greedy: boolean;
    /** Used when greedy is false. */
    temperature: number;
    maxNewTokens: number;
  };
}

export const CAPTION_DEFAULTS: CaptionConfig = {
  experiment: 'caption',
  name: '',
  seed: 0,
  align: { checkpoint: '' },
  lm: { checkpoint: '', scratch: { contextLength: 128, width: 128, layers: 4, heads: 4, mlpRatio: 4 } },
  data: { maxTrain: 0, maxTextLen: 24, evalSamples: 256, samples: 16, cacheDir: '', shapesCaptions: 'scene', shapesScenes: 0, sceneQa: 0, sceneQaEval: 500 },
  model: { projectorHidden: 256, prefix: 'tokens' },
  train: {
    steps: 2000,
    batchSize: 32,
    lr: 5e-4,
    minLrRatio: 0.1,
    warmupSteps: 100,
    weightDecay: 0.05,
    betas: [0.9, 0.95],
    eps: 1e-8,
    gradClip: 1,
    klWeight: 0,
    sceneQaBatch: 8,
    sceneQaWeight: 1,
    evalEvery: 250,
    checkpointEvery: 500,
    logEvery: 1,
  },
  generate: { greedy: true, temperature: 1, maxNewTokens: 20 },
};

/** Presets: patches over the defaults. `quick`: a few minutes on 2 cores; `small`: a real run. */
export const CAPTION_PRESETS: Record<string, JsonObject> = {
  // Measured in docs/caption.md (align quick on data.dataset 'mixed' -> lm quick -> this): shapes captions name
  // their objects well above the train-prior baseline. maxTextLen 32 holds every shapes caption with the align
  // (mixed) tokenizer; the prefix stays 'tokens', which the instruct stage needs.
  quick: {
    data: { maxTextLen: 32, evalSamples: 128, samples: 8 },
    train: { steps: 500, batchSize: 24, lr: 2e-3, warmupSteps: 40, evalEvery: 250, checkpointEvery: 250 },
    generate: { maxNewTokens: 32 },
  },
  small: {
    train: { steps: 2000, batchSize: 32, lr: 5e-4, warmupSteps: 100, evalEvery: 250, checkpointEvery: 500 },
  },
};

const WHERE = 'caption config';

/** Defaults ← preset ← overrides, validated. */
export function resolveCaptionConfig(preset: string | null = null, overrides: unknown = {}): CaptionConfig {
  return resolveStageConfig(WHERE, CAPTION_DEFAULTS, CAPTION_PRESETS, preset, overrides, validateCaptionConfig);
}

/** Range and consistency checks; every error names the key. */
export function validateCaptionConfig(c: CaptionConfig): void {
  const w = WHERE;
  if (c.experiment.trim() === '') throw new Error(`${w}: key experiment must not be empty`);
  checkInt(w, 'seed', c.seed, 0, 2 ** 31 - 1);
  const s = c.lm.scratch;
  checkInt(w, 'lm.scratch.contextLength', s.contextLength, 4, 4096);
  checkInt(w, 'lm.scratch.width', s.width, 1, 8192);
  checkInt(w, 'lm.scratch.layers', s.layers, 1, 64);
  checkInt(w, 'lm.scratch.heads', s.heads, 1, 64);
  if (s.width % s.heads !== 0) throw new Error(`${w}: key lm.scratch.heads (${s.heads}) must divide lm.scratch.width (${s.width})`);
  checkRange(w, 'lm.scratch.mlpRatio', s.mlpRatio, 0, 16, true);
  const d = c.data;
  checkInt(w, 'data.maxTrain', d.maxTrain, 0);
  checkInt(w, 'data.maxTextLen', d.maxTextLen, 3, 1024);
  checkInt(w, 'data.evalSamples', d.evalSamples, 0);
  checkInt(w, 'data.samples', d.samples, 0, 256);
  checkOneOf(w, 'data.shapesCaptions', d.shapesCaptions, ['scene', 'grounded'] as const);
  checkInt(w, 'data.shapesScenes', d.shapesScenes, 0, 1_000_000);
  checkInt(w, 'data.sceneQa', d.sceneQa, 0, 10_000_000);
  checkInt(w, 'data.sceneQaEval', d.sceneQaEval, 0, 100_000);
  checkInt(w, 'model.projectorHidden', c.model.projectorHidden, 1, 16384);
  checkOneOf(w, 'model.prefix', c.model.prefix, ['tokens', 'pooled', 'cls'] as const);
  const t = c.train;
  checkTrainSection(w, t);
  checkRange(w, 'train.klWeight', t.klWeight, 0, 100);
  checkInt(w, 'train.sceneQaBatch', t.sceneQaBatch, 1, 4096);
  checkRange(w, 'train.sceneQaWeight', t.sceneQaWeight, 0, 100);
  checkRange(w, 'generate.temperature', c.generate.temperature, 0, 100, true);
  checkInt(w, 'generate.maxNewTokens', c.generate.maxNewTokens, 1, 1024);
}
