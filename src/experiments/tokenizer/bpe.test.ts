import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SPECIAL_TOKENS, Tokenizer, trainBPE } from './index';

const TRAIN = [
  'a large red circle left of a small blue square', 'two green triangles on a striped background',
  'what colour is the circle? red.', 'how many shapes are there? three.', "it's a small square, isn't it?",
  '紅い円と青い四角', '😀 smiling face with big eyes', 'naïve café crème brûlée', 'مرحبا שלום Привет',
];
const tok = trainBPE(Array.from({ length: 20 }, () => TRAIN).flat(), { vocabSize: 400 });

const UNICODE: Array<[string, string]> = [
  ['empty string', ''],
  ['ASCII sentence', 'The quick brown fox jumps over the lazy dog.'],
  ['CJK', '紅い円が青い四角の左にある。中文字符。한국어'],
  ['emoji with ZWJ and skin tones', 'family 👨‍👩‍👧‍👦 thumbs 👍🏽👋🏿 flag 🇯🇵 rainbow 🏳️‍🌈 keycap 1️⃣'],
  ['combining marks (decomposed, not normalised)', 'e\u0301 a\u0300\u0323 n\u0303 Zalgo h\u0335\u0322e\u0334\u0327'],
  ['RTL and mixed bidi', 'مرحبا بالعالم שלום עולם abc אבג 123'],
  ['whitespace runs', 'a  b   c    d     e\t\t\tf \u00a0\u3000 g'],
  ['newlines and CRLF', 'line one\nline two\r\nline three\r\n\r\n\n'],
  ['leading and trailing space', '   padded   '],
  ['special tokens inside text', 'describe <image> and <audio><|end|>'],
  ['partial special tokens', '<ima ge> <|end| <<image>>'],
  ['control characters and NUL', 'a\u0000b\u0001c\u007fd\u0085e\ufeff'],
  ['long run without spaces', 'ab'.repeat(2000) + '🙂'.repeat(300)],
];

for (const [name, text] of UNICODE) {
  test(`round trip decode(encode(x)) === x: ${name}`, () => {
    const ids = tok.encode(text);
    assert.equal(tok.decode(ids), text);
    for (const id of ids) assert.ok(Number.isInteger(id) && id >= 0 && id < tok.vocabSize);
  });
}

test('round trip on random code points from every plane (valid UTF-16 only)', () => {
  let s = 99;
  const rnd = (n: number): number => { s = (s * 48271) % 2147483647; return s % n; };
  for (let k = 0; k < 200; k++) {
    let str = '';
    const len = rnd(30);
    for (let i = 0; i < len; i++) {
      let cp = rnd(0x110000);
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x20; // lone surrogates are not Unicode text
      str += String.fromCodePoint(cp);
    }
    assert.equal(tok.decode(tok.encode(str)), str);
  }
});

test('a lone surrogate encodes as U+FFFD, like TextEncoder and HF', () => {
  assert.deepEqual(tok.encode('a\ud800b'), tok.encode('a\ufffdb'));
  assert.equal(tok.decode(tok.encode('x\udfff')), 'x\ufffd');
});

test('special tokens are matched whole, longest first, and skipped on request', () => {
  const ids = tok.encode('<bos>hi<image><image>there<|end|>');
  assert.equal(ids[0], tok.bosId);
  assert.equal(ids.filter((i) => i === tok.imageId).length, 2);
  assert.equal(ids[ids.length - 1], tok.tokenToId('<|end|>'));
  assert.equal(tok.decode(ids, { skipSpecial: true }), 'hithere');
  // A special token never comes out of merges: '<image' without '>' is plain bytes.
  assert.ok(!tok.encode('<image').includes(tok.imageId));
  // Overlapping candidates: with tokens '<a>' and '<a>b>', the longer one wins at the same position.
  const t2 = trainBPE(['x'], { vocabSize: 300, specialTokens: ['<a>', '<a>b>'] });
  assert.deepEqual(t2.encode('<a>b>'), [1]);
  assert.deepEqual(t2.encode('<a>c'), [0, t2.tokenToId('c')]);
});

test('encode bos/eos options', () => {
  const plain = tok.encode('red circle');
  assert.deepEqual(tok.encode('red circle', { bos: true, eos: true }), [tok.bosId, ...plain, tok.eosId]);
  assert.deepEqual(tok.encode('', { bos: true }), [tok.bosId]);
});

