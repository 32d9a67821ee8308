/**
 * The tracking database's schema and its forward migrations.
 *
 * `schema_version` holds one row: the number of migrations applied. A database from a newer modalab (a version
 * above SCHEMA_VERSION) is refused before anything is written, since this code cannot know what it would break.
 * Migrations only ever move forward; each runs in one IMMEDIATE transaction, so two processes opening a fresh file
 * at once apply it exactly once (the second sees the new version inside its own transaction and does nothing).
 */
import type Database from 'better-sqlite3';

/**
 * Times (created_at, started_at, ended_at, heartbeat_at, wall_time) are seconds since the Unix epoch, as REAL.
 *
 * Non-finite metric values: SQLite stores NaN as NULL, so a metric row keeps `value` NULL and says which
 * non-finite value it was in the `nonfinite` TEXT column ('nan', 'inf' or '-inf'); finite values have
 * `nonfinite` NULL. Any SQLite client sees NULL (ignored by MIN/MAX/AVG) and can still tell the three apart.
 *
 * params.value is the JSON text of the config leaf (`0.001`, `"adamw"`, `true`, `[0.9,0.95]`), so a value reads
 * back with its type and filters compare exactly.
 */
const V1 = `
CREATE TABLE experiments (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE,
  created_at  REAL NOT NULL
);
CREATE TABLE runs (
  id            INTEGER PRIMARY KEY,
  experiment_id INTEGER NOT NULL REFERENCES experiments(id),
  parent_run_id INTEGER REFERENCES runs(id),
  name          TEXT NOT NULL,
  stage         TEXT,
  status        TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'killed')),
  config_json   TEXT NOT NULL,
  seed          INTEGER,
  git_sha       TEXT,
  host          TEXT NOT NULL,
  pid           INTEGER NOT NULL,
  started_at    REAL NOT NULL,
  ended_at      REAL,
  heartbeat_at  REAL NOT NULL
);
CREATE INDEX runs_by_experiment ON runs(experiment_id, stage, status);
CREATE TABLE params (
  run_id  INTEGER NOT NULL REFERENCES runs(id),
  key     TEXT NOT NULL,
  value   TEXT NOT NULL,
  PRIMARY KEY (run_id, key)
);
CREATE INDEX params_by_key ON params(key, value);
CREATE TABLE metrics (
  run_id     INTEGER NOT NULL REFERENCES runs(id),
  key        TEXT NOT NULL,
  step       INTEGER NOT NULL,
  value      REAL,
  wall_time  REAL NOT NULL,
  nonfinite  TEXT CHECK (nonfinite IN ('nan', 'inf', '-inf')),
  PRIMARY KEY (run_id, key, step)
);
CREATE TABLE artifacts (
  run_id      INTEGER NOT NULL REFERENCES runs(id),
  kind        TEXT NOT NULL,
  path        TEXT NOT NULL,
  sha256      TEXT NOT NULL,
  bytes       INTEGER NOT NULL,
  created_at  REAL NOT NULL
);
CREATE INDEX artifacts_by_run ON artifacts(run_id);
-- The config is immutable once written: params are never updated and a run's config_json never changes.
CREATE TRIGGER params_immutable BEFORE UPDATE ON params
  BEGIN SELECT RAISE(ABORT, 'tracking: params are immutable once written'); END;
CREATE TRIGGER config_immutable BEFORE UPDATE OF config_json ON runs
  WHEN NEW.config_json IS NOT OLD.config_json
  BEGIN SELECT RAISE(ABORT, 'tracking: a run''s config is immutable once written'); END;
`;

/**
 * Version 2: metrics become a WITHOUT ROWID table, clustered on (run_id, key, step). A row then lives in the
 * primary-key b-tree itself, so an insert updates one b-tree instead of the table plus its key index: about half
 * the cost per metric row (bench: tracking), and a run's series reads in key order.
 */
