/**
 * Cross-modal retrieval metrics from embeddings: Recall@K, mAP, median and mean rank, both directions.
 *
 * ```ts
 * const m = retrievalMetrics(imgEmb, txtEmb, imgGroups, txtGroups);   // [N, D] and [M, D], L2-normalised
 * m.i2t.r1; m.t2i.mAP; tracker.log(step, m.flat());                    // 'i2t/r@1', 't2i/map', ...
 * ```
 *
 * Relevance is by group key: text j is relevant to image i when txtGroups[j] === imgGroups[i] (and the same
 * the other way), so several texts can match an image and several images a text (one emoji concept drawn by
 * two vendors). Similarity is the dot product (cosine for unit rows), computed with ml.matmul in chunks of
 * query rows ([chunk, M] at a time); only each query's ranks of its relevant items are kept, never N x M.
 *
 * Ties are pessimistic: a relevant item whose score equals an irrelevant one's ranks after it, so constant or
 * collapsed embeddings score at (or below) chance instead of looking perfect. Ties among relevant items do not
 * change any metric here (they occupy the same set of positions whichever way they are ordered).
 * See docs/eval.md for the definitions and the metric key names.
 */
import { Tensor } from '../../api/tensor';
import { tensor } from '../../api/creation';
import { matmul } from '../../api/ops/matmul';
import { slice } from '../../api/ops/layout';

/** Embeddings: a 2-D Tensor [rows, dim] (any float dtype, any device), or a flat row-major Float32Array. */
export type Embeddings = Tensor | Float32Array;

export interface RetrievalOptions {
  /** Extra K for Recall@K beyond the always-reported 1, 5 and 10. */
  ks?: number[];
  /** Query rows per similarity chunk (default: as many as fit 4M scores, i.e. 16 MB of f32). */
  chunk?: number;
  /**
   * Normalise rows to unit L2 norm first. Default false: rows must already be unit norm (within 1e-2, which
   * bf16 embeddings meet) or an Error names the argument and the row; a zero row is always an error.
   */
  normalize?: boolean;
  /**
   * A query with no relevant item in the gallery (its group appears only on its own side) is an error by
   * default, naming the query; with `skipMissing: true` it is left out and counted in `skipped`.
   */
  skipMissing?: boolean;
}

/** The metrics of one direction. Recall values are fractions in [0, 1]; ranks are 1-based. */
export interface DirectionMetrics {
  r1: number;
  r5: number;
  r10: number;
  /** Recall@K for every K asked for (always 1, 5, 10 plus `opts.ks`). */
  recall: Record<number, number>;
  /** Mean over queries of average precision over all of the query's relevant items. */
  mAP: number;
  /** Median over queries of the rank of the first relevant item (mean of the middle two for an even count). */
  medianRank: number;
  /** Mean over queries of the rank of the first relevant item. */
  meanRank: number;
  /** Queries scored. */
  queries: number;
  /** Queries left out for having no relevant item (only with `skipMissing`). */
  skipped: number;
}

export interface RetrievalMetrics {
  i2t: DirectionMetrics;
  t2i: DirectionMetrics;
  /**
   * Flat metric names for SQLite (stable, documented in docs/eval.md): `i2t/r@1`, `i2t/r@5`, `i2t/r@10`
   * (plus `r@K` for extra ks), `i2t/map`, `i2t/median_rank`, `i2t/mean_rank`, and the same under `t2i/`.
   */
  flat(): Record<string, number>;
}

export const DEFAULT_KS: readonly number[] = [1, 5, 10];
const CHUNK_SCORES = 1 << 22;
const NORM_TOL = 1e-2;

/** A checked copy of an embedding matrix as f32 rows, with its dimensions. */
interface Rows { data: Float32Array; rows: number; dim: number }

function describeValue(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return `an array of length ${x.length}`;
  if (x instanceof Tensor) return `Tensor [${x.shape.join(', ')}]`;
  return typeof x;
}

/**
 * Read an embedding argument into f32 rows, checking shape and finiteness. `rows` is the expected row count
 * (from the group labels) or undefined, `dim` the expected width or undefined.
 */
