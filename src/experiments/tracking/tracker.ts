/**
 * Experiment tracking in one SQLite file (default runs/modalab.db): runs, their configs, metrics and artifacts.
 *
 *   const tracker = Tracker.open();                       // or Tracker.open('runs/modalab.db')
 *   const run = tracker.startRun({ experiment: 'emoji-clip', stage: 'align', config: { lr: 1e-3 }, seed: 0 });
 *   for (let step = 0; step < 100; step++) run.log({ loss: 1 / (step + 1), lr: 1e-3 }, step);
 *   run.finish();
 *   tracker.metricSeries([run.id], 'loss');              // [{ runId, steps, values, wallTimes }]
 *
 * Writes: per file per process, one main connection (shared by the Trackers on that file: runs, params, status,
 * artifacts, migrations, reads) and one metric writer thread with its own connection (writer.ts), WAL mode, a busy
 * timeout, IMMEDIATE transactions. log() only appends to shared column buffers; at least every FLUSH_INTERVAL_MS
 * (checked on every log() call, so a synchronous training loop that never yields still hands over, and by an
 * unref'd timer, so an idle process does too but is never kept alive) the buffer is handed to the writer, which
 * inserts it with the heartbeat in one transaction beside the training loop. flush(), finish(), close(), queries
 * and process exit wait for the writer (Atomics.wait), so they stay synchronous. A process killed outright loses
 * at most the metrics of its last second. See docs/tracking.md, "Where the writes happen".
 *
 * Dead runs: a 'running' run whose process is gone (same host: its pid is not alive and its heartbeat is older
 * than STALE_AFTER_MS; another host: its heartbeat is older than REMOTE_STALE_AFTER_MS) is marked 'failed'
 * whenever a Tracker opens the file or lists runs; its metrics stay.
 */
import Database from 'better-sqlite3';
import { createHash } from 'crypto';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'worker_threads';
import { checkConfig, flattenConfig, type JsonValue } from './config';
import { migrate, newerSchemaError, readSchemaVersion, SCHEMA_VERSION } from './schema';
import type { BatchMessage, WriterData, WriterMessage, WriterReply } from './writer';

export const DEFAULT_DB = path.join('runs', 'modalab.db');
/** Buffered metrics are written at least this often (the guarantee is one second; half leaves slack). */
export const FLUSH_INTERVAL_MS = 500;
/** A same-host run whose pid is dead is failed once its heartbeat is this old (guards against pid namespaces). */
export const STALE_AFTER_MS = 2000;
/** A run on another host cannot have its pid checked: it is failed once its heartbeat is this old. */
export const REMOTE_STALE_AFTER_MS = 15 * 60 * 1000;
/** Waits this long for another process's write transaction before giving up with SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 10000;
/** A buffer this large is flushed at once, whatever the time, to bound memory. */
const MAX_BUFFERED = 50000;
/** Handoffs the writer may be behind before a handoff waits for it (bounds memory when it cannot keep up). */
const MAX_IN_FLIGHT = 8;
/** A synchronous flush gives up on a writer that has not answered after this long (it may wait on the busy timeout). */
const WRITER_WAIT_MS = BUSY_TIMEOUT_MS + 20000;

export type RunStatus = 'running' | 'finished' | 'failed' | 'killed';

export interface StartRunOptions {
  experiment: string;
  /** Defaults to `<stage or 'run'>-<id>`. */
  name?: string;
  stage?: string;
  config?: { [key: string]: unknown };
  seed?: number;
  parentRunId?: number;
  /** The sweep (a row of the sweeps table) this run is a trial of. */
  sweepId?: number;
}

export interface RunInfo {
  id: number;
  experiment: string;
  name: string;
  stage: string | null;
  status: RunStatus;
  config: { [key: string]: JsonValue };
  seed: number | null;
  gitSha: string | null;
  host: string;
  pid: number;
  parentRunId: number | null;
  /** The sweep this run is a trial of, or null. */
  sweepId: number | null;
  /** Seconds since the Unix epoch. */
  startedAt: number;
  endedAt: number | null;
  heartbeatAt: number;
}

export interface RunFilter {
  experiment?: string;
  stage?: string;
  status?: RunStatus;
  /** Only the trials of this sweep. */
  sweepId?: number;
  /** Dotted config keys and the values they must equal (compared as JSON). */
  params?: { [key: string]: JsonValue };
}

export interface MetricSeries {
  runId: number;
  steps: number[];
  values: number[];
  /** Seconds since the Unix epoch. */
  wallTimes: number[];
}

export interface MetricPoint {
  step: number;
  value: number;
  wallTime: number;
}

