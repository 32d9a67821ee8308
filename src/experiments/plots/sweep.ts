// Sweep views: parallel coordinates of params against a metric, and a metric against one param.
import type { Datum, Figure, ParcoordsDimension, PlotlyAxis } from './types';
import { emptyFigure, formatNumber, note, plotlyText } from './util';

export type Row = Record<string, number | string | boolean | null | undefined>;

/** A numeric column spans decades (and reads best on a log axis) when it is all positive and max/min >= 10. */
export function spansDecades(values: readonly number[]): boolean {
  if (values.length < 2 || values.some((v) => !(v > 0) || !Number.isFinite(v))) return false;
  return Math.max(...values) / Math.min(...values) >= 10;
}

interface Column {
  kind: 'number' | 'category';
  /** Per row: the number, the category index, or null when the row lacks the value. */
  values: (number | null)[];
  categories: string[];
}

/** A column is numeric when every present value is a finite number; otherwise its values become categories. */
function column(rows: readonly Row[], key: string): Column {
  const present = rows.map((r) => r[key]).filter((v) => v !== undefined && v !== null);
  if (present.every((v) => typeof v === 'number' && Number.isFinite(v))) {
    return { kind: 'number', values: rows.map((r) => (typeof r[key] === 'number' ? (r[key] as number) : null)), categories: [] };
  }
  const categories = [...new Set(present.map((v) => String(v)))]
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const index = new Map(categories.map((c, i) => [c, i]));
  return {
    kind: 'category',
    values: rows.map((r) => (r[key] === undefined || r[key] === null ? null : index.get(String(r[key]))!)),
    categories,
  };
}

function checkRows(fn: string, rows: readonly Row[], keys: readonly string[]): void {
  if (!Array.isArray(rows)) throw new TypeError(`${fn}: rows must be an array of objects`);
  rows.forEach((r, i) => {
    if (r === null || typeof r !== 'object') throw new TypeError(`${fn}: rows[${i}] must be an object`);
  });
  for (const k of keys) if (typeof k !== 'string' || k === '') throw new TypeError(`${fn}: param and metric names must be non-empty strings`);
}

/** Metric values per row; rows whose metric is missing or not finite are left out (they cannot be coloured). */
function metricColumn(fn: string, rows: readonly Row[], metric: string): (number | null)[] {
  return rows.map((r, i) => {
    const v = r[metric];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'number') throw new TypeError(`${fn}: rows[${i}].${metric} is ${typeof v}, the metric must be a number`);
    return Number.isFinite(v) ? v : null;
  });
}

/**
 * Parallel coordinates for a sweep: one axis per param and a last one for the metric, one line per run coloured
 * by the metric. String (categorical) params get one tick per value; positive numeric params that span decades
 * get a log10 axis labelled with the values themselves. Rows missing the metric or a numeric param (or whose
 * metric is NaN or infinite, e.g. a diverged run) are left out and counted in a footnote; a missing categorical
 * value becomes the category "(none)".
 *
 * @example
 * parallelCoordinates([{ lr: 1e-4, opt: 'adamw', loss: 1.9 }, { lr: 1e-3, opt: 'sgd', loss: 2.4 }], ['lr', 'opt'], 'loss')
 */
