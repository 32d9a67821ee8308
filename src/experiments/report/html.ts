// A standalone, offline HTML report of one or more runs: a summary table, the curves (runs of one stage
// overlaid, runs of several stages grouped by stage), each run's samples (captions or answers beside their
// images) and config. Built from the tracking database; every string from the database or a samples file is
// HTML-escaped here, and figure labels are plotly-escaped by the plot builders.
import { Tracker, flattenConfig, type RunInfo } from '../tracking';
import { compareRuns, retrievalCurves, type RunMetrics } from '../plots/curves';
import { escapeHtml as esc, figureHtml, plotlyScriptTag } from '../plots/show';
import type { Figure, Series } from '../plots/types';
import { DEFAULT_MAX_SAMPLES, SAMPLES_STYLE, readSamples, samplesHtml, type RunSamples } from './samples';

export interface ReportOptions {
  /** Page title; default "modalab report: <run names>". */
  title?: string;
  /** Smoothing weight for loss curves (other metrics are drawn raw); default 0.6. */
  smoothing?: number;
  /** Samples (a run's 'samples' artifact) shown per run; default 16, 0 shows none. */
  maxSamples?: number;
}

/**
 * One figure of a report: an id usable in file names, its title, and the plotly figure. `group` is the stage
 * whose runs it shows, set when the report's runs belong to more than one stage.
 */
export interface ReportFigure {
  id: string;
  title: string;
  figure: Figure;
  group?: string;
}

/** Metrics a group's runs logged once (e.g. data sizes at step 0): a table, not a one-point figure. */
export interface ReportScalars {
  group?: string;
  keys: string[];
  /** Per run id, the value of each key (null: not logged by that run). */
  rows: Array<{ runId: number; values: Array<number | null> }>;
}

export interface ReportData {
  title: string;
  runs: RunInfo[];
  figures: ReportFigure[];
  /** Single values per stage group (optional: hand-built ReportData may leave it out). */
  scalars?: ReportScalars[];
  /** Each run's samples, by run id (runs without a samples artifact are absent). */
  samples?: Record<number, RunSamples>;
}

/** A retrieval metric: names a direction and a K, as plots.retrievalCurves reads it. */
export function isRetrievalKey(key: string): boolean {
  return /(?:^|[^a-z])(i2t|t2i)(?![a-z])/i.test(key) && /r@\d+/i.test(key);
}

export function isLossKey(key: string): boolean {
  return /loss/i.test(key);
}

/** Held-out metrics (val/..., test/...) come right after the losses; training diagnostics after them. */
function isHeldOutKey(key: string): boolean {
  return /^(val|test|eval)\//i.test(key);
}

/**
 * Checks the run ids and collects each run, every metric series into figures, and each run's samples.
 * Runs of one stage share figures (one per metric, runs overlaid). Runs of several stages (align + lm +
 * caption, say) are grouped by stage, each group with its own figures, so that an InfoNCE loss and a caption
 * cross entropy are never drawn on one axis. Metrics every run of a group logged at most once are a table.
 */
export function collectReport(tracker: Tracker, runIds: readonly number[], opts: ReportOptions = {}): ReportData {
  if (!Array.isArray(runIds) || runIds.length === 0) throw new Error('report: give at least one run id');
  for (const id of runIds) {
    if (!Number.isSafeInteger(id) || id < 1) throw new Error(`report: run id must be a positive integer, got ${String(id)}`);
  }
  if (new Set(runIds).size !== runIds.length) throw new Error('report: a run id is given twice');
  const maxSamples = opts.maxSamples ?? DEFAULT_MAX_SAMPLES;
  if (!Number.isInteger(maxSamples) || maxSamples < 0) throw new Error(`report: maxSamples must be an integer >= 0, got ${String(opts.maxSamples)}`);
  const runs = runIds.map((id) => tracker.getRun(id));
  tracker.flushAll();

  // Groups of runs by stage, in the order the runs were given.
  const groups = new Map<string, RunInfo[]>();
  for (const r of runs) {
    const g = r.stage ?? '(no stage)';
    groups.set(g, [...(groups.get(g) ?? []), r]);
  }
  const grouped = groups.size > 1;
  const smoothing = opts.smoothing ?? 0.6;
  const figures: ReportFigure[] = [];
  const scalars: ReportScalars[] = [];
  for (const [group, groupRuns] of groups) {
    const g = grouped ? group : undefined;
    const made = groupFigures(tracker, groupRuns, smoothing, g);
    for (const f of made.figures) {
      const n = String(figures.length + 1).padStart(2, '0');
      figures.push({ id: g === undefined ? `${n}-${slug(f.key)}` : `${n}-${slug(g)}-${slug(f.key)}`, title: f.title, figure: f.figure, group: g });
    }
    if (made.scalars) scalars.push(made.scalars);
  }

  const samples: Record<number, RunSamples> = {};
  if (maxSamples > 0) {
    for (const r of runs) {
      const art = tracker.artifacts(r.id).filter((a) => a.kind === 'samples').at(-1);
      if (art) samples[r.id] = readSamples(art.path, maxSamples);
    }
  }

  const title = opts.title ?? `modalab report: ${runs.map((r) => r.name).join(', ')}`;
  return { title, runs, figures, scalars, samples };
}

