/**
 * Runs a sweep: every trial of a spec, in N worker processes (or in this process), logging to one SQLite file,
 * with optional successive halving; resumable.
 *
 * ```ts
 * const summary = await runSweep('sweeps/lr.json', { db: 'runs/modalab.db', workers: 2 });
 * summary.status;           // 'finished' | 'failed' | 'killed'
 * ```
 *
 * Resume. A sweep is identified by its name and spec hash: running the same spec again continues it. Finished
 * and pruned trials are kept. A trial whose run was stopped (Ctrl-C, a halving rung) or died (its process
 * killed) continues from its run's last checkpoint under the same run id; one that died before its first
 * checkpoint starts a new run (the dead one stays, 'failed'). A trial whose run finished while the runner was gone
 * is recorded, not rerun.
 */
import { fork, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tracker, STALE_AFTER_MS } from '../tracking';
import { decide, targetStep, TrialState } from './halving';
import { expandTrials, loadSweepSpec, normalizeSpec, NormalizedSpec, specHash, SweepSpec, Trial } from './spec';
import { claimSweep, loadTrials, setSweepStatus, SweepStatus, TrialRow, updateTrial } from './store';
import { runTrial, trialCheckpoint, TrialContext, TrialExecutor, TrialJob, TrialResult } from './trial';
import type { FromTrialWorker, ToTrialWorker } from './trial-worker';

export type SweepEvent =
  | { type: 'sweep'; sweepId: number; name: string; resumed: boolean; trials: number }
  | { type: 'start'; trial: number; stopAt: number; resume: boolean }
  | { type: 'run'; trial: number; runId: number }
  | { type: 'end'; trial: number; runId: number; outcome: 'finished' | 'paused' | 'pending'; steps: number; metric: number | null }
  | { type: 'error'; trial: number; message: string; willRetry: boolean }
  | { type: 'prune'; rung: number; promoted: number[]; pruned: number[] };

export interface RunSweepOptions {
  /** The tracking database (default runs/modalab.db). */
  db?: string;
  /** Worker processes (default 1). 0 runs the trials one by one in this process (notebooks, debugging). */
  workers?: number;
  /** Stops the sweep: running trials stop cleanly (checkpoint, run 'killed') and the sweep is 'killed', resumable. */
  signal?: AbortSignal;
  /** Native threads per worker (MODALAB_NUM_THREADS); default floor(cores / workers), at least 1. */
  threadsPerWorker?: number;
  /** Tries per trial within one call before it is marked failed (default 2). */
  maxAttempts?: number;
  onEvent?: (e: SweepEvent) => void;
  /** Runs trials in this process with a custom function (tests); overrides `workers`. */
  executor?: TrialExecutor;
  /** Run at most this many trials concurrently with `executor` (default 1). */
  concurrency?: number;
}

export interface SweepSummary {
  sweepId: number;
  name: string;
  specHash: string;
  status: SweepStatus;
  resumed: boolean;
  /** Trials this call started or continued. */
  trialsRun: number;
  trials: TrialRow[];
}

