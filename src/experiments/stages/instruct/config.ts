/**
 * The instruct stage's config: defaults, the `quick` and `small` presets, validation (errors name the key).
 *
 * ```ts
 * const cfg = resolveInstructConfig('quick', { caption: { checkpoint: 'runs/caption-3/last.safetensors' } });
 * ```
 */
import { JsonObject, TrainSection, checkInt, checkOneOf, checkRange, checkTrainSection, resolveStageConfig } from '../config';
import { QA_TYPES } from '../../data/shapes';
import type { ImagePoolMode } from './model';

export type InstructTaskName = 'caption' | 'vqa' | 'difference' | 'match';
const TASKS: readonly InstructTaskName[] = ['caption', 'vqa', 'difference', 'match'];

export interface InstructConfig {
  /** The experiment (a group of runs) this run is filed under. */
  experiment: string;
  /** The run's name; '' for the default. */
  name: string;
  seed: number;
  caption: {
    /** A caption checkpoint; '' = the latest finished caption run in the db (its 'checkpoint' artifact). */
    checkpoint: string;
  };
  data: {
    /** Where training records come from: generated shapes scenes, or shapes and emoji pairs alternating. */
    source: 'shapes' | 'both';
    /** Number of generated training records (split over `tasks`). */
    trainRecords: number;
    /**
     * Tasks to train on. A task listed k times gets k shares of trainRecords (['vqa', 'vqa', 'match']: two
     * thirds VQA), so the mix can be weighted without another key.
     */
    tasks: InstructTaskName[];
    /**
     * Share of each VQA question type among the VQA training records, by weight (0 leaves a type out). All 1
     * (the default): equal shares, the generator's own round robin.
     */
    vqaTypes: { colour: number; shape: number; count: number; position: number; yesno: number };
    /**
     * The most any one answer may take of its question type's training records (1: no cap). Below 1, e.g. 0.4,
     * the "1" that is over half of the count answers is cut back so a model cannot win by always saying it. Never
     * below 1 / (the type's distinct answers). The baseline stays the majority of the uncapped answers.
     */
    answerCap: number;
    /**
     * 'places': relation questions ("is the circle left of the square?") are trained with the reason first, "the
     * circle at the top left, the square on the right, so yes", and every generated reply is scored on what
     * follows its last ", so " (finalAnswer). 'scene': every VQA question is answered by first describing the
     * whole scene as a grounded caption, then ", so <answer>" (raise generate.maxNewTokens to 64 and data.maxTextLen
     * to 104). 'marks': as 'scene' with "(yes)" or "(no)" after each object, yes for those the question is about
     * (data/instruct.ts marksRationale; data.maxTextLen 120). 'none' (default): one-word answers. Raise
     * generate.maxNewTokens (32) for 'places'.
     */
    rationale: 'none' | 'places' | 'scene' | 'marks';
    /** Held-out shapes scenes (a stream never used for training) whose VQA questions are evaluated. */
    evalScenes: number;
    /** VQA questions asked per eval scene: up to 5, one per question type in turn; above 5, further rounds (64: every question a scene has). */
    evalQuestionsPerScene: number;
    /** Held-out records per non-VQA training task evaluated by exact match (0: none). */
    evalRecords: number;
    /** Text tokens per row (the chat template, <image> counted as one token; images expand on top). */
    maxTextLen: number;
    /** '' or a JSON-lines instruction file (data/instruct.ts format) to train on instead of generated records. */
    jsonl: string;
    /** Examples written to samples.json at the end. */
    samples: number;
    /** Where preprocessed records are cached ('' = the align run's data.cacheDir). */
    cacheDir: string;
  };
  model: {
    /**
     * Average-pool the encoder's patch grid by this factor before projecting (1: every patch token). Each image
     * takes 1 + (grid / imagePool)^2 positions; two images and the text must fit the GPT's context.
     */
    imagePool: number;
    /**
     * How a pooled cell's imagePool x imagePool patch tokens become one token: 'mean' averages them; 'concat'
     * puts them side by side (imagePool^2 x the vision width, "space to depth"), and the projector's first layer
     * is widened to match, initialised so it starts out equal to 'mean'. Averaging loses which patch held what:
     * an object's shape, readable from its unpooled tokens, mostly is not from their mean (docs/instruct.md).
     * 'window' also puts the ring of one patch around the cell beside them ((imagePool + 2)^2 x the vision width,
     * zeros beyond the grid; a strided convolution over the patch grid), ring weights initialised to zero, so it
     * too starts out equal to 'mean': an object's shape is spread over the patches around its centre, which a
     * cell border cuts.
     */
    imagePoolMode: ImagePoolMode;
    /**
     * Put the images after the question in the user turn (`{question}<image>`) instead of before it. The GPT is
     * causal, so only then can the image positions attend to the question (what to look for).
     */
    questionFirst: boolean;
    /**
     * 'none': image tokens carry only what the frozen encoder put in them (and the GPT's frozen, text-trained
     * position table). '2d': a trainable table of per-cell positions, initialised to a 2-D sine-cosine code, is
     * added to the projected tokens (`ImagePositions`), so the relation questions ("is X left of Y?") can read
     * where each token is.
     */
    imagePositions: 'none' | '2d';
  };
  lora: {
    /**
     * Adapter rank. 0: no adapters; every GPT weight but the (tied) token embedding trains instead, full
     * fine-tuning as LLaVA's instruction stage does, the comparison that tells whether LoRA is what limits the
     * stage (docs/instruct.md). Checkpoints then hold the whole GPT; lora.encoderTargets needs a rank.
     */
    rank: number;
    alpha: number;
    dropout: number;
    /** Module names (suffixes of GPT.namedModules() names) that get adapters. */
    targets: string[];
    /**
     * Module names (suffixes of names inside the align encoder's image blocks, e.g. `attn.qkv`, `mlp.layers.0`)
     * that get adapters too, same rank and alpha; [] (default): the encoder stays exactly frozen and its features
     * are computed once and cached. Base encoder weights never train either way.
     */
    encoderTargets: string[];
    /**
     * Tokens whose embedding rows also train (every other row stays frozen): the chat template's tokens, which
     * the lm never saw. The head is tied to the embedding, so without this `<|end|>` keeps its random init row
     * and is hard to predict. [] = the base GPT entirely frozen.
     */
    trainTokens: string[];
  };
  train: TrainSection;
  generate: {
    maxNewTokens: number;
  };
}