export function readEmbeddings(fn: string, name: string, x: Embeddings, rows?: number, dim?: number): Rows {
  let data: Float32Array;
  let n: number;
  let d: number;
  if (x instanceof Tensor) {
    if (x.shape.length !== 2) {
      throw new Error(`${fn}: ${name} must be a 2-D tensor [rows, dim], got shape [${x.shape.join(', ')}]`);
    }
    if (x.dtype === 'i32') throw new Error(`${fn}: ${name} must be a float tensor, got dtype i32`);
    [n, d] = x.shape;
    data = x.toArray() as Float32Array;
  } else if (x instanceof Float32Array) {
    if (rows !== undefined) {
      n = rows;
      if (n === 0 ? x.length !== 0 : x.length % n !== 0) {
        throw new Error(`${fn}: ${name} has ${x.length} values, not a whole number of rows for ${n} rows`);
      }
      d = n === 0 ? (dim ?? 0) : x.length / n;
    } else if (dim !== undefined && dim > 0) {
      if (x.length % dim !== 0) throw new Error(`${fn}: ${name} has ${x.length} values, not a multiple of dim ${dim}`);
      d = dim;
      n = x.length / dim;
    } else {
      throw new Error(`${fn}: ${name} is a flat Float32Array and its width is unknown: pass { dim }`);
    }
    data = x;
  } else {
    throw new TypeError(`${fn}: ${name} must be a Tensor or a Float32Array, got ${describeValue(x)}`);
  }
  if (rows !== undefined && n !== rows) {
    throw new Error(`${fn}: ${name} has ${n} rows but its group labels have ${rows} entries`);
  }
  if (dim !== undefined && d !== dim) {
    throw new Error(`${fn}: ${name} has width ${d} but the other embeddings have width ${dim}`);
  }
  if (n > 0 && d === 0) throw new Error(`${fn}: ${name} has zero width`);
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      throw new Error(`${fn}: ${name} has a non-finite value ${data[i]} at row ${Math.floor(i / d)}, column ${i % d}`);
    }
  }
  return { data, rows: n, dim: d };
}

/** Check (or, with normalize, make) unit-norm rows; returns the rows to use (a copy when normalised). */
function unitRows(fn: string, name: string, r: Rows, normalize: boolean): Rows {
  const out = normalize ? new Float32Array(r.data.length) : r.data;
  for (let i = 0; i < r.rows; i++) {
    let ss = 0;
    for (let j = 0; j < r.dim; j++) ss += r.data[i * r.dim + j] * r.data[i * r.dim + j];
    const norm = Math.sqrt(ss);
    if (norm === 0) throw new Error(`${fn}: ${name} row ${i} is all zeros (cannot be L2-normalised)`);
    if (normalize) {
      for (let j = 0; j < r.dim; j++) out[i * r.dim + j] = r.data[i * r.dim + j] / norm;
    } else if (Math.abs(norm - 1) > NORM_TOL) {
      throw new Error(`${fn}: ${name} row ${i} has L2 norm ${norm.toPrecision(4)}, expected 1 ` +
        '(L2-normalise the embeddings, or pass { normalize: true })');
    }
  }
  return { data: out, rows: r.rows, dim: r.dim };
}

function checkGroups(fn: string, name: string, g: unknown): string[] {
  if (!Array.isArray(g)) throw new TypeError(`${fn}: ${name} must be an array of strings, got ${describeValue(g)}`);
  for (let i = 0; i < g.length; i++) {
    if (typeof g[i] !== 'string') {
      throw new TypeError(`${fn}: ${name}[${i}] must be a string group key, got ${describeValue(g[i])}`);
    }
  }
  return g as string[];
}

function checkKs(fn: string, ks: unknown): number[] {
  if (ks === undefined) return [...DEFAULT_KS];
  if (!Array.isArray(ks)) throw new TypeError(`${fn}: opts.ks must be an array of positive integers`);
  for (const k of ks) {
    if (!Number.isInteger(k) || k < 1) throw new RangeError(`${fn}: opts.ks has ${k}; each K must be a positive integer`);
  }
  return [...new Set([...DEFAULT_KS, ...(ks as number[])])].sort((a, b) => a - b);
}

