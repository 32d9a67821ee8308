/**
 * What every stage trainer (align, lm, caption, instruct) shares: the options a caller passes (db or tracker,
 * output folder, resume target, abort signal, callbacks), finding the checkpoint to resume or to start from,
 * the optimizer and its schedule from the `train` section, one optimizer update, the pace behind the progress
 * bar's time left, the eval / checkpoint cadence, and writing a small file atomically.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ml from '../../index';
import type { Tracker } from '../tracking';
import { readCheckpointState } from './checkpoint';
import type { TrainSection } from './config';

/** The options of every `train<Stage>(config, opts)`; `S` is the stage's per-step progress record. */
export interface StageRunOptions<S> {
  /** The SQLite file (default runs/modalab.db); or an open tracker. */
  db?: string;
  tracker?: Tracker;
  /** Directory for this run's checkpoint and artifacts (default runs/<stage>-<run id>; on resume, the checkpoint's). */
  outDir?: string;
  /** Continue a stopped run: its id or the path of its checkpoint. The config comes from the checkpoint. */
  resume?: number | string;
  /** Stop cleanly at the next step boundary (checkpoint written, status killed). */
  signal?: AbortSignal;
  /** Stop after this many steps of this call (for tests of resume); the run is left 'killed' and resumable. */
  stopAfter?: number;
  onStep?: (s: S) => void;
  onEval?: (step: number, metrics: Record<string, number>) => void;
  /** Messages such as "preparing data" and warnings (default: none). */
  onStatus?: (msg: string) => void;
}

/** Finds the checkpoint of a run to resume: an explicit path, or the newest 'checkpoint' artifact of the run that exists. */
export function resolveResume(tracker: Tracker, resume: number | string): { file: string; runId: number } {
  if (typeof resume === 'string' && !/^\d+$/.test(resume)) {
    const st = readCheckpointState(resume);
    return { file: resume, runId: st.runId };
  }
  const runId = Number(resume);
  const arts = tracker.artifacts(runId).filter((a) => a.kind === 'checkpoint');
  for (const a of arts.reverse()) if (fs.existsSync(a.path)) return { file: a.path, runId };
  throw new Error(`resume: run ${runId} has no checkpoint on disk (its artifacts list none that exists)`);
}

/**
 * A stage's checkpoint: `given` when set (must exist and be of that stage), else the 'checkpoint' artifact of the
 * latest finished run of `stage` in the tracker's db; null when there is none.
 */
export function findStageCheckpoint(tracker: Tracker, stage: string, given: string): { file: string; runId: number } | null {
  if (given !== '') {
    const st = readCheckpointState(given);
    if (st.stage !== stage) throw new Error(`${stage}.checkpoint: ${given} is a ${st.stage} checkpoint, not ${stage}`);
    return { file: path.resolve(given), runId: st.runId };
  }
  const runs = tracker.listRuns({ stage, status: 'finished' });
  for (const r of runs.slice().reverse()) {
    const arts = tracker.artifacts(r.id).filter((a) => a.kind === 'checkpoint');
    for (const a of arts.reverse()) if (fs.existsSync(a.path)) return { file: a.path, runId: r.id };
  }
  return null;
}

/** Writes a small text file through a temporary file and a rename: a reader never sees half of it. */
export function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/** A duration for people: `42.0s`, `3m07s`. */
export function fmtDuration(s: number): string {
  return s >= 60 ? `${Math.floor(s / 60)}m${Math.round(s % 60).toString().padStart(2, '0')}s` : `${s.toFixed(1)}s`;
}

/** AdamW with the section's betas, eps and weight decay (groups may override it), on a cosine schedule with warmup. */
export function makeOptimizer(params: ml.optim.Params<ml.optim.AdamWHyper>, t: TrainSection): { opt: ml.optim.AdamW; sched: ml.optim.LRScheduler } {
  const opt = new ml.optim.AdamW(params, { lr: t.lr, betas: t.betas, eps: t.eps, weightDecay: t.weightDecay });
  const sched = new ml.optim.LRScheduler(opt, ml.optim.cosineWithWarmup({ warmupSteps: t.warmupSteps, totalSteps: t.steps, minLrRatio: t.minLrRatio }));
  return { opt, sched };
}

/**
 * One update after backward: clip the gradients of `params` to `gradClip` (0: no clipping, the norm is still
 * measured), step the optimizer, advance the schedule. Returns the norm before clipping and the lr the step used.
 */
export function optimizerStep(opt: ml.optim.AdamW, sched: ml.optim.LRScheduler, params: ml.Tensor[], gradClip: number): { gradNorm: number; lr: number } {
  const gradNorm = ml.optim.clipGradNorm(params, gradClip > 0 ? gradClip : Infinity);
  const lr = opt.paramGroups[0].lr;
  opt.step();
  sched.step();
  return { gradNorm, lr };
}

/** The recent pace of a training loop (the last 20 steps), for the time left on the progress bar. */
export class StepPace {
  private recent: Array<[number, number]> = [];

  /** Step `step` just ended (it began at `tStep`, performance.now() ms): ms per step, and ms this step took. */
  tick(step: number, tStep: number): { msPerStep: number; stepMs: number } {
    const now = performance.now();
    this.recent.push([now, step]);
    if (this.recent.length > 20) this.recent = this.recent.slice(-20);
    const [tA, sA] = this.recent[0];
    return { msPerStep: this.recent.length > 1 ? (now - tA) / (step - sA) : now - tStep, stepMs: now - tStep };
  }
}

/** A periodic action (every `every` steps; 0: never) due after `step`; not at the last step, which the end handles. */
export function due(every: number, step: number, steps: number): boolean {
  return every > 0 && step % every === 0 && step < steps;
}
