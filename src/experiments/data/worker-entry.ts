/**
 * The body of every DataLoader worker thread (started by WorkerPool from the compiled worker-entry.js). It loads
 * the task module once, then answers jobs: call fn(indices, ctx, init), send the result back transferring the
 * ArrayBuffers it owns. Nothing here, and nothing a task module requires, may load the native addon.
 */
import { parentPort, workerData } from 'worker_threads';
import { performance } from 'perf_hooks';
import type { FromWorker, ToWorker, WireError, WorkerFn } from './workers';

interface Data {
  module: string;
  fn: string;
  init: unknown;
}

function wire(e: unknown): WireError {
  if (e instanceof Error) return { name: e.name, message: e.message, stack: e.stack };
  return { name: 'Error', message: `non-Error thrown: ${String(e)}` };
}

/**
 * The ArrayBuffers of typed arrays in the result that can move to the main thread without a copy: only whole,
 * non-shared buffers (a view on part of a buffer, a Node Buffer from the shared pool, a SharedArrayBuffer are
 * structured-cloned instead, which copies or shares them correctly).
 */
function transferables(x: unknown, out: Set<ArrayBuffer>, depth = 0): void {
  if (depth > 4 || x === null || typeof x !== 'object') return;
  if (ArrayBuffer.isView(x)) {
    const b = x.buffer;
    if (b instanceof ArrayBuffer && !Buffer.isBuffer(x) && x.byteOffset === 0 && x.byteLength === b.byteLength) out.add(b);
    return;
  }
  if (Array.isArray(x)) {
    for (const v of x) transferables(v, out, depth + 1);
    return;
  }
  if (Object.getPrototypeOf(x) === Object.prototype) for (const v of Object.values(x)) transferables(v, out, depth + 1);
}

const port = parentPort;
if (!port) throw new Error('worker-entry.js is the body of a DataLoader worker thread; it cannot run on its own');
const data = workerData as Data;
let fn: WorkerFn<unknown, unknown> | null = null;
try {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require(data.module) as Record<string, unknown>;
  const f = mod[data.fn];
  if (typeof f !== 'function') {
    throw new Error(`'${data.module}' has no exported function '${data.fn}' (exports: ${Object.keys(mod).join(', ') || 'none'})`);
  }
  fn = f as WorkerFn<unknown, unknown>;
  port.postMessage({ type: 'ready' } satisfies FromWorker);
} catch (e) {
  port.postMessage({ type: 'init-error', error: wire(e) } satisfies FromWorker);
}

port.on('message', async (m: ToWorker) => {
  if (m.type !== 'job' || !fn) return;
  const t0 = performance.now();
  try {
    const result = await fn(m.indices, m.ctx, data.init);
    const ms = performance.now() - t0;
    const list = new Set<ArrayBuffer>();
    transferables(result, list);
    port.postMessage({ type: 'done', id: m.id, result, ms } satisfies FromWorker, [...list]);
  } catch (e) {
    port.postMessage({ type: 'error', id: m.id, error: wire(e) } satisfies FromWorker);
  }
});
