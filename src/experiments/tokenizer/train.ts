/**
 * Training a byte-level BPE (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword
 * Units"; byte-level as in GPT-2). Written here because the HF `tokenizers` napi binding's `train(files)` takes
 * no trainer options (no vocabulary size). The output loads in both HF libraries and encodes identically.
 *
 *   const tok = trainBPE(texts, { vocabSize: 4096 });
 *
 * Algorithm (the one HF's BpeTrainer uses): count pre-tokenized words; start from the special tokens and the
 * 256 bytes; repeatedly merge the most frequent adjacent pair. Pair counts are kept incrementally: each merge
 * revisits only the words that contain the pair (an index pair -> words), subtracts their old pairs and adds
 * their new ones, and a max-heap with lazy deletion finds the next best pair. Cost per merge is proportional
 * to the words touched, not to the corpus.
 *
 * Tie rule (determinism): the highest count wins; among equal counts, the pair with the smaller left id, then
 * the smaller right id. Ids are assigned in a fixed order (specials, bytes 0..255 by value, then merges in the
 * order made), so the result depends only on the multiset of texts, not on their order or on Map iteration.
 */
import { BYTE_TO_CHAR, SpecialMatcher, preTokenize, utf8Into } from './bytelevel';
import { Normalizer, Tokenizer } from './bpe';
import { MAX_VOCAB } from './format';
import { SPECIAL_TOKENS } from './specials';

export interface TrainOptions {
  /** Total vocabulary: special tokens + 256 bytes + merges. An upper bound: training stops early when no pair occurs minFrequency times. */
  vocabSize: number;
  /** A pair must occur at least this often (counting word frequencies) to be merged. Default 2. */
  minFrequency?: number;
  /** Special tokens, given the first ids in this order. Default SPECIAL_TOKENS (`<pad>` = 0, ...). */
  specialTokens?: readonly string[];
  /** 'none' (default, exact round trips) or 'nfc' (Unicode NFC before pre-tokenization). */
  normalizer?: Normalizer;
  /** Called with (merges done, merges wanted) every 64 merges and at the end. */
  onProgress?: (done: number, total: number) => void;
}

