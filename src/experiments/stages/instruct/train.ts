/**
 * Stage 3, `instruct`: instruction tuning with LoRA. The caption checkpoint's GPT gets low-rank adapters (base
 * weights frozen); together with the caption projector they learn to answer chat-formatted instructions about
 * one or two images (shapes captioning, VQA, difference, match), the images spliced in place of their
 * `<image>` tokens, with the loss on answer tokens only. Evaluated by generating answers to VQA questions about
 * held-out shapes scenes (accuracy overall and per question type, beside the majority-answer baseline) and by
 * exact match on held-out records of the other tasks; recorded in SQLite with the caption run as parent,
 * checkpointed (projector + adapters + optimizer + RNG) so that `resume` continues exactly.
 *
 * ```ts
 * const res = await trainInstruct(resolveInstructConfig('quick'), { db: 'runs/modalab.db' });
 * res.metrics['val/vqa_acc/colour'];
 * const m = loadInstruct(res.checkpoint);
 * await m.answer([{ kind: 'file', path: 'scene.png' }], 'what colour is the circle?');
 * ```
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ml from '../../../index';
import { Tracker, Run } from '../../tracking';
import { GPT, GPTConfig } from '../../models/gpt';
import { vqaAccuracy, vqaScore } from '../../eval/vqa';
import { Tokenizer } from '../../tokenizer';
import type { ImageRef } from '../../data/types';
import { readFloat32File, writeFloat32File } from '../../data/f32file';
import { finalAnswer } from '../../data/instruct';
import { decodeImage, encodePng, type ImageTransform } from '../../data/image';
import { readCheckpointState, type TrainingState } from '../checkpoint';
import { StageRunOptions, StepPace, due, findStageCheckpoint, makeOptimizer, optimizerStep, resolveResume, writeAtomic } from '../run';
import { loadScorer } from '../align/filter';
import { AlignConfig } from '../align/config';
import { CaptionConfig } from '../caption/config';
import { CaptionNet } from '../caption/model';
import { loadCheckpoint } from '../checkpoint';
import { InstructConfig, validateInstructConfig } from './config';
import { InstructData, InstructExample, alignTransform, cacheKey, encodeExample, instructBatchRows, prepareInstructData } from './data';
import { AnswerOptions, InstructModel, SpliceRow, addImagePositions, poolProjector } from './model';

export interface InstructStepInfo {
  step: number;
  steps: number;
  loss: number;
  lr: number;
  samplesPerS: number;
  /** Seconds left at the recent pace. */
  etaS: number;
}

export type TrainInstructOptions = StageRunOptions<InstructStepInfo>;

export interface InstructSample {
  /** Base64 PNG of the input image at the model's image size. */
  png: string;
  /** The second image of two-image tasks. */
  png2?: string;
  task: string;
  qtype?: string;
  question: string;
  answers: string[];
  prediction: string;
}

export interface InstructResult {
  runId: number;
  status: 'finished' | 'killed';
  stepsDone: number;
  /** The loss (answer-token CE) of every step this call ran. */
  losses: number[];
  /** The last evaluation: val/vqa_acc, val/vqa_acc/<type>, val/<task>_acc; and baseline/vqa_acc[/<type>]. */
  metrics: Record<string, number>;
  samples: InstructSample[];
  checkpoint: string;
  /** The caption checkpoint the model was built from, and its run. */
  captionCheckpoint: string;
  captionRunId: number;
  outDir: string;
  wallS: number;
}

/** What an instruct checkpoint records beyond the common state, to rebuild the model. */
export interface InstructExtra {
  captionCheckpoint: string;
  captionRunId: number;
  alignCheckpoint: string;
  tokenizer: string;
  gpt: GPTConfig;
  projectorHidden: number;
}

const FORMAT = 'modalab.training-checkpoint.v1';
const MERGED_FORMAT = 'modalab.instruct-merged.v1';

// ------------------------------------------------------------------------------------------ building the model

/** Side of the pooled patch grid an image becomes (imageSize / patchSize / pool). */
function imageGrid(alignCfg: AlignConfig, pool: number): number {
  return alignCfg.data.imageSize / alignCfg.model.patchSize / pool;
}

