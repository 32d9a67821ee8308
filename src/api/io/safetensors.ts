/**
 * save / load in the safetensors format (huggingface/safetensors), byte-compatible with the Python library:
 *
 *   8 bytes     N, the header length, u64 little-endian
 *   N bytes     JSON: {"__metadata__": {string: string}, "<name>": {"dtype": "F32", "shape": [...],
 *               "data_offsets": [begin, end]}, ...}, padded with spaces to a multiple of 8
 *   the rest    the tensors' bytes back to back, little-endian, row-major; offsets are relative to here
 *
 * Tensors are laid out as the library lays them out: by descending dtype alignment (F32, I32, BF16, F16),
 * then by name (byte order), which for one dtype is alphabetical.
 *
 * ```ts
 * ml.save('ckpt.safetensors', model.stateDict(), { step: '1000' });
 * const { tensors, metadata } = ml.load('ckpt.safetensors');
 * model.loadStateDict(tensors);
 * ```
 *
 * Writing is atomic: the file is written to `<path>.tmp-<pid>-<random>`, fsynced and renamed over `path`, so a
 * crash or an error never leaves a half-written checkpoint, and an existing file survives a failed save.
 * Loading validates the whole header against the file before reading any data, and every error names the
 * file and says what is wrong.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { binding } from '../binding';
import { DType, dtypeSize } from '../dtype';
import { Tensor, shapeSize, shapeStr } from '../tensor';

type STDType = 'F32' | 'F16' | 'BF16' | 'I32';
const FROM_ST: Record<STDType, DType> = { F32: 'f32', F16: 'f16', BF16: 'bf16', I32: 'i32' };
const TO_ST: Record<DType, STDType> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i32: 'I32' };
// Position in the library's Dtype enum, which is ordered by increasing alignment; files sort by it, descending.
const RANK: Record<STDType, number> = { F16: 7, BF16: 8, I32: 9, F32: 11 };
// Dtypes the format defines that modalab has no tensor type for, with their element sizes (so a file holding
// them can still be validated and its other tensors loaded with { skipUnsupported: true }).
const OTHER_ST: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1, I16: 2, U16: 2, U32: 4, F64: 8, I64: 8, U64: 8, C64: 8,
};
/** The library refuses larger headers (100 MB); so do we, before allocating anything. */
const MAX_HEADER = 100_000_000;
/** Tensors move between native memory and the file in pieces of this size, bounding the extra host memory. */
const CHUNK = 1 << 26;

export type TensorMap = Record<string, Tensor> | Map<string, Tensor>;

/** Anything with a stateDict() (an nn.Module) can be saved directly. */
export interface HasStateDict {
  stateDict(): Record<string, Tensor>;
}

export interface TensorInfo {
  /** null for a dtype modalab has no tensor type for (see `fileDtype`). */
  dtype: DType | null;
  /** The dtype as the file names it ('F32', 'I64', ...). */
  fileDtype: string;
  shape: number[];
  /** [begin, end) in bytes, relative to the start of the data area. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  metadata: Record<string, string>;
  /** In file order (by offset). */
  tensors: Record<string, TensorInfo>;
  /** Bytes before the data area: 8 + the header length. */
  dataStart: number;
}

export interface Loaded {
  /** In file order. */
  tensors: Record<string, Tensor>;
  /** The __metadata__ map ({} when the file has none). */
  metadata: Record<string, string>;
  /** Tensors left out under { skipUnsupported: true } (empty otherwise). */
  skipped: Array<{ name: string; fileDtype: string; shape: number[] }>;
}

export interface LoadOptions {
  /**
   * Leave out tensors whose dtype modalab has no type for (I64 position ids and F64 buffers in Hugging Face
   * checkpoints), listing them in `skipped`, instead of throwing. Default false.
   */
  skipUnsupported?: boolean;
}

function checkEndianness(op: string): void {
  if (os.endianness() !== 'LE') throw new Error(`${op}: safetensors is little-endian and this machine is not; not supported`);
}

