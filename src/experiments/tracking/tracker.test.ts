/**
 * Tracking: runs with their configs as params, metrics (NaN and ±Infinity exactly), artifacts, the query API,
 * schema versioning, and bad input that throws a clear error and changes nothing on disk.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Database from 'better-sqlite3';
import { Tracker, SCHEMA_VERSION, flattenConfig, checkConfig } from './index';

function tmpDb(): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-track-')), 'runs', 'modalab.db');
}

/** Every file in the database's folder (the db, -wal, -shm) with its bytes. */
function snapshot(file: string): Map<string, Buffer> {
  const dir = path.dirname(file);
  const out = new Map<string, Buffer>();
  for (const f of fs.readdirSync(dir).sort()) out.set(f, fs.readFileSync(path.join(dir, f)));
  return out;
}

function assertSameFiles(a: Map<string, Buffer>, b: Map<string, Buffer>): void {
  assert.deepEqual([...b.keys()], [...a.keys()]);
  for (const [k, v] of a) assert.ok(v.equals(b.get(k)!), `${k} changed`);
}

test('a run records its config, params, seed, host, status; metrics read back in step order', () => {
  const file = tmpDb();
  const t = Tracker.open(file);
  const config = { model: { dim: 64, layers: 2 }, optim: { lr: 1e-3, betas: [0.9, 0.95], name: 'adamw' }, amp: false, extra: {} };
  const run = t.startRun({ experiment: 'tour', stage: 'align', config, seed: 7 });
  assert.equal(run.name, `align-${run.id}`);
  for (let step = 0; step < 20; step++) run.log({ loss: 10 - step / 2, lr: 1e-3 }, step);
  run.finish();
  const info = t.getRun(run.id);
  assert.equal(info.status, 'finished');
  assert.deepEqual(info.config, config);
  assert.equal(info.seed, 7);
  assert.equal(info.host, os.hostname());
  assert.equal(info.pid, process.pid);
  assert.equal(info.experiment, 'tour');
  assert.ok(info.endedAt! >= info.startedAt);
  const [s] = t.metricSeries([run.id], 'loss');
  assert.deepEqual(s.steps, Array.from({ length: 20 }, (_, i) => i));
  assert.deepEqual(s.values, Array.from({ length: 20 }, (_, i) => 10 - i / 2));
  assert.equal(s.wallTimes.length, 20);
  assert.ok(Math.abs(s.wallTimes[0] - Date.now() / 1000) < 60);
  assert.deepEqual(t.latest(run.id, 'loss'), { step: 19, value: 0.5, wallTime: s.wallTimes[19] });
  assert.equal(t.best(run.id, 'loss', 'min')!.step, 19);
  assert.equal(t.best(run.id, 'loss', 'max')!.value, 10);
  assert.equal(t.latest(run.id, 'nope'), null);
  assert.equal(t.best(run.id, 'nope', 'min'), null);
  t.close();

  // Plain SQLite sees the schema of DESIGN.md, the params flattened with dotted keys.
  const db = new Database(file, { readonly: true });
  const params = db.prepare('SELECT key, value FROM params WHERE run_id = ? ORDER BY key').all(run.id);
  assert.deepEqual(params, [
    { key: 'amp', value: 'false' },
    { key: 'extra', value: '{}' },
    { key: 'model.dim', value: '64' },
    { key: 'model.layers', value: '2' },
    { key: 'optim.betas', value: '[0.9,0.95]' },
    { key: 'optim.lr', value: '0.001' },
    { key: 'optim.name', value: '"adamw"' },
  ]);
  assert.deepEqual(db.prepare('SELECT version FROM schema_version').all(), [{ version: SCHEMA_VERSION }]);
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  // The config is immutable.
  const rw = new Database(file);
  assert.throws(() => rw.prepare("UPDATE params SET value = '1' WHERE run_id = ?").run(run.id), /immutable/);
  assert.throws(() => rw.prepare("UPDATE runs SET config_json = '{}' WHERE id = ?").run(run.id), /immutable/);
  rw.close();
  db.close();
});

