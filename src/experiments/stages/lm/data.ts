/**
 * The lm stage's data: the text corpus (emoji captions of the align training split + WordNet glosses, and
 * optionally text-only questions about generated scenes), the
 * tokenizer (a given tokenizer.json, or the align stage's default one: same inputs, same cache file), documents
 * split into train and validation, each packed into fixed-length sequences, and the seeded batch order.
 *
 * Packing (GPT-2, nanoGPT): every document becomes `<bos> text <eos>`, the documents of a split are
 * concatenated in a seeded order and cut into rows of contextLength tokens; the tail shorter than a row is
 * dropped. A row may hold the end of one document and the start of the next: the model learns that <eos> is
 * followed by <bos> and a new text, which costs nothing and wastes no padding.
 */
import * as path from 'path';
import { Rng, hashSeed } from '../../data/samplers';
import { Tokenizer, textCorpus, trainDefaultTokenizer } from '../../tokenizer';
import { resolveAlignConfig } from '../align/config';
import { alignPairs } from '../align/data';
import { SceneQaText, sceneQaTexts } from '../../data/instruct';
import { LmConfig } from './config';

export interface LmSplit {
  /** i32 [rows, T]: packed sequences. */
  tokens: Int32Array;
  rows: number;
  documents: number;
}

export interface LmData {
  tokenizer: Tokenizer;
  tokenizerPath: string;
  /** Sequence length (model.contextLength). */
  T: number;
  train: LmSplit;
  val: LmSplit;
  /** Held-out scene questions (data.sceneQaEval of them when data.sceneQa > 0, else none), for val/scene_qa_acc. */
  sceneQaVal: SceneQaText[];
  info: { captions: number; documents: number; sceneQa: number; trainTokens: number; valTokens: number };
}

export interface PrepareLmOptions {
  onStatus?: (msg: string) => void;
  /** A tokenizer to use instead of cfg.tokenizer (a caller that already holds the align stage's). */
  tokenizer?: { tokenizer: Tokenizer; path: string };
}

/**
 * The captions of the align stage's emoji training split for the same data keys and seed: the texts its default
 * tokenizer was trained on. Held-out concepts are not among them.
 */
export function alignCaptions(cfg: LmConfig): string[] {
  const d = cfg.data;
  const align = resolveAlignConfig(null, {
    seed: cfg.seed,
    data: { dataset: 'emoji', langs: d.langs, trainVendor: d.trainVendor, testVendor: d.testVendor, heldOutFraction: d.heldOutFraction, cacheDir: d.cacheDir },
    tokenizer: { vocabSize: cfg.tokenizer.vocabSize, glosses: cfg.tokenizer.glosses },
  });
  return alignPairs(align).train.map((p) => p.text);
}

/** The tokenizer of cfg.tokenizer: the file at `path`, or the default one of the align stage (trained once, cached). */
export function lmTokenizer(cfg: LmConfig, captions: readonly string[]): { tokenizer: Tokenizer; path: string; fromCache: boolean } {
  if (cfg.tokenizer.path !== '') {
    const file = path.resolve(cfg.tokenizer.path);
    let tokenizer: Tokenizer;
    try {
      tokenizer = Tokenizer.fromFile(file);
    } catch (e) {
      throw new Error(`lm config: key tokenizer.path: cannot load ${file}: ${(e as Error).message}`);
    }
    return { tokenizer, path: file, fromCache: true };
  }
  // Exactly the align stage's call (stages/align/data.ts), so both find the same cache file; with
  // tokenizer.sceneTexts the scene texts join the captions (the cache key covers them).
  const scene = sceneQaTexts(cfg.seed, cfg.tokenizer.sceneTexts, 'tokenizer').map((q) => `${q.prompt} ${q.answer}`);
  const t = trainDefaultTokenizer({
    vocabSize: cfg.tokenizer.vocabSize, captions: [...captions, ...scene], maxGlosses: cfg.tokenizer.glosses, cachePath: path.join(cfg.data.cacheDir, 'tokenizer'),
  });
  return { tokenizer: t.tokenizer, path: t.path, fromCache: t.fromCache };
}

/** Document i goes to validation when a hash of (seed, i) falls under valFraction: stable, no shuffle needed. */
export function isValDocument(seed: number, i: number, valFraction: number): boolean {
  return hashSeed(seed, 0x1a7a1, i) / 4294967296 < valFraction;
}

/** `<bos> doc <eos>` for each document (in a seeded order), concatenated and cut into rows of T tokens. */
export function packDocuments(docs: readonly (readonly number[])[], T: number, bos: number, eos: number, seed: number): LmSplit {
  const order = docs.map((_, i) => i);
  const rng = new Rng(hashSeed(seed, 0xd0c5));
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  let total = 0;
  for (const d of docs) total += d.length + 2;
  const rows = Math.floor(total / T);
  const out = new Int32Array(rows * T);
  let o = 0;
  const put = (id: number): boolean => {
    if (o >= out.length) return false;
    out[o++] = id;
    return true;
  };
  for (const i of order) {
    if (!put(bos)) break;
    for (const id of docs[i]) if (!put(id)) break;
    if (!put(eos)) break;
  }
  return { tokens: out, rows, documents: docs.length };
}

