/**
 * The instruct stage's data. Training records come from `makeInstructionRecords` (shapes captioning, VQA of
 * every question type, two-image 'difference' and 'match'; with source 'both' also emoji captioning and
 * matching), or from a JSON-lines file (data.jsonl). Images are decoded with the align run's own transform
 * (its imageSize, CLIP normalisation) and the generated set is cached on disk, since rendering thousands of
 * scenes is the slow part.
 *
 * Each record becomes one chat row: `<bos><|user|><image>[<image>]{instruction}<|end|><|assistant|>{output}<|end|>`
 * with the tokenizer's answer-only loss mask; every `<image>` is then widened to the N positions one image takes
 * (`N = 1 + (grid / imagePool)^2`), which the model fills with the projected image tokens.
 *
 * Evaluation uses shapes scenes of a stream no training record is drawn from ('instruct-heldout'): a few VQA
 * questions per scene (one per question type in turn) and, per other training task, held-out records scored
 * by exact match. The majority-answer baseline per question type is computed from the training answers.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { InstructionRecord, Pair, QA } from '../../data/types';
import { finalAnswer, makeInstructionRecords, readInstructions, recordImages, recordRng, vqaQuestion } from '../../data/instruct';
import { QA_TYPES, generateScenes, renderPng, rng, streamSeed, type Rng } from '../../data/shapes';
import { readFloat32File, writeFloat32File } from '../../data/f32file';
import { decodeImage, resolveTransform, type ImageTransform } from '../../data/image';
import { majorityBaseline } from '../../eval/vqa';
import { Tokenizer } from '../../tokenizer';
import { IMAGE } from '../../tokenizer/specials';
import { AlignConfig } from '../align/config';
import { alignPairs } from '../align/data';
import { batchRows } from '../lm/data';
import { writeAtomic } from '../run';
import { InstructConfig, InstructTaskName } from './config';

/** The image transform of an align run: what its data pipeline decoded images with. */
export function alignTransform(alignCfg: AlignConfig): ImageTransform {
  return { size: alignCfg.data.imageSize };
}

/** One example, before tokenization: its images (rows of an image table), the user text and the answers. */
export interface InstructExample {
  task: string;
  qtype?: string;
  /** The instruction / question, without `<image>` markers. */
  question: string;
  /** Reference answers (the first is the training target). */
  answers: string[];
  /** Rows of the image table, 1 or 2. */
  images: number[];
}

/** Tokenized rows: expanded ids (each `<image>` as N positions), loss mask, image rows and their first positions. */
export interface RowSet {
  /** Positions per image. */
  N: number;
  ids: Int32Array[];
  mask: Uint8Array[];
  images: number[][];
  slots: number[][];
  examples: InstructExample[];
}

export interface InstructData {
  tokenizer: Tokenizer;
  transform: ImageTransform;
  imageSize: number;
  /** Normalised images f32 [n, 3, S, S], training examples index into it. */
  trainImages: Float32Array;
  numTrainImages: number;
  train: RowSet;
  /** Held-out examples (VQA first, then the other tasks) and their images. */
  evalImages: Float32Array;
  numEvalImages: number;
  eval: InstructExample[];
  /** Training answers per VQA question type (for the baseline): every generated question, before data.vqaTypes / answerCap. */
  trainAnswers: Record<string, string[]>;
  /** Majority-answer VQA accuracy on the eval questions: overall and per type; null without VQA training data. */
  baseline: { overall: number; byType: Record<string, { accuracy: number; n: number }>; answers: Record<string, string> } | null;
  /** Training records dropped because they did not fit data.maxTextLen. */
  dropped: number;
  /** The cache directory and the cache keys of the train and eval image sets (train: null when read from data.jsonl). */
  cache: { dir: string; train: string | null; eval: string };
}

/** The user turn: one `<image>` per image, then the text (questionFirst: the text, then the images). */
export function userContent(question: string, numImages: number, questionFirst = false): string {
  return questionFirst ? question + IMAGE.repeat(numImages) : IMAGE.repeat(numImages) + question;
}