test('NaN, +Infinity and -Infinity round-trip exactly; best skips NaN', () => {
  const t = Tracker.open(tmpDb());
  const run = t.startRun({ experiment: 'nf' });
  const vals = [1.5, NaN, Infinity, -Infinity, 0, -2.25, Number.MAX_VALUE, Number.MIN_VALUE, 1e-300];
  vals.forEach((v, i) => run.log({ x: v }, i));
  run.finish();
  const [s] = t.metricSeries(run.id, 'x');
  assert.equal(s.values.length, vals.length);
  s.values.forEach((v, i) => assert.ok(Object.is(v, vals[i]), `step ${i}: ${v} vs ${vals[i]}`));
  assert.equal(t.best(run.id, 'x', 'min')!.value, -Infinity);
  assert.equal(t.best(run.id, 'x', 'max')!.value, Infinity);
  const r2 = t.startRun({ experiment: 'nf' });
  r2.log({ y: NaN }, 0);
  r2.finish();
  assert.equal(t.best(r2.id, 'y', 'min'), null);
  assert.ok(Number.isNaN(t.latest(r2.id, 'y')!.value));
  t.close();
});

test('listRuns filters by experiment, stage, status and params; paramsTable for sweeps; parent runs', () => {
  const t = Tracker.open(tmpDb());
  const ids: number[] = [];
  for (const lr of [1e-3, 3e-3, 1e-2]) {
    const r = t.startRun({ experiment: 'sweep', stage: 'align', config: { optim: { lr }, batch: 32 } });
    r.log({ loss: lr * 100 }, 0);
    r.log({ loss: lr * 10, 'r@1': lr }, 1);
    r.finish(lr === 1e-2 ? 'failed' : 'finished');
    ids.push(r.id);
  }
  const child = t.startRun({ experiment: 'sweep', stage: 'caption', parentRunId: ids[0], name: 'cap' });
  const other = t.startRun({ experiment: 'other', config: { batch: 32 } });
  assert.deepEqual(t.listRuns({ experiment: 'sweep' }).map((r) => r.id), [...ids, child.id]);
  assert.deepEqual(t.listRuns({ stage: 'align', status: 'finished' }).map((r) => r.id), ids.slice(0, 2));
  assert.deepEqual(t.listRuns({ params: { 'optim.lr': 3e-3 } }).map((r) => r.id), [ids[1]]);
  assert.deepEqual(t.listRuns({ params: { batch: 32 } }).map((r) => r.id), [...ids, other.id]);
  assert.deepEqual(t.listRuns({ params: { batch: '32' } }), []); // typed: the string "32" is not 32
  assert.deepEqual(t.listRuns({ status: 'running' }).map((r) => r.id), [child.id, other.id]);
  assert.equal(t.getRun(child.id).parentRunId, ids[0]);
  assert.equal(t.getRun(child.id).name, 'cap');

  const series = t.metricSeries(ids, 'loss');
  assert.deepEqual(series.map((s) => s.runId), ids);
  assert.deepEqual(series.map((s) => s.values[1]), [1e-2, 3e-2, 1e-1]);
  const table = t.paramsTable(ids, ['loss', 'r@1', 'missing']);
  assert.deepEqual(table.paramKeys, ['batch', 'optim.lr']);
  assert.deepEqual(table.rows.map((r) => r.params['optim.lr']), [1e-3, 3e-3, 1e-2]);
  assert.deepEqual(table.rows.map((r) => r.metrics['r@1']), [1e-3, 3e-3, 1e-2]);
  assert.deepEqual(table.rows.map((r) => r.metrics.missing), [null, null, null]);
  assert.deepEqual(table.rows.map((r) => r.status), ['finished', 'finished', 'failed']);
  child.finish('killed');
  t.close();
  // close() fails the runs nobody finished.
  const t2 = Tracker.open(t.file);
  assert.equal(t2.getRun(child.id).status, 'killed');
  assert.equal(t2.getRun(other.id).status, 'failed');
  t2.close();
});

test('metrics buffered in the run are visible to queries; a second log of a step replaces it', () => {
  const t = Tracker.open(tmpDb());
  const run = t.startRun({ experiment: 'live' });
  run.log({ a: 1 }, 0);
  run.log({ a: 2 }, 0);
  assert.deepEqual(t.metricSeries([run.id], 'a')[0].values, [2]);
  run.finish();
  assert.throws(() => run.log({ a: 1 }, 1), /finished; it no longer accepts metrics/);
  t.close();
});

