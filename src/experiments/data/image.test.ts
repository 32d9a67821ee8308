import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';
import sharp from 'sharp';
import { augment, base64ToBytes, CLIP_MEAN, CLIP_STD, decodeBase64Image, decodeImage, encodePng } from './image';

/** A w x h PNG of one RGBA colour (or a per-pixel function). */
async function png(w: number, h: number, px: (x: number, y: number) => [number, number, number, number], channels: 3 | 4 = 4): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * channels);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const v = px(x, y);
    for (let c = 0; c < channels; c++) raw[(y * w + x) * channels + c] = v[c];
  }
  return sharp(raw, { raw: { width: w, height: h, channels } }).png().toBuffer();
}

const norm = (v: number, c: number): number => (v / 255 - CLIP_MEAN[c]) / CLIP_STD[c];

function pixel(x: Float32Array, size: number, i: number): [number, number, number] {
  const hw = size * size;
  return [x[i], x[hw + i], x[2 * hw + i]];
}

test('decode: a fully transparent PNG composites onto white (not black)', async () => {
  const bytes = await png(8, 8, () => [0, 0, 0, 0]);
  const x = await decodeImage({ kind: 'bytes', bytes, name: 'clear.png' }, { size: 4 });
  assert.equal(x.length, 3 * 16);
  for (let i = 0; i < 16; i++) {
    const p = pixel(x, 4, i);
    for (let c = 0; c < 3; c++) assert.ok(Math.abs(p[c] - norm(255, c)) < 1e-5, `pixel ${i} channel ${c}: ${p[c]}`);
  }
  // Half-transparent red over white is pink; over a black background option it is dark red.
  const half = await png(4, 4, () => [255, 0, 0, 128]);
  const w = await decodeImage({ kind: 'bytes', bytes: half }, { size: 4, mean: [0, 0, 0], std: [1, 1, 1] });
  assert.ok(Math.abs(w[0] - 1) < 0.01 && Math.abs(w[16] - 127 / 255) < 0.02 && Math.abs(w[32] - 127 / 255) < 0.02, `pink: ${pixel(w, 4, 0)}`);
  const k = await decodeImage({ kind: 'bytes', bytes: half }, { size: 4, mean: [0, 0, 0], std: [1, 1, 1], background: [0, 0, 0] });
  assert.ok(Math.abs(k[0] - 128 / 255) < 0.02 && k[16] < 0.01 && k[32] < 0.01, `dark red: ${pixel(k, 4, 0)}`);
});

test('decode: normalises with CLIP mean/std by default and with given mean/std', async () => {
  const bytes = await png(6, 6, () => [10, 100, 200, 255], 4);
  const x = await decodeImage({ kind: 'bytes', bytes }, { size: 6 });
  for (let i = 0; i < 36; i++) {
    const p = pixel(x, 6, i);
    assert.ok(Math.abs(p[0] - norm(10, 0)) < 1e-5 && Math.abs(p[1] - norm(100, 1)) < 1e-5 && Math.abs(p[2] - norm(200, 2)) < 1e-5, `${p}`);
  }
  const y = await decodeImage({ kind: 'bytes', bytes }, { size: 3, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] });
  assert.ok(Math.abs(y[0] - (10 / 255 - 0.5) / 0.5) < 1e-5);
  // A planar layout: channel 0 holds red everywhere.
  assert.ok(Math.abs(y[8] - (10 / 255 - 0.5) / 0.5) < 1e-5 && Math.abs(y[9] - (100 / 255 - 0.5) / 0.5) < 1e-5);
});

