/**
 * BLEU and ROUGE-L against published values and hand-computed cases.
 *
 * Published values: the doctests of NLTK's nltk/translate/bleu_score.py (sentence_bleu, corpus_bleu,
 * modified_precision, brevity_penalty and SmoothingFunction docstrings; https://www.nltk.org/_modules/nltk/translate/bleu_score.html),
 * whose examples come from Papineni et al. (2002) and mteval-v13a.pl; and the ROUGE-L example of Lin (2004),
 * "ROUGE: A Package for Automatic Evaluation of Summaries", section 3.1.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { corpusBleu, lcsLength, rougeL, sentenceBleu, tokenize } from './text';

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);
/** NLTK's doctests print with ELLIPSIS: "0.5045..." means the value starts with those digits. */
const startsWith = (a: number, digits: string) => assert.ok(String(a).startsWith(digits), `${a} does not start with ${digits}`);

// The NLTK docstring example (tokens as given: case-sensitive, 'Party' differs from 'party').
const hyp1 = ['It', 'is', 'a', 'guide', 'to', 'action', 'which', 'ensures', 'that', 'the', 'military', 'always',
  'obeys', 'the', 'commands', 'of', 'the', 'party'];
const ref1a = ['It', 'is', 'a', 'guide', 'to', 'action', 'that', 'ensures', 'that', 'the', 'military', 'will',
  'forever', 'heed', 'Party', 'commands'];
const ref1b = ['It', 'is', 'the', 'guiding', 'principle', 'which', 'guarantees', 'the', 'military', 'forces',
  'always', 'being', 'under', 'the', 'command', 'of', 'the', 'Party'];
const ref1c = ['It', 'is', 'the', 'practical', 'guide', 'for', 'the', 'army', 'always', 'to', 'heed', 'the',
  'directions', 'of', 'the', 'party'];
const hyp2 = ['he', 'read', 'the', 'book', 'because', 'he', 'was', 'interested', 'in', 'world', 'history'];
const ref2a = ['he', 'was', 'interested', 'in', 'world', 'history', 'because', 'he', 'read', 'the', 'book'];

test('BLEU: NLTK sentence_bleu and corpus_bleu doctest values', () => {
  startsWith(sentenceBleu(hyp1, [ref1a, ref1b, ref1c]).bleu, '0.5045');
  startsWith(corpusBleu([hyp1, hyp2], [[ref1a, ref1b, ref1c], [ref2a]]).bleu, '0.5920');
  // Corpus BLEU is not the mean of sentence BLEU: NLTK documents the mean as 0.6223...
  const mean = (sentenceBleu(hyp1, [ref1a, ref1b, ref1c]).bleu + sentenceBleu(hyp2, [ref2a]).bleu) / 2;
  startsWith(mean, '0.6223');
  // Five orders with weights 0.1666 each: NLTK prints the full value 0.45838627164939455.
  close(sentenceBleu(hyp1, [ref1a, ref1b, ref1c], { weights: [0.1666, 0.1666, 0.1666, 0.1666, 0.1666] }).bleu,
    0.45838627164939455, 1e-15);
});

test('BLEU: NLTK modified precision doctests (clipping against the max count in any one reference)', () => {
  const refs = [ref1a, ref1b, ref1c];
  const p = sentenceBleu(hyp1, refs).precisions;
  startsWith(p[0], '0.9444');
  close(p[1], 0.5882352941176471, 1e-15);
  // "the the the the the the the": 'the' occurs at most twice in one reference -> 2/7 = 0.2857...
  const r = sentenceBleu('the the the the the the the', ['the cat is on the mat', 'there is a cat on the mat']);
  startsWith(r.precisions[0], '0.2857');
  assert.equal(r.matches[0], 2); assert.equal(r.totals[0], 7);
});

