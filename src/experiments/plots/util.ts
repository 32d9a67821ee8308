// Helpers shared by the figure builders: text escaping for plotly, the palette, number formatting, checks.
import type { Datum, Figure, PlotlyAnnotation, Series } from './types';

/**
 * Plotly renders every label (legend, title, hover, tick text) through its own pseudo-HTML: `<b>`, `<br>`,
 * `<a href>` and entities. Run names, param values and tokens are data, so they are shown literally: `&`, `<`
 * and `>` become the entities plotly decodes back into those characters. Nothing here builds HTML.
 */
export function plotlyText(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** D3's category10, plotly's own default order, so figures look like any other plotly figure. */
export const PALETTE: readonly string[] = [
  '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd',
  '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf',
];

export function paletteColor(i: number): string {
  return PALETTE[i % PALETTE.length];
}

/** A finite number as itself, anything else (NaN, +-Infinity) as null: a gap in plotly and valid JSON. */
export function finiteOrNull(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

/** 'lines' normally; 'lines+markers' when some point has no finite neighbour (a line through it draws nothing). */
export function lineMode(ys: readonly Datum[]): 'lines' | 'lines+markers' {
  for (let i = 0; i < ys.length; i++) {
    if (ys[i] === null) continue;
    const prev = i > 0 && ys[i - 1] !== null;
    const next = i + 1 < ys.length && ys[i + 1] !== null;
    if (!prev && !next) return 'lines+markers';
  }
  return 'lines';
}

/** Short, readable number for tick labels: 0.0003 -> "3e-4", 128 -> "128", 0.25 -> "0.25". */
export function formatNumber(v: number): string {
  if (v === 0 || !Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1e-3 && a < 1e6) return String(Number(v.toPrecision(4)));
  const [m, e] = v.toExponential(3).split('e');
  return `${Number(m)}e${Number(e)}`;
}

/** A centred note on an otherwise empty plot area, or a footnote under it. */
export function note(text: string, where: 'center' | 'below'): PlotlyAnnotation {
  return where === 'center'
    ? { text: plotlyText(text), showarrow: false, xref: 'paper', yref: 'paper', x: 0.5, y: 0.5, font: { size: 14 } }
    : { text: plotlyText(text), showarrow: false, xref: 'paper', yref: 'paper', x: 0, y: -0.18, xanchor: 'left', font: { size: 11 } };
}

export function emptyFigure(title: string | undefined, message: string): Figure {
  return {
    data: [],
    layout: {
      ...(title !== undefined ? { title: { text: plotlyText(title) } } : {}),
      xaxis: { visible: false },
      yaxis: { visible: false },
      annotations: [note(message, 'center')],
    },
  };
}

/** Checks one series and returns it with plain arrays; errors name the function and the run. */
export function checkSeries(fn: string, s: Series, needWall: boolean): { steps: number[]; values: number[]; wall?: number[] } {
  if (s === null || typeof s !== 'object') throw new TypeError(`${fn}: a series must be an object, got ${s === null ? 'null' : typeof s}`);
  if (typeof s.name !== 'string') throw new TypeError(`${fn}: series name must be a string, got ${typeof s.name}`);
  const name = JSON.stringify(s.name);
  if (!isArrayLike(s.steps) || !isArrayLike(s.values)) throw new TypeError(`${fn}: series ${name}: steps and values must be arrays of numbers`);
  if (s.steps.length !== s.values.length) {
    throw new RangeError(`${fn}: series ${name}: ${s.steps.length} steps but ${s.values.length} values`);
  }
  const steps = toNumbers(fn, name, 'steps', s.steps);
  const values = toNumbers(fn, name, 'values', s.values);
  let wall: number[] | undefined;
  if (s.wallTimes !== undefined) {
    if (!isArrayLike(s.wallTimes)) throw new TypeError(`${fn}: series ${name}: wallTimes must be an array of numbers`);
    if (s.wallTimes.length !== s.steps.length) {
      throw new RangeError(`${fn}: series ${name}: ${s.steps.length} steps but ${s.wallTimes.length} wallTimes`);
    }
    wall = toNumbers(fn, name, 'wallTimes', s.wallTimes);
  } else if (needWall) {
    throw new TypeError(`${fn}: series ${name} has no wallTimes, needed for a wall-clock or relative x axis`);
  }
  return { steps, values, wall };
}

function isArrayLike(a: unknown): a is ArrayLike<number> {
  return Array.isArray(a) || (ArrayBuffer.isView(a) && !(a instanceof DataView));
}

function toNumbers(fn: string, name: string, what: string, a: ArrayLike<number>): number[] {
  const out = new Array<number>(a.length);
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (typeof v !== 'number') throw new TypeError(`${fn}: series ${name}: ${what}[${i}] is ${typeof v}, not a number`);
    out[i] = v;
  }
  return out;
}
