/**
 * A pool of worker_threads that run one batch function: `require(task.module)[task.fn](indices, ctx, init)`.
 * The DataLoader drives it; it is exported for tools that want the same thing without a loader.
 *
 * - `init` is sent once per worker (structured clone: SharedArrayBuffer-backed arrays are shared, not copied).
 * - Results come back with their ArrayBuffers transferred (no copy) when they own a whole buffer.
 * - An error thrown by the task reaches the caller as an Error carrying the worker's message and stack.
 * - A worker is ref'ed only while it has work, so an idle pool never keeps the process alive.
 * - Workers must not load the native addon: the task module and what it requires stay pure JavaScript; tensors
 *   are made on the main thread from the transferred arrays (the loader's `finish`).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';

/** Where a batch sits in the stream. `seed` is the loader's seed; derive per-sample seeds with hashSeed(seed, step, ...). */
export interface BatchContext {
  epoch: number;
  /** The global step: batches counted from the start of epoch 0. */
  step: number;
  /** The batch's position within its epoch. */
  batchInEpoch: number;
  seed: number;
}

/**
 * A batch function that runs in worker threads: the exported function `fn` of the CommonJS module at the absolute
 * path `module`, called as fn(indices, ctx, init). `R` is what it returns (a phantom type, for the loader's typing).
 */
export interface WorkerTask<R = unknown> {
  module: string;
  fn: string;
  /** Structured-cloneable data given to every call (SharedArrayBuffer-backed arrays are shared, not copied). */
  init?: unknown;
  /** Never set: carries the result type. */
  readonly __result?: R;
}

/** The signature a worker task's function implements. */
export type WorkerFn<I, R> = (indices: Int32Array, ctx: BatchContext, init: I) => R | Promise<R>;

export function isWorkerTask(x: unknown): x is WorkerTask {
  return typeof x === 'object' && x !== null && typeof (x as WorkerTask).module === 'string' && typeof (x as WorkerTask).fn === 'string';
}

/** What a batch function returned and how long it ran (milliseconds, measured where it ran). */
export interface Produced<R> {
  result: R;
  ms: number;
}

/** The serialised form of an error crossing the thread boundary. */
export interface WireError {
  name: string;
  message: string;
  stack?: string;
}

/** Messages the worker entry sends. */
export type FromWorker =
  | { type: 'ready' }
  | { type: 'init-error'; error: WireError }
  | { type: 'done'; id: number; result: unknown; ms: number }
  | { type: 'error'; id: number; error: WireError };

/** Messages the pool sends. */
export type ToWorker = { type: 'job'; id: number; indices: Int32Array; ctx: BatchContext };

/** The compiled worker entry, a .js beside this module (dist/ and .test-build/ alike). */
export function workerEntryPath(): string {
  const p = path.join(__dirname, 'worker-entry.js');
  if (!fs.existsSync(p)) {
    throw new Error(`DataLoader: worker entry not found at ${p}; worker threads need the compiled JavaScript (dist/ or .test-build/), not the .ts sources`);
  }
  return p;
}

/** Checks the task's module exists and is absolute, so a typo fails at construction with the path in the message. */
export function checkTask(task: WorkerTask, who: string): void {
  if (!path.isAbsolute(task.module)) throw new Error(`${who}: task.module must be an absolute path, got '${task.module}'`);
  if (!fs.existsSync(task.module)) throw new Error(`${who}: task.module '${task.module}' does not exist`);
  if (!/^[A-Za-z_$][\w$]*$/.test(task.fn)) throw new Error(`${who}: task.fn must be an export name, got '${task.fn}'`);
}

/** Runs the task's function in this thread (the loader's workers: 0), loading the module the same way a worker does. */
export function loadTaskFn(task: WorkerTask, who: string): WorkerFn<unknown, unknown> {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require(task.module) as Record<string, unknown>;
  const fn = mod[task.fn];
  if (typeof fn !== 'function') {
    throw new Error(`${who}: '${task.module}' has no exported function '${task.fn}' (exports: ${Object.keys(mod).join(', ') || 'none'})`);
  }
  return fn as WorkerFn<unknown, unknown>;
}

/** An Error for the main thread that keeps the worker's message and, below the main-thread frames, its stack. */
export function errorFromWorker(e: WireError, where: string): Error {
  const err = new Error(`${where}: ${e.message}`);
  err.name = e.name || 'Error';
  if (e.stack) err.stack = `${err.name}: ${err.message}\n    --- in the worker ---\n${e.stack}`;
  return err;
}

interface Job {
  id: number;
  indices: Int32Array;
  ctx: BatchContext;
  resolve: (p: Produced<unknown>) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  /** Jobs posted to this worker and not answered yet, oldest first. */
  jobs: Job[];
  alive: boolean;
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private failure: Error | null = null;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readyPromise: Promise<void>;
  private exited = 0;

