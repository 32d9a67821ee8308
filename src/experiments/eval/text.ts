/**
 * Caption metrics: corpus BLEU-4 (Papineni et al. 2002) and ROUGE-L (Lin 2004), multiple references each.
 *
 * ```ts
 * corpusBleu(['a red circle'], [['a red circle on the left', 'one red circle']]).bleu;
 * rougeL(['a red circle'], [['a red circle on the left']]).rougeL;
 * ```
 *
 * A text is either a string, tokenised by `tokenize` (lowercase, then split on every run of characters that
 * are not Unicode letters or digits: "Red-ish, 2 cats!" -> ["red", "ish", "2", "cats"]), or an array of tokens
 * used as given (no lowercasing), which is how the NLTK examples in the tests are fed in.
 * See docs/eval.md for the definitions and what they were checked against.
 */

/** A sentence: raw text (tokenised by `tokenize`) or tokens used as they are. */
export type Text = string | readonly string[];

/** Lowercase, then split on runs of anything that is not a Unicode letter or digit; empty pieces dropped. */
export function tokenize(s: string): string[] {
  return s.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter((t) => t.length > 0);
}

function describeValue(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return `an array of length ${x.length}`;
  return typeof x;
}

function toTokens(fn: string, where: string, t: unknown): readonly string[] {
  if (typeof t === 'string') return tokenize(t);
  if (Array.isArray(t)) {
    for (let i = 0; i < t.length; i++) {
      if (typeof t[i] !== 'string') throw new TypeError(`${fn}: ${where}[${i}] must be a string token, got ${describeValue(t[i])}`);
    }
    return t as string[];
  }
  throw new TypeError(`${fn}: ${where} must be a string or an array of tokens, got ${describeValue(t)}`);
}

/** Check hyps/refs shapes and tokenise everything. */
function readCorpus(fn: string, hyps: unknown, refs: unknown): { h: (readonly string[])[]; r: (readonly string[])[][] } {
  if (!Array.isArray(hyps)) throw new TypeError(`${fn}: hyps must be an array of sentences, got ${describeValue(hyps)}`);
  if (!Array.isArray(refs)) throw new TypeError(`${fn}: refs must be an array (one list of references per hypothesis), got ${describeValue(refs)}`);
  if (hyps.length !== refs.length) {
    throw new Error(`${fn}: hyps has ${hyps.length} sentences but refs has ${refs.length} reference lists (one per hypothesis)`);
  }
  if (hyps.length === 0) throw new Error(`${fn}: hyps is empty (nothing to score)`);
  const h = hyps.map((x, i) => toTokens(fn, `hyps[${i}]`, x));
  const r = refs.map((list, i) => {
    if (!Array.isArray(list)) throw new TypeError(`${fn}: refs[${i}] must be an array of reference sentences, got ${describeValue(list)}`);
    if (list.length === 0) throw new Error(`${fn}: refs[${i}] is empty (hypothesis ${i} has no reference)`);
    return list.map((x, j) => toTokens(fn, `refs[${i}][${j}]`, x));
  });
  return { h, r };
}

/** n-gram counts of a token list, keyed by the tokens joined with U+0001 (which the tokeniser never emits). */
function ngramCounts(tokens: readonly string[], n: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const key = tokens.slice(i, i + n).join('\u0001');
    m.set(key, (m.get(key) ?? 0) + 1);
  }
  return m;
}

export type BleuSmoothing = 'none' | 'epsilon' | 'add1';

export interface BleuOptions {
  /** n-gram orders (default 4: BLEU-4). Ignored when `weights` is given (its length is the order). */
  maxN?: number;
  /** Weights of log p_n (default uniform 1/maxN). */
  weights?: number[];
  /**
   * Smoothing of the n-gram precisions (Chen & Cherry 2014), for sentence-level scores where a zero 4-gram
   * match count would otherwise make BLEU 0:
   * - 'none' (default, as Papineni and NLTK's default): any zero precision gives BLEU 0;
   * - 'epsilon': a zero match count becomes `epsilon` (default 0.1) — NLTK SmoothingFunction().method1;
   * - 'add1': add 1 to the matches and the totals of orders n >= 2 (Lin & Och 2004, "BLEU+1") — NLTK method2.
   */
  smoothing?: BleuSmoothing;
  epsilon?: number;
}

