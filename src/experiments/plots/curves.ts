// Metric curves over training: loss curves with TensorBoard smoothing, several runs overlaid, retrieval recall.
import { smooth } from './smooth';
import type { Datum, Figure, PlotlyAxis, PlotlyTrace, Series } from './types';
import { checkSeries, emptyFigure, finiteOrNull, lineMode, note, paletteColor, plotlyText } from './util';

/** 'step': the logged step; 'wall': wall-clock date; 'relative': time since the run's first point. */
export type XMode = 'step' | 'wall' | 'relative';

export interface CurveOptions {
  /** TensorBoard smoothing weight in [0, 1); 0 draws the raw series only. Default 0.6. */
  smoothing?: number;
  x?: XMode;
  logY?: boolean;
  title?: string;
  /** y axis title; lossCurves defaults to 'loss'. */
  yTitle?: string;
  /** Opacity of the raw series drawn behind the smoothed one. Default 0.25. */
  rawOpacity?: number;
}

/**
 * Loss curves, one colour per run: the smoothed line, and the raw series faint behind it in the same colour.
 * Both traces of a run share a legend group, so clicking the run in the legend hides or shows both.
 *
 * @example
 * const fig = lossCurves([{ name: 'lr=3e-4', steps: [0, 1, 2], values: [2.3, 1.9, 1.7] }], { logY: true });
 * plots.show(fig);   // or Plotly.newPlot(div, fig.data, fig.layout)
 */
export function lossCurves(series: readonly Series[], opts: CurveOptions = {}): Figure {
  return curvesFigure('lossCurves', series, { ...opts, yTitle: opts.yTitle ?? 'loss' });
}

/** One run and its metrics by key, as `compareRuns` takes them. */
export interface RunMetrics {
  name: string;
  metrics: Record<string, Omit<Series, 'name'>>;
  color?: string;
}

/**
 * One metric of several runs overlaid (smoothed, raw behind, one colour and legend group per run). Runs that did
 * not log the metric are listed in a footnote rather than dropped silently.
 *
 * @example
 * compareRuns([{ name: 'a', metrics: { loss: a } }, { name: 'b', metrics: { loss: b } }], 'loss', { x: 'relative' })
 */
export function compareRuns(runs: readonly RunMetrics[], metricKey: string, opts: CurveOptions = {}): Figure {
  if (!Array.isArray(runs)) throw new TypeError('compareRuns: runs must be an array');
  if (typeof metricKey !== 'string' || metricKey === '') throw new TypeError('compareRuns: metricKey must be a non-empty string');
  const series: Series[] = [];
  const missing: string[] = [];
  runs.forEach((r, i) => {
    if (r === null || typeof r !== 'object' || typeof r.name !== 'string') {
      throw new TypeError(`compareRuns: runs[${i}] must be { name: string, metrics: {...} }`);
    }
    const m = r.metrics !== null && typeof r.metrics === 'object' && Object.prototype.hasOwnProperty.call(r.metrics, metricKey)
      ? r.metrics[metricKey] : undefined;
    if (m === undefined) {
      missing.push(r.name);
      return;
    }
    // Colour by position in `runs`, so a run keeps its colour whether or not others logged the metric.
    series.push({ ...m, name: r.name, color: r.color ?? m.color ?? paletteColor(i) });
  });
  const fig = curvesFigure('compareRuns', series, { ...opts, title: opts.title ?? metricKey, yTitle: opts.yTitle ?? metricKey });
  if (missing.length > 0) {
    const n = note(`not logged by: ${missing.join(', ')}`, series.length === 0 ? 'center' : 'below');
    fig.layout.annotations = series.length === 0 ? [n] : [...(fig.layout.annotations ?? []), n];
  }
  return fig;
}