test('decode: fit contain pads a wide image with the background, cover fills the square', async () => {
  const bytes = await png(16, 8, () => [0, 0, 255, 255]); // blue, 2:1
  const o = { size: 8, mean: [0, 0, 0] as const, std: [1, 1, 1] as const };
  const c = await decodeImage({ kind: 'bytes', bytes }, { ...o, fit: 'contain' });
  assert.deepEqual(pixel(c, 8, 0).map((v) => Math.round(v * 255)), [255, 255, 255]); // top row: padding
  assert.deepEqual(pixel(c, 8, 4 * 8 + 4).map((v) => Math.round(v * 255)), [0, 0, 255]); // centre: image
  const v = await decodeImage({ kind: 'bytes', bytes }, { ...o, fit: 'cover' });
  for (let i = 0; i < 64; i++) assert.deepEqual(pixel(v, 8, i).map((q) => Math.round(q * 255)), [0, 0, 255]);
});

test('decode: grayscale and 16-bit inputs are converted; strict rejects them naming the file', async () => {
  const gray = await sharp(Buffer.alloc(16, 77), { raw: { width: 4, height: 4, channels: 1 } }).toColourspace('b-w').png().toBuffer();
  assert.equal((await sharp(gray).metadata()).channels, 1);
  const g = await decodeImage({ kind: 'bytes', bytes: gray, name: 'gray.png' }, { size: 4, mean: [0, 0, 0], std: [1, 1, 1] });
  for (const v of pixel(g, 4, 5)) assert.equal(Math.round(v * 255), 77);
  const deep = await sharp(Buffer.alloc(4 * 4 * 3, 200), { raw: { width: 4, height: 4, channels: 3 } }).toColourspace('rgb16').png().toBuffer();
  assert.equal((await sharp(deep).metadata()).depth, 'ushort');
  const d = await decodeImage({ kind: 'bytes', bytes: deep }, { size: 4, mean: [0, 0, 0], std: [1, 1, 1] });
  for (const v of pixel(d, 4, 0)) assert.equal(Math.round(v * 255), 200);
  await assert.rejects(decodeImage({ kind: 'bytes', bytes: gray, name: 'gray.png' }, { size: 4, strict: true }), /gray\.png: wrong mode b-w/);
  await assert.rejects(decodeImage({ kind: 'bytes', bytes: deep, name: 'deep.png' }, { size: 4, strict: true }), /deep\.png: wrong mode .*ushort/);
});

test('decode: bad inputs give errors naming the file or id', async () => {
  const good = await png(4, 4, () => [1, 2, 3, 255]);
  const corrupt = Buffer.from(good);
  corrupt.fill(0x55, 40); // keep the PNG signature and IHDR, destroy the data
  await assert.rejects(decodeImage({ kind: 'bytes', bytes: corrupt, name: 'broken.png' }, { size: 4 }), /decodeImage: broken\.png: /);
  await assert.rejects(decodeImage({ kind: 'bytes', bytes: Buffer.from('not an image at all'), name: 'text.png' }, { size: 4 }), /text\.png/);
  const missing = path.join(os.tmpdir(), 'modalab-emoji-no-such-file.png');
  await assert.rejects(decodeImage({ kind: 'file', path: missing }, { size: 4 }, 'row-7'), (e: Error) => e.message.includes('row-7') && e.message.includes(missing));
  await assert.rejects(decodeImage({ kind: 'bytes', bytes: good, name: 'small.png' }, { size: 4, expectSize: [64, 64] }), /small\.png: wrong size 4x4, expected 64x64/);
  await assert.rejects(decodeImage({ kind: 'svg', svg: '<svg oops', name: 'bad.svg' }, { size: 4 }), /bad\.svg/);
  await assert.rejects(decodeBase64Image('iVBORw0KGgo*AAA', { size: 4 }, 'line 3'), /line 3: invalid base64: character "\*" at 11/);
  await assert.rejects(decodeBase64Image('abcde', { size: 4 }, 'line 4'), /line 4: invalid base64: length 5/);
  await assert.rejects(decodeBase64Image('', { size: 4 }, 'line 5'), /line 5: invalid base64: empty/);
  await assert.rejects(decodeImage({ kind: 'bytes', bytes: good }, { size: 0 }), /ImageTransform\.size/);
  await assert.rejects(decodeImage({ kind: 'url', url: 'x' } as never, { size: 4 }), /unknown ImageRef kind url/);
  await assert.rejects(decodeImage(null as never, { size: 4 }, 'row-9'), /row-9 \(<not an ImageRef: null>\): unknown ImageRef kind undefined/);
});

