#!/usr/bin/env node
/**
 * The `modalab` command. This issue provides `info` and `demo`; training stages, sweeps, reports and the
 * dashboard arrive with their issues (DESIGN.md, "Command line").
 */
import * as path from 'path';
import { spawnSync } from 'child_process';

const USAGE = `usage: modalab <command> [options]

commands:
  info                      the native backend: GEMM library, SIMD level, threads, CUDA
  demo [--steps N] [--out F] [--seed S]
                            train a small MLP on a toy task (checkpoint: runs/demo.safetensors)
  bench [suite...]          benchmarks beside PyTorch (same as npm run bench)
  help                      this text
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

export function main(argv: string[]): number {
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
        process.stdout.write(`GEMM     ${info.blas}\nSIMD     ${info.simd}\nthreads  ${info.threads}\nCUDA     ${ml.cuda.isAvailable() ? 'available' : 'not available'}\n`);
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
      case 'train': case 'sweep': case 'runs': case 'report': case 'ui': case 'notebook':
        process.stderr.write(`modalab ${cmd}: not available yet in this version (it arrives with its issue; see README)\n`);
        return 2;
      default:
        process.stderr.write(`modalab: unknown command '${cmd}'\n\n${USAGE}`);
        return 2;
    }
  } catch (e) {
    process.stderr.write(`modalab ${cmd}: ${(e as Error).message}\n`);
    return 1;
  }
}

if (require.main === module) process.exit(main(process.argv.slice(2)));
