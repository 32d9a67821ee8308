/**
 * A byte-level BPE tokenizer that reads and writes HuggingFace's tokenizer.json and encodes exactly as the
 * HF libraries do, synchronously and without them (they are dev-only dependencies, used by the tests).
 *
 *   const tok = Tokenizer.fromFile('runs/tokenizer.json');
 *   const ids = tok.encode('a red circle <image>', { bos: true, eos: true });
 *   tok.decode(ids, { skipSpecial: true });            // 'a red circle '
 *
 * Encoding, as in HF: split the text around special tokens (leftmost-longest), [NFC-normalise], split each
 * segment with GPT-2's regex, map each piece's UTF-8 bytes to byte tokens, then apply the merges lowest rank
 * first, leftmost first among equal ranks (Sennrich et al. 2016; the Rust `Word::merge_all` order).
 * A piece's ids are cached, so running text costs little more than the regex and a Map lookup per word.
 */
import * as fs from 'fs';
import * as path from 'path';
import { BYTE_TO_CHAR, CHAR_TO_BYTE, GPT2_PATTERN, SpecialMatcher, utf8Into } from './bytelevel';
import { MAX_VOCAB, parseTokenizerJSON } from './format';
import { ASSISTANT, AUDIO, BOS, END, EOS, IMAGE, PAD, USER } from './specials';

export type Normalizer = 'none' | 'nfc';

/** Everything that defines a tokenizer, in ids. The trainer builds one; fromJSON parses one. */
export interface TokenizerModel {
  /** Token strings by id, in GPT-2 byte characters for byte-level tokens, verbatim for special tokens. */
  vocab: string[];
  /** Merges in rank order: [left id, right id]; the merged token is vocab's entry for the two strings joined. */
  merges: Array<[number, number]>;
  /** Tokens matched whole in text before pre-tokenization (HF added_tokens); `special` ones are skippable. */
  added: Array<{ id: number; content: string; special: boolean }>;
  normalizer: Normalizer;
}

export interface EncodeOptions {
  /** Prepend `<bos>`. */
  bos?: boolean;
  /** Append `<eos>`. */
  eos?: boolean;
}

export interface BatchOptions extends EncodeOptions {
  /** Sequences longer than this are cut; with `eos`, the last kept token is `<eos>`. */
  maxLen: number;
  /** 'longest' (default): pad to the longest sequence in the batch; 'max': pad to maxLen. */
  padTo?: 'longest' | 'max';
}

export interface Batch {
  /** Row-major [B, T], padded with padId. */
  ids: Int32Array;
  /** Tokens before padding, per row. */
  lengths: Int32Array;
  shape: [number, number];
}

export interface ChatTurn {
  role: 'user' | 'assistant';
  content: string;
}

export interface ChatOptions {
  /** Prepend `<bos>` (default true). */
  bos?: boolean;
  /** Append `<eos>` after the last turn (default false). */
  eos?: boolean;
  /** End with an open `<|assistant|>` so that a model generates the answer (default false). */
  addGenerationPrompt?: boolean;
}

export interface ChatEncoding {
  ids: number[];
  /** 1 where ids[i] is a token the model should learn to produce (assistant content and its `<|end|>`). */
  lossMask: Uint8Array;
  /** The rendered template; encode(text) gives the same ids. */
  text: string;
}

/** Word-cache bounds: entries before it is cleared, and the longest piece (UTF-16 units) worth caching. */
const CACHE_LIMIT = 200_000;
const CACHE_MAX_PIECE = 256;

export class Tokenizer {
  private readonly vocab: string[];
  private readonly ids: Map<string, number>;
  /** Pair key a * V + b -> merge rank. */
  private readonly mergeRank: Map<number, number>;
  private readonly V: number;
  /** The id a merge of rank r produces. */
  private readonly mergeNew: Int32Array;
  private readonly merges: Array<[number, number]>;
  /** Token id of each byte value. */
  private readonly byteId: Int32Array;
  private readonly added: Array<{ id: number; content: string; special: boolean }>;
  private readonly addedIds: Map<string, number>;
  private readonly isSpecial: Uint8Array;
  private readonly matcher: SpecialMatcher;
  private readonly normalizer: Normalizer;
  /** What each id decodes to, as bytes: tokenBytes[tokenStart[i] .. tokenStart[i+1]). */
  private readonly tokenBytes: Uint8Array;
  private readonly tokenStart: Int32Array;
  private readonly cache = new Map<string, number[]>();
  private readonly re = new RegExp(GPT2_PATTERN.source, GPT2_PATTERN.flags);
  private readonly scratch = { buf: new Uint8Array(256) };
  private heap = new Float64Array(64);
  private sym = new Int32Array(64);
  private nxt = new Int32Array(64);
  private prv = new Int32Array(64);

