/**
 * VQA accuracy: the official script's answer normalisation (GT-Vision-Lab/VQA,
 * PythonEvaluationTools/vqaEvaluation/vqaEval.py: processPunctuation, processDigitArticle), the consensus rule,
 * the per-type breakdown and the majority baseline.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { majorityBaseline, normalizeAnswer, vqaAccuracy, vqaScore } from './vqa';

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);

test('normalizeAnswer: case, articles, number words, whitespace', () => {
  assert.equal(normalizeAnswer('The Two dogs.'), '2 dogs');
  assert.equal(normalizeAnswer('  Ten\tapples\n'), '10 apples');
  assert.equal(normalizeAnswer('an apple'), 'apple');
  assert.equal(normalizeAnswer('None'), '0');
  assert.equal(normalizeAnswer('eleven'), 'eleven');   // the official map stops at ten
  assert.equal(normalizeAnswer('theme'), 'theme');     // articles are whole words only
});

test('normalizeAnswer: punctuation as the official script does it', () => {
  assert.equal(normalizeAnswer('yes.'), 'yes');          // a period not followed by a digit goes
  assert.equal(normalizeAnswer('3.5'), '3.5');           // a decimal point stays
  assert.equal(normalizeAnswer('1,000'), '1000');        // a comma between digits: punctuation deleted
  assert.equal(normalizeAnswer('t/shirt'), 't shirt');   // no space beside '/': replaced by a space
  assert.equal(normalizeAnswer('red / blue'), 'red blue');   // '/' beside a space: deleted
  assert.equal(normalizeAnswer('(big) cat?'), 'big cat');
  assert.equal(normalizeAnswer('red-ish!'), 'red-ish!'); // '-' and '!' are not in the official list
  assert.equal(normalizeAnswer("don't"), 'don t');       // an apostrophe inside a word becomes a space
});

test('normalizeAnswer: apostrophe-less contractions are restored', () => {
  assert.equal(normalizeAnswer('dont'), 'don’t');
  assert.equal(normalizeAnswer('Its not, it isnt'), 'its not it isn’t');
  assert.equal(normalizeAnswer('couldnt’ve'), 'couldn’t’ve');
  assert.equal(normalizeAnswer('couldn’tve'), 'couldn’t’ve');
  assert.equal(normalizeAnswer('oclock'), 'o’clock');
});

test('vqaScore: one reference is exact match after normalisation', () => {
  assert.equal(vqaScore('Two', ['2']), 1);
  assert.equal(vqaScore('the circle', ['Circle.']), 1);
  assert.equal(vqaScore('3', ['2']), 0);
});

test('vqaScore: min(matches / 3, 1) with several references', () => {
  assert.equal(vqaScore('red', ['red', 'red', 'blue']), 2 / 3);
  assert.equal(vqaScore('blue', ['red', 'red', 'blue']), 1 / 3);
  assert.equal(vqaScore('red', ['red', 'red']), 2 / 3);   // two references cap the score at 2/3
  assert.equal(vqaScore('red', ['red', 'Red', 'red.', 'blue', 'green']), 1);
  assert.equal(vqaScore('pink', ['red', 'blue', 'green']), 0);
});

test('vqaScore: ten references average min(matches / 3, 1) over the ten 9-annotator subsets', () => {
  const refs = (k: number) => [...new Array<string>(k).fill('yes'), ...new Array<string>(10 - k).fill('no')];
  // k matching answers: leaving out a matching one gives min(1, (k-1)/3), any other min(1, k/3).
  // k = 1: (1 * 0 + 9 * 1/3) / 10 = 0.3; k = 2: (2 * 1/3 + 8 * 2/3) / 10 = 0.6; k = 3: (3 * 2/3 + 7) / 10 = 0.9;
  // k = 4: every subset still has 3 -> 1.
  close(vqaScore('yes', refs(1)), 0.3);
  close(vqaScore('yes', refs(2)), 0.6);
  close(vqaScore('yes', refs(3)), 0.9);
  close(vqaScore('yes', refs(4)), 1);
  close(vqaScore('yes', refs(0)), 0);
});

test('vqaAccuracy: overall and per question type', () => {
  const r = vqaAccuracy(['Two', 'red', 'yes', 'left'], [['2'], ['red', 'red', 'blue'], ['no'], ['left']],
    ['count', 'colour', 'yesno', 'position']);
  close(r.overall, (1 + 2 / 3 + 0 + 1) / 4);
  assert.deepEqual(Object.keys(r.byType), ['colour', 'count', 'position', 'yesno']);
  close(r.byType.colour.accuracy, 2 / 3);
  assert.deepEqual(r.byType.count, { accuracy: 1, n: 1 });
  assert.deepEqual(r.byType.yesno, { accuracy: 0, n: 1 });
  assert.deepEqual(r.perQuestion.map((x) => Math.round(x * 1000) / 1000), [1, 0.667, 0, 1]);
  const two = vqaAccuracy(['a', 'b', 'c'], [['a'], ['x'], ['c']], ['t', 't', 'u']);
  assert.deepEqual(two.byType, { t: { accuracy: 0.5, n: 2 }, u: { accuracy: 1, n: 1 } });
  assert.deepEqual(vqaAccuracy(['a'], [['a']]).byType, {});
});

test('majorityBaseline: the most frequent normalised training answer per type, overall fallback', () => {
  const train = { yesno: ['yes', 'Yes', 'no'], count: ['2', 'two', '3', '3'], colour: ['red', 'blue'] };
  // count: '2' and 'two' normalise to the same answer and tie with '3' (2 each): the first in sort order, '2'.
  // colour: a 1-1 tie -> 'blue'. shape is absent from training: the overall majority over all nine answers,
  // where '2', '3' and 'yes' tie at 2 each -> '2'.
  const r = majorityBaseline(train, [['no'], ['2'], ['red'], ['2']], ['yesno', 'count', 'colour', 'shape']);
  assert.deepEqual(r.answers, { yesno: 'yes', count: '2', colour: 'blue', shape: '2' });
  assert.deepEqual(r.perQuestion, [0, 1, 0, 1]);
  assert.equal(r.overall, 0.5);
  assert.deepEqual(r.byType.count, { accuracy: 1, n: 1 });
});

test('bad input: errors name the argument', () => {
  assert.throws(() => vqaAccuracy(['a', 'b'], [['a']]), /vqaAccuracy: preds has 2 answers but refs has 1 reference lists/);
  assert.throws(() => vqaAccuracy(['a'], [['a']], ['t', 'u']), /vqaAccuracy: types has 2 entries but preds has 1/);
  assert.throws(() => vqaAccuracy([], []), /vqaAccuracy: preds is empty/);
  assert.throws(() => vqaAccuracy(['a'], [[]]), /vqaAccuracy: refs\[0\] must be a non-empty array/);
  assert.throws(() => vqaAccuracy([null as unknown as string], [['a']]), /vqaAccuracy: preds\[0\] must be a string, got null/);
  assert.throws(() => vqaAccuracy(['a'], [['a', 1 as unknown as string]]), /vqaAccuracy: refs\[0\]\[1\] must be a string/);
  assert.throws(() => vqaScore('a', []), /vqaScore: refs must be a non-empty array/);
  assert.throws(() => majorityBaseline({}, [['a']], ['t']), /majorityBaseline: trainAnswers holds no answers/);
  assert.throws(() => majorityBaseline({ t: ['a'] }, [['a']], ['t', 'u']), /majorityBaseline: types has 2 entries but refs has 1/);
  assert.throws(() => majorityBaseline({ t: 'a' as unknown as string[] }, [['a']], ['t']), /trainAnswers\["t"\] must be an array/);
  // A type named like an Object.prototype member is just a type.
  assert.deepEqual(majorityBaseline({ t: ['cat'] }, [['cat']], ['constructor']).answers, { constructor: 'cat' });
});
