/**
 * The align stage's data: the dataset's splits as arrays the model and the evaluator read (preprocessed images
 * from the on-disk cache, tokenized captions), the tokenizer, and the stream of training batches prepared ahead in
 * worker threads (seeded, resumable at any step).
 */
import * as path from 'path';
import { loadEmoji } from '../../data/emoji';
import { reverseRelation, shapesDataset } from '../../data/shapes';
import { preprocessSplit, PreprocessItem } from '../../data/cache';
import { DataLoader, imageTextBatchTask } from '../../data/loader';
import { ImageTextBatch } from '../../data/image-text-task';
import { longTail, modalityBalanced, Rng, hashSeed } from '../../data/samplers';
import type { ImageRef, Pair, Splits } from '../../data/types';
import { Tokenizer, trainDefaultTokenizer } from '../../tokenizer';
import { AlignConfig } from './config';

/** One split as the model and the evaluator see it. */
export interface SplitData {
  name: string;
  /** f32 [numImages, 3, S, S], normalised (SharedArrayBuffer-backed). */
  images: Float32Array;
  numImages: number;
  /** The group (concept / scene) of each image: retrieval counts a match by group. */
  imageGroups: string[];
  /** i32 [numTexts, T], padded with the pad id (0); `<bos>` caption `<eos>`. */
  tokens: Int32Array;
  lengths: Int32Array;
  numTexts: number;
  textGroups: string[];
  texts: string[];
  /** For each text, the row of its own image. */
  pairImage: Int32Array;
  pairs: Pair[];
  /**
   * The caption of each pair with its relation reversed (shapes captions stating one; `reverseRelation`),
   * tokenized like `tokens`; a row of length 0 where the pair has none. For data.hardNegatives and the relation
   * test of evaluation.
   */
  negTokens: Int32Array;
  negLengths: Int32Array;
}

export interface AlignData {
  tokenizer: Tokenizer;
  tokenizerPath: string;
  train: SplitData;
  val: SplitData;
  test: SplitData | null;
  heldout: SplitData | null;
  /** Pairs removed by CLIP-score cleaning / made wrong on purpose (data.noise), for the record. */
  info: { filtered: number; noisy: number };
}

/** A training batch: rows are pairs, image row i belongs to caption row i. */
export interface Batch {
  images: Float32Array;
  tokens: Int32Array;
  lengths: Int32Array;
  /** Indices into data.train.pairs. */
  indices: Int32Array;
  /** data.hardNegatives: negative captions [K, T] for the rows `rows` [K] (ascending) of this batch. */
  negatives?: { tokens: Int32Array; lengths: Int32Array; rows: Int32Array };
}

export interface BatchStream {
  next(): Promise<Batch>;
  /** Milliseconds the training loop waited for data, in total. */
  waitMs(): number;
  close(): Promise<void>;
}

function imageKey(ref: ImageRef, fallback: string): string {
  if (ref.kind === 'file') return ref.path;
  return ref.name ?? fallback;
}

/** The pairs of each split, before images are decoded. */
export function alignPairs(cfg: AlignConfig): Splits<Pair> & { heldout?: Pair[] } {
  const d = cfg.data;
  const emoji = (): Splits<Pair> & { heldout?: Pair[] } => loadEmoji({
    trainVendor: d.trainVendor, testVendor: d.testVendor, langs: d.langs, heldOutFraction: d.heldOutFraction,
    seed: cfg.seed,
  }).splits;
  const shapes = (): Splits<Pair> => alignShapes(cfg).splits;
  if (d.dataset === 'emoji') return emoji();
  if (d.dataset === 'shapes') return shapes();
  if (d.dataset !== 'mixed') throw new Error(`align data: key data.dataset must be 'emoji', 'shapes' or 'mixed', got ${JSON.stringify(d.dataset)}`);
  return mixSplits(emoji(), shapes());
}

/** The shapes scenes (objects, captions, QA) of a 'shapes' or 'mixed' align config: data.shapesScenes train scenes, a fifth each for val and test. */
export function alignShapes(cfg: AlignConfig): ReturnType<typeof shapesDataset> {
  const n = cfg.data.shapesScenes;
  return shapesDataset({ seed: cfg.seed, train: n, val: Math.max(10, Math.round(n / 5)), test: Math.max(10, Math.round(n / 5)) });
}

