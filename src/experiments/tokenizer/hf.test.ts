/**
 * Our encoder against both HuggingFace implementations, on a tokenizer trained here and saved as
 * tokenizer.json: the Rust library through its napi binding (`tokenizers`) and the pure-JavaScript
 * `@huggingface/tokenizers`. Both are devDependencies, loaded only by this test.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SPECIAL_TOKENS, Tokenizer, textCorpus, trainBPE } from './index';
import { BYTE_TO_CHAR, bytesToToken, preTokenize, utf8Into } from './bytelevel';

// The binding is CommonJS; its types say encode() resolves to an Encoding with getIds().
// eslint-disable-next-line @typescript-eslint/no-var-requires
const rust = require('tokenizers') as {
  Tokenizer: {
    fromFile(p: string): {
      encode(s: string, pair?: string | null, o?: { addSpecialTokens?: boolean }): Promise<{ getIds(): number[] }>;
      decode(ids: number[], skipSpecial: boolean): Promise<string>;
      getVocabSize(withAdded?: boolean): number;
      getPreTokenizer(): { preTokenizeString(s: string): Array<[string, [number, number]]> } | null;
    };
  };
};

interface JsTokenizer {
  encode(s: string, o?: { add_special_tokens?: boolean }): { ids: number[] };
  decode(ids: number[], o?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean }): string;
}

/** Seeded PRNG (mulberry32), so the strings are the same on every run. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Hand-picked edge cases: each names what it guards. */
const EDGES: string[] = [
  '', ' ', '  ', '\n', '\r\n', '\t\t', 'a\r\nb', 'trailing space ', '  leading spaces', 'a  b   c    d',
  'line one\nline two\n\n\nline five', 'tabs\tand\u000bvertical\u000cfeed',
  "it's we're they've I'm you'll he'd can't", "IT'S WE'RE", "'s 't", "''s", "rock'n'roll",
  'numbers 123 4567 3.14159 1,000,000 ٣٤٥ ½ ⅔ Ⅻ', 'mixed123abc abc123 123abc',
  '紅い円が青い四角の左にある', '中文字符和English混合', '한국어 텍스트', 'ไทย ภาษา',
  'emoji 🎨🖼️ family 👨‍👩‍👧‍👦 skin 👍🏽👋🏿 flag 🇯🇵🇫🇷 keycap 1️⃣',
  'combining: e\u0301 a\u0300\u0323 n\u0303 decomposed, é composed', 'Zalgo: h\u0335\u0322e\u0334\u0327l\u0336l\u0337o',
  'RTL: مرحبا بالعالم שלום עולם', 'mixed bidi: abc אבג 123 دحخ',
  'nbsp\u00a0here and\u2003em\u2009thin\u3000ideographic', 'zero\u200bwidth\u200cjoin\u200dchars',
  'punctuation!!! ??? ... --- (parens) [brackets] {braces} <angle> «guillemets» “quotes”',
  'symbols: ©®™ €£¥ ±×÷ ∑∫√ →←↑↓ ♠♥♦♣', 'control\u0000chars\u0001\u007f\u0080here',
  // Special tokens: whole, adjacent, partial, nested in other text.
  '<image>', '<image><image>', 'a <image> b', 'describe<image>please', '<bos>hello<eos>', '<pad><pad>',
  '<|user|>what colour?<|end|><|assistant|>red<|end|>', '<ima', 'image>', '<<image>>', '<|end|', '|end|>',
  '<image <audio>', '< image>', '<IMAGE>', '<|user|><|assistant|><|end|>', '<audio> tones <audio>',
  // Long inputs: one piece of 3000 characters (the O(n log n) merge path), and a long whitespace run.
  'x'.repeat(3000), 'ab'.repeat(1500), ' '.repeat(500) + 'word', 'the '.repeat(400),
];