  /** Prefer Tokenizer.fromFile / fromJSON / trainBPE; this checks `model` and throws on the first problem. */
  constructor(model: TokenizerModel) {
    const { vocab, merges, added } = model;
    if (vocab.length > MAX_VOCAB) throw new Error(`Tokenizer: vocabulary of ${vocab.length} tokens exceeds the supported ${MAX_VOCAB}`);
    this.vocab = vocab.slice();
    this.V = vocab.length;
    this.ids = new Map();
    vocab.forEach((t, i) => {
      if (typeof t !== 'string' || t.length === 0) throw new Error(`Tokenizer: token id ${i} is empty or not a string`);
      if (this.ids.has(t)) throw new Error(`Tokenizer: token ${JSON.stringify(t)} appears twice (ids ${this.ids.get(t)} and ${i})`);
      this.ids.set(t, i);
    });
    this.byteId = new Int32Array(256);
    for (let b = 0; b < 256; b++) {
      const id = this.ids.get(BYTE_TO_CHAR[b]);
      if (id === undefined) {
        throw new Error(`Tokenizer: vocabulary lacks the byte token ${JSON.stringify(BYTE_TO_CHAR[b])} (byte 0x${b.toString(16).padStart(2, '0')}); a byte-level BPE needs all 256`);
      }
      this.byteId[b] = id;
    }
    this.merges = merges.map(([a, b]) => [a, b]);
    this.mergeRank = new Map();
    this.mergeNew = new Int32Array(merges.length);
    merges.forEach(([a, b], r) => {
      const sa = vocab[a], sb = vocab[b];
      if (sa === undefined || sb === undefined) throw new Error(`Tokenizer: merge ${r} refers to id ${sa === undefined ? a : b}, outside the vocabulary of ${vocab.length}`);
      const id = this.ids.get(sa + sb);
      if (id === undefined) throw new Error(`Tokenizer: merge ${r} (${JSON.stringify(sa)} ${JSON.stringify(sb)}) makes ${JSON.stringify(sa + sb)}, which is not in the vocabulary`);
      const k = a * this.V + b;
      // A pair listed twice takes its last rank, as in both HF libraries (each builds a map, later entries win).
      this.mergeRank.set(k, r);
      this.mergeNew[r] = id;
    });
    this.added = added.map((t) => ({ ...t }));
    this.addedIds = new Map();
    this.isSpecial = new Uint8Array(vocab.length);
    for (const t of added) {
      if (vocab[t.id] !== t.content) throw new Error(`Tokenizer: added token ${JSON.stringify(t.content)} has id ${t.id}, where the vocabulary has ${JSON.stringify(vocab[t.id])}`);
      this.addedIds.set(t.content, t.id);
      if (t.special) this.isSpecial[t.id] = 1;
    }
    this.matcher = new SpecialMatcher(added.map((t) => t.content));
    if (model.normalizer !== 'none' && model.normalizer !== 'nfc') throw new Error(`Tokenizer: unknown normalizer ${JSON.stringify(model.normalizer)}`);
    this.normalizer = model.normalizer;

    // Decoding follows HF's ByteLevel decoder: a token whose characters are all byte characters decodes to
    // those bytes; any other (a special token such as '<图>') to its own UTF-8.
    const parts: Uint8Array[] = [];
    const start = new Int32Array(vocab.length + 1);
    const enc = new TextEncoder();
    let total = 0;
    vocab.forEach((t, i) => {
      let bytes: Uint8Array | null = new Uint8Array(t.length);
      for (let j = 0; j < t.length; j++) {
        const b = CHAR_TO_BYTE.get(t[j]);
        if (b === undefined) { bytes = null; break; }
        bytes[j] = b;
      }
      if (!bytes) bytes = enc.encode(t);
      parts.push(bytes);
      start[i] = total;
      total += bytes.length;
    });
    start[vocab.length] = total;
    this.tokenBytes = new Uint8Array(total);
    parts.forEach((p, i) => this.tokenBytes.set(p, start[i]));
    this.tokenStart = start;
  }

