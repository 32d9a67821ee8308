// Minimal plotly.js figure types: just what the builders here emit. Figures are plain JSON (no functions, no
// typed arrays, no NaN: a missing point is null, which plotly draws as a gap and JSON keeps as null), so the same
// object can go to tslab, into a standalone HTML report or over the wire to `modalab ui` unchanged.

/** One value on an axis: a number, a category name, or null for a gap. */
export type Datum = number | string | null;

/** A plotly trace. Only the attributes this module sets are named; the index signature admits the rest. */
export interface PlotlyTrace {
  type: 'scatter' | 'bar' | 'heatmap' | 'parcoords';
  name?: string;
  x?: Datum[];
  y?: Datum[];
  z?: (number | null)[][];
  mode?: 'lines' | 'markers' | 'lines+markers';
  opacity?: number;
  legendgroup?: string;
  showlegend?: boolean;
  hoverinfo?: string;
  hovertemplate?: string;
  text?: string[] | string[][];
  line?: Record<string, unknown>;
  marker?: Record<string, unknown>;
  dimensions?: ParcoordsDimension[];
  /** Raw (unescaped) identifiers for code that finds traces again, e.g. a live figure: never displayed. */
  meta?: Record<string, string | number>;
  [attr: string]: unknown;
}

export interface ParcoordsDimension {
  label: string;
  values: number[];
  range?: [number, number];
  tickvals?: number[];
  ticktext?: string[];
}

export interface PlotlyAxis {
  title?: { text: string };
  type?: 'linear' | 'log' | 'date' | 'category';
  autorange?: boolean | 'reversed';
  rangemode?: 'normal' | 'tozero';
  tickvals?: number[];
  ticktext?: string[];
  [attr: string]: unknown;
}

export interface PlotlyAnnotation {
  text: string;
  showarrow: boolean;
  xref: 'paper';
  yref: 'paper';
  x: number;
  y: number;
  [attr: string]: unknown;
}

export interface PlotlyLayout {
  title?: { text: string };
  xaxis?: PlotlyAxis;
  yaxis?: PlotlyAxis;
  showlegend?: boolean;
  hovermode?: 'closest' | 'x' | 'x unified' | false;
  annotations?: PlotlyAnnotation[];
  [attr: string]: unknown;
}

/** What every builder returns: `Plotly.newPlot(div, fig.data, fig.layout)`. */
export interface Figure {
  data: PlotlyTrace[];
  layout: PlotlyLayout;
}

/** A metric over steps, as the tracking queries return it. wallTimes are Unix seconds, one per step. */
export interface Series {
  name: string;
  steps: ArrayLike<number>;
  values: ArrayLike<number>;
  wallTimes?: ArrayLike<number>;
  /** CSS colour for this run; by default the palette colour of its position. */
  color?: string;
}