export interface ParamsTable {
  /** Every param key any of the runs has, sorted. */
  paramKeys: string[];
  metricKeys: string[];
  rows: Array<{
    runId: number;
    name: string;
    status: RunStatus;
    params: { [key: string]: JsonValue };
    /** The latest value of each metric key, null where the run never logged it. */
    metrics: { [key: string]: number | null };
  }>;
}

export interface ArtifactInfo {
  runId: number;
  kind: string;
  path: string;
  sha256: string;
  bytes: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Non-finite values (see schema.ts): value NULL plus a `nonfinite` tag.

function decodeValue(value: number | null, nonfinite: string | null): number {
  if (nonfinite === null) return value as number;
  return nonfinite === 'nan' ? NaN : nonfinite === 'inf' ? Infinity : -Infinity;
}

// ---------------------------------------------------------------------------------------------------------------
// One write connection per file per process.

/** @internal */
export interface Conn {
  db: Database.Database;
  file: string;
  refs: number;
  trackers: Set<Tracker>;
  /** Metric keys as small integers (the buffers hold ids; the writer keeps the same table). */
  keyIds: Map<string, number>;
  keyNames: string[];
  /** The metric writer thread, started with the first flush; null until then or where none can run. */
  writer: WriterClient | null | undefined;
}
const conns = new Map<string, Conn>();

const WRITER_JS = path.join(__dirname, 'writer.js');

/**
 * The main thread's side of the metric writer (writer.ts). `handoff` gives it a batch and returns at once;
 * `flushSync` gives it one and waits until it is committed, throwing the writer's error if it failed.
 */
export class WriterClient {
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly ctl: Int32Array;
  private posted = 0;
  private sentKeys = 0;
  private errors: WriterReply[] = [];

  constructor(private readonly conn: Conn) {
    const sab = new SharedArrayBuffer(16);
    this.ctl = new Int32Array(sab);
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const data: WriterData & { modalabTrackingWriter: true } = {
      modalabTrackingWriter: true, file: conn.file, ctl: sab, port: port2, busyTimeoutMs: BUSY_TIMEOUT_MS,
    };
    this.worker = new Worker(WRITER_JS, { workerData: data, transferList: [port2] });
    this.worker.unref(); // a tracker never keeps a process alive
    this.worker.on('error', () => Atomics.store(this.ctl, 2, 1)); // (the writer catches its own errors)
  }

  get stopped(): boolean {
    return Atomics.load(this.ctl, 2) === 1;
  }

  /** Requests not yet handled. */
  get behind(): number {
    return this.posted - Atomics.load(this.ctl, 1);
  }

  /** Requests handled (committed or failed): a buffer that went with request `seq` is free once this is >= seq. */
  get handled(): number {
    return Atomics.load(this.ctl, 1);
  }

  private newKeys(): string[] {
    const names = this.conn.keyNames;
    if (this.sentKeys === names.length) return [];
    const k = names.slice(this.sentKeys);
    this.sentKeys = names.length;
    return k;
  }

  /**
   * Posts a request. `wake`: wake the writer now (a caller about to wait). A handoff does not: waking a thread
   * costs the training thread a system call and, on a busy machine, its core; the writer looks for work every
   * WRITER_POLL_MS anyway.
   */
  private post(msg: WriterMessage, wake: boolean): number {
    msg.seq = this.posted + 1;
    this.port.postMessage(msg);
    this.posted++;
    Atomics.store(this.ctl, 0, this.posted);
    if (wake) Atomics.notify(this.ctl, 0);
    return this.posted;
  }

  /** Waits until request `seq` is handled; false if the writer stopped or did not answer in time. */
  private waitFor(seq: number, timeoutMs: number): boolean {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const done = Atomics.load(this.ctl, 1);
      if (done >= seq) return true;
      if (this.stopped) return false;
      const left = end - Date.now();
      if (left <= 0) return false;
      Atomics.wait(this.ctl, 1, done, Math.min(left, 200));
    }
  }

  private takeReplies(): void {
    for (let m = receiveMessageOnPort(this.port); m !== undefined; m = receiveMessageOnPort(this.port)) {
      this.errors.push(m.message as WriterReply);
    }
  }

  /**
   * Hands a batch over without waiting (unless the writer is MAX_IN_FLIGHT requests behind) and marks the buffer
   * with the request's number: the caller must not touch it again until `handled` reaches that number.
   */
  handoff(b: Pending, runId: number): void {
    if (this.behind >= MAX_IN_FLIGHT) {
      Atomics.notify(this.ctl, 0);
      this.waitFor(this.posted - MAX_IN_FLIGHT + 1, WRITER_WAIT_MS);
    }
    b.seq = this.post(b.message(runId, false, this.newKeys()), false);
  }

