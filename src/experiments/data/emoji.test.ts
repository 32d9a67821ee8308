import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import { emojiCaptions, emojiKey, emojiLocales, loadEmoji } from './emoji';
import type { Pair } from './types';

const groups = (ps: Pair[]): Set<string> => new Set(ps.map((p) => p.group));

test('emoji: every pair has an existing image file and a non-empty caption; ids are unique', () => {
  const ds = loadEmoji();
  assert.ok(ds.concepts > 1800, `expected the full ~1900 concepts, got ${ds.concepts}`);
  assert.equal(ds.pairs.length, ds.concepts * 2); // two vendors x one language
  const ids = new Set<string>();
  for (const p of ds.pairs) {
    assert.equal(p.image.kind, 'file');
    if (p.image.kind === 'file') assert.ok(fs.existsSync(p.image.path), `missing image ${p.image.path} for ${p.id}`);
    assert.ok(p.text.trim().length > 0, `empty caption for ${p.id}`);
    assert.ok(p.captions && p.captions.length >= 1 && p.captions.every((c) => c.trim().length > 0), `captions of ${p.id}`);
    assert.ok(p.captions!.includes(p.text));
    assert.ok(!ids.has(p.id), `duplicate id ${p.id}`);
    ids.add(p.id);
    for (const k of ['vendor', 'lang', 'category', 'subgroup']) assert.ok(String(p.meta[k]).length > 0, `${p.id} meta.${k}`);
  }
  assert.equal(ds.stats.missingImages, 0);
});

test('emoji: default split trains on google, tests on twitter, and never shows a held-out concept in train', () => {
  const ds = loadEmoji();
  const { train, val, test: testSplit, heldout } = ds.splits;
  assert.ok(train.every((p) => p.meta.vendor === 'google'), 'a test-vendor image in train');
  assert.ok(testSplit.every((p) => p.meta.vendor === 'twitter'));
  assert.ok(val.every((p) => p.meta.vendor === 'twitter'));
  const trainImages = new Set(train.map((p) => (p.image.kind === 'file' ? p.image.path : '')));
  for (const p of [...testSplit, ...val]) assert.ok(p.image.kind === 'file' && !trainImages.has(p.image.path), `test image ${p.id} in train`);
  const trainGroups = groups(train), heldGroups = groups(heldout);
  for (const g of heldGroups) assert.ok(!trainGroups.has(g), `held-out concept ${g} in train`);
  // Held-out concepts: ~10%, both vendors' images; the rest is train = test by concept; val is a subset of test.
  assert.equal(heldGroups.size, Math.round(0.1 * ds.concepts));
  assert.equal(heldout.length, heldGroups.size * 2);
  assert.deepEqual(new Set(heldout.map((p) => p.meta.vendor)), new Set(['google', 'twitter']));
  assert.equal(trainGroups.size + heldGroups.size, ds.concepts);
  assert.deepEqual(groups(testSplit), trainGroups);
  assert.equal(groups(val).size, 256);
  const testIds = new Set(testSplit.map((p) => p.id));
  assert.ok(val.every((p) => testIds.has(p.id)), 'val must be a subset of test');
  assert.equal(train.length + testSplit.length + heldout.length, ds.pairs.length);
  assert.deepEqual(ds.stats.splits.train, { pairs: train.length, concepts: trainGroups.size });
  assert.equal(ds.stats.heldoutConcepts, heldGroups.size);
});

test('emoji: splits are a function of the seed', () => {
  const a = loadEmoji({ seed: 7 }), b = loadEmoji({ seed: 7 }), c = loadEmoji({ seed: 8 });
  assert.deepEqual(a.splits.heldout.map((p) => p.id), b.splits.heldout.map((p) => p.id));
  assert.deepEqual(a.splits.val.map((p) => p.id), b.splits.val.map((p) => p.id));
  assert.notDeepEqual([...groups(a.splits.heldout)].sort(), [...groups(c.splits.heldout)].sort());
  assert.notDeepEqual([...groups(a.splits.val)].sort(), [...groups(c.splits.val)].sort());
});