/**
 * The chat encoding of an example, `<image>` widened to N positions. With `answer` null the row ends in an open
 * `<|assistant|>` (a generation prompt). Returns null when the unexpanded text exceeds maxTextLen.
 */
export function encodeExample(tok: Tokenizer, question: string, numImages: number, answer: string | null, N: number, maxTextLen = Infinity, questionFirst = false): {
  ids: Int32Array; mask: Uint8Array; slots: number[];
} | null {
  const turns = [{ role: 'user' as const, content: userContent(question, numImages, questionFirst) }];
  if (answer !== null) turns.push({ role: 'assistant' as const, content: answer } as never);
  const enc = tok.chat(turns, { bos: true, addGenerationPrompt: answer === null });
  if (enc.ids.length > maxTextLen) return null;
  const imageId = tok.imageId;
  const ids: number[] = [];
  const mask: number[] = [];
  const slots: number[] = [];
  enc.ids.forEach((id, i) => {
    if (id === imageId) {
      slots.push(ids.length);
      for (let k = 0; k < N; k++) { ids.push(id); mask.push(0); }
    } else {
      ids.push(id);
      mask.push(enc.lossMask[i]);
    }
  });
  if (slots.length !== numImages) {
    throw new Error(`instruct data: the text ${JSON.stringify(question)} contains <image> itself; give the images separately`);
  }
  return { ids: Int32Array.from(ids), mask: Uint8Array.from(mask), slots };
}

/** Rows of the examples; an example longer than maxTextLen text tokens, or than maxLen positions expanded, is dropped. */
export function buildRows(tok: Tokenizer, examples: InstructExample[], N: number, maxTextLen: number, maxLen = Infinity, questionFirst = false): { rows: RowSet; dropped: number } {
  const rows: RowSet = { N, ids: [], mask: [], images: [], slots: [], examples: [] };
  let dropped = 0;
  for (const ex of examples) {
    const e = encodeExample(tok, ex.question, ex.images.length, ex.answers[0], N, maxTextLen, questionFirst);
    if (!e || e.ids.length > maxLen) { dropped++; continue; }
    rows.ids.push(e.ids);
    rows.mask.push(e.mask);
    rows.images.push(ex.images);
    rows.slots.push(e.slots);
    rows.examples.push(ex);
  }
  return { rows, dropped };
}

// ---------------------------------------------------------------------------------------------- the cache

interface CachedSet {
  examples: InstructExample[];
  images: Float32Array;
  numImages: number;
}

function cacheFiles(dir: string, key: string): { meta: string; bin: string } {
  return { meta: path.join(dir, `instruct-${key}.json`), bin: path.join(dir, `instruct-${key}.f32`) };
}

/**
 * The set cut down to the images `examples` use (renumbered in order of first use), e.g. the VQA records that
 * selectVqa kept of a larger pool. Its key, when the set has one, becomes the pool's key with `selection` hashed in,
 * so features cached for one selection are never read for another.
 */
export function compactImages(set: CachedSet & { key?: string }, examples: InstructExample[], px: number, selection: unknown): CachedSet & { key?: string } {
  const used = new Map<number, number>();
  for (const e of examples) for (const j of e.images) if (!used.has(j)) used.set(j, used.size);
  const images = new Float32Array(used.size * px);
  for (const [from, to] of used) images.set(set.images.subarray(from * px, (from + 1) * px), to * px);
  return {
    examples: examples.map((e) => ({ ...e, images: e.images.map((j) => used.get(j)!) })),
    images,
    numImages: used.size,
    ...(set.key ? { key: cacheKey({ pool: set.key, selection }) } : {}),
  };
}

/** A set from the cache when its key matches and the files are whole, else built and written (temp + rename). */
export function cacheKey(keyObj: unknown): string {
  return crypto.createHash('sha1').update(JSON.stringify(keyObj)).digest('hex').slice(0, 16);
}

