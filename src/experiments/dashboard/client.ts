/**
 * What the browser runs: the plot builders of src/experiments/plots (the same compiled code a report uses, served
 * as one script), and the dashboard's own small script (live refresh, smoothing slider, axes, compare button).
 *
 * The builders are served from their compiled .js files beside this one, wrapped in a tiny CommonJS loader, so
 * the curves in the browser are exactly those of `modalab report` and the notebooks: one implementation of
 * TensorBoard's debiased EMA, one of the curve layout.
 */
import * as fs from 'fs';
import * as path from 'path';
import { scriptSafe } from '../plots/show';

/** The plots modules the browser needs, in dependency order; each may require only those before it. */
const PLOT_MODULES = ['util', 'smooth', 'curves', 'sweep'];

let plotsCache: string | null = null;

/** `window.modalabPlots`: smooth, lossCurves, compareRuns, parallelCoordinates, ... (browser script). */
export function plotsBundle(): string {
  if (plotsCache !== null) return plotsCache;
  const dir = path.join(__dirname, '..', 'plots');
  const defs = PLOT_MODULES.map((m) => {
    const file = path.join(dir, `${m}.js`);
    let src: string;
    try {
      src = fs.readFileSync(file, 'utf8');
    } catch {
      throw new Error(`dashboard: cannot read the compiled plots module ${file} (build with npm run build:ts)`);
    }
    src = src.replace(/\n\/\/# sourceMappingURL=.*\s*$/, '\n');
    return `defs[${JSON.stringify('./' + m)}] = function (exports, require, module) {\n${src}\n};`;
  });
  plotsCache = scriptSafe(`(function () {
'use strict';
var defs = {}, cache = {};
${defs.join('\n')}
function req(name) {
  if (cache[name]) return cache[name].exports;
  if (!defs[name]) throw new Error('modalab plots bundle: no module ' + name);
  var module = { exports: {} };
  cache[name] = module;
  defs[name](module.exports, req, module);
  return module.exports;
}
var out = {};
${JSON.stringify(PLOT_MODULES.map((m) => './' + m))}.forEach(function (m) { Object.assign(out, req(m)); });
(typeof window !== 'undefined' ? window : globalThis).modalabPlots = out;
})();
`);
  return plotsCache;
}

/**
 * The dashboard script. Each page embeds its data as JSON in <script id="page-data" type="application/json">
 * and says which page it is in <body data-page>. Everything from the database reaches the DOM through
 * textContent or plotly (whose labels the builders escape), never through innerHTML.
 */
export const CLIENT_JS = String.raw`(function () {
'use strict';
var P = window.modalabPlots;
var page = document.body.getAttribute('data-page');
var dataEl = document.getElementById('page-data');
var data = dataEl ? JSON.parse(dataEl.textContent) : null;
var RUN_POLL_MS = 3000, METRIC_POLL_MS = 2000;

function el(tag, attrs, text) {
  var e = document.createElement(tag);
  if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function setNote(msg) {
  var n = document.getElementById('live-note');
  if (n) n.textContent = msg;
}
function getJson(url) {
  return fetch(url, { headers: { accept: 'application/json' } }).then(function (r) {
    return r.json().then(function (body) {
      if (!r.ok) throw new Error(body && body.error ? body.error : 'HTTP ' + r.status);
      return body;
    });
  });
}
// JSON has no NaN: the server sends null plus a nonfinite tag, or the strings 'NaN', 'Infinity', '-Infinity'.
function toNumber(v) {
  if (v === 'NaN') return NaN;
  if (v === 'Infinity') return Infinity;
  if (v === '-Infinity') return -Infinity;
  return v;
}
function seriesNumbers(s) {
  var tags = s.nonfinite || {};
  return {
    steps: s.steps.slice(),
    values: s.values.map(function (v, i) {
      var t = tags[i];
      return t === 'nan' ? NaN : t === 'inf' ? Infinity : t === '-inf' ? -Infinity : v;
    }),
    wallTimes: s.wallTimes.slice()
  };
}
function fmtNumber(v) {
  if (v === null || v === undefined) return '-';
  v = toNumber(v);
  if (!isFinite(v)) return String(v);
  var a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}
function fmtDuration(r) {
  var s = Math.max(0, Math.round((r.endedAt || r.heartbeatAt) - r.startedAt));
  if (s >= 3600) return Math.floor(s / 3600) + 'h' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + 'm';
  if (s >= 60) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
  return s + 's';
}
function fmtTime(sec) {
  return new Date(sec * 1000).toISOString().slice(0, 19).replace('T', ' ');
}
function statusText(r) {
  return r.stale ? r.status + ' (no heartbeat)' : r.status;
}

// ------------------------------------------------------------------------------------------------ runs table
function runsPage() {
  var tbody = document.querySelector('#runs tbody');
  var compare = document.getElementById('compare');
  function checkedIds() {
    return Array.prototype.map.call(document.querySelectorAll('input.pick:checked'), function (c) { return c.value; });
  }
  function syncButton() {
    var n = checkedIds().length;
    compare.disabled = n === 0;
    compare.textContent = n > 1 ? 'compare ' + n + ' runs' : n === 1 ? 'open 1 run' : 'compare';
  }
  document.addEventListener('change', function (e) { if (e.target.classList.contains('pick')) syncButton(); });
  compare.addEventListener('click', function () {
    var ids = checkedIds();
    ids.sort(function (a, b) { return a - b; });
    if (ids.length === 1) location.href = '/runs/' + ids[0];
    else if (ids.length > 1) location.href = '/compare?runs=' + ids.join(',');
  });
  function render(payload) {
    var keep = {};
    checkedIds().forEach(function (id) { keep[id] = true; });
    var rows = payload.runs.map(function (r) {
      var tr = el('tr', { 'data-run': String(r.id), 'class': 'status-' + r.status + (r.stale ? ' stale' : '') });
      var td = el('td');
      var cb = el('input', { type: 'checkbox', 'class': 'pick', value: String(r.id), 'aria-label': 'select run ' + r.id });
      cb.checked = !!keep[r.id];
      td.appendChild(cb);
      tr.appendChild(td);
      tr.appendChild(el('td', null, r.id));
      td = el('td');
      td.appendChild(el('a', { href: '/runs/' + r.id }, r.name));
      tr.appendChild(td);
      tr.appendChild(el('td', null, r.experiment));
      tr.appendChild(el('td', null, r.stage === null ? '-' : r.stage));
      tr.appendChild(el('td', { 'class': 'status' }, statusText(r)));
      tr.appendChild(el('td', null, fmtTime(r.startedAt)));
      tr.appendChild(el('td', null, fmtDuration(r)));
      payload.metricKeys.forEach(function (k) { tr.appendChild(el('td', { 'class': 'num' }, fmtNumber(r.metrics[k]))); });
      return tr;
    });
    tbody.replaceChildren.apply(tbody, rows);
    document.getElementById('run-count').textContent = String(payload.runs.length);
    syncButton();
  }
  function poll() {
    getJson('/api/runs' + location.search).then(function (payload) {
      render(payload);
      setNote('live: updated ' + new Date().toLocaleTimeString());
    }, function (e) {
      setNote('live update failed: ' + e.message + ' (retrying)');
    }).then(function () { setTimeout(poll, RUN_POLL_MS); });
  }
  syncButton();
  setTimeout(poll, RUN_POLL_MS);
}

// ------------------------------------------------------------------------------------------------ curves
var controls = { smoothing: 0.6, x: 'step', logY: false };
function bindControls(redraw) {
  var s = document.getElementById('smoothing'), sv = document.getElementById('smoothing-value');
  var x = document.getElementById('xaxis'), lg = document.getElementById('logy');
  if (!s) return;
  controls.smoothing = Number(s.value);
  controls.x = x.value;
  controls.logY = lg.checked;
  sv.textContent = controls.smoothing.toFixed(2);
  s.addEventListener('input', function () { controls.smoothing = Number(s.value); sv.textContent = controls.smoothing.toFixed(2); redraw(); });
  x.addEventListener('change', function () { controls.x = x.value; redraw(); });
  lg.addEventListener('change', function () { controls.logY = lg.checked; redraw(); });
}
function curveOptions() {
  return { smoothing: controls.smoothing, x: controls.x, logY: controls.logY };
}
function plotInto(div, fig, oneRun, margin) {
  fig.layout.margin = margin || { l: 60, r: 20, t: 40, b: 50 };
  // One run: its name is the page's title, a legend would only take room from the curve.
  if (oneRun) fig.layout.showlegend = false;
  window.Plotly.react(div, fig.data, fig.layout, { responsive: true, displaylogo: false });
}
function plotDiv(container, key, i) {
  var d = el('div', { 'class': 'plot', id: 'plot-' + i, 'data-key': key });
  container.appendChild(d);
  return d;
}

// Points of a poll merged into a series: later steps appended, a step seen before replaced (a re-logged value).
function merge(s, add) {
  for (var i = 0; i < add.steps.length; i++) {
    var st = add.steps[i], n = s.steps.length;
    if (n === 0 || st > s.steps[n - 1]) {
      s.steps.push(st); s.values.push(add.values[i]); s.wallTimes.push(add.wallTimes[i]);
      continue;
    }
    var lo = 0, hi = n;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (s.steps[mid] < st) lo = mid + 1; else hi = mid; }
    if (s.steps[lo] === st) { s.values[lo] = add.values[i]; s.wallTimes[lo] = add.wallTimes[i]; }
    else { s.steps.splice(lo, 0, st); s.values.splice(lo, 0, add.values[i]); s.wallTimes.splice(lo, 0, add.wallTimes[i]); }
  }
}

// ------------------------------------------------------------------------------------------------ run page
// The same key order as the server (api.ts orderKeys): loss keys, then retrieval keys, then the rest.
var RETRIEVAL_DIR = /(^|[^a-z])(i2t|t2i)(?![a-z])/i, RETRIEVAL_K = /r@\d+/i;
function isRetrieval(k) { return RETRIEVAL_DIR.test(k) && RETRIEVAL_K.test(k); }
function keyRank(k) { return /loss/i.test(k) ? 0 : isRetrieval(k) ? 1 : 2; }
function orderKeys(keys) {
  return keys.slice().sort(function (a, b) { return keyRank(a) - keyRank(b) || (a < b ? -1 : a > b ? 1 : 0); });
}
// Retrieval metrics that differ only in direction and K ('val/i2t/r@1', 'val/t2i/r@10') share one plot.
function retrievalGroup(k) {
  return k.replace(RETRIEVAL_DIR, '$1*').replace(RETRIEVAL_K, 'r@K');
}

// The table of every metric's latest value (one-point metrics, such as a final evaluation, are only there).
function latestTable(keys, series) {
  var t = document.getElementById('latest');
  if (!t) return;
  var rows = keys.map(function (k) {
    var s = series[k], n = s.steps.length;
    var tr = el('tr', { 'data-key': k });
    tr.appendChild(el('td', null, k));
    tr.appendChild(el('td', { 'class': 'num' }, n ? s.steps[n - 1] : '-'));
    tr.appendChild(el('td', { 'class': 'num' }, n ? fmtNumber(s.values[n - 1]) : '-'));
    tr.appendChild(el('td', { 'class': 'num' }, n));
    return tr;
  });
  t.querySelector('tbody').replaceChildren.apply(t.querySelector('tbody'), rows);
  document.getElementById('latest-count').textContent = String(keys.length);
}

function runPage() {
  var run = data.run;
  var label = '#' + run.id + ' ' + run.name;
  var series = {};
  var keys = data.metricKeys.slice();
  keys.forEach(function (k) { series[k] = seriesNumbers(data.series[k]); });
  var container = document.getElementById('plots');
  var divs = {};
  var count = 0;
  // Plots: one per metric with two points or more, retrieval metrics grouped; in key order.
  function groups() {
    var out = [], byId = {};
    keys.forEach(function (k) {
      if (series[k].steps.length < 2) return;
      var id = isRetrieval(k) ? retrievalGroup(k) : k;
      if (!byId[id]) { byId[id] = { id: id, keys: [], retrieval: isRetrieval(k) }; out.push(byId[id]); }
      byId[id].keys.push(k);
    });
    return out;
  }
  function figure(g) {
    if (g.retrieval && g.keys.length > 1) {
      var m = {};
      g.keys.forEach(function (k) { m[k] = series[k]; });
      var title = g.id.replace(/\*/, '').replace(/r@K/i, '').replace(/[\/_]+/g, ' ').trim();
      var fig = P.retrievalCurves(m, { smoothing: controls.smoothing, x: controls.x, title: (title ? title + ' ' : '') + 'retrieval' });
      if (controls.logY) fig.layout.yaxis.type = 'log';
      return fig;
    }
    var one = {};
    one[g.keys[0]] = series[g.keys[0]];
    return P.compareRuns([{ name: label, metrics: one }], g.keys[0], curveOptions());
  }
  function redraw() {
    latestTable(keys, series);
    var gs = groups();
    if (gs.length === 0) { container.textContent = keys.length ? 'no metric has two points yet' : 'no metrics logged yet'; return; }
    if (count === 0) container.textContent = '';
    gs.forEach(function (g) {
      if (!divs[g.id]) divs[g.id] = plotDiv(container, g.id, count++);
      container.appendChild(divs[g.id]); // keeps the key order when a new metric arrives
      plotInto(divs[g.id], figure(g), !(g.retrieval && g.keys.length > 1));
    });
  }
  function maxStep() {
    var m = -1;
    keys.forEach(function (k) { var s = series[k].steps; if (s.length) m = Math.max(m, s[s.length - 1]); });
    return m;
  }
  function poll() {
    // since = the last step seen minus one: a metric logged later at that same step (an evaluation) still arrives.
    var since = maxStep() - 1;
    getJson('/api/runs/' + run.id + '/metrics' + (since >= 0 ? '?since=' + since : '')).then(function (p) {
      Object.keys(p.metrics).forEach(function (k) {
        var add = seriesNumbers(p.metrics[k]);
        if (!series[k]) {
          series[k] = { steps: [], values: [], wallTimes: [] };
          keys = orderKeys(keys.concat([k]));
        }
        merge(series[k], add);
      });
      redraw();
      var st = document.getElementById('run-status');
      st.textContent = statusText(p);
      if (p.status === 'running' && !p.stale) {
        setNote('live: updated ' + new Date().toLocaleTimeString());
        setTimeout(poll, METRIC_POLL_MS);
      } else {
        setNote('run ' + p.status + (p.stale ? ' (no heartbeat)' : '') + ': live updates stopped');
      }
    }, function (e) {
      setNote('live update failed: ' + e.message + ' (retrying)');
      setTimeout(poll, METRIC_POLL_MS);
    });
  }
  bindControls(redraw);
  redraw();
  if (run.status === 'running' && !run.stale) setTimeout(poll, METRIC_POLL_MS);
}

// ------------------------------------------------------------------------------------------------ compare page
function comparePage() {
  var runs = data.runs.map(function (r, i) {
    var m = {};
    Object.keys(data.series[i]).forEach(function (k) { m[k] = seriesNumbers(data.series[i][k]); });
    return { name: '#' + r.id + ' ' + r.name, metrics: m };
  });
  // A metric no run has two points of (a final evaluation) is a row of the table, not a plot.
  var plotted = data.metricKeys.filter(function (k) {
    return runs.some(function (r) { return r.metrics[k] && r.metrics[k].steps.length > 1; });
  });
  var container = document.getElementById('plots');
  var divs = plotted.map(function (k, i) { return plotDiv(container, k, i); });
  function redraw() {
    plotted.forEach(function (k, i) { plotInto(divs[i], P.compareRuns(runs, k, curveOptions())); });
  }
  var t = document.getElementById('latest');
  if (t) {
    var head = el('tr');
    head.appendChild(el('th', null, 'metric'));
    runs.forEach(function (r) { head.appendChild(el('th', { 'class': 'num' }, r.name)); });
    t.querySelector('thead').replaceChildren(head);
    t.querySelector('tbody').replaceChildren.apply(t.querySelector('tbody'), data.metricKeys.map(function (k) {
      var tr = el('tr', { 'data-key': k });
      tr.appendChild(el('td', null, k));
      runs.forEach(function (r) {
        var s = r.metrics[k], n = s ? s.steps.length : 0;
        tr.appendChild(el('td', { 'class': 'num' }, n ? fmtNumber(s.values[n - 1]) : '-'));
      });
      return tr;
    }));
    document.getElementById('latest-count').textContent = String(data.metricKeys.length);
  }
  bindControls(redraw);
  redraw();
  var sel = document.getElementById('pc-metric');
  if (data.sweep && sel) {
    var pc = document.getElementById('parcoords');
    // Room above the axes: parcoords puts its axis labels there, under the title.
    var drawPc = function () { plotInto(pc, P.parallelCoordinates(data.sweep.rows, data.sweep.params, sel.value), false, { l: 80, r: 40, t: 90, b: 30 }); };
    sel.addEventListener('change', drawPc);
    drawPc();
  }
}

if (page === 'runs') runsPage();
else if (!P || !window.Plotly) setNote('plotly.js did not load: curves cannot be drawn');
else if (page === 'run') runPage();
else if (page === 'compare') comparePage();
})();
`;