/** The caption checkpoint's parts (encoder, projector, GPT) with LoRA on the GPT, as an InstructModel. */
export function buildInstructModel(cfg: InstructConfig, extra: InstructExtra, status: (m: string) => void = () => {}): { model: InstructModel; alignCfg: AlignConfig } {
  status(`image encoder from ${extra.alignCheckpoint}; projector and GPT from ${extra.captionCheckpoint}`);
  const scorer = loadScorer(extra.alignCheckpoint);
  const alignCfg: AlignConfig = scorer.config;
  const tokenizer = Tokenizer.fromFile(extra.tokenizer);
  if (tokenizer.vocabSize !== extra.gpt.vocabSize) {
    scorer.dispose();
    throw new Error(`instruct: the tokenizer ${extra.tokenizer} has ${tokenizer.vocabSize} ids but the GPT has ${extra.gpt.vocabSize}`);
  }
  const net = new CaptionNet(alignCfg.model.visionWidth, extra.projectorHidden, new GPT(extra.gpt));
  loadCheckpoint(extra.captionCheckpoint, net, null);
  const poolMode = cfg.model.imagePoolMode ?? 'mean';
  if (poolMode !== 'mean') net.projector = net.registerModule('projector', poolProjector(net.projector, poolMode, cfg.model.imagePool));
  if ((cfg.model.imagePositions ?? 'none') === '2d') {
    // Scaled like the GPT's own position table, the signal it already reads positions from.
    const pe = net.gpt.posEmbed.toArray() as Float32Array;
    let ss = 0;
    for (const v of pe) ss += v * v;
    addImagePositions(net.projector, imageGrid(alignCfg, cfg.model.imagePool), net.gpt.config.width, Math.sqrt(ss / pe.length));
  }
  ml.manualSeed(cfg.seed);
  if (cfg.lora.rank > 0) {
    const wrapped = ml.nn.applyLora(net.gpt, { rank: cfg.lora.rank, alpha: cfg.lora.alpha, dropout: cfg.lora.dropout, targets: cfg.lora.targets, freezeBase: true });
    if (wrapped.length === 0) throw new Error(`instruct: key lora.targets ${JSON.stringify(cfg.lora.targets)} wrapped no layer`);
  } else {
    // Full fine-tuning: every GPT weight trains; the token embedding (tied to the head) follows lora.trainTokens.
    net.gpt.requiresGrad_(true);
  }
  net.projector.requiresGrad_(true);
  const model = new InstructModel(scorer.model.net, net.projector, net.gpt, tokenizer, alignCfg.data.imageSize, cfg.model.imagePool, poolMode);
  model.questionFirst = cfg.model.questionFirst ?? false;
  model.fullFineTune = cfg.lora.rank === 0;
  const encTargets = cfg.lora.encoderTargets ?? [];
  if (encTargets.length > 0) {
    try {
      model.adaptEncoder(encTargets, cfg.lora.rank, cfg.lora.alpha);
    } catch (e) {
      model.dispose();
      throw new Error(`instruct: key lora.encoderTargets: ${(e as Error).message}`);
    }
  }
  const tokens = cfg.lora.trainTokens ?? [];
  const ids = tokens.map((tk) => {
    const id = tokenizer.tokenToId(tk);
    if (id === undefined) {
      model.dispose();
      throw new Error(`instruct: key lora.trainTokens: the tokenizer ${extra.tokenizer} has no token ${JSON.stringify(tk)}`);
    }
    return id;
  });
  model.setTrainTokens(ids);
  return { model, alignCfg };
}

/** The caption checkpoint's state, checked, as the extra an instruct checkpoint records. */
export function captionExtra(file: string, runId: number): InstructExtra {
  const st = readCheckpointState(file);
  if (st.stage !== 'caption') throw new Error(`instruct: ${file} is a ${st.stage} checkpoint, not caption`);
  const ce = st.extra as unknown as { alignCheckpoint: string; tokenizer: string; gpt: GPTConfig };
  const cc = st.config as CaptionConfig;
  if (cc.model.prefix !== 'tokens') throw new Error(`instruct: the caption checkpoint ${file} was trained with model.prefix '${cc.model.prefix}'; instruct needs 'tokens'`);
  return { captionCheckpoint: path.resolve(file), captionRunId: runId, alignCheckpoint: ce.alignCheckpoint, tokenizer: ce.tokenizer, gpt: ce.gpt, projectorHidden: cc.model.projectorHidden };
}

/** What an instruct checkpoint keeps of the GPT: its adapters, or under full fine-tuning every weight but the token embedding (model.tokens holds its trained rows). */
function gptTrainedState(model: InstructModel): ml.nn.StateDict {
  if (!model.fullFineTune) return ml.nn.loraStateDict(model.gpt);
  const sd = { ...model.gpt.stateDict() };
  delete sd['tokenEmbed.weight'];
  return sd;
}

function saveInstructCheckpoint(file: string, model: InstructModel, opt: ml.optim.Optimizer<any>, state: TrainingState): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tensors: Record<string, ml.Tensor> = {};
  for (const [k, v] of Object.entries(model.projector.stateDict())) tensors[`model.projector.${k}`] = v;
  for (const [k, v] of Object.entries(gptTrainedState(model))) tensors[`model.gpt.${k}`] = v;
  if (model.encoderAdapted) for (const [k, v] of Object.entries(ml.nn.loraStateDict(model.encoder.imageBlocks()))) tensors[`model.encoder.blocks.${k}`] = v;
  const rows = model.tokenRows();
  if (rows) tensors['model.tokens'] = rows;
  try {
    const o = ml.optim.toSafetensors(opt.stateDict());
    Object.assign(tensors, o.tensors);
    const metadata = { ...o.metadata, 'modalab.format': FORMAT, 'modalab.state': JSON.stringify(state) };
    ml.save(file, tensors, metadata);
  } finally {
    rows?.dispose();
  }
}

