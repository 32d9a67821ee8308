/**
 * The image pipeline: bytes (file, memory, base64 or SVG) -> sharp -> f32 [3, H, W], normalised; PNG back out for
 * notebooks; and seeded augmentation on already-decoded batches.
 *
 * ```ts
 * const t: ImageTransform = { size: 32 };                       // contain-fit onto white, CLIP mean/std
 * const x = await decodeImage({ kind: 'file', path: 'a.png' }, t); // Float32Array of 3 * 32 * 32
 * const png = await encodePng(x, t);                               // Buffer with PNG bytes (denormalised)
 * const y = augment(batch, [128, 3, 32, 32], { seed: step, cropScale: [0.6, 1], jitter: { brightness: 0.2 } });
 * ```
 *
 * Decisions (docs/data.md says the same):
 * - Transparency is composited onto `background` (default white) before anything else sees the pixels, so an
 *   emoji's transparent surround is white, never black.
 * - Resize is square. `fit: 'contain'` (default) keeps the whole image and pads with `background`; `'cover'`
 *   fills the square and crops the overflow, centred.
 * - Modes: grayscale, palette, 16-bit and CMYK inputs are converted to 8-bit sRGB (sharp/libvips, CMYK through
 *   its built-in profile), since every one of them has a faithful RGB rendering. `strict: true` rejects anything
 *   that is not 8-bit sRGB (with or without alpha) instead, naming the file and its mode.
 *
 * `augment` is pure JavaScript (no sharp, no addon) so that a loader's worker_thread can run it on cached data.
 */
import type Sharp from 'sharp';
import type { ImageRef } from './types';

// sharp is loaded on first use, not at import: `augment` (pure JS) must be importable from a worker_thread
// without pulling in a native addon.
let sharpLib: typeof Sharp | undefined;
function sharp(): typeof Sharp {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (sharpLib ??= require('sharp') as typeof Sharp);
}

/** CLIP's normalisation (OpenAI CLIP preprocessing), in [0, 1] pixel units. */
export const CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

export interface ImageTransform {
  /** Output side in pixels: images come out [3, size, size]. */
  size: number;
  /** 'contain' (default): whole image, padded with `background`; 'cover': fill the square, crop centred. */
  fit?: 'contain' | 'cover';
  /** RGB 0..255 that transparency is composited onto and padding is filled with; default white. */
  background?: readonly [number, number, number];
  /** Per-channel mean and std in [0, 1] units: out = (px / 255 - mean) / std. Defaults: CLIP's. */
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
  /** When set, an input whose width x height is not this is an error (or a skip). */
  expectSize?: readonly [number, number];
  /** Reject inputs that are not 8-bit sRGB(A) instead of converting them. Default false. */
  strict?: boolean;
}

/** Every field of ImageTransform with its default filled in: what the cache key hashes. */
export interface ResolvedTransform {
  size: number;
  fit: 'contain' | 'cover';
  background: [number, number, number];
  mean: [number, number, number];
  std: [number, number, number];
  expectSize: [number, number] | null;
  strict: boolean;
}

function triple(name: string, v: readonly number[] | undefined, dflt: readonly number[], check: (x: number) => boolean): [number, number, number] {
  const x = v ?? dflt;
  if (x.length !== 3 || !x.every((e) => Number.isFinite(e) && check(e))) {
    throw new Error(`ImageTransform.${name}: expected 3 valid numbers, got ${JSON.stringify(v)}`);
  }
  return [x[0], x[1], x[2]];
}

/** Check a transform and fill its defaults; throws naming the bad field. */
export function resolveTransform(t: ImageTransform): ResolvedTransform {
  if (!t || !Number.isInteger(t.size) || t.size < 1 || t.size > 4096) {
    throw new Error(`ImageTransform.size: expected an integer in 1..4096, got ${t?.size}`);
  }
  const fit = t.fit ?? 'contain';
  if (fit !== 'contain' && fit !== 'cover') throw new Error(`ImageTransform.fit: expected 'contain' or 'cover', got ${String(fit)}`);
  let expectSize: [number, number] | null = null;
  if (t.expectSize) {
    const [w, h] = t.expectSize;
    if (!Number.isInteger(w) || !Number.isInteger(h) || w < 1 || h < 1) {
      throw new Error(`ImageTransform.expectSize: expected [width, height] positive integers, got ${JSON.stringify(t.expectSize)}`);
    }
    expectSize = [w, h];
  }
  return {
    size: t.size,
    fit,
    background: triple('background', t.background, [255, 255, 255], (e) => e >= 0 && e <= 255),
    mean: triple('mean', t.mean, CLIP_MEAN, () => true),
    std: triple('std', t.std, CLIP_STD, (e) => e > 0),
    expectSize,
    strict: t.strict ?? false,
  };
}