test('logArtifact records sha256 and bytes', () => {
  const file = tmpDb();
  const t = Tracker.open(file);
  const run = t.startRun({ experiment: 'art' });
  const f = path.join(path.dirname(file), 'ckpt.bin');
  fs.writeFileSync(f, Buffer.from('hello'));
  const a = run.logArtifact('checkpoint', f);
  assert.equal(a.sha256, '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
  assert.equal(a.bytes, 5);
  assert.deepEqual(t.artifacts(run.id), [a]);
  assert.throws(() => run.logArtifact('checkpoint', path.join(path.dirname(file), 'missing')), /ENOENT/);
  run.finish();
  t.close();
});

test('a checkout without git still records runs', () => {
  // git_sha is null outside a checkout (the test's cwd may or may not be one): the run is recorded either way.
  const t = Tracker.open(tmpDb());
  const r = t.startRun({ experiment: 'g' });
  const sha = t.getRun(r.id).gitSha;
  assert.ok(sha === null || /^[0-9a-f]{40}/.test(sha));
  t.close();
});

test('config validation: cycles, BigInt, functions, NaN, class instances, dotted keys', () => {
  const cyc: Record<string, unknown> = { a: 1 };
  cyc.self = cyc;
  const cases: Array<[unknown, RegExp]> = [
    [cyc, /config\.self is a cycle/],
    [{ n: 10n }, /config\.n is a BigInt \(10n\)/],
    [{ f: () => 1 }, /config\.f is a function/],
    [{ deep: { u: undefined } }, /config\.deep\.u is undefined/],
    [{ x: NaN }, /config\.x is NaN/],
    [{ d: new Date(0) }, /config\.d is an instance of Date/],
    [{ arr: [1, { s: Symbol('s') }] }, /config\.arr\[1\]\.s is a symbol/],
    [{ 'a.b': 1 }, /contains '\.'/],
    [[1, 2], /config must be a plain object, got an array/],
  ];
  for (const [c, re] of cases) assert.throws(() => checkConfig(c), re);
  assert.deepEqual(flattenConfig({ a: { b: { c: 1 } }, n: null, s: 'x' }), [['a.b.c', '1'], ['n', 'null'], ['s', '"x"']]);
});

test('bad input gives clear errors and changes nothing on disk', () => {
  const file = tmpDb();
  let t = Tracker.open(file);
  const run = t.startRun({ experiment: 'e', config: { lr: 1 } });
  run.log({ loss: 1 }, 0);
  run.finish();
  t.close();
  const before = snapshot(file);

  t = Tracker.open(file);
  const cyc: Record<string, unknown> = {};
  cyc.me = cyc;
  assert.throws(() => t.startRun({ experiment: 'new-exp', config: cyc }), /startRun: config\.me is a cycle/);
  assert.throws(() => t.startRun({ experiment: 'new-exp', config: { big: 1n } as never }), /BigInt/);
  assert.throws(() => t.startRun({ experiment: 'new-exp', config: { fn: Math.max } as never }), /function/);
  assert.throws(() => t.startRun({ experiment: '' }), /experiment must be a non-empty string/);
  t.close();
  assertSameFiles(before, snapshot(file));

  // An empty metric name rejects the whole call; nothing from it reaches the database.
  t = Tracker.open(file);
  const r2 = t.startRun({ experiment: 'e' });
  assert.throws(() => r2.log({ good: 1, '': 2 }, 0), /log: a metric name is empty/);
  assert.throws(() => r2.log({ good: 1, bad: '2' as unknown as number }, 0), /metric "bad" is string, not a number/);
  assert.throws(() => r2.log({ good: 1 }, -1), /step must be a non-negative integer/);
  assert.throws(() => r2.log({ good: 1 }, 1.5), /step must be a non-negative integer/);
  r2.finish();
  assert.deepEqual(t.metricSeries([r2.id], 'good')[0].steps, []);
  t.close();

  // A file that is not SQLite: refused before SQLite opens it.
  const notDb = path.join(path.dirname(file), 'notes.db');
  fs.writeFileSync(notDb, 'these are my notes, not a database\n'.repeat(10));
  const nb = snapshot(notDb);
  assert.throws(() => Tracker.open(notDb), /notes\.db is not an SQLite database/);
  assertSameFiles(nb, snapshot(notDb));

  // A database from a newer modalab.
  const newer = path.join(path.dirname(file), 'newer.db');
  fs.copyFileSync(file, newer);
  const raw = new Database(newer);
  raw.prepare('UPDATE schema_version SET version = ?').run(SCHEMA_VERSION + 1);
  raw.close();
  const nwb = snapshot(newer);
  assert.throws(() => Tracker.open(newer), new RegExp(`schema version ${SCHEMA_VERSION + 1}, newer than this modalab's ${SCHEMA_VERSION}`));
  assertSameFiles(nwb, snapshot(newer));
});

test('a database in rollback-journal mode with a newer schema is refused without switching it to WAL', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-track-'));
  const file = path.join(dir, 'old.db');
  const raw = new Database(file);
  raw.exec(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (${SCHEMA_VERSION + 5});`);
  raw.close();
  const before = snapshot(file);
  assert.throws(() => Tracker.open(file), /newer than this modalab/);
  assertSameFiles(before, snapshot(file));
});

test('trackers on one file in one process share one connection', () => {
  const file = tmpDb();
  const a = Tracker.open(file);
  const b = Tracker.open(file);
  assert.equal(a.db, b.db);
  const r = a.startRun({ experiment: 'x' });
  r.log({ m: 1 }, 0);
  r.flush();
  assert.deepEqual(b.metricSeries([r.id], 'm')[0].values, [1]); // b reads what a wrote once a has flushed
  a.close();
  assert.equal(b.getRun(r.id).status, 'failed');
  b.close();
  assert.throws(() => b.listRuns(), /closed/);
});

test('resumeRun reopens a killed run under the same id, keeps its metrics and lets later steps replace', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-resume-'));
  const t = Tracker.open(path.join(dir, 'r.db'));
  try {
    const run = t.startRun({ experiment: 'e', stage: 'align', config: { a: 1 } });
    run.log({ loss: 3 }, 1);
    run.log({ loss: 2.5 }, 2);
    run.finish('killed');
    const again = t.resumeRun(run.id);
    assert.equal(again.id, run.id);
    assert.equal(t.getRun(run.id).status, 'running');
    again.log({ loss: 2.4 }, 2);
    again.log({ loss: 2.0 }, 3);
    again.finish('finished');
    assert.deepEqual(t.metricSeries(run.id, 'loss')[0].values, [3, 2.4, 2.0]);
    assert.equal(t.getRun(run.id).status, 'finished');
    assert.throws(() => t.resumeRun(run.id), /already finished/);
    const live = t.startRun({ experiment: 'e' });
    assert.throws(() => t.resumeRun(live.id), /still running/);
    assert.throws(() => t.resumeRun(9999), /no run 9999/);
    live.finish();
  } finally {
    t.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a version-1 database migrates to WITHOUT ROWID metrics, keeping every row (NaN included)', () => {
  const { _MIGRATIONS } = require('./schema') as typeof import('./schema');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-migrate-'));
  const file = path.join(dir, 'v1.db');
  try {
    const raw = new Database(file);
    raw.exec('CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);');
    raw.exec(_MIGRATIONS[0]);
    raw.prepare("INSERT INTO experiments (id, name, created_at) VALUES (1, 'old', 1)").run();
    raw.prepare(`INSERT INTO runs (id, experiment_id, name, status, config_json, host, pid, started_at, heartbeat_at)
                 VALUES (1, 1, 'r', 'finished', '{}', 'h', 1, 1, 1)`).run();
    const ins = raw.prepare('INSERT INTO metrics (run_id, key, step, value, wall_time, nonfinite) VALUES (1, ?, ?, ?, ?, ?)');
    ins.run('loss', 0, 2.5, 10, null);
    ins.run('loss', 1, null, 11, 'nan');
    ins.run('acc', 0, 0.5, 10, null);
    raw.close();
    const t = Tracker.open(file);
    try {
      assert.deepEqual(t.metricSeries(1, 'loss')[0].values, [2.5, NaN]);
      assert.deepEqual(t.metricSeries(1, 'acc')[0].values, [0.5]);
      const sql = (t.db.prepare("SELECT sql FROM sqlite_master WHERE name = 'metrics'").get() as { sql: string }).sql;
      assert.match(sql, /WITHOUT ROWID/);
      assert.equal((t.db.prepare('SELECT version FROM schema_version').get() as { version: number }).version, SCHEMA_VERSION);
      assert.equal((t.db.prepare('PRAGMA integrity_check').get() as { integrity_check: string }).integrity_check, 'ok');
      const run = t.startRun({ experiment: 'new' });
      run.log({ loss: 1 }, 0);
      run.finish();
      assert.deepEqual(t.metricSeries(run.id, 'loss')[0].values, [1]);
    } finally {
      t.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