  /**
   * Writes a batch (and everything handed over before it) and waits for the commit. The caller keeps its rows
   * if this throws (the writer does not keep a failed synchronous batch).
   */
  flushSync(b: Pending, runId: number): void {
    const seq = this.post(b.message(runId, true, this.newKeys()), true);
    b.seq = seq;
    if (!this.waitFor(seq, WRITER_WAIT_MS)) {
      throw new Error(`tracking: the metric writer for ${this.conn.file} ${this.stopped ? 'has stopped' : `did not answer within ${WRITER_WAIT_MS} ms`}`);
    }
    this.takeReplies();
    const mine = this.errors.find((e) => e.seq === seq || e.seq === -1);
    // Earlier handoffs' errors are dropped once a flush succeeds: the writer retried and wrote them with this one.
    this.errors = [];
    if (mine) throw new Error(`tracking: writing metrics of run ${runId} to ${this.conn.file} failed: ${mine.error}`);
  }

  /** Waits for everything handed over, then stops the thread. */
  close(): void {
    if (!this.stopped) {
      const seq = this.post({ type: 'close', seq: 0, newKeys: this.newKeys() }, true);
      this.waitFor(seq, WRITER_WAIT_MS);
    }
    this.port.close();
    void this.worker.terminate();
  }
}

/** The writer for this file, started on first use; null where none can run (then the main thread writes). */
function writerOf(c: Conn): WriterClient | null {
  if (c.writer === undefined) {
    c.writer = null;
    if (process.env.MODALAB_TRACKING_WRITER !== 'inline' && fs.existsSync(WRITER_JS)) {
      try {
        c.writer = new WriterClient(c);
      } catch {
        c.writer = null; // no worker threads here: write on the main thread as before
      }
    }
  }
  return c.writer !== null && c.writer.stopped ? null : c.writer;
}

const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');

/** Refuses a file that exists, is not empty and does not start with SQLite's header, before SQLite opens it. */
function checkHeader(file: string): void {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  try {
    const head = Buffer.alloc(16);
    const n = fs.readSync(fd, head, 0, 16, 0);
    if (n === 0) return;
    if (n < 16 || !head.equals(SQLITE_MAGIC)) {
      throw new Error(`tracking: ${file} is not an SQLite database (its header is not "SQLite format 3"); nothing was changed`);
    }
  } finally {
    fs.closeSync(fd);
  }
}

function openConn(file: string): Conn {
  const key = path.resolve(file);
  const have = conns.get(key);
  if (have) {
    have.refs++;
    return have;
  }
  checkHeader(key);
  fs.mkdirSync(path.dirname(key), { recursive: true });
  const db = new Database(key);
  try {
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    // Read the version before changing anything on disk (WAL mode rewrites the header of a rollback-mode file).
    let v: number;
    try {
      v = readSchemaVersion(db);
    } catch (e) {
      throw new Error(`tracking: ${key} could not be read as an SQLite database: ${(e as Error).message}`);
    }
    if (v > SCHEMA_VERSION) throw newerSchemaError(key, v);
    setWal(db);
    db.pragma('synchronous = NORMAL'); // WAL + NORMAL: durable against a killed process, the case we test
    db.pragma('foreign_keys = ON');
    migrate(db, key);
  } catch (e) {
    db.close();
    throw e;
  }
  const c: Conn = { db, file: key, refs: 1, trackers: new Set(), keyIds: new Map(), keyNames: [], writer: undefined };
  conns.set(key, c);
  return c;
}

/** Two processes opening a fresh file at once can see SQLITE_BUSY here, which the busy handler does not cover. */
function setWal(db: Database.Database): void {
  for (let attempt = 0; ; attempt++) {
    try {
      db.pragma('journal_mode = WAL');
      return;
    } catch (e) {
      if ((e as { code?: string }).code !== 'SQLITE_BUSY' || attempt >= 100) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
}

function releaseConn(c: Conn): void {
  if (--c.refs > 0) return;
  conns.delete(c.file);
  try {
    c.writer?.close();
  } finally {
    c.db.close();
  }
}

// At exit, flush what every open tracker buffered and fail the runs nobody finished (synchronous, so it works in
// 'exit'). A SIGKILL skips this; the heartbeat check covers that case.
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of conns.values()) {
      for (const t of c.trackers) {
        try {
          t.close();
        } catch {
          // the process is ending; a failure here must not mask its real exit status
        }
      }
    }
  });
}