test('emoji: zh captions exist for every concept, one Pair per language with meta.lang', () => {
  const ds = loadEmoji({ langs: ['en', 'zh'] });
  const zh = ds.pairs.filter((p) => p.meta.lang === 'zh');
  const en = ds.pairs.filter((p) => p.meta.lang === 'en');
  assert.equal(zh.length, en.length);
  assert.equal(ds.pairs.length, ds.concepts * 2 * 2);
  assert.ok(zh.every((p) => p.text.length > 0));
  const cjk = zh.filter((p) => /[\u4e00-\u9fff]/.test(p.text)).length;
  assert.ok(cjk > 0.9 * zh.length, `only ${cjk} of ${zh.length} zh captions contain CJK characters`);
  const thumbs = zh.find((p) => p.group === '1F44D' && p.meta.vendor === 'google')!;
  assert.match(thumbs.text, /拇指/);
  // Both languages of a concept land in the same split.
  assert.deepEqual(groups(ds.splits.train.filter((p) => p.meta.lang === 'zh')), groups(ds.splits.train.filter((p) => p.meta.lang === 'en')));
});

test('emoji: the join handles FE0F, keycaps, ZWJ sequences and skin tones', () => {
  const ds = loadEmoji({ includeSkinTones: true });
  const by = (g: string): Pair => ds.pairs.find((p) => p.group === g && p.meta.vendor === 'google')!;
  // emoji-datasource spells red heart 2764-FE0F, emojibase 2764.
  assert.equal(emojiKey('2764-FE0F'), '2764');
  assert.match(by('2764').text, /^red heart/);
  assert.match(by('0023-20E3').text, /^keycap: #/); // emojibase keeps FE0F here: 0023-FE0F-20E3
  assert.match(by('1F3C3-200D-2640').text, /^woman running/); // ZWJ + gender sign
  assert.match(by('1F44D-1F3FD').text, /^thumbs up: medium skin tone/);
  assert.ok(by('1F44D-1F3FD').image.kind === 'file');
  // A skin-tone variant shares its base emoji's split.
  const base = loadEmoji();
  assert.ok(ds.concepts > base.concepts + 1000);
  const heldBases = new Set(ds.splits.heldout.map((p) => p.meta.base));
  assert.ok(heldBases.size > 100);
  for (const p of ds.splits.train) assert.ok(!heldBases.has(p.meta.base), `${p.id} in train but its base ${p.meta.base} is held out`);
  const variants = ds.splits.heldout.filter((p) => p.group !== p.meta.base);
  assert.ok(variants.length > 0, 'some held-out concept has skin tones');
});

test('emoji: caption styles and short captions', () => {
  const c = emojiCaptions('grinning face', ['face', 'grin', 'grinning face', 'happy', 'smile', 'teeth'], 2);
  assert.deepEqual(c, { label: 'grinning face', 'label+tags': 'grinning face: face, grin', tags: 'face, grin' });
  assert.deepEqual(emojiCaptions('keycap: #', []), { label: 'keycap: #', 'label+tags': 'keycap: #', tags: 'keycap: #' });
  const ds = loadEmoji({ captionStyle: 'label', limit: 20 });
  assert.equal(ds.concepts, 20);
  assert.ok(ds.pairs.every((p) => !p.text.includes(', ')));
  assert.equal(ds.pairs.find((p) => p.group === '1F600')!.text, 'grinning face');
});

test('emoji: clear errors for an unknown locale, a missing package and bad options', () => {
  assert.ok(emojiLocales().includes('zh'));
  assert.throws(() => loadEmoji({ langs: ['xx'] }), /unknown locale "xx"; emojibase-data has .*\ben\b.*\bzh\b/);
  assert.throws(() => loadEmoji({ langs: ['../en'] }), /unknown locale/);
  assert.throws(() => loadEmoji({ nodeModules: '/nonexistent' }), /package emoji-datasource-google is not installed in \/nonexistent/);
  assert.throws(() => loadEmoji({ testVendor: 'nosuchvendor' }), /emoji-datasource-nosuchvendor is not installed/);
  assert.throws(() => loadEmoji({ heldOutFraction: 1.5 }), /heldOutFraction/);
});