/** Legend names carry the id: two runs may share a name. */
const label = (r: RunInfo) => `#${r.id} ${r.name}`;

/** The figures of one group of runs: losses, retrieval, held-out metrics, then the rest; one-off values apart. */
function groupFigures(tracker: Tracker, runs: RunInfo[], smoothing: number, group: string | undefined): {
  figures: Array<{ key: string; title: string; figure: Figure }>; scalars: ReportScalars | null;
} {
  const runIds = runs.map((r) => r.id);
  const placeholders = runIds.map(() => '?').join(', ');
  const keys = (tracker.db.prepare(`SELECT DISTINCT key FROM metrics WHERE run_id IN (${placeholders}) ORDER BY key`)
    .all(...runIds) as Array<{ key: string }>).map((r) => r.key);
  const metricsByRun: RunMetrics[] = runs.map((r) => ({ name: label(r), metrics: {} }));
  const once: string[] = [];
  for (const key of keys) {
    const series = tracker.metricSeries([...runIds], key);
    series.forEach((s, i) => {
      if (s.steps.length > 0) metricsByRun[i].metrics[key] = { steps: s.steps, values: s.values, wallTimes: s.wallTimes };
    });
    if (series.every((s) => s.steps.length <= 1)) once.push(key);
  }
  // A key that every run logged at most once is a one-point figure: a table says it better. Retrieval keys stay
  // figures (a run evaluated once still belongs in the retrieval plot), as do keys logged by no run of the group.
  const tabled = once.filter((k) => !isRetrievalKey(k) && !isLossKey(k));
  const plotted = keys.filter((k) => !tabled.includes(k));

  const prefix = group === undefined ? '' : `${group}: `;
  const figures: Array<{ key: string; title: string; figure: Figure }> = [];
  const add = (key: string, title: string, figure: Figure) => figures.push({ key, title, figure });
  const lossKeys = plotted.filter(isLossKey);
  const retrievalKeys = plotted.filter((k) => !isLossKey(k) && isRetrievalKey(k));
  const rest = plotted.filter((k) => !isLossKey(k) && !isRetrievalKey(k));
  const otherKeys = [...rest.filter(isHeldOutKey), ...rest.filter((k) => !isHeldOutKey(k))];
  for (const k of lossKeys) add(k, prefix + k, compareRuns(metricsByRun, k, { smoothing, title: prefix + k, yTitle: k }));
  if (retrievalKeys.length > 0) {
    if (runs.length === 1) {
      const series: Record<string, Omit<Series, 'name'>> = {};
      for (const k of retrievalKeys) if (metricsByRun[0].metrics[k]) series[k] = metricsByRun[0].metrics[k];
      add('retrieval', 'retrieval', retrievalCurves(series, { title: `retrieval: ${label(runs[0])}` }));
    } else {
      for (const k of retrievalKeys) add(k, prefix + k, compareRuns(metricsByRun, k, { smoothing: 0, title: prefix + k, yTitle: k }));
    }
  }
  for (const k of otherKeys) add(k, prefix + k, compareRuns(metricsByRun, k, { smoothing: 0, title: prefix + k, yTitle: k }));
  const scalars = tabled.length === 0 ? null : {
    group, keys: tabled,
    rows: runs.map((r, i) => ({ runId: r.id, values: tabled.map((k) => metricsByRun[i].metrics[k]?.values[0] ?? null) })),
  };
  return { figures, scalars };
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
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: .5em 0 1em; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.v { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
.status-finished { color: #2ca02c; } .status-failed { color: #d62728; } .status-killed { color: #ff7f0e; } .status-running { color: #1f77b4; }
.muted { color: #777; } h3.group { margin-top: 1.5em; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 0 12px; } .figure { min-width: 0; }
`;

/** A metric value for a table: integers as they are, others to 4 significant digits. */
function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
}

/** The report page. `pngs`, when given, are relative paths of each figure's PNG (same order as data.figures). */
export function reportHtml(data: ReportData, pngs?: readonly string[]): string {
  const ids = new Set(data.runs.map((r) => r.id));
  const parent = (r: RunInfo) => r.parentRunId === null ? ''
    : ids.has(r.parentRunId) ? `<a href="#run-${r.parentRunId}">#${r.parentRunId}</a>` : `#${r.parentRunId}`;
  const status = (r: RunInfo) => `<span class="status-${esc(r.status)}">${esc(r.status)}</span>`;
  const summary = data.runs.map((r) => `<tr><td><a href="#run-${r.id}">#${r.id}</a></td><td>${esc(r.name)}</td><td>${esc(r.experiment)}</td>`
    + `<td>${esc(r.stage ?? '')}</td><td>${status(r)}</td><td>${parent(r)}</td><td>${esc(time(r.startedAt))}</td><td>${esc(runDuration(r))}</td></tr>`).join('\n');

  const sampleSection = (id: number) => {
    const smp = data.samples?.[id];
    return smp ? samplesHtml(smp) : '';
  };
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
${sampleSection(r.id)}
<h3>config</h3>
${paramRows}
</section>`;
  }).join('\n');

  const figureDiv = (f: ReportFigure, i: number) => `<div class="figure">${figureHtml(f.figure, { divId: `fig-${f.id}`, height: '380px' })}`
    + (pngs ? `\n<p class="muted">PNG: <a href="${esc(pngs[i])}">${esc(pngs[i])}</a></p>` : '') + '</div>';
  const runName = new Map(data.runs.map((r) => [r.id, r.name]));
  // One row per metric, one column per run: there are often many such metrics and few runs.
  const scalarTable = (t: ReportScalars) => `<table><tr><th>metric</th>${t.rows.map((row) => `<th><a href="#run-${row.runId}">#${row.runId}</a> ${esc(runName.get(row.runId) ?? '')}</th>`).join('')}</tr>\n`
    + t.keys.map((k, j) => `<tr><td>${esc(k)}</td>${t.rows.map((row) => `<td class="v">${row.values[j] === null ? '' : esc(formatValue(row.values[j]!))}</td>`).join('')}</tr>`).join('\n')
    + '</table>';
  const scalars = data.scalars ?? [];
  // Figures (and one-off values) in their stage groups; without groups, one list as before.
  const groupNames = [...new Set([...data.figures.map((f) => f.group), ...scalars.map((t) => t.group)])];
  const figs = data.figures.length === 0 && scalars.length === 0 ? '<p class="muted">these runs logged no metrics</p>'
    : groupNames.map((g) => {
      const inGroup = data.runs.filter((r) => (r.stage ?? '(no stage)') === g);
      const head = g === undefined ? ''
        : `<h3 class="group">stage ${esc(g)}: ${inGroup.map((r) => `<a href="#run-${r.id}">#${r.id}</a> ${esc(r.name)}`).join(', ')}</h3>\n`;
      const body = data.figures.map((f, i) => (f.group === g ? figureDiv(f, i) : '')).filter((x) => x !== '').join('\n');
      const once = scalars.filter((t) => t.group === g).map((t) => `<p class="muted">logged once:</p>\n${scalarTable(t)}`).join('\n');
      return head + `<div class="figs">\n${body}\n</div>` + (once ? '\n' + once : '');
    }).join('\n');

  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="modalab report">
<title>${esc(data.title)}</title>
<style>${STYLE}${SAMPLES_STYLE}</style>
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
