import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { preprocessSplit, PreprocessItem } from './cache';
import { loadEmoji } from './emoji';
import { decodeImage } from './image';

const T = { size: 16 };
const CHW = 3 * 16 * 16;

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-cache-'));
}

/** 64 google emoji, English: the small subset every test here decodes. */
function items(n = 64): PreprocessItem[] {
  return loadEmoji({ limit: n, heldOutFraction: 0 }).splits.train.map((p) => ({ id: p.id, image: p.image }));
}

const bytesOf = (x: Float32Array): Buffer => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

test('cache: the second call is a hit with identical data; shared data sits on a SharedArrayBuffer', async () => {
  const dir = tempDir();
  const its = items();
  assert.equal(its.length, 64);
  let progress: [number, number] = [0, 0];
  const a = await preprocessSplit(its, T, { cacheDir: dir, key: 'emoji-test', workers: 4, onProgress: (d, t) => { progress = [d, t]; } });
  assert.equal(a.fromCache, false);
  assert.deepEqual(progress, [64, 64]);
  assert.deepEqual(a.shape, [64, 3, 16, 16]);
  assert.equal(a.data.length, 64 * CHW);
  assert.deepEqual(a.ids, its.map((i) => i.id));
  assert.deepEqual(a.skipped, { skipped: 0, reasons: [] });
  assert.ok(path.basename(a.file).startsWith('emoji-test-16px-'));
  // Row i is item i decoded on its own.
  const row5 = await decodeImage(its[5].image, T);
  assert.deepEqual(a.data.subarray(5 * CHW, 6 * CHW), row5);
  const b = await preprocessSplit(its, T, { cacheDir: dir, key: 'emoji-test', shared: true });
  assert.equal(b.fromCache, true);
  assert.equal(b.file, a.file);
  assert.ok(b.data.buffer instanceof SharedArrayBuffer);
  assert.ok(bytesOf(a.data).equals(bytesOf(b.data)));
  assert.deepEqual(b.ids, a.ids);
  assert.deepEqual(fs.readdirSync(dir), [path.basename(a.file)], 'no temporary files left behind');
  fs.rmSync(dir, { recursive: true });
});

test('cache: a changed transform, key, item list or input file misses the cache', async () => {
  const dir = tempDir();
  const src = items(4);
  // Private copies of the images so that one can be rewritten.
  const its = src.map((it, i) => {
    const p = path.join(dir, `img${i}.png`);
    if (it.image.kind === 'file') fs.copyFileSync(it.image.path, p);
    return { id: it.id, image: { kind: 'file' as const, path: p } };
  });
  const o = { cacheDir: path.join(dir, 'cache') };
  const a = await preprocessSplit(its, T, o);
  assert.equal((await preprocessSplit(its, T, o)).fromCache, true);
  assert.equal((await preprocessSplit(its, { size: 16, fit: 'cover' }, o)).fromCache, false);
  assert.equal((await preprocessSplit(its, { size: 16, background: [0, 0, 0] }, o)).fromCache, false);
  assert.equal((await preprocessSplit(its, { size: 8 }, o)).fromCache, false);
  assert.equal((await preprocessSplit(its, T, { ...o, key: 'other' })).fromCache, false);
  assert.equal((await preprocessSplit(its.slice(1), T, o)).fromCache, false);
  // Replace image 2 with image 0's bytes: same size on disk is not required, mtime and size fingerprint it.
  const img2 = its[2].image.path;
  fs.copyFileSync(its[0].image.path, img2);
  fs.utimesSync(img2, new Date(), new Date(Date.now() + 5000));
  const b = await preprocessSplit(its, T, o);
  assert.equal(b.fromCache, false);
  assert.notEqual(b.file, a.file);
  assert.ok(bytesOf(b.data.subarray(2 * CHW, 3 * CHW)).equals(bytesOf(a.data.subarray(0, CHW))), 'row 2 now holds image 0');
  // In-memory bytes are fingerprinted by content.
  const bytes = fs.readFileSync(its[0].image.path);
  const mem = [{ id: 'm', image: { kind: 'bytes' as const, bytes } }];
  assert.equal((await preprocessSplit(mem, T, o)).fromCache, false);
  assert.equal((await preprocessSplit([{ id: 'm', image: { kind: 'bytes', bytes: Buffer.from(bytes) } }], T, o)).fromCache, true);
  assert.equal((await preprocessSplit([{ id: 'm', image: { kind: 'bytes', bytes: fs.readFileSync(its[1].image.path) } }], T, o)).fromCache, false);
  fs.rmSync(dir, { recursive: true });
});