/** Per-K colour (R@1, R@5, R@10 always the same three) and per-direction dash. */
const K_COLORS: Record<number, string> = { 1: '#1f77b4', 5: '#ff7f0e', 10: '#2ca02c' };
const EXTRA_K_COLORS = ['#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
const DIRECTIONS = { i2t: { dash: 'solid', label: 'image→text' }, t2i: { dash: 'dash', label: 'text→image' } } as const;

export interface RetrievalOptions {
  title?: string;
  x?: XMode;
  /** Smoothing weight; default 0 (evaluations are sparse and each point is meaningful). */
  smoothing?: number;
}

/**
 * Retrieval recall over steps: one line per (direction, K), keyed by metric name. A key names its direction
 * (`i2t` or `t2i`) and its K (`r@K`), anywhere in the key: 'i2t/r@1', 'eval/t2i/r@10' and 'val/i2t_r@5' all
 * work. Colour says K, dash says direction (i2t solid, t2i dashed).
 *
 * @example
 * retrievalCurves({ 'i2t/r@1': { steps: [100, 200], values: [0.12, 0.3] },
 *                   't2i/r@1': { steps: [100, 200], values: [0.1, 0.28] } })
 */
export function retrievalCurves(series: Record<string, Omit<Series, 'name'>>, opts: RetrievalOptions = {}): Figure {
  if (series === null || typeof series !== 'object' || Array.isArray(series)) {
    throw new TypeError('retrievalCurves: series must be an object keyed by metric name, e.g. { "i2t/r@1": {...} }');
  }
  const parsed = Object.keys(series).map((key) => {
    const dir = /(?:^|[^a-z])(i2t|t2i)(?![a-z])/i.exec(key);
    const k = /r@(\d+)/i.exec(key);
    if (!dir || !k) {
      throw new RangeError(`retrievalCurves: metric ${JSON.stringify(key)} names no direction and K (expected e.g. "i2t/r@1" or "t2i/r@10")`);
    }
    return { key, dir: dir[1].toLowerCase() as 'i2t' | 't2i', k: Number(k[1]) };
  });
  parsed.sort((a, b) => (a.dir === b.dir ? a.k - b.k : a.dir === 'i2t' ? -1 : 1));
  const ks = [...new Set(parsed.map((p) => p.k))].sort((a, b) => a - b);
  const extra = ks.filter((k) => K_COLORS[k] === undefined);
  const colorOf = (k: number) => K_COLORS[k] ?? EXTRA_K_COLORS[extra.indexOf(k) % EXTRA_K_COLORS.length];
  const list: Series[] = parsed.map((p) => ({ ...series[p.key], name: p.key, color: colorOf(p.k) }));
  // A prefix before the direction ('val/', 'test/', 'heldout/') names the split: keep it in the label, so curves of
  // several splits in one figure stay apart in the legend.
  const labels = parsed.map((p) => {
    const pre = p.key.slice(0, p.key.toLowerCase().indexOf(p.dir)).replace(/[/_\s.:-]+$/, '');
    return `${pre ? `${pre} ` : ''}${DIRECTIONS[p.dir].label} R@${p.k}`;
  });
  const fig = curvesFigure('retrievalCurves', list, {
    smoothing: opts.smoothing ?? 0,
    x: opts.x,
    title: opts.title ?? 'retrieval',
    yTitle: 'recall',
  }, (i) => ({ label: labels[i], dash: DIRECTIONS[parsed[i].dir].dash }));
  if (fig.layout.yaxis) fig.layout.yaxis.rangemode = 'tozero';
  return fig;
}

interface Style {
  label: string;
  dash: string;
}

/** The shared builder: validates every series, computes x, smooths, emits raw + smoothed traces per series. */
function curvesFigure(fn: string, series: readonly Series[], opts: CurveOptions, style?: (i: number) => Style): Figure {
  if (!Array.isArray(series)) throw new TypeError(`${fn}: series must be an array`);
  const xMode: XMode = opts.x ?? 'step';
  if (xMode !== 'step' && xMode !== 'wall' && xMode !== 'relative') {
    throw new RangeError(`${fn}: x must be 'step', 'wall' or 'relative', got ${JSON.stringify(xMode)}`);
  }
  const weight = opts.smoothing ?? 0.6;
  if (typeof weight !== 'number' || !(weight >= 0 && weight < 1)) {
    throw new RangeError(`${fn}: smoothing must be a number in [0, 1), got ${String(weight)}`);
  }
  const rawOpacity = opts.rawOpacity ?? 0.25;
  if (typeof rawOpacity !== 'number' || !(rawOpacity >= 0 && rawOpacity <= 1)) {
    throw new RangeError(`${fn}: rawOpacity must be a number in [0, 1], got ${String(rawOpacity)}`);
  }
  const checked = series.map((s) => checkSeries(fn, s, xMode !== 'step'));
  if (series.length === 0) return emptyFigure(opts.title, 'no data');

  // Relative time: one unit for the whole figure, picked from the longest run, so runs compare directly.
  const starts = checked.map((c) => (c.wall ?? []).find((t) => Number.isFinite(t)) ?? 0);
  let span = 0;
  checked.forEach((c, i) => (c.wall ?? []).forEach((t) => { if (Number.isFinite(t)) span = Math.max(span, t - starts[i]); }));
  const unit = span >= 2 * 3600 ? { div: 3600, name: 'h' } : span >= 120 ? { div: 60, name: 'min' } : { div: 1, name: 's' };

  const data: PlotlyTrace[] = [];
  checked.forEach((c, i) => {
    const s = series[i];
    const color = s.color ?? paletteColor(i);
    const st = style ? style(i) : { label: s.name, dash: 'solid' };
    const label = plotlyText(st.label);
    const group = `${i}:${s.name}`;
    let x: Datum[];
    if (xMode === 'step') x = c.steps.map(finiteOrNull);
    // Plotly date axes take milliseconds since the epoch; wall times are Unix seconds.
    else if (xMode === 'wall') x = c.wall!.map((t) => finiteOrNull(t * 1000));
    else x = c.wall!.map((t) => finiteOrNull((t - starts[i]) / unit.div));
    const raw = c.values.map(finiteOrNull);
    const meta = { run: s.name, index: i };
    if (weight > 0) {
      data.push({
        type: 'scatter', name: label, x, y: raw, mode: lineMode(raw), opacity: rawOpacity,
        line: { color, width: 1, dash: st.dash }, marker: { color, size: 4 },
        legendgroup: group, showlegend: false, hoverinfo: 'skip', meta: { ...meta, role: 'raw' },
      });
    }
    const sm = weight > 0 ? smooth(c.values, weight).map(finiteOrNull) : raw;
    data.push({
      type: 'scatter', name: label, x, y: sm, mode: lineMode(sm),
      line: { color, width: 2, dash: st.dash }, marker: { color, size: 5 },
      legendgroup: group, showlegend: true, meta: { ...meta, role: weight > 0 ? 'smoothed' : 'raw' },
    });
  });

  const xaxis: PlotlyAxis = xMode === 'step' ? { title: { text: 'step' } }
    : xMode === 'wall' ? { title: { text: 'wall time' }, type: 'date' }
      : { title: { text: `time since start (${unit.name})` }, rangemode: 'tozero' };
  const yaxis: PlotlyAxis = { title: { text: plotlyText(opts.yTitle ?? 'value') }, ...(opts.logY ? { type: 'log' } : {}) };
  return {
    data,
    layout: {
      ...(opts.title !== undefined ? { title: { text: plotlyText(opts.title) } } : {}),
      xaxis, yaxis, hovermode: 'closest', showlegend: true,
    },
  };
}
