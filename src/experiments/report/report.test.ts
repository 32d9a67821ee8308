import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tracker } from '../tracking';
import type { Figure } from '../plots/types';
import { findChromium, writeReport } from './index';

const EVIL = '<script>alert("x")</script> & co';

/** Two runs (the second a child of the first), with loss, retrieval, lr and a metric that went NaN. */
function makeDb(dir: string): { file: string; a: number; b: number } {
  const file = path.join(dir, 'm.db');
  const t = Tracker.open(file);
  const a = t.startRun({ experiment: 'exp <1>', name: EVIL, stage: 'align', config: { lr: 3e-4, model: { width: 64, note: '</td><b>' } }, seed: 7 });
  for (let s = 0; s < 20; s++) a.log({ loss: 2 - s * 0.05, lr: 1e-3, grad_norm: s === 10 ? NaN : 1 + s }, s);
  a.log({ 'i2t/r@1': 0.1, 't2i/r@1': 0.12 }, 10);
  a.log({ 'i2t/r@1': 0.3, 't2i/r@1': 0.28 }, 19);
  a.finish();
  // The child is of the same stage (a continuation of a): runs of different stages are grouped apart, not
  // overlaid (report.stages.test.ts).
  const b = t.startRun({ experiment: 'exp <1>', name: 'child', stage: 'align', parentRunId: a.id, config: {} });
  for (let s = 0; s < 5; s++) b.log({ loss: 1 - s * 0.1 }, s);
  b.finish('failed');
  const ids = { file, a: a.id, b: b.id };
  t.close();
  return ids;
}

/** Every `var fig = {...};` figure embedded in a report. */
function figures(html: string): Figure[] {
  return [...html.matchAll(/var fig = (.*);\n/g)].map((m) => JSON.parse(m[1]) as Figure);
}

test('report of one run: names escaped, config table, loss/retrieval/other curves, NaN a gap', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-report-'));
  const { file, a } = makeDb(dir);
  const out = path.join(dir, 'r.html');
  const res = await writeReport(file, [a], out);
  assert.equal(res.path, out);
  assert.deepEqual(res.pngs, []);
  const html = fs.readFileSync(out, 'utf8');
  assert.ok(!html.includes('<script>alert'), 'a run name must not become markup');
  assert.ok(html.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co'));
  assert.ok(html.includes('exp &lt;1&gt;'));
  assert.ok(html.includes('<td>model.note</td><td class="v">&quot;&lt;/td&gt;&lt;b&gt;&quot;</td>'));
  assert.ok(html.includes('<td>lr</td><td class="v">0.0003</td>'));
  assert.ok(html.includes('window.Plotly=Plotly') || html.includes('window.Plotly = Plotly'), 'plotly.js inlined');
  assert.ok(!/src="http/.test(html), 'nothing loaded from the network');
  const figs = figures(html);
  assert.equal(figs.length, res.figures);
  // loss first (smoothed + raw), then one retrieval figure for a single run, then grad_norm and lr.
  assert.deepEqual(figs.map((f) => f.layout.title?.text), ['loss', `retrieval: #${a} ${EVIL.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')}`, 'grad_norm', 'lr']);
  const raw = figs[0].data.find((d) => d.meta?.role === 'raw')!;
  assert.equal(raw.meta?.run, `#${a} ${EVIL}`);
  assert.deepEqual(raw.y!.slice(0, 3), [2, 1.95, 1.9]);
  assert.equal(figs[1].data.length, 2);
  const grad = figs[2].data[0];
  assert.equal(grad.y![10], null);
  assert.equal(grad.y![11], 12);
});

test('report of two runs: curves overlaid, parent linked, status shown', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-report-'));
  const { file, a, b } = makeDb(dir);
  const t = Tracker.open(file);
  const out = path.join(dir, 'sub', 'two.html');
  try {
    await writeReport(t, [a, b], out, { title: 'A & B' });
  } finally {
    t.close();
  }
  const html = fs.readFileSync(out, 'utf8');
  assert.ok(html.includes('<title>A &amp; B</title>'));
  assert.ok(html.includes(`<a href="#run-${a}">#${a}</a>`), 'parent links to the run in the same report');
  assert.ok(html.includes('<span class="status-failed">failed</span>'));
  const loss = figures(html).find((f) => f.layout.title?.text === 'loss')!;
  assert.deepEqual(new Set(loss.data.map((d) => d.meta?.run)), new Set([`#${a} ${EVIL}`, `#${b} child`]));
  // Per-key retrieval overlays for several runs, with the run that never logged them in a footnote.
  const r1 = figures(html).find((f) => f.layout.title?.text === 'i2t/r@1')!;
  assert.match(String(r1.layout.annotations?.[0]?.text), /not logged by: #\d+ child/);
  assert.deepEqual(fs.readdirSync(path.dirname(out)), ['two.html'], 'no temp file left behind');
});

test('report: bad input gives a clear error and writes nothing', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-report-'));
  const { file, a } = makeDb(dir);
  const out = path.join(dir, 'bad.html');
  await assert.rejects(writeReport(file, [a, 999], out), /no run 999/);
  await assert.rejects(writeReport(file, [], out), /at least one run/);
  await assert.rejects(writeReport(path.join(dir, 'nope.db'), [1], out), /no tracking database at .*nope\.db/);
  await assert.rejects(writeReport(file, [a], out, { png: { chromiumPath: path.join(dir, 'no-chromium') } }), /needs headless Chromium, not found/);
  assert.equal(fs.existsSync(out), false);
  assert.equal(fs.existsSync(path.join(dir, 'nope.db')), false);
});

let chromium: string | null = null;
try {
  chromium = findChromium();
} catch { /* no Chromium here */ }

test('report --png renders every figure through headless Chromium', { skip: chromium === null ? 'Chromium not installed' : false }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-report-'));
  const { file, b } = makeDb(dir);
  const out = path.join(dir, 'p.html');
  const res = await writeReport(file, [b], out, { png: { width: 400, height: 300 } });
  assert.equal(res.pngs.length, res.figures);
  assert.ok(res.figures >= 1);
  for (const p of res.pngs) {
    const buf = fs.readFileSync(p);
    assert.deepEqual([...buf.subarray(1, 4)].map((c) => String.fromCharCode(c)).join(''), 'PNG');
    assert.equal(buf.readUInt32BE(16), 400); // IHDR width
    assert.equal(buf.readUInt32BE(20), 300);
    assert.ok(buf.length > 3000, 'a drawn plot, not an empty image');
  }
  assert.ok(fs.readFileSync(out, 'utf8').includes('p-png/01-loss.png'));
});
