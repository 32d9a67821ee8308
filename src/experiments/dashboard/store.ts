/**
 * The dashboard's read-only view of a tracking database.
 *
 * `Tracker.open` is not used here: it migrates the schema, switches the file to WAL mode and fails dead runs,
 * all of which write. This module opens the file with better-sqlite3's `{ readonly: true, fileMustExist: true }`,
 * so SQLite itself refuses any write (SQLITE_READONLY), and it runs only SELECTs. A run whose process died is
 * shown as `stale` (the rule Tracker.failDeadRuns applies) but stays 'running' in the file.
 *
 * Reading a WAL database needs its -shm index: SQLite creates the -wal/-shm side files if they are missing (they
 * hold no data of the database), exactly as any reader does.
 */
import Database from 'better-sqlite3';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { REMOTE_STALE_AFTER_MS, STALE_AFTER_MS, type RunStatus } from '../tracking';
import type { JsonValue } from '../tracking';

export const STATUSES: readonly RunStatus[] = ['running', 'finished', 'failed', 'killed'];

export interface DashRun {
  id: number;
  experiment: string;
  name: string;
  stage: string | null;
  status: RunStatus;
  /** A 'running' run whose process seems gone (no heartbeat and, on this host, no live pid). Read-only: the
   * file still says 'running'; the next Tracker to open it will mark it failed. */
  stale: boolean;
  parentRunId: number | null;
  /** The sweep this run is a trial of, when the database has sweeps (null otherwise). */
  sweepId: number | null;
  seed: number | null;
  gitSha: string | null;
  host: string;
  pid: number;
  /** Unix seconds. */
  startedAt: number;
  endedAt: number | null;
  heartbeatAt: number;
}

export interface RunQuery {
  experiment?: string;
  /** Only the trials of this sweep (a database with sweeps: schema version 3 and later). */
  sweep?: number;
  stage?: string;
  status?: RunStatus;
  /** Dotted config keys and the JSON values they must equal. */
  params?: Array<[string, JsonValue]>;
}

/** One metric of one run. `values` are numbers, or null where the value is NaN/±Infinity (see `nonfinite`). */
export interface WireSeries {
  steps: number[];
  values: Array<number | null>;
  wallTimes: number[];
  /** Index -> 'nan' | 'inf' | '-inf' for the non-finite points (JSON has no NaN); absent when there are none. */
  nonfinite?: Record<number, string>;
}

/** A row of the sweeps table (schema version 3): the sweep's name and its target metric. */
export interface DashSweep {
  id: number;
  name: string;
  stage: string;
  metric: string;
  mode: 'min' | 'max';
  status: string;
}

export interface DashArtifact {
  kind: string;
  path: string;
  sha256: string;
  bytes: number;
  createdAt: number;
}