test('decode: base64 (plain, data URL, URL-safe) decodes like the bytes', async () => {
  const bytes = await png(5, 5, (x, y) => [x * 50, y * 50, 100, 255]);
  const ref = await decodeImage({ kind: 'bytes', bytes }, { size: 5 });
  const b64 = bytes.toString('base64');
  assert.deepEqual(await decodeBase64Image(b64, { size: 5 }), ref);
  assert.deepEqual(await decodeBase64Image(`data:image/png;base64,${b64}`, { size: 5 }), ref);
  assert.deepEqual(base64ToBytes(bytes.toString('base64url')), bytes);
});

test('decode: an SVG renders, and a file on disk decodes', async () => {
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="#ff0000"/></svg>';
  const x = await decodeImage({ kind: 'svg', svg }, { size: 4, mean: [0, 0, 0], std: [1, 1, 1] });
  assert.deepEqual(pixel(x, 4, 5).map((v) => Math.round(v * 255)), [255, 0, 0]);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-img-')), 'a.png');
  fs.writeFileSync(file, await png(4, 4, () => [0, 255, 0, 255]));
  const y = await decodeImage({ kind: 'file', path: file }, { size: 2, mean: [0, 0, 0], std: [1, 1, 1] });
  assert.deepEqual(pixel(y, 2, 3).map((v) => Math.round(v * 255)), [0, 255, 0]);
  fs.rmSync(path.dirname(file), { recursive: true });
});

test('encodePng: denormalises back to the original pixels', async () => {
  const bytes = await png(6, 6, (x, y) => [x * 40, y * 40, (x + y) * 20, 255]);
  const t = { size: 6 };
  const x = await decodeImage({ kind: 'bytes', bytes }, t);
  const out = await encodePng(x, t);
  assert.deepEqual((await sharp(out).raw().toBuffer()), await sharp(bytes).removeAlpha().raw().toBuffer());
  await assert.rejects(encodePng(x.subarray(1), t), /encodePng: expected f32 \[3, 6, 6\]/);
});

/** Random normalised batch with fresh values (xorshift, not zeros). */
function batch(n: number, size: number, seed = 1): Float32Array {
  const x = new Float32Array(n * 3 * size * size);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < x.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    x[i] = (s / 4294967296) * 3.6 - 1.8;
  }
  return x;
}

test('augment: identity when cropScale [1, 1] and no jitter; input left unchanged', () => {
  const x = batch(4, 8);
  const copy = x.slice();
  const y = augment(x, [4, 3, 8, 8], { seed: 3, cropScale: [1, 1] });
  assert.notEqual(y, x);
  assert.deepEqual(y, x);
  assert.deepEqual(x, copy);
});

test('augment: deterministic by seed, per image independent of the batch around it', () => {
  const x = batch(6, 16);
  const o = { cropScale: [0.3, 1] as const, jitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4 } };
  const a = augment(x, [6, 3, 16, 16], { seed: 11, ...o });
  const b = augment(x, [6, 3, 16, 16], { seed: 11, ...o });
  const c = augment(x, [6, 3, 16, 16], { seed: 12, ...o });
  assert.equal(a.length, x.length);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const first = augment(x.subarray(0, 3 * 256), [1, 3, 16, 16], { seed: 11, ...o });
  assert.deepEqual(first, a.subarray(0, 3 * 256));
  // `out` is written in place and returned.
  const out = new Float32Array(x.length);
  assert.equal(augment(x, [6, 3, 16, 16], { seed: 11, ...o, out }), out);
  assert.deepEqual(out, a);
});