  // ------------------------------------------------------------------------------------------ loading, saving

  /** Load a tokenizer.json written by this package or by HF for a byte-level BPE (see fromJSON for what is accepted). */
  static fromFile(file: string): Tokenizer {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new Error(`Tokenizer.fromFile: cannot read ${file}: ${(e as Error).message}`);
    }
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch (e) {
      throw new Error(`Tokenizer.fromFile: ${file} is not a tokenizer.json (not valid JSON: ${(e as Error).message})`);
    }
    return fromModel(obj, file);
  }

  /**
   * From a parsed tokenizer.json or its text. Accepted: model type BPE (no unk token, dropout, subword
   * prefixes/suffixes or byte fallback), pre_tokenizer ByteLevel with the GPT-2 regex and no prefix space,
   * normalizer null or NFC, added tokens that are neither normalized nor stripped. Anything else throws an
   * Error naming the key, because encoding it like this would silently give other ids than HF.
   */
  static fromJSON(json: object | string): Tokenizer {
    let obj: unknown = json;
    if (typeof json === 'string') {
      try {
        obj = JSON.parse(json);
      } catch (e) {
        throw new Error(`Tokenizer.fromJSON: the string is not a tokenizer.json (not valid JSON: ${(e as Error).message})`);
      }
    }
    return fromModel(obj, 'Tokenizer.fromJSON');
  }

  /** The HF tokenizer.json object. */
  toJSON(): object {
    const vocab: Record<string, number> = {};
    this.vocab.forEach((t, i) => { vocab[t] = i; });
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: this.added.map((t) => ({
        id: t.id, content: t.content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: t.special,
      })),
      normalizer: this.normalizer === 'nfc' ? { type: 'NFC' } : null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges: this.merges.map(([a, b]) => [this.vocab[a], this.vocab[b]]),
      },
    };
  }

  /** Write tokenizer.json atomically (a temporary file in the same directory, then rename). */
  save(file: string): void {
    const dir = path.dirname(path.resolve(file));
    fs.mkdirSync(dir, { recursive: true });
    const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
    try {
      fs.writeFileSync(tmp, JSON.stringify(this.toJSON()));
      fs.renameSync(tmp, file);
    } catch (e) {
      try { fs.unlinkSync(tmp); } catch { /* already gone */ }
      throw new Error(`Tokenizer.save: cannot write ${file}: ${(e as Error).message}`);
    }
  }

  // ------------------------------------------------------------------------------------------ vocabulary

  get vocabSize(): number { return this.vocab.length; }
  get padId(): number { return this.requireId(PAD); }
  get bosId(): number { return this.requireId(BOS); }
  get eosId(): number { return this.requireId(EOS); }
  get imageId(): number { return this.requireId(IMAGE); }
  get audioId(): number { return this.requireId(AUDIO); }
  /** The number of merges (vocabSize minus the 256 bytes and the added tokens, for a trained tokenizer). */
  get numMerges(): number { return this.merges.length; }
  /** Added token contents in id order. */
  get specialTokens(): string[] { return this.added.map((t) => t.content); }

  /** The id of a vocabulary string (special tokens verbatim, byte-level tokens in GPT-2 characters: 'Ġthe'). */
  tokenToId(token: string): number | undefined { return this.ids.get(token); }
  idToToken(id: number): string | undefined { return this.vocab[id]; }

  private requireId(token: string): number {
    const id = this.ids.get(token);
    if (id === undefined) throw new Error(`Tokenizer: this vocabulary has no ${token} token`);
    return id;
  }

  // ------------------------------------------------------------------------------------------ encoding

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new Error(`Tokenizer.encode: expected a string, got ${typeof text}`);
    const out: number[] = [];
    if (opts.bos) out.push(this.bosId);
    this.matcher.split(text, (seg) => this.encodeSegment(seg, out), (tok) => out.push(this.addedIds.get(tok)!));
    if (opts.eos) out.push(this.eosId);
    return out;
  }

  encodeBatch(texts: readonly string[], opts: BatchOptions): Batch {
    const { maxLen } = opts;
    if (!Number.isInteger(maxLen) || maxLen < 1) throw new Error(`Tokenizer.encodeBatch: maxLen must be a positive integer, got ${maxLen}`);
    const padTo = opts.padTo ?? 'longest';
    if (padTo !== 'longest' && padTo !== 'max') throw new Error(`Tokenizer.encodeBatch: padTo must be 'longest' or 'max', got ${JSON.stringify(padTo)}`);
    const rows = texts.map((t, i) => {
      if (typeof t !== 'string') throw new Error(`Tokenizer.encodeBatch: text ${i} is ${typeof t}, not a string`);
      const ids = this.encode(t, { bos: opts.bos });
      if (opts.eos) {
        if (ids.length >= maxLen) ids.length = maxLen - 1;
        ids.push(this.eosId);
      } else if (ids.length > maxLen) {
        ids.length = maxLen;
      }
      return ids;
    });
    const B = rows.length;
    let T = maxLen;
    if (padTo === 'longest') {
      T = 1; // at least one column, so that a batch of empty strings is still a valid [B, 1] input
      for (const r of rows) T = Math.max(T, r.length);
    }
    const ids = new Int32Array(B * T).fill(this.padId);
    const lengths = new Int32Array(B);
    rows.forEach((r, b) => {
      ids.set(r, b * T);
      lengths[b] = r.length;
    });
    return { ids, lengths, shape: [B, T] };
  }

  /**
   * The instruction template, for stage 3 (instruction tuning):
   *
   *   <bos><|user|>{user}<|end|><|assistant|>{answer}<|end|>...[<|assistant|>][<eos>]
   *
   * No newlines or spaces around the markers, so every turn's content tokenizes exactly as it would alone and
   * `encode(text)` equals `ids`. `lossMask[i]` is 1 for the assistant's content tokens and the `<|end|>` that
   * closes them (the model must learn to stop), 0 elsewhere. '<image>' in content stays one token.
   */
  chat(turns: readonly ChatTurn[], opts: ChatOptions = {}): ChatEncoding {
    const user = this.requireId(USER), assistant = this.requireId(ASSISTANT), end = this.requireId(END);
    const ids: number[] = [];
    const mask: number[] = [];
    let text = '';
    const push = (xs: number[], m: number): void => { for (const x of xs) { ids.push(x); mask.push(m); } };
    if (opts.bos ?? true) { push([this.bosId], 0); text += BOS; }
    turns.forEach((turn, i) => {
      if (!turn || (turn.role !== 'user' && turn.role !== 'assistant')) {
        throw new Error(`Tokenizer.chat: turn ${i} has role ${JSON.stringify(turn?.role)}; expected 'user' or 'assistant'`);
      }
      if (typeof turn.content !== 'string') throw new Error(`Tokenizer.chat: turn ${i} (${turn.role}) content is ${typeof turn.content}, not a string`);
      for (const marker of [USER, ASSISTANT, END, BOS, EOS, PAD]) {
        if (turn.content.includes(marker)) {
          throw new Error(`Tokenizer.chat: turn ${i} (${turn.role}) contains the template token ${marker}, which would break the turn structure`);
        }
      }
      const answer = turn.role === 'assistant' ? 1 : 0;
      push([turn.role === 'user' ? user : assistant], 0);
      push(this.encode(turn.content), answer);
      push([end], answer);
      text += (turn.role === 'user' ? USER : ASSISTANT) + turn.content + END;
    });
    if (opts.addGenerationPrompt) { push([assistant], 0); text += ASSISTANT; }
    if (opts.eos) { push([this.eosId], 0); text += EOS; }
    return { ids, lossMask: Uint8Array.from(mask), text };
  }

  private encodeSegment(seg: string, out: number[]): void {
    if (this.normalizer === 'nfc') seg = seg.normalize('NFC');
    const re = this.re;
    re.lastIndex = 0;
    for (let m = re.exec(seg); m; m = re.exec(seg)) {
      const piece = m[0];
      let ids = this.cache.get(piece);
      if (ids === undefined) {
        ids = this.bpe(piece);
        if (piece.length <= CACHE_MAX_PIECE) {
          if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
          this.cache.set(piece, ids);
        }
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]);
    }
  }

  /**
   * Merge one piece's byte tokens. Same order as HF's Rust `Word::merge_all`: a min-heap of (rank, position);
   * pop the lowest, skip it if either symbol has since changed, else merge and push the two new neighbour
   * pairs. O(n log n) in the piece's length, so a 100 kB run without spaces does not go quadratic.
   */
  private bpe(piece: string): number[] {
    const n = utf8Into(piece, this.scratch);
    const bytes = this.scratch.buf;
    if (n === 1) return [this.byteId[bytes[0]]];
    if (this.sym.length < n) {
      const size = n * 2;
      this.sym = new Int32Array(size); this.nxt = new Int32Array(size); this.prv = new Int32Array(size);
      this.heap = new Float64Array(size);
    }
    const sym = this.sym, nxt = this.nxt, prv = this.prv;
    const POS = 2 ** 31; // heap key = rank * 2^31 + position: rank first, then leftmost
    let heap = this.heap;
    let size = 0;
    const push = (key: number): void => {
      if (size === heap.length) { const h = new Float64Array(size * 2); h.set(heap); heap = this.heap = h; }
      let i = size++;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (heap[p] <= key) break;
        heap[i] = heap[p];
        i = p;
      }
      heap[i] = key;
    };
    const pop = (): number => {
      const top = heap[0];
      const last = heap[--size];
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= size) break;
        if (c + 1 < size && heap[c + 1] < heap[c]) c++;
        if (heap[c] >= last) break;
        heap[i] = heap[c];
        i = c;
      }
      heap[i] = last;
      return top;
    };
    for (let i = 0; i < n; i++) {
      sym[i] = this.byteId[bytes[i]];
      prv[i] = i - 1;
      nxt[i] = i + 1 < n ? i + 1 : -1;
    }
    const rank = this.mergeRank;
    const V = this.V;
    for (let i = 0; i + 1 < n; i++) {
      const r = rank.get(sym[i] * V + sym[i + 1]);
      if (r !== undefined) push(r * POS + i);
    }
    while (size > 0) {
      const key = pop();
      const r = Math.floor(key / POS);
      const pos = key - r * POS;
      if (sym[pos] < 0) continue; // absorbed into its left neighbour
      const right = nxt[pos];
      if (right < 0) continue;
      if (rank.get(sym[pos] * V + sym[right]) !== r) continue; // one side changed since this was pushed
      const merged = this.mergeNew[r];
      sym[pos] = merged;
      sym[right] = -1;
      const after = nxt[right];
      nxt[pos] = after;
      if (after >= 0) prv[after] = pos;
      const before = prv[pos];
      if (before >= 0) {
        const rb = rank.get(sym[before] * V + merged);
        if (rb !== undefined) push(rb * POS + before);
      }
      if (after >= 0) {
        const ra = rank.get(merged * V + sym[after]);
        if (ra !== undefined) push(ra * POS + pos);
      }
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = nxt[i]) out.push(sym[i]);
    return out;
  }

  // ------------------------------------------------------------------------------------------ decoding

  /** Ids back to text. Byte sequences that are not valid UTF-8 (a cut multi-byte character) become U+FFFD. */
  decode(ids: ArrayLike<number>, opts: { skipSpecial?: boolean } = {}): string {
    const V = this.vocab.length;
    let n = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= V) {
        throw new Error(`Tokenizer.decode: id ${id} at position ${i} is outside the vocabulary [0, ${V})`);
      }
      if (!(opts.skipSpecial && this.isSpecial[id])) n += this.tokenStart[id + 1] - this.tokenStart[id];
    }
    const buf = new Uint8Array(n);
    let o = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (opts.skipSpecial && this.isSpecial[id]) continue;
      const a = this.tokenStart[id], b = this.tokenStart[id + 1];
      buf.set(this.tokenBytes.subarray(a, b), o);
      o += b - a;
    }
    return decoder.decode(buf);
  }
}

const decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** Parse and build, with the constructor's checks (missing byte tokens, bad merges) reported like the parser's. */
function fromModel(obj: unknown, source: string): Tokenizer {
  const model = parseTokenizerJSON(obj, source);
  try {
    return new Tokenizer(model);
  } catch (e) {
    throw new Error(`${source}: not a byte-level BPE tokenizer.json: ${(e as Error).message.replace(/^Tokenizer: /, '')}`);
  }
}