export const INSTRUCT_DEFAULTS: InstructConfig = {
  experiment: 'instruct',
  name: '',
  seed: 0,
  caption: { checkpoint: '' },
  data: {
    source: 'shapes', trainRecords: 8000, tasks: ['caption', 'vqa', 'vqa', 'vqa', 'difference', 'match'],
    vqaTypes: { colour: 1, shape: 1, count: 1, position: 1, yesno: 1 }, answerCap: 1, rationale: 'none', evalScenes: 200, evalQuestionsPerScene: 5, evalRecords: 32, maxTextLen: 72, jsonl: '', samples: 16, cacheDir: '',
  },
  model: { imagePool: 2, imagePoolMode: 'mean', questionFirst: false, imagePositions: 'none' },
  lora: { rank: 8, alpha: 16, dropout: 0.05, targets: ['attn.qkv', 'attn.proj', 'mlp.layers.0', 'mlp.layers.1'], encoderTargets: [],
    trainTokens: ['<image>', '<|user|>', '<|assistant|>', '<|end|>'] },
  train: {
    steps: 2000,
    batchSize: 32,
    lr: 1e-3,
    minLrRatio: 0.1,
    warmupSteps: 100,
    weightDecay: 0.01,
    betas: [0.9, 0.95],
    eps: 1e-8,
    gradClip: 1,
    evalEvery: 500,
    checkpointEvery: 500,
    logEvery: 1,
  },
  generate: { maxNewTokens: 16 },
};

/** Presets: patches over the defaults. `quick`: a few minutes on 2 cores; `small`: a real run. */
export const INSTRUCT_PRESETS: Record<string, JsonObject> = {
  // quick: VQA only (the stage's goal), the configuration measured best within a few minutes (docs/instruct.md);
  // 150 held-out scenes (698 questions, 105-150 a type) so the per-type figures are within about +-4 points.
  quick: {
    data: { trainRecords: 3000, tasks: ['vqa'], evalScenes: 150, evalRecords: 16, samples: 8 },
    lora: { dropout: 0 },
    train: { steps: 800, batchSize: 16, lr: 3e-3, warmupSteps: 30, evalEvery: 0, checkpointEvery: 400 },
  },
  // small: every task (VQA half the records), 4x the quick preset's examples. lr 3e-3 as quick: at 1e-3 the VQA
  // answers stay near constant (docs/instruct.md s1 / s2).
  small: {
    train: { steps: 2000, batchSize: 32, lr: 3e-3, warmupSteps: 100, evalEvery: 500, checkpointEvery: 500 },
  },
};