/** The optimizer state of an instruct checkpoint. */
function loadOptimizerState(file: string, opt: ml.optim.Optimizer<any>): void {
  const loaded = ml.load(file);
  try {
    opt.loadStateDict(ml.optim.fromSafetensors(loaded));
  } finally {
    for (const t of Object.values(loaded.tensors)) t.dispose();
  }
}

/** Loads projector, adapter and token-row weights from an instruct checkpoint (before building an optimizer). */
function loadInstructWeights(file: string, model: InstructModel): void {
  const loaded = ml.load(file);
  try {
    const proj: Record<string, ml.Tensor> = {};
    const lora: Record<string, ml.Tensor> = {};
    const enc: Record<string, ml.Tensor> = {};
    for (const [k, v] of Object.entries(loaded.tensors)) {
      if (k.startsWith('model.projector.')) proj[k.slice('model.projector.'.length)] = v;
      else if (k.startsWith('model.gpt.')) lora[k.slice('model.gpt.'.length)] = v;
      else if (k.startsWith('model.encoder.blocks.')) enc[k.slice('model.encoder.blocks.'.length)] = v;
    }
    model.projector.loadStateDict(proj);
    if (!model.fullFineTune) ml.nn.loadLoraStateDict(model.gpt, lora);
    else {
      const r = model.gpt.loadStateDict(lora, { strict: false });
      const missing = r.missingKeys.filter((k) => k !== 'tokenEmbed.weight');
      if (missing.length > 0 || r.unexpectedKeys.length > 0) {
        throw new Error(`instruct: ${file} does not hold a fully fine-tuned GPT (lora.rank 0): missing ${JSON.stringify(missing)}, unexpected ${JSON.stringify(r.unexpectedKeys)}`);
      }
    }
    if (model.encoderAdapted) ml.nn.loadLoraStateDict(model.encoder.imageBlocks(), enc);
    else if (Object.keys(enc).length > 0) throw new Error(`instruct: ${file} has encoder adapters but its config names no lora.encoderTargets`);
    const rows = loaded.tensors['model.tokens'];
    if (model.trainTokenIds.length > 0) {
      if (!rows) throw new Error(`instruct: ${file} has no model.tokens (the trained token rows its config names)`);
      model.loadTokenRows(rows);
    }
  } finally {
    for (const t of Object.values(loaded.tensors)) t.dispose();
  }
}

/**
 * The frozen encoder's pooled features of an image set, from the disk cache when the same align checkpoint (path,
 * size, mtime) and pooling already encoded the same set (its cache key), else computed and cached (temp + rename).
 */
function cachedFeatures(model: InstructModel, alignCheckpoint: string, dir: string, setKey: string | null, images: Float32Array, n: number,
  status: (m: string) => void): Float32Array {
  const Wv = model.featureWidth;
  const size = n * model.N * Wv;
  let file: string | null = null;
  if (setKey) {
    const st = fs.statSync(alignCheckpoint);
    const key = cacheKey({ set: setKey, align: path.resolve(alignCheckpoint), bytes: st.size, mtime: st.mtimeMs, pool: model.imagePool, ...(model.imagePoolMode !== 'mean' ? { mode: model.imagePoolMode } : {}), N: model.N, Wv });
    file = path.join(dir, `instruct-features-${key}.f32`);
    const hit = readFloat32File(file, size);
    if (hit) {
      status(`image features of ${n} images from the cache ${file}`);
      return hit;
    }
  }
  status(`encoding ${n} images with the frozen encoder`);
  const out = model.featureTable(images, n);
  if (file) {
    fs.mkdirSync(dir, { recursive: true });
    writeFloat32File(file, out);
  }
  return out;
}

// ------------------------------------------------------------------------------------------ evaluation

/** Gathers images of an image table (f32 [n * 3 * S * S]) into one f32 [K * 3 * S * S]. */
function gatherImages(table: Float32Array, rows: number[], S: number): Float32Array {
  const px = 3 * S * S;
  const out = new Float32Array(rows.length * px);
  rows.forEach((r, j) => out.set(table.subarray(r * px, (r + 1) * px), j * px));
  return out;
}