test('BLEU: brevity penalty with the closest reference length (NLTK and mteval-v13a.pl doctests)', () => {
  const a = (n: number) => new Array<string>(n).fill('a');
  // References 28 and 28, hypothesis 12: exp(1 - 28/12) = 0.2635971381157267.
  close(sentenceBleu(a(12), [a(28), a(28)]).bp, 0.2635971381157267, 1e-15);
  // 13 and 2: the closest is 13 > 12 -> exp(1 - 13/12) = 0.9200...
  startsWith(sentenceBleu(a(12), [a(13), a(2)]).bp, '0.9200');
  // 13 and 11 are equally close: the shorter (11) is used and 12 > 11 -> no penalty.
  assert.equal(sentenceBleu(a(12), [a(13), a(11)]).bp, 1);
  assert.equal(sentenceBleu(a(12), [a(11), a(13)]).bp, 1);
  // mteval-v13a.pl: references 11 and 8, hypothesis 7 -> exp(1 - 8/7) = 0.8668...
  startsWith(sentenceBleu(a(7), [a(11), a(8)]).bp, '0.8668');
  assert.equal(sentenceBleu(a(7), [a(11), a(8), a(6), a(7)]).bp, 1);
});

test('BLEU smoothing: NLTK SmoothingFunction doctests (method0/1 0.4118..., method2 0.4452...)', () => {
  startsWith(sentenceBleu(hyp1, [ref1a]).bleu, '0.4118');
  startsWith(sentenceBleu(hyp1, [ref1a], { smoothing: 'epsilon' }).bleu, '0.4118');
  // NLTK >= 3.5 method2 adds one to orders n >= 2 only (Lin & Och 2004); older NLTK added it to unigrams too
  // and printed 0.4489...
  startsWith(sentenceBleu(hyp1, [ref1a], { smoothing: 'add1' }).bleu, '0.4452');
});

test('BLEU: hand-computed sentence with no 4-gram match, unsmoothed and smoothed', () => {
  // hyp "the cat sat on the mat" vs ref "the cat is on the mat" (6 tokens each, BP = exp(1 - 6/6) = 1):
  // 1-grams: the x2 (ref has 2), cat, on, mat match; sat does not        -> 5/6
  // 2-grams: the cat, on the, the mat match; cat sat, sat on do not       -> 3/5
  // 3-grams: on the mat matches; the cat sat, cat sat on, sat on the not  -> 1/4
  // 4-grams: none of the three                                           -> 0/3
  const r = sentenceBleu('the cat sat on the mat', ['The cat is on the mat']);
  assert.deepEqual(r.matches, [5, 3, 1, 0]); assert.deepEqual(r.totals, [6, 5, 4, 3]);
  assert.equal(r.bp, 1); assert.equal(r.bleu, 0);   // Papineni: a zero precision makes the geometric mean 0
  // add1 (orders >= 2): (5/6 * 4/6 * 2/5 * 1/4)^(1/4) = (1/18)^(1/4)
  close(sentenceBleu('the cat sat on the mat', ['the cat is on the mat'], { smoothing: 'add1' }).bleu, (1 / 18) ** 0.25);
  // epsilon: p4 = 0.1 / 3 -> (5/6 * 3/5 * 1/4 * 1/30)^(1/4) = (1/240)^(1/4)
  close(sentenceBleu('the cat sat on the mat', ['the cat is on the mat'], { smoothing: 'epsilon' }).bleu, (1 / 240) ** 0.25);
  // Too short a hypothesis: "the cat" (c = 2) vs 6 tokens, BLEU-2: p1 = p2 = 1, BP = exp(1 - 6/2) = e^-2.
  close(sentenceBleu('the cat', ['the cat is on the mat'], { maxN: 2 }).bleu, Math.exp(-2));
});

test('BLEU: corpus sums counts and lengths before dividing', () => {
  // Sentence 1: "a b c d" vs "a b c d" (all match, 4/3/2/1 n-grams); sentence 2: "x y" vs "x z" (1/2 unigram,
  // 0/1 bigram, no 3- or 4-grams). Corpus BLEU-2: p1 = 5/6, p2 = 3/4, c = r = 6, BP = 1.
  const r = corpusBleu(['a b c d', 'x y'], [['a b c d'], ['x z']], { maxN: 2 });
  assert.deepEqual(r.matches, [5, 3]); assert.deepEqual(r.totals, [6, 4]);
  close(r.bleu, Math.sqrt((5 / 6) * (3 / 4)));
  assert.equal(r.hypLength, 6); assert.equal(r.refLength, 6); assert.equal(r.ratio, 1);
});