/** How an image is named in errors: the path, or the name given with the bytes, or a placeholder. */
export function refName(ref: ImageRef): string {
  if (!ref || typeof ref !== 'object') return `<not an ImageRef: ${String(ref)}>`;
  if (ref.kind === 'file') return ref.path;
  if (ref.kind === 'bytes') return ref.name ?? `<${ref.bytes.length} bytes>`;
  if (ref.kind === 'svg') return ref.name ?? `<svg ${ref.svg?.length} chars>`;
  return `<ImageRef of kind ${String((ref as { kind?: unknown }).kind)}>`;
}

function input(ref: ImageRef): string | Buffer {
  switch (ref?.kind) {
    case 'file': return ref.path;
    case 'bytes': return Buffer.from(ref.bytes.buffer, ref.bytes.byteOffset, ref.bytes.byteLength);
    case 'svg': return Buffer.from(ref.svg, 'utf8');
    default: throw new Error(`unknown ImageRef kind ${String((ref as { kind?: unknown } | null)?.kind)}`);
  }
}

/**
 * Decode into `out` at element `offset` (3 * size * size floats, planar RGB, normalised). The cache writes
 * straight into its big array this way; decodeImage wraps it.
 */
export async function decodeInto(ref: ImageRef, t: ResolvedTransform, out: Float32Array, offset: number, label?: string): Promise<void> {
  const name = label ? `${label} (${refName(ref)})` : refName(ref);
  const { size, fit, background: bg, mean, std } = t;
  let raw: Buffer;
  try {
    const img = sharp()(input(ref), { failOn: 'error', limitInputPixels: 1 << 26 });
    if (t.expectSize || t.strict) {
      const m = await img.metadata();
      if (t.expectSize && (m.width !== t.expectSize[0] || m.height !== t.expectSize[1])) {
        throw new Error(`wrong size ${m.width}x${m.height}, expected ${t.expectSize[0]}x${t.expectSize[1]}`);
      }
      if (t.strict && (m.space !== 'srgb' || m.depth !== 'uchar' || (m.channels !== 3 && m.channels !== 4))) {
        throw new Error(`wrong mode ${m.space} ${m.depth} with ${m.channels} channels, expected 8-bit sRGB (strict)`);
      }
    }
    const background = { r: bg[0], g: bg[1], b: bg[2], alpha: 1 };
    const r = await img
      .flatten({ background })
      .resize(size, size, { fit, background, kernel: 'lanczos3' })
      .toColourspace('srgb')
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (r.info.width !== size || r.info.height !== size || r.info.channels !== 3 || r.data.length !== size * size * 3) {
      throw new Error(`sharp returned ${r.info.width}x${r.info.height}x${r.info.channels}, expected ${size}x${size}x3`);
    }
    raw = r.data;
  } catch (e) {
    throw new Error(`decodeImage: ${name}: ${(e as Error).message}`);
  }
  // Interleaved u8 RGB -> planar f32, (px / 255 - mean) / std folded into one multiply-add per element.
  const hw = size * size;
  for (let c = 0; c < 3; c++) {
    const a = 1 / (255 * std[c]), b = -mean[c] / std[c];
    const base = offset + c * hw;
    for (let i = 0; i < hw; i++) out[base + i] = raw[i * 3 + c] * a + b;
  }
}

