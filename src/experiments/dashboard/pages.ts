/**
 * The dashboard's HTML pages, rendered on the server. Every string that comes from the database (run names,
 * experiment and stage names, param keys and values, metric keys, artifact paths) goes through `esc` for element
 * text and attribute values, and data for the page script goes in as `scriptJson` (which turns `<`, `>` and `&`
 * into \u escapes, so neither `</script>` nor `<!--` can appear inside the element).
 */
import { escapeHtml as esc, scriptJson } from '../plots/show';
import { RUN_COLUMNS, type ComparePayload, type RunDetail, type RunsPayload, type RunsRequest, type WireNumber } from './api';
import { STATUSES, type DashRun, type DashSweep } from './store';
import type { JsonValue } from '../tracking';

const CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
header { background: #263238; color: #fff; padding: 8px 16px; display: flex; gap: 16px; align-items: baseline; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
header .db { color: #b0bec5; font-size: 12px; }
main { padding: 12px 16px; }
h1 { font-size: 18px; margin: 4px 0 10px; }
h2 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 3px 8px; text-align: left; white-space: nowrap; }
th a { color: inherit; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status-running td.status { color: #1565c0; font-weight: 600; }
.status-failed td.status, .status-killed td.status { color: #c62828; }
.stale td.status { color: #ef6c00; }
form.filters { display: flex; flex-wrap: wrap; gap: 8px; align-items: end; margin-bottom: 10px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #555; }
.controls { display: flex; gap: 16px; align-items: center; margin: 8px 0; font-size: 13px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 8px; }
.plots.wide { grid-template-columns: 1fr; }
.plot { height: 300px; border: 1px solid #eee; }
.note { color: #666; font-size: 12px; }
.kv td:first-child { color: #555; }
.kv td { padding: 2px 8px; }
.cols { display: flex; gap: 32px; flex-wrap: wrap; }
code { font-size: 12px; }
details { margin: 12px 0; }
summary { cursor: pointer; font-weight: 600; }
`;

export interface PageOptions {
  title: string;
  /** data-page on <body>: which part of the client script runs. */
  page: 'runs' | 'run' | 'compare' | 'error';
  body: string;
  /** JSON for the page script (embedded safely). */
  data?: unknown;
  /** Load plotly.js and the plot builders (the runs table does not need them). */
  plots?: boolean;
  /** Shown in the header: the database file. */
  db?: string;
}

export function layout(o: PageOptions): string {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(o.title)} · modalab</title>
<style>${CSS}</style>
${o.plots ? '<script src="/static/plotly.min.js"></script>\n<script src="/static/plots.js"></script>' : ''}
</head>
<body data-page="${o.page}">
<header><a href="/">modalab runs</a>${o.db ? `<span class="db">${esc(o.db)} (read-only)</span>` : ''}<span class="note" id="live-note"></span></header>
<main>
${o.body}
</main>
${o.data !== undefined ? `<script id="page-data" type="application/json">${scriptJson(o.data)}</script>` : ''}
${o.page !== 'error' ? '<script src="/static/dashboard.js"></script>' : ''}
</body></html>
`;
}

export function errorPage(status: number, message: string, db?: string): string {
  const what = status === 404 ? 'Not found' : status === 400 ? 'Bad request' : status === 405 ? 'Method not allowed' : 'Server error';
  return layout({
    title: `${status} ${what}`, page: 'error', db,
    body: `<h1>${status} ${esc(what)}</h1><p class="error-message">${esc(message)}</p><p><a href="/">back to the runs</a></p>`,
  });
}

// ---------------------------------------------------------------------------------------------------------------

function fmtTime(sec: number | null): string {
  return sec === null ? '-' : new Date(sec * 1000).toISOString().slice(0, 19).replace('T', ' ');
}

function fmtDuration(r: DashRun): string {
  const s = Math.max(0, Math.round((r.endedAt ?? r.heartbeatAt) - r.startedAt));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

export function fmtNumber(v: WireNumber): string {
  if (v === null) return '-';
  if (typeof v === 'string') return v;
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

function fmtBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

const statusText = (r: DashRun) => (r.stale ? `${r.status} (no heartbeat)` : r.status);
const runLink = (r: DashRun) => `<a href="/runs/${r.id}">#${r.id} ${esc(r.name)}</a>`;
const jsonText = (v: JsonValue | undefined) => (v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v));

function select(name: string, label: string, choices: readonly string[], current: string | undefined): string {
  const opts = ['<option value="">(any)</option>', ...choices.map((c) =>
    `<option value="${esc(c)}"${c === current ? ' selected' : ''}>${esc(c)}</option>`)];
  return `<label>${esc(label)}<select name="${name}">${opts.join('')}</select></label>`;
}

/** A query string with one parameter replaced (or removed when value is null), for the sort links. */
function withParam(q: URLSearchParams, set: Record<string, string | null>): string {
  const n = new URLSearchParams(q);
  for (const [k, v] of Object.entries(set)) {
    if (v === null) n.delete(k);
    else n.set(k, v);
  }
  const s = n.toString();
  return s === '' ? '/' : `/?${s}`;
}

export function runsPage(p: RunsPayload, req: RunsRequest, q: URLSearchParams,
  choices: { experiments: string[]; stages: string[]; paramKeys: string[] }, sweeps: DashSweep[], db: string): string {
  const sortLink = (key: string, text: string): string => {
    const active = p.sort === key;
    const order = active && p.order === 'asc' ? 'desc' : active ? 'asc' : (key === 'id' || key === 'started' ? 'desc' : 'asc');
    const arrow = active ? (p.order === 'asc' ? ' ▲' : ' ▼') : '';
    return `<a href="${esc(withParam(q, { sort: key, order }))}" data-sort="${esc(key)}">${esc(text)}</a>${arrow}`;
  };
  const params = (req.filter.params ?? []).map(([k, v]) => `${k}=${jsonText(v)}`);
  const paramInputs = [...params, ''].map((v) =>
    `<label>param (key=value)<input name="param" value="${esc(v)}" placeholder="optim.lr=0.001" list="param-keys" size="22"></label>`).join('');
  const head = ['<th></th>', ...RUN_COLUMNS.map((c) => `<th>${sortLink(c, c)}</th>`),
    ...p.metricKeys.map((k) => `<th class="num">${sortLink(`metric:${k}`, k)}</th>`)].join('');
  const rows = p.runs.map((r) => {
    const cls = `status-${r.status}${r.stale ? ' stale' : ''}`;
    return `<tr data-run="${r.id}" class="${cls}"><td><input type="checkbox" class="pick" value="${r.id}" aria-label="select run ${r.id}"></td>`
      + `<td>${r.id}</td><td><a href="/runs/${r.id}">${esc(r.name)}</a></td><td>${esc(r.experiment)}</td>`
      + `<td>${esc(r.stage ?? '-')}</td><td class="status">${esc(statusText(r))}</td><td>${fmtTime(r.startedAt)}</td>`
      + `<td>${fmtDuration(r)}</td>${p.metricKeys.map((k) => `<td class="num">${esc(fmtNumber(r.metrics[k]))}</td>`).join('')}</tr>`;
  }).join('\n');
  const sortChoices = [...RUN_COLUMNS.map((c) => [c, c]), ...p.allMetricKeys.map((k) => [`metric:${k}`, `metric: ${k}`])];
  const body = `<h1>Runs <span class="note">(<span id="run-count">${p.runs.length}</span> shown)</span></h1>
<form class="filters" method="get" action="/">
${select('experiment', 'experiment', choices.experiments, req.filter.experiment)}
${select('stage', 'stage', choices.stages, req.filter.stage)}
${select('status', 'status', STATUSES, req.filter.status)}
${sweeps.length === 0 ? '' : `<label>sweep<select name="sweep"><option value="">(any)</option>${sweeps.map((w) =>
    `<option value="${w.id}"${w.id === req.filter.sweep ? ' selected' : ''}>${esc(`#${w.id} ${w.name}`)}</option>`).join('')}</select></label>`}
${paramInputs}
<datalist id="param-keys">${choices.paramKeys.map((k) => `<option value="${esc(k)}=">`).join('')}</datalist>
<label>sort by<select name="sort">${sortChoices.map(([v, t]) => `<option value="${esc(v)}"${v === p.sort ? ' selected' : ''}>${esc(t)}</option>`).join('')}</select></label>
<label>order<select name="order"><option value="asc"${p.order === 'asc' ? ' selected' : ''}>ascending</option><option value="desc"${p.order === 'desc' ? ' selected' : ''}>descending</option></select></label>
<button type="submit" id="apply">apply</button> <a href="/">clear</a>
<button type="button" id="compare" disabled>compare</button>
</form>
<table id="runs"><thead><tr>${head}</tr></thead>
<tbody>
${rows}
</tbody></table>
${p.runs.length === 0 ? '<p class="note">No run matches these filters.</p>' : ''}`;
  return layout({ title: 'runs', page: 'runs', body, data: { metricKeys: p.metricKeys }, db });
}

// ---------------------------------------------------------------------------------------------------------------

const CURVE_CONTROLS = `<div class="controls">
<label>smoothing <input type="range" id="smoothing" min="0" max="0.99" step="0.01" value="0.6"> <span id="smoothing-value">0.60</span></label>
<label>x axis <select id="xaxis"><option value="step">step</option><option value="wall">wall time</option><option value="relative">relative time</option></select></label>
<label><input type="checkbox" id="logy"> log scale</label>
</div>`;

/** Every metric's latest value, filled in by the page script (one-point metrics appear only here). */
const LATEST_TABLE = (head: string) => `<details id="latest-values"><summary>Latest values (<span id="latest-count">0</span> metrics)</summary>
<table id="latest"><thead>${head}</thead><tbody></tbody></table></details>`;

export function runPage(d: RunDetail, series: Record<string, unknown>, db: string): string {
  const r = d.run;
  const info: Array<[string, string]> = [
    ['status', `<span id="run-status">${esc(statusText(r))}</span>`],
    ['experiment', `<a href="/?experiment=${esc(encodeURIComponent(r.experiment))}">${esc(r.experiment)}</a>`],
    ['stage', esc(r.stage ?? '-')],
    ['seed', r.seed === null ? '-' : String(r.seed)],
    ['started', fmtTime(r.startedAt)],
    ['ended', fmtTime(r.endedAt)],
    ['duration', fmtDuration(r)],
    ['last heartbeat', fmtTime(r.heartbeatAt)],
    ['host / pid', `${esc(r.host)} / ${r.pid}`],
    ['git', r.gitSha === null ? '-' : `<code>${esc(r.gitSha)}</code>`],
    ['parent run', d.parent === null ? (r.parentRunId === null ? '-' : `#${r.parentRunId} (missing)`) : runLink(d.parent)],
    ...(r.sweepId !== null ? [['sweep', `<a href="/?sweep=${r.sweepId}">#${r.sweepId}${d.sweep ? ` ${esc(d.sweep.name)}` : ''}</a>`] as [string, string]] : []),
  ];
  const children = d.children.length === 0 ? '<p class="note">none</p>'
    : `<ul id="children">${d.children.map((c) => `<li>${runLink(c)} <span class="note">${esc(c.stage ?? '')} ${esc(statusText(c))}</span></li>`).join('')}</ul>`;
  const params = Object.entries(d.params);
  const config = params.length === 0 ? '<p class="note">empty config</p>'
    : `<table id="config" class="kv">${params.map(([k, v]) => `<tr><td>${esc(k)}</td><td><code>${esc(JSON.stringify(v))}</code></td></tr>`).join('')}</table>`;
  const artifacts = d.artifacts.length === 0 ? '<p class="note">none</p>'
    : `<table id="artifacts"><thead><tr><th>kind</th><th>path</th><th>size</th><th>sha256</th></tr></thead><tbody>${d.artifacts.map((a) =>
      `<tr><td>${esc(a.kind)}</td><td><code>${esc(a.path)}</code></td><td class="num">${fmtBytes(a.bytes)}</td><td><code title="${esc(a.sha256)}">${esc(a.sha256.slice(0, 16))}…</code></td></tr>`).join('')}</tbody></table>`;
  const body = `<h1>Run #${r.id} <span id="run-name">${esc(r.name)}</span></h1>
<div class="cols">
<div><table class="kv" id="info">${info.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join('')}</table></div>
<div><h2>Config</h2>${config}</div>
<div><h2>Child runs</h2>${children}
<h2>Artifacts</h2>${artifacts}</div>
</div>
<h2>Curves</h2>
${CURVE_CONTROLS}
<div class="plots" id="plots"></div>
${LATEST_TABLE('<tr><th>metric</th><th class="num">last step</th><th class="num">latest value</th><th class="num">points</th></tr>')}`;
  return layout({
    title: `run #${r.id} ${r.name}`, page: 'run', body, plots: true, db,
    data: { run: r, metricKeys: d.metricKeys, series },
  });
}

export function comparePage(c: ComparePayload, db: string): string {
  const runs = `<ul id="compared">${c.runs.map((r) => `<li>${runLink(r)} <span class="note">${esc(r.experiment)} · ${esc(r.stage ?? '-')} · ${esc(statusText(r))}</span></li>`).join('')}</ul>`;
  const sweep = c.sweep === null ? `<p class="note" id="sweep-note">${esc(c.sweepNote ?? '')}</p>`
    : `<h2>Params of ${esc(c.sweep.scope)} against a metric</h2>
<div class="controls"><label>metric <select id="pc-metric">${c.sweep.metricKeys.map((k, i) => `<option value="${esc(k)}"${i === 0 ? ' selected' : ''}>${esc(k)}</option>`).join('')}</select></label>
<span class="note">latest value of each run; params that differ between the runs</span></div>
<div class="plot" id="parcoords" style="height:360px"></div>`;
  // The sweep view first: for a sweep it is the summary; the curves follow, one per metric, full width.
  const body = `<h1>Compare ${c.runs.length} runs</h1>
${runs}
${sweep}
<h2>Curves</h2>
${CURVE_CONTROLS}
<div class="plots wide" id="plots">${c.metricKeys.length === 0 ? '<p class="note">no metrics logged</p>' : ''}</div>
${LATEST_TABLE('')}`;
  return layout({
    title: `compare ${c.runs.map((r) => `#${r.id}`).join(', ')}`, page: 'compare', body, plots: true, db,
    data: { runs: c.runs, metricKeys: c.metricKeys, series: c.series, sweep: c.sweep },
  });
}
