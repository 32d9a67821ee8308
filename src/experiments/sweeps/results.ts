/**
 * A sweep's results: each trial's swept params beside its target metric, best first; as text for the command line
 * and as the sweep plots (parallel coordinates, the metric against each param).
 *
 * ```ts
 * const rows = sweepResults('runs/modalab.db', 'lr-arch');
 * console.log(formatResults(rows));
 * const figs = sweepFigures(rows);  plots.show(figs.parallel);
 * ```
 */
import { Tracker } from '../tracking';
import type { Figure } from '../plots/types';
import { metricVsParam, parallelCoordinates, Row } from '../plots/sweep';
import type { Json } from '../stages/config';
import type { TrialOutcome } from './halving';
import { loadTrials, sweepsNamed, SweepRow } from './store';

export interface SweepResultRow {
  sweepId: number;
  trial: number;
  runId: number | null;
  outcome: TrialOutcome;
  /** Halving rungs passed and steps trained. */
  rung: number;
  steps: number;
  params: { [key: string]: Json };
  /** The target metric: at the end for a finished trial, at its last rung for a pruned one. */
  metric: number | null;
  metricKey: string;
  mode: 'max' | 'min';
  /** The latest value of each extra metric key asked for (null where not logged). */
  metrics: { [key: string]: number | null };
}

export interface SweepResults {
  sweep: SweepRow;
  rows: SweepResultRow[];
}

const OUTCOME_ORDER: Record<TrialOutcome, number> = { finished: 0, paused: 1, running: 1, pending: 1, pruned: 2, failed: 3 };

/**
 * The trials of the newest sweep named `name` (or the one with `specHash`), best first: finished trials by the
 * target metric, then unfinished and pruned ones (more rungs first), then failed ones; trials without a value last.
 */
export function sweepResults(db: string | Tracker, name: string, opts: { specHash?: string; metrics?: string[] } = {}): SweepResultRow[] {
  return sweepResultsWithSweep(db, name, opts).rows;
}

export function sweepResultsWithSweep(db: string | Tracker, name: string, opts: { specHash?: string; metrics?: string[] } = {}): SweepResults {
  const tracker = typeof db === 'string' ? Tracker.open(db) : db;
  try {
    const all = sweepsNamed(tracker.db, name);
    const sweep = opts.specHash ? all.find((s) => s.specHash.startsWith(opts.specHash!)) : all[0];
    if (!sweep) {
      throw new Error(`sweep results: no sweep named ${JSON.stringify(name)}${opts.specHash ? ` with spec hash ${opts.specHash}` : ''} in ${tracker.file}`);
    }
    const { metric, mode } = sweep.spec;
    const rows = loadTrials(tracker.db, sweep.id).map((t): SweepResultRow => {
      const metrics: { [key: string]: number | null } = {};
      for (const k of opts.metrics ?? []) metrics[k] = t.runId === null ? null : tracker.latest(t.runId, k)?.value ?? null;
      return {
        sweepId: sweep.id, trial: t.index, runId: t.runId, outcome: t.outcome, rung: t.rung, steps: t.steps, params: t.params,
        metric: t.metric, metricKey: metric, mode, metrics,
      };
    });
    rows.sort((a, b) => {
      const o = OUTCOME_ORDER[a.outcome] - OUTCOME_ORDER[b.outcome];
      if (o !== 0) return o;
      if (a.rung !== b.rung) return b.rung - a.rung;
      const va = a.metric === null || Number.isNaN(a.metric) ? null : a.metric;
      const vb = b.metric === null || Number.isNaN(b.metric) ? null : b.metric;
      if (va === null || vb === null) return va === vb ? a.trial - b.trial : va === null ? 1 : -1;
      if (va !== vb) return mode === 'max' ? vb - va : va - vb;
      return a.trial - b.trial;
    });
    return { sweep, rows };
  } finally {
    if (typeof db === 'string') tracker.close();
  }
}

function cell(v: Json | number | null | undefined): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? v.toPrecision(4) : v.toExponential(2);
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** A plain-text table: rank, trial, run, outcome, steps, each swept param, the target and the extra metrics. */
export function formatResults(rows: readonly SweepResultRow[]): string {
  if (rows.length === 0) return '(no trials)\n';
  const paramKeys = [...new Set(rows.flatMap((r) => Object.keys(r.params)))];
  const extra = [...new Set(rows.flatMap((r) => Object.keys(r.metrics)))].filter((k) => k !== rows[0].metricKey);
  const head = ['#', 'trial', 'run', 'outcome', 'steps', ...paramKeys, `${rows[0].metricKey} (${rows[0].mode})`, ...extra];
  const body = rows.map((r, i) => [
    String(i + 1), String(r.trial), r.runId === null ? '-' : String(r.runId), r.outcome, String(r.steps),
    ...paramKeys.map((k) => (r.params[k] === null ? 'null' : cell(r.params[k]))), cell(r.metric), ...extra.map((k) => cell(r.metrics[k])),
  ]);
  const widths = head.map((h, c) => Math.max(h.length, ...body.map((b) => b[c].length)));
  const line = (cells: string[]): string => cells.map((x, c) => x.padEnd(widths[c])).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n') + '\n';
}

/** Flat rows for the plots: each swept param (arrays and objects as JSON text) and the target metric. */
export function plotRows(rows: readonly SweepResultRow[]): Row[] {
  return rows.filter((r) => r.metric !== null).map((r) => {
    const o: Row = { trial: r.trial };
    for (const [k, v] of Object.entries(r.params)) o[k] = v === null || typeof v !== 'object' ? v : JSON.stringify(v);
    o[r.metricKey] = r.metric;
    return o;
  });
}

/**
 * The sweep plots from src/experiments/plots: parallel coordinates of every swept param against the target,
 * and the target against each param. With halving, only finished trials are plotted (a pruned trial's metric is
 * from an earlier rung, not comparable) unless `includeUnfinished`.
 */
export function sweepFigures(rows: readonly SweepResultRow[], opts: { includeUnfinished?: boolean } = {}): { parallel: Figure; perParam: Figure[] } {
  if (rows.length === 0) throw new Error('sweepFigures: no trials');
  const use = opts.includeUnfinished ? rows : rows.filter((r) => r.outcome === 'finished');
  const metric = rows[0].metricKey;
  const data = plotRows(use);
  const paramKeys = [...new Set(rows.flatMap((r) => Object.keys(r.params)))];
  return {
    parallel: parallelCoordinates(data, paramKeys, metric),
    perParam: paramKeys.map((p) => metricVsParam(data, p, metric)),
  };
}