/**
 * Rows of batch `step`: row r of the stream is permutation_e[r mod N] with epoch e = floor(r / N) and a
 * permutation seeded by (seed, e). A function of step alone, so a resumed run sees exactly the same batches.
 */
export function batchRows(step: number, batchSize: number, numRows: number, seed: number): Int32Array {
  const out = new Int32Array(batchSize);
  let cachedEpoch = -1;
  let perm: Int32Array | null = null;
  for (let j = 0; j < batchSize; j++) {
    const r = step * batchSize + j;
    const e = Math.floor(r / numRows);
    if (e !== cachedEpoch) {
      perm = epochPermutation(numRows, seed, e);
      cachedEpoch = e;
    }
    out[j] = perm![r % numRows];
  }
  return out;
}

const permCache = new Map<string, Int32Array>();

function epochPermutation(n: number, seed: number, epoch: number): Int32Array {
  const key = `${n}:${seed}:${epoch}`;
  let p = permCache.get(key);
  if (!p) {
    p = Int32Array.from({ length: n }, (_, i) => i);
    const rng = new Rng(hashSeed(seed, 0xe90c, epoch));
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = p[i]; p[i] = p[j]; p[j] = t;
    }
    if (permCache.size > 8) permCache.clear();
    permCache.set(key, p);
  }
  return p;
}

/** Gather rows of a split into one Int32Array [rows.length, T]. */
export function gatherRows(split: LmSplit, rows: ArrayLike<number>, T: number): Int32Array {
  const out = new Int32Array(rows.length * T);
  for (let j = 0; j < rows.length; j++) out.set(split.tokens.subarray(rows[j] * T, (rows[j] + 1) * T), j * T);
  return out;
}

/** The corpus, the tokenizer, and the packed train / validation sequences. */
export function prepareLmData(cfg: LmConfig, opts: PrepareLmOptions = {}): LmData {
  const status = opts.onStatus ?? (() => {});
  const d = cfg.data;
  const T = cfg.model.contextLength;
  // The align captions are needed for the default tokenizer even when they stay out of the corpus.
  const needCaptions = d.captions || (!opts.tokenizer && cfg.tokenizer.path === '');
  status('corpus: emoji captions and WordNet glosses');
  const captions = needCaptions ? alignCaptions(cfg) : [];
  let tok = opts.tokenizer;
  if (!tok) {
    status(cfg.tokenizer.path ? `tokenizer: ${cfg.tokenizer.path}` : `tokenizer: vocabulary ${cfg.tokenizer.vocabSize} (the align stage's default)`);
    const t = lmTokenizer(cfg, captions);
    tok = { tokenizer: t.tokenizer, path: t.path };
  }
  const tokenizer = tok.tokenizer;
  const bos = tokenizer.bosId, eos = tokenizer.eosId;
  // Captions repeat across concepts in a few places; a document is counted once.
  const texts = [...new Set(textCorpus({ captions: d.captions ? captions : [], maxGlosses: d.glosses }))];
  const trainDocs: number[][] = [], valDocs: number[][] = [];
  let trainTokens = 0, valTokens = 0;
  status(`tokenizing ${texts.length} documents`);
  texts.forEach((text, i) => {
    const ids = tokenizer.encode(text);
    if (isValDocument(cfg.seed, i, d.valFraction)) {
      valDocs.push(ids);
      valTokens += ids.length + 2;
    } else {
      trainDocs.push(ids);
      trainTokens += ids.length + 2;
    }
  });
  // Scene questions all train: the validation perplexity stays that of the text corpus, and the held-out
  // questions (another stream of scenes) are scored by their answers instead.
  if (d.sceneQa > 0) {
    status(`generating ${d.sceneQa} scene questions`);
    for (const q of sceneQaTexts(cfg.seed, d.sceneQa, 'train', d.sceneQaRationale)) {
      const ids = tokenizer.encode(`${q.prompt} ${q.answer}`);
      trainDocs.push(ids);
      trainTokens += ids.length + 2;
    }
  }
  const sceneQaVal = d.sceneQa > 0 ? sceneQaTexts(cfg.seed, d.sceneQaEval, 'val', d.sceneQaRationale) : [];
  const train = packDocuments(trainDocs, T, bos, eos, cfg.seed);
  const val = packDocuments(valDocs, T, bos, eos, cfg.seed + 1);
  if (train.rows < cfg.train.batchSize) {
    throw new Error(`lm data: ${train.rows} training sequences of ${T} tokens, fewer than train.batchSize ${cfg.train.batchSize} ` +
      '(raise data.glosses or lower model.contextLength / train.batchSize)');
  }
  if (val.rows === 0) {
    throw new Error(`lm data: the validation split (${valDocs.length} documents, ${valTokens} tokens) fills no sequence of ${T} tokens; raise data.valFraction or data.glosses`);
  }
  return {
    tokenizer, tokenizerPath: tok.path, T, train, val, sceneQaVal,
    info: { captions: d.captions ? captions.length : 0, documents: texts.length, sceneQa: d.sceneQa, trainTokens, valTokens },
  };
}
