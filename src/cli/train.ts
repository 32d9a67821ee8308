/**
 * `modalab train --stage align --preset quick [--set key=value ...] [--config file.json] [--db file]
 *  [--resume <run id | checkpoint>] [--out dir]`: runs a training stage with a progress bar, stops cleanly on
 * Ctrl-C (checkpoint written, run marked killed, resumable), ends with a summary table and a report path.
 */
import * as path from 'path';
import { takeDeviceFlag } from './device';
import { ProgressBar } from './progress';
import { finishStage, fmtS, resumeTarget, stageOverrides, withInterrupt } from './stage';

export interface TrainArgs {
  stage: string;
  preset: string | null;
  sets: string[];
  configFile: string | null;
  db: string | undefined;
  resume: string | undefined;
  out: string | undefined;
  report: boolean;
}

export function parseTrainArgs(argv: string[], cmd = 'train'): TrainArgs {
  const a: TrainArgs = { stage: 'align', preset: null, sets: [], configFile: null, db: undefined, resume: undefined, out: undefined, report: true };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    const [flag, inline] = x.startsWith('--') && x.includes('=') && !x.startsWith('--set=') ? [x.slice(0, x.indexOf('=')), x.slice(x.indexOf('=') + 1)] : [x, undefined];
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new Error(`${cmd}: ${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--stage': a.stage = value(); break;
      case '--preset': a.preset = value(); break;
      case '--set': a.sets.push(value()); break;
      case '--config': a.configFile = value(); break;
      case '--db': a.db = value(); break;
      case '--resume': a.resume = value(); break;
      case '--out': a.out = value(); break;
      case '--no-report': a.report = false; break;
      default:
        if (x.startsWith('--set=')) a.sets.push(x.slice(6));
        else throw new Error(`${cmd}: unknown argument ${JSON.stringify(x)} (see modalab help)`);
    }
  }
  return a;
}


/** The summary table printed at the end of a stage. */
export function summaryTable(metrics: Record<string, number>): string {
  const rows: string[][] = [];
  for (const split of ['val', 'test', 'heldout']) {
    const g = (k: string): string => {
      const v = metrics[`${split}/${k}`];
      return v === undefined ? '-' : (k.includes('rank') ? v.toFixed(1) : (100 * v).toFixed(1));
    };
    if (metrics[`${split}/i2t/r@1`] === undefined) continue;
    rows.push([split, g('i2t/r@1'), g('i2t/r@5'), g('i2t/r@10'), g('t2i/r@1'), g('t2i/r@5'), g('t2i/r@10'), g('i2t/map'), g('t2i/median_rank')]);
  }
  const head = ['split', 'i2t R@1', 'R@5', 'R@10', 't2i R@1', 'R@5', 'R@10', 'i2t mAP', 't2i med.rank'];
  const w = head.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j].length)));
  const line = (r: string[]): string => r.map((c, j) => (j === 0 ? c.padEnd(w[j]) : c.padStart(w[j]))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n') + '\n';
}

export async function runTrain(argvIn: string[]): Promise<number> {
  const argv = takeDeviceFlag(argvIn, 'train');
  const stageIdx = argv.findIndex((a) => a === '--stage' || a.startsWith('--stage='));
  const stageFlag = stageIdx < 0 ? undefined : argv[stageIdx].startsWith('--stage=') ? argv[stageIdx].slice(8) : argv[stageIdx + 1];
  if (stageFlag === 'all') {
    const rest = argv.filter((_, i) => i !== stageIdx && !(i === stageIdx + 1 && argv[stageIdx] === '--stage'));
    return (require('./all') as typeof import('./all')).runAll(rest);
  }
  const args = parseTrainArgs(argv);
  const stage = args.resume !== undefined && !argv.some((a) => a === '--stage' || a.startsWith('--stage='))
    ? (require('./lm') as typeof import('./lm')).stageOfResume(args.resume, args.db) : args.stage;
  if (stage === 'lm') return (require('./lm') as typeof import('./lm')).runLm(argv);
  if (stage === 'caption') return (require('./caption') as typeof import('./caption')).runCaption(argv);
  if (stage === 'instruct') return (require('./instruct') as typeof import('./instruct')).runInstruct(argv);
  if (stage !== 'align') {
    throw new Error(`train: unknown stage ${JSON.stringify(stage)}; stages: align, lm, caption, instruct, all`);
  }
  const { resolveAlignConfig } = require('../experiments/stages/align/config') as typeof import('../experiments/stages/align/config');
  const { trainAlign } = require('../experiments/stages/align/train') as typeof import('../experiments/stages/align/train');
  const overrides = stageOverrides(args);
  const cfg = args.resume === undefined ? resolveAlignConfig(args.preset, overrides) : resolveAlignConfig(null, {});
  return withInterrupt(async (signal) => {
    let bar: ProgressBar | null = null;
    const res = await trainAlign(cfg, {
      db: args.db, outDir: args.out, resume: resumeTarget(args), signal,
      onStatus: (m) => process.stderr.write(`align: ${m}\n`),
      onStep: (s) => {
        bar ??= new ProgressBar(s.steps, 'align', s.step - 1);
        bar.tick(`loss ${s.loss.toFixed(4)}  ${s.samplesPerS.toFixed(0)} samples/s`);
      },
      onEval: (step, m) => {
        const r1 = m['val/i2t/r@1'];
        if (r1 !== undefined) process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}align: step ${step} val R@1 i2t ${(100 * r1).toFixed(1)}% t2i ${(100 * (m['val/t2i/r@1'] ?? NaN)).toFixed(1)}%\n`);
      },
    });
    (bar as ProgressBar | null)?.done();
    process.stdout.write(`\nrun ${res.runId} ${res.status} after ${res.stepsDone} steps in ${fmtS(res.wallS)}\n\n`);
    process.stdout.write(summaryTable(res.metrics));
    process.stdout.write(`\ncheckpoint  ${path.relative(process.cwd(), res.checkpoint)}\n`);
    return finishStage(args, 'align', res);
  });
}