/** Random strings mixing words, scripts, whitespace and special tokens. */
function randomStrings(n: number): string[] {
  const r = rng(7);
  const atoms = [
    'the', ' red', ' circle', 'Square', ' BLUE', 'colour', "'s", "'t", "'ll", ' ', '  ', '\n', '\r\n', '\t', '.', ',',
    '?', '!', '...', '42', ' 7', '3.5', '紅', '青い', '中文', '😀', '👩‍💻', '👍🏼', '🏳️‍🌈', 'e\u0301', 'ñ', 'ß', 'Ω',
    'مرحبا', 'שלום', 'Привет', ' naïve', 'café', '<image>', '<audio>', '<bos>', '<eos>', '<|user|>', '<|assistant|>',
    '<|end|>', '<pad>', '<', '>', '|', '<ima', 'ge>', '\u00a0', '\u3000', '—', '"', '(', ')', '#', '$', '%', '&',
  ];
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = 1 + Math.floor(r() * 14);
    let s = '';
    for (let j = 0; j < k; j++) s += atoms[Math.floor(r() * atoms.length)];
    out.push(s);
  }
  return out;
}

/** A few hundred varied strings: the edge cases, random mixtures, and real corpus sentences. */
function cases(): string[] {
  return [...EDGES, ...randomStrings(300), ...textCorpus({ maxGlosses: 100 })];
}

let dir: string;
let ours: Tokenizer;
let file: string;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-tok-hf-'));
  // Train on English plus every script the cases use, so merges span multi-byte characters too.
  const texts = [...textCorpus({ maxGlosses: 3000 }), ...randomStrings(2000), ...EDGES];
  ours = trainBPE(texts, { vocabSize: 2000 });
  file = path.join(dir, 'tokenizer.json');
  ours.save(file);
});

test('tokenizer.json round trip: fromFile(save(t)) encodes and serialises identically', () => {
  const loaded = Tokenizer.fromFile(file);
  assert.equal(JSON.stringify(loaded.toJSON()), JSON.stringify(ours.toJSON()));
  for (const s of cases()) assert.deepEqual(loaded.encode(s), ours.encode(s));
});

test('HF tokenizers (Rust, napi binding): identical ids, with and without add_special_tokens', async () => {
  const hf = rust.Tokenizer.fromFile(file);
  assert.equal(hf.getVocabSize(true), ours.vocabSize);
  let n = 0;
  for (const s of cases()) {
    const mine = ours.encode(s);
    // No post-processor in the file: add_special_tokens adds nothing, so both forms equal plain encode().
    assert.deepEqual((await hf.encode(s)).getIds(), mine, `ids differ for ${JSON.stringify(s.slice(0, 80))}`);
    assert.deepEqual((await hf.encode(s, null, { addSpecialTokens: false })).getIds(), mine);
    n++;
  }
  assert.ok(n > 350, `compared ${n} strings`);
});

test('HF tokenizers (Rust): identical decode, with and without skipping special tokens', async () => {
  const hf = rust.Tokenizer.fromFile(file);
  for (const s of cases()) {
    const ids = ours.encode(s, { bos: true, eos: true });
    assert.equal(ours.decode(ids), await hf.decode(ids, false));
    assert.equal(ours.decode(ids, { skipSpecial: true }), await hf.decode(ids, true));
  }
  // Cut multi-byte characters decode to U+FFFD in both.
  // Invalid UTF-8 from single byte tokens: a stray continuation byte, a cut 3-byte and a cut 4-byte sequence.
  const bytes = [0x80, 0xe7, 0x41, 0xf0, 0x9f, 0x41, 0xff].map((b) => ours.tokenToId(BYTE_TO_CHAR[b])!);
  const text = ours.decode(bytes);
  assert.ok(text.includes('\ufffd'));
  assert.equal(text, await hf.decode(bytes, false));
});

