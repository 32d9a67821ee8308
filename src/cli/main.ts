#!/usr/bin/env node
/**
 * The `modalab` command (DESIGN.md, "Command line"). Each command lives in its own file and is loaded only when
 * it runs, so `modalab help` never loads the native addon or SQLite. Sweeps and the dashboard arrive with their
 * issues.
 */
import * as path from 'path';
import { spawnSync } from 'child_process';

const USAGE = `usage: modalab <command> [options]

commands:
  info                      the native backend: GEMM library, SIMD level, threads, CUDA
  demo [--steps N] [--out F] [--seed S]
                            train a small MLP on a toy task (checkpoint: runs/demo.safetensors)
  bench [suite...]          benchmarks beside PyTorch (same as npm run bench)
  train --stage align|lm|caption|instruct [--preset quick|small] [--set key=value]... [--config F.json] [--db FILE] [--out DIR]
                            train a stage, recorded in the tracking database (Ctrl-C: checkpoint, stop)
  train --stage all [--preset quick|small] [--set <stage>.key=value]... [--from STAGE] [--to STAGE] [--db FILE]
                            the whole recipe: align, lm, caption, instruct, each from the run before it
  chat (--image F [--image F2] | --scene N) ["question"] [--checkpoint <file | run id>] [--db FILE] [--max-new N] [--temperature T]
                            answer questions about an image with a trained instruct model (no question: read stdin;
                            --scene N draws shapes scene N and prints questions with their true answers)
  train --resume <run id | checkpoint> [--db FILE]
                            continue a stopped run exactly where it stopped
  generate <checkpoint | run id> ["prompt"] [--max-new N] [--greedy] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--samples N]
                            continue a prompt with a trained lm
  filter --checkpoint <file | run id> (--threshold T | --keep-fraction F) [--split S] [--noise F] [--out F.json]
                            CLIP-score cleaning of a dataset split with a trained align model
  runs [--db FILE] [--experiment E] [--stage S] [--status S] [--param k=v]... [--metric K]... [--json]
                            the recorded runs as a table
  report <run...> [-o report.html] [--png] [--db FILE]
                            one offline HTML page with the runs' configs and curves
  sweep <spec.json> [--workers N] [--db FILE] [--metric K]... [--results] [--html F]
                            run or resume a sweep in N worker processes; --results: its table, best first
  ui [--db FILE] [--port 8765] [--host 127.0.0.1]
                            read-only web dashboard of the runs (live curves, compare)
  notebook [--user | --prefix DIR] [--name NAME]
                            install the Jupyter kernel "TypeScript (modalab)" for this checkout
  help                      this text

  train, chat and generate take --device cpu|cuda (default MODALAB_DEVICE, else cpu).
  FILE defaults to runs/modalab.db; <command> --help shows a command's options.
`;

function parseFlags(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument '${a}'`);
    const eq = a.indexOf('=');
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else {
      if (i + 1 >= args.length) throw new Error(`flag ${a} needs a value`);
      out[a.slice(2)] = args[++i];
    }
  }
  return out;
}

function intFlag(flags: Record<string, string>, name: string, dflt: number, min: number): number {
  if (flags[name] === undefined) return dflt;
  const v = Number(flags[name]);
  if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be an integer >= ${min}, got '${flags[name]}'`);
  return v;
}

export function main(argv: string[]): number | Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return 0;
      case 'info': {
        const ml = require('../index') as typeof import('../index');
        const info = ml.backendInfo();
        const ci = ml.cuda.info();
        const cuda = ci.available ? `${ci.device}, runtime ${ci.runtime / 1000}, driver ${ci.driver / 1000}, ${ci.cublas ? 'cuBLAS' : 'own GEMM kernels'}`
          : ci.build ? 'built with CUDA; no driver or GPU found' : 'not built (no nvcc when the addon was built)';
        process.stdout.write(`GEMM     ${info.blas}\nSIMD     ${info.simd}\nthreads  ${info.threads}\nCUDA     ${cuda}\n`);
        return 0;
      }
      case 'demo': {
        const flags = parseFlags(rest);
        for (const k of Object.keys(flags)) if (!['steps', 'out', 'seed'].includes(k)) throw new Error(`demo: unknown flag --${k}`);
        const { runDemo } = require('./demo') as typeof import('./demo');
        runDemo({ steps: intFlag(flags, 'steps', 300, 1), seed: intFlag(flags, 'seed', 0, 0), out: flags.out ?? 'runs/demo.safetensors' });
        return 0;
      }
      case 'bench': {
        const r = spawnSync(process.execPath, [path.join(__dirname, '..', '..', 'scripts', 'bench.js'), ...rest], { stdio: 'inherit' });
        return r.status ?? 1;
      }
      case 'train':
        return report(cmd, (require('./train') as typeof import('./train')).runTrain(rest));
      case 'chat':
        return report(cmd, (require('./chat') as typeof import('./chat')).runChat(rest));
      case 'generate':
        return report(cmd, (require('./lm') as typeof import('./lm')).runGenerate(rest));
      case 'filter':
        return report(cmd, (require('./filter') as typeof import('./filter')).runFilter(rest));
      case 'runs':
        return (require('./runs') as typeof import('./runs')).runRuns(rest);
      case 'report':
        return report(cmd, (require('./report') as typeof import('./report')).runReport(rest));
      case 'notebook':
        return (require('./notebook') as typeof import('./notebook')).runNotebook(rest);
      case 'ui':
        return report(cmd, (require('./ui') as typeof import('./ui')).runUi(rest));
      case 'sweep':
        return report(cmd, (require('./sweep') as typeof import('./sweep')).runSweep(rest));
      default:
        process.stderr.write(`modalab: unknown command '${cmd}'\n\n${USAGE}`);
        return 2;
    }
  } catch (e) {
    process.stderr.write(errorLine(cmd, e));
    return 1;
  }
}

/** `modalab <cmd>: <message>`, without repeating the command when the message already starts with it. */
export function errorLine(cmd: string | undefined, e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return `modalab ${cmd}: ${cmd && msg.startsWith(`${cmd}: `) ? msg.slice(cmd.length + 2) : msg}\n`;
}

/** An async command's exit code, with its error reported the same way as a synchronous one's. */
function report(cmd: string, p: Promise<number>): Promise<number> {
  return p.catch((e: unknown) => {
    process.stderr.write(errorLine(cmd, e));
    return 1;
  });
}

if (require.main === module) {
  void Promise.resolve(main(process.argv.slice(2))).then((code) => process.exit(code));
}
