/** Standalone HTML reports of runs (and PNGs of their figures). See docs/plots.md, "Reports". */
import * as fs from 'fs';
import * as path from 'path';
import { Tracker } from '../tracking';
import { writeFileAtomic } from '../plots/show';
import { collectReport, reportHtml, type ReportOptions } from './html';
import { figuresToPng, findChromium, type PngOptions } from './png';

export { collectReport, reportHtml, isLossKey, isRetrievalKey, duration } from './html';
export type { ReportData, ReportFigure, ReportOptions, ReportScalars } from './html';
export { readSamples, samplesHtml, pngBase64, exactMatch, DEFAULT_MAX_SAMPLES } from './samples';
export type { RunSamples, CaptionSampleView, InstructSampleView } from './samples';
export { figuresToPng, findChromium, CHROMIUM_CANDIDATES } from './png';
export type { PngOptions } from './png';

export interface WriteReportOptions extends ReportOptions {
  /** Also render every figure to PNG with headless Chromium, into `<out without .html>-png/`. */
  png?: boolean | PngOptions;
}

export interface ReportResult {
  /** The HTML file written. */
  path: string;
  /** PNG files written (empty without `png`). */
  pngs: string[];
  /** Number of figures in the report. */
  figures: number;
}

/**
 * Writes one offline HTML page (plotly.js inlined) for the given runs: summary, each run's status, parent,
 * samples (its 'samples' artifact: captions or answers beside their images, at most `maxSamples`) and config, and
 * the curves: runs of one stage overlaid, runs of several stages in one group of figures per stage. `source` is an open Tracker or a database path (which must exist).
 * Files are written through a temp file and a rename. With `png`, Chromium is checked before anything is
 * written, so a missing browser leaves no files behind.
 *
 * @example
 * await writeReport('runs/modalab.db', [3, 4], 'report.html', { png: true });
 */
export async function writeReport(source: Tracker | string, runIds: readonly number[], outPath: string,
  opts: WriteReportOptions = {}): Promise<ReportResult> {
  if (typeof outPath !== 'string' || outPath === '') throw new Error('report: the output path must be a non-empty string');
  const pngOpts: PngOptions | null = opts.png === true ? {} : opts.png ? opts.png : null;
  if (pngOpts) findChromium(pngOpts.chromiumPath);
  let tracker: Tracker;
  let owned = false;
  if (typeof source === 'string') {
    if (!fs.existsSync(source)) throw new Error(`report: no tracking database at ${source}`);
    tracker = Tracker.open(source);
    owned = true;
  } else {
    tracker = source;
  }
  try {
    const data = collectReport(tracker, runIds, opts);
    const out = path.resolve(outPath);
    let pngs: string[] = [];
    if (pngOpts && data.figures.length > 0) {
      const images = await figuresToPng(data.figures.map((f) => f.figure), pngOpts);
      const dir = out.replace(/\.html?$/i, '') + '-png';
      pngs = data.figures.map((f, i) => {
        const file = path.join(dir, `${f.id}.png`);
        writeFileAtomic(file, images[i]);
        return file;
      });
    }
    const rel = pngs.map((p) => path.relative(path.dirname(out), p).split(path.sep).join('/'));
    writeFileAtomic(out, reportHtml(data, pngOpts ? rel : undefined));
    return { path: out, pngs, figures: data.figures.length };
  } finally {
    if (owned) tracker.close();
  }
}