/**
 * The ranks (1-based, ascending) of a query's relevant items among all gallery items, pessimistic on ties.
 * `scores` is the query's row of similarities, `rel` the relevant gallery indices, `isRel` a 0/1 mark of them.
 *
 * Rather than sorting the whole row (M log M), sort the r relevant scores (descending) and, for each
 * irrelevant item scoring at least the lowest relevant score, binary-search the first relevant score it
 * reaches (<=) and count it there; a prefix sum then gives, for the i-th relevant item, how many irrelevant
 * items rank ahead of it: rank_i = i + 1 + ahead_i. O(M log r).
 */
export function relevantRanks(scores: ArrayLike<number>, rel: readonly number[], isRel: Uint8Array): Float64Array {
  const r = rel.length;
  const relScores = new Float64Array(r);
  for (let i = 0; i < r; i++) relScores[i] = scores[rel[i]];
  relScores.sort();
  relScores.reverse();
  const lowest = relScores[r - 1];
  const ahead = new Int32Array(r + 1);
  for (let k = 0; k < scores.length; k++) {
    if (isRel[k]) continue;
    const x = scores[k];
    if (x < lowest) continue;
    // First p with relScores[p] <= x (relScores is descending): every relevant item from p on has an
    // irrelevant item tied with or above it.
    let lo = 0;
    let hi = r - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (relScores[mid] <= x) hi = mid; else lo = mid + 1;
    }
    ahead[lo]++;
  }
  const ranks = new Float64Array(r);
  let above = 0;
  for (let i = 0; i < r; i++) {
    above += ahead[i];
    ranks[i] = i + 1 + above;
  }
  return ranks;
}

/** Gallery indices by group key. */
function indexGroups(groups: readonly string[]): Map<string, number[]> {
  const m = new Map<string, number[]>();
  groups.forEach((g, i) => {
    const list = m.get(g);
    if (list) list.push(i); else m.set(g, [i]);
  });
  return m;
}

function median(xs: Float64Array): number {
  const s = Float64Array.from(xs).sort();
  const n = s.length;
  return n % 2 === 1 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/**
 * One direction: every query row against the whole gallery, in chunks of query rows. `queryT` and
 * `galleryT` are f32 CPU tensors [Q, D] and [G, D].
 */
function direction(fn: string, dir: string, queryT: Tensor, galleryT: Tensor, qGroups: readonly string[],
  gGroups: readonly string[], ks: number[], chunk: number, skipMissing: boolean): DirectionMetrics {
  const Q = qGroups.length;
  const G = gGroups.length;
  const byGroup = indexGroups(gGroups);
  const isRel = new Uint8Array(G);
  const firstRanks: number[] = [];
  const hits = new Float64Array(ks.length);
  let apSum = 0;
  let skipped = 0;
  for (let start = 0; start < Q; start += chunk) {
    const end = Math.min(Q, start + chunk);
    const q = slice(queryT, 0, start, end);
    let s: Float32Array;
    try {
      const sim = matmul(q, galleryT, { transB: true });   // [end - start, G]: q @ gallery^T, no transpose copy
      s = sim.toArray() as Float32Array;
      sim.dispose();
    } finally {
      q.dispose();
    }
    for (let i = start; i < end; i++) {
      const rel = byGroup.get(qGroups[i]);
      if (!rel) {
        if (skipMissing) { skipped++; continue; }
        throw new Error(`${fn}: ${dir} query ${i} (group ${JSON.stringify(qGroups[i])}) has no relevant item ` +
          'in the gallery (pass { skipMissing: true } to leave such queries out)');
      }
      for (const j of rel) isRel[j] = 1;
      const ranks = relevantRanks(s.subarray((i - start) * G, (i - start + 1) * G), rel, isRel);
      for (const j of rel) isRel[j] = 0;
      const first = ranks[0];
      firstRanks.push(first);
      for (let t = 0; t < ks.length; t++) if (first <= ks[t]) hits[t]++;
      // Average precision: mean over the relevant items of precision at each one's rank, (i + 1) / rank_i.
      let ap = 0;
      for (let t = 0; t < ranks.length; t++) ap += (t + 1) / ranks[t];
      apSum += ap / ranks.length;
    }
  }
  const n = firstRanks.length;
  if (n === 0) throw new Error(`${fn}: ${dir}: no query has a relevant item in the gallery (all ${Q} skipped)`);
  const recall: Record<number, number> = {};
  ks.forEach((k, t) => { recall[k] = hits[t] / n; });
  const fr = Float64Array.from(firstRanks);
  let sum = 0;
  for (const x of fr) sum += x;
  return {
    r1: recall[1], r5: recall[5], r10: recall[10], recall,
    mAP: apSum / n, medianRank: median(fr), meanRank: sum / n, queries: n, skipped,
  };
}

function flatten(i2t: DirectionMetrics, t2i: DirectionMetrics): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [dir, m] of [['i2t', i2t], ['t2i', t2i]] as const) {
    for (const k of Object.keys(m.recall).map(Number).sort((a, b) => a - b)) out[`${dir}/r@${k}`] = m.recall[k];
    out[`${dir}/map`] = m.mAP;
    out[`${dir}/median_rank`] = m.medianRank;
    out[`${dir}/mean_rank`] = m.meanRank;
  }
  return out;
}

