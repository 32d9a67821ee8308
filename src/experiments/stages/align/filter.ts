/**
 * CLIP-score data cleaning (as in LAION and DataComp): score every image-text pair with a trained align
 * checkpoint (the cosine similarity of the pair's image and text embeddings) and keep the pairs above a threshold
 * or the best fraction. `modalab filter` and the align config's `data.filter` use it.
 */
import * as fs from 'fs';
import { filterByScore, FilterResult } from '../../data/filter';
import type { Pair } from '../../data/types';
import { Tokenizer } from '../../tokenizer';
import { loadCheckpoint, readCheckpointState } from '../checkpoint';
import { AlignConfig } from './config';
import { buildSplit } from './data';
import { AlignModel, buildAlignModel } from './model';

/** A trained align model with its tokenizer and config, for scoring. Dispose it when done. */
export interface Scorer {
  model: AlignModel;
  tokenizer: Tokenizer;
  config: AlignConfig;
  dispose(): void;
}

export function loadScorer(checkpoint: string): Scorer {
  const st = readCheckpointState(checkpoint);
  if (st.stage !== 'align') throw new Error(`filter: ${checkpoint} is a ${st.stage} checkpoint; CLIP-score cleaning needs an align checkpoint`);
  const tokPath = (st.extra as { tokenizer?: string } | undefined)?.tokenizer;
  if (!tokPath || !fs.existsSync(tokPath)) throw new Error(`filter: the tokenizer of ${checkpoint} (${tokPath ?? 'not recorded'}) is missing`);
  const tokenizer = Tokenizer.fromFile(tokPath);
  const config = st.config as AlignConfig;
  const model = buildAlignModel(config, tokenizer.vocabSize);
  loadCheckpoint(checkpoint, model.net, null);
  return { model, tokenizer, config, dispose: () => model.dispose() };
}

/** The cosine similarity of each pair's image and caption under the scorer's model. */
export async function scorePairs(scorer: Scorer, pairs: Pair[], opts: { cacheDir?: string } = {}): Promise<Float32Array> {
  const cfg = { ...scorer.config, data: { ...scorer.config.data, cacheDir: opts.cacheDir ?? scorer.config.data.cacheDir } };
  const split = await buildSplit('score', pairs, scorer.tokenizer, cfg);
  const { img, txt, dim } = scorer.model.embed(split);
  const out = new Float32Array(pairs.length);
  const norm = (a: Float32Array, o: number): number => {
    let s = 0;
    for (let k = 0; k < dim; k++) s += a[o + k] * a[o + k];
    return Math.sqrt(s) || 1;
  };
  for (let i = 0; i < pairs.length; i++) {
    const io = split.pairImage[i] * dim;
    const to = i * dim;
    let s = 0;
    for (let k = 0; k < dim; k++) s += img[io + k] * txt[to + k];
    out[i] = s / (norm(img, io) * norm(txt, to));
  }
  return out;
}

export interface CleanOptions {
  threshold?: number;
  keepFraction?: number;
  cacheDir?: string;
}

/** Scores the pairs with a checkpoint and splits them into kept and dropped. */
export async function cleanPairs(checkpoint: string, pairs: Pair[], opts: CleanOptions): Promise<FilterResult<Pair>> {
  const scorer = loadScorer(checkpoint);
  try {
    const scores = await scorePairs(scorer, pairs, { cacheDir: opts.cacheDir });
    const byId = new Map(pairs.map((p, i) => [p, scores[i]]));
    return await filterByScore(pairs, (batch) => Float32Array.from(batch, (p) => byId.get(p)!), {
      threshold: opts.threshold, keepFraction: opts.keepFraction, batchSize: 4096,
    });
  } finally {
    scorer.dispose();
  }
}

/** How well a cleaning removed the pairs known to be wrong (meta.noisy). */
export function noiseReport(r: FilterResult<Pair>): { noisy: number; clean: number; noisyRemoved: number; cleanKept: number } {
  const isNoisy = (p: Pair): boolean => p.meta.noisy === true;
  const noisy = r.kept.filter(isNoisy).length + r.dropped.filter(isNoisy).length;
  const clean = r.kept.length + r.dropped.length - noisy;
  return {
    noisy, clean,
    noisyRemoved: noisy ? r.dropped.filter(isNoisy).length / noisy : 0,
    cleanKept: clean ? r.kept.filter((p) => !isNoisy(p)).length / clean : 0,
  };
}