/** The compiled worker entry, beside this module (dist/ or a test build). */
export function trialWorkerPath(): string {
  const p = path.join(__dirname, 'trial-worker.js');
  if (!fs.existsSync(p)) {
    throw new Error(`sweep: worker entry not found at ${p}; worker processes need the compiled JavaScript (dist/), not the .ts sources (or use workers: 0)`);
  }
  return p;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------------------------
// Worker processes.

interface Worker {
  child: ChildProcess;
  ready: Promise<void>;
  busy: boolean;
  /** Settles the current job. */
  current: { trial: number; resolve: (r: TrialResult) => void; reject: (e: Error) => void; onRun?: (id: number) => void } | null;
  exited: boolean;
}

/** A pool of forked trial workers; `run` is a TrialExecutor. At most `size` jobs at once. */
export class WorkerPool {
  private readonly workers: Worker[] = [];

  constructor(readonly size: number, private readonly env: NodeJS.ProcessEnv) {}

  private spawn(): Worker {
    const child = fork(trialWorkerPath(), [], { env: this.env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let readyResolve!: () => void;
    let readyReject!: (e: Error) => void;
    const w: Worker = { child, busy: false, current: null, exited: false, ready: new Promise((res, rej) => ((readyResolve = res), (readyReject = rej))) };
    child.on('message', (m: FromTrialWorker) => {
      if (m.type === 'ready') readyResolve();
      else if (m.type === 'run-started') w.current?.onRun?.(m.runId);
      else if (m.type === 'done') this.settle(w, (c) => c.resolve(m.result));
      else if (m.type === 'error') this.settle(w, (c) => c.reject(new Error(m.message)));
    });
    const onGone = (why: string): void => {
      if (w.exited) return;
      w.exited = true;
      readyReject(new Error(`sweep worker ${child.pid} ${why} before it was ready`));
      this.settle(w, (c) => c.reject(new Error(`sweep worker process ${child.pid} ${why} while running trial ${c.trial}`)));
      const i = this.workers.indexOf(w);
      if (i >= 0) this.workers.splice(i, 1);
    };
    child.on('exit', (code, signal) => onGone(signal ? `was killed by ${signal}` : `exited with code ${code}`));
    child.on('error', (e) => onGone(`failed (${e.message})`));
    w.ready.catch(() => {}); // observed through run()
    this.workers.push(w);
    return w;
  }

  private settle(w: Worker, f: (c: NonNullable<Worker['current']>) => void): void {
    const c = w.current;
    w.current = null;
    w.busy = false;
    if (c) f(c);
  }

  readonly run: TrialExecutor = async (job: TrialJob, ctx: TrialContext) => {
    let w = this.workers.find((x) => !x.busy && !x.exited);
    if (!w) {
      if (this.workers.length >= this.size) throw new Error(`sweep: more than ${this.size} trials at once`);
      w = this.spawn();
    }
    w.busy = true;
    try {
      await w.ready;
    } catch (e) {
      w.busy = false;
      throw e;
    }
    const worker = w;
    return new Promise<TrialResult>((resolve, reject) => {
      worker.current = { trial: job.trial, resolve, reject, onRun: ctx.onRun };
      const onAbort = (): void => this.send(worker, { type: 'stop' });
      ctx.signal?.addEventListener('abort', onAbort, { once: true });
      const clear = (): void => ctx.signal?.removeEventListener('abort', onAbort);
      worker.current.resolve = (r) => (clear(), resolve(r));
      worker.current.reject = (e) => (clear(), reject(e));
      this.send(worker, { type: 'run', job });
      if (ctx.signal?.aborted) onAbort();
    });
  };

  private send(w: Worker, m: ToTrialWorker): void {
    if (!w.exited && w.child.connected) w.child.send(m);
  }

  /** Asks idle workers to exit and waits for them; kills any still alive after `graceMs`. */
  async close(graceMs = 10000): Promise<void> {
    const all = [...this.workers];
    for (const w of all) this.send(w, { type: 'exit' });
    const deadline = Date.now() + graceMs;
    while (all.some((w) => !w.exited) && Date.now() < deadline) await sleep(20);
    for (const w of all) if (!w.exited) w.child.kill('SIGKILL');
    while (all.some((w) => !w.exited)) await sleep(20);
  }

  /** Kills every worker now (a second Ctrl-C). */
  kill(): void {
    for (const w of this.workers) if (!w.exited) w.child.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------------------------------------------

/** Waits until no run of the sweep is 'running' under a live process, failing those whose process died. */
async function settleDeadRuns(tracker: Tracker, sweepId: number, timeoutMs = 60000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    tracker.failDeadRuns();
    const running = tracker.listRuns({ sweepId, status: 'running' });
    if (running.length === 0) return;
    const host = os.hostname();
    const alive = running.filter((r) => r.host === host && pidAlive(r.pid));
    if (Date.now() > deadline) {
      throw new Error(`sweep: run(s) ${running.map((r) => r.id).join(', ')} of this sweep are still running` +
        (alive.length ? ` (process ${alive.map((r) => r.pid).join(', ')} alive)` : '') + '; stop them first');
    }
    // A dead process's run is failed once its heartbeat is STALE_AFTER_MS old; a live orphan worker stops by itself
    // when it notices its runner is gone.
    await sleep(alive.length ? 200 : Math.min(STALE_AFTER_MS / 4, 500));
  }
}

/** Waits until one run is no longer 'running' (its process died: failed once stale; or it is stopping). */
async function settleRun(tracker: Tracker, runId: number, timeoutMs = 60000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (tracker.getRun(runId).status === 'running') {
    if (Date.now() > deadline) throw new Error(`sweep: run ${runId} is still running after ${timeoutMs / 1000} s; stop its process first`);
    await sleep(200);
    tracker.failDeadRuns();
  }
}

function toState(t: TrialRow): TrialState {
  return { index: t.index, outcome: t.outcome, rung: t.rung, metric: t.metric };
}

/** The target metric of a run at `step` (a rung), or its latest value (a finished run). */
function metricOf(tracker: Tracker, runId: number, key: string, step: number | null): number | null {
  if (step === null) return tracker.latest(runId, key)?.value ?? null;
  const s = tracker.metricSeries([runId], key)[0];
  const i = s.steps.indexOf(step);
  return i >= 0 ? s.values[i] : null;
}

/**
 * Runs (or resumes) a sweep. Every trial's config is built and validated before anything runs; the sweep and
 * its trials are recorded in the tracking database.
 */
export async function runSweep(specOrFile: SweepSpec | NormalizedSpec | string, opts: RunSweepOptions = {}): Promise<SweepSummary> {
  const spec = typeof specOrFile === 'string' ? loadSweepSpec(specOrFile) : normalizeSpec(specOrFile);
  const trials = expandTrials(spec);
  const hash = specHash(spec);
  const workers = opts.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 0 || workers > 64) throw new Error(`sweep: workers must be an integer in [0, 64], got ${workers}`);
  const maxAttempts = opts.maxAttempts ?? 2;
  const tracker = Tracker.open(opts.db);
  const dbFile = tracker.file;
  const emit = (e: SweepEvent): void => opts.onEvent?.(e);
  let pool: WorkerPool | null = null;
  try {
    const { sweep, created } = claimSweep(tracker.db, spec, hash, trials, pidAlive);
    const sweepId = sweep.id;
    emit({ type: 'sweep', sweepId, name: spec.name, resumed: !created, trials: trials.length });
    let executor: TrialExecutor;
    let slots: number;
    if (opts.executor) {
      executor = opts.executor;
      slots = Math.max(1, opts.concurrency ?? 1);
    } else if (workers === 0) {
      executor = runTrial;
      slots = 1;
    } else {
      const threads = opts.threadsPerWorker ?? Math.max(1, Math.floor(os.cpus().length / workers));
      pool = new WorkerPool(workers, { ...process.env, MODALAB_NUM_THREADS: String(threads) });
      executor = pool.run;
      slots = workers;
    }
    const summary = await schedule({ spec, trials, sweepId, tracker, dbFile, executor, slots, maxAttempts, signal: opts.signal, emit });
    return { sweepId, name: spec.name, specHash: hash, status: summary.status, resumed: !created, trialsRun: summary.trialsRun, trials: loadTrials(tracker.db, sweepId) };
  } finally {
    if (pool) await pool.close();
    tracker.close();
  }
}

interface ScheduleArgs {
  spec: NormalizedSpec;
  trials: Trial[];
  sweepId: number;
  tracker: Tracker;
  dbFile: string;
  executor: TrialExecutor;
  slots: number;
  maxAttempts: number;
  signal?: AbortSignal;
  emit: (e: SweepEvent) => void;
}

async function schedule(a: ScheduleArgs): Promise<{ status: SweepStatus; trialsRun: number }> {
  const { spec, trials, sweepId, tracker, dbFile } = a;
  const db = tracker.db;
  const rungs = spec.halving?.rungs ?? [];
  const keep = spec.halving?.keep ?? 1;
  const byIndex = new Map(trials.map((t) => [t.index, t]));
  const rows = (): TrialRow[] => loadTrials(db, sweepId);
  if (rows().length !== trials.length) throw new Error(`sweep ${spec.name}: the database has ${rows().length} trials for this spec, the spec ${trials.length}`);

  // Recovery: runs left 'running' by a runner or worker that died are failed (or finish stopping) first; trials
  // marked running become pending again (they continue from their run's checkpoint), failed ones get new tries.
  await settleDeadRuns(tracker, sweepId);
  for (const t of rows()) {
    if (t.outcome === 'running' || t.outcome === 'failed') updateTrial(db, sweepId, t.index, { outcome: 'pending', attempts: 0, error: null });
  }

  let trialsRun = 0;
  const inFlight = new Map<number, Promise<void>>();
  const stopped = (): boolean => a.signal?.aborted === true;

  /** Records what a trial's run reached (after a job, or found at recovery), and returns the new outcome. */
  const record = (t: TrialRow, runId: number, finished: boolean, steps: number): 'finished' | 'paused' | 'pending' => {
    const cfg = byIndex.get(t.index)!.config;
    const target = targetStep(t.rung, rungs, cfg.train.steps);
    if (finished) {
      const metric = metricOf(tracker, runId, spec.metric, null);
      updateTrial(db, sweepId, t.index, { runId, outcome: 'finished', rung: rungs.length, steps: cfg.train.steps, metric, error: null });
      a.emit({ type: 'end', trial: t.index, runId, outcome: 'finished', steps: cfg.train.steps, metric });
      return 'finished';
    }
    if (steps >= target && t.rung < rungs.length) {
      const metric = metricOf(tracker, runId, spec.metric, target);
      updateTrial(db, sweepId, t.index, { runId, outcome: 'paused', rung: t.rung + 1, steps, metric, error: null });
      a.emit({ type: 'end', trial: t.index, runId, outcome: 'paused', steps, metric });
      return 'paused';
    }
    updateTrial(db, sweepId, t.index, { runId, outcome: 'pending', steps });
    a.emit({ type: 'end', trial: t.index, runId, outcome: 'pending', steps, metric: null });
    return 'pending';
  };

  /** Builds the job that moves a pending trial on, or records the state its run already reached (null). */
  const jobFor = async (t: TrialRow): Promise<TrialJob | null> => {
    const trial = byIndex.get(t.index)!;
    const target = targetStep(t.rung, rungs, trial.config.train.steps);
    let resume: string | null = null;
    if (t.runId !== null) {
      await settleRun(tracker, t.runId); // a worker that died mid-trial leaves its run 'running' for a moment
      const info = tracker.getRun(t.runId);
      if (info.status === 'finished') {
        record(t, t.runId, true, trial.config.train.steps);
        return null;
      }
      const ck = trialCheckpoint(dbFile, t.runId);
      if (ck !== null) {
        if (ck.step >= target && t.rung < rungs.length) {
          record(t, t.runId, false, ck.step);
          return null;
        }
        resume = ck.file;
      }
    }
    return { sweepId, trial: t.index, config: trial.config, db: dbFile, resume, stopAt: t.rung < rungs.length ? target : null };
  };

  const launch = (t: TrialRow, job: TrialJob): void => {
    trialsRun++;
    updateTrial(db, sweepId, t.index, { outcome: 'running', attempts: t.attempts + 1 });
    a.emit({ type: 'start', trial: t.index, stopAt: job.stopAt ?? job.config.train.steps, resume: job.resume !== null });
    let runId: number | null = job.resume ? t.runId : null;
    const p = a.executor(job, {
      signal: a.signal,
      onRun: (id) => {
        runId = id;
        updateTrial(db, sweepId, t.index, { runId: id });
        a.emit({ type: 'run', trial: t.index, runId: id });
      },
    }).then(
      (res) => {
        const fresh = rows().find((r) => r.index === t.index)!;
        record(fresh, res.runId, res.status === 'finished', job.stopAt !== null && res.status === 'killed' && !stopped()
          ? job.stopAt
          : (trialCheckpoint(dbFile, res.runId)?.step ?? 0));
      },
      (e: Error) => {
        const fresh = rows().find((r) => r.index === t.index)!;
        const retry = !stopped() && fresh.attempts < a.maxAttempts;
        updateTrial(db, sweepId, t.index, { outcome: retry || stopped() ? 'pending' : 'failed', error: e.message, runId: runId ?? undefined });
        a.emit({ type: 'error', trial: t.index, message: e.message, willRetry: retry });
      },
    ).finally(() => inFlight.delete(t.index));
    inFlight.set(t.index, p);
  };

  for (;;) {
    if (!stopped()) {
      // Halving decisions that can be taken now (several rungs may resolve in a row).
      for (let d = decide(rows().map(toState), rungs.length, keep, spec.mode); d !== null; d = decide(rows().map(toState), rungs.length, keep, spec.mode)) {
        const dd = d;
        db.transaction(() => {
          for (const i of dd.promote) updateTrial(db, sweepId, i, { outcome: 'pending' });
          for (const i of dd.prune) updateTrial(db, sweepId, i, { outcome: 'pruned' });
        }).immediate();
        a.emit({ type: 'prune', rung: dd.rung, promoted: dd.promote, pruned: dd.prune });
      }
      // Start pending trials while slots are free (a settled trial is recorded without a job and the loop goes on).
      for (const t of rows()) {
        if (inFlight.size >= a.slots || stopped()) break;
        if (t.outcome !== 'pending' || inFlight.has(t.index)) continue;
        const job = await jobFor(t);
        if (job !== null) launch(t, job);
      }
    }
    if (inFlight.size === 0) {
      if (stopped()) break;
      const rs = rows();
      const open = rs.some((t) => t.outcome === 'pending' || t.outcome === 'running');
      if (!open && decide(rs.map(toState), rungs.length, keep, spec.mode) === null) break;
      continue;
    }
    await Promise.race(inFlight.values());
  }
  // Runs that a stop left 'running' are not possible here: every job has settled.
  const final = rows();
  const status: SweepStatus = stopped() && final.some((t) => t.outcome === 'pending' || t.outcome === 'running' || t.outcome === 'paused')
    ? 'killed'
    : final.some((t) => t.outcome === 'failed') ? 'failed' : 'finished';
  setSweepStatus(db, sweepId, status);
  return { status, trialsRun };
}
