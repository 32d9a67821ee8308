import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseGlossLine, textCorpus, trainDefaultTokenizer } from './index';

test('parseGlossLine: lemmas, definitions and quoted examples of a real WordNet line', () => {
  const line = '00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 021 * 00005041 v 0000 02 + 02 00 ' +
    '| draw air into, and expel out of, the lungs; "I can breathe better when the air is clean"; "The patient is respiring"  ';
  assert.deepEqual(parseGlossLine(line), {
    lemmas: ['breathe', 'take a breath', 'respire', 'suspire'],
    definitions: ['draw air into, and expel out of, the lungs'],
    examples: ['I can breathe better when the air is clean', 'The patient is respiring'],
  });
});

test('parseGlossLine: semicolons inside quotes, attributions, adjective markers, licence header', () => {
  const line = '01234567 00 a 01 galore(ip) 0 000 | in abundance; plenty; "bugs galore; and more" - Anon; "fine"  ';
  assert.deepEqual(parseGlossLine(line), {
    lemmas: ['galore'],
    definitions: ['in abundance', 'plenty'],
    examples: ['bugs galore; and more', 'fine'],
  });
  assert.equal(parseGlossLine('  1 This software and database is being provided'), null);
  assert.equal(parseGlossLine(''), null);
  assert.throws(() => parseGlossLine('0001 29 v 05 breathe | x', 'data.verb:31'), /data\.verb:31: malformed synset header/);
});

test('textCorpus: captions first, then glosses, deterministic, maxGlosses spread over all files', () => {
  const a = textCorpus({ captions: ['a red circle', '', 'un cercle rouge'], maxGlosses: 400 });
  const b = textCorpus({ captions: ['a red circle', '', 'un cercle rouge'], maxGlosses: 400 });
  assert.deepEqual(a, b);
  assert.deepEqual(a.slice(0, 2), ['a red circle', 'un cercle rouge']);
  // One definition line per synset (all 400 sampled synsets have a definition) plus example sentences.
  const defs = a.slice(2).filter((s) => /^[^:]+: /.test(s) && s.endsWith('.'));
  assert.ok(defs.length >= 390 && a.length > 400, `${defs.length} definitions, ${a.length} strings`);
  // Spread: the adverb file comes last (after 82k nouns), so its typical definitions ("questioningly: in a curious and
  // questioning manner.") only appear if the sample covers the whole range.
  assert.ok(a.some((s) => /^\w+ly(, \w+)*: in an? [\w ]+ (manner|way)\b/.test(s)), 'expected some adverbs');
  assert.ok(a.every((s) => s.length > 0 && s === s.trim() && !/\s{2}/.test(s)));
  assert.deepEqual(textCorpus({ maxGlosses: 0, captions: ['x'] }), ['x']);
  assert.throws(() => textCorpus({ maxGlosses: -1 }), /maxGlosses must be a non-negative integer, got -1/);
});

test('trainDefaultTokenizer: trains once, then loads the cached tokenizer.json; a new input retrains', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-tok-cache-'));
  const opts = { vocabSize: 400, captions: ['a large red circle', 'a small blue square'], maxGlosses: 500, cachePath: dir };
  const first = trainDefaultTokenizer(opts);
  assert.equal(first.fromCache, false);
  assert.ok(first.corpusBytes > 10_000);
  assert.equal(first.tokenizer.vocabSize, 400);
  assert.ok(fs.existsSync(first.path) && path.dirname(first.path) === dir);
  const second = trainDefaultTokenizer(opts);
  assert.equal(second.fromCache, true);
  assert.equal(second.path, first.path);
  assert.equal(JSON.stringify(second.tokenizer.toJSON()), JSON.stringify(first.tokenizer.toJSON()));
  // Any change to the inputs is a different cache entry.
  const other = trainDefaultTokenizer({ ...opts, captions: ['a large red circle'] });
  assert.equal(other.fromCache, false);
  assert.notEqual(other.path, first.path);
  const bigger = trainDefaultTokenizer({ ...opts, vocabSize: 410 });
  assert.notEqual(bigger.path, first.path);
  // A damaged cache file is retrained and replaced, not trusted.
  fs.writeFileSync(first.path, '{"truncated":');
  const again = trainDefaultTokenizer(opts);
  assert.equal(again.fromCache, false);
  assert.equal(JSON.stringify(again.tokenizer.toJSON()), JSON.stringify(first.tokenizer.toJSON()));
  assert.equal(trainDefaultTokenizer(opts).fromCache, true);
  fs.rmSync(dir, { recursive: true });
});