/** Gathers rows of a feature table [n, N, Wv] into a tensor [K, N, Wv]. */
function gather(table: Float32Array, rows: number[], N: number, Wv: number): ml.Tensor<'f32'> {
  const out = new Float32Array(rows.length * N * Wv);
  rows.forEach((r, j) => out.set(table.subarray(r * N * Wv, (r + 1) * N * Wv), j * N * Wv));
  return ml.tensor(out, [rows.length, N, Wv]);
}

/**
 * Greedy answers to examples whose images are rows of a feature table; prompts of one length are batched
 * (generation needs equal-length rows), `chunk` at a time.
 */
export function answerExamples(model: InstructModel, examples: InstructExample[], table: Float32Array, opts: AnswerOptions = {}, chunk = 64): string[] {
  const tok = model.tokenizer;
  const Wv = model.featureWidth;
  const prompts = examples.map((ex) => encodeExample(tok, ex.question, ex.images.length, null, model.N, Infinity, model.questionFirst)!);
  const byLen = new Map<number, number[]>();
  prompts.forEach((p, i) => byLen.set(p.ids.length, [...(byLen.get(p.ids.length) ?? []), i]));
  const out = new Array<string>(examples.length).fill('');
  for (const idx of byLen.values()) {
    for (let i = 0; i < idx.length; i += chunk) {
      const part = idx.slice(i, i + chunk);
      const feats = gather(table, part.flatMap((j) => examples[j].images), model.N, Wv);
      try {
        const ids = model.generateIds(part.map((j) => prompts[j]), feats, opts);
        part.forEach((j, k) => { out[j] = tok.decode(ids[k], { skipSpecial: true }).trim(); });
      } finally {
        feats.dispose();
      }
    }
  }
  return out;
}

/** VQA accuracy overall and per question type ('val/vqa_acc', 'val/vqa_acc/<type>'), exact match per other task. */
export function instructMetrics(examples: InstructExample[], predictions: string[]): Record<string, number> {
  const m: Record<string, number> = {};
  const vqa = examples.map((e, i) => [e, i] as const).filter(([e]) => e.task === 'vqa');
  if (vqa.length > 0) {
    // A reply with a rationale ("..., so yes") is scored on its conclusion (data.rationale 'places', 'scene', 'marks').
    const r = vqaAccuracy(vqa.map(([, i]) => finalAnswer(predictions[i])), vqa.map(([e]) => e.answers), vqa.map(([e]) => e.qtype ?? 'vqa'));
    m['val/vqa_acc'] = r.overall;
    for (const [t, v] of Object.entries(r.byType)) m[`val/vqa_acc/${t}`] = v.accuracy;
  }
  const byTask = new Map<string, number[]>();
  examples.forEach((e, i) => {
    if (e.task === 'vqa') return;
    byTask.set(e.task, [...(byTask.get(e.task) ?? []), vqaScore(predictions[i], e.answers)]);
  });
  for (const [t, s] of byTask) m[`val/${t}_acc`] = s.reduce((a, x) => a + x, 0) / s.length;
  return m;
}

export function evaluateInstruct(model: InstructModel, data: InstructData, evalTable: Float32Array, cfg: InstructConfig): {
  metrics: Record<string, number>; predictions: string[];
} {
  const predictions = answerExamples(model, data.eval, evalTable, { maxNewTokens: cfg.generate.maxNewTokens, greedy: true });
  return { metrics: instructMetrics(data.eval, predictions), predictions };
}

/** Samples for samples.json: VQA questions spread over the types first, then the other tasks in turn. */
async function makeSamples(data: InstructData, predictions: string[], n: number): Promise<InstructSample[]> {
  const S = data.imageSize;
  const px = 3 * S * S;
  const groups = new Map<string, number[]>();
  data.eval.forEach((e, i) => {
    const k = e.task === 'vqa' ? `vqa/${e.qtype}` : e.task;
    groups.set(k, [...(groups.get(k) ?? []), i]);
  });
  const order: number[] = [];
  const lists = [...groups.values()];
  for (let r = 0; order.length < Math.min(n, data.eval.length); r++) {
    for (const l of lists) if (r < l.length && order.length < n) order.push(l[r]);
  }
  const png = async (row: number): Promise<string> => (await encodePng(data.evalImages.subarray(row * px, (row + 1) * px), data.transform)).toString('base64');
  const out: InstructSample[] = [];
  for (const i of order) {
    const e = data.eval[i];
    out.push({
      png: await png(e.images[0]), ...(e.images.length > 1 ? { png2: await png(e.images[1]) } : {}),
      task: e.task, ...(e.qtype ? { qtype: e.qtype } : {}), question: e.question, answers: e.answers, prediction: predictions[i],
    });
  }
  return out;
}

// ------------------------------------------------------------------------------------------ training

