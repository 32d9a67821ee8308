// Plots: pure functions from run data to plotly figures ({ data, layout }, plain JSON). See docs/plots.md.
export type { Datum, Figure, ParcoordsDimension, PlotlyAnnotation, PlotlyAxis, PlotlyLayout, PlotlyTrace, Series } from './types';
export { smooth } from './smooth';
export { lossCurves, compareRuns, retrievalCurves } from './curves';
export type { CurveOptions, RetrievalOptions, RunMetrics, XMode } from './curves';
export { parallelCoordinates, metricVsParam, spansDecades } from './sweep';
export type { MetricVsParamOptions, Row } from './sweep';
export { attentionHeatmap } from './heatmap';
export type { HeatmapOptions } from './heatmap';
export { plotlyText, PALETTE } from './util';
export { show, liveFigure, LiveFigure, figureHtml, figurePage, plotlySource, escapeHtml } from './show';
export type { ShowOptions, LiveFigureOptions, HtmlDisplay } from './show';
