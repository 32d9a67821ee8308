import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { byteViews, readFloat32File, writeFloat32File } from './f32file';

test('f32 files round-trip in pieces smaller than the array, and a wrong size or absent file reads as null', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-f32-'));
  try {
    const file = path.join(dir, 'x.f32');
    const base = new Float32Array(1003).map((_, i) => Math.sin(i) * 1e3);
    const data = base.subarray(3); // a view with a byte offset: only its own 1000 values are written
    writeFloat32File(file, data, 7); // 7-byte pieces: 572 writes, none aligned to a float
    assert.equal(fs.statSync(file).size, 4000);
    assert.deepEqual(fs.readdirSync(dir), ['x.f32'], 'no temporary file is left behind');
    const back = readFloat32File(file, 1000, 5);
    assert.ok(back);
    assert.deepEqual(Array.from(back), Array.from(data));
    assert.equal(readFloat32File(file, 999), null, 'another length is not trusted');
    assert.equal(readFloat32File(path.join(dir, 'absent.f32'), 1000), null);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a failed f32 write leaves neither the file nor a temporary one', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-f32-'));
  try {
    const file = path.join(dir, 'missing-dir', 'x.f32');
    assert.throws(() => writeFloat32File(file, new Float32Array(4)), /ENOENT/);
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('byteViews covers an array in order with views no longer than a piece (a view over 4 GiB is refused by V8)', () => {
  const base = new Float32Array(11).map((_, i) => i + 0.5);
  const a = base.subarray(1, 10); // 36 bytes from byte offset 4
  const views = byteViews(a, 10);
  assert.deepEqual(views.map((v) => v.length), [10, 10, 10, 6]);
  assert.deepEqual(views.map((v) => v.byteOffset), [4, 14, 24, 34]);
  const joined = new Uint8Array(36);
  let off = 0;
  for (const v of views) {
    assert.equal(v.buffer, base.buffer, 'views, not copies');
    joined.set(v, off);
    off += v.length;
  }
  assert.deepEqual(Array.from(new Float32Array(joined.buffer)), Array.from(a));
  assert.deepEqual(byteViews(new Float32Array(0), 10), []);
});