export async function trainInstruct(config: InstructConfig, opts: TrainInstructOptions = {}): Promise<InstructResult> {
  const t0 = Date.now();
  const status = opts.onStatus ?? (() => {});
  const ownTracker = !opts.tracker;
  const tracker = opts.tracker ?? Tracker.open(opts.db);
  let cfg = config;
  let run: Run | null = null;
  let resumeFile: string | null = null;
  let model: InstructModel | null = null;
  let finalStatus: 'finished' | 'killed' | 'failed' = 'failed';
  try {
    let extra: InstructExtra;
    if (opts.resume !== undefined) {
      const r = resolveResume(tracker, opts.resume);
      resumeFile = r.file;
      const st = readCheckpointState(r.file);
      if (st.stage !== 'instruct') throw new Error(`resume: ${r.file} is a ${st.stage} checkpoint, not instruct`);
      cfg = st.config as InstructConfig;
      extra = st.extra as unknown as InstructExtra;
      run = tracker.resumeRun(r.runId);
    } else {
      validateInstructConfig(cfg);
      const cap = findStageCheckpoint(tracker, 'caption', cfg.caption.checkpoint);
      if (!cap) throw new Error(`instruct: key caption.checkpoint is '' and the db ${tracker.file} has no finished caption run with a checkpoint; train one (modalab train --stage caption) or set caption.checkpoint`);
      extra = captionExtra(cap.file, cap.runId);
      const inDb = ((): boolean => {
        try {
          return tracker.artifacts(cap.runId).some((a) => a.kind === 'checkpoint' && path.resolve(a.path) === path.resolve(cap.file));
        } catch {
          return false;
        }
      })();
      if (!inDb) status(`note: the caption checkpoint's run ${cap.runId} is not in ${tracker.file}; no parent run recorded`);
      run = tracker.startRun({
        experiment: cfg.experiment, name: cfg.name || undefined, stage: 'instruct', config: cfg as unknown as { [k: string]: unknown },
        seed: cfg.seed, parentRunId: inDb ? cap.runId : undefined,
      });
    }
    const outDir = path.resolve(opts.outDir ?? (resumeFile ? path.dirname(resumeFile) : path.join(path.dirname(tracker.file), `instruct-${run.id}`)));
    fs.mkdirSync(outDir, { recursive: true });
    const ckpt = path.join(outDir, 'last.safetensors');

    const built = buildInstructModel(cfg, extra, status);
    model = built.model;
    const gpt = model.gpt;
    const N = model.N;
    // Generated VQA and caption records hold one image, difference and match records two (a jsonl file: up to two).
    const perRow = cfg.data.jsonl !== '' || cfg.data.tasks.some((t) => t === 'difference' || t === 'match') ? 2 : 1;
    const ctx = gpt.config.contextLength;
    if (perRow * N + Math.min(cfg.data.maxTextLen, 32) > ctx) {
      throw new Error(`instruct: ${perRow === 2 ? 'two images' : 'one image'} (${perRow} x ${N} positions, model.imagePool ${cfg.model.imagePool}) plus the text leave no room in the GPT's context length ${ctx}; raise model.imagePool${perRow === 2 ? ' or train on one-image tasks only (vqa, caption)' : ''}`);
    }

    status('preparing data');
    const data = await prepareInstructData(cfg, built.alignCfg, model.tokenizer, N, { onStatus: status, contextLength: ctx });
    // A frozen encoder's features are fixed: computed once (and cached on disk). An adapted one's change every
    // step: training encodes each batch's images, evaluation re-encodes the eval images.
    const adapted = model.encoderAdapted;
    const trainTable = adapted ? null : cachedFeatures(model, extra.alignCheckpoint, data.cache.dir, data.cache.train, data.trainImages, data.numTrainImages, status);
    let evalTable = adapted ? null : cachedFeatures(model, extra.alignCheckpoint, data.cache.dir, data.cache.eval, data.evalImages, data.numEvalImages, status);
    if (!fs.existsSync(path.join(outDir, 'config.json'))) {
      const cfgPath = path.join(outDir, 'config.json');
      writeAtomic(cfgPath, JSON.stringify(cfg, null, 2) + '\n');
      run.logArtifact('config', cfgPath);
      const base: Record<string, number> = { 'data/train_records': data.train.ids.length, 'data/eval_examples': data.eval.length, 'data/image_positions': N, 'data/dropped': data.dropped };
      if (data.baseline) {
        base['baseline/vqa_acc'] = data.baseline.overall;
        for (const [t, v] of Object.entries(data.baseline.byType)) base[`baseline/vqa_acc/${t}`] = v.accuracy;
      }
      run.log(base, 0);
    }
    const baselineMetrics: Record<string, number> = {};
    if (data.baseline) {
      baselineMetrics['baseline/vqa_acc'] = data.baseline.overall;
      for (const [t, v] of Object.entries(data.baseline.byType)) baselineMetrics[`baseline/vqa_acc/${t}`] = v.accuracy;
    }

    if (resumeFile) loadInstructWeights(resumeFile, model);
    // The embedding (when token rows train) is its own group without weight decay: its other rows get zero
    // gradients, so AdamW leaves them bitwise unchanged.
    const main = model.trainableParameters();
    const E = gpt.tokenEmbed.weight;
    const tokensTrain = model.trainTokenIds.length > 0;
    const params = tokensTrain ? [...main, E] : main;
    const t = cfg.train;
    const { opt, sched } = makeOptimizer(tokensTrain ? [{ params: main }, { params: [E], weightDecay: 0 }] : main, t);
    let step = 0;
    if (resumeFile) {
      const st = readCheckpointState(resumeFile);
      loadOptimizerState(resumeFile, opt);
      step = st.step;
      sched.loadStateDict({ lastStep: step });
      ml.setRngState(st.rng);
      status(`resuming run ${run.id} at step ${step}`);
    }
    const save = (): void => {
      saveInstructCheckpoint(ckpt, model!, opt, {
        step, rng: ml.getRngState(), config: cfg, stage: 'instruct', runId: run!.id, extra: extra as unknown as Record<string, unknown>,
      });
    };
    const B = t.batchSize;
    const Wv = model.featureWidth;
    const losses: number[] = [];
    let metrics: Record<string, number> = {};
    let predictions: string[] = [];
    const startStep = step;
    const paceOf = new StepPace();
    let stopped = false;
    const evalNow = (): Record<string, number> => {
      if (adapted) evalTable = model!.featureTable(data.evalImages, data.numEvalImages);
      const e = evaluateInstruct(model!, data, evalTable!, cfg);
      predictions = e.predictions;
      run!.log(e.metrics, step);
      opts.onEval?.(step, e.metrics);
      return { ...e.metrics, ...baselineMetrics };
    };
    status(`training ${t.steps - step} steps (${main.length} trainable tensors, ${main.reduce((a, p) => a + p.size, 0)} numbers${tokensTrain ? `, plus ${model.trainTokenIds.length} token rows` : ''})`);
    model.projector.train();
    gpt.train();
    while (step < t.steps) {
      if (opts.signal?.aborted || (opts.stopAfter !== undefined && step - startStep >= opts.stopAfter)) {
        stopped = true;
        break;
      }
      const tStep = performance.now();
      const rowsIdx = instructBatchRows(data, step, B, cfg.seed);
      const rows = Array.from(rowsIdx, (r) => ({ ids: data.train.ids[r], mask: data.train.mask[r], slots: data.train.slots[r] }));
      const imgs = Array.from(rowsIdx, (r) => data.train.images[r]).flat();
      opt.zeroGrad();
      let loss = 0;
      ml.tidy(() => {
        const feats = trainTable ? gather(trainTable, imgs, N, Wv) : model!.encode(gatherImages(data.trainImages, imgs, data.imageSize), imgs.length);
        const l = model!.loss(rows, feats);
        l.backward();
        loss = l.item();
      });
      model.maskTokenGrad();
      const { gradNorm, lr } = optimizerStep(opt, sched, params, t.gradClip);
      step++;
      losses.push(loss);
      const { msPerStep: pace, stepMs } = paceOf.tick(step, tStep);
      const samplesPerS = (B * 1000) / stepMs;
      if (step % t.logEvery === 0 || step === t.steps) run.log({ loss, lr, grad_norm: gradNorm, samples_per_s: samplesPerS }, step);
      opts.onStep?.({ step, steps: t.steps, loss, lr, samplesPerS, etaS: ((t.steps - step) * pace) / 1000 });
      if (due(t.evalEvery, step, t.steps)) {
        metrics = evalNow();
        model.projector.train();
        gpt.train();
      }
      if (due(t.checkpointEvery, step, t.steps)) save();
      await new Promise<void>((r) => setImmediate(r));
    }
    save();
    let samples: InstructSample[] = [];
    if (!stopped) {
      status('evaluating');
      metrics = evalNow();
      samples = await makeSamples(data, predictions, cfg.data.samples);
      if (samples.length > 0) {
        const file = path.join(outDir, 'samples.json');
        writeAtomic(file, JSON.stringify(samples, null, 1) + '\n');
        run.logArtifact('samples', file);
      }
    }
    run.logArtifact('checkpoint', ckpt);
    finalStatus = stopped ? 'killed' : 'finished';
    run.finish(finalStatus);
    return {
      runId: run.id, status: finalStatus, stepsDone: step - startStep, losses, metrics, samples, checkpoint: ckpt,
      captionCheckpoint: extra.captionCheckpoint, captionRunId: extra.captionRunId, outDir, wallS: (Date.now() - t0) / 1000,
    };
  } catch (e) {
    if (run && run.status === 'running') run.finish('failed');
    throw e;
  } finally {
    model?.dispose();
    if (ownTracker) tracker.close();
  }
}