test('encodeBatch pads with padId to the longest row, reports lengths, and keeps eos when truncating', () => {
  const texts = ['red', 'a large red circle left of a small blue square', ''];
  const b = tok.encodeBatch(texts, { maxLen: 64, bos: true, eos: true });
  const rows = texts.map((t) => tok.encode(t, { bos: true, eos: true }));
  const T = Math.max(...rows.map((r) => r.length));
  assert.deepEqual(b.shape, [3, T]);
  assert.deepEqual(Array.from(b.lengths), rows.map((r) => r.length));
  rows.forEach((r, i) => {
    const row = Array.from(b.ids.subarray(i * T, (i + 1) * T));
    assert.deepEqual(row, [...r, ...new Array(T - r.length).fill(tok.padId)]);
  });
  // Truncation: maxLen 5 keeps bos + 3 tokens + eos.
  const t = tok.encodeBatch(texts, { maxLen: 5, bos: true, eos: true });
  assert.equal(t.shape[1], 5);
  assert.deepEqual(Array.from(t.ids.subarray(5, 10)), [...rows[1].slice(0, 4), tok.eosId]);
  // Without eos, plain truncation; padTo 'max' pads every row to maxLen.
  const m = tok.encodeBatch(['red'], { maxLen: 8, padTo: 'max' });
  assert.deepEqual(m.shape, [1, 8]);
  assert.deepEqual(Array.from(m.ids), [...tok.encode('red'), ...new Array(8 - tok.encode('red').length).fill(0)]);
  const cut = tok.encodeBatch([texts[1]], { maxLen: 3 });
  assert.deepEqual(Array.from(cut.ids), tok.encode(texts[1]).slice(0, 3));
  // A batch of empty strings is [B, 1] of padding with lengths 0.
  const e = tok.encodeBatch(['', ''], { maxLen: 4 });
  assert.deepEqual(e.shape, [2, 1]);
  assert.deepEqual(Array.from(e.lengths), [0, 0]);
  assert.throws(() => tok.encodeBatch(['x'], { maxLen: 0 }), /maxLen must be a positive integer, got 0/);
  assert.throws(() => tok.encodeBatch(['x'], { maxLen: 4, padTo: 'min' as 'max' }), /padTo/);
});

test('chat: the loss mask covers exactly the assistant answers and their <|end|>', () => {
  const turns = [
    { role: 'user' as const, content: '<image>What colour is the circle?' },
    { role: 'assistant' as const, content: 'It is red.' },
    { role: 'user' as const, content: 'And the square?' },
    { role: 'assistant' as const, content: 'Blue, and small.' },
  ];
  const c = tok.chat(turns, { eos: true });
  assert.equal(c.ids.length, c.lossMask.length);
  assert.equal(c.text, '<bos><|user|><image>What colour is the circle?<|end|><|assistant|>It is red.<|end|>' +
    '<|user|>And the square?<|end|><|assistant|>Blue, and small.<|end|><eos>');
  // The template is plain text with special tokens: encoding the rendered text gives the same ids.
  assert.deepEqual(c.ids, tok.encode(c.text));
  // The masked tokens decode to the answers, each closed by <|end|>; nothing else is masked.
  const answer = c.ids.filter((_, i) => c.lossMask[i] === 1);
  assert.equal(tok.decode(answer), 'It is red.<|end|>Blue, and small.<|end|>');
  const rest = c.ids.filter((_, i) => c.lossMask[i] === 0);
  assert.equal(tok.decode(rest), '<bos><|user|><image>What colour is the circle?<|end|><|assistant|><|user|>And the square?<|end|><|assistant|><eos>');
  // The masked span starts right after each <|assistant|>.
  const asst = tok.tokenToId('<|assistant|>')!;
  c.ids.forEach((id, i) => { if (id === asst) assert.equal(c.lossMask[i + 1], 1); });
  // '<image>' stays one token.
  assert.equal(c.ids.filter((i) => i === tok.imageId).length, 1);
});

test('chat: generation prompt, no bos, and bad turns', () => {
  const g = tok.chat([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true, bos: false });
  assert.equal(g.text, '<|user|>hi<|end|><|assistant|>');
  assert.ok(g.lossMask.every((m) => m === 0));
  assert.throws(() => tok.chat([{ role: 'system' as 'user', content: 'x' }]), /turn 0 has role "system"/);
  assert.throws(() => tok.chat([{ role: 'user', content: 'a<|end|>b' }]), /turn 0 \(user\) contains the template token <\|end\|>/);
  assert.throws(() => tok.chat([{ role: 'user', content: 'ok' }, { role: 'assistant', content: 5 as unknown as string }]), /turn 1 \(assistant\) content is number/);
});

