// Showing figures: inline in tslab (plotly.js inlined from the package once per kernel, no network), a live
// figure that updates in place while a run trains, and outside tslab an HTML file in the temp folder.
//
// The HTML here is built from a figure's JSON only; every label in a figure is already plotly-escaped by the
// builders, and the JSON is made safe to sit inside a <script> element (see scriptJson).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Figure } from './types';
import { plotlyText } from './util';

/** The part of tslab's `Display` this module uses (tslab's own `display` and `newDisplay()` satisfy it). */
export interface HtmlDisplay {
  html(s: string): void;
}

export interface ShowOptions {
  /** CSS height of the plot; default '420px'. */
  height?: string;
  /** CSS width; default '100%'. */
  width?: string;
  /**
   * Where to display instead of tslab's `display` (a custom frontend, or a test). When given, the tslab check is
   * skipped and the plotly.js bookkeeping below is the same.
   */
  display?: HtmlDisplay;
  /** Send plotly.js again even if this process already sent it (e.g. after reloading the notebook page). */
  reloadPlotly?: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// plotly.js source and safe embedding

let plotlyCache: string | null = null;

/** plotly.js (plotly.js-dist-min, shipped as a dependency) as a string safe to put inside a <script> element. */
export function plotlySource(): string {
  if (plotlyCache === null) plotlyCache = scriptSafe(fs.readFileSync(plotlyPath(), 'utf8'));
  return plotlyCache;
}

/** The path of plotly.min.js in the plotly.js-dist-min package. */
export function plotlyPath(): string {
  try {
    return require.resolve('plotly.js-dist-min', { paths: [__dirname, process.cwd()] });
  } catch {
    throw new Error('plots: cannot find the plotly.js-dist-min package (a dependency of modalab); run npm install');
  }
}

/**
 * JavaScript text made safe inside an HTML <script> element: a literal `</script` would end the element and
 * `<!--` could start the HTML parser's escaped-script state. Both can only occur inside JS string or regex
 * literals, where `<\/` and `<\!` mean the same characters.
 */
export function scriptSafe(js: string): string {
  return js.replace(/<\/(script)/gi, '<\\/$1').replace(/<!--/g, '<\\!--');
}

/** JSON of `v` that can be pasted into a <script> element: `<`, `>`, `&` and U+2028/9 as \u escapes. */
export function scriptJson(v: unknown): string {
  return JSON.stringify(v)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/** Escapes text for HTML element content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

function checkFigure(fn: string, fig: Figure): void {
  if (fig === null || typeof fig !== 'object' || !Array.isArray(fig.data) || fig.layout === null || typeof fig.layout !== 'object') {
    throw new TypeError(`${fn}: expected a plotly figure { data: [...], layout: {...} }, as the plots builders return`);
  }
}

function checkCss(fn: string, what: string, v: string): string {
  // A CSS length only: it goes into a style attribute.
  if (!/^\d+(\.\d+)?(px|%|em|rem|vh|vw)$/.test(v)) throw new RangeError(`${fn}: ${what} must be a CSS length like '420px' or '100%', got ${JSON.stringify(v)}`);
  return v;
}

let divCounter = 0;

/** A fresh element id: pid, time and a counter, so ids from two kernels writing into one page do not clash. */
export function newDivId(): string {
  divCounter += 1;
  return `modalab-plot-${process.pid.toString(36)}-${Date.now().toString(36)}-${divCounter}`;
}

/**
 * A <div> and the <script> that draws `fig` into it with `window.Plotly`. If plotly.js is not loaded in the
 * page (a notebook reopened from disk: Jupyter does not run the scripts of untrusted outputs, and the one
 * that carried plotly.js may be gone), the div says how to get it back instead of staying blank.
 */
export function figureHtml(fig: Figure, opts: { divId?: string; height?: string; width?: string } = {}): string {
  checkFigure('figureHtml', fig);
  const id = opts.divId ?? newDivId();
  if (!/^[A-Za-z][\w-]*$/.test(id)) throw new RangeError(`figureHtml: divId must be letters, digits, '-' or '_', got ${JSON.stringify(id)}`);
  const height = checkCss('figureHtml', 'height', opts.height ?? '420px');
  const width = checkCss('figureHtml', 'width', opts.width ?? '100%');
  return `<div id="${id}" class="modalab-plot" style="width:${width};height:${height};"></div>
<script type="text/javascript">
(function () {
  var el = document.getElementById(${scriptJson(id)});
  var fig = ${scriptJson(fig)};
  if (!window.Plotly) {
    el.style.height = 'auto';
    el.textContent = 'plotly.js is not loaded in this page: run plots.show(fig, { reloadPlotly: true }) or re-run the notebook.';
    return;
  }
  window.Plotly.react(el, fig.data, fig.layout, { responsive: true, displaylogo: false });
})();
</script>`;
}

/** The <script> element that defines `window.Plotly`. */
export function plotlyScriptTag(): string {
  return `<script type="text/javascript">${plotlySource()}</script>`;
}

// ---------------------------------------------------------------------------------------------------------------
// tslab

const SENT = Symbol.for('modalab.plots.plotlySent');
type Global = typeof globalThis & { [SENT]?: boolean };

/** Whether plotly.js has been sent to the notebook by this kernel process. Kept on globalThis so that two copies
 * of this module in one kernel (a rebuilt dist, a second checkout) still send it once. */
function plotlySent(): boolean {
  return (globalThis as Global)[SENT] === true;
}
function markPlotlySent(v: boolean): void {
  (globalThis as Global)[SENT] = v;
}

/** The subset of tslab's public module used here. */
interface TslabModule {
  display: HtmlDisplay;
  newDisplay(): HtmlDisplay;
}

/**
 * The tslab module of the running kernel, or null when this process is not a tslab kernel executing a cell.
 * tslab's `display` works only through the module instance the kernel loaded (it holds the kernel's socket), so
 * this looks for that instance among the loaded modules first, and only then tries `require('tslab')`.
 */
export function tslabKernel(): TslabModule | null {
  const jupyterFile = Object.keys(require.cache).find((f) => /[\\/]tslab[\\/]dist[\\/]jupyter\.js$/.test(f));
  if (jupyterFile === undefined) return null;
  const jupyter = require.cache[jupyterFile]?.exports as { lastWriteDisplayData?: unknown } | undefined;
  if (!jupyter || typeof jupyter.lastWriteDisplayData !== 'function') return null;
  // The kernel's own public module: same folder, hence the same jupyter.js instance.
  try {
    return require(path.join(path.dirname(jupyterFile), 'public.js')) as TslabModule;
  } catch {
    return require('tslab') as TslabModule;
  }
}

function sendPlotlyIfNeeded(display: HtmlDisplay, force: boolean): void {
  if (plotlySent() && !force) return;
  display.html(plotlyScriptTag());
  markPlotlySent(true);
}

let fileCounter = 0;

/** A standalone HTML page of one figure, plotly.js inlined. */
export function figurePage(fig: Figure, title = 'modalab figure'): string {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
${plotlyScriptTag()}
</head><body>
${figureHtml(fig, { height: '90vh' })}
</body></html>
`;
}

/** Writes `text` to `file` through a temp file in the same folder and a rename, so no reader sees half a file. */
export function writeFileAtomic(file: string, text: string | Uint8Array): void {
  const dir = path.dirname(path.resolve(file));
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  try {
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch { /* already gone */ }
    throw new Error(`cannot write ${file}: ${(e as Error).message}`);
  }
}

/**
 * Shows a figure.
 *
 * - In a tslab notebook: inline, as HTML output. The first call in a kernel process also outputs plotly.js
 *   (about 4.8 MB, from the plotly.js-dist-min package: works offline); later calls reuse it. Returns null.
 * - Anywhere else (plain node, a script): writes a standalone HTML page (plotly.js inlined) to
 *   `<tmpdir>/modalab-plots/figure-<pid>-<n>.html`, prints its path on stderr, and returns the path.
 *
 * @example
 * plots.show(plots.lossCurves([{ name: 'run', steps, values }]));
 */
export function show(fig: Figure, opts: ShowOptions = {}): string | null {
  checkFigure('show', fig);
  const tslab = opts.display ? null : tslabKernel();
  const display = opts.display ?? tslab?.display;
  if (display) {
    sendPlotlyIfNeeded(display, opts.reloadPlotly === true);
    display.html(figureHtml(fig, { height: opts.height, width: opts.width }));
    return null;
  }
  fileCounter += 1;
  const file = path.join(os.tmpdir(), 'modalab-plots', `figure-${process.pid}-${fileCounter}.html`);
  // A plotly title is plotly's pseudo-HTML (tags, and entities for literal characters): plain text for <title>.
  const title = typeof fig.layout.title?.text === 'string'
    ? fig.layout.title.text.replace(/<[^>]*>/g, '').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')
    : 'modalab figure';
  writeFileAtomic(file, figurePage(fig, title));
  process.stderr.write(`plots.show: not in a tslab notebook; wrote ${file} (open it in a browser)\n`);
  return file;
}

// ---------------------------------------------------------------------------------------------------------------
// Live figure

export interface LiveFigureOptions {
  /** Send at most one update per this many milliseconds; the last one is never lost. Default 500. */
  throttleMs?: number;
  height?: string;
  width?: string;
  /** Display factory instead of tslab's `newDisplay` (a custom frontend, or a test). */
  newDisplay?: () => HtmlDisplay;
}

/**
 * A figure shown once and redrawn in place (tslab's `newDisplay`, Jupyter's update_display_data).
 *
 * Updates are throttled: `update` and `append` always change the figure at once, but send it to the notebook at
 * most every `throttleMs`; a pending change is sent by a timer, by `flush()` or by `close()`. A synchronous
 * training loop blocks the kernel's socket: `await live.flush()` (or any `await`) every few steps lets the
 * notebook see the updates while the loop runs.
 */
export class LiveFigure {
  private fig: Figure;
  private readonly display: HtmlDisplay | null;
  private readonly divId = newDivId();
  private readonly throttleMs: number;
  private readonly height?: string;
  private readonly width?: string;
  private lastSent = 0;
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** How many times the figure was sent to the display (for tests and for curious users). */
  sends = 0;

  constructor(fig: Figure = { data: [], layout: {} }, opts: LiveFigureOptions = {}) {
    checkFigure('liveFigure', fig);
    const throttle = opts.throttleMs ?? 500;
    if (typeof throttle !== 'number' || !(throttle >= 0) || !Number.isFinite(throttle)) {
      throw new RangeError(`liveFigure: throttleMs must be a finite number >= 0, got ${String(throttle)}`);
    }
    this.throttleMs = throttle;
    this.height = opts.height;
    this.width = opts.width;
    this.fig = clone(fig);
    let display: HtmlDisplay | null = null;
    if (opts.newDisplay) {
      display = opts.newDisplay();
    } else {
      const tslab = tslabKernel();
      if (tslab) {
        sendPlotlyIfNeeded(tslab.display, false);
        display = tslab.newDisplay();
      }
    }
    this.display = display;
    if (display === null) {
      process.stderr.write('plots.liveFigure: not in a tslab notebook; updates are kept, call plots.show(live.figure) to see them\n');
    }
    this.send();
  }

  /** A copy of the figure as it is now. */
  get figure(): Figure {
    return clone(this.fig);
  }

  /** Replaces the whole figure (e.g. `plots.lossCurves(...)` rebuilt from the run's metrics). */
  update(fig: Figure): void {
    this.checkOpen('update');
    checkFigure('LiveFigure.update', fig);
    this.fig = clone(fig);
    this.changed();
  }

  /**
   * Appends points to the trace whose name (or `meta.run`) is `trace`, creating a line trace of that name if
   * there is none. `x` and `y` are one point or arrays of equal length; non-finite y values become gaps.
   */
  append(trace: string, x: number | readonly number[], y: number | readonly number[]): void {
    this.checkOpen('append');
    if (typeof trace !== 'string' || trace === '') throw new TypeError('LiveFigure.append: trace must be a non-empty name');
    const xs = typeof x === 'number' ? [x] : Array.from(x);
    const ys = typeof y === 'number' ? [y] : Array.from(y);
    if (xs.length !== ys.length) throw new RangeError(`LiveFigure.append: ${xs.length} x values but ${ys.length} y values for trace ${JSON.stringify(trace)}`);
    for (const v of [...xs, ...ys]) {
      if (typeof v !== 'number') throw new TypeError(`LiveFigure.append: trace ${JSON.stringify(trace)}: values must be numbers, got ${typeof v}`);
    }
    // A builder's figure has a faint raw trace and a shown one per run, both with meta.run: extend the shown one.
    const matches = this.fig.data.filter((d) => d.meta?.run === trace || (d.meta === undefined && d.name === trace));
    let t = matches.find((d) => d.meta?.role !== 'raw') ?? matches[0];
    if (t === undefined) {
      t = { type: 'scatter', mode: 'lines', name: plotlyText(trace), x: [], y: [], meta: { run: trace } };
      this.fig.data.push(t);
    }
    t.x = [...(t.x ?? []), ...xs.map(fin)];
    t.y = [...(t.y ?? []), ...ys.map(fin)];
    this.changed();
  }

  /** Sends a pending change now and yields to the event loop once, so the kernel can write it out. */
  async flush(): Promise<void> {
    if (this.dirty && !this.closed) this.send();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Sends the last state and stops the timer; later updates throw. */
  close(): void {
    if (this.closed) return;
    if (this.dirty) this.send();
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private checkOpen(fn: string): void {
    if (this.closed) throw new Error(`LiveFigure.${fn}: the live figure is closed`);
  }

  private changed(): void {
    this.dirty = true;
    const wait = this.lastSent + this.throttleMs - Date.now();
    if (wait <= 0) {
      this.send();
    } else if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        if (this.dirty && !this.closed) this.send();
      }, wait);
      this.timer.unref();
    }
  }

  private send(): void {
    this.dirty = false;
    this.lastSent = Date.now();
    if (this.display === null) return;
    this.display.html(figureHtml(this.fig, { divId: this.divId, height: this.height, width: this.width }));
    this.sends += 1;
  }
}

/** A figure that redraws in place in tslab; see LiveFigure. */
export function liveFigure(fig?: Figure, opts: LiveFigureOptions = {}): LiveFigure {
  return new LiveFigure(fig, opts);
}

function fin(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

function clone(fig: Figure): Figure {
  return JSON.parse(JSON.stringify(fig)) as Figure;
}

/** @internal For tests: forget that plotly.js was sent. */
export function resetPlotlySent(): void {
  markPlotlySent(false);
}
