import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import { figureHtml, liveFigure, resetPlotlySent, scriptJson, show, tslabKernel, type HtmlDisplay } from './show';
import { lossCurves } from './curves';
import type { Figure } from './types';

function recorder(): HtmlDisplay & { out: string[] } {
  const out: string[] = [];
  return { out, html: (s: string) => { out.push(s); } };
}

/** The JSON literal assigned to `var fig` in figureHtml's script, parsed back. */
function embeddedFigure(html: string): Figure {
  const m = /var fig = (.*);\n/.exec(html);
  assert.ok(m, 'figure JSON not found in the HTML');
  return JSON.parse(m[1]) as Figure;
}

const fig = (name: string) => lossCurves([{ name, steps: [0, 1, 2, 3], values: [2, 1.5, NaN, 1] }], { title: 'loss' });

test('figure HTML: a run named </script> cannot end the script element and reads back exactly', () => {
  const name = '</script><script>alert(1)</script> & \u2028';
  const html = figureHtml(fig(name));
  // Exactly one closing tag: the one figureHtml writes itself.
  assert.equal(html.match(/<\/script/gi)?.length, 1);
  const back = embeddedFigure(html);
  assert.equal(back.data[1].meta?.run, name);
  assert.deepEqual(back.data[0].y, [2, 1.5, null, 1]);
  assert.equal(JSON.parse(scriptJson('<&>')), '<&>');
});

test('figure HTML: bad input names the function', () => {
  assert.throws(() => figureHtml({ data: 'x' } as unknown as Figure), /figureHtml: expected a plotly figure/);
  assert.throws(() => figureHtml(fig('a'), { height: '1px;background:red' }), /height must be a CSS length/);
  assert.throws(() => figureHtml(fig('a'), { divId: 'a"b' }), /divId/);
});

test('show with a display: plotly.js goes out once per process, then only figures; reloadPlotly sends it again', () => {
  resetPlotlySent();
  const d = recorder();
  assert.equal(show(fig('a'), { display: d }), null);
  assert.equal(d.out.length, 2);
  assert.match(d.out[0], /^<script type="text\/javascript">/);
  assert.ok(d.out[0].length > 1_000_000, 'plotly.js is inlined');
  assert.ok(d.out[0].includes('window.Plotly'));
  show(fig('b'), { display: d });
  show(fig('c'), { display: recorder() }); // another display in the same process: the page already has plotly
  assert.equal(d.out.length, 3);
  assert.equal(embeddedFigure(d.out[2]).data[1].meta?.run, 'b');
  show(fig('d'), { display: d, reloadPlotly: true });
  assert.equal(d.out.length, 5);
  assert.ok(d.out[3].length > 1_000_000);
});

test('show outside tslab writes a standalone page and returns its path', () => {
  assert.equal(tslabKernel(), null);
  const errWrite = process.stderr.write;
  let said = '';
  process.stderr.write = ((s: string) => { said += s; return true; }) as typeof process.stderr.write;
  let file: string | null;
  try {
    file = show(fig('<b>x</b>'));
  } finally {
    process.stderr.write = errWrite;
  }
  assert.ok(file !== null && fs.existsSync(file));
  assert.ok(said.includes(file));
  const page = fs.readFileSync(file, 'utf8');
  assert.match(page, /^<!DOCTYPE html>/);
  assert.ok(page.includes('<title>loss</title>'));
  assert.equal(embeddedFigure(page).data[1].meta?.run, '<b>x</b>');
  fs.unlinkSync(file);
  // A title with markup characters: plain text in <title>, escaped once.
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    file = show(lossCurves([], { title: 'a<b & c' }));
  } finally {
    process.stderr.write = errWrite;
  }
  assert.ok(file !== null && fs.readFileSync(file, 'utf8').includes('<title>a&lt;b &amp; c</title>'));
  fs.unlinkSync(file);
});

test('live figure: append creates and extends traces, updates are throttled, flush and close send the last state', async () => {
  const d = recorder();
  const live = liveFigure(undefined, { newDisplay: () => d, throttleMs: 60_000 });
  assert.equal(d.out.length, 1, 'shown once at creation');
  live.append('train <loss>', 0, 2.5);
  live.append('train <loss>', [1, 2], [2.0, Infinity]);
  live.append('val', 2, 2.2);
  assert.equal(d.out.length, 1, 'within the throttle window nothing more is sent');
  await live.flush();
  assert.equal(d.out.length, 2);
  const f = embeddedFigure(d.out[1]);
  assert.equal(f.data.length, 2);
  assert.deepEqual(f.data[0].x, [0, 1, 2]);
  assert.deepEqual(f.data[0].y, [2.5, 2.0, null]);
  assert.equal(f.data[0].name, 'train &lt;loss&gt;');
  assert.deepEqual(live.figure.data[1].y, [2.2]);
  await live.flush();
  assert.equal(d.out.length, 2, 'flush with nothing pending sends nothing');
  live.update(fig('replaced'));
  live.close();
  assert.equal(d.out.length, 3);
  assert.equal(embeddedFigure(d.out[2]).data[1].meta?.run, 'replaced');
  // Same div every time: the notebook redraws one plot in place.
  const ids = d.out.map((h) => /id="([^"]+)"/.exec(h)![1]);
  assert.equal(new Set(ids).size, 1);
  assert.throws(() => live.append('x', 0, 1), /closed/);
});

test('live figure: with no throttle every change is sent; bad appends name the trace', () => {
  const d = recorder();
  const live = liveFigure(fig('a'), { newDisplay: () => d, throttleMs: 0 });
  live.append('a', 4, 0.9); // extends the existing smoothed trace found by meta.run
  assert.equal(d.out.length, 2);
  assert.deepEqual(embeddedFigure(d.out[1]).data.map((t) => t.y!.length), [4, 5]);
  assert.throws(() => live.append('a', [1, 2], [1]), /2 x values but 1 y values for trace "a"/);
  assert.throws(() => liveFigure(undefined, { newDisplay: () => d, throttleMs: -1 }), /throttleMs/);
  live.close();
});