/**
 * Retrieval metrics in both directions. `img` is [N, D] with `imgGroups` of length N, `txt` [M, D] with
 * `txtGroups` of length M. A flat Float32Array takes its row count from its group labels.
 *
 * ```ts
 * const m = retrievalMetrics(img, txt, ['cat', 'dog'], ['cat', 'cat', 'dog']);
 * m.flat();   // { 'i2t/r@1': ..., 'i2t/r@5': ..., 'i2t/r@10': ..., 'i2t/map': ..., 'i2t/median_rank': ..., ... }
 * ```
 */
export function retrievalMetrics(img: Embeddings, txt: Embeddings, imgGroups: string[], txtGroups: string[],
  opts: RetrievalOptions = {}): RetrievalMetrics {
  const fn = 'retrievalMetrics';
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${fn}: opts must be an object`);
  const ig = checkGroups(fn, 'imgGroups', imgGroups);
  const tg = checkGroups(fn, 'txtGroups', txtGroups);
  if (ig.length === 0) throw new Error(`${fn}: imgGroups is empty (no images to evaluate)`);
  if (tg.length === 0) throw new Error(`${fn}: txtGroups is empty (no texts to evaluate)`);
  const ks = checkKs(fn, opts.ks);
  if (opts.chunk !== undefined && (!Number.isInteger(opts.chunk) || opts.chunk < 1)) {
    throw new RangeError(`${fn}: opts.chunk must be a positive integer, got ${opts.chunk}`);
  }
  const normalize = opts.normalize ?? false;
  const imgRows = unitRows(fn, 'img', readEmbeddings(fn, 'img', img, ig.length), normalize);
  const txtRows = unitRows(fn, 'txt', readEmbeddings(fn, 'txt', txt, tg.length, imgRows.dim), normalize);
  const D = imgRows.dim;
  const imgT = tensor(imgRows.data, [ig.length, D]);
  const txtT = tensor(txtRows.data, [tg.length, D]);
  try {
    const chunkFor = (G: number): number => opts.chunk ?? Math.max(1, Math.floor(CHUNK_SCORES / G));
    const skip = opts.skipMissing ?? false;
    const i2t = direction(fn, 'i2t', imgT, txtT, ig, tg, ks, chunkFor(tg.length), skip);
    const t2i = direction(fn, 't2i', txtT, imgT, tg, ig, ks, chunkFor(ig.length), skip);
    return { i2t, t2i, flat: () => flatten(i2t, t2i) };
  } finally {
    imgT.dispose();
    txtT.dispose();
  }
}

/**
 * The top k gallery items for each query by dot product (cosine for unit rows), best first; ties go to the
 * lower gallery index. For retrieval examples in notebooks.
 *
 * ```ts
 * const { indices, scores } = topK(txtEmb.slice(0, 0, 1), imgEmb, 5);   // the 5 best images for text 0
 * ```
 * `query` may be [Q, D] or a single [D] Float32Array; a flat Float32Array gallery needs `opts.dim` unless the
 * query is a Tensor. Returns one row of k indices and scores per query (k is capped at the gallery size).
 */
export function topK(query: Embeddings, gallery: Embeddings, k: number, opts: { dim?: number } = {}):
  { indices: number[][]; scores: number[][] } {
  const fn = 'topK';
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`topK: k must be a positive integer, got ${k}`);
  let dim = opts.dim;
  if (dim === undefined && query instanceof Tensor && query.shape.length === 2) dim = query.shape[1];
  if (dim === undefined && gallery instanceof Tensor && gallery.shape.length === 2) dim = gallery.shape[1];
  if (dim === undefined && query instanceof Float32Array && !(gallery instanceof Float32Array)) dim = query.length;
  const g = readEmbeddings(fn, 'gallery', gallery, undefined, dim);
  const q = readEmbeddings(fn, 'query', query, undefined, g.dim);
  if (g.rows === 0) throw new Error('topK: gallery is empty');
  if (q.rows === 0) throw new Error('topK: query is empty');
  const kk = Math.min(k, g.rows);
  const qT = tensor(q.data, [q.rows, q.dim]);
  const gT = tensor(g.data, [g.rows, g.dim]);
  let s: Float32Array;
  try {
    const sim = matmul(qT, gT, { transB: true });   // [Q, G]: fine for the few queries a notebook shows
    s = sim.toArray() as Float32Array;
    sim.dispose();
  } finally {
    qT.dispose(); gT.dispose();
  }
  const indices: number[][] = [];
  const scores: number[][] = [];
  for (let i = 0; i < q.rows; i++) {
    const row = s.subarray(i * g.rows, (i + 1) * g.rows);
    const order = Array.from({ length: g.rows }, (_, j) => j);
    order.sort((a, b) => row[b] - row[a] || a - b);
    indices.push(order.slice(0, kk));
    scores.push(order.slice(0, kk).map((j) => row[j]));
  }
  return { indices, scores };
}

/** log C(n, k), via log-gamma-free summation (exact enough for n up to millions). */
function logChoose(n: number, k: number): number {
  if (k < 0 || k > n) return -Infinity;
  let s = 0;
  const kk = Math.min(k, n - k);
  for (let i = 1; i <= kk; i++) s += Math.log((n - kk + i) / i);
  return s;
}

/**
 * Chance levels for reports: the expected metrics of a uniformly random ranking (what random embeddings
 * score on average), same keys as `flat()` minus `map`. For a query with r relevant items among G:
 * P(hit@K) = 1 - C(G - r, K) / C(G, K); E[first relevant rank] = (G + 1) / (r + 1). Averaged over queries.
 */
export function chanceLevels(imgGroups: string[], txtGroups: string[], ks: number[] = [...DEFAULT_KS]):
  Record<string, number> {
  const fn = 'chanceLevels';
  const ig = checkGroups(fn, 'imgGroups', imgGroups);
  const tg = checkGroups(fn, 'txtGroups', txtGroups);
  if (ig.length === 0 || tg.length === 0) throw new Error(`${fn}: imgGroups and txtGroups must both be non-empty`);
  const kList = checkKs(fn, ks);
  const out: Record<string, number> = {};
  for (const [dir, qg, gg] of [['i2t', ig, tg], ['t2i', tg, ig]] as const) {
    const counts = new Map<string, number>();
    for (const g of gg) counts.set(g, (counts.get(g) ?? 0) + 1);
    const G = gg.length;
    const hit = new Float64Array(kList.length);
    let meanRank = 0;
    let n = 0;
    for (const g of qg) {
      const r = counts.get(g) ?? 0;
      if (r === 0) continue;
      n++;
      kList.forEach((k, t) => {
        hit[t] += k >= G - r + 1 ? 1 : 1 - Math.exp(logChoose(G - r, k) - logChoose(G, k));
      });
      meanRank += (G + 1) / (r + 1);
    }
    if (n === 0) throw new Error(`${fn}: no ${dir} query has a relevant item`);
    kList.forEach((k, t) => { out[`${dir}/r@${k}`] = hit[t] / n; });
    out[`${dir}/mean_rank`] = meanRank / n;
  }
  return out;
}