async function cached(dir: string, keyObj: unknown, px: number, build: () => Promise<CachedSet>, status: (m: string) => void, what: string): Promise<CachedSet & { key: string }> {
  const key = cacheKey(keyObj);
  const f = cacheFiles(dir, key);
  if (fs.existsSync(f.meta) && fs.existsSync(f.bin)) {
    try {
      const meta = JSON.parse(fs.readFileSync(f.meta, 'utf8')) as { examples: InstructExample[]; numImages: number };
      const images = readFloat32File(f.bin, meta.numImages * px);
      if (images) {
        status(`${what}: ${meta.examples.length} examples from the cache ${f.meta}`);
        return { examples: meta.examples, images, numImages: meta.numImages, key };
      }
      status(`${what}: the cache ${f.bin} has the wrong size; rebuilding`);
    } catch (e) {
      status(`${what}: unreadable cache ${f.meta} (${(e as Error).message}); rebuilding`);
    }
  }
  const set = await build();
  fs.mkdirSync(dir, { recursive: true });
  writeFloat32File(f.bin, set.images);
  writeAtomic(f.meta, JSON.stringify({ key: keyObj, examples: set.examples, numImages: set.numImages }));
  return { ...set, key };
}

/**
 * The held-out questions asked of one scene: one of each question type it has, in turn from type `first`, until `n`
 * are asked (n <= 5: at most one per type, fewer where the scene lacks a type); for n > 5 further such rounds,
 * until n or the scene's questions run out. Never one question twice; n >= the scene's count asks all of them.
 */
export function pickEvalQuestions(qa: readonly QA[], n: number, r: Rng, first: number): QA[] {
  const left = QA_TYPES.map((_, k) => qa.filter((q) => q.type === QA_TYPES[(first + k) % QA_TYPES.length]));
  const out: QA[] = [];
  for (let round = 0; out.length < n && left.some((c) => c.length > 0) && (round === 0 || n > QA_TYPES.length); round++) {
    for (const cands of left) {
      if (out.length >= n) break;
      if (cands.length === 0) continue;
      const q = r.pick(cands);
      cands.splice(cands.indexOf(q), 1);
      out.push(q);
    }
  }
  return out;
}

/** Decodes records' images into one table; examples point at their rows. */
async function recordsToSet(records: InstructionRecord[], transform: ImageTransform, where: string): Promise<CachedSet> {
  const S = resolveTransform(transform).size;
  const px = 3 * S * S;
  const decoded: Float32Array[] = [];
  const examples: InstructExample[] = [];
  for (let i = 0; i < records.length; i++) {
    const rec = records[i];
    const label = `${where} record ${i}${typeof rec.id === 'string' ? ` (${rec.id})` : ''}`;
    const refs = recordImages(rec);
    const images: number[] = [];
    for (const [k, ref] of [['input_image', refs.input], ['reference_image', refs.reference]] as const) {
      if (!ref) continue;
      decoded.push(await decodeImage(ref, transform, `${label} ${k}`));
      images.push(decoded.length - 1);
    }
    examples.push({
      task: typeof rec.task === 'string' ? rec.task : 'instruction',
      ...(typeof rec.qtype === 'string' ? { qtype: rec.qtype } : {}),
      question: rec.instruction.split(IMAGE).join('').trim(),
      answers: [rec.output],
      images,
    });
  }
  const table = new Float32Array(decoded.length * px);
  decoded.forEach((d, i) => table.set(d, i * px));
  return { examples, images: table, numImages: decoded.length };
}

/** Shares of n over the tasks as listed (a task listed k times gets k shares), in first-seen order. */
export function taskCounts(tasks: readonly InstructTaskName[], n: number): Array<[InstructTaskName, number]> {
  const distinct = [...new Set(tasks)];
  const weight = (t: string): number => tasks.filter((x) => x === t).length;
  let left = n;
  return distinct.map((t, i) => {
    const c = i === distinct.length - 1 ? left : Math.round((n * weight(t)) / tasks.length);
    left -= c;
    return [t, c] as [InstructTaskName, number];
  });
}

