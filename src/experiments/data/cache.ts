/**
 * Preprocess a split of images once, keep the f32 result on disk, and load it back in a fraction of the time.
 *
 * ```ts
 * const items = ds.splits.train.map((p) => ({ id: p.id, image: p.image }));
 * const s = await preprocessSplit(items, { size: 32 }, { key: 'emoji-train', shared: true });
 * s.data;   // Float32Array [N, 3, 32, 32] (on a SharedArrayBuffer: worker threads read it without a copy)
 * s.ids;    // row i of data is item s.ids[i] (skipped items are absent from both)
 * ```
 *
 * The cache key is the sha256 of: the format version, the resolved transform (every default filled in), the
 * caller's `key` label, and every item's id and source fingerprint in order (a file: absolute path, size and
 * mtime; bytes and SVG: a sha256 of the content). Change any of them and a new file is built; old files stay
 * until removed (they are named `<key>-<size>px-<hash16>.f32`).
 *
 * File format (little-endian), one file per split:
 *   'MDLIMGC1' (8 bytes) | u32 header length | header JSON (utf8) | zero padding to a multiple of 64 |
 *   f32 data, N*3*H*W values | 'MDLIMGE1' (8 bytes)
 * The header holds the format version, the hash, the shape, the ids and the skip report. A file whose size,
 * magic, trailer, header, hash or shape does not add up is not trusted: it is rebuilt (and `invalidCache` says
 * why). The data itself carries no checksum (hashing 100+ MB on every load would cost more than reading it);
 * a file of the right length with flipped bits inside the data would be trusted.
 * Writes go to a temporary file in the same folder, renamed into place when complete, so a crash or a concurrent
 * reader never sees half a file.
 */
import { createHash, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { readFully, writeFully } from './f32file';
import { decodeInto, ImageTransform, resolveTransform } from './image';
import type { ImageRef, OnError, SkipReport } from './types';

/** Bump when the file layout or the decoding changes in a way that changes the numbers. */
export const CACHE_FORMAT_VERSION = 1;
const MAGIC = Buffer.from('MDLIMGC1', 'latin1');
const TRAILER = Buffer.from('MDLIMGE1', 'latin1');
const ALIGN = 64;
/** How many skip reasons a report keeps. */
const MAX_REASONS = 20;

export interface PreprocessItem { id: string; image: ImageRef }

export interface PreprocessOptions {
  /** Where cache files live; default `runs/cache` under the current directory. */
  cacheDir?: string;
  /** A readable label: part of the file name and of the hash (e.g. 'emoji-train'). Default 'images'. */
  key?: string;
  /** 'throw' (default): the first bad image rejects with an Error naming it. 'skip': drop it, count it. */
  onError?: OnError;
  /** Images decoded at once (sharp works on libuv's thread pool); default 2x the CPU count, at least 4. */
  workers?: number;
  onProgress?: (done: number, total: number) => void;
  /** Back `data` with a SharedArrayBuffer so worker threads can read it without copying. */
  shared?: boolean;
  /** false: neither read nor write the cache (always decode). Default true. */
  cache?: boolean;
}

export interface PreprocessedSplit {
  /** f32 [N, 3, H, W], row i belongs to ids[i]. */
  data: Float32Array;
  shape: [number, number, number, number];
  ids: string[];
  fromCache: boolean;
  skipped: SkipReport;
  /** The cache file (read or written); '' when cache is false. */
  file: string;
  /** Set when a cache file existed under this key but was not trusted, with the reason; it was rebuilt. */
  invalidCache?: string;
}

interface Header {
  format: 'modalab-image-cache';
  version: number;
  hash: string;
  shape: [number, number, number, number];
  ids: string[];
  skipped: SkipReport;
}

/** How an item's source is recognised as unchanged: path+size+mtime for files, a content hash otherwise. */
function fingerprint(ref: ImageRef): string {
  switch (ref.kind) {
    case 'file': {
      const abs = path.resolve(ref.path);
      try {
        const st = fs.statSync(abs);
        return `file:${abs}:${st.size}:${st.mtimeMs}`;
      } catch {
        return `file:${abs}:missing`; // decoding will report it; when the file appears the key changes
      }
    }
    case 'bytes': return `bytes:${createHash('sha256').update(ref.bytes).digest('hex')}`;
    case 'svg': return `svg:${createHash('sha256').update(ref.svg, 'utf8').digest('hex')}`;
    default: throw new Error(`preprocessSplit: unknown ImageRef kind ${(ref as { kind: unknown }).kind}`);
  }
}

/** The cache key of a split: see the file comment for what goes in. */
export function cacheKey(items: readonly PreprocessItem[], t: ImageTransform, key = 'images'): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ format: 'modalab-image-cache', version: CACHE_FORMAT_VERSION, key, transform: resolveTransform(t) }));
  for (const it of items) h.update(`\n${it.id}\0${fingerprint(it.image)}`);
  return h.digest('hex');
}