test('tokenize: lowercase, split on anything not a letter or digit (Unicode aware)', () => {
  assert.deepEqual(tokenize('Red-ish, 2 cats!'), ['red', 'ish', '2', 'cats']);
  assert.deepEqual(tokenize('  Café über  ÉLAN '), ['café', 'über', 'élan']);
  assert.deepEqual(tokenize('...'), []);
  // Strings are tokenised, token arrays are used as given (case kept).
  assert.equal(sentenceBleu('THE CAT', ['the cat'], { maxN: 2 }).bleu, 1);
  assert.equal(sentenceBleu(['THE', 'CAT'], [['the', 'cat']], { maxN: 2 }).bleu, 0);
});

test('lcsLength: the textbook case and the edges', () => {
  assert.equal(lcsLength('ABCBDAB'.split(''), 'BDCABA'.split('')), 4);   // CLRS 15.4: "BCBA"
  assert.equal(lcsLength([], ['a']), 0);
  assert.equal(lcsLength(['a', 'b'], ['a', 'b']), 2);
  assert.equal(lcsLength(['a', 'b'], ['b', 'a']), 1);
});

test('ROUGE-L: Lin (2004) section 3.1 example, multiple references take the max, beta', () => {
  // Reference "police killed the gunman". S2 "police kill the gunman": LCS "police the gunman" = 3 -> 3/4.
  // S3 "the gunman kill police": LCS "the gunman" = 2 -> 2/4.
  const r = rougeL(['police kill the gunman', 'the gunman kill police'], [['police killed the gunman'], ['police killed the gunman']]);
  close(r.perSentence[0], 0.75); close(r.perSentence[1], 0.5); close(r.rougeL, 0.625);
  // With a second, worse reference, the best one counts.
  close(rougeL(['police kill the gunman'], [['a b c', 'police killed the gunman']]).rougeL, 0.75);
  // "a b c d e" vs "a c e": LCS 3, P = 3/5, R = 1: F1 = 2 * 0.6 / 1.6 = 0.75; beta 2: 5 * 0.6 / (1 + 4 * 0.6) = 3/3.4.
  const f = rougeL(['a b c d e'], [['a c e']]);
  close(f.rougeL, 0.75); close(f.precision, 0.6); close(f.recall, 1);
  close(rougeL(['a b c d e'], [['a c e']], { beta: 2 }).rougeL, 3 / 3.4);
  // An empty hypothesis (after tokenisation) scores 0.
  assert.equal(rougeL(['!!'], [['a']]).rougeL, 0);
});

test('bad input: mismatched lengths, empty corpora, missing references, bad options name the argument', () => {
  assert.throws(() => corpusBleu(['a'], []), /corpusBleu: hyps has 1 sentences but refs has 0 reference lists/);
  assert.throws(() => corpusBleu([], []), /corpusBleu: hyps is empty/);
  assert.throws(() => corpusBleu(['a'], [[]]), /corpusBleu: refs\[0\] is empty/);
  assert.throws(() => corpusBleu(['a', 3 as unknown as string], [['a'], ['b']]), /corpusBleu: hyps\[1\] must be a string or an array of tokens/);
  assert.throws(() => corpusBleu(['a'], [[['a', 2 as unknown as string]]]), /corpusBleu: refs\[0\]\[0\]\[1\] must be a string token/);
  assert.throws(() => sentenceBleu('a', ['a'], { smoothing: 'floor' as 'none' }), /opts\.smoothing must be/);
  assert.throws(() => sentenceBleu('a', ['a'], { maxN: 0 }), /opts\.maxN must be a positive integer/);
  assert.throws(() => sentenceBleu('a', ['a'], { weights: [0.5, NaN] }), /opts\.weights has NaN/);
  assert.throws(() => rougeL(['a', 'b'], [['a']]), /rougeL: hyps has 2 sentences but refs has 1/);
  assert.throws(() => rougeL(['a'], [['a']], { beta: 0 }), /rougeL: opts\.beta must be a positive number/);
});
