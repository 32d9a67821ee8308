import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SPECIAL_TOKENS, Tokenizer, trainBPE } from './index';

const S = SPECIAL_TOKENS.length;

/** Merges as token-string pairs, read back from the HF JSON. */
function mergeStrings(tok: Tokenizer): string[][] {
  return (tok.toJSON() as { model: { merges: string[][] } }).model.merges;
}

test('toy corpus: merges are the hand-counted most frequent pairs, in order', () => {
  // Pre-tokens: "ab" x1, " ab" x2 (space is Ġ), "abc" x1. Pair counts: a b = 4, Ġ a = 2, b c = 1.
  // 1st merge a+b (4). Then Ġ ab = 2, ab c = 1: 2nd merge Ġ+ab. ab c = 1 < minFrequency 2: stop.
  const tok = trainBPE(['ab ab ab', 'abc'], { vocabSize: 1000 });
  assert.deepEqual(mergeStrings(tok), [['a', 'b'], ['Ġ', 'ab']]);
  assert.equal(tok.vocabSize, S + 256 + 2);
  assert.equal(tok.tokenToId('ab'), S + 256);
  assert.equal(tok.tokenToId('Ġab'), S + 257);
  // With minFrequency 1 the single "ab c" pair is merged too.
  const tok1 = trainBPE(['ab ab ab', 'abc'], { vocabSize: 1000, minFrequency: 1 });
  assert.deepEqual(mergeStrings(tok1), [['a', 'b'], ['Ġ', 'ab'], ['ab', 'c']]);
  assert.deepEqual(tok1.encode('abc ab'), [S + 258, S + 257]);
});

test('tie rule: equal counts go to the smaller left id, then the smaller right id', () => {
  // "ba" and "ab" each once: b a and a b tie at 1; a (0x61) < b (0x62), so a+b first, then b+a.
  assert.deepEqual(mergeStrings(trainBPE(['ba', 'ab'], { vocabSize: 1000, minFrequency: 1 })), [['a', 'b'], ['b', 'a']]);
  // "xz" and "xy": same left id, y < z.
  assert.deepEqual(mergeStrings(trainBPE(['xz', 'xy'], { vocabSize: 1000, minFrequency: 1 })), [['x', 'y'], ['x', 'z']]);
});

test('overlapping pairs merge left to right without overlap ("aaaa" -> aa aa, "aaa" -> aa a)', () => {
  // "aaaa": a a occurs 3 times in one word, merged as [aa, aa]; then aa aa once.
  const tok = trainBPE(['aaaa'], { vocabSize: 1000, minFrequency: 1 });
  assert.deepEqual(mergeStrings(tok), [['a', 'a'], ['aa', 'aa']]);
  const ids = tok.encode('aaa');
  assert.deepEqual(ids.map((i) => tok.idToToken(i)), ['aa', 'a']);
  assert.deepEqual(tok.encode('aaaaa').map((i) => tok.idToToken(i)), ['aaaa', 'a']);
});

test('special tokens in training text are cut out, not learned as byte pairs', () => {
  const tok = trainBPE(['<image><image><image> x'], { vocabSize: 1000, minFrequency: 1 });
  // Only " x" remains: one merge Ġ+x.
  assert.deepEqual(mergeStrings(tok), [['Ġ', 'x']]);
  assert.equal(tok.imageId, 3);
});

function corpus(): string[] {
  const words = ['the', 'red', 'circle', 'is', 'left', 'of', 'a', 'small', 'blue', 'square', 'triangle', 'green',
    'large', 'two', 'three', 'shapes', 'on', 'striped', 'background', 'what', 'colour', "isn't", 'how', 'many'];
  let s = 12345;
  const rnd = (): number => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648; };
  const out: string[] = [];
  for (let i = 0; i < 3000; i++) {
    const n = 3 + Math.floor(rnd() * 8);
    const ws: string[] = [];
    for (let j = 0; j < n; j++) ws.push(words[Math.floor(rnd() * words.length)]);
    out.push(ws.join(' ') + (rnd() < 0.3 ? '?' : '.'));
  }
  out.push('紅い円 青い四角 🎨 naïve café');
  return out;
}

test('training is deterministic, and independent of the order of the texts', () => {
  const texts = corpus();
  const a = JSON.stringify(trainBPE(texts, { vocabSize: 400 }).toJSON());
  const b = JSON.stringify(trainBPE(texts, { vocabSize: 400 }).toJSON());
  const c = JSON.stringify(trainBPE(texts.slice().reverse(), { vocabSize: 400 }).toJSON());
  assert.equal(a, b);
  assert.equal(a, c);
});

test('vocabSize is honoured exactly when the corpus has enough pairs, and is an upper bound otherwise', () => {
  const texts = corpus();
  let calls = 0;
  let last: [number, number] = [0, 0];
  const tok = trainBPE(texts, { vocabSize: 300, onProgress: (d, t) => { calls++; last = [d, t]; } });
  assert.equal(tok.vocabSize, 300);
  assert.equal(tok.numMerges, 300 - S - 256);
  assert.deepEqual(last, [300 - S - 256, 300 - S - 256]);
  assert.ok(calls >= 1);
  // The toy corpus has far fewer than 5000 distinct frequent pairs: training stops when none is left.
  const big = trainBPE(texts, { vocabSize: 5000 });
  assert.ok(big.vocabSize < 5000 && big.vocabSize > 300, `got ${big.vocabSize}`);
  // Every word of the toy vocabulary became one token (with its leading space).
  assert.equal(big.encode(' triangle').length, 1);
});

test('special token ids are fixed at the start of the vocabulary', () => {
  const tok = trainBPE(corpus(), { vocabSize: 300 });
  assert.deepEqual(SPECIAL_TOKENS.map((t) => tok.tokenToId(t)), SPECIAL_TOKENS.map((_, i) => i));
  assert.equal(tok.padId, 0);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  assert.equal(tok.imageId, 3);
  assert.equal(tok.audioId, 4);
  assert.deepEqual(tok.specialTokens, [...SPECIAL_TOKENS]);
  // Custom specials also come first, in the order given.
  const custom = trainBPE(['hello'], { vocabSize: 300, specialTokens: ['<pad>', '<x>'] });
  assert.equal(custom.tokenToId('<x>'), 1);
  assert.equal(custom.tokenToId('h'), 2 + 0x68);
});

test('bad training options name the problem', () => {
  assert.throws(() => trainBPE(['x'], { vocabSize: 256 + S - 1 }), /vocabSize must be an integer in \[264, .*got 263/);
  assert.throws(() => trainBPE(['x'], { vocabSize: 300.5 }), /vocabSize/);
  assert.throws(() => trainBPE(['x'], { vocabSize: 300, minFrequency: 0 }), /minFrequency/);
  assert.throws(() => trainBPE(['x'], { vocabSize: 300, specialTokens: ['<a>', '<a>'] }), /listed twice/);
  assert.throws(() => trainBPE(['x'], { vocabSize: 300, specialTokens: ['a'] }), /collides with a byte token/);
  assert.throws(() => trainBPE(['x', 3 as unknown as string], { vocabSize: 300 }), /text 1 is number/);
});