/** A binary max-heap of (count, pair key): larger count first, then smaller key (smaller left id, then right id). */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number { return this.keys.length; }

  private before(i: number, j: number): boolean {
    const c = this.counts, k = this.keys;
    return c[i] > c[j] || (c[i] === c[j] && k[i] < k[j]);
  }

  private swap(i: number, j: number): void {
    const c = this.counts, k = this.keys;
    const tc = c[i], tk = k[i];
    c[i] = c[j]; k[i] = k[j];
    c[j] = tc; k[j] = tk;
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.keys.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  /** Removes the top; returns [count, key]. */
  pop(): [number, number] {
    const top: [number, number] = [this.counts[0], this.keys[0]];
    const lc = this.counts.pop()!, lk = this.keys.pop()!;
    if (this.keys.length) {
      this.counts[0] = lc;
      this.keys[0] = lk;
      let i = 0;
      const n = this.keys.length;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < n && this.before(l, m)) m = l;
        if (r < n && this.before(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}

export function trainBPE(texts: Iterable<string>, opts: TrainOptions): Tokenizer {
  const specials = [...(opts.specialTokens ?? SPECIAL_TOKENS)];
  const minFrequency = opts.minFrequency ?? 2;
  const normalizer = opts.normalizer ?? 'none';
  const { vocabSize } = opts;
  const base = specials.length + 256;
  if (!Number.isInteger(vocabSize) || vocabSize < base || vocabSize > MAX_VOCAB) {
    throw new Error(`trainBPE: vocabSize must be an integer in [${base}, ${MAX_VOCAB}] (256 bytes + ${specials.length} special tokens), got ${vocabSize}`);
  }
  if (!Number.isInteger(minFrequency) || minFrequency < 1) throw new Error(`trainBPE: minFrequency must be a positive integer, got ${minFrequency}`);
  if (normalizer !== 'none' && normalizer !== 'nfc') throw new Error(`trainBPE: normalizer must be 'none' or 'nfc', got ${JSON.stringify(normalizer)}`);
  specials.forEach((s, i) => {
    if (typeof s !== 'string' || s.length === 0) throw new Error(`trainBPE: specialTokens[${i}] is empty or not a string`);
    if (specials.indexOf(s) !== i) throw new Error(`trainBPE: special token ${JSON.stringify(s)} is listed twice`);
    if (BYTE_TO_CHAR.includes(s)) throw new Error(`trainBPE: special token ${JSON.stringify(s)} collides with a byte token`);
  });

  // 1. Word frequencies. Special tokens in the text are cut out, as HF does before pre-tokenization.
  const wordCount = new Map<string, number>();
  const matcher = new SpecialMatcher(specials);
  const addSegment = (seg: string): void => {
    if (normalizer === 'nfc') seg = seg.normalize('NFC');
    for (const w of preTokenize(seg)) wordCount.set(w, (wordCount.get(w) ?? 0) + 1);
  };
  let t = 0;
  for (const text of texts) {
    if (typeof text !== 'string') throw new Error(`trainBPE: text ${t} is ${typeof text}, not a string`);
    matcher.split(text, addSegment, () => {});
    t++;
  }

  // 2. Words as symbol arrays (byte ids), and the initial pair counts with the pair -> words index.
  const vocab: string[] = [...specials, ...BYTE_TO_CHAR];
  const words: Int32Array[] = [];
  const lens: number[] = [];
  const counts: number[] = [];
  const scratch = { buf: new Uint8Array(256) };
  for (const [w, c] of wordCount) {
    const n = utf8Into(w, scratch);
    if (n < 2) continue; // a single byte has no pair to merge
    const sym = new Int32Array(n);
    for (let i = 0; i < n; i++) sym[i] = specials.length + scratch.buf[i];
    words.push(sym);
    lens.push(n);
    counts.push(c);
  }
  // Pair keys a * vocabSize + b: small integers for vocabularies up to 32768, which Maps store unboxed.
  const pairKey = (x: number, y: number): number => x * vocabSize + y;
  const pairCount = new Map<number, number>();
  const where = new Map<number, number[]>();
  const index = (k: number, w: number): void => {
    const list = where.get(k);
    if (list === undefined) where.set(k, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  };
  words.forEach((sym, w) => {
    for (let i = 0; i + 1 < sym.length; i++) {
      const k = pairKey(sym[i], sym[i + 1]);
      pairCount.set(k, (pairCount.get(k) ?? 0) + counts[w]);
      index(k, w);
    }
  });
  const heap = new PairHeap();
  for (const [k, c] of pairCount) heap.push(c, k);

  // 3. Merge until the vocabulary is full or no pair is frequent enough.
  const merges: Array<[number, number]> = [];
  const wanted = vocabSize - base;
  const seen = new Int32Array(words.length);
  const tokenId = new Map(vocab.map((s, i) => [s, i]));
  while (vocab.length < vocabSize && heap.size > 0) {
    const [c, k] = heap.pop();
    const now = pairCount.get(k) ?? 0;
    if (c !== now) {
      // Stale entry: counts of an existing pair only fall, so re-queue it with its current count.
      if (now > 0) heap.push(now, k);
      continue;
    }
    if (c < minFrequency) break;
    const a = Math.floor(k / vocabSize), b = k - a * vocabSize;
    // Two merge paths can spell the same bytes ("ab"+"c", "a"+"bc"); as in HF's trainer, the second reuses the id.
    const str = vocab[a] + vocab[b];
    let id = tokenId.get(str);
    if (id === undefined) {
      id = vocab.length;
      vocab.push(str);
      tokenId.set(str, id);
    }
    merges.push([a, b]);
    const stamp = merges.length;
    const touched = new Set<number>();
    for (const w of where.get(k) ?? []) {
      if (seen[w] === stamp) continue;
      seen[w] = stamp;
      const sym = words[w];
      const len = lens[w];
      let has = false;
      for (let i = 0; i + 1 < len; i++) if (sym[i] === a && sym[i + 1] === b) { has = true; break; }
      if (!has) continue; // the index is not pruned: an earlier merge may have consumed this occurrence
      const cw = counts[w];
      for (let i = 0; i + 1 < len; i++) {
        const pk = pairKey(sym[i], sym[i + 1]);
        pairCount.set(pk, pairCount.get(pk)! - cw);
      }
      // Merge left to right without overlap ("aaa" with a+a gives "aa a"), as encoding does; in place, since
      // the word only shrinks.
      let n = 0;
      for (let i = 0; i < len; i++) {
        if (i + 1 < len && sym[i] === a && sym[i + 1] === b) { sym[n++] = id; i++; } else sym[n++] = sym[i];
      }
      lens[w] = n;
      for (let i = 0; i + 1 < n; i++) {
        const pk = pairKey(sym[i], sym[i + 1]);
        pairCount.set(pk, (pairCount.get(pk) ?? 0) + cw);
        if (sym[i] === id || sym[i + 1] === id) { index(pk, w); touched.add(pk); }
      }
    }
    where.delete(k);
    pairCount.delete(k);
    // New pairs (they contain the new id) reach their full count within this merge; queue them once. (A reused
    // id's pairs may have grown instead: their older heap entries are then stale and get re-queued or skipped.)
    for (const pk of touched) heap.push(pairCount.get(pk)!, pk);
    if (opts.onProgress && merges.length % 64 === 0) opts.onProgress(merges.length, wanted);
  }
  opts.onProgress?.(merges.length, wanted);
  return new Tokenizer({
    vocab,
    merges,
    added: specials.map((content, id) => ({ id, content, special: true })),
    normalizer,
  });
}
