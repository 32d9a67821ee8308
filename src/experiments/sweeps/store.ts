/**
 * The sweeps and sweep_trials tables (tracking schema v3): a sweep row per (name, spec hash), a row per trial.
 * Only the sweep's runner process writes them; trials' runs are written by the workers through the Tracker.
 */
import * as os from 'os';
import type Database from 'better-sqlite3';
import type { Json } from '../stages/config';
import type { TrialOutcome } from './halving';
import type { NormalizedSpec, Trial } from './spec';

export type SweepStatus = 'running' | 'finished' | 'failed' | 'killed';

export interface SweepRow {
  id: number;
  name: string;
  specHash: string;
  spec: NormalizedSpec;
  status: SweepStatus;
  host: string | null;
  pid: number | null;
  createdAt: number;
  endedAt: number | null;
}

export interface TrialRow {
  sweepId: number;
  index: number;
  params: { [key: string]: Json };
  runId: number | null;
  rung: number;
  steps: number;
  outcome: TrialOutcome;
  metric: number | null;
  attempts: number;
  error: string | null;
}

const now = (): number => Date.now() / 1000;

interface RawSweep {
  id: number; name: string; spec_hash: string; spec_json: string; status: SweepStatus; host: string | null; pid: number | null;
  created_at: number; ended_at: number | null;
}
function toSweep(r: RawSweep): SweepRow {
  return {
    id: r.id, name: r.name, specHash: r.spec_hash, spec: JSON.parse(r.spec_json), status: r.status, host: r.host, pid: r.pid,
    createdAt: r.created_at, endedAt: r.ended_at,
  };
}

interface RawTrial {
  sweep_id: number; trial: number; params_json: string; run_id: number | null; rung: number; steps: number; outcome: TrialOutcome;
  metric: number | null; attempts: number; error: string | null;
}
function toTrial(r: RawTrial): TrialRow {
  return {
    sweepId: r.sweep_id, index: r.trial, params: JSON.parse(r.params_json), runId: r.run_id, rung: r.rung, steps: r.steps,
    outcome: r.outcome, metric: r.metric, attempts: r.attempts, error: r.error,
  };
}

/** The sweep with this name and hash, or null. */
export function findSweep(db: Database.Database, name: string, hash: string): SweepRow | null {
  const r = db.prepare('SELECT * FROM sweeps WHERE name = ? AND spec_hash = ?').get(name, hash) as RawSweep | undefined;
  return r ? toSweep(r) : null;
}

/** Sweeps of this name, newest first. */
export function sweepsNamed(db: Database.Database, name: string): SweepRow[] {
  return (db.prepare('SELECT * FROM sweeps WHERE name = ? ORDER BY id DESC').all(name) as RawSweep[]).map(toSweep);
}

export function getSweep(db: Database.Database, id: number): SweepRow {
  const r = db.prepare('SELECT * FROM sweeps WHERE id = ?').get(id) as RawSweep | undefined;
  if (!r) throw new Error(`sweeps: no sweep ${id}`);
  return toSweep(r);
}

/**
 * Finds the sweep (name + hash) or creates it with one pending row per trial, and claims it for this process:
 * refused while another live process on this host runs it.
 */
export function claimSweep(db: Database.Database, spec: NormalizedSpec, hash: string, trials: Trial[], pidAlive: (pid: number) => boolean): { sweep: SweepRow; created: boolean } {
  return db.transaction(() => {
    let s = findSweep(db, spec.name, hash);
    const created = s === null;
    const t = now();
    if (s === null) {
      const id = Number(db.prepare(`INSERT INTO sweeps (name, spec_hash, spec_json, stage, metric, mode, status, host, pid, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)`).run(spec.name, hash, JSON.stringify(spec), spec.stage, spec.metric, spec.mode,
        os.hostname(), process.pid, t, t).lastInsertRowid);
      const ins = db.prepare("INSERT INTO sweep_trials (sweep_id, trial, params_json, outcome) VALUES (?, ?, ?, 'pending')");
      for (const tr of trials) ins.run(id, tr.index, JSON.stringify(tr.params));
      s = getSweep(db, id);
    } else {
      if (s.status === 'running' && s.pid !== null && s.pid !== process.pid && s.host === os.hostname() && pidAlive(s.pid)) {
        throw new Error(`sweep ${spec.name}: already being run by process ${s.pid} on this host; stop it first (Ctrl-C) or wait`);
      }
      db.prepare("UPDATE sweeps SET status = 'running', host = ?, pid = ?, updated_at = ?, ended_at = NULL WHERE id = ?")
        .run(os.hostname(), process.pid, t, s.id);
      s = getSweep(db, s.id);
    }
    return { sweep: s, created };
  }).immediate();
}

export function loadTrials(db: Database.Database, sweepId: number): TrialRow[] {
  return (db.prepare('SELECT * FROM sweep_trials WHERE sweep_id = ? ORDER BY trial').all(sweepId) as RawTrial[]).map(toTrial);
}

export function updateTrial(db: Database.Database, sweepId: number, index: number, fields: Partial<Pick<TrialRow, 'runId' | 'rung' | 'steps' | 'outcome' | 'metric' | 'attempts' | 'error'>>): void {
  const cols: Record<string, string> = { runId: 'run_id', rung: 'rung', steps: 'steps', outcome: 'outcome', metric: 'metric', attempts: 'attempts', error: 'error' };
  const sets: string[] = [];
  const args: unknown[] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    sets.push(`${cols[k]} = ?`);
    args.push(typeof v === 'number' && !Number.isFinite(v) ? null : v);
  }
  if (sets.length === 0) return;
  db.prepare(`UPDATE sweep_trials SET ${sets.join(', ')} WHERE sweep_id = ? AND trial = ?`).run(...args, sweepId, index);
  db.prepare('UPDATE sweeps SET updated_at = ? WHERE id = ?').run(now(), sweepId);
}

export function setSweepStatus(db: Database.Database, sweepId: number, status: SweepStatus): void {
  const t = now();
  db.prepare('UPDATE sweeps SET status = ?, updated_at = ?, ended_at = ? WHERE id = ?').run(status, t, status === 'running' ? null : t, sweepId);
}
