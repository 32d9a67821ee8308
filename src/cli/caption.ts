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
import * as path from 'path';
import { ProgressBar } from './progress';
import { finishStage, fmtS, resumeTarget, stageOverrides, withInterrupt } from './stage';
import { parseTrainArgs } from './train';


export async function runCaption(argv: string[]): Promise<number> {
  const args = parseTrainArgs(argv);
  const { resolveCaptionConfig } = require('../experiments/stages/caption/config') as typeof import('../experiments/stages/caption/config');
  const { trainCaption } = require('../experiments/stages/caption/train') as typeof import('../experiments/stages/caption/train');
  const overrides = stageOverrides(args);
  const cfg = args.resume === undefined ? resolveCaptionConfig(args.preset, overrides) : resolveCaptionConfig(null, {});
  return withInterrupt(async (signal) => {
    let bar: ProgressBar | null = null;
    const res = await trainCaption(cfg, {
      db: args.db, outDir: args.out, resume: resumeTarget(args), signal,
      onStatus: (m) => process.stderr.write(`caption: ${m}\n`),
      onStep: (s) => {
        bar ??= new ProgressBar(s.steps, 'caption', s.step - 1);
        bar.tick(`loss ${s.loss.toFixed(4)}  ${s.samplesPerS.toFixed(0)} samples/s`);
      },
      onEval: (step, m) => {
        const qa = m['val/scene_qa_acc'] !== undefined ? ` scene questions ${(100 * m['val/scene_qa_acc']).toFixed(1)}%` : '';
        process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}caption: step ${step} val BLEU-4 ${(100 * (m['val/bleu4'] ?? NaN)).toFixed(2)} ROUGE-L ${(100 * (m['val/rougeL'] ?? NaN)).toFixed(2)}${qa}\n`);
      },
    });
    (bar as ProgressBar | null)?.done();
    process.stdout.write(`\nrun ${res.runId} ${res.status} after ${res.stepsDone} steps in ${fmtS(res.wallS)}\n\n`);
    if (res.metrics['val/bleu4'] !== undefined) {
      process.stdout.write(`val BLEU-4  ${(100 * res.metrics['val/bleu4']).toFixed(2)}\nval ROUGE-L ${(100 * res.metrics['val/rougeL']).toFixed(2)}\n`);
    }
    if (res.metrics['val/scene_qa_acc'] !== undefined) process.stdout.write(`scene qa    ${(100 * res.metrics['val/scene_qa_acc']).toFixed(1)}% of ${res.metrics['val/scene_qa_scored']} held-out text questions\n`);
    for (const s of res.samples) process.stdout.write(`sample      ${s.image}: ${JSON.stringify(s.generated)}  (ref ${JSON.stringify(s.reference[0] ?? '')})\n`);
    process.stdout.write(`encoder     ${path.relative(process.cwd(), res.alignCheckpoint)} (run ${res.alignRunId})\n`);
    process.stdout.write(`lm          ${res.lmCheckpoint ? path.relative(process.cwd(), res.lmCheckpoint) : '(none: trained from scratch)'}\n`);
    process.stdout.write(`checkpoint  ${path.relative(process.cwd(), res.checkpoint)}\n`);
    return finishStage(args, 'caption', res);
  });
}