function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Set a key on a plain object without meeting __proto__'s setter (names come from files). */
function setKey<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
}

/**
 * Write tensors (a Record, a Map, or a module's stateDict) and optional string metadata to `file`, atomically.
 * The tensors are not changed. Throws, leaving any existing file untouched, on a bad argument or an I/O error.
 */
export function save(file: string, tensors: TensorMap | HasStateDict, metadata?: Record<string, string>): void {
  checkEndianness('save');
  if (typeof file !== 'string' || file === '') throw new TypeError(`save: path must be a non-empty string, got ${JSON.stringify(file)}`);
  let entries: Array<[string, unknown]>;
  if (tensors instanceof Map) entries = [...tensors.entries()];
  else if (tensors !== null && typeof tensors === 'object' && typeof (tensors as HasStateDict).stateDict === 'function') {
    entries = Object.entries((tensors as HasStateDict).stateDict());
  } else if (tensors !== null && typeof tensors === 'object' && !Array.isArray(tensors) && !(tensors instanceof Tensor)) {
    entries = Object.entries(tensors);
  } else {
    throw new TypeError(`save: ${file}: tensors must be a Record or Map of name -> Tensor (or a module), got ` +
      `${tensors === null ? 'null' : Array.isArray(tensors) ? 'an array' : tensors instanceof Tensor ? 'a Tensor' : typeof tensors}`);
  }
  const items = entries.map(([name, t]) => {
    if (typeof name !== 'string') throw new TypeError(`save: ${file}: tensor names must be strings`);
    if (name === '__metadata__') throw new Error(`save: ${file}: '__metadata__' is reserved and cannot name a tensor`);
    if (!(t instanceof Tensor)) throw new TypeError(`save: ${file}: '${name}' is not a Tensor (got ${t === null ? 'null' : typeof t})`);
    if (t.isDisposed) throw new Error(`save: ${file}: tensor '${name}' ${shapeStr(t.shape)} was disposed`);
    const dtype: DType = t.dtype;
    return { name, t: t as Tensor, st: TO_ST[dtype], nbytes: t.size * dtypeSize(dtype) };
  });
  let metaJson: string | null = null;
  if (metadata !== undefined && metadata !== null) {
    if (typeof metadata !== 'object' || Array.isArray(metadata)) throw new TypeError(`save: ${file}: metadata must be a Record<string, string>`);
    const parts = Object.entries(metadata).map(([k, v]) => {
      if (typeof v !== 'string') {
        throw new TypeError(`save: ${file}: metadata '${k}' is a ${v === null ? 'null' : typeof v}; safetensors metadata values ` +
          'must be strings (JSON.stringify it)');
      }
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    metaJson = `{${parts.join(',')}}`;
  }

  items.sort((a, b) => RANK[b.st] - RANK[a.st] || byteCompare(a.name, b.name));
  // The JSON is assembled by hand: a JS object would move integer-like names ("0") to the front.
  const parts: string[] = metaJson === null ? [] : [`"__metadata__":${metaJson}`];
  let offset = 0;
  for (const it of items) {
    parts.push(`${JSON.stringify(it.name)}:{"dtype":"${it.st}","shape":[${it.t.shape.join(',')}],` +
      `"data_offsets":[${offset},${offset + it.nbytes}]}`);
    offset += it.nbytes;
  }
  let header = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const pad = (8 - (header.length % 8)) % 8;
  if (pad) header = Buffer.concat([header, Buffer.alloc(pad, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length), 0);

  const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
  let fd = -1;
  try {
    fd = fs.openSync(tmp, 'wx', 0o644);
    writeAll(fd, prefix);
    writeAll(fd, header);
    const b = binding();
    for (const it of items) {
      const h = it.t._h('save');
      const base = it.t._offset * dtypeSize(it.t.dtype);
      for (let o = 0; o < it.nbytes; o += CHUNK) {
        const n = Math.min(CHUNK, it.nbytes - o);
        writeAll(fd, new Uint8Array(b.read(h, base + o, n)));
      }
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = -1;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd >= 0) { try { fs.closeSync(fd); } catch { /* already failing */ } }
    try { fs.unlinkSync(tmp); } catch { /* never created */ }
    const msg = (e as Error).message;
    throw new Error(msg.startsWith('save:') ? msg : `save: ${file}: ${msg} (any existing file was left unchanged)`);
  }
  // Make the rename itself durable (best effort: not every platform can fsync a directory).
  try {
    const dfd = fs.openSync(path.dirname(path.resolve(file)), 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  } catch { /* best effort */ }
}

/** Read and validate the header of an open file. */
function readHeader(file: string, fd: number): SafetensorsHeader {
  const size = fs.fstatSync(fd).size;
  const fail = (msg: string): never => { throw new Error(`${file}: ${msg}`); };
  if (size < 8) fail(`file is ${size} bytes, too short for a safetensors file (an 8-byte header length comes first)`);
  const lenBuf = Buffer.alloc(8);
  if (fs.readSync(fd, lenBuf, 0, 8, 0) !== 8) fail('could not read the header length');
  const n64 = lenBuf.readBigUInt64LE(0);
  if (n64 > BigInt(size - 8)) fail(`header length ${n64} exceeds file size ${size}`);
  const n = Number(n64);
  if (n > MAX_HEADER) fail(`header length ${n} is over the ${MAX_HEADER}-byte limit`);
  if (n < 2) fail(`header length ${n} is too small for a JSON object`);
  const hbuf = Buffer.alloc(n);
  if (fs.readSync(fd, hbuf, 0, n, 8) !== n) fail('could not read the header (file shrank?)');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(hbuf);
  } catch {
    return fail('the header is not valid UTF-8');
  }
  if (text[0] !== '{') fail(`the header does not start with '{' (got ${JSON.stringify(text.slice(0, 16))})`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`invalid JSON in the header: ${(e as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) fail('the header is not a JSON object');

  const metadata: Record<string, string> = {};
  const infos: Array<{ name: string; info: TensorInfo }> = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail('__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') {
          fail(`__metadata__ value for '${k}' is ${v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`}; metadata values must be strings`);
        }
        setKey(metadata, k, v as string);
      }
      continue;
    }
    const t = `tensor '${name}'`;
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail(`${t}: expected {dtype, shape, data_offsets}`);
    const r = raw as Record<string, unknown>;
    if (typeof r.dtype !== 'string') fail(`${t}: dtype is missing or not a string`);
    const st = r.dtype as string;
    const supported = Object.prototype.hasOwnProperty.call(FROM_ST, st);
    if (!supported && !Object.prototype.hasOwnProperty.call(OTHER_ST, st)) fail(`${t}: unknown dtype ${JSON.stringify(st)}`);
    const shape = r.shape;
    if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)) {
      fail(`${t}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    const off = r.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || off.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)) {
      fail(`${t}: data_offsets must be [begin, end] with non-negative integers, got ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as [number, number];
    if (begin > end) fail(`${t}: data_offsets [${begin}, ${end}] are out of order (begin > end)`);
    const dtype = supported ? FROM_ST[st as STDType] : null;
    const nbytes = shapeSize(shape as number[]) * (dtype ? dtypeSize(dtype) : OTHER_ST[st]);
    if (!Number.isSafeInteger(nbytes)) fail(`${t}: shape ${shapeStr(shape as number[])} is too large`);
    if (end - begin !== nbytes) {
      fail(`${t}: data_offsets [${begin}, ${end}] do not match shape ${shapeStr(shape as number[])} ${st} (${nbytes} bytes)`);
    }
    infos.push({ name, info: { dtype, fileDtype: st, shape: (shape as number[]).slice(), dataOffsets: [begin, end] } });
  }

  // The data area must be covered exactly: tensors back to back from 0, no overlap, no gap, nothing after.
  infos.sort((a, b) => a.info.dataOffsets[0] - b.info.dataOffsets[0] || a.info.dataOffsets[1] - b.info.dataOffsets[1]);
  const dataSize = size - 8 - n;
  let expect = 0;
  let prev: { name: string; info: TensorInfo } | null = null;
  for (const e of infos) {
    const [begin, end] = e.info.dataOffsets;
    if (begin < expect && prev) {
      fail(`tensor '${e.name}': data_offsets [${begin}, ${end}] overlap tensor '${prev.name}' [${prev.info.dataOffsets.join(', ')}]`);
    }
    if (begin > expect) fail(`bytes [${expect}, ${begin}) of the data belong to no tensor (before tensor '${e.name}')`);
    expect = end;
    prev = e;
  }
  if (expect > dataSize) {
    fail(`file is truncated: the tensors need ${expect} bytes of data but the file holds ${dataSize} ` +
      `(expected ${8 + n + expect} bytes, got ${size})`);
  }
  if (expect < dataSize) fail(`${dataSize - expect} unexpected bytes after the last tensor`);
  const tensors: Record<string, TensorInfo> = {};
  for (const e of infos) setKey(tensors, e.name, e.info);
  return { metadata, tensors, dataStart: 8 + n };
}

