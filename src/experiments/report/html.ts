// A standalone, offline HTML report of one or more runs: a summary table, each run's config, and its curves
// (several runs overlaid). Built from the tracking database; every string from the database is HTML-escaped
// here, and figure labels are plotly-escaped by the plot builders.
import { Tracker, flattenConfig, type RunInfo } from '../tracking';
import { compareRuns, retrievalCurves, type RunMetrics } from '../plots/curves';
import { escapeHtml as esc, figureHtml, plotlyScriptTag } from '../plots/show';
import type { Figure, Series } from '../plots/types';

export interface ReportOptions {
  /** Page title; default "modalab report: <run names>". */
  title?: string;
  /** Smoothing weight for loss curves (other metrics are drawn raw); default 0.6. */
  smoothing?: number;
}

/** One figure of a report: an id usable in file names, its title, and the plotly figure. */
export interface ReportFigure {
  id: string;
  title: string;
  figure: Figure;
}

export interface ReportData {
  title: string;
  runs: RunInfo[];
  figures: ReportFigure[];
}

/** A retrieval metric: names a direction and a K, as plots.retrievalCurves reads it. */
export function isRetrievalKey(key: string): boolean {
  return /(?:^|[^a-z])(i2t|t2i)(?![a-z])/i.test(key) && /r@\d+/i.test(key);
}

export function isLossKey(key: string): boolean {
  return /loss/i.test(key);
}

/** Checks the run ids and collects each run and every metric series into figures. */
export function collectReport(tracker: Tracker, runIds: readonly number[], opts: ReportOptions = {}): ReportData {
  if (!Array.isArray(runIds) || runIds.length === 0) throw new Error('report: give at least one run id');
  for (const id of runIds) {
    if (!Number.isSafeInteger(id) || id < 1) throw new Error(`report: run id must be a positive integer, got ${String(id)}`);
  }
  if (new Set(runIds).size !== runIds.length) throw new Error('report: a run id is given twice');
  const runs = runIds.map((id) => tracker.getRun(id));
  tracker.flushAll();
  const placeholders = runIds.map(() => '?').join(', ');
  const keys = (tracker.db.prepare(`SELECT DISTINCT key FROM metrics WHERE run_id IN (${placeholders}) ORDER BY key`)
    .all(...runIds) as Array<{ key: string }>).map((r) => r.key);

  // Legend names carry the id: two runs may share a name.
  const label = (r: RunInfo) => `#${r.id} ${r.name}`;
  const metricsByRun: RunMetrics[] = runs.map((r) => ({ name: label(r), metrics: {} }));
  for (const key of keys) {
    tracker.metricSeries([...runIds], key).forEach((s, i) => {
      if (s.steps.length > 0) metricsByRun[i].metrics[key] = { steps: s.steps, values: s.values, wallTimes: s.wallTimes };
    });
  }

  const smoothing = opts.smoothing ?? 0.6;
  const figures: ReportFigure[] = [];
  const add = (key: string, figure: Figure) => figures.push({ id: `${String(figures.length + 1).padStart(2, '0')}-${slug(key)}`, title: key, figure });
  const lossKeys = keys.filter(isLossKey);
  const retrievalKeys = keys.filter((k) => !isLossKey(k) && isRetrievalKey(k));
  const otherKeys = keys.filter((k) => !isLossKey(k) && !isRetrievalKey(k));
  for (const k of lossKeys) add(k, compareRuns(metricsByRun, k, { smoothing }));
  if (retrievalKeys.length > 0) {
    if (runs.length === 1) {
      const series: Record<string, Omit<Series, 'name'>> = {};
      for (const k of retrievalKeys) series[k] = metricsByRun[0].metrics[k];
      add('retrieval', retrievalCurves(series, { title: `retrieval: ${label(runs[0])}` }));
    } else {
      for (const k of retrievalKeys) add(k, compareRuns(metricsByRun, k, { smoothing: 0 }));
    }
  }
  for (const k of otherKeys) add(k, compareRuns(metricsByRun, k, { smoothing: 0 }));

  const title = opts.title ?? `modalab report: ${runs.map((r) => r.name).join(', ')}`;
  return { title, runs, figures };
}