// ------------------------------------------------------------------------------------------ inference

/** A trained instruct model for answering questions about images (the `modalab chat` command). */
export interface LoadedInstruct {
  model: InstructModel;
  config: InstructConfig;
  /** The align run's image transform (size, normalisation): what `answer` decodes files with. */
  transform: ImageTransform;
  /**
   * The answer to `question` about `images` (1 or 2: file paths or other ImageRefs, or f32 [3, S, S] arrays
   * already normalised with `transform`). The question may hold one `<image>` per image to place them; else
   * they go first. Greedy unless opts.greedy is false.
   */
  answer(images: ReadonlyArray<ImageRef | Float32Array>, question: string, opts?: AnswerOptions): Promise<string>;
  dispose(): void;
}

/** How many images fit one prompt beside a short question. */
function maxImages(model: InstructModel): number {
  return Math.max(1, Math.floor((model.gpt.config.contextLength - 16) / model.N));
}

function makeLoaded(model: InstructModel, cfg: InstructConfig, transform: ImageTransform): LoadedInstruct {
  const S = model.imageSize;
  return {
    model, config: cfg, transform,
    async answer(images, question, opts = {}) {
      if (typeof question !== 'string' || question.trim() === '') throw new Error('instruct answer: the question must be a non-empty string');
      if (!Array.isArray(images) || images.length === 0) throw new Error('instruct answer: give at least one image (this model answers questions about images)');
      const most = maxImages(model);
      if (images.length > most) throw new Error(`instruct answer: got ${images.length} images; this model takes at most ${most} (each takes ${model.N} of its ${model.gpt.config.contextLength} positions)`);
      const marks = question.split('<image>').length - 1;
      if (marks !== 0 && marks !== images.length) {
        throw new Error(`instruct answer: the question has ${marks} <image> placeholders but ${images.length} images were given`);
      }
      const px = 3 * S * S;
      const table = new Float32Array(images.length * px);
      for (let i = 0; i < images.length; i++) {
        const im = images[i];
        if (im instanceof Float32Array) {
          if (im.length !== px) throw new Error(`instruct answer: image ${i} has ${im.length} values; expected f32 [3, ${S}, ${S}] (${px})`);
          table.set(im, i * px);
        } else {
          if (im && im.kind === 'file' && !fs.existsSync(im.path)) throw new Error(`instruct answer: image file ${im.path} does not exist`);
          table.set(await decodeImage(im, transform, `instruct answer image ${i}`), i * px);
        }
      }
      const feats = model.featureTable(table, images.length);
      let text = question;
      let numImages = images.length;
      // Placeholders in the question: the user turn is that text as written (encodeExample adds none).
      if (marks > 0) numImages = 0;
      const tok = model.tokenizer;
      const enc = encodeExampleWith(tok, text, numImages, model.N, marks, model.questionFirst);
      if (enc.ids.length > model.gpt.config.contextLength) {
        throw new Error(`instruct answer: the prompt takes ${enc.ids.length} positions (with ${images.length} images of ${model.N}); the model has ${model.gpt.config.contextLength}`);
      }
      const Wv = model.featureWidth;
      const f = ml.tensor(feats, [images.length, model.N, Wv]);
      try {
        const ids = model.generateIds([enc], f, { ...opts, maxNewTokens: opts.maxNewTokens ?? cfg.generate.maxNewTokens });
        text = tok.decode(ids[0], { skipSpecial: true }).trim();
        return text;
      } finally {
        f.dispose();
      }
    },
    dispose() {
      model.dispose();
    },
  };
}