  /**
   * @param size worker threads
   * @param perWorker jobs a worker may hold at once (the loader passes its prefetch depth)
   */
  constructor(private readonly task: WorkerTask, readonly size: number, readonly perWorker = 1) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`WorkerPool: size must be a positive integer, got ${size}`);
    if (!Number.isInteger(perWorker) || perWorker < 1) throw new Error(`WorkerPool: perWorker must be a positive integer, got ${perWorker}`);
    checkTask(task, 'WorkerPool');
    const entry = workerEntryPath();
    const readies: Promise<void>[] = [];
    for (let w = 0; w < size; w++) {
      let worker: Worker;
      try {
        worker = new Worker(entry, { workerData: { module: task.module, fn: task.fn, init: task.init } });
      } catch (e) {
        for (const s of this.slots) void s.worker.terminate();
        const why = e instanceof Error ? e.message : String(e);
        throw new Error(`${this.describe()}: could not start worker ${w}: ${why}${/clone/i.test(why) ? ' (task.init must be structured-cloneable: no functions or class instances with private state)' : ''}`);
      }
      const slot: Slot = { worker, ready: false, jobs: [], alive: true };
      this.slots.push(slot);
      readies.push(new Promise<void>((resolve, reject) => {
        worker.on('message', (m: FromWorker) => this.onMessage(slot, m, resolve, reject));
        worker.on('error', (e: Error) => {
          const err = errorFromWorker({ name: e.name, message: e.message, stack: e.stack }, `${this.describe()} worker ${w} crashed`);
          reject(err);
          this.fail(err);
        });
        worker.on('exit', (code) => {
          slot.alive = false;
          this.exited++;
          if (!this.closed) {
            const err = new Error(`${this.describe()} worker ${w} exited with code ${code}`);
            reject(err);
            this.fail(err);
          }
        });
      }));
    }
    this.readyPromise = Promise.all(readies).then(() => undefined);
    this.readyPromise.catch(() => undefined);
  }

  /** Resolves when every worker has loaded the task module; rejects with the load error. */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  /** Workers whose thread is still running. */
  get liveWorkers(): number {
    return this.size - this.exited;
  }

  run(indices: Int32Array, ctx: BatchContext): { promise: Promise<Produced<unknown>>; cancel: () => void } {
    let job!: Job;
    const promise = new Promise<Produced<unknown>>((resolve, reject) => {
      job = { id: this.nextId++, indices, ctx, resolve, reject };
    });
    if (this.failure) job.reject(this.failure);
    else if (this.closed) job.reject(new Error(`${this.describe()}: the pool is closed`));
    else {
      this.queue.push(job);
      this.dispatch();
    }
    const cancel = (): void => {
      const i = this.queue.indexOf(job);
      if (i >= 0) {
        this.queue.splice(i, 1);
        job.reject(new Error('cancelled'));
      }
    };
    return { promise, cancel };
  }

  /** Terminates every worker; pending and queued jobs reject. Safe to call twice. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      const err = new Error(`${this.describe()}: the pool was closed`);
      for (const j of this.queue.splice(0)) j.reject(err);
      for (const s of this.slots) for (const j of s.jobs.splice(0)) j.reject(err);
      // Ref'ed while terminating: an unref'ed worker would let the process exit before terminate() settles.
      this.closing = Promise.all(this.slots.map((s) => {
        s.worker.ref();
        return s.worker.terminate().catch(() => undefined);
      })).then(() => undefined);
    }
    return this.closing;
  }

  private describe(): string {
    return `worker task ${this.task.fn} (${this.task.module})`;
  }

  private onMessage(slot: Slot, m: FromWorker, resolve: () => void, reject: (e: Error) => void): void {
    switch (m.type) {
      case 'ready':
        slot.ready = true;
        resolve();
        this.dispatch();
        return;
      case 'init-error': {
        const err = errorFromWorker(m.error, `${this.describe()} could not start`);
        reject(err);
        this.fail(err);
        return;
      }
      case 'done':
      case 'error': {
        const at = slot.jobs.findIndex((j) => j.id === m.id);
        const job = at >= 0 ? slot.jobs.splice(at, 1)[0] : null;
        if (job) {
          if (m.type === 'done') job.resolve({ result: m.result, ms: m.ms });
          else job.reject(errorFromWorker(m.error, `${this.describe()} failed at epoch ${job.ctx.epoch} step ${job.ctx.step}`));
        }
        this.dispatch();
      }
    }
  }

  /**
   * Gives queued jobs to workers, up to `perWorker` each, least loaded first. Posting several jobs to a worker lets
   * it go on working while the main thread runs a long synchronous step (its 'done' messages wait for the event
   * loop, so a worker holding one job at a time would sit idle). A worker is ref'ed exactly while it holds jobs.
   */
  private dispatch(): void {
    // Once closing, leave the refs alone: close() holds every worker ref'ed until it has exited.
    if (this.closed) return;
    while (this.queue.length) {
      let best: Slot | null = null;
      for (const s of this.slots) {
        if (s.ready && s.alive && s.jobs.length < this.perWorker && (!best || s.jobs.length < best.jobs.length)) best = s;
      }
      if (!best) break;
      const job = this.queue.shift()!;
      best.jobs.push(job);
      best.worker.postMessage({ type: 'job', id: job.id, indices: job.indices, ctx: job.ctx } satisfies ToWorker);
    }
    for (const s of this.slots) {
      if (!s.alive) continue;
      // Before 'ready' the worker stays ref'ed: someone awaiting ready() must not see the process exit under it.
      if (s.jobs.length || !s.ready) s.worker.ref();
      else s.worker.unref();
    }
  }

  private fail(err: Error): void {
    if (this.failure || this.closed) return;
    this.failure = err;
    for (const j of this.queue.splice(0)) j.reject(err);
    for (const s of this.slots) for (const j of s.jobs.splice(0)) j.reject(err);
    // A broken pool holds nothing worth keeping alive.
    void this.close();
  }
}