let cachedGitSha: string | null | undefined;
function gitSha(): string | null {
  if (cachedGitSha !== undefined) return cachedGitSha;
  try {
    const out = execFileSync('git', ['rev-parse', 'HEAD'], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 2000 });
    const sha = out.toString().trim();
    cachedGitSha = /^[0-9a-f]{40,64}$/.test(sha) ? sha : null;
  } catch {
    cachedGitSha = null; // not a checkout, or no git: a run is still recorded
  }
  return cachedGitSha;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const now = (): number => Date.now() / 1000;

function checkName(what: string, v: unknown, where: string): string {
  if (typeof v !== 'string' || v.trim() === '') {
    throw new Error(`${where}: ${what} must be a non-empty string, got ${typeof v === 'string' ? JSON.stringify(v) : typeof v}`);
  }
  return v;
}

interface RunRow {
  id: number;
  experiment: string;
  name: string;
  stage: string | null;
  status: RunStatus;
  config_json: string;
  seed: number | null;
  git_sha: string | null;
  host: string;
  pid: number;
  parent_run_id: number | null;
  sweep_id: number | null;
  started_at: number;
  ended_at: number | null;
  heartbeat_at: number;
}

function toInfo(r: RunRow): RunInfo {
  return {
    id: r.id,
    experiment: r.experiment,
    name: r.name,
    stage: r.stage,
    status: r.status,
    config: JSON.parse(r.config_json),
    seed: r.seed,
    gitSha: r.git_sha,
    host: r.host,
    pid: r.pid,
    parentRunId: r.parent_run_id,
    sweepId: r.sweep_id ?? null,
    startedAt: r.started_at,
    endedAt: r.ended_at,
    heartbeatAt: r.heartbeat_at,
  };
}

const RUN_SELECT = `SELECT r.*, e.name AS experiment FROM runs r JOIN experiments e ON e.id = r.experiment_id`;

// ---------------------------------------------------------------------------------------------------------------

export class Tracker {
  readonly file: string;
  private conn: Conn | null;
  private readonly active = new Set<Run>();
  private timer: NodeJS.Timeout | null = null;

  private constructor(conn: Conn) {
    this.conn = conn;
    this.file = conn.file;
    conn.trackers.add(this);
    installExitHook();
    this.failDeadRuns();
  }

  /**
   * Opens (creating it and its folder if needed) the tracking database. Throws, changing nothing on disk, for a
   * file that is not SQLite or has a newer schema version.
   */
  static open(file: string = DEFAULT_DB): Tracker {
    return new Tracker(openConn(file));
  }

  /** @internal */
  get db(): Database.Database {
    return this._conn.db;
  }

  /** @internal */
  get _conn(): Conn {
    if (this.conn === null) throw new Error(`tracking: the tracker for ${this.file} is closed`);
    return this.conn;
  }

