/**
 * Casts f32 -> f16 / bf16 on a million seeded floats, bit for bit against PyTorch. The inputs come from the
 * counter-based generator of test/fixtures/make_half_fixtures.py (reimplemented here with 32-bit integer
 * operations only), and half.json holds SHA-256 digests of torch's outputs per block of 65536, so a difference
 * anywhere fails and names its block. (All 65536 half patterns and 100k chosen floats are checked against
 * torch's full tables in test/fixtures.test.ts; every instruction path against the portable one, on all 2^32
 * floats on request, in native/test/test_half.cc.)
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as ml from '../../index';
import { binding } from '../binding';

interface HalfFixture { seed: number; n: number; block: number; firstInputs: number[]; f16: string[]; bf16: string[] }
/** test/fixtures/half.json, found by walking up from the compiled test (wherever the build put it). */
function fixturePath(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const p = path.join(dir, 'test', 'fixtures', 'half.json');
    if (fs.existsSync(p)) return p;
    if (path.dirname(dir) === dir) return path.resolve('test', 'fixtures', 'half.json');
  }
}
const FX: HalfFixture = JSON.parse(fs.readFileSync(fixturePath(), 'utf8'));

/** mulberry32's output function (all arithmetic mod 2^32). */
function mix(a: number): number {
  let t = a >>> 0;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return (t ^ (t >>> 14)) >>> 0;
}

/** The fixture's inputs: element i from words 2i and 2i+1, in one of four classes by i % 4 (see the script). */
function seededFloats(seed: number, n: number): Uint32Array {
  const out = new Uint32Array(n);
  const low2 = [0x7fff, 0x8000, 0x8001, 0x0000];
  const low3 = [0x0fff, 0x1000, 0x1001, 0x1000];
  for (let i = 0; i < n; i++) {
    const w0 = mix(seed + Math.imul(2 * i, 0x6d2b79f5));
    const w1 = mix(seed + Math.imul(2 * i + 1, 0x6d2b79f5));
    switch (i % 4) {
      case 0: out[i] = w0; break;
      case 1: out[i] = ((w0 & 0x807fffff) | ((101 + (w1 % 46)) << 23)) >>> 0; break;
      case 2: out[i] = ((w0 & 0xffff0000) | low2[w1 & 3]) >>> 0; break;
      default: out[i] = ((w0 & 0x807fe000) | ((113 + (w1 % 30)) << 23) | low3[(w1 >>> 30) & 3]) >>> 0; break;
    }
  }
  return out;
}

/** PyTorch's bf16 NaN bits depend on which of its code paths ran (0xFFFF vectorised, 0x7FC0 in c10); the
 * fixture script canonicalises them to 0x7FC0, the pattern modalab writes everywhere. */
const BF16_NAN = 0x7fc0;

test('f32 -> f16 and bf16 of a million seeded floats are bit-exact with PyTorch (per-block digests)', () => {
  ml.tidy(() => {
    const bits = seededFloats(FX.seed, FX.n);
    assert.deepEqual(Array.from(bits.subarray(0, FX.firstInputs.length)), FX.firstInputs,
      'the input generator differs from make_half_fixtures.py (a generator bug, not a cast bug)');
    const x = ml.tensor(new Float32Array(bits.buffer), [FX.n]);
    for (const dt of ['f16', 'bf16'] as const) {
      const h = ml.cast(x, dt);
      const out = Buffer.from(binding().read(h._h('test'), h._offset * 2, h.size * 2));
      if (dt === 'bf16') {
        // every NaN input gives exactly the canonical NaN (the digests then cover all other lanes bit for bit)
        const u16 = new Uint16Array(out.buffer, out.byteOffset, FX.n);
        for (let i = 0; i < FX.n; i++) {
          const isNaN = (bits[i] & 0x7fffffff) > 0x7f800000;
          if (isNaN) assert.equal(u16[i], BF16_NAN, `bf16 NaN at ${i} (input 0x${bits[i].toString(16)})`);
        }
      }
      const bad: number[] = [];
      for (let blk = 0; blk * FX.block < FX.n; blk++) {
        const d = crypto.createHash('sha256').update(out.subarray(blk * FX.block * 2, (blk + 1) * FX.block * 2)).digest('hex');
        if (d !== FX[dt][blk]) bad.push(blk);
      }
      assert.deepEqual(bad, [], `f32 -> ${dt}: blocks of ${FX.block} that differ from torch: ${bad.join(', ')} ` +
        `(cast path ${binding().halfPaths().cast})`);
    }
  });
});

test('cast round trips: half -> f32 -> half is the identity on a million seeded patterns (NaN canonical)', () => {
  ml.tidy(() => {
    const bits = seededFloats(FX.seed + 1, 1 << 20);
    for (const dt of ['f16', 'bf16'] as const) {
      const pats = new Uint16Array(bits.length);
      for (let i = 0; i < bits.length; i++) pats[i] = bits[i] & 0xffff;
      const t = ml.Tensor._empty([pats.length], dt, 'cpu');
      binding().write(t._h('test'), 0, pats);
      const back = ml.cast(ml.cast(t, 'f32'), dt);
      const got = new Uint16Array(binding().read(back._h('test'), 0, pats.length * 2));
      for (let i = 0; i < pats.length; i++) {
        const p = pats[i];
        const nan = dt === 'f16' ? (p & 0x7c00) === 0x7c00 && (p & 0x3ff) !== 0 : (p & 0x7f80) === 0x7f80 && (p & 0x7f) !== 0;
        const want = nan ? (dt === 'f16' ? 0x7e00 | (p & 0x8000) : BF16_NAN) : p;
        if (got[i] !== want) assert.fail(`${dt} 0x${p.toString(16)} -> f32 -> ${dt} gave 0x${got[i].toString(16)}, expected 0x${want.toString(16)}`);
      }
    }
  });
});
