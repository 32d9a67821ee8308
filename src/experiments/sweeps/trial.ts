/**
 * One trial's training call, the same in a worker process (trial-worker.ts) and in the runner's own process
 * (workers: 0): trainAlign on the shared SQLite file, its run marked as a trial of the sweep, started fresh or
 * continued from a checkpoint, and stopped at `stopAt` (a halving rung) with trainAlign's stopAfter.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tracker } from '../tracking';
import type { StartRunOptions } from '../tracking';
import type { AlignConfig } from '../stages/align/config';
import { trainAlign } from '../stages/align/train';
import { readCheckpointState } from '../stages/checkpoint';

export interface TrialJob {
  sweepId: number;
  trial: number;
  /** The trial's full config (ignored when resuming: the checkpoint holds it). */
  config: AlignConfig;
  /** The tracking database (absolute path). */
  db: string;
  /** A checkpoint to continue from, or null to start a new run. */
  resume: string | null;
  /** Stop when the run reaches this step (a halving rung); null: train to the end. */
  stopAt: number | null;
}

export interface TrialResult {
  runId: number;
  /** 'finished': trained to the end; 'killed': stopped at stopAt or by the signal (resumable). */
  status: 'finished' | 'killed';
  stepsDone: number;
}

export interface TrialContext {
  signal?: AbortSignal;
  /** Called as soon as the trial's run exists (so a runner that dies later still knows it). */
  onRun?: (runId: number) => void;
  /**
   * Polled after every step: true stops the trial like the signal. A signal's abort needs the event loop to turn,
   * which a training loop whose batches are always ready (data.workers 0) does not let happen until it returns.
   */
  shouldStop?: () => boolean;
}

/** A trial runner: the default trains with trainAlign; tests inject cheap fakes with the same contract. */
export type TrialExecutor = (job: TrialJob, ctx: TrialContext) => Promise<TrialResult>;

/** The checkpoint a run of this database writes (trainAlign's default outDir), if it exists and belongs to the run. */
export function trialCheckpoint(db: string, runId: number): { file: string; step: number } | null {
  const file = path.join(path.dirname(path.resolve(db)), `align-${runId}`, 'last.safetensors');
  if (!fs.existsSync(file)) return null;
  try {
    const st = readCheckpointState(file);
    return st.runId === runId ? { file, step: st.step } : null;
  } catch {
    return null; // unreadable: the trial starts over
  }
}

export const runTrial: TrialExecutor = async (job, ctx) => {
  const tracker = Tracker.open(job.db);
  try {
    // trainAlign starts (or resumes) the run itself; the sweep id is added to its startRun call here, so the run
    // row is written with sweep_id in the same transaction.
    const start = tracker.startRun.bind(tracker);
    const resumeRun = tracker.resumeRun.bind(tracker);
    tracker.startRun = (opts: StartRunOptions) => {
      const run = start({ ...opts, sweepId: job.sweepId });
      ctx.onRun?.(run.id);
      return run;
    };
    tracker.resumeRun = (runId: number) => {
      const run = resumeRun(runId);
      ctx.onRun?.(run.id);
      return run;
    };
    let stopAfter: number | undefined;
    if (job.stopAt !== null) {
      const from = job.resume ? readCheckpointState(job.resume).step : 0;
      stopAfter = Math.max(0, job.stopAt - from);
    }
    const stop = new AbortController();
    if (ctx.signal?.aborted) stop.abort();
    const onAbort = (): void => stop.abort();
    ctx.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const res = await trainAlign(job.config, {
        tracker, resume: job.resume ?? undefined, stopAfter, signal: stop.signal,
        onStep: () => {
          if (ctx.shouldStop?.()) stop.abort();
        },
      });
      return { runId: res.runId, status: res.status, stepsDone: res.stepsDone };
    } finally {
      ctx.signal?.removeEventListener('abort', onAbort);
    }
  } finally {
    tracker.close();
  }
};