export interface BleuResult {
  /** The score in [0, 1] (multiply by 100 for the usual reporting scale). */
  bleu: number;
  /** Modified n-gram precisions p_1..p_N before smoothing (matches / totals; 0 when totals is 0). */
  precisions: number[];
  /** Clipped n-gram matches and hypothesis n-gram totals per order, summed over the corpus. */
  matches: number[];
  totals: number[];
  /** Brevity penalty: 1 if c > r, else exp(1 - r / c) (0 when c = 0). */
  bp: number;
  /** c / r: hypothesis length over effective reference length. */
  ratio: number;
  hypLength: number;
  refLength: number;
}

function bleuOptions(fn: string, opts: BleuOptions): { weights: number[]; smoothing: BleuSmoothing; epsilon: number } {
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${fn}: opts must be an object`);
  let weights: number[];
  if (opts.weights !== undefined) {
    if (!Array.isArray(opts.weights) || opts.weights.length === 0) throw new TypeError(`${fn}: opts.weights must be a non-empty array of numbers`);
    for (const w of opts.weights) {
      if (typeof w !== 'number' || !Number.isFinite(w) || w < 0) throw new RangeError(`${fn}: opts.weights has ${w}; weights must be finite and >= 0`);
    }
    weights = [...opts.weights];
  } else {
    const n = opts.maxN ?? 4;
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`${fn}: opts.maxN must be a positive integer, got ${n}`);
    weights = new Array<number>(n).fill(1 / n);
  }
  const smoothing = opts.smoothing ?? 'none';
  if (smoothing !== 'none' && smoothing !== 'epsilon' && smoothing !== 'add1') {
    throw new RangeError(`${fn}: opts.smoothing must be 'none', 'epsilon' or 'add1', got ${JSON.stringify(smoothing)}`);
  }
  const epsilon = opts.epsilon ?? 0.1;
  if (typeof epsilon !== 'number' || !(epsilon > 0) || !Number.isFinite(epsilon)) {
    throw new RangeError(`${fn}: opts.epsilon must be a positive number, got ${epsilon}`);
  }
  return { weights, smoothing, epsilon };
}

function bleuFromTokens(fn: string, h: (readonly string[])[], r: (readonly string[])[][], opts: BleuOptions): BleuResult {
  const { weights, smoothing, epsilon } = bleuOptions(fn, opts);
  const N = weights.length;
  const matches = new Array<number>(N).fill(0);
  const totals = new Array<number>(N).fill(0);
  let c = 0;
  let refLen = 0;
  for (let s = 0; s < h.length; s++) {
    const hyp = h[s];
    for (let n = 1; n <= N; n++) {
      // Modified precision: each hypothesis n-gram counts at most as often as it occurs in any one reference.
      const counts = ngramCounts(hyp, n);
      const maxRef = new Map<string, number>();
      for (const ref of r[s]) {
        for (const [g, k] of ngramCounts(ref, n)) if (counts.has(g) && k > (maxRef.get(g) ?? 0)) maxRef.set(g, k);
      }
      for (const [g, k] of counts) {
        matches[n - 1] += Math.min(k, maxRef.get(g) ?? 0);
        totals[n - 1] += k;
      }
    }
    // Effective reference length: the reference closest in length to the hypothesis, the shorter on a tie.
    c += hyp.length;
    let best = r[s][0].length;
    for (const ref of r[s]) {
      const d = Math.abs(ref.length - hyp.length);
      const bd = Math.abs(best - hyp.length);
      if (d < bd || (d === bd && ref.length < best)) best = ref.length;
    }
    refLen += best;
  }
  const precisions = matches.map((m, i) => (totals[i] > 0 ? m / totals[i] : 0));
  const bp = c > refLen ? 1 : c === 0 ? 0 : Math.exp(1 - refLen / c);
  const base = { precisions, matches, totals, bp, ratio: refLen > 0 ? c / refLen : Infinity, hypLength: c, refLength: refLen };
  // No unigram match means no match at all: 0 whatever the smoothing (as NLTK).
  if (matches[0] === 0) return { bleu: 0, ...base };
  let logSum = 0;
  for (let i = 0; i < N; i++) {
    const d = Math.max(1, totals[i]);
    let p: number;
    if (smoothing === 'add1' && i > 0) p = (matches[i] + 1) / (d + 1);
    else if (smoothing === 'epsilon' && matches[i] === 0) p = epsilon / d;
    else p = matches[i] / d;
    if (p === 0) {
      if (weights[i] === 0) continue;
      return { bleu: 0, ...base };
    }
    logSum += weights[i] * Math.log(p);
  }
  return { bleu: bp * Math.exp(logSum), ...base };
}

/**
 * Corpus BLEU: clipped n-gram matches and totals summed over all sentences before dividing (not an average of
 * sentence scores), and one brevity penalty from the summed lengths. `refs[i]` lists hypothesis i's references.
 *
 * BLEU = BP * exp(sum_n w_n log p_n),  BP = 1 if c > r else exp(1 - r/c),
 * p_n = sum clipped matches / sum hypothesis n-grams, r = sum of the closest reference lengths.
 */
export function corpusBleu(hyps: Text[], refs: Text[][], opts: BleuOptions = {}): BleuResult {
  const { h, r } = readCorpus('corpusBleu', hyps, refs);
  return bleuFromTokens('corpusBleu', h, r, opts);
}

/** BLEU of one sentence against its references (corpus BLEU of a one-sentence corpus). */
export function sentenceBleu(hyp: Text, refs: Text[], opts: BleuOptions = {}): BleuResult {
  const { h, r } = readCorpus('sentenceBleu', [hyp], [refs]);
  return bleuFromTokens('sentenceBleu', h, r, opts);
}

/** Length of the longest common subsequence of two token lists (dynamic programming, one row of memory). */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  if (a.length === 0 || b.length === 0) return 0;
  const row = new Int32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    let diag = 0;   // row[j - 1] of the previous i
    for (let j = 1; j <= b.length; j++) {
      const up = row[j];
      row[j] = a[i - 1] === b[j - 1] ? diag + 1 : Math.max(up, row[j - 1]);
      diag = up;
    }
  }
  return row[b.length];
}

export interface RougeOptions {
  /** F-measure weight: beta > 1 favours recall. Default 1 (F1, as Google's rouge-score package). */
  beta?: number;
}

export interface RougeResult {
  /** Mean over sentences of the best (over references) LCS F-measure, in [0, 1]. */
  rougeL: number;
  /** Means over sentences of the precision and recall of the reference that gave the best F. */
  precision: number;
  recall: number;
  /** The F-measure of each sentence. */
  perSentence: number[];
}

/**
 * ROUGE-L (Lin 2004, section 3.1): for hypothesis X and reference Y, P = LCS(X, Y) / |X|, R = LCS(X, Y) / |Y|,
 * F = (1 + beta^2) P R / (R + beta^2 P). Each sentence takes the best F over its references; the corpus score
 * is the mean of the sentence scores. An empty hypothesis or reference scores 0.
 */
export function rougeL(hyps: Text[], refs: Text[][], opts: RougeOptions = {}): RougeResult {
  const fn = 'rougeL';
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${fn}: opts must be an object`);
  const beta = opts.beta ?? 1;
  if (typeof beta !== 'number' || !(beta > 0) || !Number.isFinite(beta)) throw new RangeError(`${fn}: opts.beta must be a positive number, got ${beta}`);
  const { h, r } = readCorpus(fn, hyps, refs);
  const b2 = beta * beta;
  const perSentence: number[] = [];
  let pSum = 0;
  let rSum = 0;
  for (let s = 0; s < h.length; s++) {
    let best = { f: -1, p: 0, r: 0 };
    for (const ref of r[s]) {
      const l = lcsLength(h[s], ref);
      const p = h[s].length > 0 ? l / h[s].length : 0;
      const rc = ref.length > 0 ? l / ref.length : 0;
      const f = l > 0 ? ((1 + b2) * p * rc) / (rc + b2 * p) : 0;
      if (f > best.f) best = { f, p, r: rc };
    }
    perSentence.push(best.f);
    pSum += best.p;
    rSum += best.r;
  }
  const n = h.length;
  return { rougeL: perSentence.reduce((a, x) => a + x, 0) / n, precision: pSum / n, recall: rSum / n, perSentence };
}