/** Read and validate only the header: names, dtypes, shapes and metadata, without loading any tensor. */
export function loadHeader(file: string): SafetensorsHeader {
  if (typeof file !== 'string' || file === '') throw new TypeError(`loadHeader: path must be a non-empty string, got ${JSON.stringify(file)}`);
  const fd = fs.openSync(file, 'r');
  try {
    return readHeader(file, fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Load every tensor of a safetensors file into new CPU tensors (copies; the file is closed on return).
 * Throws an error naming the file and the problem on any malformed input, before allocating tensors.
 */
export function load(file: string, opts: LoadOptions = {}): Loaded {
  checkEndianness('load');
  if (typeof file !== 'string' || file === '') throw new TypeError(`load: path must be a non-empty string, got ${JSON.stringify(file)}`);
  if (opts === null || typeof opts !== 'object') throw new TypeError(`load: options must be an object, got ${opts === null ? 'null' : typeof opts}`);
  const fd = fs.openSync(file, 'r');
  const made: Tensor[] = [];
  try {
    const header = readHeader(file, fd);
    const skipped: Loaded['skipped'] = [];
    for (const [name, info] of Object.entries(header.tensors)) {
      if (info.dtype !== null) continue;
      if (!opts.skipUnsupported) {
        throw new Error(`${file}: tensor '${name}': dtype ${info.fileDtype} is not supported (modalab reads F32, F16, ` +
          'BF16 and I32; convert it before saving, or pass { skipUnsupported: true } to load the rest)');
      }
      skipped.push({ name, fileDtype: info.fileDtype, shape: info.shape });
    }
    const b = binding();
    const tensors: Record<string, Tensor> = {};
    for (const [name, info] of Object.entries(header.tensors)) {
      if (info.dtype === null) continue;
      const t = Tensor._empty(info.shape, info.dtype, 'cpu');
      made.push(t);
      const [begin, end] = info.dataOffsets;
      for (let o = 0; o < end - begin; o += CHUNK) {
        const n = Math.min(CHUNK, end - begin - o);
        const buf = Buffer.allocUnsafe(n);
        const got = fs.readSync(fd, buf, 0, n, header.dataStart + begin + o);
        if (got !== n) throw new Error(`${file}: file is truncated (tensor '${name}' ends early; did the file change while loading?)`);
        b.write(t._h('load'), o, buf);
      }
      setKey(tensors, name, t);
    }
    return { tensors, metadata: header.metadata, skipped };
  } catch (e) {
    for (const t of made) t.dispose();
    throw e;
  } finally {
    fs.closeSync(fd);
  }
}