test('cache: a truncated or damaged cache file is detected and rebuilt, not trusted', async () => {
  const dir = tempDir();
  const its = items(8);
  const a = await preprocessSplit(its, T, { cacheDir: dir });
  const good = fs.readFileSync(a.file);
  fs.writeFileSync(a.file, good.subarray(0, good.length - 100)); // truncated
  const b = await preprocessSplit(its, T, { cacheDir: dir });
  assert.equal(b.fromCache, false);
  assert.match(b.invalidCache!, /size \d+ bytes, expected \d+/);
  assert.ok(bytesOf(b.data).equals(bytesOf(a.data)));
  assert.ok(fs.readFileSync(a.file).equals(good), 'the rebuilt file is whole again');
  const bad = Buffer.from(good);
  bad[20] ^= 0xff; // inside the JSON header
  fs.writeFileSync(a.file, bad);
  const c = await preprocessSplit(its, T, { cacheDir: dir });
  assert.equal(c.fromCache, false);
  assert.ok(c.invalidCache);
  fs.writeFileSync(a.file, Buffer.concat([Buffer.from('garbage!'), good.subarray(8)]));
  assert.match((await preprocessSplit(its, T, { cacheDir: dir })).invalidCache!, /bad magic/);
  assert.equal((await preprocessSplit(its, T, { cacheDir: dir })).fromCache, true);
  fs.rmSync(dir, { recursive: true });
});

test('cache: bad records throw naming the id, or with onError skip are counted and dropped consistently', async () => {
  const dir = tempDir();
  const its: PreprocessItem[] = items(6);
  const missing = path.join(dir, 'gone.png');
  const bad = [
    { id: 'bad/missing', image: { kind: 'file' as const, path: missing } },
    { id: 'bad/corrupt', image: { kind: 'bytes' as const, bytes: Buffer.from('\x89PNG\r\n\x1a\nnot really'), name: 'corrupt.png' } },
  ];
  const mixed = [its[0], bad[0], its[1], its[2], bad[1], its[3], its[4], its[5]];
  await assert.rejects(preprocessSplit(mixed, T, { cacheDir: dir }), (e: Error) => /bad\/missing/.test(e.message) && e.message.includes(missing));
  assert.deepEqual(fs.existsSync(dir) ? fs.readdirSync(dir) : [], [], 'nothing written after a failure');
  const s = await preprocessSplit(mixed, T, { cacheDir: dir, onError: 'skip', workers: 3 });
  assert.equal(s.skipped.skipped, 2);
  assert.equal(s.skipped.reasons.length, 2);
  assert.ok(s.skipped.reasons.some((r) => r.includes('bad/missing') && r.includes(missing)));
  assert.ok(s.skipped.reasons.some((r) => r.includes('bad/corrupt') && r.includes('corrupt.png')));
  assert.deepEqual(s.ids, its.map((i) => i.id));
  assert.deepEqual(s.shape, [6, 3, 16, 16]);
  assert.equal(s.data.length, 6 * CHW);
  const clean = await preprocessSplit(its, T, { cache: false });
  assert.equal(clean.file, '');
  assert.ok(bytesOf(s.data).equals(bytesOf(clean.data)), 'rows line up with ids after skipping');
  // The skip is remembered by the cache: skip again is a hit with the same report; throw still throws.
  const again = await preprocessSplit(mixed, T, { cacheDir: dir, onError: 'skip', shared: true });
  assert.equal(again.fromCache, true);
  assert.deepEqual(again.skipped, s.skipped);
  await assert.rejects(preprocessSplit(mixed, T, { cacheDir: dir }), /2 bad image\(s\)/);
  await assert.rejects(preprocessSplit([its[0], its[0]], T, { cacheDir: dir }), /duplicate id/);
  fs.rmSync(dir, { recursive: true });
});
