/**
 * The runtime: loading the addon (a clear error when it cannot load), MODALAB_NUM_THREADS, backendInfo.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as ml from '../src/index';

const indexJs = path.join(__dirname, '..', 'src', 'index.js');

function runNode(code: string, env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['-e', code], { env: { ...process.env, ...env }, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('an addon that cannot load gives one error naming the path and the command that fixes it', () => {
  const r = runNode(`try { require(${JSON.stringify(indexJs)}).zeros([1]); } catch (e) { console.log(e.message); }`,
    { MODALAB_ADDON: '/nonexistent/modalab.node' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /native addon could not be loaded/);
  assert.match(r.stdout, /\/nonexistent\/modalab\.node: not found/);
  assert.match(r.stdout, /npm run build:native/);
});

test('MODALAB_NUM_THREADS sets the thread count of the native pools', () => {
  for (const n of ['1', '3']) {
    const r = runNode(`console.log(require(${JSON.stringify(indexJs)}).backendInfo().threads)`, { MODALAB_NUM_THREADS: n });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), n);
  }
});

test('backendInfo names the GEMM library and SIMD level, and whether CUDA is built and usable', () => {
  const info = ml.backendInfo();
  assert.ok(info.blas.length > 0 && info.simd.length > 0);
  assert.ok(info.threads >= 1);
  assert.equal(info.cuda, ml.cuda.isAvailable());
  assert.equal(info.cudaBuild, ml.cuda.info().build);
  assert.ok(!info.cuda || info.cudaBuild, 'usable CUDA implies a CUDA build');
});

test('setNumThreads rejects nonsense and results do not depend on the thread count', () => {
  assert.throws(() => ml.setNumThreads(0), /positive integer/);
  const a = ml.tensor(Float32Array.from({ length: 100000 }, (_, i) => Math.sin(i)), [1000, 100]);
  ml.setNumThreads(1);
  const s1 = a.softmax(1).sum(0).toArray();
  ml.setNumThreads(2);
  const s2 = a.softmax(1).sum(0).toArray();
  assert.deepEqual(Buffer.from(s1.buffer), Buffer.from(s2.buffer));
});

test('tensor() reads views of a SharedArrayBuffer (the loader shares image arrays with worker threads)', () => {
  const f = new Float32Array(new SharedArrayBuffer(4 * 6));
  f.set([1, 2, 3, 4, 5, 6]);
  const t = ml.tensor(f.subarray(2), [2, 2]);
  assert.deepEqual(Array.from(t.toArray()), [3, 4, 5, 6]);
  const i = new Int32Array(new SharedArrayBuffer(4 * 3));
  i.set([7, 8, 9]);
  assert.deepEqual(Array.from(ml.tensor(i, [3], { dtype: 'i32' }).toArray()), [7, 8, 9]);
  assert.deepEqual(Array.from(ml.tensor(f.subarray(0, 2), [2], { dtype: 'bf16' }).cast('f32').toArray()), [1, 2]);
  t.dispose();
});
