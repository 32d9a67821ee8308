import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { DataLoader, imageTextBatchTask, shareArray } from './loader';
import { hashSeed, modalityBalanced } from './samplers';
import type { BatchContext } from './workers';
import { augment } from './image';
import { augmentSeed } from './image-text-task';

// Worker task modules for the tests, written as plain JavaScript to a temporary directory (a worker needs a real
// .js file; keeping these out of src/ keeps them out of dist/).
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loader-test-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const tasks = path.join(dir, 'tasks.js');
fs.writeFileSync(tasks, `'use strict';
function sleep(ms) { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms); }
// A value that depends only on (seed, step, row, index): what a seeded augmentation would depend on.
function tag(ctx, k, i) { return ((ctx.seed * 7919 + ctx.step * 104729 + k * 31 + i) >>> 0) % 100003; }
exports.echo = (indices, ctx, init) => {
  const v = new Float32Array(indices.length);
  for (let k = 0; k < indices.length; k++) v[k] = tag(ctx, k, indices[k]) * init.scale;
  return { indices: Int32Array.from(indices), v, epoch: ctx.epoch, step: ctx.step, batchInEpoch: ctx.batchInEpoch };
};
exports.slow = (indices, ctx, init) => { sleep(init.ms); return { indices: Int32Array.from(indices) }; };
exports.failAt = function failingBatchFunction(indices, ctx, init) {
  if (ctx.step === init.step) throw new TypeError('bad record ' + indices[0] + ' at step ' + ctx.step);
  return { indices: Int32Array.from(indices) };
};
exports.exitNow = (indices, ctx) => { if (ctx.step === 2) process.exit(3); return { indices: Int32Array.from(indices) }; };
exports.notAFunction = 1;
`);
const brokenModule = path.join(dir, 'broken.js');
fs.writeFileSync(brokenModule, `throw new Error('cannot load this task module');\n`);

interface Echo { indices: Int32Array; v: Float32Array; epoch: number; step: number; batchInEpoch: number }

async function take<T>(it: AsyncIterable<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  if (n <= 0) return out;
  for await (const x of it) {
    out.push(x);
    if (out.length === n) break;
  }
  return out;
}

const echoTask = { module: tasks, fn: 'echo', init: { scale: 2 } };