function alloc(bytes: number, shared: boolean): ArrayBuffer | SharedArrayBuffer {
  return shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
}

/** Read and check a cache file; returns the split, or a reason it cannot be trusted. */
function readCache(file: string, hash: string, chw: number, shared: boolean):
  { ok: true; data: Float32Array; header: Header } | { ok: false; reason: string } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return { ok: false, reason: 'absent' };
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < MAGIC.length + 4 + TRAILER.length) return { ok: false, reason: `too short (${size} bytes)` };
    const head = Buffer.alloc(MAGIC.length + 4);
    readFully(fd, head, 0);
    if (!head.subarray(0, MAGIC.length).equals(MAGIC)) return { ok: false, reason: 'bad magic' };
    const hlen = head.readUInt32LE(MAGIC.length);
    if (hlen > size) return { ok: false, reason: `header length ${hlen} exceeds file size ${size}` };
    const hbuf = Buffer.alloc(hlen);
    readFully(fd, hbuf, head.length);
    let header: Header;
    try {
      header = JSON.parse(hbuf.toString('utf8')) as Header;
    } catch (e) {
      return { ok: false, reason: `header is not JSON (${(e as Error).message})` };
    }
    if (header.format !== 'modalab-image-cache' || header.version !== CACHE_FORMAT_VERSION) {
      return { ok: false, reason: `format ${header.format} v${header.version}, expected v${CACHE_FORMAT_VERSION}` };
    }
    if (header.hash !== hash) return { ok: false, reason: 'hash mismatch' };
    const [n, c, h, w] = header.shape ?? [];
    if (!Number.isInteger(n) || c * h * w !== chw || !Array.isArray(header.ids) || header.ids.length !== n) {
      return { ok: false, reason: `shape ${JSON.stringify(header.shape)} does not match ${header.ids?.length} ids and ${chw} values per image` };
    }
    const dataOff = Math.ceil((head.length + hlen) / ALIGN) * ALIGN;
    const bytes = n * chw * 4;
    if (size !== dataOff + bytes + TRAILER.length) {
      return { ok: false, reason: `size ${size} bytes, expected ${dataOff + bytes + TRAILER.length} (truncated or padded)` };
    }
    const tail = Buffer.alloc(TRAILER.length);
    readFully(fd, tail, dataOff + bytes);
    if (!tail.equals(TRAILER)) return { ok: false, reason: 'bad trailer' };
    const buf = alloc(bytes, shared);
    readFully(fd, new Uint8Array(buf), dataOff);
    return { ok: true, data: new Float32Array(buf), header };
  } catch (e) {
    return { ok: false, reason: `unreadable (${(e as Error).message})` };
  } finally {
    fs.closeSync(fd);
  }
}

/** Write atomically: a temporary file beside the target, renamed over it once complete. */
function writeCache(file: string, header: Header, data: Float32Array): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const hbuf = Buffer.from(JSON.stringify(header), 'utf8');
  const lenBuf = Buffer.alloc(4);
  lenBuf.writeUInt32LE(hbuf.length);
  const pad = Buffer.alloc(Math.ceil((MAGIC.length + 4 + hbuf.length) / ALIGN) * ALIGN - (MAGIC.length + 4 + hbuf.length));
  const fd = fs.openSync(tmp, 'wx');
  try {
    for (const b of [MAGIC, lenBuf, hbuf, pad, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), TRAILER]) writeFully(fd, b);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.closeSync(fd); } catch { /* already closed */ }
    try { fs.unlinkSync(tmp); } catch { /* never created */ }
    throw new Error(`preprocessSplit: cannot write cache ${file}: ${(e as Error).message}`);
  }
}