test('decode rejects ids outside the vocabulary, naming the id and position', () => {
  assert.throws(() => tok.decode([1, 2, tok.vocabSize]), new RegExp(`id ${tok.vocabSize} at position 2 is outside the vocabulary \\[0, ${tok.vocabSize}\\)`));
  assert.throws(() => tok.decode([-1]), /id -1 at position 0/);
  assert.throws(() => tok.decode([1.5]), /id 1.5 at position 0/);
  assert.equal(tok.decode(Int32Array.from(tok.encode('red'))), 'red');
});

test('vocabulary lookups', () => {
  assert.equal(tok.idToToken(0), '<pad>');
  assert.equal(tok.tokenToId('Ġred'), tok.encode(' red')[0]);
  assert.equal(tok.tokenToId('no such token'), undefined);
  assert.equal(tok.idToToken(tok.vocabSize), undefined);
});

test('save is atomic: no temporary file is left behind, after a successful or a failed save', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-tok-save-'));
  const file = path.join(dir, 'nested', 'tokenizer.json');
  tok.save(file);
  assert.deepEqual(fs.readdirSync(path.dirname(file)), ['tokenizer.json']);
  assert.equal(JSON.stringify(Tokenizer.fromFile(file).toJSON()), JSON.stringify(tok.toJSON()));
  // Saving onto a directory fails with the path in the message, and cleans up its temporary file.
  fs.mkdirSync(path.join(dir, 'isdir'));
  assert.throws(() => tok.save(path.join(dir, 'isdir')), /Tokenizer.save: cannot write .*isdir/);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['isdir', 'nested']);
  fs.rmSync(dir, { recursive: true });
});

test('loading bad files gives errors that name the problem', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-tok-bad-'));
  const good = tok.toJSON() as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const variant = (f: (j: any) => void): object => { const j = JSON.parse(JSON.stringify(good)); f(j); return j; }; // eslint-disable-line @typescript-eslint/no-explicit-any
  const notJson = path.join(dir, 'a.json');
  fs.writeFileSync(notJson, '{"model": ');
  assert.throws(() => Tokenizer.fromFile(notJson), /a\.json is not a tokenizer\.json \(not valid JSON/);
  assert.throws(() => Tokenizer.fromFile(path.join(dir, 'missing.json')), /cannot read .*missing\.json/);
  assert.throws(() => Tokenizer.fromJSON('[1, 2]'), /the top level is not an object/);
  assert.throws(() => Tokenizer.fromJSON({ hello: 1 }), /no "model" object/);
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { j.model.type = 'WordPiece'; })), /model.type is "WordPiece", expected "BPE"/);
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { j.model.unk_token = '<unk>'; })), /model.unk_token/);
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { j.pre_tokenizer = { type: 'Whitespace' }; })), /pre_tokenizer is "Whitespace"/);
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { j.pre_tokenizer.add_prefix_space = true; })), /add_prefix_space/);
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { j.normalizer = { type: 'Lowercase' }; })), /normalizer "Lowercase" is not supported/);
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { j.post_processor = { type: 'TemplateProcessing' }; })), /post_processor "TemplateProcessing"/);
  const nul = good.model.vocab['Ā'];
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { delete j.model.vocab['Ā']; })), new RegExp(`no token has id ${nul} \\(ids must run from 0`));
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { delete j.model.vocab['Ā']; j.model.vocab['Āx'] = nul; })), /lacks the byte token "Ā" \(byte 0x00\)/);
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { j.model.merges.push(['zz', 'q']); })), /model.merges\[\d+\] .*"zz" is not in the vocabulary/);
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { j.model.merges.push(['a', 'q']); })), /makes "aq", which is not in the vocabulary/);
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { j.model.vocab.extra = 0; })), /id 0 is given to both/);
  assert.throws(() => Tokenizer.fromJSON(variant((j) => { j.added_tokens[0].lstrip = true; })), /added_tokens\[0\] \("<pad>"\) has lstrip: true/);
  // HF's older string form of merges ("a b") is read as well.
  const strMerges = variant((j) => { j.model.merges = j.model.merges.map((m: string[]) => m.join(' ')); });
  assert.deepEqual(Tokenizer.fromJSON(strMerges).encode('a red circle'), tok.encode('a red circle'));
  fs.rmSync(dir, { recursive: true });
});

test('SPECIAL_TOKENS: pad first, then bos, eos, image, audio and the template markers', () => {
  assert.deepEqual([...SPECIAL_TOKENS], ['<pad>', '<bos>', '<eos>', '<image>', '<audio>', '<|user|>', '<|assistant|>', '<|end|>']);
  assert.ok(Object.isFrozen(SPECIAL_TOKENS));
});
