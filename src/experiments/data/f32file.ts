/**
 * Large typed arrays to and from disk, in pieces: one `fs.writeSync`/`readSync` call takes at most 2 GiB - 1 bytes,
 * `fs.readFileSync` refuses files over 2 GiB, and a Uint8Array view can be at most 4 GiB long, while a feature table
 * of 80,000 images is 2.8 GB and one of 40,000 images with `imagePoolMode: 'window'` 5.6 GB. Each piece gets its
 * own byte view, so no view is ever longer than a piece.
 *
 * ```ts
 * writeFloat32File('runs/cache/x.f32', table);        // temp file in the same folder, renamed when whole
 * const t = readFloat32File('runs/cache/x.f32', n);    // Float32Array of n values, or null if absent or another size
 * ```
 */
import * as fs from 'fs';

/** The largest piece one read or write call moves (1 GiB). */
export const PIECE_BYTES = 1 << 30;

/** Reads dst.length bytes at `position` into dst, `piece` bytes a call; throws if the file ends first. */
export function readFully(fd: number, dst: Uint8Array, position: number, piece = PIECE_BYTES): void {
  let off = 0;
  while (off < dst.length) {
    const n = fs.readSync(fd, dst, off, Math.min(dst.length - off, piece), position + off);
    if (n === 0) throw new Error(`file ended after ${position + off} bytes`);
    off += n;
  }
}

/** Writes all of src at the fd's current position, `piece` bytes a call. */
export function writeFully(fd: number, src: Uint8Array, piece = PIECE_BYTES): void {
  let off = 0;
  while (off < src.length) off += fs.writeSync(fd, src, off, Math.min(src.length - off, piece));
}

/** Byte views of `a`, in order, each at most `piece` bytes long (no one view of the whole array). */
export function byteViews(a: Float32Array, piece = PIECE_BYTES): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let off = 0; off < a.byteLength; off += piece) out.push(new Uint8Array(a.buffer, a.byteOffset + off, Math.min(piece, a.byteLength - off)));
  return out;
}

/** Writes a Float32Array as raw little-endian f32 to a temporary file beside `file`, then renames it into place. */
export function writeFloat32File(file: string, data: Float32Array, piece = PIECE_BYTES): void {
  const tmp = `${file}.tmp-${process.pid}-${Date.now().toString(36)}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    for (const v of byteViews(data, piece)) writeFully(fd, v, piece);
    fs.closeSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.renameSync(tmp, file);
}

/** The raw f32 file as a Float32Array of `length` values; null when the file is absent or not 4 * length bytes. */
export function readFloat32File(file: string, length: number, piece = PIECE_BYTES): Float32Array | null {
  let size: number;
  try {
    size = fs.statSync(file).size;
  } catch {
    return null;
  }
  if (size !== length * 4) return null;
  const out = new Float32Array(length);
  const fd = fs.openSync(file, 'r');
  try {
    let position = 0;
    for (const v of byteViews(out, piece)) {
      readFully(fd, v, position, piece);
      position += v.length;
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}
