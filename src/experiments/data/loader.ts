/**
 * DataLoader: turns a sampler's epochs into a stream of batches made ahead of the consumer (prefetch), on the main
 * thread or in a pool of worker_threads, so that a training step does not wait on data.
 *
 *   const task = imageTextBatchTask({ images, imageShape: [N, 3, 32, 32], tokens, tokenShape: [N, 16], augment: { cropScale: [0.6, 1] } });
 *   const loader = new DataLoader({ length: N, batchSize: 128, seed: 0, workers: 2, makeBatch: task,
 *     finish: (b) => ({ x: ml.tensor(b.images, b.imageShape), ids: ml.tensor(b.tokens!, b.tokenShape!, { dtype: 'i32' }) }) });
 *   for await (const batch of loader.batches(startStep)) { ...; if (done) break; }
 *   loader.stats().meanWaitMs;   // what the consumer waited on data per batch
 *   await loader.close();
 *
 * Determinism: batch `step` is a pure function of (sampler, batchSize, dropLast, seed, step): its indices come from
 * sampler.indices(epoch) cut at batchInEpoch, and anything random inside the batch function takes its seed from
 * ctx (seed, step, ...). So the stream is the same for any worker count, and `batches(k)` equals the tail of
 * `batches(0)` from step k (what `--resume` needs).
 */
import * as path from 'path';
import { performance } from 'perf_hooks';
import { batchCount, KeepFilter, RandomSampler, Sampler, SequentialSampler } from './samplers';
import { BatchContext, checkTask, isWorkerTask, loadTaskFn, Produced, WorkerFn, WorkerPool, WorkerTask } from './workers';
import type { ImageTextAugment, ImageTextBatch, ImageTextInit } from './image-text-task';

export type { BatchContext, WorkerTask } from './workers';
export type { ImageTextAugment, ImageTextBatch } from './image-text-task';

/** A batch function that runs on the main thread (it may be async, e.g. decode with sharp). */
export type MainBatchFn<R> = (indices: Int32Array, ctx: BatchContext) => R | Promise<R>;

export interface DataLoaderOptions<R, B> {
  /** Dataset size: the loader builds a RandomSampler (or SequentialSampler when shuffle is false). */
  length?: number;
  /** Instead of length: any sampler (weighted, modalityBalanced, longTail...). */
  sampler?: Sampler;
  /** With `length`: shuffle each epoch (default true). */
  shuffle?: boolean;
  /** With `length`: only these dataset indices (e.g. filterByScore(...).keptIndices). */
  filter?: KeepFilter;
  batchSize: number;
  /** Drop the last partial batch of each epoch (default false). */
  dropLast?: boolean;
  /** Seeds the shuffle (with `length`) and goes to every batch function as ctx.seed (default 0). */
  seed?: number;
  /** Worker threads for a WorkerTask (default 0: run it on the main thread). Ignored for a main-thread function. */
  workers?: number;
  /** Batches requested ahead of the consumer, per worker (default 2; total in flight = prefetch * max(1, workers)). */
  prefetch?: number;
  /** A main-thread function, or a task run in workers (see WorkerTask). */
  makeBatch: MainBatchFn<R> | WorkerTask<R>;
  /** Runs on the main thread on each batch just before it is yielded (e.g. make tensors from the arrays). */
  finish?: (raw: R, ctx: BatchContext) => B;
}

export interface LoaderStats {
  /** Batches handed to the consumer. */
  batches: number;
  /**
   * Milliseconds the consumer spent waiting for batches (from asking for one to receiving it: main-thread batch
   * functions, waiting for a worker, finish), in total, per batch, at most, and for the first one.
   */
  waitMs: number;
  meanWaitMs: number;
  maxWaitMs: number;
  firstWaitMs: number;
  /** The wait for the most recent batch (what a training loop logs as this step's data wait). */
  lastWaitMs: number;
  /** Milliseconds spent inside the batch function (where it ran), in total and per batch. */
  produceMs: number;
  meanProduceMs: number;
  /** Milliseconds spent in `finish` on the main thread. */
  finishMs: number;
}

interface InFlight<R> {
  ctx: BatchContext;
  promise: Promise<Produced<R>>;
  cancel: () => void;
}

export class DataLoader<R, B = R> {
  readonly sampler: Sampler;
  readonly batchSize: number;
  readonly dropLast: boolean;
  readonly seed: number;
  readonly workers: number;
  readonly prefetch: number;
  /** Batches per epoch. */
  readonly stepsPerEpoch: number;

