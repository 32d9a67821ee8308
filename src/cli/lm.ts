/**
 * The language model from the command line:
 *
 *   modalab train --stage lm [--preset quick|small] [--set key=value]... [--config F.json] [--db FILE] [--out DIR]
 *   modalab train --stage lm --resume <run id | checkpoint> [--db FILE]
 *   modalab generate <checkpoint | run id> ["prompt"] [--max-new N] [--greedy] [--temperature T] [--top-k K]
 *                    [--top-p P] [--seed S] [--samples N] [--no-cache] [--db FILE]
 *
 * `runLm` takes the arguments of `train` (the same flags as the align stage; --stage is ignored); `runGenerate`
 * prints continuations of a prompt (default: from <bos> alone).
 */
import { takeDeviceFlag } from './device';
import * as fs from 'fs';
import * as path from 'path';
import { ProgressBar } from './progress';
import { finishStage, fmtS, resumeTarget, stageOverrides, withInterrupt } from './stage';
import { parseTrainArgs } from './train';


export async function runLm(argv: string[]): Promise<number> {
  const args = parseTrainArgs(argv);
  const { resolveLmConfig } = require('../experiments/stages/lm/config') as typeof import('../experiments/stages/lm/config');
  const { trainLm } = require('../experiments/stages/lm/train') as typeof import('../experiments/stages/lm/train');
  const overrides = stageOverrides(args);
  const cfg = args.resume === undefined ? resolveLmConfig(args.preset, overrides) : resolveLmConfig(null, {});
  return withInterrupt(async (signal) => {
    let bar: ProgressBar | null = null;
    const res = await trainLm(cfg, {
      db: args.db, outDir: args.out, resume: resumeTarget(args), signal,
      onStatus: (m) => process.stderr.write(`lm: ${m}\n`),
      onStep: (s) => {
        bar ??= new ProgressBar(s.steps, 'lm', s.step - 1);
        bar.tick(`loss ${s.loss.toFixed(4)}  ${s.tokensPerS.toFixed(0)} tokens/s`);
      },
      onEval: (step, m) => {
        const qa = m['val/scene_qa_acc'] !== undefined ? ` scene questions ${(100 * m['val/scene_qa_acc']).toFixed(1)}%` : '';
        process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}lm: step ${step} val loss ${m['val/loss'].toFixed(4)} perplexity ${m['val/ppl'].toFixed(2)}${qa}\n`);
      },
    });
    (bar as ProgressBar | null)?.done();
    process.stdout.write(`\nrun ${res.runId} ${res.status} after ${res.stepsDone} steps in ${fmtS(res.wallS)}\n\n`);
    if (res.metrics['val/loss'] !== undefined) {
      process.stdout.write(`val loss    ${res.metrics['val/loss'].toFixed(4)}\nval ppl     ${res.metrics['val/ppl'].toFixed(2)}\n`);
    }
    for (const s of res.samples) process.stdout.write(`sample      ${JSON.stringify(s)}\n`);
    process.stdout.write(`checkpoint  ${path.relative(process.cwd(), res.checkpoint)}\n`);
    return finishStage(args, 'lm', res);
  });
}

export interface GenerateArgs {
  target: string;
  prompt: string;
  maxNew: number;
  greedy: boolean;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  samples: number;
  useCache: boolean;
  db: string | undefined;
}

export function parseGenerateArgs(argv: string[]): GenerateArgs {
  const a: GenerateArgs = { target: '', prompt: '', maxNew: 40, greedy: false, temperature: 0.8, topK: 0, topP: 0.9, seed: 0, samples: 1, useCache: true, db: undefined };
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    const num = (name: string): number => {
      const v = argv[++i];
      const n = Number(v);
      if (v === undefined || !Number.isFinite(n)) throw new Error(`generate: ${name} needs a number, got ${JSON.stringify(v)}`);
      return n;
    };
    switch (x) {
      case '--max-new': a.maxNew = num(x); break;
      case '--greedy': a.greedy = true; break;
      case '--temperature': a.temperature = num(x); break;
      case '--top-k': a.topK = num(x); break;
      case '--top-p': a.topP = num(x); break;
      case '--seed': a.seed = num(x); break;
      case '--samples': a.samples = num(x); break;
      case '--no-cache': a.useCache = false; break;
      case '--db': a.db = argv[++i]; if (a.db === undefined) throw new Error('generate: --db needs a value'); break;
      default:
        if (x.startsWith('--')) throw new Error(`generate: unknown argument ${JSON.stringify(x)}`);
        positional.push(x);
    }
  }
  if (positional.length === 0 || positional.length > 2) {
    throw new Error('generate: usage: modalab generate <checkpoint | lm run id> ["prompt"] [--max-new N] [--greedy] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--samples N]');
  }
  a.target = positional[0];
  a.prompt = positional[1] ?? '';
  if (!Number.isInteger(a.samples) || a.samples < 1 || a.samples > 64) throw new Error(`generate: --samples must be an integer in [1, 64], got ${a.samples}`);
  return a;
}

export async function runGenerate(argv: string[]): Promise<number> {
  const a = parseGenerateArgs(takeDeviceFlag(argv, 'generate'));
  const { loadLm } = require('../experiments/stages/lm/train') as typeof import('../experiments/stages/lm/train');
  const { generate } = require('../experiments/models/generate') as typeof import('../experiments/models/generate');
  const { Tokenizer } = require('../experiments/tokenizer') as typeof import('../experiments/tokenizer');
  let file = a.target;
  if (/^\d+$/.test(a.target)) {
    const { Tracker } = require('../experiments/tracking') as typeof import('../experiments/tracking');
    const t = Tracker.open(a.db);
    try {
      const arts = t.artifacts(Number(a.target)).filter((x) => x.kind === 'checkpoint' && fs.existsSync(x.path));
      if (arts.length === 0) throw new Error(`generate: run ${a.target} has no checkpoint on disk`);
      file = arts[arts.length - 1].path;
    } finally {
      t.close();
    }
  }
  const { model, tokenizerPath } = loadLm(file);
  try {
    const tok = Tokenizer.fromFile(tokenizerPath);
    const prompt = tok.encode(a.prompt, { bos: true });
    const t0 = performance.now();
    const out = generate(model, Array.from({ length: a.samples }, () => prompt), {
      maxNewTokens: a.maxNew, greedy: a.greedy, temperature: a.temperature, topK: a.topK, topP: a.topP, seed: a.seed,
      eosId: tok.eosId, useCache: a.useCache,
    });
    const ms = performance.now() - t0;
    const n = out.tokens.reduce((s, r) => s + r.length, 0);
    for (const ids of out.tokens) process.stdout.write(`${a.prompt}${tok.decode(ids, { skipSpecial: true })}\n`);
    process.stderr.write(`generate: ${n} tokens in ${ms.toFixed(0)} ms (${((n * 1000) / ms).toFixed(0)} tokens/s${a.useCache ? '' : ', no KV cache'})\n`);
    return 0;
  } finally {
    model.dispose();
  }
}

/**
 * The stage of what `train --resume` names (a run id or a checkpoint file): 'align', 'lm', ... so that
 * `modalab train --resume 12` can go to the right stage without --stage.
 */
export function stageOfResume(resume: string, db?: string): string {
  if (/^\d+$/.test(resume)) {
    const { Tracker } = require('../experiments/tracking') as typeof import('../experiments/tracking');
    const t = Tracker.open(db);
    try {
      const stage = t.getRun(Number(resume)).stage;
      if (!stage) throw new Error(`train --resume: run ${resume} records no stage`);
      return stage;
    } finally {
      t.close();
    }
  }
  const { readCheckpointState } = require('../experiments/stages/checkpoint') as typeof import('../experiments/stages/checkpoint');
  return readCheckpointState(resume).stage;
}
