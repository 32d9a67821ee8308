/**
 * The caption stage's data: the align stage's pairs (the same dataset, split and seed as the align run), images
 * at the align checkpoint's imageSize from the on-disk cache (via buildSplit), captions tokenized with the
 * language model's tokenizer as `<bos> caption <eos>`, and for evaluation each held-out image with every
 * caption of its pairs (Pair.captions) as references.
 */
import { Rng, hashSeed } from '../../data/samplers';
import type { Pair } from '../../data/types';
import { Tokenizer } from '../../tokenizer';
import { AlignConfig } from '../align/config';
import { groundedCaption, type SceneObject } from '../../data/shapes';
import { alignPairs, alignShapes, buildSplit, SplitData } from '../align/data';
import { LmSplit, batchRows, gatherRows, packDocuments } from '../lm/data';
import { SceneQaText, sceneQaTexts } from '../../data/instruct';
import { CaptionConfig } from './config';

export interface CaptionData {
  tokenizer: Tokenizer;
  /** Caption tokens per row (data.maxTextLen). */
  T: number;
  imageSize: number;
  /** Training pairs: images by row, tokens [numTexts, T], pairImage maps a caption row to its image row. */
  train: SplitData;
  /**
   * Evaluation images (val split, at most data.evalSamples; with several sources, that many split evenly
   * between them) and their reference captions, the source of each ('emoji' | 'shapes'), and for shapes scenes
   * their objects (null for other sources).
   */
  eval: { images: Float32Array; numImages: number; ids: string[]; refs: string[][]; sources: string[]; objects: Array<SceneObject[] | null> };
  /** The sources present in the eval rows, in order of first appearance. */
  sources: string[];
  /** Per source, the most common training caption (ties: the first in code-unit order): the train-prior baseline. */
  priorCaption: Record<string, string>;
}

/** A pair's source: meta.source, else the align dataset's name ('emoji' pairs carry none). */
export function pairSource(p: Pair, dataset: string): string {
  const s = p.meta.source;
  return typeof s === 'string' && s !== '' ? s : dataset === 'mixed' ? 'emoji' : dataset;
}

/** The most common text of `pairs` per source (ties: the smallest in code-unit order). */
export function priorCaptions(pairs: readonly Pair[], dataset: string): Record<string, string> {
  const counts = new Map<string, Map<string, number>>();
  for (const p of pairs) {
    const src = pairSource(p, dataset);
    const m = counts.get(src) ?? new Map<string, number>();
    m.set(p.text, (m.get(p.text) ?? 0) + 1);
    counts.set(src, m);
  }
  const out: Record<string, string> = {};
  for (const [src, m] of counts) {
    out[src] = [...m.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))[0][0];
  }
  return out;
}

/** A seeded subset of at most n items, in their original order. */
function subset<T>(xs: T[], n: number, seed: number): T[] {
  if (n <= 0 || n >= xs.length) return xs;
  const rng = new Rng(hashSeed(seed, 0xca9710));
  const idx = Array.from({ length: xs.length }, (_, i) => i);
  for (let i = idx.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, n).sort((a, b) => a - b).map((i) => xs[i]);
}

/**
 * The splits with every shapes pair's text (and references) replaced by its scene's grounded caption
 * (data.shapesCaptions 'grounded'); other pairs unchanged.
 */
function groundSplits<S extends Record<string, Pair[] | undefined>>(splits: S, ac: AlignConfig): S {
  if (ac.data.dataset === 'emoji') throw new Error("caption data: key data.shapesCaptions 'grounded' needs shapes scenes, but the align run's data.dataset is 'emoji'");
  const objects = new Map<string, SceneObject[]>();
  for (const scenes of Object.values(alignShapes(ac).scenes)) for (const sc of scenes ?? []) objects.set(sc.id, sc.objects);
  const out: Record<string, Pair[] | undefined> = {};
  for (const [name, pairs] of Object.entries(splits)) {
    out[name] = pairs?.map((p) => {
      const o = pairSource(p, ac.data.dataset) === 'shapes' ? objects.get(p.id) : undefined;
      if (!o) return p;
      const text = groundedCaption(o);
      return { ...p, text, captions: [text] };
    });
  }
  return out as S;
}

/** The references of a pair: its alternative captions (or its one text). */
export function pairRefs(p: Pair): string[] {
  const c = p.captions && p.captions.length > 0 ? p.captions : [p.text];
  return [...new Set([p.text, ...c])];
}

