/**
 * Tracking under failure: a logging process killed with SIGKILL loses at most its last second of metrics, leaves
 * a database that passes integrity_check, and its run reads as failed on the next open; two processes logging to
 * one database at once lose nothing. Children run outside any git checkout (a run records no sha, and works).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Database from 'better-sqlite3';
import { Tracker, STALE_AFTER_MS } from './index';

const MODULE = path.join(__dirname, 'index.js');

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-track-rel-'));
}

/** A node child running `body` with `T` (the tracking module) and `file` in scope; its cwd is outside git. */
function child(body: string, file: string, cwd: string) {
  const code = `const T = require(${JSON.stringify(MODULE)}); const file = ${JSON.stringify(file)};\n${body}`;
  return spawn(process.execPath, ['-e', code], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

function exited(p: ReturnType<typeof spawn>): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  let stderr = '';
  p.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => p.on('close', (code, signal) => resolve({ code, signal, stderr })));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('SIGKILL mid-run loses at most the last second; integrity_check passes; the run reads as failed', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'modalab.db');
  // Log 3 metrics every ~10 ms from a timer and print "step wallTimeMs" after each log call.
  const p = child(
    `const t = T.Tracker.open(file);
     const run = t.startRun({ experiment: 'kill', config: { lr: 0.1 } });
     console.log('run ' + run.id);
     let step = 0;
     setInterval(() => { run.log({ loss: 1 / (step + 1), lr: 0.1, nan: NaN }, step); console.log(step + ' ' + Date.now()); step++; }, 10);`,
    file,
    dir,
  );
  let out = '';
  let killedAt = 0;
  p.stdout!.on('data', (d) => {
    out += d;
    const last = out.trimEnd().split('\n').pop()!;
    if (killedAt === 0 && /^\d+ /.test(last) && Number(last.split(' ')[0]) >= 80) {
      killedAt = Date.now();
      p.kill('SIGKILL');
    }
  });
  const res = await exited(p);
  assert.equal(res.signal, 'SIGKILL', res.stderr);
  const lines = out.trimEnd().split('\n');
  const runId = Number(lines[0].split(' ')[1]);
  const logged = lines.slice(1).filter((l) => /^\d+ \d+$/.test(l)).map((l) => l.split(' ').map(Number));
  const lastLoggedMs = logged[logged.length - 1][1];

  // Straight after the kill, before anyone reopens it: the file is sound.
  const raw = new Database(file, { readonly: true });
  assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok');
  raw.close();

  // The dead run is failed once its heartbeat is stale (its pid is already gone).
  const hb = new Database(file, { readonly: true });
  const heartbeatMs = (hb.prepare('SELECT heartbeat_at FROM runs WHERE id = ?').get(runId) as { heartbeat_at: number }).heartbeat_at * 1000;
  hb.close();
  await sleep(Math.max(0, heartbeatMs + STALE_AFTER_MS + 100 - Date.now()));
  const t = Tracker.open(file);
  const info = t.getRun(runId);
  assert.equal(info.status, 'failed');
  assert.equal(info.gitSha, null); // the child ran outside any git checkout
  const [s] = t.metricSeries([runId], 'loss');
  // Every logged step is there, in order, up to the last flush; what is missing was logged in the last second.
  assert.ok(s.steps.length > 0);
  assert.deepEqual(s.steps, Array.from({ length: s.steps.length }, (_, i) => i));
  const lostSince = s.wallTimes[s.wallTimes.length - 1] * 1000;
  assert.ok(lastLoggedMs - lostSince <= 1000, `lost ${lastLoggedMs - lostSince} ms of metrics`);
  assert.ok(s.values.every((v, i) => v === 1 / (i + 1)));
  assert.ok(t.metricSeries([runId], 'nan')[0].values.every(Number.isNaN));
  assert.equal(t.metricSeries([runId], 'lr')[0].steps.length, s.steps.length);
  t.close();
  const check = new Database(file, { readonly: true });
  assert.equal(check.pragma('integrity_check', { simple: true }), 'ok');
  check.close();
});

