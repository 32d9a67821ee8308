// The sweeps migration (schema version 3): a version-2 database gains the sweeps and sweep_trials tables and a
// nullable runs.sweep_id, keeping its runs (sweep_id NULL) and metrics; new runs can point to a sweep.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Database from 'better-sqlite3';
import { Tracker, SCHEMA_VERSION } from './index';
import { _MIGRATIONS } from './schema';

test('a version-2 database migrates forward to sweeps: old runs keep their rows with sweep_id null', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-sweep-migrate-'));
  const file = path.join(dir, 'v2.db');
  try {
    const sweepsVersion = _MIGRATIONS.findIndex((sql) => sql.includes('CREATE TABLE sweeps')) + 1;
    assert.ok(sweepsVersion >= 2 && sweepsVersion <= SCHEMA_VERSION);
    const raw = new Database(file);
    raw.exec(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (${sweepsVersion - 1});`);
    for (let i = 0; i < sweepsVersion - 1; i++) raw.exec(_MIGRATIONS[i]);
    raw.prepare("INSERT INTO experiments (id, name, created_at) VALUES (1, 'old', 1)").run();
    raw.prepare(`INSERT INTO runs (id, experiment_id, name, status, config_json, host, pid, started_at, heartbeat_at)
                 VALUES (1, 1, 'r', 'finished', '{"lr":0.1}', 'h', 1, 1, 1)`).run();
    raw.prepare("INSERT INTO metrics (run_id, key, step, value, wall_time) VALUES (1, 'loss', 0, 2.5, 10)").run();
    raw.close();

    const t = Tracker.open(file);
    try {
      assert.equal((t.db.prepare('SELECT version FROM schema_version').get() as { version: number }).version, SCHEMA_VERSION);
      const old = t.getRun(1);
      assert.equal(old.sweepId, null);
      assert.deepEqual(old.config, { lr: 0.1 });
      assert.deepEqual(t.metricSeries(1, 'loss')[0].values, [2.5]);
      const cols = (t.db.prepare('PRAGMA table_info(runs)').all() as Array<{ name: string }>).map((c) => c.name);
      assert.ok(cols.includes('sweep_id'));
      // A sweep row, a trial run pointing to it, and the filter.
      const sweepId = Number(t.db.prepare(`INSERT INTO sweeps (name, spec_hash, spec_json, stage, metric, mode, status, created_at, updated_at)
        VALUES ('s', 'h', '{}', 'align', 'm', 'max', 'running', 1, 1)`).run().lastInsertRowid);
      const run = t.startRun({ experiment: 'new', sweepId });
      run.finish();
      assert.equal(t.getRun(run.id).sweepId, sweepId);
      assert.deepEqual(t.listRuns({ sweepId }).map((r) => r.id), [run.id]);
      assert.throws(() => t.startRun({ experiment: 'new', sweepId: sweepId + 100 }), /startRun: sweepId \d+ is not a sweep/);
      assert.equal((t.db.prepare('PRAGMA integrity_check').get() as { integrity_check: string }).integrity_check, 'ok');
      assert.deepEqual(t.db.prepare('PRAGMA foreign_key_check').all(), []);
    } finally {
      t.close();
    }
    // Opening again is a no-op (the version is current).
    const t2 = Tracker.open(file);
    assert.equal(t2.listRuns().length, 2);
    t2.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