const WHERE = 'instruct config';

/** Defaults ← preset ← overrides, validated. */
export function resolveInstructConfig(preset: string | null = null, overrides: unknown = {}): InstructConfig {
  return resolveStageConfig(WHERE, INSTRUCT_DEFAULTS, INSTRUCT_PRESETS, preset, overrides, validateInstructConfig);
}

/** Range and consistency checks; every error names the key. */
export function validateInstructConfig(c: InstructConfig): void {
  const w = WHERE;
  if (c.experiment.trim() === '') throw new Error(`${w}: key experiment must not be empty`);
  checkInt(w, 'seed', c.seed, 0, 2 ** 31 - 1);
  const d = c.data;
  checkOneOf(w, 'data.source', d.source, ['shapes', 'both'] as const);
  checkInt(w, 'data.trainRecords', d.trainRecords, 1);
  if (!Array.isArray(d.tasks) || d.tasks.length === 0) throw new Error(`${w}: key data.tasks must be a non-empty list of ${TASKS.join('|')}`);
  d.tasks.forEach((t, i) => {
    if (!TASKS.includes(t)) throw new Error(`${w}: key data.tasks[${i}] must be one of ${TASKS.join(', ')}, got ${JSON.stringify(t)}`);
  });
  if (d.vqaTypes === null || typeof d.vqaTypes !== 'object' || Array.isArray(d.vqaTypes)) throw new Error(`${w}: key data.vqaTypes must be an object of question type -> weight, got ${JSON.stringify(d.vqaTypes)}`);
  for (const q of QA_TYPES) checkRange(w, `data.vqaTypes.${q}`, d.vqaTypes[q], 0, 1e6);
  if (QA_TYPES.every((q) => d.vqaTypes[q] === 0)) throw new Error(`${w}: key data.vqaTypes gives every question type weight 0`);
  checkRange(w, 'data.answerCap', d.answerCap, 0, 1, true);
  checkOneOf(w, 'data.rationale', d.rationale, ['none', 'places', 'scene', 'marks'] as const);
  checkInt(w, 'data.evalScenes', d.evalScenes, 1);
  checkInt(w, 'data.evalQuestionsPerScene', d.evalQuestionsPerScene, 1, 64);
  checkInt(w, 'data.evalRecords', d.evalRecords, 0);
  checkInt(w, 'data.maxTextLen', d.maxTextLen, 8, 4096);
  checkInt(w, 'data.samples', d.samples, 0, 256);
  checkInt(w, 'model.imagePool', c.model.imagePool, 1, 64);
  checkOneOf(w, 'model.imagePoolMode', c.model.imagePoolMode, ['mean', 'concat', 'window'] as const);
  checkOneOf(w, 'model.imagePositions', c.model.imagePositions, ['none', '2d'] as const);
  const l = c.lora;
  checkInt(w, 'lora.rank', l.rank, 0, 1024);
  if (l.rank === 0 && (l.encoderTargets ?? []).length > 0) throw new Error(`${w}: key lora.encoderTargets needs lora.rank >= 1 (rank 0 is full fine-tuning of the GPT, with no adapters)`);
  checkRange(w, 'lora.alpha', l.alpha, 0, 1e6, true);
  checkRange(w, 'lora.dropout', l.dropout, 0, 0.99);
  if (!Array.isArray(l.targets) || l.targets.length === 0 || l.targets.some((t) => typeof t !== 'string' || t.trim() === '')) {
    throw new Error(`${w}: key lora.targets must be a non-empty list of module names, got ${JSON.stringify(l.targets)}`);
  }
  if (!Array.isArray(l.encoderTargets) || l.encoderTargets.some((t) => typeof t !== 'string' || t.trim() === '')) {
    throw new Error(`${w}: key lora.encoderTargets must be a list of module names inside the encoder's image blocks (e.g. ["attn.qkv"]; [] = frozen encoder), got ${JSON.stringify(l.encoderTargets)}`);
  }
  if (!Array.isArray(l.trainTokens) || l.trainTokens.some((t) => typeof t !== 'string' || t === '')) {
    throw new Error(`${w}: key lora.trainTokens must be a list of token strings, got ${JSON.stringify(l.trainTokens)}`);
  }
  const t = c.train;
  checkTrainSection(w, t);
  checkInt(w, 'generate.maxNewTokens', c.generate.maxNewTokens, 1, 1024);
}