  /** Starts a run: validates the config, then records it (as JSON and as dotted params), seed, git sha, host. */
  startRun(opts: StartRunOptions): Run {
    const where = 'startRun';
    if (opts === null || typeof opts !== 'object') throw new Error(`${where}: options must be an object`);
    const experiment = checkName('experiment', opts.experiment, where);
    if (opts.name !== undefined) checkName('name', opts.name, where);
    if (opts.stage !== undefined) checkName('stage', opts.stage, where);
    const config = opts.config ?? {};
    checkConfig(config, where);
    if (opts.seed !== undefined && !Number.isSafeInteger(opts.seed)) {
      throw new Error(`${where}: seed must be an integer, got ${String(opts.seed)}`);
    }
    const db = this.db;
    if (opts.parentRunId !== undefined) {
      if (!Number.isSafeInteger(opts.parentRunId) || db.prepare('SELECT 1 FROM runs WHERE id = ?').get(opts.parentRunId) === undefined) {
        throw new Error(`${where}: parentRunId ${String(opts.parentRunId)} is not a run in ${this.file}`);
      }
    }
    if (opts.sweepId !== undefined) {
      if (!Number.isSafeInteger(opts.sweepId) || db.prepare('SELECT 1 FROM sweeps WHERE id = ?').get(opts.sweepId) === undefined) {
        throw new Error(`${where}: sweepId ${String(opts.sweepId)} is not a sweep in ${this.file}`);
      }
    }
    const params = flattenConfig(config);
    const sha = gitSha();
    const t = now();
    const id = db.transaction(() => {
      db.prepare('INSERT OR IGNORE INTO experiments (name, created_at) VALUES (?, ?)').run(experiment, t);
      const exp = db.prepare('SELECT id FROM experiments WHERE name = ?').get(experiment) as { id: number };
      const info = db
        .prepare(
          `INSERT INTO runs (experiment_id, parent_run_id, sweep_id, name, stage, status, config_json, seed, git_sha, host,
                             pid, started_at, heartbeat_at)
           VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(exp.id, opts.parentRunId ?? null, opts.sweepId ?? null, opts.name ?? '', opts.stage ?? null, JSON.stringify(config),
          opts.seed ?? null, sha, os.hostname(), process.pid, t, t);
      const runId = Number(info.lastInsertRowid);
      if (opts.name === undefined) {
        db.prepare('UPDATE runs SET name = ? WHERE id = ?').run(`${opts.stage ?? 'run'}-${runId}`, runId);
      }
      const ins = db.prepare('INSERT INTO params (run_id, key, value) VALUES (?, ?, ?)');
      for (const [k, v] of params) ins.run(runId, k, v);
      return runId;
    }).immediate();
    const name = opts.name ?? `${opts.stage ?? 'run'}-${id}`;
    const run = new Run(this, id, experiment, name, opts.stage ?? null);
    this.active.add(run);
    this.ensureTimer();
    return run;
  }

  /**
   * Reopens a run that stopped early (killed, or failed because its process died) so a training stage can
   * continue it: the same id, status 'running' again under this process, its params and metrics kept. Metrics
   * logged again at a step it already has replace the old values. A finished or still-running run is refused.
   */
  resumeRun(runId: number): Run {
    if (!Number.isSafeInteger(runId)) throw new Error(`resumeRun: run id must be an integer, got ${String(runId)}`);
    this.failDeadRuns();
    const info = this.getRun(runId);
    if (info.status === 'running') {
      throw new Error(`resumeRun: run ${runId} is still running (pid ${info.pid} on ${info.host}); stop it first`);
    }
    if (info.status === 'finished') throw new Error(`resumeRun: run ${runId} already finished; start a new run instead`);
    const t = now();
    this.db.prepare("UPDATE runs SET status = 'running', ended_at = NULL, host = ?, pid = ?, heartbeat_at = ? WHERE id = ?")
      .run(os.hostname(), process.pid, t, runId);
    const run = new Run(this, runId, info.experiment, info.name, info.stage);
    this.active.add(run);
    this.ensureTimer();
    return run;
  }

  /** Runs matching every given field, oldest first. Marks dead runs failed first. */
  listRuns(filter: RunFilter = {}): RunInfo[] {
    this.failDeadRuns();
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.experiment !== undefined) (where.push('e.name = ?'), args.push(filter.experiment));
    if (filter.stage !== undefined) (where.push('r.stage = ?'), args.push(filter.stage));
    if (filter.status !== undefined) (where.push('r.status = ?'), args.push(filter.status));
    if (filter.sweepId !== undefined) (where.push('r.sweep_id = ?'), args.push(filter.sweepId));
    for (const [k, v] of Object.entries(filter.params ?? {})) {
      where.push('EXISTS (SELECT 1 FROM params p WHERE p.run_id = r.id AND p.key = ? AND p.value = ?)');
      args.push(k, JSON.stringify(v));
    }
    const sql = `${RUN_SELECT}${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY r.id`;
    return (this.db.prepare(sql).all(...args) as RunRow[]).map(toInfo);
  }

  getRun(runId: number): RunInfo {
    const r = this.db.prepare(`${RUN_SELECT} WHERE r.id = ?`).get(runId) as RunRow | undefined;
    if (r === undefined) throw new Error(`tracking: no run ${runId} in ${this.file}`);
    return toInfo(r);
  }

  /** One series per run (in the order given), sorted by step; runs that never logged `key` get empty arrays. */
  metricSeries(runIds: number | number[], key: string): MetricSeries[] {
    this.flushAll();
    const ids = Array.isArray(runIds) ? runIds : [runIds];
    const q = this.db.prepare('SELECT step, value, nonfinite, wall_time FROM metrics WHERE run_id = ? AND key = ? ORDER BY step');
    return ids.map((runId) => {
      const rows = q.all(runId, key) as Array<{ step: number; value: number | null; nonfinite: string | null; wall_time: number }>;
      return {
        runId,
        steps: rows.map((r) => r.step),
        values: rows.map((r) => decodeValue(r.value, r.nonfinite)),
        wallTimes: rows.map((r) => r.wall_time),
      };
    });
  }

  /** The value at the highest step, or null if the run never logged `key`. */
  latest(runId: number, key: string): MetricPoint | null {
    this.flushAll();
    const r = this.db
      .prepare('SELECT step, value, nonfinite, wall_time FROM metrics WHERE run_id = ? AND key = ? ORDER BY step DESC LIMIT 1')
      .get(runId, key) as { step: number; value: number | null; nonfinite: string | null; wall_time: number } | undefined;
    return r === undefined ? null : { step: r.step, value: decodeValue(r.value, r.nonfinite), wallTime: r.wall_time };
  }

  /**
   * The smallest ('min') or largest ('max') value and its step (the earliest step on ties). NaN is never best;
   * ±Infinity are ordinary ordered values. Null if the run has no non-NaN value for `key`.
   */
  best(runId: number, key: string, mode: 'min' | 'max'): MetricPoint | null {
    if (mode !== 'min' && mode !== 'max') throw new Error(`best: mode must be 'min' or 'max', got ${String(mode)}`);
    const s = this.metricSeries([runId], key)[0];
    let bi = -1;
    for (let i = 0; i < s.values.length; i++) {
      const v = s.values[i];
      if (Number.isNaN(v)) continue;
      if (bi < 0 || (mode === 'min' ? v < s.values[bi] : v > s.values[bi])) bi = i;
    }
    return bi < 0 ? null : { step: s.steps[bi], value: s.values[bi], wallTime: s.wallTimes[bi] };
  }

  /** A sweep table: each run's params beside the latest value of each metric key. */
  paramsTable(runIds: number[], metricKeys: string[]): ParamsTable {
    this.flushAll();
    const keys = new Set<string>();
    const pq = this.db.prepare('SELECT key, value FROM params WHERE run_id = ?');
    const rows = runIds.map((runId) => {
      const info = this.getRun(runId);
      const params: { [key: string]: JsonValue } = {};
      for (const p of pq.all(runId) as Array<{ key: string; value: string }>) {
        params[p.key] = JSON.parse(p.value);
        keys.add(p.key);
      }
      const metrics: { [key: string]: number | null } = {};
      for (const k of metricKeys) metrics[k] = this.latest(runId, k)?.value ?? null;
      return { runId, name: info.name, status: info.status, params, metrics };
    });
    return { paramKeys: [...keys].sort(), metricKeys: [...metricKeys], rows };
  }

  artifacts(runId: number): ArtifactInfo[] {
    return (this.db.prepare('SELECT run_id, kind, path, sha256, bytes FROM artifacts WHERE run_id = ? ORDER BY rowid').all(runId) as Array<{
      run_id: number; kind: string; path: string; sha256: string; bytes: number;
    }>).map((a) => ({ runId: a.run_id, kind: a.kind, path: a.path, sha256: a.sha256, bytes: a.bytes }));
  }

  /** Writes every active run's buffered metrics now. */
  flushAll(): void {
    for (const r of this.active) r.flush();
  }

  /**
   * Flushes, fails runs still active (finish them first to record another status) and releases the connection.
   * Idempotent.
   */
  close(): void {
    if (this.conn === null) return;
    for (const r of [...this.active]) r.finish('failed');
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.conn.trackers.delete(this);
    releaseConn(this.conn);
    this.conn = null;
  }

  /** Marks 'running' runs whose process is gone as failed (see the module comment). */
  failDeadRuns(): number {
    const db = this.db;
    const host = os.hostname();
    const t = now();
    const running = db.prepare("SELECT id, host, pid, heartbeat_at FROM runs WHERE status = 'running'").all() as Array<{
      id: number; host: string; pid: number; heartbeat_at: number;
    }>;
    const dead = running.filter((r) => {
      const age = (t - r.heartbeat_at) * 1000;
      if (r.host !== host) return age > REMOTE_STALE_AFTER_MS;
      if (r.pid === process.pid) return false;
      return age > STALE_AFTER_MS && !pidAlive(r.pid);
    });
    if (dead.length === 0) return 0;
    const upd = db.prepare("UPDATE runs SET status = 'failed', ended_at = heartbeat_at WHERE id = ? AND status = 'running'");
    db.transaction(() => {
      for (const r of dead) upd.run(r.id);
    }).immediate();
    return dead.length;
  }

  /** @internal */
  _finished(run: Run): void {
    this.active.delete(run);
    if (this.active.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private ensureTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      for (const r of this.active) {
        try {
          r.flush(true);
        } catch {
          // a busy database: the next tick or log() retries; the buffer is kept
        }
      }
    }, FLUSH_INTERVAL_MS);
    this.timer.unref(); // a tracker never keeps a process alive
  }
}

/**
 * Buffered metric rows, column by column in typed arrays over one SharedArrayBuffer (no object per row: log() is
 * on the training loop's path). A handoff shares the memory with the writer thread (nothing is copied); the
 * buffer is reused once the writer has handled the request that carried it (`seq`).
 */
class Pending {
  n = 0;
  /** The writer request that last carried these rows; free again once the writer has handled it. */
  seq = 0;
  keyIds!: Int32Array;
  steps!: Float64Array;
  values!: Float64Array;
  walls!: Float64Array;
  constructor(cap = 1024) {
    this.alloc(cap);
  }
  get length(): number {
    return this.n;
  }
  get capacity(): number {
    return this.keyIds.length;
  }
  private alloc(cap: number): void {
    const sab = new SharedArrayBuffer(cap * 28); // cap is even, so the float64 columns are 8-byte aligned
    this.keyIds = new Int32Array(sab, 0, cap);
    this.steps = new Float64Array(sab, cap * 4, cap);
    this.values = new Float64Array(sab, cap * 12, cap);
    this.walls = new Float64Array(sab, cap * 20, cap);
  }
  /** Makes room for `more` rows. */
  reserve(more: number): void {
    const need = this.n + more;
    if (need <= this.keyIds.length) return;
    let cap = this.keyIds.length * 2;
    while (cap < need) cap *= 2;
    const old = [this.keyIds, this.steps, this.values, this.walls];
    this.alloc(cap);
    this.keyIds.set(old[0].subarray(0, this.n));
    this.steps.set(old[1].subarray(0, this.n));
    this.values.set(old[2].subarray(0, this.n));
    this.walls.set(old[3].subarray(0, this.n));
  }
  /** The rows as a writer request (the arrays are shared with the writer, not copied). */
  message(runId: number, sync: boolean, newKeys: string[]): BatchMessage {
    return {
      type: 'batch', seq: 0, sync, runId, n: this.n, newKeys, heartbeat: now(),
      keyIds: this.keyIds, steps: this.steps, values: this.values, walls: this.walls,
    };
  }
}

export class Run {
  private buffer = new Pending();
  /** Buffers handed to the writer, reused once it has handled them. */
  private spares: Pending[] = [];
  private lastFlush = Date.now();
  private _status: RunStatus = 'running';
  private write: Database.Transaction<(rows: Pending) => void> | null = null;
  private insertStmt: Database.Statement | null = null;
  private heartbeatStmt: Database.Statement | null = null;
  /** @internal Batches handed to the writer thread without waiting (the tracking bench counts them). */
  _handoffs = 0;

  /** @internal */
  constructor(
    private readonly tracker: Tracker,
    readonly id: number,
    readonly experiment: string,
    readonly name: string,
    readonly stage: string | null,
  ) {}

  get status(): RunStatus {
    return this._status;
  }

  /**
   * Records metrics at `step` (a non-negative integer). Buffered; written within FLUSH_INTERVAL_MS and at
   * finish. Logging the same key and step twice keeps the last value. NaN and ±Infinity are kept exactly.
   * Throws, recording nothing from this call, for an empty key or a value that is not a number.
   */
  log(metrics: Record<string, number>, step: number): void {
    if (this._status !== 'running') throw new Error(`log: run ${this.id} is ${this._status}; it no longer accepts metrics`);
    if (!Number.isSafeInteger(step) || step < 0) throw new Error(`log: step must be a non-negative integer, got ${String(step)}`);
    if (metrics === null || typeof metrics !== 'object') throw new Error('log: metrics must be an object of name -> number');
    // Check everything first: a bad entry records nothing from this call.
    const keys = Object.keys(metrics);
    for (const k of keys) {
      const v = metrics[k];
      if (typeof v !== 'number') {
        throw new Error(`log: metric ${JSON.stringify(k)} is ${typeof v}, not a number; nothing from this call was recorded`);
      }
      if (k.length === 0 || k.trim() === '') throw new Error(`log: a metric name is empty (step ${step}); nothing from this call was recorded`);
    }
    const conn = this.tracker._conn;
    const wallTime = now();
    const b = this.buffer;
    b.reserve(keys.length);
    let n = b.n;
    for (const k of keys) {
      let id = conn.keyIds.get(k);
      if (id === undefined) {
        id = conn.keyNames.length;
        conn.keyIds.set(k, id);
        conn.keyNames.push(k);
      }
      b.keyIds[n] = id;
      b.steps[n] = step;
      b.values[n] = metrics[k];
      b.walls[n] = wallTime;
      n++;
    }
    b.n = n;
    if (n >= MAX_BUFFERED || Date.now() - this.lastFlush >= FLUSH_INTERVAL_MS) this.flush(true);
  }

  /**
   * Writes the buffered metrics and the heartbeat in one transaction, and waits for the commit. (With
   * `background`, as log() and the tracker's timer call it, the rows are handed to the writer thread and this
   * returns at once; the writer commits them within milliseconds.)
   */
  flush(background = false): void {
    if (this._status !== 'running') return;
    if (background && this.buffer.n < MAX_BUFFERED && Date.now() - this.lastFlush < FLUSH_INTERVAL_MS / 2) return;
    const conn = this.tracker._conn;
    // (A run that logged nothing yet does not start the writer thread just for its heartbeat.)
    const writer = conn.db.inTransaction || (conn.writer === undefined && this.buffer.n === 0) ? null : writerOf(conn);
    if (writer === null) {
      // No writer thread (or the caller holds a transaction on the main connection, which the writer would wait
      // for): write here, as one transaction on the main connection.
      this.writeHere();
    } else if (background) {
      const sent = this.buffer;
      writer.handoff(sent, this.id);
      this._handoffs++;
      const handled = writer.handled;
      const i = this.spares.findIndex((p) => p.seq <= handled);
      this.buffer = i >= 0 ? this.spares.splice(i, 1)[0] : new Pending(sent.capacity);
      this.buffer.n = 0;
      if (this.spares.length < MAX_IN_FLIGHT) this.spares.push(sent);
    } else {
      writer.flushSync(this.buffer, this.id); // throws, keeping the buffer, if the write failed
      this.buffer.n = 0;
    }
    this.lastFlush = Date.now();
  }

  private writeHere(): void {
    const db = this.tracker.db;
    const names = this.tracker._conn.keyNames;
    // Statements and the transaction are prepared once per run: preparing is most of a small flush's cost.
    this.write ??= db.transaction((rows: Pending) => {
      const ins = (this.insertStmt ??= db.prepare(
        'INSERT OR REPLACE INTO metrics (run_id, key, step, value, wall_time, nonfinite) VALUES (?, ?, ?, ?, ?, ?)'));
      const id = this.id;
      for (let i = 0; i < rows.n; i++) {
        const v = rows.values[i];
        if (Number.isFinite(v)) ins.run(id, names[rows.keyIds[i]], rows.steps[i], v, rows.walls[i], null);
        else ins.run(id, names[rows.keyIds[i]], rows.steps[i], null, rows.walls[i], Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf');
      }
      (this.heartbeatStmt ??= db.prepare('UPDATE runs SET heartbeat_at = ? WHERE id = ?')).run(now(), id);
    });
    if (db.inTransaction) {
      this.write(this.buffer); // a savepoint inside the caller's transaction
    } else {
      // Every row of this batch references this run, which exists (startRun / resumeRun made it, and nothing
      // deletes runs): checking the foreign key per row was half the cost of a flush, so it is off for this
      // transaction only. (The pragma cannot change inside a transaction, hence around it.)
      db.pragma('foreign_keys = OFF');
      try {
        this.write.immediate(this.buffer);
      } finally {
        db.pragma('foreign_keys = ON');
      }
    }
    this.buffer.n = 0;
  }

  /** Records a file (checkpoint, tokenizer, report) with its sha256 and size. */
  logArtifact(kind: string, file: string): ArtifactInfo {
    checkName('kind', kind, 'logArtifact');
    checkName('path', file, 'logArtifact');
    const abs = path.resolve(file);
    const st = fs.statSync(abs);
    if (!st.isFile()) throw new Error(`logArtifact: ${abs} is not a file`);
    const h = createHash('sha256');
    const fd = fs.openSync(abs, 'r');
    let bytes = 0;
    try {
      const buf = Buffer.alloc(1 << 20);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        h.update(buf.subarray(0, n));
        bytes += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    const sha256 = h.digest('hex');
    this.tracker.db
      .prepare('INSERT INTO artifacts (run_id, kind, path, sha256, bytes, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(this.id, kind, abs, sha256, bytes, now());
    return { runId: this.id, kind, path: abs, sha256, bytes };
  }

  /** Flushes and records the final status. Finishing twice is a no-op. */
  finish(status: 'finished' | 'failed' | 'killed' = 'finished'): void {
    if (status !== 'finished' && status !== 'failed' && status !== 'killed') {
      throw new Error(`finish: status must be 'finished', 'failed' or 'killed', got ${String(status)}`);
    }
    if (this._status !== 'running') return;
    this.flush();
    const t = now();
    this.tracker.db.prepare('UPDATE runs SET status = ?, ended_at = ?, heartbeat_at = ? WHERE id = ?').run(status, t, t, this.id);
    this._status = status;
    this.tracker._finished(this);
  }
}
