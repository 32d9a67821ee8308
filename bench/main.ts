/**
 * `npm run bench [-- suite... --threads N --rounds N --no-docs --list]`: run benchmark suites, modalab beside
 * PyTorch in the same run, print a table per suite and rewrite its section of docs/benchmarks.md.
 *
 * A suite is a file in bench/cases exporting a `Suite` (see harness.ts) and a script bench/torch/<name>.py
 * doing the same work in PyTorch; add it to SUITES below.
 */
import * as os from 'os';
import * as ml from '../src/index';
import { Suite, SuiteContext } from './harness';
import { BUSY, cpuSnapshot, othersShare, renderSection, runInfo, writeSection } from './report';
import { gemm } from './cases/gemm';
import { tiny } from './cases/tiny';
import { mlp } from './cases/mlp';
import { attention } from './cases/attention';
import { casts } from './cases/casts';
import { gemmBf16 } from './cases/gemm_bf16';
import { infonce } from './cases/infonce';
import { clip } from './cases/clip';
import { caption } from './cases/caption';
import { data } from './cases/data';
import { tokenizer } from './cases/tokenizer';
import { tracking } from './cases/tracking';
import { generateSuite } from './cases/generate';
import { dashboard } from './cases/dashboard';

/** In the order they run and appear in docs/benchmarks.md. */
const SUITES: Suite[] = [gemm, tiny, mlp, attention, infonce, casts, gemmBf16, clip, caption, data, tokenizer, generateSuite, tracking, dashboard];

interface Args { suites: Suite[]; threads: number; rounds: number; docs: boolean; list: boolean; raw: string[] }

function usage(msg: string): never {
  console.error(`bench: ${msg}\nusage: npm run bench -- [${SUITES.map((s) => s.name).join('|')} ...] ` +
    '[--threads N] [--rounds N] [--no-docs] [--list]');
  process.exit(2);
}

function positiveInt(flag: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) usage(`${flag} expects a positive integer, got ${v ?? 'nothing'}`);
  return n;
}

function parseArgs(argv: string[]): Args {
  const envThreads = Number(process.env.MODALAB_NUM_THREADS);
  const a: Args = {
    suites: [], rounds: 3, docs: true, list: false, raw: argv,
    threads: Number.isInteger(envThreads) && envThreads > 0 ? envThreads : os.cpus().length,
  };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    if (x === '--threads') a.threads = positiveInt(x, argv[++i]);
    else if (x === '--rounds') a.rounds = positiveInt(x, argv[++i]);
    else if (x === '--no-docs') a.docs = false;
    else if (x === '--list') a.list = true;
    else if (x.startsWith('-')) usage(`unknown option ${x}`);
    else {
      const s = SUITES.find((t) => t.name === x);
      if (!s) usage(`unknown suite ${x}`);
      if (!a.suites.includes(s)) a.suites.push(s);
    }
  }
  if (a.suites.length === 0) a.suites = SUITES.slice();
  else a.suites.sort((p, q) => SUITES.indexOf(p) - SUITES.indexOf(q));
  return a;
}

function main(): number {
  const args = parseArgs(process.argv.slice(2));
  if (args.list) {
    for (const s of SUITES) console.log(`${s.name.padEnd(8)} ${s.summary}`);
    return 0;
  }
  ml.setNumThreads(args.threads);
  const info = runInfo(args.threads, args.raw);
  const started = Date.now();
  console.log(`bench: ${info.cpu}, ${info.cores} cores, ${args.threads} thread${args.threads === 1 ? '' : 's'}; modalab ${info.backend}`);
  const ctx: SuiteContext = {
    threads: args.threads,
    rounds: args.rounds,
    log: (m) => console.error(`  [${((Date.now() - started) / 1000).toFixed(0).padStart(3)}s] ${m}`),
  };
  let failed = 0;
  const verdicts: string[] = [];
  const busySuites: string[] = [];
  for (const s of args.suites) {
    let body: string;
    try {
      const before = cpuSnapshot();
      const r = s.run(ctx);
      const others = othersShare(before, cpuSnapshot());
      if (others !== null && others > BUSY) busySuites.push(`${s.name} (${(others * 100).toFixed(0)}%)`);
      // A run at a thread count other than all cores gets its own section beside the default one.
      if (args.threads !== info.cores) r.title += ` (${args.threads} thread${args.threads === 1 ? '' : 's'})`;
      body = renderSection(s.name, r, info, others);
      for (const g of r.goals) {
        verdicts.push(`${g.ratio === null ? 'NOT MEASURED' : g.pass(g.ratio) ? 'PASS' : 'MISS'}  ${g.text}` +
          (g.ratio === null ? '' : `: ${g.format ? g.format(g.ratio) : `${g.ratio.toFixed(2)}x`}`));
      }
    } catch (e) {
      failed++;
      console.error(`bench: suite ${s.name} failed: ${(e as Error).stack ?? e}`);
      continue;
    }
    console.log('\n' + body + '\n');
    const id = args.threads === info.cores ? s.name : `${s.name}-t${args.threads}`;
    if (args.docs) writeSection(id, body, SUITES.map((t) => t.name));
  }
  console.log(`bench: done in ${((Date.now() - started) / 1000).toFixed(0)}s` +
    (args.docs ? '; docs/benchmarks.md updated' : ''));
  for (const v of verdicts) console.log(`  ${v}`);
  if (busySuites.length) {
    console.log(`bench: other processes kept the CPUs busy during ${busySuites.join(', ')}; rerun on a quiet machine`);
  }
  if (failed) console.error(`bench: ${failed} suite(s) failed; their sections in docs/benchmarks.md were left as they were`);
  return failed ? 1 : 0;
}

process.exitCode = main();
