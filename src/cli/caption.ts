/**
 * The caption stage from the command line:
 *
 *   modalab train --stage caption [--preset quick|small] [--set key=value]... [--config F.json] [--db FILE] [--out DIR]
 *   modalab train --stage caption --resume <run id | checkpoint> [--db FILE]
 *
 * `runCaption` takes the arguments of `train` (the same flags as the align stage; --stage is ignored). The align
 * and lm checkpoints default to the latest finished runs of those stages in the db (set align.checkpoint /
 * lm.checkpoint to choose).
 */
import * as fs from 'fs';
import * as path from 'path';
import { ProgressBar } from './progress';
import { parseTrainArgs } from './train';

function fmtS(s: number): string {
  return s >= 60 ? `${Math.floor(s / 60)}m${Math.round(s % 60).toString().padStart(2, '0')}s` : `${s.toFixed(1)}s`;
}

export async function runCaption(argv: string[]): Promise<number> {
  const args = parseTrainArgs(argv);
  const { resolveCaptionConfig } = require('../experiments/stages/caption/config') as typeof import('../experiments/stages/caption/config');
  const { parseOverrides, mergePatches } = require('../experiments/stages/config') as typeof import('../experiments/stages/config');
  const { trainCaption } = require('../experiments/stages/caption/train') as typeof import('../experiments/stages/caption/train');
  let patch: import('../experiments/stages/config').JsonObject = {};
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
  const merged = mergePatches(patch, parseOverrides(args.sets, 'train --set'));
  if (args.resume !== undefined && (args.sets.length > 0 || args.configFile || args.preset)) {
    throw new Error('train: --resume continues a run with its own config; drop --preset, --set and --config');
  }
  const cfg = args.resume === undefined ? resolveCaptionConfig(args.preset, merged) : resolveCaptionConfig(null, {});

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
  let bar: ProgressBar | null = null;
  try {
    const res = await trainCaption(cfg, {
      db: args.db, outDir: args.out, resume: args.resume === undefined ? undefined : (/^\d+$/.test(args.resume) ? Number(args.resume) : args.resume),
      signal: controller.signal,
      onStatus: (m) => process.stderr.write(`caption: ${m}\n`),
      onStep: (s) => {
        bar ??= new ProgressBar(s.steps, 'caption', s.step - 1);
        bar.tick(`loss ${s.loss.toFixed(4)}  ${s.samplesPerS.toFixed(0)} samples/s`);
      },
      onEval: (step, m) => {
        process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}caption: step ${step} val BLEU-4 ${(100 * (m['val/bleu4'] ?? NaN)).toFixed(2)} ROUGE-L ${(100 * (m['val/rougeL'] ?? NaN)).toFixed(2)}\n`);
      },
    });
    (bar as ProgressBar | null)?.done();
    process.stdout.write(`\nrun ${res.runId} ${res.status} after ${res.stepsDone} steps in ${fmtS(res.wallS)}\n\n`);
    if (res.metrics['val/bleu4'] !== undefined) {
      process.stdout.write(`val BLEU-4  ${(100 * res.metrics['val/bleu4']).toFixed(2)}\nval ROUGE-L ${(100 * res.metrics['val/rougeL']).toFixed(2)}\n`);
    }
    for (const s of res.samples) process.stdout.write(`sample      ${s.image}: ${JSON.stringify(s.generated)}  (ref ${JSON.stringify(s.reference[0] ?? '')})\n`);
    process.stdout.write(`encoder     ${path.relative(process.cwd(), res.alignCheckpoint)} (run ${res.alignRunId})\n`);
    process.stdout.write(`lm          ${res.lmCheckpoint ? path.relative(process.cwd(), res.lmCheckpoint) : '(none: trained from scratch)'}\n`);
    process.stdout.write(`checkpoint  ${path.relative(process.cwd(), res.checkpoint)}\n`);
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
    if (res.status === 'killed') process.stdout.write(`resume with: modalab train --stage caption --resume ${res.runId}${args.db ? ` --db ${args.db}` : ''}\n`);
    return res.status === 'finished' ? 0 : 130;
  } finally {
    process.off('SIGINT', onInt);
  }
}
