// Figures to PNG through headless Chromium (playwright-core drives it; plotly.js draws and exports each figure).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { plotlyPath } from '../plots/show';
import type { Figure } from '../plots/types';

/** Where Chromium is looked for when no path is given (MODALAB_CHROMIUM first). */
export const CHROMIUM_CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome', '/usr/bin/google-chrome-stable'];

/** The Chromium executable to use, or an Error that says where it looked and how to get one. */
export function findChromium(explicit?: string): string {
  const fromEnv = process.env.MODALAB_CHROMIUM;
  const tried: string[] = [];
  for (const p of [explicit, fromEnv, ...CHROMIUM_CANDIDATES]) {
    if (!p) continue;
    tried.push(p);
    if (fs.existsSync(p)) return p;
    if (p === explicit || p === fromEnv) break; // an explicit choice that does not exist is an error, not a fallback
  }
  throw new Error(`PNG export needs headless Chromium, not found (looked at ${tried.join(', ')}). `
    + 'Install it (Debian/Ubuntu: apt-get install chromium) or set MODALAB_CHROMIUM to its path; the HTML report works without it.');
}

interface PlaywrightChromium {
  launch(opts: { executablePath: string; headless: boolean; args?: string[] }): Promise<{
    newPage(opts?: { viewport?: { width: number; height: number } }): Promise<{
      goto(url: string): Promise<unknown>;
      evaluate<R, A>(fn: (arg: A) => R | Promise<R>, arg: A): Promise<R>;
    }>;
    close(): Promise<void>;
  }>;
}

function loadPlaywright(): PlaywrightChromium {
  try {
    return (require('playwright-core') as { chromium: PlaywrightChromium }).chromium;
  } catch {
    throw new Error('PNG export needs the playwright-core package (npm install playwright-core); the HTML report works without it.');
  }
}

export interface PngOptions {
  width?: number;
  height?: number;
  /** Chromium executable; default: findChromium(). */
  chromiumPath?: string;
}

/** Renders each figure to PNG bytes, in order, in one headless Chromium page. */
export async function figuresToPng(figures: readonly Figure[], opts: PngOptions = {}): Promise<Buffer[]> {
  const width = opts.width ?? 1000;
  const height = opts.height ?? 500;
  if (!Number.isInteger(width) || width < 50 || !Number.isInteger(height) || height < 50) {
    throw new RangeError(`PNG export: width and height must be integers >= 50, got ${width} x ${height}`);
  }
  const executablePath = findChromium(opts.chromiumPath);
  const chromium = loadPlaywright();
  let browser: Awaited<ReturnType<PlaywrightChromium['launch']>>;
  try {
    browser = await chromium.launch({ executablePath, headless: true });
  } catch (e) {
    throw new Error(`PNG export: cannot start Chromium at ${executablePath}: ${(e as Error).message.split('\n')[0]}`);
  }
  try {
    const page = await browser.newPage({ viewport: { width, height } });
    // A page file that loads plotly.js from the package by file URL: Chromium parses a 4.8 MB script about twice
    // as fast from a file as from setContent, and nothing comes from the network.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-png-'));
    try {
      const pageFile = path.join(dir, 'page.html');
      fs.writeFileSync(pageFile, `<!DOCTYPE html><html><head><meta charset="utf-8"><script src="${pathToFileURL(plotlyPath()).href}"></script></head>`
        + `<body style="margin:0"><div id="p" style="width:${width}px;height:${height}px"></div></body></html>`);
      await page.goto(pathToFileURL(pageFile).href);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const out: Buffer[] = [];
    for (const fig of figures) {
      const url = await page.evaluate(async (a: { fig: Figure; width: number; height: number }) => {
        // Runs in the page: window.Plotly is the plotly.js above.
        const P = (globalThis as unknown as { Plotly: { newPlot: Function; toImage: Function; purge: Function } }).Plotly;
        await P.newPlot('p', a.fig.data, a.fig.layout, { staticPlot: true });
        const img = (await P.toImage('p', { format: 'png', width: a.width, height: a.height })) as string;
        P.purge('p');
        return img;
      }, { fig, width, height });
      const m = /^data:image\/png;base64,(.*)$/.exec(url);
      if (!m) throw new Error('PNG export: plotly returned no PNG data');
      out.push(Buffer.from(m[1], 'base64'));
    }
    return out;
  } finally {
    await browser.close();
  }
}