export function parallelCoordinates(rows: readonly Row[], params: readonly string[], metric: string): Figure {
  const fn = 'parallelCoordinates';
  if (!Array.isArray(params)) throw new TypeError(`${fn}: params must be an array of names`);
  checkRows(fn, rows, [...params, metric]);
  const m = metricColumn(fn, rows, metric);
  const cols = params.map((p) => {
    const c = column(rows, p);
    if (c.kind === 'category' && c.values.some((v) => v === null)) {
      // A categorical param some runs lack: give the absent value its own tick instead of losing the run.
      c.categories.push('(none)');
      c.values = c.values.map((v) => (v === null ? c.categories.length - 1 : v));
    }
    return c;
  });
  const keep = rows.map((_, i) => m[i] !== null && cols.every((c) => c.values[i] !== null));
  const kept = keep.filter(Boolean).length;
  if (kept === 0) return emptyFigure(`${metric} by ${params.join(', ')}`, `no run has a finite ${metric}${params.length ? ' and every param' : ''}`);
  const pick = <T>(a: (T | null)[]) => a.filter((_, i) => keep[i]) as T[];

  const dimensions: ParcoordsDimension[] = params.map((p, j) => {
    const c = cols[j];
    const vals = pick(c.values);
    if (c.kind === 'category') {
      return {
        label: plotlyText(p), values: vals,
        tickvals: c.categories.map((_, i) => i), ticktext: c.categories.map(plotlyText),
        range: [0, Math.max(c.categories.length - 1, 1)],
      };
    }
    if (spansDecades(vals)) {
      const logs = vals.map((v) => Math.log10(v));
      const distinct = [...new Set(vals)].sort((a, b) => a - b);
      // Few distinct values (a grid sweep): label each; many: label the powers of ten.
      const ticks = distinct.length <= 10 ? distinct
        : Array.from({ length: Math.floor(Math.log10(distinct[distinct.length - 1])) - Math.ceil(Math.log10(distinct[0])) + 1 },
          (_, i) => Math.pow(10, Math.ceil(Math.log10(distinct[0])) + i));
      return {
        label: plotlyText(`${p} (log)`), values: logs,
        tickvals: ticks.map((t) => Math.log10(t)), ticktext: ticks.map(formatNumber),
      };
    }
    return { label: plotlyText(p), values: vals };
  });
  const mv = pick(m);
  dimensions.push({ label: plotlyText(metric), values: mv });
  const left = rows.length - kept;
  return {
    data: [{
      type: 'parcoords',
      dimensions,
      line: { color: mv, colorscale: 'Viridis', showscale: true, colorbar: { title: { text: plotlyText(metric) } } },
    }],
    layout: {
      title: { text: plotlyText(`${metric} by ${params.join(', ')}`) },
      ...(left > 0 ? { annotations: [note(`${left} of ${rows.length} runs left out (no finite ${metric} or a param missing)`, 'below')] } : {}),
    },
  };
}

export interface MetricVsParamOptions {
  /** Force a log x axis (true) or a linear one (false); by default log when the param spans decades. */
  logX?: boolean;
  logY?: boolean;
  title?: string;
  /** Row field shown on hover, e.g. the run name. Default 'name' when rows have it. */
  label?: string;
}

/**
 * A metric against one param, one marker per run. A numeric param spanning decades (a learning-rate sweep) gets a
 * log x axis; a string param a categorical one. Runs with a NaN or infinite metric are left out and counted in
 * a footnote.
 *
 * @example
 * metricVsParam(rows, 'lr', 'i2t/r@1')
 */
export function metricVsParam(rows: readonly Row[], param: string, metric: string, opts: MetricVsParamOptions = {}): Figure {
  const fn = 'metricVsParam';
  checkRows(fn, rows, [param, metric]);
  const m = metricColumn(fn, rows, metric);
  const c = column(rows, param);
  const keep = rows.map((_, i) => m[i] !== null && c.values[i] !== null);
  const idx = rows.map((_, i) => i).filter((i) => keep[i]);
  const title = opts.title ?? `${metric} vs ${param}`;
  if (idx.length === 0) return emptyFigure(title, `no run has both ${param} and a finite ${metric}`);
  const x: Datum[] = idx.map((i) => (c.kind === 'number' ? c.values[i] : c.categories[c.values[i]!]));
  const y: Datum[] = idx.map((i) => m[i]);
  const labelKey = opts.label ?? (rows.some((r) => typeof r.name === 'string') ? 'name' : undefined);
  const log = c.kind === 'number' && (opts.logX ?? spansDecades(x as number[]));
  const xaxis: PlotlyAxis = c.kind === 'category'
    // Category axis over escaped strings: plotly shows tick labels through its pseudo-HTML too.
    ? { title: { text: plotlyText(param) }, type: 'category', categoryorder: 'array', categoryarray: c.categories.map(plotlyText) }
    : { title: { text: plotlyText(param) }, ...(log ? { type: 'log' } : {}) };
  const left = rows.length - idx.length;
  return {
    data: [{
      type: 'scatter', mode: 'markers', name: plotlyText(metric),
      x: c.kind === 'category' ? x.map((v) => plotlyText(v as string)) : x, y,
      marker: { size: 9, color: '#1f77b4' },
      ...(labelKey !== undefined ? { text: idx.map((i) => plotlyText(String(rows[i][labelKey] ?? ''))) } : {}),
    }],
    layout: {
      title: { text: plotlyText(title) },
      xaxis,
      yaxis: { title: { text: plotlyText(metric) }, ...(opts.logY ? { type: 'log' } : {}) },
      hovermode: 'closest', showlegend: false,
      ...(left > 0 ? { annotations: [note(`${left} of ${rows.length} runs left out (no finite ${metric} or no ${param})`, 'below')] } : {}),
    },
  };
}