/**
 * The 'mixed' source: emoji and shapes pairs split by split (train = both trains, val = both vals, test = emoji's
 * other-vendor test + shapes test, heldout = emoji's held-out concepts), emoji first, each pair's meta.source set
 * to 'emoji' or 'shapes' (shapes pairs already carry it).
 */
export function mixSplits(emoji: Splits<Pair> & { heldout?: Pair[] }, shapes: Splits<Pair>): Splits<Pair> & { heldout?: Pair[] } {
  const tag = (ps: Pair[] | undefined, source: string): Pair[] => (ps ?? []).map((p) => (p.meta.source === source ? p : { ...p, meta: { ...p.meta, source } }));
  const out: Splits<Pair> & { heldout?: Pair[] } = { train: [], val: [], test: [] };
  for (const name of new Set([...Object.keys(emoji), ...Object.keys(shapes)])) {
    out[name] = [...tag(emoji[name], 'emoji'), ...tag(shapes[name], 'shapes')];
  }
  return out;
}

/** A seeded subset of at most n items, in their original order. */
function subset<T>(xs: T[], n: number, seed: number): T[] {
  if (n <= 0 || n >= xs.length) return xs;
  const rng = new Rng(hashSeed(seed, 0x5ab5e7));
  const idx = Array.from({ length: xs.length }, (_, i) => i);
  for (let i = idx.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, n).sort((a, b) => a - b).map((i) => xs[i]);
}

/**
 * Shuffles the captions of a seeded `fraction` of the pairs among themselves (a rotation of a shuffled list, so
 * every chosen pair gets another pair's caption): the noisy web pairs CLIP-score cleaning should find. The
 * changed pairs get meta.noisy = true.
 */
export function addCaptionNoise(pairs: Pair[], fraction: number, seed: number): Pair[] {
  const k = Math.floor(pairs.length * fraction);
  if (k < 2) return pairs;
  const chosen = subset(pairs.map((_, i) => i), k, hashSeed(seed, 0x0015e));
  const rng = new Rng(hashSeed(seed, 0x5eed));
  for (let i = chosen.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [chosen[i], chosen[j]] = [chosen[j], chosen[i]];
  }
  const out = pairs.slice();
  for (let i = 0; i < chosen.length; i++) {
    const dst = chosen[i];
    const src = pairs[chosen[(i + 1) % chosen.length]];
    out[dst] = { ...pairs[dst], text: src.text, captions: src.captions, meta: { ...pairs[dst].meta, noisy: true, captionOf: src.group } };
  }
  return out;
}

export interface PrepareOptions {
  onStatus?: (msg: string) => void;
  /** A tokenizer to use instead of training one (a later stage, or the filter, reuses the align tokenizer). */
  tokenizer?: { tokenizer: Tokenizer; path: string };
  /** Keep only these training pairs (CLIP-score cleaning decided by the caller). */
  keepTrain?: (p: Pair, i: number) => boolean;
  /** Splits to build (default all). */
  splits?: Array<'train' | 'val' | 'test' | 'heldout'>;
}

/** Decodes (or reads from the cache) a split's images and tokenizes its captions. */
export async function buildSplit(name: string, pairs: Pair[], tok: Tokenizer, cfg: AlignConfig, opts: {
  perPairImages?: boolean; onStatus?: (m: string) => void;
} = {}): Promise<SplitData> {
  const items: PreprocessItem[] = [];
  const index = new Map<string, number>();
  const imageGroups: string[] = [];
  const pairImage = new Int32Array(pairs.length);
  pairs.forEach((p, i) => {
    // Training batches gather image row = pair row, so the train split has one image row per pair.
    const k = opts.perPairImages ? `${imageKey(p.image, p.id)}#${i}` : imageKey(p.image, p.id);
    let r = index.get(k);
    if (r === undefined) {
      r = items.length;
      index.set(k, r);
      items.push({ id: k, image: p.image });
      imageGroups.push(p.group);
    }
    pairImage[i] = r;
  });
  let lastPct = -1;
  const pre = await preprocessSplit(items, { size: cfg.data.imageSize }, {
    cacheDir: cfg.data.cacheDir, key: `${cfg.data.dataset}-${name}`, shared: true,
    onProgress: (done, total) => {
      const pct = Math.floor((100 * done) / total);
      if (pct >= lastPct + 25 || done === total) {
        lastPct = pct;
        opts.onStatus?.(`decoding ${name} images ${done}/${total}`);
      }
    },
  });
  if (pre.ids.length !== items.length) throw new Error(`align data: ${name}: ${items.length - pre.ids.length} images could not be decoded`);
  const T = cfg.tokenizer.contextLength;
  const texts = pairs.map((p) => p.text);
  const enc = tok.encodeBatch(texts, { maxLen: T, bos: true, eos: true, padTo: 'max' });
  const { negTokens, negLengths } = negativeTokens(pairs, tok, T, enc.ids);
  return {
    name, images: pre.data, numImages: items.length, imageGroups, tokens: enc.ids, lengths: enc.lengths,
    numTexts: pairs.length, textGroups: pairs.map((p) => p.group), texts, pairImage, pairs, negTokens, negLengths,
  };
}