test('@huggingface/tokenizers (pure JS): identical ids and decode', async () => {
  // ESM-only for bundlers; loaded here, never on the runtime path.
  const mod = (await import('@huggingface/tokenizers')) as unknown as { Tokenizer: new (json: object, config: object) => JsTokenizer };
  const js = new mod.Tokenizer(JSON.parse(fs.readFileSync(file, 'utf8')), {});
  for (const s of cases()) {
    const mine = ours.encode(s);
    assert.deepEqual(js.encode(s).ids, mine, `ids differ for ${JSON.stringify(s.slice(0, 80))}`);
    assert.deepEqual(js.encode(s, { add_special_tokens: false }).ids, mine);
    if (mine.length) {
      const ids = ours.encode(s, { bos: true, eos: true });
      assert.equal(js.decode(ids, { clean_up_tokenization_spaces: false }), ours.decode(ids));
      assert.equal(js.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false }), ours.decode(ids, { skipSpecial: true }));
    }
  }
});

test('pre-tokenization equals the Rust ByteLevel pre-tokenizer, including NEL and BOM (Oniguruma \\s, not JavaScript \\s)', () => {
  const pre = rust.Tokenizer.fromFile(file).getPreTokenizer()!;
  const scratch = { buf: new Uint8Array(16) };
  const pieces = (s: string): string[] => preTokenize(s).map((w) => {
    const n = utf8Into(w, scratch); // may replace scratch.buf, so read it after
    return bytesToToken(scratch.buf, n);
  });
  // JavaScript's \s misses U+0085 and includes U+FEFF, so a plain /\s/u pattern splits these differently.
  const ws = ['!\u0085', '\ufeff!', 'a \u0085b', ' \u0085 ', 'x\u2028y', 'a\u00a0\u00a0b', 'word\u0085\u0085next', 'x \ufeff\ufeff y'];
  assert.notDeepEqual('!\u0085'.match(/ ?[^\s\p{L}\p{N}]+|\s+/gu), ['!', '\u0085']);
  for (const s of [...ws, ...cases().filter((c) => !SPECIAL_TOKENS.some((t) => c.includes(t)))]) {
    assert.deepEqual(pieces(s), pre.preTokenizeString(s).map((p) => p[0]), JSON.stringify(s.slice(0, 80)));
  }
});

test('NFC normalizer: decomposed input encodes like composed, identically to both HF libraries', async () => {
  const texts = [...textCorpus({ maxGlosses: 300 }), 'café naïve résumé über Ångström', 'e\u0301te\u0301'];
  const nfc = trainBPE(texts, { vocabSize: 500, normalizer: 'nfc' });
  const f = path.join(dir, 'nfc.json');
  nfc.save(f);
  const hf = rust.Tokenizer.fromFile(f);
  const mod = (await import('@huggingface/tokenizers')) as unknown as { Tokenizer: new (json: object, config: object) => JsTokenizer };
  const js = new mod.Tokenizer(JSON.parse(fs.readFileSync(f, 'utf8')), {});
  assert.deepEqual(nfc.encode('cafe\u0301'), nfc.encode('café'));
  for (const s of ['cafe\u0301 nai\u0308ve', 'A\u030angstro\u0308m <image> e\u0301', ...EDGES.slice(0, 40)]) {
    assert.deepEqual((await hf.encode(s)).getIds(), nfc.encode(s), JSON.stringify(s));
    assert.deepEqual(js.encode(s).ids, nfc.encode(s), JSON.stringify(s));
  }
});

test('the special tokens are HF added_tokens with special: true and fixed ids', () => {
  const json = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.deepEqual(json.added_tokens.map((t: { id: number; content: string; special: boolean; normalized: boolean }) => [t.id, t.content, t.special, t.normalized]),
    SPECIAL_TOKENS.map((t, i) => [i, t, true, false]));
  assert.equal(json.model.type, 'BPE');
  assert.equal(json.pre_tokenizer.type, 'ByteLevel');
  assert.equal(json.pre_tokenizer.add_prefix_space, false);
  assert.equal(json.decoder.type, 'ByteLevel');
  assert.equal(json.normalizer, null);
});
