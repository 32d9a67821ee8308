/**
 * The filtering hook of CLIP-score cleaning: score every item in batches, keep those at or above a threshold (or
 * the best `keepFraction`), and hand the kept indices to a sampler or loader as `filter`.
 *
 *   const r = await filterByScore(pairs, (batch) => clipScores(model, batch), { keepFraction: 0.8, batchSize: 256 });
 *   new DataLoader({ length: pairs.length, filter: r.keptIndices, ... });
 */

export interface FilterOptions {
  /** Keep items whose score is >= threshold. */
  threshold?: number;
  /** Keep the best ceil(keepFraction * N) items (ties at the cut are broken by index, lower first). */
  keepFraction?: number;
  /** Items per call of the score function (default 256). */
  batchSize?: number;
}

export interface FilterResult<T> {
  kept: T[];
  dropped: T[];
  /** The score of every item, in input order. */
  scores: Float32Array;
  /** The threshold used: the given one, or the lowest kept score for keepFraction (Infinity when none is kept). */
  threshold: number;
  /** Indices of the kept items, ascending: what samplers and the loader take as `filter`. */
  keptIndices: Int32Array;
  droppedIndices: Int32Array;
}

export async function filterByScore<T>(
  items: readonly T[],
  score: (batch: T[]) => Promise<Float32Array> | Float32Array,
  opts: FilterOptions,
): Promise<FilterResult<T>> {
  const who = 'filterByScore';
  if (!Array.isArray(items)) throw new Error(`${who}: items must be an array`);
  const hasT = opts.threshold !== undefined;
  const hasF = opts.keepFraction !== undefined;
  if (hasT === hasF) throw new Error(`${who}: give exactly one of threshold and keepFraction (got ${hasT ? 'both' : 'neither'})`);
  if (hasT && Number.isNaN(opts.threshold)) throw new Error(`${who}: threshold is NaN`);
  if (hasF && !(opts.keepFraction! >= 0 && opts.keepFraction! <= 1)) throw new Error(`${who}: keepFraction must be in [0, 1], got ${opts.keepFraction}`);
  const batchSize = opts.batchSize ?? 256;
  if (!Number.isInteger(batchSize) || batchSize <= 0) throw new Error(`${who}: batchSize must be a positive integer, got ${opts.batchSize}`);

  const n = items.length;
  const scores = new Float32Array(n);
  for (let start = 0; start < n; start += batchSize) {
    const batch = items.slice(start, Math.min(n, start + batchSize));
    const s = await score(batch);
    if (!(s instanceof Float32Array) || s.length !== batch.length) {
      const got = s instanceof Float32Array ? `a Float32Array of length ${s.length}` : String(s && (s as object).constructor?.name);
      throw new Error(`${who}: the score function must return a Float32Array with one score per item; for items ${start}..${start + batch.length - 1} it returned ${got}`);
    }
    for (let j = 0; j < s.length; j++) {
      if (Number.isNaN(s[j])) throw new Error(`${who}: the score of item ${start + j} is NaN`);
    }
    scores.set(s, start);
  }

  const keep = new Uint8Array(n);
  let threshold: number;
  if (hasT) {
    threshold = opts.threshold!;
    for (let i = 0; i < n; i++) keep[i] = scores[i] >= threshold ? 1 : 0;
  } else {
    const k = Math.ceil(opts.keepFraction! * n);
    // Stable order: by score descending, then by index, so the cut is reproducible when scores tie.
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
    for (let r = 0; r < k; r++) keep[order[r]] = 1;
    threshold = k > 0 ? scores[order[k - 1]] : Infinity;
  }

  const kept: T[] = [];
  const dropped: T[] = [];
  const ki: number[] = [];
  const di: number[] = [];
  for (let i = 0; i < n; i++) {
    if (keep[i]) { kept.push(items[i]); ki.push(i); } else { dropped.push(items[i]); di.push(i); }
  }
  return { kept, dropped, scores, threshold, keptIndices: Int32Array.from(ki), droppedIndices: Int32Array.from(di) };
}
