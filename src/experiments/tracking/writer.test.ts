/**
 * The metric writer thread: batches handed over in the background (the buffer-size trigger), shared buffers
 * reused without mixing rows, new keys arriving mid-run, errors from the writer coming back as thrown Errors with
 * the rows kept for the next flush, the main-thread fallback inside a caller's transaction and with the writer
 * switched off, and reads after flush() seeing every row.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Database from 'better-sqlite3';
import { Tracker } from './index';

function tmpDb(): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-writer-')), 'w.db');
}

const value = (s: number, k: number): number => (s % 97 === 0 && k === 1 ? NaN : s % 89 === 0 && k === 2 ? -Infinity : s * 10 + k);

test('two runs logging 60k rows each: background handoffs (buffer full) and the final flush keep every value', () => {
  const file = tmpDb();
  const t = Tracker.open(file);
  try {
    const a = t.startRun({ experiment: 'w' });
    const b = t.startRun({ experiment: 'w' });
    const STEPS = 6000;
    for (let s = 0; s < STEPS; s++) {
      const m: Record<string, number> = {};
      for (let k = 0; k < 10; k++) m[`k${k}`] = value(s, k);
      if (s >= 4000) m.late = -s; // a key first seen after several handoffs
      a.log(m, s);
      b.log({ k0: -s, k1: s % 2 ? Infinity : s }, s);
    }
    a.log({ k0: 12345 }, 10); // the last value of a (key, step) wins, across batches
    assert.ok(a._handoffs >= 1, 'a full buffer is handed to the writer without waiting');
    a.flush();
    const raw = new Database(file, { readonly: true });
    try {
      // flush() waited for the commit: another connection sees every row now.
      assert.equal((raw.prepare('SELECT count(*) AS n FROM metrics WHERE run_id = ?').get(a.id) as { n: number }).n, STEPS * 10 + 2000);
    } finally {
      raw.close();
    }
    for (let k = 0; k < 10; k++) {
      const [s] = t.metricSeries([a.id], `k${k}`);
      assert.deepEqual(s.steps, Array.from({ length: STEPS }, (_, i) => i));
      assert.deepEqual(s.values, s.steps.map((st) => (k === 0 && st === 10 ? 12345 : value(st, k))), `k${k}`);
    }
    assert.deepEqual(t.metricSeries([a.id], 'late')[0].values, Array.from({ length: 2000 }, (_, i) => -(4000 + i)));
    const [bs] = t.metricSeries([b.id], 'k1');
    assert.deepEqual(bs.values, bs.steps.map((s) => (s % 2 ? Infinity : s)));
    assert.equal(t.metricSeries([b.id], 'k0')[0].steps.length, STEPS);
    a.finish();
    b.finish();
  } finally {
    t.close();
  }
});

test('a write the writer cannot make is thrown by flush(), names the run and file, and the rows are kept', () => {
  const file = tmpDb();
  const t = Tracker.open(file);
  try {
    const run = t.startRun({ experiment: 'w' });
    run.log({ ok: 1 }, 0);
    run.flush();
    const raw = new Database(file);
    raw.exec("CREATE TRIGGER no_boom BEFORE INSERT ON metrics WHEN NEW.key = 'boom' BEGIN SELECT RAISE(ABORT, 'boom is refused'); END");
    run.log({ ok: 2, boom: 3 }, 1);
    assert.throws(() => run.flush(), (e: Error) => {
      assert.match(e.message, new RegExp(`writing metrics of run ${run.id} to .*w\\.db failed: boom is refused`));
      return true;
    });
    // The failed batch was one transaction: none of it is in the file (a query would flush, and fail, again).
    assert.deepEqual(raw.prepare('SELECT step FROM metrics WHERE run_id = ? ORDER BY key, step').all(run.id), [{ step: 0 }]);
    raw.exec('DROP TRIGGER no_boom');
    raw.close();
    run.finish(); // flushes the kept rows
    assert.deepEqual(t.metricSeries([run.id], 'ok')[0].values, [1, 2]);
    assert.deepEqual(t.metricSeries([run.id], 'boom')[0].values, [3]);
    assert.equal(t.getRun(run.id).status, 'finished');
  } finally {
    t.close();
  }
});

test('a flush inside a transaction on the tracker connection writes there (the writer would wait for it)', () => {
  const file = tmpDb();
  const t = Tracker.open(file);
  try {
    const run = t.startRun({ experiment: 'w' });
    run.log({ x: 1 }, 0);
    run.flush(); // the writer thread is running now
    t.db.transaction(() => {
      run.log({ x: 2 }, 1);
      run.flush();
      assert.deepEqual(t.metricSeries([run.id], 'x')[0].values, [1, 2]);
    }).immediate();
    run.finish();
    assert.deepEqual(t.metricSeries([run.id], 'x')[0].values, [1, 2]);
  } finally {
    t.close();
  }
});

test('with the writer thread switched off (MODALAB_TRACKING_WRITER=inline) the main thread writes the same rows', () => {
  const prev = process.env.MODALAB_TRACKING_WRITER;
  process.env.MODALAB_TRACKING_WRITER = 'inline';
  const file = tmpDb();
  const t = Tracker.open(file);
  try {
    const run = t.startRun({ experiment: 'w' });
    for (let s = 0; s < 3000; s++) run.log({ a: s, n: s === 7 ? NaN : s }, s);
    run.finish();
    assert.equal(run._handoffs, 0);
    assert.deepEqual(t.metricSeries([run.id], 'a')[0].values, Array.from({ length: 3000 }, (_, i) => i));
    assert.ok(Number.isNaN(t.metricSeries([run.id], 'n')[0].values[7]));
  } finally {
    t.close();
    if (prev === undefined) delete process.env.MODALAB_TRACKING_WRITER;
    else process.env.MODALAB_TRACKING_WRITER = prev;
  }
});

test('a background handoff that fails is kept by the writer and written with the next flush that can be', () => {
  const file = tmpDb();
  const t = Tracker.open(file);
  try {
    const run = t.startRun({ experiment: 'w' });
    run.log({ ok: -1 }, 0);
    run.flush();
    const raw = new Database(file);
    raw.exec("CREATE TRIGGER no_boom BEFORE INSERT ON metrics WHEN NEW.key = 'boom' BEGIN SELECT RAISE(ABORT, 'boom is refused'); END");
    const STEPS = 5100; // 51000 rows: the buffer is handed over (and fails in the writer) at 50000
    for (let s = 1; s <= STEPS; s++) {
      const m: Record<string, number> = { boom: s };
      for (let k = 0; k < 9; k++) m[`k${k}`] = s + k;
      run.log(m, s);
    }
    assert.equal(run._handoffs, 1);
    assert.throws(() => run.flush(), /failed: boom is refused/); // the kept batch fails again, with this one
    raw.exec('DROP TRIGGER no_boom');
    raw.close();
    run.finish();
    const [b] = t.metricSeries([run.id], 'boom');
    assert.deepEqual(b.steps, Array.from({ length: STEPS }, (_, i) => i + 1));
    assert.deepEqual(t.metricSeries([run.id], 'k8')[0].values, Array.from({ length: STEPS }, (_, i) => i + 1 + 8));
  } finally {
    t.close();
  }
});