  private readonly mainFn: MainBatchFn<R> | null;
  private readonly task: WorkerTask<R> | null;
  private taskFn: WorkerFn<unknown, unknown> | null = null;
  private readonly finishFn: ((raw: R, ctx: BatchContext) => B) | null;
  private pool: WorkerPool | null = null;
  private closed = false;
  private readonly epochCache = new Map<number, Int32Array>();
  private st = { batches: 0, waitMs: 0, maxWaitMs: 0, firstWaitMs: 0, lastWaitMs: 0, produceMs: 0, produced: 0, finishMs: 0 };

  constructor(opts: DataLoaderOptions<R, B>) {
    const who = 'DataLoader';
    if ((opts.length === undefined) === (opts.sampler === undefined)) throw new Error(`${who}: give exactly one of length and sampler`);
    if (opts.sampler && (opts.shuffle !== undefined || opts.filter !== undefined)) {
      throw new Error(`${who}: shuffle and filter go with length; a sampler takes its own filter`);
    }
    this.seed = opts.seed ?? 0;
    if (!Number.isInteger(this.seed)) throw new Error(`${who}: seed must be an integer, got ${opts.seed}`);
    this.sampler = opts.sampler ?? (opts.shuffle === false
      ? new SequentialSampler(opts.length!, { filter: opts.filter })
      : new RandomSampler(opts.length!, { seed: this.seed, filter: opts.filter }));
    this.batchSize = opts.batchSize;
    if (!Number.isInteger(this.batchSize) || this.batchSize <= 0) throw new Error(`${who}: batchSize must be a positive integer, got ${opts.batchSize}`);
    this.dropLast = opts.dropLast ?? false;
    this.stepsPerEpoch = batchCount(this.sampler.length, this.batchSize, this.dropLast);
    this.workers = opts.workers ?? 0;
    if (!Number.isInteger(this.workers) || this.workers < 0) throw new Error(`${who}: workers must be a non-negative integer, got ${opts.workers}`);
    this.prefetch = opts.prefetch ?? 2;
    if (!Number.isInteger(this.prefetch) || this.prefetch < 0) throw new Error(`${who}: prefetch must be a non-negative integer, got ${opts.prefetch}`);
    if (typeof opts.makeBatch === 'function') {
      this.mainFn = opts.makeBatch;
      this.task = null;
    } else if (isWorkerTask(opts.makeBatch)) {
      checkTask(opts.makeBatch, who);
      this.mainFn = null;
      this.task = opts.makeBatch;
    } else {
      throw new Error(`${who}: makeBatch must be a function or a worker task { module, fn, init }`);
    }
    if (opts.finish !== undefined && typeof opts.finish !== 'function') throw new Error(`${who}: finish must be a function`);
    this.finishFn = opts.finish ?? null;
  }

  /** Starts the workers (if any) and resolves when they have loaded the task; iteration does this by itself. */
  async warmup(): Promise<void> {
    this.checkOpen();
    if (this.task && this.workers > 0) await this.getPool().ready();
    else if (this.task) this.getTaskFn();
  }

  /** The batches of one epoch (global steps e * stepsPerEpoch ...). */
  epoch(e: number): AsyncGenerator<B, void, undefined> {
    if (!Number.isInteger(e) || e < 0) throw new Error(`DataLoader.epoch: epoch must be a non-negative integer, got ${e}`);
    return this.stream(e * this.stepsPerEpoch, (e + 1) * this.stepsPerEpoch);
  }

  /**
   * Every batch from global step `fromStep` on, across epochs, without end (break out of the loop). Resuming at
   * step k yields exactly what an uninterrupted stream yields from step k.
   */
  batches(fromStep = 0): AsyncGenerator<B, void, undefined> {
    if (!Number.isInteger(fromStep) || fromStep < 0) throw new Error(`DataLoader.batches: fromStep must be a non-negative integer, got ${fromStep}`);
    if (this.stepsPerEpoch === 0) {
      throw new Error(`DataLoader.batches: an epoch has no batches (${this.sampler.length} indices, batchSize ${this.batchSize}, dropLast ${this.dropLast})`);
    }
    return this.stream(fromStep, Infinity);
  }

