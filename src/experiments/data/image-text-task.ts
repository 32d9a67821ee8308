/**
 * The worker side of `imageTextBatchTask` (loader.ts): gather B image rows from a shared [N,3,H,W] f32 array and
 * B token rows from a shared [N,T] i32 array, augment each image with a seed derived from (loader seed, global
 * step) and its position in the batch, and return fresh arrays the worker can transfer. Pure JavaScript: safe in worker
 * threads (./image is required lazily, only when augmentation is on).
 */
import { hashSeed } from './samplers';
import type { AugmentOptions } from './image';
import type { BatchContext } from './workers';

/**
 * Options passed through to image.ts `augment` (its AugmentOptions less seed and out: the seed comes from (loader
 * seed, step), the output is the batch array). Defaults are image.ts's: cropScale [0.6, 1], ratio [3/4, 4/3], no
 * jitter, CLIP mean/std.
 */
export type ImageTextAugment = Omit<AugmentOptions, 'seed' | 'out'>;

/** What the task's function receives as `init` (built and checked by imageTextBatchTask). */
export interface ImageTextInit {
  images: Float32Array;
  imageShape: [number, number, number, number];
  tokens: Int32Array | null;
  tokenShape: [number, number] | null;
  augment: ImageTextAugment | false;
}

/** One batch as it arrives on the main thread. */
export interface ImageTextBatch {
  /** [B, C, H, W] */
  images: Float32Array;
  imageShape: [number, number, number, number];
  /** [B, T], or null when the task has no tokens. */
  tokens: Int32Array | null;
  tokenShape: [number, number] | null;
  /** The dataset indices of the rows, in batch order. */
  indices: Int32Array;
}

type AugmentFn = (x: Float32Array, shape: readonly [number, number, number, number], opts: AugmentOptions) => Float32Array;
let augmentFn: AugmentFn | null = null;

function loadAugment(): AugmentFn {
  if (!augmentFn) {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const mod = require('./image') as { augment?: AugmentFn };
    if (typeof mod.augment !== 'function') throw new Error("imageTextBatch: './image' exports no augment function");
    augmentFn = mod.augment;
  }
  return augmentFn;
}

/** The augment seed of the batch at a global step (augment derives row k's stream from it and k). */
export function augmentSeed(seed: number, step: number): number {
  return hashSeed(seed, step);
}

let scratch = new Float32Array(0);
function scratchFor(n: number): Float32Array {
  if (scratch.length < n) scratch = new Float32Array(n);
  return scratch.subarray(0, n);
}

export function gatherImageText(indices: Int32Array, ctx: BatchContext, init: ImageTextInit): ImageTextBatch {
  const [N, C, H, W] = init.imageShape;
  const per = C * H * W;
  const B = indices.length;
  for (let k = 0; k < B; k++) {
    const i = indices[k];
    if (!(i >= 0 && i < N)) throw new Error(`imageTextBatch: index ${i} (batch row ${k}, step ${ctx.step}) is outside the ${N} images`);
  }
  let images: Float32Array = new Float32Array(B * per);
  // Without augmentation the rows go straight into the array that is returned; with it they go into a scratch
  // array kept by this thread, and augment writes the returned array.
  const gathered = init.augment ? scratchFor(B * per) : images;
  for (let k = 0; k < B; k++) gathered.set(init.images.subarray(indices[k] * per, (indices[k] + 1) * per), k * per);
  if (init.augment) {
    // image.ts derives each image's stream from (seed, row k): row k of step s is augmented the same way whichever
    // worker makes the batch.
    const out = loadAugment()(gathered, [B, C, H, W], { ...init.augment, seed: augmentSeed(ctx.seed, ctx.step), out: images });
    if (!(out instanceof Float32Array) || out.length !== B * per) {
      throw new Error(`imageTextBatch: augment returned ${out instanceof Float32Array ? `${out.length} values` : typeof out}, expected a Float32Array of ${B * per}`);
    }
    images = out;
  }
  let tokens: Int32Array | null = null;
  let tokenShape: [number, number] | null = null;
  if (init.tokens && init.tokenShape) {
    const T = init.tokenShape[1];
    tokens = new Int32Array(B * T);
    for (let k = 0; k < B; k++) tokens.set(init.tokens.subarray(indices[k] * T, (indices[k] + 1) * T), k * T);
    tokenShape = [B, T];
  }
  return { images, imageShape: [B, C, H, W], tokens, tokenShape, indices: Int32Array.from(indices) };
}
