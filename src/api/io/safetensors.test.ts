/**
 * safetensors: the byte layout against the reference library's own test vectors, round trips of every dtype,
 * every malformed-file error by name, and atomic writes.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ml from '../../index';
import { save, load, loadHeader } from './safetensors';

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-st-'));
}

function withDir(fn: (dir: string) => void): void {
  const dir = tmpdir();
  try {
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A file from a header object (or raw header text) and data bytes, with the header padded like the library. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), opts: { pad?: boolean; n?: bigint } = {}): Buffer {
  let h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  if (opts.pad ?? true) h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const n = Buffer.alloc(8);
  n.writeBigUInt64LE(opts.n ?? BigInt(h.length));
  return Buffer.concat([n, h, Buffer.from(data)]);
}

function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

test('byte layout matches the safetensors library test vectors (test_serialization, forced alignment, empty)', () => {
  withDir((dir) => {
    const f = path.join(dir, 'a.safetensors');
    // safetensors/src/tensor.rs test_serialization: "attn.0" F32 [1, 2, 3] = 0..5
    save(f, { 'attn.0': ml.tensor([0, 1, 2, 3, 4, 5], [1, 2, 3]) });
    assert.deepEqual([...fs.readFileSync(f)], [
      64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
      116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
      58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
      101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
      0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
    ]);
    // test_serialization_forced_alignement: "attn0" [1, 1, 2, 3]: the header is padded with 7 spaces
    save(f, { attn0: ml.tensor([0, 1, 2, 3, 4, 5], [1, 1, 2, 3]) });
    assert.deepEqual([...fs.readFileSync(f)], [
      72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116,
      121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58,
      91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102,
      115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32,
      32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0,
      160, 64,
    ]);
    // test_empty, without and with metadata
    save(f, {});
    assert.deepEqual([...fs.readFileSync(f)], [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
    save(f, {}, { framework: 'pt' });
    assert.deepEqual([...fs.readFileSync(f)], [
      40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95,
      95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112,
      116, 34, 125, 125, 32, 32, 32, 32, 32,
    ]);
  });
});

test('layout order: descending dtype alignment (F32, I32, BF16, F16), then names in byte order', () => {
  withDir((dir) => {
    const f = path.join(dir, 'order.safetensors');
    save(f, {
      h: ml.tensor([1], [1], { dtype: 'f16' }),
      b: ml.tensor([1, 2], [2]),
      '10': ml.tensor([3], [1]),
      '2': ml.tensor([4], [1]),
      z: ml.tensor([5], [1], { dtype: 'bf16' }),
      a: ml.tensor([6], [1], { dtype: 'i32' }),
      B: ml.tensor([7], [1]),
    });
    const bytes = fs.readFileSync(f);
    const n = Number(bytes.readBigUInt64LE(0));
    assert.equal(n % 8, 0);
    const text = bytes.subarray(8, 8 + n).toString('utf8');
    assert.equal(text.trimEnd(),
      '{"10":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' +
      '"2":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},' +
      '"B":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},' +
      '"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},' +
      '"a":{"dtype":"I32","shape":[1],"data_offsets":[20,24]},' +
      '"z":{"dtype":"BF16","shape":[1],"data_offsets":[24,26]},' +
      '"h":{"dtype":"F16","shape":[1],"data_offsets":[26,28]}}');
    const data = bytes.subarray(8 + n);
    assert.equal(data.length, 28);
    assert.deepEqual([...data.subarray(0, 4)], [...f32Bytes([3])]);
    assert.deepEqual([...data.subarray(12, 20)], [...f32Bytes([1, 2])]);
    assert.equal(data.readInt32LE(20), 6);
    assert.equal(data.readUInt16LE(24), 0x40a0);  // bf16 5.0
    assert.equal(data.readUInt16LE(26), 0x3c00);  // f16 1.0
  });
});

test('round trip: every dtype, scalars, empty tensors, unicode and integer-like names, metadata, views', () => {
  withDir((dir) => {
    const f = path.join(dir, 'rt.safetensors');
    const base = ml.tensor(Float32Array.from({ length: 12 }, (_, i) => i * 0.5 - 2), [4, 3]);
    const src: Record<string, ml.Tensor> = {
      f32: ml.tensor([[1.5, -2], [3.25, 1e-20]]),
      f16: ml.tensor([0.5, -65504, 3], [3], { dtype: 'f16' }),
      bf16: ml.tensor([1, -2.5, 1e30], [3], { dtype: 'bf16' }),
      i32: ml.tensor([2147483647, -2147483648, 0], [3], { dtype: 'i32' }),
      scalar: ml.tensor(42),
      empty: ml.zeros([0, 5]),
      'ünï.😀': ml.tensor([7], [1]),
      '0': ml.tensor([8], [1]),
      base,
      row2: base._view([3], 6),  // a view at an element offset: the bytes of row 2 only
    };
    save(f, src, { step: '100', config: '{"lr":0.001}', 'ключ': 'значение' });
    const { tensors, metadata } = load(f);
    assert.deepEqual(metadata, { step: '100', config: '{"lr":0.001}', 'ключ': 'значение' });
    assert.deepEqual(Object.keys(tensors).sort(), Object.keys(src).sort());
    for (const [k, t] of Object.entries(src)) {
      const u = tensors[k];
      assert.equal(u.dtype, t.dtype, k);
      assert.deepEqual(u.shape, t.shape, k);
      assert.deepEqual(Array.from(u.toArray()), Array.from(t.toArray()), k);
    }
    assert.deepEqual(Array.from(tensors.row2.toArray()), [1, 1.5, 2]);
    // Loaded tensors are copies: they outlive the sources.
    for (const t of Object.values(src)) t.dispose();
    assert.deepEqual(Array.from(tensors.f32.toArray()), [1.5, -2, 3.25, Math.fround(1e-20)]);
    const h = loadHeader(f);
    // F32 names in byte order: '0' [0, 4), 'base' [4, 52), 'empty' [52, 52), 'f32' [52, 68), ...
    assert.deepEqual(h.tensors.f32, { dtype: 'f32', fileDtype: 'F32', shape: [2, 2], dataOffsets: [52, 68] });
    assert.deepEqual(h.tensors.empty.dataOffsets, [52, 52]);
    assert.equal(h.metadata.step, '100');
  });
});

test('save accepts a Map and an object with stateDict(); rejects bad input before touching the disk', () => {
  withDir((dir) => {
    const f = path.join(dir, 'm.safetensors');
    save(f, new Map([['w', ml.tensor([1, 2], [2])]]));
    assert.deepEqual(Array.from(load(f).tensors.w.toArray()), [1, 2]);
    save(f, { stateDict: () => ({ 'fc.weight': ml.tensor([3], [1]) }) });
    assert.deepEqual(Object.keys(load(f).tensors), ['fc.weight']);
    const g = path.join(dir, 'never.safetensors');
    assert.throws(() => save(g, { w: 3 as unknown as ml.Tensor }), /'w' is not a Tensor/);
    assert.throws(() => save(g, { w: ml.tensor([1], [1]) }, { step: 3 as unknown as string }), /metadata 'step' is a number; safetensors metadata values must be strings/);
    assert.throws(() => save(g, { __metadata__: ml.tensor([1], [1]) }), /reserved/);
    const d = ml.tensor([1], [1]);
    d.dispose();
    assert.throws(() => save(g, { d }), /tensor 'd' \[1\] was disposed/);
    assert.throws(() => save(g, [] as unknown as Record<string, ml.Tensor>), /must be a Record or Map/);
    assert.ok(!fs.existsSync(g));
    assert.deepEqual(fs.readdirSync(dir), ['m.safetensors']);
  });
});

test('atomic write: no temporary file is left behind, and a failed save leaves the existing file intact', () => {
  withDir((dir) => {
    const f = path.join(dir, 'ckpt.safetensors');
    save(f, { a: ml.tensor([1, 2, 3], [3]) });
    const good = fs.readFileSync(f);
    assert.deepEqual(fs.readdirSync(dir), ['ckpt.safetensors']);
    // Fail in the middle of writing: reading the second tensor's memory throws after the header and the first
    // tensor were already written to the temporary file.
    const ok = ml.tensor([9, 9], [2]);
    const broken = ml.tensor([5, 6], [2]);
    Object.defineProperty(broken, '_h', { value: () => { throw new Error('device lost'); } });
    assert.throws(() => save(f, { a: ok, b: broken }), /save: .*ckpt\.safetensors: .*any existing file was left unchanged/);
    assert.deepEqual(fs.readFileSync(f), good, 'the previous checkpoint is untouched');
    assert.deepEqual(fs.readdirSync(dir), ['ckpt.safetensors'], 'the temporary file was removed');
    // A directory that does not exist: fails at open, nothing created.
    assert.throws(() => save(path.join(dir, 'no', 'such', 'x.safetensors'), { a: ok }), /ENOENT/);
    assert.deepEqual(fs.readdirSync(dir), ['ckpt.safetensors']);
  });
});

test('load: every malformed file gives an error that says what is wrong', () => {
  withDir((dir) => {
    let i = 0;
    const expectError = (bytes: Buffer, re: RegExp, what: string) => {
      const f = path.join(dir, `bad${i++}.safetensors`);
      fs.writeFileSync(f, bytes);
      assert.throws(() => load(f), (e: Error) => {
        assert.match(e.message, re, what);
        assert.ok(e.message.startsWith(f), `${what}: the error names the file: ${e.message}`);
        return true;
      }, what);
    };
    const w = { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] };
    const data16 = f32Bytes([1, 2, 3, 4]);

    expectError(Buffer.from([1, 2, 3, 4, 5]), /file is 5 bytes, too short/, 'shorter than 8 bytes');
    const huge = Buffer.alloc(120, 0x20);
    huge.writeBigUInt64LE(9999999n, 0);
    expectError(huge, /: header length 9999999 exceeds file size 120$/, 'header length past the end');
    const max = Buffer.alloc(16, 0x20);
    max.writeBigUInt64LE(0xffffffffffffffffn, 0);
    expectError(max, /header length 18446744073709551615 exceeds file size 16/, 'u64 max header length');
    expectError(rawFile('{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]', data16), /invalid JSON in the header/, 'invalid JSON');
    expectError(rawFile('[1, 2, 3]'), /does not start with '\{'/, 'not an object');
    const badUtf8 = Buffer.concat([Buffer.from([8, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d, 0x20])]);
    expectError(badUtf8, /the header is not valid UTF-8/, 'invalid UTF-8');
    expectError(rawFile({ __metadata__: { step: 3 }, w }, data16), /__metadata__ value for 'step' is a number; metadata values must be strings/, 'non-string metadata');
    expectError(rawFile({ __metadata__: ['a'], w }, data16), /__metadata__ must be an object of strings/, 'metadata not an object');
    expectError(rawFile({ w: { ...w, dtype: 'Q7' } }, data16), /tensor 'w': unknown dtype "Q7"/, 'unknown dtype');
    expectError(rawFile({ w: { ...w, dtype: 'F64', data_offsets: [0, 32] } }, new Uint8Array(32)), /tensor 'w': dtype F64 is not supported.*skipUnsupported/, 'F64');
    expectError(rawFile({ w: { ...w, dtype: 'I64', data_offsets: [0, 16] } }, data16), /tensor 'w': data_offsets \[0, 16\] do not match shape \[2, 2\] I64 \(32 bytes\)/, 'I64 sizes are known');
    expectError(rawFile({ w: { shape: [2, 2], data_offsets: [0, 16] } }, data16), /tensor 'w': dtype is missing/, 'no dtype');
    expectError(rawFile({ w: { ...w, shape: [2, -2] } }, data16), /tensor 'w': shape must be an array of non-negative integers/, 'negative dim');
    expectError(rawFile({ w: { ...w, shape: [2, 1.5] } }, data16), /shape must be an array of non-negative integers/, 'fractional dim');
    expectError(rawFile({ w: { ...w, data_offsets: [0] } }, data16), /data_offsets must be \[begin, end\]/, 'one offset');
    expectError(rawFile({ w: 5 }, data16), /tensor 'w': expected \{dtype, shape, data_offsets\}/, 'entry not an object');
    expectError(rawFile({ w: { ...w, data_offsets: [0, 12] } }, new Uint8Array(12)),
      /: tensor 'w': data_offsets \[0, 12\] do not match shape \[2, 2\] F32 \(16 bytes\)$/, 'size mismatch');
    expectError(rawFile({ w: { ...w, data_offsets: [16, 0] } }, data16), /tensor 'w': data_offsets \[16, 0\] are out of order \(begin > end\)/, 'begin > end');
    expectError(rawFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, data16),
      /tensor 'b': data_offsets \[8, 16\] overlap tensor 'a' \[0, 12\]/, 'overlap');
    expectError(rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, data16),
      /bytes \[4, 8\) of the data belong to no tensor \(before tensor 'b'\)/, 'gap');
    expectError(rawFile({ w }, data16.subarray(0, 10)), /file is truncated: the tensors need 16 bytes of data but the file holds 10/, 'truncated');
    expectError(rawFile({ w }, new Uint8Array(20)), /4 unexpected bytes after the last tensor/, 'trailing bytes');
    // A valid file cut short anywhere is an error, never a crash or a partial load.
    const good = path.join(dir, 'good.safetensors');
    save(good, { a: ml.tensor([1, 2, 3], [3]), b: ml.tensor([4], [1], { dtype: 'i32' }) }, { k: 'v' });
    const whole = fs.readFileSync(good);
    const before = ml.memory().numTensors;
    for (let cut = 0; cut < whole.length; cut++) {
      const f = path.join(dir, 'cut.safetensors');
      fs.writeFileSync(f, whole.subarray(0, cut));
      assert.throws(() => load(f), /cut\.safetensors: /, `cut at ${cut}`);
    }
    assert.equal(ml.memory().numTensors, before, 'failed loads allocate nothing that survives');
    assert.throws(() => load(path.join(dir, 'missing.safetensors')), /ENOENT/);
  });
});

test('skipUnsupported: an I64 buffer (Hugging Face position ids) is listed and the rest loads', () => {
  withDir((dir) => {
    const f = path.join(dir, 'hf.safetensors');
    const ids = new Uint8Array(new BigInt64Array([0n, 1n, 2n]).buffer);
    const w = f32Bytes([1, 2]);
    fs.writeFileSync(f, rawFile({
      'pos.ids': { dtype: 'I64', shape: [1, 3], data_offsets: [0, 24] },
      'fc.weight': { dtype: 'F32', shape: [2], data_offsets: [24, 32] },
    }, Buffer.concat([ids, w])));
    assert.throws(() => load(f), /tensor 'pos\.ids': dtype I64 is not supported/);
    const before = ml.memory().numTensors;
    assert.throws(() => load(f), /not supported/);
    assert.equal(ml.memory().numTensors, before, 'the refusal comes before any allocation');
    const r = load(f, { skipUnsupported: true });
    assert.deepEqual(Object.keys(r.tensors), ['fc.weight']);
    assert.deepEqual(Array.from(r.tensors['fc.weight'].toArray()), [1, 2]);
    assert.deepEqual(r.skipped, [{ name: 'pos.ids', fileDtype: 'I64', shape: [1, 3] }]);
    assert.deepEqual(loadHeader(f).tensors['pos.ids'], { dtype: null, fileDtype: 'I64', shape: [1, 3], dataOffsets: [0, 24] });
  });
});

test('a tensor named __proto__ or constructor is an ordinary name', () => {
  withDir((dir) => {
    const f = path.join(dir, 'p.safetensors');
    fs.writeFileSync(f, rawFile({ ['__proto__']: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32Bytes([3])));
    const { tensors } = load(f);
    assert.deepEqual(Object.keys(tensors), ['__proto__']);
    assert.equal(Object.getPrototypeOf(tensors), Object.prototype);
    assert.deepEqual(Array.from((Object.getOwnPropertyDescriptor(tensors, '__proto__')!.value as ml.Tensor).toArray()), [3]);
  });
});