interface RunRow {
  id: number;
  experiment: string;
  name: string;
  stage: string | null;
  status: RunStatus;
  parent_run_id: number | null;
  sweep_id?: number | null;
  seed: number | null;
  git_sha: string | null;
  host: string;
  pid: number;
  started_at: number;
  ended_at: number | null;
  heartbeat_at: number;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class Store {
  readonly file: string;
  private readonly db: Database.Database;
  /** Whether the file has sweeps (runs.sweep_id and the sweeps table, schema version 3 and later). */
  readonly hasSweeps: boolean;
  private readonly host = os.hostname();

  private constructor(file: string, db: Database.Database) {
    this.file = file;
    this.db = db;
    const cols = db.prepare('PRAGMA table_info(runs)').all() as Array<{ name: string }>;
    // Schema version 3 added sweeps (runs.sweep_id and the sweeps table); older files are read without them.
    this.hasSweeps = cols.some((c) => c.name === 'sweep_id')
      && db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sweeps'").get() !== undefined;
  }

  /** Opens an existing tracking database read-only; a missing file or one that is not a tracking DB is an Error. */
  static open(file: string): Store {
    const abs = path.resolve(file);
    if (!fs.existsSync(abs)) throw new Error(`dashboard: no tracking database at ${file} (train a run first, or pass --db FILE)`);
    let db: Database.Database;
    try {
      db = new Database(abs, { readonly: true, fileMustExist: true });
    } catch (e) {
      throw new Error(`dashboard: cannot open ${file} read-only: ${(e as Error).message}`);
    }
    try {
      // Waits for a writer's checkpoint instead of failing at once (a read never takes a write lock in WAL mode).
      db.pragma('busy_timeout = 5000');
      const t = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").get();
      if (t === undefined) throw new Error(`dashboard: ${file} has no runs table; is it a modalab tracking database?`);
    } catch (e) {
      db.close();
      const msg = (e as Error).message;
      throw new Error(msg.startsWith('dashboard:') ? msg : `dashboard: ${file} could not be read as an SQLite database: ${msg}`);
    }
    return new Store(abs, db);
  }

  close(): void {
    this.db.close();
  }

  private toRun(r: RunRow, t: number): DashRun {
    let stale = false;
    if (r.status === 'running') {
      const age = (t - r.heartbeat_at) * 1000;
      stale = r.host !== this.host ? age > REMOTE_STALE_AFTER_MS : age > STALE_AFTER_MS && !pidAlive(r.pid);
    }
    return {
      id: r.id, experiment: r.experiment, name: r.name, stage: r.stage, status: r.status, stale,
      parentRunId: r.parent_run_id, sweepId: r.sweep_id ?? null, seed: r.seed, gitSha: r.git_sha, host: r.host,
      pid: r.pid, startedAt: r.started_at, endedAt: r.ended_at, heartbeatAt: r.heartbeat_at,
    };
  }

  private select(where: string): string {
    return `SELECT r.id, e.name AS experiment, r.name, r.stage, r.status, r.parent_run_id, ${this.hasSweeps ? 'r.sweep_id, ' : ''}`
      + `r.seed, r.git_sha, r.host, r.pid, r.started_at, r.ended_at, r.heartbeat_at FROM runs r JOIN experiments e ON e.id = r.experiment_id ${where}`;
  }

  /** Runs matching every given field, oldest first. */
  listRuns(q: RunQuery = {}): DashRun[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.experiment !== undefined) (where.push('e.name = ?'), args.push(q.experiment));
    if (q.stage !== undefined) (where.push('r.stage = ?'), args.push(q.stage));
    if (q.status !== undefined) (where.push('r.status = ?'), args.push(q.status));
    if (q.sweep !== undefined) {
      if (!this.hasSweeps) throw new Error(`dashboard: ${this.file} has no sweeps (its schema predates them)`);
      where.push('r.sweep_id = ?');
      args.push(q.sweep);
    }
    for (const [k, v] of q.params ?? []) {
      where.push('EXISTS (SELECT 1 FROM params p WHERE p.run_id = r.id AND p.key = ? AND p.value = ?)');
      args.push(k, JSON.stringify(v));
    }
    const rows = this.db.prepare(this.select(`${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY r.id`)).all(...args) as RunRow[];
    const t = Date.now() / 1000;
    return rows.map((r) => this.toRun(r, t));
  }

  /** The run, or null when there is none with this id. */
  getRun(id: number): DashRun | null {
    const r = this.db.prepare(this.select('WHERE r.id = ?')).get(id) as RunRow | undefined;
    return r === undefined ? null : this.toRun(r, Date.now() / 1000);
  }

  children(id: number): DashRun[] {
    const t = Date.now() / 1000;
    return (this.db.prepare(this.select('WHERE r.parent_run_id = ? ORDER BY r.id')).all(id) as RunRow[]).map((r) => this.toRun(r, t));
  }

  /** Every sweep, newest first (none in a database without sweeps). */
  sweeps(): DashSweep[] {
    if (!this.hasSweeps) return [];
    return this.db.prepare('SELECT id, name, stage, metric, mode, status FROM sweeps ORDER BY id DESC').all() as DashSweep[];
  }

  sweep(id: number): DashSweep | null {
    if (!this.hasSweeps) return null;
    return (this.db.prepare('SELECT id, name, stage, metric, mode, status FROM sweeps WHERE id = ?').get(id) as DashSweep | undefined) ?? null;
  }

  /** The run's config exactly as recorded (config_json), or {} when it cannot be parsed. */
  config(id: number): { [key: string]: JsonValue } {
    const r = this.db.prepare('SELECT config_json FROM runs WHERE id = ?').get(id) as { config_json: string } | undefined;
    try {
      return r === undefined ? {} : JSON.parse(r.config_json);
    } catch {
      return {};
    }
  }

  /** The flattened params (dotted key -> JSON value) of each run, by run id. */
  params(ids: readonly number[]): Map<number, Record<string, JsonValue>> {
    const out = new Map<number, Record<string, JsonValue>>(ids.map((id) => [id, {}]));
    if (ids.length === 0) return out;
    const rows = this.db.prepare(`SELECT run_id, key, value FROM params WHERE run_id IN (${ids.map(() => '?').join(',')}) ORDER BY key`)
      .all(...ids) as Array<{ run_id: number; key: string; value: string }>;
    for (const r of rows) {
      let v: JsonValue;
      try {
        v = JSON.parse(r.value);
      } catch {
        v = r.value;
      }
      out.get(r.run_id)![r.key] = v;
    }
    return out;
  }

