/**
 * What every `modalab train --stage ...` runner shares: the config from --preset/--config/--set (or none on
 * --resume), the resume target, Ctrl-C handling (first: stop after this step with a checkpoint; second: quit),
 * and the end of a run (report, resume hint, exit code).
 */
import * as fs from 'fs';
import * as path from 'path';
import type { TrainArgs } from './train';
import type { JsonObject } from '../experiments/stages/config';

/** A duration for people (the stages' own formatter). */
export { fmtDuration as fmtS } from '../experiments/stages/run';

/**
 * The overrides a stage's resolver takes after its preset: the --config file's object, then every --set.
 * Throws when --resume is combined with them (a resumed run keeps its own config).
 */
export function stageOverrides(args: TrainArgs): JsonObject {
  const { parseOverrides, mergePatches } = require('../experiments/stages/config') as typeof import('../experiments/stages/config');
  if (args.resume !== undefined && (args.sets.length > 0 || args.configFile || args.preset)) {
    throw new Error('train: --resume continues a run with its own config; drop --preset, --set and --config');
  }
  let patch: JsonObject = {};
  if (args.configFile) {
    let text: string;
    try {
      text = fs.readFileSync(args.configFile, 'utf8');
    } catch (e) {
      throw new Error(`train: cannot read --config ${args.configFile}: ${(e as Error).message}`);
    }
    try {
      patch = JSON.parse(text);
    } catch (e) {
      throw new Error(`train: --config ${args.configFile} is not valid JSON: ${(e as Error).message}`);
    }
    if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) throw new Error(`train: --config ${args.configFile} must hold a JSON object`);
  }
  return mergePatches(patch, parseOverrides(args.sets, 'train --set'));
}

/** --resume as the trainers take it: a run id (digits) or a checkpoint path. */
export function resumeTarget(args: TrainArgs): number | string | undefined {
  if (args.resume === undefined) return undefined;
  return /^\d+$/.test(args.resume) ? Number(args.resume) : args.resume;
}

/** Runs `fn` with a signal that the first Ctrl-C aborts (the trainer stops cleanly); a second Ctrl-C quits. */
export async function withInterrupt<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let interrupts = 0;
  const onInt = (): void => {
    interrupts++;
    if (interrupts === 1) {
      process.stderr.write('\ntrain: stopping after this step, writing a checkpoint (Ctrl-C again to quit at once)\n');
      controller.abort();
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', onInt);
  try {
    return await fn(controller.signal);
  } finally {
    process.off('SIGINT', onInt);
  }
}

/** After a stage: the report of a finished run, the resume command of a stopped one; returns the exit code. */
export async function finishStage(args: TrainArgs, stage: string,
  res: { runId: number; status: string; outDir: string }): Promise<number> {
  if (args.report && res.status === 'finished') {
    const reportPath = path.join(res.outDir, 'report.html');
    try {
      const { writeReport } = require('../experiments/report') as typeof import('../experiments/report');
      await writeReport(args.db ?? require('../experiments/tracking').DEFAULT_DB, [res.runId], reportPath);
      process.stdout.write(`report      ${path.relative(process.cwd(), reportPath)}\n`);
    } catch (e) {
      process.stderr.write(`train: the report could not be written: ${(e as Error).message}\n`);
    }
  }
  if (res.status === 'killed') {
    process.stdout.write(`resume with: modalab train --stage ${stage} --resume ${res.runId}${args.db ? ` --db ${args.db}` : ''}\n`);
  }
  return res.status === 'finished' ? 0 : 130;
}