test('two processes logging to one new database at once lose no metric', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'runs', 'shared.db');
  const STEPS = 1500;
  // Each child logs 4 metrics per step in a tight synchronous loop, flushing every 25 steps so their write
  // transactions interleave, and prints its run id at the end.
  const body = `const t = T.Tracker.open(file);
    const run = t.startRun({ experiment: 'dual', config: { who: process.pid } });
    for (let s = 0; s < ${STEPS}; s++) {
      run.log({ a: s, b: -s, c: s / 3, d: s % 7 === 0 ? Infinity : s }, s);
      if (s % 25 === 24) run.flush();
    }
    run.finish();
    t.close();
    console.log('run ' + run.id);`;
  const procs = [child(body, file, dir), child(body, file, dir)];
  const outs = procs.map((p) => {
    let o = '';
    p.stdout!.on('data', (d) => (o += d));
    return () => o;
  });
  const results = await Promise.all(procs.map(exited));
  results.forEach((r) => assert.equal(r.code, 0, r.stderr));
  const ids = outs.map((o) => Number(o().trim().split(' ')[1]));
  assert.notEqual(ids[0], ids[1]);
  const t = Tracker.open(file);
  assert.equal(t.listRuns({ experiment: 'dual', status: 'finished' }).length, 2);
  for (const id of ids) {
    for (const key of ['a', 'b', 'c', 'd']) {
      const [s] = t.metricSeries([id], key);
      assert.equal(s.steps.length, STEPS, `run ${id} ${key}`);
    }
    const d = t.metricSeries([id], 'd')[0].values;
    assert.ok(d.every((v, s) => v === (s % 7 === 0 ? Infinity : s)));
  }
  const raw = new Database(file, { readonly: true });
  assert.equal((raw.prepare('SELECT count(*) AS n FROM metrics').get() as { n: number }).n, 2 * 4 * STEPS);
  assert.equal((raw.prepare('SELECT count(*) AS n FROM experiments').get() as { n: number }).n, 1);
  assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok');
  raw.close();
  t.close();
});

test('a process that exits without finishing its run flushes it and marks it failed', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'exit.db');
  const p = child(
    `const t = T.Tracker.open(file);
     const run = t.startRun({ experiment: 'exit' });
     for (let s = 0; s < 10; s++) run.log({ loss: s }, s);
     console.log('run ' + run.id);
     process.exitCode = 3;`,
    file,
    dir,
  );
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  const res = await exited(p);
  assert.equal(res.code, 3, res.stderr);
  const runId = Number(out.trim().split(' ')[1]);
  const t = Tracker.open(file);
  assert.equal(t.getRun(runId).status, 'failed');
  assert.deepEqual(t.metricSeries([runId], 'loss')[0].steps, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  t.close();
});

test('an uncaught exception still flushes the run (marked failed) before the process exits', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'throw.db');
  const p = child(
    `const t = T.Tracker.open(file);
     const run = t.startRun({ experiment: 'throw' });
     for (let s = 0; s < 2000; s++) run.log({ loss: s, inf: Infinity }, s);
     console.log('run ' + run.id);
     setTimeout(() => { throw new Error('training blew up'); }, 5);`,
    file,
    dir,
  );
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  const res = await exited(p);
  assert.equal(res.code, 1, res.stderr);
  assert.match(res.stderr, /training blew up/);
  const runId = Number(out.trim().split(' ')[1]);
  const t = Tracker.open(file);
  assert.equal(t.getRun(runId).status, 'failed');
  assert.deepEqual(t.metricSeries([runId], 'loss')[0].steps, Array.from({ length: 2000 }, (_, i) => i));
  assert.ok(t.metricSeries([runId], 'inf')[0].values.every((v) => v === Infinity));
  t.close();
});