  /** Where global step `step` falls, and the dataset indices of its batch. */
  locate(step: number): { epoch: number; batchInEpoch: number; indices: Int32Array } {
    if (this.stepsPerEpoch === 0) throw new Error('DataLoader.locate: an epoch has no batches');
    const epoch = Math.floor(step / this.stepsPerEpoch);
    const batchInEpoch = step - epoch * this.stepsPerEpoch;
    const all = this.epochIndices(epoch);
    return { epoch, batchInEpoch, indices: all.slice(batchInEpoch * this.batchSize, Math.min(all.length, (batchInEpoch + 1) * this.batchSize)) };
  }

  stats(): LoaderStats {
    const s = this.st;
    return {
      batches: s.batches,
      waitMs: s.waitMs,
      meanWaitMs: s.batches ? s.waitMs / s.batches : 0,
      maxWaitMs: s.maxWaitMs,
      firstWaitMs: s.firstWaitMs,
      lastWaitMs: s.lastWaitMs,
      produceMs: s.produceMs,
      meanProduceMs: s.produced ? s.produceMs / s.produced : 0,
      finishMs: s.finishMs,
    };
  }

  resetStats(): void {
    this.st = { batches: 0, waitMs: 0, maxWaitMs: 0, firstWaitMs: 0, lastWaitMs: 0, produceMs: 0, produced: 0, finishMs: 0 };
  }

  /** Worker threads still running (0 after close). */
  get liveWorkers(): number {
    return this.pool ? this.pool.liveWorkers : 0;
  }

  /** Terminates the workers. The loader cannot be used afterwards. Safe to call twice. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.pool) await this.pool.close();
  }

  // -------------------------------------------------------------------------------------------------------------

  private checkOpen(): void {
    if (this.closed) throw new Error('DataLoader: the loader is closed');
  }

  private getPool(): WorkerPool {
    if (!this.pool) this.pool = new WorkerPool(this.task!, this.workers, Math.max(1, this.prefetch));
    return this.pool;
  }

  private getTaskFn(): WorkerFn<unknown, unknown> {
    if (!this.taskFn) this.taskFn = loadTaskFn(this.task!, 'DataLoader');
    return this.taskFn;
  }

  private epochIndices(epoch: number): Int32Array {
    let idx = this.epochCache.get(epoch);
    if (!idx) {
      idx = this.sampler.indices(epoch);
      if (idx.length !== this.sampler.length) throw new Error(`DataLoader: sampler.indices(${epoch}) gave ${idx.length} indices, its length says ${this.sampler.length}`);
      // Prefetch spans at most two epochs; keep the two most recent.
      this.epochCache.set(epoch, idx);
      for (const k of this.epochCache.keys()) if (k < epoch - 1 || k > epoch + 1) this.epochCache.delete(k);
    }
    return idx;
  }

  /** Starts making the batch of global step `step`. */
  private start(step: number): InFlight<R> {
    const { epoch, batchInEpoch, indices } = this.locate(step);
    const ctx: BatchContext = { epoch, step, batchInEpoch, seed: this.seed };
    let promise: Promise<Produced<R>>;
    let cancel = (): void => undefined;
    if (this.task && this.workers > 0) {
      const job = this.getPool().run(indices, ctx);
      promise = job.promise as Promise<Produced<R>>;
      cancel = job.cancel;
    } else {
      const fn = (this.mainFn ?? this.getTaskFn()) as (i: Int32Array, c: BatchContext, init?: unknown) => R | Promise<R>;
      const init = this.task?.init;
      // Time a synchronous function on its own: after an await the clock would also count whatever else ran
      // before this continuation (the other batches started in the same fill).
      const t0 = performance.now();
      try {
        const r = fn(indices, ctx, init);
        if (r instanceof Promise) promise = r.then((result) => ({ result, ms: performance.now() - t0 }));
        else promise = Promise.resolve({ result: r, ms: performance.now() - t0 });
      } catch (e) {
        promise = Promise.reject(e);
      }
    }
    // The consumer may never reach this batch (break, an earlier error): mark the rejection handled now; awaiting
    // the promise later still throws.
    promise.catch(() => undefined);
    return { ctx, promise, cancel };
  }

