/**
 * The instruct stage from the command line:
 *
 *   modalab train --stage instruct [--preset quick|small] [--set key=value]... [--config F.json] [--db FILE] [--out DIR]
 *   modalab train --stage instruct --resume <run id | checkpoint> [--db FILE]
 *
 * `runInstruct` takes the arguments of `train` (--stage is ignored). The caption checkpoint defaults to the latest
 * finished caption run in the db (set caption.checkpoint to choose). Prints VQA accuracy per question type beside
 * the majority-answer baseline, and a few sample answers.
 */
import * as path from 'path';
import { ProgressBar } from './progress';
import { finishStage, fmtS, resumeTarget, stageOverrides, withInterrupt } from './stage';
import { parseTrainArgs } from './train';

const pct = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '   -  ' : `${(100 * x).toFixed(1).padStart(5)}%`);

/** The per-type table: accuracy and the majority baseline. */
export function instructTable(m: Record<string, number>): string {
  const types = Object.keys(m).filter((k) => k.startsWith('val/vqa_acc/')).map((k) => k.slice('val/vqa_acc/'.length)).sort();
  const lines = ['VQA type    accuracy  baseline', ...types.map((t) => `${t.padEnd(10)}  ${pct(m[`val/vqa_acc/${t}`])}    ${pct(m[`baseline/vqa_acc/${t}`])}`)];
  lines.push(`${'overall'.padEnd(10)}  ${pct(m['val/vqa_acc'])}    ${pct(m['baseline/vqa_acc'])}`);
  for (const k of Object.keys(m).filter((k) => /^val\/\w+_acc$/.test(k) && k !== 'val/vqa_acc').sort()) {
    lines.push(`${k.slice(4).padEnd(14)}${pct(m[k])}  (exact match)`);
  }
  return lines.join('\n') + '\n';
}

export async function runInstruct(argv: string[]): Promise<number> {
  const args = parseTrainArgs(argv);
  const { resolveInstructConfig } = require('../experiments/stages/instruct/config') as typeof import('../experiments/stages/instruct/config');
  const { trainInstruct } = require('../experiments/stages/instruct/train') as typeof import('../experiments/stages/instruct/train');
  const overrides = stageOverrides(args);
  const cfg = args.resume === undefined ? resolveInstructConfig(args.preset, overrides) : resolveInstructConfig(null, {});
  return withInterrupt(async (signal) => {
    let bar: ProgressBar | null = null;
    const res = await trainInstruct(cfg, {
      db: args.db, outDir: args.out, resume: resumeTarget(args), signal,
      onStatus: (m) => process.stderr.write(`instruct: ${m}\n`),
      onStep: (s) => {
        bar ??= new ProgressBar(s.steps, 'instruct', s.step - 1);
        bar.tick(`loss ${s.loss.toFixed(4)}  ${s.samplesPerS.toFixed(0)} samples/s`);
      },
      onEval: (step, m) => {
        process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}instruct: step ${step} val VQA accuracy ${pct(m['val/vqa_acc']).trim()}\n`);
      },
    });
    (bar as ProgressBar | null)?.done();
    process.stdout.write(`\nrun ${res.runId} ${res.status} after ${res.stepsDone} steps in ${fmtS(res.wallS)}\n\n`);
    if (res.metrics['val/vqa_acc'] !== undefined) process.stdout.write(instructTable(res.metrics) + '\n');
    for (const s of res.samples.slice(0, 8)) {
      process.stdout.write(`sample      [${s.task}${s.qtype ? `/${s.qtype}` : ''}] ${JSON.stringify(s.question)} -> ${JSON.stringify(s.prediction)}  (ref ${JSON.stringify(s.answers[0] ?? '')})\n`);
    }
    process.stdout.write(`caption     ${path.relative(process.cwd(), res.captionCheckpoint)} (run ${res.captionRunId})\n`);
    process.stdout.write(`checkpoint  ${path.relative(process.cwd(), res.checkpoint)}\n`);
    return finishStage(args, 'instruct', res);
  });
}