/**
 * Relation-reversed captions of the shapes pairs, tokenized (length 0 where a pair has none). A caption cut at
 * tokenizer.contextLength before its relation word has none either: its reversed tokens would equal its own.
 */
function negativeTokens(pairs: Pair[], tok: Tokenizer, T: number, captionIds: Int32Array): { negTokens: Int32Array; negLengths: Int32Array } {
  const negTokens = new Int32Array(pairs.length * T);
  const negLengths = new Int32Array(pairs.length);
  const neg = pairs.map((p) => (p.meta.source === 'emoji' ? null : reverseRelation(p.text)));
  const idx = neg.flatMap((n, i) => (n === null ? [] : [i]));
  if (idx.length > 0) {
    const enc = tok.encodeBatch(idx.map((i) => neg[i]!), { maxLen: T, bos: true, eos: true, padTo: 'max' });
    const W = enc.ids.length / idx.length;
    idx.forEach((i, k) => {
      const ids = enc.ids.subarray(k * W, k * W + Math.min(W, T));
      if (ids.every((v, t) => v === captionIds[i * T + t])) return;
      negTokens.set(ids, i * T);
      negLengths[i] = enc.lengths[k];
    });
  }
  return { negTokens, negLengths };
}

export async function prepareAlignData(cfg: AlignConfig, opts: PrepareOptions = {}): Promise<AlignData> {
  const status = opts.onStatus ?? (() => {});
  const splits = alignPairs(cfg);
  let train = subset(splits.train, cfg.data.maxTrain, cfg.seed);
  let noisy = 0;
  if (cfg.data.noise > 0) {
    train = addCaptionNoise(train, cfg.data.noise, cfg.seed);
    noisy = train.filter((p) => p.meta.noisy === true).length;
  }
  let filtered = 0;
  if (cfg.data.filter) {
    const f = cfg.data.filter;
    status(`CLIP-score cleaning of ${train.length} pairs with ${f.checkpoint}`);
    // Required here, not at the top: filter.ts builds on this module.
    const { cleanPairs } = require('./filter') as typeof import('./filter');
    const r = await cleanPairs(f.checkpoint, train, { threshold: f.threshold, keepFraction: f.keepFraction, cacheDir: cfg.data.cacheDir });
    filtered += r.dropped.length;
    train = r.kept;
  }
  if (opts.keepTrain) {
    const before = train.length;
    train = train.filter(opts.keepTrain);
    filtered = before - train.length;
  }
  if (train.length < cfg.train.batchSize) {
    throw new Error(`align data: ${train.length} training pairs, fewer than train.batchSize ${cfg.train.batchSize}`);
  }
  let tok = opts.tokenizer;
  if (!tok) {
    status(`tokenizer: vocabulary ${cfg.tokenizer.vocabSize} on the captions and WordNet`);
    const t = trainDefaultTokenizer({
      vocabSize: cfg.tokenizer.vocabSize, captions: splits.train.map((p) => p.text),
      maxGlosses: cfg.tokenizer.glosses, cachePath: path.join(cfg.data.cacheDir, 'tokenizer'),
    });
    tok = { tokenizer: t.tokenizer, path: t.path };
  }
  const want = new Set(opts.splits ?? (cfg.data.finalEval ? ['train', 'val', 'test', 'heldout'] : ['train', 'val']));
  const build = async (name: string, pairs: Pair[] | undefined, perPair = false): Promise<SplitData | null> =>
    pairs && pairs.length > 0 && want.has(name as 'train') ? buildSplit(name, pairs, tok!.tokenizer, cfg, { perPairImages: perPair, onStatus: status }) : null;
  const trainData = await build('train', train, true);
  const valPairs = cfg.data.evalSize > 0 ? subset(splits.val, cfg.data.evalSize, cfg.seed + 1) : splits.val;
  const val = await build('val', valPairs);
  const test = await build('test', splits.test);
  const heldout = await build('heldout', splits.heldout);
  return {
    tokenizer: tok.tokenizer, tokenizerPath: tok.path,
    train: trainData ?? emptySplit('train'), val: val ?? emptySplit('val'), test, heldout, info: { filtered, noisy },
  };
}