/** Decode one image to f32 [3, size, size]; an Error naming the file (or `label`) on any bad input. */
export async function decodeImage(ref: ImageRef, t: ImageTransform, label?: string): Promise<Float32Array> {
  const rt = resolveTransform(t);
  const out = new Float32Array(3 * rt.size * rt.size);
  await decodeInto(ref, rt, out, 0, label);
  return out;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/;

/**
 * Strict base64 -> bytes (Buffer.from silently drops characters it does not know, which would turn a damaged
 * string into a damaged image with a confusing error). Accepts an optional `data:...;base64,` prefix, line
 * breaks, and the URL-safe alphabet.
 */
export function base64ToBytes(b64: string, name = '<base64>'): Buffer {
  if (typeof b64 !== 'string') throw new Error(`${name}: invalid base64: expected a string, got ${typeof b64}`);
  let s = b64.trim();
  const m = /^data:[^,]*;base64,/.exec(s);
  if (m) s = s.slice(m[0].length);
  s = s.replace(/\s+/g, '');
  if (s.length === 0) throw new Error(`${name}: invalid base64: empty string`);
  const urlSafe = !BASE64.test(s);
  if (urlSafe && !BASE64URL.test(s)) {
    const bad = /[^A-Za-z0-9+/=_-]/.exec(s);
    throw new Error(`${name}: invalid base64: character ${JSON.stringify(bad ? bad[0] : '=')} at ${bad ? bad.index : s.indexOf('=')}`);
  }
  if (s.length % 4 === 1) throw new Error(`${name}: invalid base64: length ${s.length} cannot be base64 (truncated?)`);
  if (s.includes('=') && s.length % 4 !== 0) throw new Error(`${name}: invalid base64: padded string of length ${s.length}`);
  return Buffer.from(s, urlSafe ? 'base64url' : 'base64');
}

/** decodeImage for a base64 string (a JSON-lines `input_image`): invalid base64 is an Error naming `name`. */
export async function decodeBase64Image(b64: string, t: ImageTransform, name = '<base64>'): Promise<Float32Array> {
  const bytes = base64ToBytes(b64, `decodeBase64Image: ${name}`);
  return decodeImage({ kind: 'bytes', bytes, name }, t);
}

/**
 * f32 [3, H, W] (normalised with t's mean/std) -> PNG bytes: denormalise, clamp to 0..255, interleave. For
 * showing inputs and augmentations in notebooks (tslab.display.png) and reports. H = W = t.size unless `shape`.
 */
export async function encodePng(x: Float32Array, t: ImageTransform, shape?: readonly [number, number, number]): Promise<Buffer> {
  const rt = resolveTransform(t);
  const [c, h, w] = shape ?? [3, rt.size, rt.size];
  if (c !== 3 || x.length !== c * h * w) {
    throw new Error(`encodePng: expected f32 [3, ${h}, ${w}] (${3 * h * w} values), got ${x.length} values with shape ${JSON.stringify(shape ?? null)}`);
  }
  const hw = h * w;
  const px = Buffer.allocUnsafe(hw * 3);
  for (let ch = 0; ch < 3; ch++) {
    const s = rt.std[ch] * 255, m = rt.mean[ch] * 255;
    for (let i = 0; i < hw; i++) {
      const v = Math.round(x[ch * hw + i] * s + m);
      px[i * 3 + ch] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return sharp()(px, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
}

// ------------------------------------------------------------------------------------------ augmentation

export interface AugmentOptions {
  /** Same seed, same input: same output. A per-image stream is derived from (seed, image index). */
  seed: number;
  /** Area of the crop as a fraction of the image, [min, max]; default [0.6, 1]. [1, 1] disables cropping. */
  cropScale?: readonly [number, number];
  /** Aspect ratio (w / h) range of the crop, sampled log-uniformly; default [3/4, 4/3]. */
  ratio?: readonly [number, number];
  /** Colour jitter strengths as in torchvision ColorJitter: each factor is drawn from [1 - s, 1 + s]. */
  jitter?: { brightness?: number; contrast?: number; saturation?: number };
  /** The normalisation the batch was made with (needed to jitter in pixel space); defaults: CLIP's. */
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
  /** Write here instead of allocating (same length as x; must not be x itself). */
  out?: Float32Array;
}

/** splitmix32-style integer hash: one well-mixed 32-bit state per (seed, image). */
function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** mulberry32: small, fast, good enough for augmentation draws. Uniform in [0, 1). */
function rng(state: number): () => number {
  let a = state | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Scratch for the bilinear taps, grown on demand and reused across calls (one set per thread).
let tapX0 = new Int32Array(0), tapX1 = new Int32Array(0), tapFx = new Float32Array(0);
let tapY0 = new Int32Array(0), tapY1 = new Int32Array(0), tapFy = new Float32Array(0);
function scratch(w: number, h: number): void {
  if (tapX0.length < w) { tapX0 = new Int32Array(w); tapX1 = new Int32Array(w); tapFx = new Float32Array(w); }
  if (tapY0.length < h) { tapY0 = new Int32Array(h); tapY1 = new Int32Array(h); tapFy = new Float32Array(h); }
}

/** Bilinear taps for sampling `n` output pixels from the source span [o, o + len) of a side of `size` pixels. */
function taps(i0: Int32Array, i1: Int32Array, f: Float32Array, n: number, o: number, len: number, size: number): void {
  const step = len / n;
  for (let i = 0; i < n; i++) {
    // Pixel centres: output i covers [o + i*step, o + (i+1)*step); sample its centre (align_corners=False).
    let s = o + (i + 0.5) * step - 0.5;
    if (s < 0) s = 0;
    if (s > size - 1) s = size - 1;
    const lo = Math.floor(s);
    i0[i] = lo;
    i1[i] = lo + 1 < size ? lo + 1 : lo;
    f[i] = s - lo;
  }
}

/**
 * Resample one [3, h, w] image at element `img` of x into the same place in out, with precomputed taps
 * (bilinear, align_corners=False).
 */
function bilinear(x: Float32Array, out: Float32Array, img: number, hw: number, w: number, h: number,
  X0: Int32Array, X1: Int32Array, FX: Float32Array, Y0: Int32Array, Y1: Int32Array, FY: Float32Array): void {
  for (let p = 0; p < 3; p++) {
    const src = img + p * hw;
    for (let oy = 0; oy < h; oy++) {
      const r0 = src + Y0[oy] * w, r1 = src + Y1[oy] * w, fy = FY[oy], gy = 1 - fy;
      const o = src + oy * w;
      for (let ox = 0; ox < w; ox++) {
        const x0 = X0[ox], x1 = X1[ox], fx = FX[ox], gx = 1 - fx;
        const top = x[r0 + x0] * gx + x[r0 + x1] * fx;
        const bot = x[r1 + x0] * gx + x[r1 + x1] * fx;
        out[o + ox] = top * gy + bot * fy;
      }
    }
  }
}

/**
 * Random resized crop (back to H x W, bilinear) then colour jitter (brightness, contrast, saturation, in that
 * order, clamped to [0, 1] in pixel space), per image of an f32 [N, 3, H, W] batch normalised with mean/std.
 * No flips: a mirrored emoji or glyph is a different thing. Crop sampling follows torchvision
 * RandomResizedCrop (10 tries, then the whole image with the ratio clamped). Deterministic in (seed, index).
 */
export function augment(x: Float32Array, shape: readonly [number, number, number, number], opts: AugmentOptions): Float32Array {
  const [n, c, h, w] = shape;
  if (c !== 3 || !(n >= 0 && h >= 1 && w >= 1) || x.length !== n * c * h * w) {
    throw new Error(`augment: expected x of shape [N, 3, H, W] = ${JSON.stringify(shape)} (${n * c * h * w} values), got ${x.length} values`);
  }
  if (!Number.isFinite(opts.seed)) throw new Error(`augment: seed must be a finite number, got ${opts.seed}`);
  const [smin, smax] = opts.cropScale ?? [0.6, 1];
  if (!(smin > 0 && smin <= smax && smax <= 1)) throw new Error(`augment: cropScale must satisfy 0 < min <= max <= 1, got [${smin}, ${smax}]`);
  const [rmin, rmax] = opts.ratio ?? [3 / 4, 4 / 3];
  if (!(rmin > 0 && rmin <= rmax)) throw new Error(`augment: ratio must satisfy 0 < min <= max, got [${rmin}, ${rmax}]`);
  const j = opts.jitter ?? {};
  const jb = j.brightness ?? 0, jc = j.contrast ?? 0, js = j.saturation ?? 0;
  if (![jb, jc, js].every((v) => v >= 0 && v <= 1)) throw new Error(`augment: jitter strengths must be in [0, 1], got ${JSON.stringify(j)}`);
  const mean = opts.mean ?? CLIP_MEAN, std = opts.std ?? CLIP_STD;
  const out = opts.out ?? new Float32Array(x.length);
  if (out.length !== x.length) throw new Error(`augment: out has ${out.length} values, expected ${x.length}`);
  if (out === x) throw new Error('augment: out must not be the input array');

  const hw = h * w, area = h * w;
  const m0 = mean[0], m1 = mean[1], m2 = mean[2], s0 = std[0], s1 = std[1], s2 = std[2];
  const is0 = 1 / s0, is1 = 1 / s1, is2 = 1 / s2;
  const logR0 = Math.log(rmin), logR1 = Math.log(rmax);
  const jitter = jb > 0 || jc > 0 || js > 0;
  scratch(w, h);
  // Locals, not the module's `let` bindings, inside the hot loops.
  const X0 = tapX0, X1 = tapX1, FX = tapFx, Y0 = tapY0, Y1 = tapY1, FY = tapFy;
  const seed = mix32(Math.trunc(opts.seed) ^ Math.trunc(opts.seed / 4294967296));
  for (let k = 0; k < n; k++) {
    const rand = rng(mix32(seed ^ Math.imul(k + 1, 0x27d4eb2d)));
    // --- crop box (torchvision RandomResizedCrop.get_params)
    let cw = w, ch = h, cx = 0, cy = 0, found = false;
    if (!(smin === 1 && smax === 1 && rmin <= w / h && w / h <= rmax)) {
      for (let tries = 0; tries < 10 && !found; tries++) {
        const target = area * (smin + (smax - smin) * rand());
        const ar = Math.exp(logR0 + (logR1 - logR0) * rand());
        const tw = Math.round(Math.sqrt(target * ar)), th = Math.round(Math.sqrt(target / ar));
        if (tw > 0 && th > 0 && tw <= w && th <= h) {
          cw = tw; ch = th;
          cx = Math.floor(rand() * (w - tw + 1)); cy = Math.floor(rand() * (h - th + 1));
          found = true;
        }
      }
      if (!found) {
        const inRatio = w / h;
        if (inRatio < rmin) { cw = w; ch = Math.round(w / rmin); } else if (inRatio > rmax) { ch = h; cw = Math.round(h * rmax); } else { cw = w; ch = h; }
        cx = (w - cw) >> 1; cy = (h - ch) >> 1;
      }
    }
    // Draw the jitter factors even when unused, so the crop stream does not depend on jitter settings.
    const fb = 1 + jb * (2 * rand() - 1), fc = 1 + jc * (2 * rand() - 1), fs = 1 + js * (2 * rand() - 1);
    const img = k * 3 * hw;
    if (cw === w && ch === h) {
      out.set(x.subarray(img, img + 3 * hw), img); // the whole image: resampling would be the identity
    } else {
      taps(X0, X1, FX, w, cx, cw, w);
      taps(Y0, Y1, FY, h, cy, ch, h);
      bilinear(x, out, img, hw, w, h, X0, X1, FX, Y0, Y1, FY);
    }
    if (!jitter) continue;
    // --- colour jitter in [0, 1] pixel space (torchvision's adjust_brightness / _contrast / _saturation)
    const r = img, g = img + hw, b = img + 2 * hw;
    let graySum = 0;
    for (let i = 0; i < hw; i++) {
      let vr = (out[r + i] * s0 + m0) * fb, vg = (out[g + i] * s1 + m1) * fb, vb = (out[b + i] * s2 + m2) * fb;
      vr = vr < 0 ? 0 : vr > 1 ? 1 : vr; vg = vg < 0 ? 0 : vg > 1 ? 1 : vg; vb = vb < 0 ? 0 : vb > 1 ? 1 : vb;
      out[r + i] = vr; out[g + i] = vg; out[b + i] = vb;
      graySum += 0.299 * vr + 0.587 * vg + 0.114 * vb; // ITU-R 601 luma, as torchvision rgb_to_grayscale
    }
    const cshift = (1 - fc) * (graySum / hw), fs1 = 1 - fs;
    for (let i = 0; i < hw; i++) {
      let vr = fc * out[r + i] + cshift, vg = fc * out[g + i] + cshift, vb = fc * out[b + i] + cshift;
      vr = vr < 0 ? 0 : vr > 1 ? 1 : vr; vg = vg < 0 ? 0 : vg > 1 ? 1 : vg; vb = vb < 0 ? 0 : vb > 1 ? 1 : vb;
      const gray = fs1 * (0.299 * vr + 0.587 * vg + 0.114 * vb);
      vr = fs * vr + gray; vg = fs * vg + gray; vb = fs * vb + gray;
      vr = vr < 0 ? 0 : vr > 1 ? 1 : vr; vg = vg < 0 ? 0 : vg > 1 ? 1 : vg; vb = vb < 0 ? 0 : vb > 1 ? 1 : vb;
      out[r + i] = (vr - m0) * is0; out[g + i] = (vg - m1) * is1; out[b + i] = (vb - m2) * is2;
    }
  }
  return out;
}