test('main-thread batch function: an epoch is a permutation cut into batches; dropLast; ctx counts steps', async () => {
  const ctxs: BatchContext[] = [];
  const loader = new DataLoader({ length: 10, batchSize: 4, seed: 1, makeBatch: (idx, ctx) => { ctxs.push(ctx); return Array.from(idx); } });
  const e1 = await take(loader.epoch(1), 100);
  assert.deepEqual(e1.map((b) => b.length), [4, 4, 2]);
  assert.deepEqual(e1.flat().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(ctxs.map((c) => [c.epoch, c.step, c.batchInEpoch, c.seed]), [[1, 3, 0, 1], [1, 4, 1, 1], [1, 5, 2, 1]]);
  const drop = new DataLoader({ length: 10, batchSize: 4, dropLast: true, seed: 1, makeBatch: (idx) => Array.from(idx) });
  assert.deepEqual((await take(drop.epoch(0), 100)).map((b) => b.length), [4, 4]);
  const seq = new DataLoader({ length: 5, batchSize: 2, shuffle: false, makeBatch: (idx) => Array.from(idx) });
  assert.deepEqual(await take(seq.epoch(3), 10), [[0, 1], [2, 3], [4]]);
});

test('batches are identical with workers 0, 1 and 2 (seeded values come from (seed, step, row), not the worker)', async () => {
  const runs: Echo[][] = [];
  for (const workers of [0, 1, 2]) {
    const loader = new DataLoader<Echo>({ length: 37, batchSize: 8, seed: 5, workers, prefetch: 3, makeBatch: echoTask });
    runs.push(await take(loader.batches(0), 12));
    await loader.close();
  }
  assert.equal(runs[0].length, 12);
  assert.ok(runs[0][0].v instanceof Float32Array && runs[0][0].indices instanceof Int32Array);
  for (const r of runs.slice(1)) assert.deepEqual(r, runs[0]);
  // 37 items in batches of 8: 5 steps per epoch, so step 5 opens epoch 1 with a new order.
  assert.deepEqual([runs[0][5].epoch, runs[0][5].batchInEpoch], [1, 0]);
  assert.notDeepEqual(runs[0][5].indices, runs[0][0].indices);
});

test('resume: batches(k) equals the tail of the uninterrupted stream from step k, across epoch boundaries', async () => {
  const sampler = modalityBalanced(Array.from({ length: 60 }, (_, i) => (i < 50 ? 'a' : 'b')), (x) => x, { a: 1, b: 1 }, { seed: 2, numSamples: 30 });
  const full = new DataLoader<Echo>({ sampler, batchSize: 7, seed: 9, workers: 2, makeBatch: echoTask });
  const all = await take(full.batches(0), 14);
  await full.close();
  for (const k of [0, 4, 5, 9]) {
    const resumed = new DataLoader<Echo>({ sampler, batchSize: 7, seed: 9, workers: k % 2, makeBatch: echoTask });
    assert.deepEqual(await take(resumed.batches(k), 14 - k), all.slice(k), `resume at step ${k}`);
    await resumed.close();
  }
  assert.equal(full.stepsPerEpoch, 5);
});

test('an error thrown in a worker task reaches the loop with its message and the worker stack; the loader closes', async () => {
  const loader = new DataLoader({ length: 40, batchSize: 4, seed: 0, workers: 2, makeBatch: { module: tasks, fn: 'failAt', init: { step: 3 } } });
  let got = 0;
  await assert.rejects(async () => { for await (const _ of loader.batches(0)) got++; }, (e: Error) => {
    assert.match(e.message, /failAt \(.*tasks\.js\) failed at epoch 0 step 3: bad record \d+ at step 3/);
    assert.equal(e.name, 'TypeError');
    assert.match(e.stack ?? '', /in the worker[\s\S]*failingBatchFunction/);
    return true;
  });
  assert.equal(got, 3);
  assert.equal(loader.liveWorkers, 0);
  await assert.rejects(loader.batches(0).next(), /the loader is closed/);
});

test('errors on the main thread, a module that fails to load, a missing export: clear messages', async () => {
  const main = new DataLoader({ length: 8, batchSize: 2, makeBatch: (_i, ctx) => { if (ctx.step === 1) throw new Error('decode failed: x.png'); return 1; } });
  await assert.rejects(take(main.batches(0), 5), /decode failed: x\.png/);
  const broken = new DataLoader({ length: 8, batchSize: 2, workers: 1, makeBatch: { module: brokenModule, fn: 'f' } });
  await assert.rejects(take(broken.batches(0), 1), /could not start: cannot load this task module/);
  assert.equal(broken.liveWorkers, 0);
  const noFn = new DataLoader({ length: 8, batchSize: 2, workers: 1, makeBatch: { module: tasks, fn: 'notAFunction' } });
  await assert.rejects(take(noFn.batches(0), 1), /has no exported function 'notAFunction'/);
  const noFnMain = new DataLoader({ length: 8, batchSize: 2, workers: 0, makeBatch: { module: tasks, fn: 'nope' } });
  await assert.rejects(take(noFnMain.batches(0), 1), /has no exported function 'nope' \(exports: echo, slow, failAt, exitNow, notAFunction\)/);
  const unclonable = new DataLoader({ length: 8, batchSize: 2, workers: 1, makeBatch: { module: tasks, fn: 'echo', init: { scale: () => 1 } } });
  await assert.rejects(take(unclonable.batches(0), 1), /could not start worker 0: .*task\.init must be structured-cloneable/);
  const dies = new DataLoader({ length: 40, batchSize: 2, workers: 2, makeBatch: { module: tasks, fn: 'exitNow' } });
  await assert.rejects(take(dies.batches(0), 10), /exitNow \(.*\) worker \d exited with code 3/);
  assert.equal(dies.liveWorkers, 0);
  assert.throws(() => new DataLoader({ length: 8, batchSize: 2, makeBatch: { module: 'rel/tasks.js', fn: 'echo' } }), /must be an absolute path/);
  assert.throws(() => new DataLoader({ length: 8, batchSize: 2, makeBatch: { module: path.join(dir, 'missing.js'), fn: 'echo' } }), /missing\.js' does not exist/);
  assert.throws(() => new DataLoader({ batchSize: 2, makeBatch: () => 1 }), /exactly one of length and sampler/);
  assert.throws(() => new DataLoader({ length: 3, batchSize: 0, makeBatch: () => 1 }), /batchSize must be a positive integer/);
});

test('close() terminates every worker; an idle loader never closed does not keep the process alive', async () => {
  const loader = new DataLoader<Echo>({ length: 20, batchSize: 5, workers: 2, makeBatch: echoTask });
  await take(loader.batches(0), 2);
  assert.equal(loader.liveWorkers, 2);
  await loader.close();
  assert.equal(loader.liveWorkers, 0);
  await loader.close();

  // In a child process: one loader left open after a break, one that failed; the process must exit by itself.
  const script = path.join(dir, 'exit-check.js');
  fs.writeFileSync(script, `'use strict';
const { DataLoader } = require(${JSON.stringify(require.resolve('./loader'))});
(async () => {
  const open = new DataLoader({ length: 64, batchSize: 8, workers: 2, prefetch: 2, makeBatch: { module: ${JSON.stringify(tasks)}, fn: 'echo', init: { scale: 1 } } });
  let n = 0;
  for await (const b of open.batches(0)) { if (++n === 3) break; }
  const failing = new DataLoader({ length: 64, batchSize: 8, workers: 2, makeBatch: { module: ${JSON.stringify(tasks)}, fn: 'failAt', init: { step: 1 } } });
  try { for await (const b of failing.batches(0)) {} } catch (e) { console.log('caught: ' + e.message.split(': ').pop()); }
  console.log('done ' + n + ' live ' + open.liveWorkers + '/' + failing.liveWorkers);
})();
`);
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 30000 });
  assert.equal(r.signal, null, `the child did not exit by itself (killed by ${r.signal}); stderr: ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /caught: bad record \d+ at step 1\ndone 3 live 2\/0/);
});

test('prefetch overlaps work with the consumer: 20 ms batches and a synchronous 20 ms step leave the consumer waiting far less than serial', async (t) => {
  const loader = new DataLoader({ length: 64, batchSize: 4, workers: 2, prefetch: 2, makeBatch: { module: tasks, fn: 'slow', init: { ms: 20 } } });
  await loader.warmup();
  let n = 0;
  // The consumer's step is synchronous, like a training step in the native addon: the event loop (and with it the
  // workers' replies) only runs while the consumer awaits the next batch.
  const stepLock = new Int32Array(new SharedArrayBuffer(4));
  for await (const _ of loader.batches(0)) {
    Atomics.wait(stepLock, 0, 0, 20);
    if (++n === 16) break;
  }
  const s = loader.stats();
  await loader.close();
  t.diagnostic(`prefetch: waited ${s.waitMs.toFixed(1)} ms (first ${s.firstWaitMs.toFixed(1)}) of ${s.produceMs.toFixed(1)} ms of batch work`);
  assert.equal(s.batches, 16);
  // Serial time is the sum of the batch function times (measured in the workers, >= 16 x 20 ms). Without overlap
  // the consumer would wait all of it; with two workers two batches ahead it waits about one batch (the first).
  assert.ok(s.produceMs >= 16 * 19, `batch time ${s.produceMs} ms`);
  assert.ok(s.waitMs < 0.5 * s.produceMs, `consumer waited ${s.waitMs.toFixed(1)} ms of ${s.produceMs.toFixed(1)} ms serial (first ${s.firstWaitMs.toFixed(1)} ms)`);
  assert.ok(Math.abs(s.meanWaitMs - s.waitMs / 16) < 1e-9);
  assert.ok(s.lastWaitMs <= s.maxWaitMs && s.firstWaitMs <= s.maxWaitMs);
});

test('imageTextBatchTask gathers the right image and token rows, the same with 0, 1 and 2 workers', async () => {
  const N = 23, C = 3, H = 4, W = 5, T = 6, per = C * H * W;
  const images = new Float32Array(N * per);
  for (let i = 0; i < images.length; i++) images[i] = Math.sin(i * 0.37);
  const tokens = new Int32Array(N * T);
  for (let i = 0; i < tokens.length; i++) tokens[i] = (i * 13) % 101;
  const task = imageTextBatchTask({ images, imageShape: [N, C, H, W], tokens, tokenShape: [N, T] });
  const runs = [];
  for (const workers of [0, 1, 2]) {
    const loader = new DataLoader({ length: N, batchSize: 8, seed: 4, workers, makeBatch: task });
    runs.push(await take(loader.batches(0), 6));
    await loader.close();
  }
  for (const r of runs.slice(1)) assert.deepEqual(r, runs[0]);
  for (const b of runs[0]) {
    const B = b.indices.length;
    assert.deepEqual(b.imageShape, [B, C, H, W]);
    assert.deepEqual(b.tokenShape, [B, T]);
    for (let k = 0; k < B; k++) {
      const i = b.indices[k];
      assert.deepEqual(b.images.subarray(k * per, (k + 1) * per), images.subarray(i * per, (i + 1) * per), `image row ${k} = item ${i}`);
      assert.deepEqual(b.tokens!.subarray(k * T, (k + 1) * T), tokens.subarray(i * T, (i + 1) * T), `token row ${k} = item ${i}`);
    }
  }
  assert.deepEqual(runs[0].slice(0, 3).map((b) => b.indices.length), [8, 8, 7]);
  assert.throws(() => imageTextBatchTask({ images, imageShape: [N, C, H, W + 1] }), /images has 1380 values, imageShape \[23,3,4,6\] needs 1656/);
  assert.throws(() => imageTextBatchTask({ images, imageShape: [N, C, H, W], tokens, tokenShape: [N + 1, T] }), /tokenShape must be \[N, T\] with N = 23/);
});

test('imageTextBatchTask with augment: same batches with 0, 1 and 2 workers, equal to augment(rows, seed(seed, step))', async () => {
  const N = 12, C = 3, H = 8, W = 8, per = C * H * W;
  const images = new Float32Array(N * per);
  for (let i = 0; i < images.length; i++) images[i] = Math.sin(i * 0.61) * 1.5;
  const opts = { cropScale: [0.5, 1] as const, jitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4 } };
  const task = imageTextBatchTask({ images, imageShape: [N, C, H, W], augment: opts });
  const runs = [];
  for (const workers of [0, 1, 2]) {
    const loader = new DataLoader({ length: N, batchSize: 5, seed: 13, workers, makeBatch: task });
    runs.push(await take(loader.batches(0), 5));
    await loader.close();
  }
  for (const r of runs.slice(1)) assert.deepEqual(r, runs[0]);
  for (const [step, b] of runs[0].entries()) {
    const B = b.indices.length;
    const rows = new Float32Array(B * per);
    for (let k = 0; k < B; k++) rows.set(images.subarray(b.indices[k] * per, (b.indices[k] + 1) * per), k * per);
    const want = augment(rows, [B, C, H, W], { ...opts, seed: augmentSeed(13, step) });
    assert.deepEqual(b.images, want, `step ${step}`);
    assert.notDeepEqual(b.images, rows, `step ${step} was augmented`);
  }
});

test('a synchronous batch function on the main thread counts as consumer wait (no overlap without workers)', async () => {
  const lock = new Int32Array(new SharedArrayBuffer(4));
  const loader = new DataLoader({ length: 12, batchSize: 2, prefetch: 2, makeBatch: (idx) => { Atomics.wait(lock, 0, 0, 3); return idx; } });
  for await (const _ of loader.epoch(0)) Atomics.wait(lock, 0, 0, 3);
  const s = loader.stats();
  assert.equal(s.batches, 6);
  assert.ok(s.produceMs >= 6 * 2.5, `batch time ${s.produceMs} ms`);
  // Each batch function runs inside some call for the next batch, so its time is inside the measured wait.
  assert.ok(s.waitMs >= s.produceMs, `wait ${s.waitMs} ms < batch time ${s.produceMs} ms`);
});

test('finish runs on the main thread on each batch; stats count batches', async () => {
  const task = imageTextBatchTask({ images: shareArray(new Float32Array(10 * 3 * 2 * 2).fill(1)), imageShape: [10, 3, 2, 2] });
  const loader = new DataLoader({
    length: 10, batchSize: 3, workers: 1, makeBatch: task,
    finish: (b, ctx) => ({ sum: b.images.reduce((a, x) => a + x, 0), rows: b.indices.length, step: ctx.step, seedTag: hashSeed(ctx.seed, ctx.step) }),
  });
  const got = await take(loader.epoch(0), 10);
  await loader.close();
  assert.deepEqual(got.map((g) => [g.sum, g.rows, g.step]), [[36, 3, 0], [36, 3, 1], [36, 3, 2], [12, 1, 3]]);
  assert.equal(loader.stats().batches, 4);
});