export async function prepareCaptionData(cfg: CaptionConfig, alignCfg: AlignConfig, tokenizer: Tokenizer, opts: {
  onStatus?: (m: string) => void;
} = {}): Promise<CaptionData> {
  const T = cfg.data.maxTextLen;
  const ac: AlignConfig = {
    ...alignCfg,
    data: { ...alignCfg.data, cacheDir: cfg.data.cacheDir || alignCfg.data.cacheDir, shapesScenes: (cfg.data.shapesScenes ?? 0) || alignCfg.data.shapesScenes },
    tokenizer: { ...alignCfg.tokenizer, contextLength: T },
  };
  const splits = (cfg.data.shapesCaptions ?? 'scene') === 'grounded' ? groundSplits(alignPairs(ac), ac) : alignPairs(ac);
  const trainPairs = subset(splits.train, cfg.data.maxTrain, cfg.seed);
  if (trainPairs.length < 1) throw new Error('caption data: the align run\'s dataset has no training pairs');
  const train = await buildSplit('caption-train', trainPairs, tokenizer, ac, { onStatus: opts.onStatus });
  // Evaluation: one row per distinct val image, with every caption of its pairs as references.
  const valPairs = splits.val;
  const val = await buildSplit('caption-val', valPairs, tokenizer, ac, { onStatus: opts.onStatus });
  const refs: string[][] = Array.from({ length: val.numImages }, () => []);
  const ids: string[] = Array.from({ length: val.numImages }, () => '');
  const srcOf: string[] = Array.from({ length: val.numImages }, () => '');
  valPairs.forEach((p, i) => {
    const r = val.pairImage[i];
    for (const c of pairRefs(p)) if (!refs[r].includes(c)) refs[r].push(c);
    if (ids[r] === '') {
      ids[r] = p.id;
      srcOf[r] = pairSource(p, ac.data.dataset);
    }
  });
  const sources = [...new Set(srcOf)];
  let rows: number[];
  if (sources.length <= 1) {
    rows = subset(Array.from({ length: val.numImages }, (_, i) => i), cfg.data.evalSamples, cfg.seed + 1);
  } else {
    // An even share of data.evalSamples per source, so that each source's scores rest on enough images.
    const per = cfg.data.evalSamples > 0 ? Math.ceil(cfg.data.evalSamples / sources.length) : 0;
    rows = sources.flatMap((src, j) => subset(srcOf.flatMap((s, r) => (s === src ? [r] : [])), per, cfg.seed + 1 + j));
  }
  // Scene objects of the shapes val scenes, for object recall / precision.
  const sceneObjects = new Map<string, SceneObject[]>();
  if (ac.data.dataset !== 'emoji') for (const sc of alignShapes(ac).scenes.val) sceneObjects.set(sc.id, sc.objects);
  const S = ac.data.imageSize;
  const px = 3 * S * S;
  const images = new Float32Array(rows.length * px);
  rows.forEach((r, j) => images.set(val.images.subarray(r * px, (r + 1) * px), j * px));
  return {
    tokenizer, T, imageSize: S, train,
    eval: {
      images, numImages: rows.length, ids: rows.map((r) => ids[r]), refs: rows.map((r) => refs[r]), sources: rows.map((r) => srcOf[r]),
      objects: rows.map((r) => (srcOf[r] === 'shapes' ? sceneObjects.get(ids[r]) ?? null : null)),
    },
    sources: [...new Set(rows.map((r) => srcOf[r]))],
    priorCaption: priorCaptions(trainPairs, ac.data.dataset),
  };
}

/** The training batch of a global step: rows by (seed, epoch) permutation, so resume sees the same batches. */
export function captionBatch(data: CaptionData, step: number, batchSize: number, seed: number): {
  images: Float32Array; tokens: Int32Array; lengths: Int32Array; rows: Int32Array;
} {
  const tr = data.train;
  const rows = batchRows(step, batchSize, tr.numTexts, seed);
  const S = data.imageSize;
  const px = 3 * S * S;
  const T = data.T;
  const images = new Float32Array(batchSize * px);
  const tokens = new Int32Array(batchSize * T);
  const lengths = new Int32Array(batchSize);
  rows.forEach((r, j) => {
    const img = tr.pairImage[r];
    images.set(tr.images.subarray(img * px, (img + 1) * px), j * px);
    tokens.set(tr.tokens.subarray(r * T, (r + 1) * T), j * T);
    lengths[j] = tr.lengths[r];
  });
  return { images, tokens, lengths, rows };
}

/**
 * The text-only scene questions of data.sceneQa (the lm stage's 'train' stream, so the questions an lm run with
 * data.sceneQa >= N trained on), `<bos> text <eos>` packed into rows of T tokens (the GPT's context length), and
 * the data.sceneQaEval held-out ones (the lm stage's 'val' stream). Both empty when data.sceneQa is 0.
 */
export function captionSceneQa(cfg: CaptionConfig, tokenizer: Tokenizer, T: number): { train: LmSplit; val: SceneQaText[] } {
  const n = cfg.data.sceneQa ?? 0;
  if (n === 0) return { train: { tokens: new Int32Array(0), rows: 0, documents: 0 }, val: [] };
  const docs = sceneQaTexts(cfg.seed, n, 'train').map((q) => tokenizer.encode(`${q.prompt} ${q.answer}`));
  const train = packDocuments(docs, T, tokenizer.bosId, tokenizer.eosId, cfg.seed);
  if (train.rows < cfg.train.sceneQaBatch) {
    throw new Error(`caption data: key data.sceneQa (${n}) fills ${train.rows} rows of ${T} tokens, fewer than train.sceneQaBatch ${cfg.train.sceneQaBatch}; raise data.sceneQa`);
  }
  return { train, val: sceneQaTexts(cfg.seed, cfg.data.sceneQaEval, 'val') };
}

/** The scene-question rows of a global step, [batchSize, T] (a function of step alone, like captionBatch). */
export function sceneQaBatch(split: LmSplit, step: number, batchSize: number, T: number, seed: number): Int32Array {
  return gatherRows(split, batchRows(step, batchSize, split.rows, hashSeed(seed, 0x5ce9e)), T);
}
