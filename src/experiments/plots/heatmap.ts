// Attention maps: a query x key weight matrix as a heatmap, tokens on the axes.
import type { Figure } from './types';
import { emptyFigure, finiteOrNull, plotlyText } from './util';

export interface HeatmapOptions {
  /** [rows, cols] of a flat Float32Array/Float64Array/number[] matrix (row-major); not needed for number[][]. */
  shape?: readonly [number, number];
  /** One label per column (keys) and per row (queries), e.g. the tokens. */
  xLabels?: readonly string[];
  yLabels?: readonly string[];
  title?: string;
  /** Colour range; by default the data's own. Attention weights read well with zmin 0, zmax 1. */
  zmin?: number;
  zmax?: number;
}

/**
 * An attention map as a heatmap: rows are queries (top to bottom, as in a matrix), columns are keys. Labels go
 * on the axes by position, so repeated tokens ("the" twice) stay separate columns; hovering shows
 * `query → key: weight`. NaN and infinite weights are gaps.
 *
 * @example
 * const w = attn.toArray();                       // one head's [N, N] weights, row-major
 * attentionHeatmap(w, { shape: [N, N], xLabels: tokens, yLabels: tokens, title: 'layer 3, head 0' })
 */
export function attentionHeatmap(
  matrix: readonly (readonly number[])[] | Float32Array | Float64Array | readonly number[],
  opts: HeatmapOptions = {},
): Figure {
  const fn = 'attentionHeatmap';
  const z = toRows(fn, matrix, opts.shape);
  const rows = z.length;
  const cols = rows > 0 ? z[0].length : 0;
  for (const [which, labels, n] of [['xLabels', opts.xLabels, cols], ['yLabels', opts.yLabels, rows]] as const) {
    if (labels === undefined) continue;
    if (!Array.isArray(labels) || labels.some((l) => typeof l !== 'string')) throw new TypeError(`${fn}: ${which} must be an array of strings`);
    if (labels.length !== n) throw new RangeError(`${fn}: ${which} has ${labels.length} labels for ${n} ${which === 'xLabels' ? 'columns' : 'rows'} (matrix [${rows}, ${cols}])`);
  }
  for (const k of ['zmin', 'zmax'] as const) {
    const v = opts[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) throw new RangeError(`${fn}: ${k} must be a finite number`);
  }
  if (rows === 0 || cols === 0) return emptyFigure(opts.title, `empty matrix [${rows}, ${cols}]`);

  const xl = (opts.xLabels ?? []).map(plotlyText);
  const yl = (opts.yLabels ?? []).map(plotlyText);
  const xName = (j: number) => (opts.xLabels ? xl[j] : String(j));
  const yName = (i: number) => (opts.yLabels ? yl[i] : String(i));
  const text = z.map((row, i) => row.map((_, j) => `${yName(i)} → ${xName(j)}`));
  const ticks = (n: number, labels: string[] | undefined) => (labels
    ? { tickmode: 'array', tickvals: Array.from({ length: n }, (_, i) => i), ticktext: labels }
    : {});
  return {
    data: [{
      type: 'heatmap',
      z,
      x: Array.from({ length: cols }, (_, j) => j),
      y: Array.from({ length: rows }, (_, i) => i),
      colorscale: 'Viridis',
      ...(opts.zmin !== undefined ? { zmin: opts.zmin } : {}),
      ...(opts.zmax !== undefined ? { zmax: opts.zmax } : {}),
      text,
      hovertemplate: '%{text}: %{z:.4f}<extra></extra>',
    }],
    layout: {
      ...(opts.title !== undefined ? { title: { text: plotlyText(opts.title) } } : {}),
      xaxis: { title: { text: 'key' }, side: 'top', ...ticks(cols, opts.xLabels ? xl : undefined) },
      yaxis: { title: { text: 'query' }, autorange: 'reversed', ...ticks(rows, opts.yLabels ? yl : undefined) },
    },
  };
}

function toRows(
  fn: string,
  m: readonly (readonly number[])[] | Float32Array | Float64Array | readonly number[],
  shape: readonly [number, number] | undefined,
): (number | null)[][] {
  const flat = m instanceof Float32Array || m instanceof Float64Array || (Array.isArray(m) && m.length > 0 && !Array.isArray(m[0]));
  if (flat) {
    const a = m as ArrayLike<number>;
    if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new TypeError(`${fn}: a flat matrix needs opts.shape = [rows, cols], got ${JSON.stringify(shape)}`);
    }
    const [r, c] = shape;
    if (r * c !== a.length) throw new RangeError(`${fn}: shape [${r}, ${c}] needs ${r * c} values, got ${a.length}`);
    const out: (number | null)[][] = [];
    for (let i = 0; i < r; i++) {
      const row = new Array<number | null>(c);
      for (let j = 0; j < c; j++) {
        const v = a[i * c + j];
        if (typeof v !== 'number') throw new TypeError(`${fn}: value ${i * c + j} is ${typeof v}, not a number`);
        row[j] = finiteOrNull(v);
      }
      out.push(row);
    }
    return out;
  }
  if (!Array.isArray(m)) throw new TypeError(`${fn}: matrix must be number[][] or a Float32Array with opts.shape`);
  const rows = m as readonly (readonly number[])[];
  const cols = rows.length > 0 ? rows[0].length : 0;
  if (shape !== undefined && (shape[0] !== rows.length || shape[1] !== cols)) {
    throw new RangeError(`${fn}: opts.shape [${shape.join(', ')}] but the matrix is [${rows.length}, ${cols}]`);
  }
  return rows.map((row, i) => {
    if (!Array.isArray(row)) throw new TypeError(`${fn}: row ${i} is not an array`);
    if (row.length !== cols) throw new RangeError(`${fn}: ragged matrix: row 0 has ${cols} columns, row ${i} has ${row.length}`);
    return row.map((v, j) => {
      if (typeof v !== 'number') throw new TypeError(`${fn}: [${i}][${j}] is ${typeof v}, not a number`);
      return finiteOrNull(v);
    });
  });
}