/** True when data.vqaTypes / data.answerCap change the VQA mix (otherwise the generator's round robin is kept). */
export function reshapesVqa(d: InstructConfig['data']): boolean {
  return d.answerCap < 1 || QA_TYPES.some((q) => d.vqaTypes[q] !== d.vqaTypes.colour);
}

/**
 * How many VQA records to generate so that `selectVqa` finds its n (each type's round(n * w / sum(w))): n when
 * nothing is reshaped. Otherwise the generator's own questions are walked in record order (`vqaQuestion` on the
 * stream's scenes, no images drawn) until selectVqa's quotas are met, and the pool ends at the last record it
 * takes. (A fixed multiple of n came out short: types are missing from some scenes, one-object scenes have no
 * position question, so 20,000 position-only records gave 15,028.) The walk stops at 50 x n, where a type that
 * rare gives what was found. `seed`, `size` and `split` are the pool's, as makeInstructionRecords is called.
 */
export function vqaPoolSize(d: InstructConfig['data'], n: number, seed: number, size: number, split = 'train/vqa'): number {
  if (!reshapesVqa(d) || n === 0) return n;
  const quota = vqaQuotas(n, d.vqaTypes);
  const met = (keep: number[], pool: readonly InstructExample[]) =>
    [...quota].every(([q, k]) => keep.filter((i) => pool[i].qtype === q).length >= k);
  const pool: InstructExample[] = [];
  for (let chunk = n; pool.length < 50 * n; chunk = pool.length) {
    for (const scene of generateScenes({ seed, n: chunk, stream: split, size, first: pool.length })) {
      const j = pool.length;
      const qa = vqaQuestion(scene, j, recordRng(seed, 'shapes', split, j));
      pool.push({ task: 'vqa', qtype: qa.type, question: qa.question, answers: qa.answers, images: [] });
    }
    const keep = selectVqa(pool, n, d.vqaTypes, d.answerCap);
    if (met(keep, pool)) {
      // The prefix up to the last record taken, unless fewer distinct answers there lower the cap (then all).
      const end = keep[keep.length - 1] + 1;
      const prefix = pool.slice(0, end);
      return met(selectVqa(prefix, n, d.vqaTypes, d.answerCap), prefix) ? end : pool.length;
    }
  }
  return pool.length;
}

/** Each question type's number of records among n VQA records under `weights`: round(n * w / sum(w)). */
export function vqaQuotas(n: number, weights: Record<string, number>): Map<string, number> {
  const sum = QA_TYPES.reduce((a, q) => a + (weights[q] ?? 0), 0);
  return new Map(QA_TYPES.map((q) => [q as string, Math.round((n * (weights[q] ?? 0)) / sum)]));
}

/**
 * The VQA examples to train on, in pool order: per type round(n * w / sum(w)) examples, taking each in turn
 * unless its answer already has `cap` of its type's quota (cap raised to 1 / the type's distinct answers). A type
 * whose pool runs short gives what it has. An answer with a rationale counts as its conclusion (`finalAnswer`).
 * Indices into `examples`; other tasks' examples are not touched.
 */
export function selectVqa(examples: readonly InstructExample[], n: number, weights: Record<string, number>, cap: number): number[] {
  const quota = vqaQuotas(n, weights);
  const distinct = new Map<string, Set<string>>();
  for (const e of examples) if (e.task === 'vqa' && e.qtype) (distinct.get(e.qtype) ?? distinct.set(e.qtype, new Set()).get(e.qtype)!).add(finalAnswer(e.answers[0]));
  const taken = new Map<string, number>();
  const perAnswer = new Map<string, number>();
  const out: number[] = [];
  examples.forEach((e, i) => {
    if (e.task !== 'vqa' || !e.qtype) return;
    const q = quota.get(e.qtype) ?? 0;
    const t = taken.get(e.qtype) ?? 0;
    if (t >= q) return;
    const limit = Math.max(1, Math.ceil(q * Math.max(cap, 1 / (distinct.get(e.qtype)?.size ?? 1))));
    const key = `${e.qtype}\u0000${finalAnswer(e.answers[0])}`;
    const a = perAnswer.get(key) ?? 0;
    if (a >= limit) return;
    perAnswer.set(key, a + 1);
    taken.set(e.qtype, t + 1);
    out.push(i);
  });
  return out;
}