const V2 = `
CREATE TABLE metrics_v2 (
  run_id     INTEGER NOT NULL REFERENCES runs(id),
  key        TEXT NOT NULL,
  step       INTEGER NOT NULL,
  value      REAL,
  wall_time  REAL NOT NULL,
  nonfinite  TEXT CHECK (nonfinite IN ('nan', 'inf', '-inf')),
  PRIMARY KEY (run_id, key, step)
) WITHOUT ROWID;
INSERT INTO metrics_v2 (run_id, key, step, value, wall_time, nonfinite)
  SELECT run_id, key, step, value, wall_time, nonfinite FROM metrics;
DROP TABLE metrics;
ALTER TABLE metrics_v2 RENAME TO metrics;
`;

/**
 * Version 3: sweeps (src/experiments/sweeps, docs/sweeps.md). A sweep is a row of its own, identified by its name
 * and the hash of its spec; its trials are runs whose `sweep_id` points to it, and `sweep_trials` keeps each
 * trial's place in the sweep: its params, the successive-halving rung it reached, its outcome and target metric.
 * Older databases gain the nullable column (NULL for their runs) and the two tables.
 */
const V3 = `
CREATE TABLE sweeps (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL,
  spec_hash   TEXT NOT NULL,
  spec_json   TEXT NOT NULL,
  stage       TEXT NOT NULL,
  metric      TEXT NOT NULL,
  mode        TEXT NOT NULL CHECK (mode IN ('min', 'max')),
  status      TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'killed')),
  host        TEXT,
  pid         INTEGER,
  created_at  REAL NOT NULL,
  updated_at  REAL NOT NULL,
  ended_at    REAL,
  UNIQUE (name, spec_hash)
);
ALTER TABLE runs ADD COLUMN sweep_id INTEGER REFERENCES sweeps(id);
CREATE INDEX runs_by_sweep ON runs(sweep_id);
CREATE TABLE sweep_trials (
  sweep_id     INTEGER NOT NULL REFERENCES sweeps(id),
  trial        INTEGER NOT NULL,
  params_json  TEXT NOT NULL,
  run_id       INTEGER REFERENCES runs(id),
  rung         INTEGER NOT NULL DEFAULT 0,
  steps        INTEGER NOT NULL DEFAULT 0,
  outcome      TEXT NOT NULL CHECK (outcome IN ('pending', 'running', 'paused', 'finished', 'pruned', 'failed')),
  metric       REAL,
  attempts     INTEGER NOT NULL DEFAULT 0,
  error        TEXT,
  PRIMARY KEY (sweep_id, trial)
);
`;

/** MIGRATIONS[i] moves a database from version i to version i + 1. */
const MIGRATIONS: readonly string[] = [V1, V2, V3];

/** The schema version this code writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** @internal For migration tests: the SQL of each version. */
export const _MIGRATIONS = MIGRATIONS;

/** The version recorded in the file: 0 for a fresh (empty) database. Reads only. */
export function readSchemaVersion(db: Database.Database): number {
  const t = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").get();
  if (t === undefined) return 0;
  const row = db.prepare('SELECT max(version) AS v FROM schema_version').get() as { v: number | null };
  return row.v ?? 0;
}

/** Applies the missing migrations in one IMMEDIATE transaction (a no-op when another process got there first). */
export function migrate(db: Database.Database, file: string): void {
  db.transaction(() => {
    const v = readSchemaVersion(db);
    if (v > SCHEMA_VERSION) throw newerSchemaError(file, v);
    if (v === SCHEMA_VERSION) return;
    if (v === 0) db.exec('CREATE TABLE schema_version (version INTEGER NOT NULL)');
    for (let i = v; i < SCHEMA_VERSION; i++) db.exec(MIGRATIONS[i]);
    db.prepare('DELETE FROM schema_version').run();
    db.prepare('INSERT INTO schema_version (version) VALUES (?)').run(SCHEMA_VERSION);
  }).immediate();
}

export function newerSchemaError(file: string, v: number): Error {
  return new Error(
    `tracking: ${file} has schema version ${v}, newer than this modalab's ${SCHEMA_VERSION}; ` +
      'open it with a newer modalab (nothing was changed)',
  );
}