function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'metric';
}

function time(sec: number | null): string {
  if (sec === null || !Number.isFinite(sec)) return '';
  return new Date(sec * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

/** "1h 02m", "3m 20s", "12s". */
export function duration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '';
  const s = Math.round(sec);
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

function runDuration(r: RunInfo): string {
  return duration((r.endedAt ?? r.heartbeatAt) - r.startedAt);
}

const STYLE = `
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: .5em 0 1em; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.v { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
.status-finished { color: #2ca02c; } .status-failed { color: #d62728; } .status-killed { color: #ff7f0e; } .status-running { color: #1f77b4; }
.muted { color: #777; }
`;

/** The report page. `pngs`, when given, are relative paths of each figure's PNG (same order as data.figures). */
export function reportHtml(data: ReportData, pngs?: readonly string[]): string {
  const ids = new Set(data.runs.map((r) => r.id));
  const parent = (r: RunInfo) => r.parentRunId === null ? ''
    : ids.has(r.parentRunId) ? `<a href="#run-${r.parentRunId}">#${r.parentRunId}</a>` : `#${r.parentRunId}`;
  const status = (r: RunInfo) => `<span class="status-${esc(r.status)}">${esc(r.status)}</span>`;
  const summary = data.runs.map((r) => `<tr><td><a href="#run-${r.id}">#${r.id}</a></td><td>${esc(r.name)}</td><td>${esc(r.experiment)}</td>`
    + `<td>${esc(r.stage ?? '')}</td><td>${status(r)}</td><td>${parent(r)}</td><td>${esc(time(r.startedAt))}</td><td>${esc(runDuration(r))}</td></tr>`).join('\n');

  const runSections = data.runs.map((r) => {
    const facts: Array<[string, string]> = [
      ['experiment', esc(r.experiment)], ['stage', esc(r.stage ?? '')], ['status', status(r)], ['parent run', parent(r) || '<span class="muted">none</span>'],
      ['seed', esc(r.seed === null ? '' : String(r.seed))], ['git commit', esc(r.gitSha ?? '')], ['host', esc(r.host)],
      ['started', esc(time(r.startedAt))], ['ended', esc(time(r.endedAt))], ['duration', esc(runDuration(r))],
    ];
    const params = flattenConfig(r.config);
    const paramRows = params.length === 0 ? '<p class="muted">no config</p>'
      : `<table><tr><th>param</th><th>value</th></tr>\n${params.map(([k, v]) => `<tr><td>${esc(k)}</td><td class="v">${esc(v)}</td></tr>`).join('\n')}</table>`;
    return `<section id="run-${r.id}">
<h2>#${r.id} ${esc(r.name)}</h2>
<table>${facts.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join('')}</table>
<h3>config</h3>
${paramRows}
</section>`;
  }).join('\n');

  const figs = data.figures.length === 0 ? '<p class="muted">these runs logged no metrics</p>'
    : data.figures.map((f, i) => `<div class="figure">${figureHtml(f.figure, { divId: `fig-${f.id}`, height: '440px' })}`
      + (pngs ? `\n<p class="muted">PNG: <a href="${esc(pngs[i])}">${esc(pngs[i])}</a></p>` : '') + '</div>').join('\n');

  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="modalab report">
<title>${esc(data.title)}</title>
<style>${STYLE}</style>
${plotlyScriptTag()}
</head><body>
<h1>${esc(data.title)}</h1>
<p class="muted">generated ${esc(time(Date.now() / 1000))}; plotly.js is included, the page works offline.</p>
<table><tr><th>run</th><th>name</th><th>experiment</th><th>stage</th><th>status</th><th>parent</th><th>started</th><th>duration</th></tr>
${summary}
</table>
<h2>curves</h2>
${figs}
${runSections}
</body></html>
`;
}