function emptySplit(name: string): SplitData {
  return {
    name, images: new Float32Array(0), numImages: 0, imageGroups: [], tokens: new Int32Array(0), lengths: new Int32Array(0),
    numTexts: 0, textGroups: [], texts: [], pairImage: new Int32Array(0), pairs: [], negTokens: new Int32Array(0), negLengths: new Int32Array(0),
  };
}

/** Lengths from padded rows: the pad id is 0 and never appears inside a caption. */
function lengthsOf(tokens: Int32Array, B: number, T: number): Int32Array {
  const out = new Int32Array(B);
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let t = 0; t < T; t++) if (tokens[b * T + t] !== 0) n = t + 1;
    out[b] = n;
  }
  return out;
}

/**
 * The training batches from global step `fromStep` on: the same sequence whether or not the run was interrupted
 * (shuffle by (seed, epoch), augmentation by (seed, step, row)), prepared ahead in `data.workers` threads.
 */
export function makeBatchStream(cfg: AlignConfig, data: AlignData, fromStep: number): BatchStream {
  const tr = data.train;
  const S = cfg.data.imageSize;
  const T = cfg.tokenizer.contextLength;
  const d = cfg.data;
  let sampler;
  if (d.balance) {
    const key = d.balanceKey;
    sampler = modalityBalanced(tr.pairs, (p) => String(p.meta[key]), d.balance, { seed: cfg.seed, numSamples: tr.numTexts });
  } else if (d.longTail > 0) {
    sampler = longTail(tr.pairs, (p) => p.group, { seed: cfg.seed, numSamples: tr.numTexts, threshold: d.longTail });
  }
  const loader = new DataLoader<ImageTextBatch, Batch>({
    ...(sampler ? { sampler } : { length: tr.numTexts, shuffle: true }),
    batchSize: cfg.train.batchSize, dropLast: true, seed: cfg.seed, workers: d.workers, prefetch: 2,
    makeBatch: imageTextBatchTask({
      images: tr.images, imageShape: [tr.numImages, 3, S, S], tokens: tr.tokens, tokenShape: [tr.numTexts, T],
      augment: { cropScale: d.augment.cropScale, jitter: d.augment.jitter > 0 ? { brightness: d.augment.jitter, contrast: d.augment.jitter, saturation: d.augment.jitter } : undefined },
    }),
    finish: (b) => {
      const B = b.indices.length;
      const out: Batch = { images: b.images, tokens: b.tokens!, lengths: lengthsOf(b.tokens!, B, T), indices: b.indices };
      if (d.hardNegatives === 'relation') {
        const rows: number[] = [];
        for (let r = 0; r < B; r++) if (tr.negLengths[b.indices[r]] > 0) rows.push(r);
        const tokens = new Int32Array(rows.length * T);
        const lengths = new Int32Array(rows.length);
        rows.forEach((r, k) => {
          const i = b.indices[r];
          tokens.set(tr.negTokens.subarray(i * T, (i + 1) * T), k * T);
          lengths[k] = tr.negLengths[i];
        });
        out.negatives = { tokens, lengths, rows: Int32Array.from(rows) };
      }
      return out;
    },
  });
  const it = loader.batches(fromStep);
  let waited = 0;
  return {
    async next() {
      const t0 = performance.now();
      const r = await it.next();
      waited += performance.now() - t0;
      if (r.done) throw new Error('align data: the batch stream ended');
      return r.value;
    },
    waitMs: () => waited,
    close: async () => {
      await it.return(undefined);
      await loader.close();
    },
  };
}
