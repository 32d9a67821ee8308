/**
 * The whole recipe from the command line:
 *
 *   modalab train --stage all [--preset quick|small] [--set <stage>.key=value]... [--config F.json] [--db FILE]
 *                 [--from align|lm|caption|instruct] [--to ...] [--no-report]
 *
 * Runs align, lm, caption and instruct in order (each from the run before it), with a progress bar per stage, and
 * ends with one table of what every stage reached and the path of one report with every stage's curves. Overrides
 * name their stage first (`--set caption.train.steps=100`); a --config file holds `{ "align": {...}, ... }`.
 * Ctrl-C stops the running stage cleanly (checkpoint, run killed) and prints how to go on.
 */
import * as path from 'path';
import { ProgressBar } from './progress';
import { fmtS, stageOverrides, withInterrupt } from './stage';
import { parseTrainArgs } from './train';

export async function runAll(argv: string[]): Promise<number> {
  // --from / --to are this command's own; the rest are train's flags.
  const rest: string[] = [];
  let from: string | undefined;
  let to: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--(from|to)(?:=(.*))?$/.exec(a);
    if (!m) {
      rest.push(a);
      continue;
    }
    const v = m[2] ?? argv[++i];
    if (v === undefined) throw new Error(`train: --${m[1]} needs a stage name`);
    if (m[1] === 'from') from = v;
    else to = v;
  }
  const args = parseTrainArgs(rest);
  if (args.resume !== undefined) {
    throw new Error('train --stage all: --resume continues one stage\'s run (modalab train --resume <run id>); then run the remaining stages with --stage all --from <next stage>');
  }
  if (args.out !== undefined) throw new Error('train --stage all: --out is per stage; each stage writes beside the db (runs/<stage>-<id>)');
  const pipeline = require('../experiments/stages/pipeline') as typeof import('../experiments/stages/pipeline');
  const overrides = pipeline.splitStageOverrides(stageOverrides(args));
  const stageArg = (name: string, v: string | undefined): import('../experiments/stages/pipeline').PipelineStage | undefined => {
    if (v === undefined) return undefined;
    if (!(pipeline.PIPELINE_STAGES as readonly string[]).includes(v)) throw new Error(`train: --${name} must be one of ${pipeline.PIPELINE_STAGES.join(', ')}, got ${JSON.stringify(v)}`);
    return v as import('../experiments/stages/pipeline').PipelineStage;
  };
  const { DEFAULT_DB } = require('../experiments/tracking') as typeof import('../experiments/tracking');
  const db = args.db ?? DEFAULT_DB;
  return withInterrupt(async (signal) => {
    let bar: ProgressBar | null = null;
    const res = await pipeline.runPipeline({
      preset: args.preset, overrides, db, from: stageArg('from', from), to: stageArg('to', to), signal,
      onStageStart: (stage, i, n) => {
        bar = null;
        process.stderr.write(`\n== stage ${i + 1}/${n}: ${stage} ==\n`);
      },
      onStatus: (stage, m) => process.stderr.write(`${stage}: ${m}\n`),
      onStep: (stage, s) => {
        bar ??= new ProgressBar(s.steps, stage, s.step - 1);
        bar.tick(`loss ${s.loss.toFixed(4)}  ${s.rate.toFixed(0)} ${s.rateUnit}`);
      },
      onEval: (stage, step, m) => {
        const nl = process.stderr.isTTY ? '\n' : '';
        const show = Object.entries(m).filter(([k]) => /^val\/(t2i\/r@1|i2t\/r@1|ppl|bleu4|rougeL|vqa_acc)$/.test(k));
        if (show.length > 0) {
          process.stderr.write(`${nl}${stage}: step ${step} ${show.map(([k, v]) => `${k} ${k.endsWith('ppl') ? v.toFixed(2) : (100 * v).toFixed(1) + '%'}`).join('  ')}\n`);
        }
      },
      onStageEnd: (stage, o) => {
        (bar as ProgressBar | null)?.done();
        process.stderr.write(`${stage}: run ${o.runId} ${o.status} after ${o.stepsDone} steps in ${fmtS(o.wallS)}\n`);
      },
    });
    process.stdout.write(`\n${pipeline.pipelineTable(res)}\n`);
    for (const o of res.stages) process.stdout.write(`${o.stage.padEnd(9)} ${path.relative(process.cwd(), o.checkpoint)}\n`);
    if (args.report && res.stages.length > 0) {
      const last = res.stages[res.stages.length - 1];
      const reportPath = path.join(path.dirname(last.outDir), `report-${res.stages.map((o) => o.runId).join('-')}.html`);
      try {
        const { writeReport } = require('../experiments/report') as typeof import('../experiments/report');
        await writeReport(db, res.stages.map((o) => o.runId), reportPath, { title: `modalab recipe: ${res.stages.map((o) => `${o.stage} #${o.runId}`).join(', ')}` });
        process.stdout.write(`report    ${path.relative(process.cwd(), reportPath)}\n`);
      } catch (e) {
        process.stderr.write(`train: the report could not be written: ${(e as Error).message}\n`);
      }
    }
    if (res.status !== 'finished') {
      const stopped = res.stages[res.stages.length - 1];
      const i = pipeline.PIPELINE_STAGES.indexOf(stopped.stage);
      const next = pipeline.PIPELINE_STAGES[i + 1];
      const dbFlag = args.db ? ` --db ${args.db}` : '';
      process.stdout.write(`\nstopped in ${stopped.stage}. Go on with:\n  modalab train --resume ${stopped.runId}${dbFlag}\n`);
      if (next && (to === undefined || pipeline.PIPELINE_STAGES.indexOf(to as never) > i)) {
        process.stdout.write(`  modalab train --stage all${args.preset ? ` --preset ${args.preset}` : ''} --from ${next}${to ? ` --to ${to}` : ''}${dbFlag}\n`);
      }
      return 130;
    }
    return 0;
  });
}
