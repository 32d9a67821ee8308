/**
 * `modalab ui` end to end, in headless Chromium (Debian's chromium driven by playwright-core): the runs table,
 * filtering, live status, a run page with its curves (smoothing, log scale, live points), the compare page with
 * parallel coordinates, and escaping of a run named `<script>alert(1)</script>`.
 *
 * Without Chromium the test is skipped with the reason; under CI=true a missing Chromium fails it.
 * MODALAB_UPDATE_SCREENSHOTS=1 writes the screenshots of each page to docs/img/ (otherwise to a temp folder).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { findChromium } from '../src/experiments/report/png';
import { startDashboard, type Dashboard } from '../src/experiments/dashboard';
import { buildFixture, XSS_NAME, XSS_METRIC, type Fixture } from '../src/experiments/dashboard/testing';

// The functions passed to page.waitForFunction / $eval run in the page; tsconfig has no DOM lib, so the two
// globals they use are declared here.
declare const document: { getElementById(id: string): unknown; querySelector(s: string): { textContent: string | null } | null };
declare const CSS: { escape(s: string): string };

let exe: string | null = null;
let missing = '';
try {
  exe = findChromium();
} catch (e) {
  missing = (e as Error).message;
}
// Without Chromium: skipped with the reason on a developer machine, a failure under CI (which installs it).
const skip = exe === null && process.env.CI !== 'true' ? `skipped: ${missing}` : false;
const updateShots = process.env.MODALAB_UPDATE_SCREENSHOTS === '1';

/** Lengths of the y arrays of the traces plotly drew into a plot div. */
async function traceLengths(page: Page, selector: string): Promise<number[]> {
  return page.$eval(selector, (el) => ((el as unknown as { data?: Array<{ y?: unknown[] }> }).data ?? []).map((t) => (t.y ?? []).length));
}

async function shot(page: Page, shotsDir: string, name: string): Promise<void> {
  const file = path.join(shotsDir, `dashboard-${name}.png`);
  await page.screenshot({ path: file });
  assert.ok(fs.statSync(file).size > 1000, `screenshot ${file} is empty`);
}