/** A prompt whose `<image>` marks are written in the text (marks > 0) or put first (numImages). */
function encodeExampleWith(tok: Tokenizer, text: string, numImages: number, N: number, marks: number, questionFirst: boolean): SpliceRow {
  if (marks === 0) return encodeExample(tok, text, numImages, null, N, Infinity, questionFirst)!;
  const enc = tok.chat([{ role: 'user', content: text }], { bos: true, addGenerationPrompt: true });
  const ids: number[] = [];
  const slots: number[] = [];
  for (const id of enc.ids) {
    if (id === tok.imageId) {
      slots.push(ids.length);
      for (let k = 0; k < N; k++) ids.push(id);
    } else ids.push(id);
  }
  return { ids: Int32Array.from(ids), slots };
}

/** An instruct checkpoint (or a merged export from exportMerged) ready to answer questions. */
export function loadInstruct(checkpoint: string): LoadedInstruct {
  if (!fs.existsSync(checkpoint)) throw new Error(`loadInstruct: ${checkpoint} does not exist`);
  const md = ml.loadHeader(checkpoint).metadata ?? {};
  if (md['modalab.format'] === MERGED_FORMAT) return loadMerged(checkpoint, md);
  const st = readCheckpointState(checkpoint);
  if (st.stage !== 'instruct') throw new Error(`loadInstruct: ${checkpoint} is a ${st.stage} checkpoint, not instruct`);
  const cfg = st.config as InstructConfig;
  const extra = st.extra as unknown as InstructExtra;
  const { model, alignCfg } = buildInstructModel(cfg, extra);
  try {
    loadInstructWeights(checkpoint, model);
  } catch (e) {
    model.dispose();
    throw e;
  }
  model.projector.eval();
  model.gpt.eval();
  return makeLoaded(model, cfg, alignTransform(alignCfg));
}