  private async *stream(from: number, to: number): AsyncGenerator<B, void, undefined> {
    this.checkOpen();
    const ahead = this.prefetch * Math.max(1, this.task ? this.workers : 0);
    const inflight: InFlight<R>[] = [];
    let next = from;
    const fill = (n: number): void => {
      while (inflight.length < n && next < to) inflight.push(this.start(next++));
    };
    let failed = false;
    try {
      while (next < to || inflight.length) {
        // The consumer's wait is everything from here to the yield: batch functions run on this thread, the wait
        // for a worker, and finish.
        const t0 = performance.now();
        fill(Math.max(1, ahead));
        const head = inflight.shift()!;
        const produced = await head.promise;
        // Keep the workers busy while the consumer runs its step.
        fill(ahead);
        const s = this.st;
        s.produceMs += produced.ms;
        s.produced++;
        let batch: B;
        if (this.finishFn) {
          const f0 = performance.now();
          batch = this.finishFn(produced.result, head.ctx);
          s.finishMs += performance.now() - f0;
        } else {
          batch = produced.result as unknown as B;
        }
        const waited = performance.now() - t0;
        if (s.batches === 0) s.firstWaitMs = waited;
        s.batches++;
        s.waitMs += waited;
        s.lastWaitMs = waited;
        s.maxWaitMs = Math.max(s.maxWaitMs, waited);
        yield batch;
      }
    } catch (e) {
      failed = true;
      throw e;
    } finally {
      for (const f of inflight) f.cancel();
      // An error closes the loader, so that no worker outlives a failed run.
      if (failed) await this.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The ready-made image-text task

export interface ImageTextTaskOptions {
  /** [N, C, H, W] f32 images, e.g. the cached split from cache.ts (`shared: true` gives a SharedArrayBuffer). */
  images: Float32Array;
  imageShape: [number, number, number, number];
  /** [N, T] pre-tokenized rows (padded). */
  tokens?: Int32Array;
  tokenShape?: [number, number];
  /** Options for image.ts `augment` (seed derived per image from (seed, step, row)); false or absent: none. */
  augment?: ImageTextAugment | false;
}

/** Copies an array into a SharedArrayBuffer (returns it unchanged when it already is one). */
export function shareArray<T extends Float32Array | Int32Array>(a: T): T {
  if (a.buffer instanceof SharedArrayBuffer) return a;
  const Ctor = a.constructor as { new (b: SharedArrayBuffer): T };
  const out = new Ctor(new SharedArrayBuffer(a.byteLength));
  out.set(a as never);
  return out;
}

/**
 * A worker task that gathers the rows of a batch from a shared image array and a shared token array, augments the
 * images, and returns { images [B,C,H,W], tokens [B,T], indices }. Arrays not already in a SharedArrayBuffer are
 * copied into one once here, so that every worker reads the same memory instead of its own clone.
 */
export function imageTextBatchTask(opts: ImageTextTaskOptions): WorkerTask<ImageTextBatch> {
  const who = 'imageTextBatchTask';
  const shape = opts.imageShape;
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(`${who}: imageShape must be [N, C, H, W] of positive integers, got ${JSON.stringify(shape)}`);
  }
  if (!(opts.images instanceof Float32Array)) throw new Error(`${who}: images must be a Float32Array`);
  const size = shape[0] * shape[1] * shape[2] * shape[3];
  if (opts.images.length !== size) throw new Error(`${who}: images has ${opts.images.length} values, imageShape ${JSON.stringify(shape)} needs ${size}`);
  let tokens: Int32Array | null = null;
  let tokenShape: [number, number] | null = null;
  if (opts.tokens !== undefined || opts.tokenShape !== undefined) {
    const ts = opts.tokenShape;
    if (!(opts.tokens instanceof Int32Array)) throw new Error(`${who}: tokens must be an Int32Array (with tokenShape)`);
    if (!Array.isArray(ts) || ts.length !== 2 || ts[0] !== shape[0] || !(Number.isInteger(ts[1]) && ts[1] > 0)) {
      throw new Error(`${who}: tokenShape must be [N, T] with N = ${shape[0]} images, got ${JSON.stringify(ts)}`);
    }
    if (opts.tokens.length !== ts[0] * ts[1]) throw new Error(`${who}: tokens has ${opts.tokens.length} values, tokenShape ${JSON.stringify(ts)} needs ${ts[0] * ts[1]}`);
    tokens = shareArray(opts.tokens);
    tokenShape = [ts[0], ts[1]];
  }
  const init: ImageTextInit = {
    images: shareArray(opts.images),
    imageShape: [shape[0], shape[1], shape[2], shape[3]],
    tokens,
    tokenShape,
    augment: opts.augment ? { ...opts.augment } : false,
  };
  return { module: path.join(__dirname, 'image-text-task.js'), fn: 'gatherImageText', init };
}