  /** Distinct param keys and distinct experiment/stage names: the choices of the runs table's filters. */
  choices(): { experiments: string[]; stages: string[]; paramKeys: string[] } {
    const col = (sql: string) => (this.db.prepare(sql).all() as Array<{ v: string }>).map((r) => r.v);
    return {
      experiments: col('SELECT name AS v FROM experiments ORDER BY name'),
      stages: col('SELECT DISTINCT stage AS v FROM runs WHERE stage IS NOT NULL ORDER BY stage'),
      paramKeys: col('SELECT DISTINCT key AS v FROM params ORDER BY key'),
    };
  }

  /**
   * The metric keys the runs logged, sorted. One index seek per key (the primary key starts with run_id, key),
   * not a scan of every point: a run with a million points costs what a run with ten does.
   */
  metricKeys(ids: readonly number[]): string[] {
    const first = this.db.prepare('SELECT min(key) AS k FROM metrics WHERE run_id = ?');
    const next = this.db.prepare('SELECT min(key) AS k FROM metrics WHERE run_id = ? AND key > ?');
    const keys = new Set<string>();
    for (const id of ids) {
      let k = (first.get(id) as { k: string | null }).k;
      while (k !== null) {
        keys.add(k);
        k = (next.get(id, k) as { k: string | null }).k;
      }
    }
    return [...keys].sort();
  }

  /** The value at each run's highest step for each key (null if never logged; NaN/±Infinity as numbers). */
  latest(ids: readonly number[], keys: readonly string[]): Map<number, Record<string, number | null>> {
    const out = new Map<number, Record<string, number | null>>();
    const q = this.db.prepare('SELECT value, nonfinite FROM metrics WHERE run_id = ? AND key = ? ORDER BY step DESC LIMIT 1');
    for (const id of ids) {
      const m: Record<string, number | null> = {};
      for (const k of keys) {
        const r = q.get(id, k) as { value: number | null; nonfinite: string | null } | undefined;
        m[k] = r === undefined ? null : decode(r.value, r.nonfinite);
      }
      out.set(id, m);
    }
    return out;
  }

  /** Points of one run with step > `since` (all of them when since is undefined), by key, sorted by step. */
  series(id: number, keys: readonly string[], since?: number): Record<string, WireSeries> {
    const out: Record<string, WireSeries> = {};
    // raw(): rows as arrays, not objects; this query is the dashboard's hot path (every curve, every poll).
    const q = this.db.prepare(`SELECT step, value, nonfinite, wall_time FROM metrics WHERE run_id = ? AND key = ?${since === undefined ? '' : ' AND step > ?'} ORDER BY step`).raw(true);
    for (const k of keys) {
      const rows = (since === undefined ? q.all(id, k) : q.all(id, k, since)) as Array<[number, number | null, string | null, number]>;
      const n = rows.length;
      const s: WireSeries = { steps: new Array(n), values: new Array(n), wallTimes: new Array(n) };
      for (let i = 0; i < n; i++) {
        const r = rows[i];
        s.steps[i] = r[0];
        s.values[i] = r[2] === null ? r[1] : null;
        s.wallTimes[i] = r[3];
        if (r[2] !== null) (s.nonfinite ??= {})[i] = r[2];
      }
      out[k] = s;
    }
    return out;
  }

  /** Changes whenever another connection commits to the file (SQLite's PRAGMA data_version): a cache key. */
  dataVersion(): number {
    return this.db.pragma('data_version', { simple: true }) as number;
  }

  artifacts(id: number): DashArtifact[] {
    return (this.db.prepare('SELECT kind, path, sha256, bytes, created_at FROM artifacts WHERE run_id = ? ORDER BY rowid').all(id) as Array<{
      kind: string; path: string; sha256: string; bytes: number; created_at: number;
    }>).map((a) => ({ kind: a.kind, path: a.path, sha256: a.sha256, bytes: a.bytes, createdAt: a.created_at }));
  }
}

function decode(value: number | null, nonfinite: string | null): number {
  if (nonfinite === null) return value as number;
  return nonfinite === 'nan' ? NaN : nonfinite === 'inf' ? Infinity : -Infinity;
}