async function emojiPairs(alignCfg: AlignConfig): Promise<Pair[]> {
  const splits = alignPairs({ ...alignCfg, data: { ...alignCfg.data, dataset: 'emoji' } });
  return splits.train;
}

export async function prepareInstructData(cfg: InstructConfig, alignCfg: AlignConfig, tokenizer: Tokenizer, N: number, opts: {
  onStatus?: (m: string) => void;
  /** The GPT's context length: training rows longer than this (images expanded) are dropped (counted). */
  contextLength?: number;
} = {}): Promise<InstructData> {
  const status = opts.onStatus ?? (() => {});
  const transform = alignTransform(alignCfg);
  const S = transform.size;
  const px = 3 * S * S;
  const d = cfg.data;
  const dir = path.resolve(d.cacheDir || alignCfg.data.cacheDir);
  const VERSION = 1;

  // Training set.
  let trainSet: CachedSet & { key?: string };
  if (d.jsonl !== '') {
    status(`reading instructions from ${d.jsonl}`);
    const { records } = await readInstructions(d.jsonl);
    if (records.length === 0) throw new Error(`instruct data: key data.jsonl: ${d.jsonl} holds no records`);
    trainSet = await recordsToSet(records, transform, d.jsonl);
  } else {
    const counts = taskCounts(d.tasks, d.trainRecords).map(([t, n]) => [t, t === 'vqa' ? vqaPoolSize(d, n, cfg.seed, S, 'train/vqa') : n] as [InstructTaskName, number]);
    const rationale = d.rationale ?? 'none';
    trainSet = await cached(dir, { VERSION, kind: 'train', source: d.source, counts, seed: cfg.seed, transform: resolveTransform(transform), ...(rationale !== 'none' ? { rationale } : {}) }, px, async () => {
      const pairs = d.source === 'both' ? await emojiPairs(alignCfg) : undefined;
      const records: InstructionRecord[] = [];
      for (const [task, n] of counts) {
        if (n === 0) continue;
        status(`generating ${n} ${task} records`);
        // Each task draws its scenes from its own stream (split), so the tasks see different scenes.
        // Emoji records exist for captioning and matching only; VQA and difference stay on shapes with 'both'.
        const source = d.source === 'both' && (task === 'caption' || task === 'match') ? 'both' : 'shapes';
        records.push(...await makeInstructionRecords({ source, n, seed: cfg.seed, size: S, tasks: [task], split: `train/${task}`, emojiPairs: pairs, rationale }));
      }
      status(`decoding ${records.length} training records`);
      return recordsToSet(records, transform, 'instruct train');
    }, status, 'train');
  }
  // The natural answers of every generated VQA question (the baseline's majority answers), before any reshaping.
  const trainAnswers: Record<string, string[]> = {};
  for (const ex of trainSet.examples) {
    if (ex.task !== 'vqa' || !ex.qtype) continue;
    (trainAnswers[ex.qtype] ??= []).push(finalAnswer(ex.answers[0]));
  }
  let trainExamples = trainSet.examples;
  if (d.jsonl === '' && reshapesVqa(d)) {
    const nVqa = taskCounts(d.tasks, d.trainRecords).find(([t]) => t === 'vqa')?.[1] ?? 0;
    const keep = new Set(selectVqa(trainSet.examples, nVqa, d.vqaTypes, d.answerCap));
    trainExamples = trainSet.examples.filter((e, i) => e.task !== 'vqa' || keep.has(i));
    const mix: Record<string, number> = {};
    for (const e of trainExamples) if (e.task === 'vqa') mix[e.qtype ?? 'vqa'] = (mix[e.qtype ?? 'vqa'] ?? 0) + 1;
    status(`VQA mix: ${keep.size} of ${trainSet.examples.filter((e) => e.task === 'vqa').length} generated questions (${Object.entries(mix).map(([k, v]) => `${k} ${v}`).join(', ')})`);
    // Only the selected records' images go on (to the frozen encoder and its feature cache), not the whole pool.
    trainSet = compactImages(trainSet, trainExamples, px, { vqaTypes: d.vqaTypes, answerCap: d.answerCap, n: nVqa });
    trainExamples = trainSet.examples;
  }
  const { rows: train, dropped } = buildRows(tokenizer, trainExamples, N, d.maxTextLen, opts.contextLength ?? Infinity, cfg.model.questionFirst ?? false);
  if (dropped > 0) status(`warning: ${dropped} training records are longer than data.maxTextLen (${d.maxTextLen}) tokens or, images expanded, than the context (${opts.contextLength ?? 'unlimited'}) and were dropped`);
  if (train.ids.length === 0) throw new Error(`instruct data: no training record fits data.maxTextLen (${d.maxTextLen})`);

  // Held-out evaluation: VQA on scenes of a stream never used for training, then the other tasks' records.
  const evalTasks = [...new Set(d.jsonl !== '' ? ['vqa'] : d.tasks)].filter((t) => t !== 'vqa');
  const evalSet = await cached(dir, { VERSION, kind: 'eval', scenes: d.evalScenes, q: d.evalQuestionsPerScene, records: d.evalRecords, evalTasks, seed: cfg.seed, transform: resolveTransform(transform) }, px, async () => {
    status(`rendering ${d.evalScenes} held-out scenes`);
    const scenes = generateScenes({ seed: cfg.seed, n: d.evalScenes, stream: 'instruct-heldout', size: S });
    const decoded: Float32Array[] = [];
    const examples: InstructExample[] = [];
    for (let i = 0; i < scenes.length; i++) {
      const sc = scenes[i];
      const png = await renderPng(sc, S);
      decoded.push(await decodeImage({ kind: 'bytes', bytes: png, name: sc.id }, transform));
      const r = rng(streamSeed(cfg.seed, 'instruct-heldout-questions', i));
      for (const q of pickEvalQuestions(sc.qa, d.evalQuestionsPerScene, r, i)) {
        examples.push({ task: 'vqa', qtype: q.type, question: q.question, answers: [...q.answers], images: [decoded.length - 1] });
      }
    }
    const base = decoded.length;
    const other: InstructionRecord[] = [];
    for (const task of evalTasks) {
      if (d.evalRecords === 0) break;
      other.push(...await makeInstructionRecords({ source: 'shapes', n: d.evalRecords, seed: cfg.seed, size: S, tasks: [task as InstructTaskName], split: `instruct-heldout/${task}` }));
    }
    const o = await recordsToSet(other, transform, 'instruct eval');
    const images = new Float32Array((base + o.numImages) * px);
    decoded.forEach((x, i) => images.set(x, i * px));
    images.set(o.images, base * px);
    for (const ex of o.examples) examples.push({ ...ex, images: ex.images.map((j) => j + base) });
    return { examples, images, numImages: base + o.numImages };
  }, status, 'eval');

  const vqa = evalSet.examples.filter((e) => e.task === 'vqa');
  const baseline = Object.keys(trainAnswers).length > 0 && vqa.length > 0
    ? majorityBaseline(trainAnswers, vqa.map((e) => e.answers), vqa.map((e) => e.qtype ?? 'vqa'))
    : null;
  return {
    tokenizer, transform, imageSize: S,
    trainImages: trainSet.images, numTrainImages: trainSet.numImages, train,
    evalImages: evalSet.images, numEvalImages: evalSet.numImages, eval: evalSet.examples,
    trainAnswers, baseline, dropped, cache: { dir, train: trainSet.key ?? null, eval: evalSet.key },
  };
}

/** The training rows of a global step: rows by (seed, epoch) permutation, so resume sees the same batches. */
export function instructBatchRows(data: InstructData, step: number, batchSize: number, seed: number): Int32Array {
  return batchRows(step, batchSize, data.train.ids.length, seed);
}
