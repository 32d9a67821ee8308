/**
 * `modalab sweep <spec.json> [--workers N] [--db FILE]`: runs (or resumes) a sweep in N worker processes, one
 * line per trial event, then the results table. `--results` prints the table of a sweep already recorded (the one
 * with the spec's name and hash), `--html F` writes its plots (parallel coordinates, the metric against each param) to one offline page.
 *
 * Ctrl-C: the trials stop at their next step boundary (checkpoint written, run 'killed') and the sweep is marked
 * 'killed'; the same command resumes it. A second Ctrl-C quits at once (the workers still stop cleanly when
 * they see their runner gone).
 */
import * as fs from 'fs';
import { loadSweepSpec, specHash } from '../experiments/sweeps/spec';
import { runSweep as runSweepSpec, SweepEvent } from '../experiments/sweeps/runner';
import { formatResults, sweepFigures, sweepResultsWithSweep } from '../experiments/sweeps/results';

const USAGE = `usage: modalab sweep <spec.json> [--workers N] [--db FILE] [--metric K]...
       modalab sweep <spec.json> --results [--db FILE] [--metric K]... [--html FILE]

  --workers N   worker processes (default 1; 0: in this process). Each gets floor(cores / N) native threads.
  --db FILE     the tracking database (default runs/modalab.db)
  --results     print the recorded results (best first) instead of running
  --metric K    also show the latest value of metric K (repeatable)
  --html FILE   write the sweep plots to an offline HTML page
`;

interface SweepArgs {
  spec: string;
  workers: number;
  db: string | undefined;
  results: boolean;
  metrics: string[];
  html: string | undefined;
}

export function parseSweepArgs(argv: string[]): SweepArgs | null {
  const a: SweepArgs = { spec: '', workers: 1, db: undefined, results: false, metrics: [], html: undefined };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    const eq = x.startsWith('--') ? x.indexOf('=') : -1;
    const flag = eq > 0 ? x.slice(0, eq) : x;
    const value = (): string => {
      if (eq > 0) return x.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new Error(`sweep: ${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--help': case '-h': return null;
      case '--workers': {
        const v = value();
        const n = Number(v);
        if (!/^\d+$/.test(v) || n > 64) throw new Error(`sweep: --workers must be an integer in [0, 64], got '${v}'`);
        a.workers = n;
        break;
      }
      case '--db': a.db = value(); break;
      case '--results': a.results = true; break;
      case '--metric': a.metrics.push(value()); break;
      case '--html': a.html = value(); break;
      default:
        if (x.startsWith('-')) throw new Error(`sweep: unknown flag ${JSON.stringify(x)} (see modalab sweep --help)`);
        if (a.spec !== '') throw new Error(`sweep: one spec file at a time, got ${JSON.stringify(a.spec)} and ${JSON.stringify(x)}`);
        a.spec = x;
    }
  }
  if (a.spec === '') throw new Error('sweep: a spec file is required (see modalab sweep --help)');
  return a;
}

function fmt(v: number | null): string {
  return v === null ? '-' : v.toPrecision(4);
}

function describe(e: SweepEvent, t0: number): string | null {
  const t = `[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s]`;
  switch (e.type) {
    case 'sweep': return `${t} sweep ${e.name} (id ${e.sweepId}): ${e.trials} trials${e.resumed ? ', resuming' : ''}`;
    case 'start': return `${t} trial ${e.trial}: ${e.resume ? 'continuing' : 'starting'}, to step ${e.stopAt}`;
    case 'run': return null;
    case 'end':
      if (e.outcome === 'pending') return `${t} trial ${e.trial} (run ${e.runId}): stopped at step ${e.steps} (resumable)`;
      return `${t} trial ${e.trial} (run ${e.runId}): ${e.outcome === 'paused' ? 'reached a rung' : 'finished'} at step ${e.steps}, metric ${fmt(e.metric)}`;
    case 'error': return `${t} trial ${e.trial} failed${e.willRetry ? ' (retrying)' : ''}: ${e.message}`;
    case 'prune': return `${t} halving at rung ${e.rung}: continue ${e.promoted.join(', ') || '-'}; stop ${e.pruned.join(', ') || '-'}`;
  }
}

function showResults(args: SweepArgs, name: string, hash: string): void {
  const { sweep, rows } = sweepResultsWithSweep(args.db ?? 'runs/modalab.db', name, { specHash: hash, metrics: args.metrics });
  process.stdout.write(`sweep ${sweep.name} (id ${sweep.id}, ${sweep.status}), target ${sweep.spec.metric} (${sweep.spec.mode}):\n`);
  process.stdout.write(formatResults(rows));
  if (args.html) {
    const plots = require('../experiments/plots') as typeof import('../experiments/plots');
    const figs = sweepFigures(rows, { includeUnfinished: !rows.some((r) => r.outcome === 'finished') });
    const body = [figs.parallel, ...figs.perParam].map((f) => plots.figureHtml(f, { height: '420px' })).join('\n');
    const page = `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>sweep ${plots.escapeHtml(sweep.name)}</title>\n` +
      `<script type="text/javascript">${plots.plotlySource()}</script>\n</head><body>\n${body}\n</body></html>\n`;
    const tmp = `${args.html}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, page);
    fs.renameSync(tmp, args.html);
    process.stdout.write(`plots: ${args.html}\n`);
  }
}

export async function runSweep(argv: string[]): Promise<number> {
  const args = parseSweepArgs(argv);
  if (args === null) {
    process.stdout.write(USAGE);
    return 0;
  }
  const spec = loadSweepSpec(args.spec);
  const hash = specHash(spec);
  if (args.results) {
    showResults(args, spec.name, hash);
    return 0;
  }
  const controller = new AbortController();
  let interrupts = 0;
  const onInt = (): void => {
    interrupts++;
    if (interrupts === 1) {
      process.stderr.write('\nsweep: stopping the trials after their current step (checkpoints written); run the same command to resume. Ctrl-C again to quit at once\n');
      controller.abort();
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onInt);
  const t0 = Date.now();
  try {
    const sum = await runSweepSpec(spec, {
      db: args.db, workers: args.workers, signal: controller.signal,
      onEvent: (e) => {
        const line = describe(e, t0);
        if (line !== null) process.stdout.write(line + '\n');
      },
    });
    process.stdout.write(`\n`);
    showResults(args, spec.name, hash);
    if (sum.status === 'killed') {
      process.stdout.write(`sweep ${spec.name}: stopped; run the same command to resume\n`);
      return 130;
    }
    return sum.status === 'finished' ? 0 : 1;
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onInt);
  }
}