function loadMerged(file: string, md: Record<string, string>): LoadedInstruct {
  const info = JSON.parse(md['modalab.instruct']) as { config: InstructConfig; extra: InstructExtra };
  const scorer = loadScorer(info.extra.alignCheckpoint);
  const tokenizer = Tokenizer.fromFile(info.extra.tokenizer);
  const net = new CaptionNet(scorer.config.model.visionWidth, info.extra.projectorHidden, new GPT(info.extra.gpt));
  // The widened projector's and the table's values come from the file; these are placeholders of the right shape.
  const poolMode = info.config.model.imagePoolMode ?? 'mean';
  if (poolMode !== 'mean') net.projector = net.registerModule('projector', poolProjector(net.projector, poolMode, info.config.model.imagePool));
  if ((info.config.model.imagePositions ?? 'none') === '2d') addImagePositions(net.projector, imageGrid(scorer.config, info.config.model.imagePool), info.extra.gpt.width, 1);
  const loaded = ml.load(file);
  try {
    const enc: Record<string, ml.Tensor> = {};
    const rest: Record<string, ml.Tensor> = {};
    for (const [k, v] of Object.entries(loaded.tensors)) {
      if (k.startsWith('encoder.blocks.')) enc[k.slice('encoder.blocks.'.length)] = v;
      else rest[k] = v;
    }
    net.loadStateDict(rest);
    // Encoder adapters were merged into the image blocks: those weights replace the align checkpoint's.
    if (Object.keys(enc).length > 0) scorer.model.net.imageBlocks().loadStateDict(enc);
  } finally {
    for (const t of Object.values(loaded.tensors)) t.dispose();
  }
  const model = new InstructModel(scorer.model.net, net.projector, net.gpt, tokenizer, scorer.config.data.imageSize, info.config.model.imagePool, poolMode);
  model.questionFirst = info.config.model.questionFirst ?? false;
  model.projector.eval();
  model.gpt.eval();
  return makeLoaded(model, info.config, alignTransform(scorer.config));
}

/**
 * Folds the adapters into the GPT (and into the encoder's image blocks, when adapted) and writes the merged GPT,
 * the projector and those blocks as one safetensors file (`gpt.*`, `projector.*`, `encoder.blocks.*`; written to
 * a temporary file and renamed), with what loadInstruct needs in its metadata. The base names stay (a merged model has the caption GPT's parameter names).
 */
export function exportMerged(checkpoint: string, outFile: string): { file: string; merged: string[] } {
  const st = readCheckpointState(checkpoint);
  if (st.stage !== 'instruct') throw new Error(`exportMerged: ${checkpoint} is a ${st.stage} checkpoint, not instruct`);
  const loaded = loadInstruct(checkpoint);
  try {
    // Fully fine-tuned (lora.rank 0): nothing to fold, the GPT's weights are written as they are.
    const merged = loaded.model.fullFineTune ? [] : ml.nn.mergeLora(loaded.model.gpt);
    const tensors: Record<string, ml.Tensor> = {};
    for (const [k, v] of Object.entries(loaded.model.gpt.stateDict())) tensors[`gpt.${k}`] = v;
    for (const [k, v] of Object.entries(loaded.model.projector.stateDict())) tensors[`projector.${k}`] = v;
    if (loaded.model.encoderAdapted) {
      const blocks = loaded.model.encoder.imageBlocks();
      merged.push(...ml.nn.mergeLora(blocks).map((n) => `encoder.blocks.${n}`));
      for (const [k, v] of Object.entries(blocks.stateDict())) tensors[`encoder.blocks.${k}`] = v;
    }
    fs.mkdirSync(path.dirname(path.resolve(outFile)), { recursive: true });
    ml.save(outFile, tensors, {
      'modalab.format': MERGED_FORMAT,
      'modalab.instruct': JSON.stringify({ config: st.config, extra: st.extra, sourceCheckpoint: path.resolve(checkpoint), mergedLayers: merged }),
    });
    return { file: path.resolve(outFile), merged };
  } finally {
    loaded.dispose();
  }
}