test('augment: a crop of a horizontal ramp is a steeper ramp, the same on every row and channel', () => {
  const n = 3, s = 32, hw = s * s;
  const x = new Float32Array(n * 3 * hw);
  for (let k = 0; k < n * 3; k++) for (let y = 0; y < s; y++) for (let c = 0; c < s; c++) x[k * hw + y * s + c] = c;
  const y = augment(x, [n, 3, s, s], { seed: 5, cropScale: [0.2, 0.5], ratio: [1, 1] });
  for (let k = 0; k < n; k++) {
    const row0 = y.subarray(k * 3 * hw, k * 3 * hw + s);
    const step = row0[2] - row0[1];
    // Square crop of 20-50% of the area: side between 0.45 and 0.71 of the image, so the step is that too.
    assert.ok(step > 0.4 && step < 0.75, `image ${k}: step ${step}`);
    for (let c = 2; c < s - 1; c++) assert.ok(Math.abs(row0[c] - row0[c - 1] - step) < 1e-4, `image ${k} column ${c}`);
    for (let p = 0; p < 3; p++) for (let r = 0; r < s; r++) {
      for (let c = 0; c < s; c++) assert.ok(Math.abs(y[k * 3 * hw + p * hw + r * s + c] - row0[c]) < 1e-5, `image ${k} plane ${p} row ${r}`);
    }
  }
});

test('augment: jitter stays in the valid pixel range and changes colours; bad arguments throw', () => {
  const x = batch(8, 8, 9).map((v) => Math.max(-1.79, Math.min(2.14, v)));
  const y = augment(x, [8, 3, 8, 8], { seed: 1, cropScale: [1, 1], jitter: { brightness: 0.5, contrast: 0.5, saturation: 0.5 } });
  const hw = 64;
  for (let i = 0; i < y.length; i++) {
    const c = Math.floor(i / hw) % 3;
    const px = y[i] * CLIP_STD[c] + CLIP_MEAN[c];
    assert.ok(px >= -1e-5 && px <= 1 + 1e-5, `value ${i} is pixel ${px}`);
  }
  assert.notDeepEqual(y, x);
  assert.throws(() => augment(x, [8, 3, 8, 9], { seed: 1 }), /augment: expected x of shape/);
  assert.throws(() => augment(x, [8, 3, 8, 8], { seed: 1, cropScale: [0.5, 1.5] }), /cropScale/);
  assert.throws(() => augment(x, [8, 3, 8, 8], { seed: 1, out: x }), /out must not be the input/);
});

test('augment: runs in a worker_thread on a SharedArrayBuffer without loading sharp, same result as here', async () => {
  const n = 4, s = 16;
  const shared = new Float32Array(new SharedArrayBuffer(n * 3 * s * s * 4));
  shared.set(batch(n, s, 21));
  const o = { seed: 77, cropScale: [0.5, 1] as [number, number], jitter: { brightness: 0.2, contrast: 0.2, saturation: 0.2 } };
  const here = augment(shared, [n, 3, s, s], o);
  const code = `
    const { parentPort, workerData } = require('worker_threads');
    const { augment } = require(workerData.module);
    const x = new Float32Array(workerData.buf);
    const y = augment(x, workerData.shape, workerData.o);
    const sharpLoaded = Object.keys(require.cache).some((k) => /[\\/]sharp[\\/]/.test(k));
    parentPort.postMessage({ y, sharpLoaded });`;
  const w = new Worker(code, { eval: true, workerData: { module: path.join(__dirname, 'image'), buf: shared.buffer, shape: [n, 3, s, s], o } });
  const msg = await new Promise<{ y: Float32Array; sharpLoaded: boolean }>((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
  await w.terminate();
  assert.equal(msg.sharpLoaded, false, 'importing image.ts in a worker must not load sharp');
  assert.deepEqual(msg.y, here);
});