test('dashboard in headless Chromium: runs table, filter, run page, live curve, compare, escaping', {
  skip,
  timeout: 60000,
}, async () => {
  if (exe === null) throw new Error(`CI=true and the dashboard e2e test has no Chromium: ${missing}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-ui-e2e-'));
  // MODALAB_UPDATE_SCREENSHOTS=1 (from the repository root, as npm test runs) rewrites docs/img/dashboard-*.png.
  const shotsDir = updateShots ? path.resolve('docs', 'img') : path.join(dir, 'shots');
  fs.mkdirSync(shotsDir, { recursive: true });
  let f: Fixture | null = null;
  let ui: Dashboard | null = null;
  let browser: Browser | null = null;
  const problems: string[] = [];
  try {
    f = buildFixture(dir);
    ui = await startDashboard({ db: f.file, port: 0, log: (m) => problems.push(m) });
    browser = await chromium.launch({ executablePath: exe!, args: ['--no-sandbox'], headless: true });
    const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
    page.on('dialog', (d) => { problems.push(`a dialog opened (escaping failed?): ${d.message()}`); void d.dismiss(); });
    const base = ui.url.replace(/\/$/, '');

    // Runs table: every run, the HTML-named one as text.
    await page.goto(`${base}/`);
    assert.equal(await page.locator('#runs tbody tr').count(), 8);
    assert.equal(await page.locator(`tr[data-run="${f.ids.xss}"] td a`).textContent(), XSS_NAME);
    assert.equal(await page.locator(`tr[data-run="${f.ids.stale}"] td.status`).textContent(), 'running (no heartbeat)');
    await shot(page, shotsDir, 'runs');

    // Filter: stage caption through the form.
    await page.selectOption('select[name="stage"]', 'caption');
    await Promise.all([page.waitForURL(/stage=caption/), page.click('#apply')]);
    const rows = await page.locator('#runs tbody tr').evaluateAll((trs) => trs.map((t) => t.getAttribute('data-run')));
    assert.deepEqual(rows, [String(f.ids.caption)]);

    // Sort by a metric: click its column header; the run with the lowest latest val/loss comes first.
    await page.goto(`${base}/?stage=align`);
    await Promise.all([page.waitForURL(/sort=metric%3Aval%2Floss/), page.click('a[data-sort="metric:val/loss"]')]);
    const best = f.ids.sweep.slice().sort((a, b) => f!.tracker.latest(a, 'val/loss')!.value - f!.tracker.latest(b, 'val/loss')!.value)[0];
    assert.equal(await page.locator('#runs tbody tr').first().getAttribute('data-run'), String(best));

    // A running run's page: its curve, then points logged meanwhile arrive without a reload.
    await page.goto(`${base}/runs/${f.ids.running}`);
    await page.waitForFunction(() => ((document.getElementById('plot-0') as unknown as { data?: unknown[] })?.data ?? []).length > 0);
    assert.ok((await traceLengths(page, '#plot-0')).includes(10));
    for (let s = 10; s < 15; s++) f.running.log({ loss: 1 - s * 0.01 }, s);
    f.running.flush();
    await page.waitForFunction(() => ((document.getElementById('plot-0') as unknown as { data?: Array<{ y: unknown[] }> }).data ?? [])
      .some((t) => t.y.length === 15), undefined, { timeout: 10000 });

    // Live status in the runs table: the run finishes while the table is open.
    await page.goto(`${base}/?experiment=clip-sweep`);
    assert.equal(await page.locator(`tr[data-run="${f.ids.running}"] td.status`).textContent(), 'running');
    f.running.finish();
    await page.waitForFunction((id) => document.querySelector(`tr[data-run="${id}"] td.status`)?.textContent === 'finished',
      f.ids.running, { timeout: 10000 });

    // A finished run: config, parent/child links, curves (loss first, every point), smoothing and log scale.
    await page.click(`tr[data-run="${f.ids.sweep[0]}"] td a`);
    await page.waitForURL(new RegExp(`/runs/${f.ids.sweep[0]}$`));
    await page.waitForFunction(() => ((document.getElementById('plot-0') as unknown as { data?: unknown[] })?.data ?? []).length > 0);
    assert.equal(await page.getAttribute('#plot-0', 'data-key'), 'loss');
    assert.deepEqual(await traceLengths(page, '#plot-0'), [f.steps, f.steps]); // raw and smoothed
    assert.equal(await page.locator('#children a').textContent(), `#${f.ids.caption} caption-${f.ids.caption}`);
    assert.match((await page.locator('#config').textContent()) ?? '', /optim\.lr/);
    const latest = await page.locator('#latest tbody tr').evaluateAll((trs) => trs.map((t) => t.getAttribute('data-key')));
    assert.deepEqual(latest, ['loss', 'val/loss', 'i2t/r@1', 'lr']);
    await shot(page, shotsDir, 'run');
    await page.fill('#smoothing', '0');
    assert.deepEqual(await traceLengths(page, '#plot-0'), [f.steps]); // smoothing 0: the raw series only
    await page.check('#logy');
    assert.equal(await page.$eval('#plot-0', (el) => (el as unknown as { layout: { yaxis: { type: string } } }).layout.yaxis.type), 'log');
    await page.selectOption('#xaxis', 'relative');
    assert.match(await page.$eval('#plot-0', (el) => (el as unknown as { layout: { xaxis: { title: { text: string } } } }).layout.xaxis.title.text), /time since start/);

    // Compare the sweep's runs, picked with the checkboxes.
    await page.goto(`${base}/?stage=align`);
    for (const id of f.ids.sweep) await page.check(`tr[data-run="${id}"] input.pick`);
    await Promise.all([page.waitForURL(new RegExp(`/compare\\?runs=${f.ids.sweep.join(',')}$`)), page.click('#compare')]);
    await page.waitForFunction(() => ((document.getElementById('parcoords') as unknown as { data?: unknown[] })?.data ?? []).length > 0);
    const shown = await page.$eval('#plot-0', (el) => (el as unknown as { data: Array<{ showlegend: boolean; y: unknown[] }> }).data
      .filter((t) => t.showlegend).map((t) => t.y.length));
    assert.deepEqual(shown, [f.steps, f.steps, f.steps]);
    const dims = await page.$eval('#parcoords', (el) => (el as unknown as { data: Array<{ type: string; dimensions: Array<{ label: string }> }> }).data[0]);
    assert.equal(dims.type, 'parcoords');
    assert.ok(dims.dimensions.some((d) => /optim\.lr/.test(d.label)), 'the lr axis is in the parallel coordinates');
    await shot(page, shotsDir, 'compare');

    // The HTML-named run's page: name and metric key as text, nothing executed.
    await page.goto(`${base}/runs/${f.ids.xss}`);
    assert.equal(await page.locator('#run-name').textContent(), XSS_NAME);
    await page.waitForFunction((k) => document.querySelector(`.plot[data-key="${CSS.escape(k)}"]`) !== null, XSS_METRIC);
    assert.deepEqual(problems, []);
  } finally {
    await browser?.close();
    await ui?.close();
    f?.tracker.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
