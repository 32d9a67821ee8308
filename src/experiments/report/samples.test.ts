// Samples in the report: caption and instruct samples beside their images, lm texts, with every string escaped,
// bad images as placeholders, and missing or corrupt files as a note instead of an error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { Tracker } from '../tracking';
import { exactMatch, pngBase64, readSamples, writeReport } from './index';

const EVIL = '<script>alert("x")</script>';

async function pngB64(color: string): Promise<string> {
  return (await sharp({ create: { width: 4, height: 4, channels: 3, background: color } }).png().toBuffer()).toString('base64');
}

/** A db with one run per samples file given (file name -> contents), each logged as its 'samples' artifact. */
function dbWithSamples(dir: string, files: Array<[string, string, string]>): { db: string; ids: number[] } {
  const db = path.join(dir, 'm.db');
  const t = Tracker.open(db);
  const ids = files.map(([stage, name, body]) => {
    const r = t.startRun({ experiment: 'x', name: `${stage} run`, stage, config: {} });
    r.log({ loss: 1 }, 1);
    const file = path.join(dir, `${r.id}-${name}`);
    fs.writeFileSync(file, body);
    r.logArtifact('samples', file);
    r.finish();
    return r.id;
  });
  t.close();
  return { db, ids };
}

/** The HTML of run `id`'s section. */
function section(html: string, id: number): string {
  const m = new RegExp(`<section id="run-${id}">([\\s\\S]*?)</section>`).exec(html);
  assert.ok(m, `no section for run ${id}`);
  return m[1];
}

test('pngBase64 accepts base64 PNG (and its data URL) only', async () => {
  const good = await pngB64('#f00');
  assert.equal(pngBase64(good), good);
  assert.equal(pngBase64(`data:image/png;base64,${good}`), good);
  assert.equal(pngBase64(Buffer.from('GIF89a not a png at all').toString('base64')), null, 'base64 of other bytes');
  assert.equal(pngBase64(`${good.slice(0, 20)}"><script>x</script>`), null, 'markup after base64');
  assert.equal(pngBase64(good.slice(0, -1)), null, 'truncated (length not a multiple of 4)');
  assert.equal(pngBase64(''), null);
  assert.equal(pngBase64(42), null);
  assert.equal(pngBase64(undefined), null);
});

test('caption samples: image beside generated vs references, escaped; placeholder without or with a bad png', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-samples-'));
  const red = await pngB64('#f00');
  const samples = [
    { image: 'g:1f600', source: 'emoji', png: red, reference: ['grinning face', `ref ${EVIL}`], generated: `gen ${EVIL} & more` },
    { image: 'g:1f601', reference: ['beaming face'], generated: 'face' },                       // today's files: no png
    { image: 'g:1f602', png: 'bm90IGEgcG5n"><script>bad()</script>', reference: ['joy'], generated: '' },
  ];
  const { db, ids } = dbWithSamples(dir, [['caption', 'samples.json', JSON.stringify(samples)]]);
  const out = path.join(dir, 'r.html');
  await writeReport(db, ids, out);
  const html = fs.readFileSync(out, 'utf8');
  const sec = section(html, ids[0]);
  assert.ok(!html.includes(EVIL) && !html.includes('<script>bad'), 'no sample text becomes markup');
  assert.ok(sec.includes('gen &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more'));
  assert.ok(sec.includes('<li>ref &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</li>'));
  assert.equal([...sec.matchAll(/<img src="data:image\/png;base64,([^"]*)"/g)].map((m) => m[1]).join(), red, 'only the valid png is inlined');
  assert.equal((sec.match(/class="noimg"/g) ?? []).length, 2, 'missing and bad png: placeholders');
  assert.ok(sec.includes('>no image</div>') && sec.includes('>bad image</div>'));
  assert.match(sec, /<li>grinning face<\/li>/);
  assert.ok(sec.includes('g:1f600 · emoji') && sec.includes('>g:1f601</div>'), 'image id, and source when given');
  assert.ok(sec.includes('(empty)'), 'an empty caption is shown as such');
  assert.match(html, /image-rendering: pixelated/);
});

test('instruct samples: two images, question, prediction marked right or wrong by normalised exact match', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-samples-'));
  const [a, b] = [await pngB64('#0f0'), await pngB64('#00f')];
  const samples = [
    { png: a, task: 'vqa', qtype: 'count', question: 'How many circles?', answers: ['2'], prediction: 'Two.' },
    { png: a, png2: b, task: 'compare', question: `Same <b>colour</b>?`, answers: ['no'], prediction: 'yes' },
  ];
  const { db, ids } = dbWithSamples(dir, [['instruct', 'samples.json', JSON.stringify(samples)]]);
  const out = path.join(dir, 'r.html');
  await writeReport(db, ids, out);
  const sec = section(fs.readFileSync(out, 'utf8'), ids[0]);
  assert.ok(exactMatch('Two.', ['2']) && !exactMatch('yes', ['no']));
  assert.equal((sec.match(/class="sample right"/g) ?? []).length, 1);
  assert.equal((sec.match(/class="sample wrong"/g) ?? []).length, 1);
  assert.equal((sec.match(/<img /g) ?? []).length, 3, 'png and png2 both shown');
  assert.ok(sec.includes('Same &lt;b&gt;colour&lt;/b&gt;?'));
  assert.ok(sec.includes('vqa · count'));
  assert.ok(sec.includes('1 of 2 shown right'));
});

test('missing, corrupt or odd samples files give a note, never an error; at most maxSamples shown', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-samples-'));
  const many = Array.from({ length: 20 }, (_, i) => ({ image: `i${i}`, reference: [`r${i}`], generated: `g${i}` }));
  const { db, ids } = dbWithSamples(dir, [
    ['caption', 'samples.json', '[{"image": "a", "generated": "x", "refer'],                      // truncated JSON
    ['caption', 'samples.json', '{"not": "an array"}'],
    ['caption', 'samples.json', JSON.stringify([...many, { foo: 1 }, 7])],
    ['lm', 'samples.txt', `[a text that starts with a bracket\nsecond ${EVIL}\n`],
    ['caption', 'gone.json', '[]'],
  ]);
  fs.rmSync(path.join(dir, `${ids[4]}-gone.json`));
  const out = path.join(dir, 'r.html');
  await writeReport(db, ids, out, { maxSamples: 16 });
  const html = fs.readFileSync(out, 'utf8');
  assert.match(section(html, ids[0]), /samples file .*samples\.json is not valid JSON/);
  assert.match(section(html, ids[1]), /holds object, not an array of samples/);
  const third = section(html, ids[2]);
  assert.equal((third.match(/class="sample"/g) ?? []).length, 16);
  assert.ok(third.includes('showing 16 of 20 samples') && third.includes('2 of 22 entries are not caption samples'));
  const lm = section(html, ids[3]);
  assert.ok(lm.includes('<li>[a text that starts with a bracket</li>') && lm.includes(`second &lt;script&gt;`));
  assert.match(section(html, ids[4]), /samples file .*gone\.json is missing/);
  assert.ok(!html.includes(EVIL));
  // readSamples itself never throws, whatever the path.
  assert.equal(readSamples(dir).kind, 'none');
  assert.equal(readSamples(path.join(dir, 'nope.json')).kind, 'none');
});