/**
 * Decode every item through the image pipeline into one f32 [N, 3, H, W] array, or load it from the cache.
 * With onError 'skip', bad items are dropped from data and ids alike and counted in `skipped`.
 */
export async function preprocessSplit(items: readonly PreprocessItem[], t: ImageTransform, opts: PreprocessOptions = {}): Promise<PreprocessedSplit> {
  const rt = resolveTransform(t);
  const onError = opts.onError ?? 'throw';
  if (onError !== 'throw' && onError !== 'skip') throw new Error(`preprocessSplit: onError must be 'throw' or 'skip', got ${String(onError)}`);
  const seen = new Set<string>();
  for (const it of items) {
    if (typeof it?.id !== 'string' || !it.image) throw new Error(`preprocessSplit: every item needs an id and an image, got ${JSON.stringify(it)?.slice(0, 80)}`);
    if (seen.has(it.id)) throw new Error(`preprocessSplit: duplicate id ${it.id}`);
    seen.add(it.id);
  }
  const label = opts.key ?? 'images';
  const shared = opts.shared ?? false;
  const size = rt.size, chw = 3 * size * size;
  const useCache = opts.cache ?? true;
  let file = '';
  let invalidCache: string | undefined;
  let hash = '';
  if (useCache) {
    hash = cacheKey(items, t, label);
    const safe = label.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 64) || 'images';
    file = path.resolve(opts.cacheDir ?? path.join('runs', 'cache'), `${safe}-${size}px-${hash.slice(0, 16)}.f32`);
    const hit = readCache(file, hash, chw, shared);
    if (hit.ok) {
      const { header } = hit;
      if (onError === 'throw' && header.skipped.skipped > 0) {
        throw new Error(`preprocessSplit: ${header.skipped.skipped} bad image(s) (cached in ${file}); first: ${header.skipped.reasons[0]}`);
      }
      opts.onProgress?.(items.length, items.length);
      return { data: hit.data, shape: header.shape, ids: header.ids, fromCache: true, skipped: header.skipped, file };
    }
    if (hit.reason !== 'absent') invalidCache = hit.reason;
  }

  // Decode with a pool of `workers` promises, each writing its image straight into row i.
  const n = items.length;
  const buf = alloc(n * chw * 4, shared);
  const all = new Float32Array(buf);
  const bad: (string | undefined)[] = new Array(n);
  const workers = Math.max(1, Math.floor(opts.workers ?? Math.max(4, 2 * os.availableParallelism())));
  let next = 0, done = 0, failure: Error | undefined;
  const worker = async (): Promise<void> => {
    while (next < n && !failure) {
      const i = next++;
      try {
        await decodeInto(items[i].image, rt, all, i * chw, items[i].id);
      } catch (e) {
        if (onError === 'throw') { failure ??= e as Error; return; }
        bad[i] = (e as Error).message;
      }
      done++;
      opts.onProgress?.(done, n);
    }
  };
  await Promise.all(Array.from({ length: Math.min(workers, Math.max(n, 1)) }, worker));
  if (failure) throw new Error(`preprocessSplit: ${failure.message}`);

  // Compact: drop skipped rows so that data row i is ids[i].
  const ids: string[] = [];
  const reasons: string[] = [];
  let skipped = 0;
  for (let i = 0; i < n; i++) {
    if (bad[i] !== undefined) {
      skipped++;
      if (reasons.length < MAX_REASONS) reasons.push(bad[i]!);
      continue;
    }
    if (ids.length !== i) all.copyWithin(ids.length * chw, i * chw, (i + 1) * chw);
    ids.push(items[i].id);
  }
  const data = ids.length === n ? all : new Float32Array(buf, 0, ids.length * chw);
  const shape: [number, number, number, number] = [ids.length, 3, size, size];
  const report: SkipReport = { skipped, reasons };
  if (useCache) writeCache(file, { format: 'modalab-image-cache', version: CACHE_FORMAT_VERSION, hash, shape, ids, skipped: report }, data);
  return { data, shape, ids, fromCache: false, skipped: report, file, ...(invalidCache ? { invalidCache } : {}) };
}
