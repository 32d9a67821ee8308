/** parallelCoordinates and metricVsParam: dimensions, categorical ticks, log axes, missing and NaN values. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { metricVsParam, parallelCoordinates, spansDecades } from './sweep';
import type { Row } from './sweep';
import type { Figure } from './types';

function assertJson(fig: Figure): void {
  assert.deepEqual(JSON.parse(JSON.stringify(fig)), fig);
}

const rows: Row[] = [
  { name: 'r0', lr: 1e-4, opt: 'adamw', layers: 2, loss: 1.9 },
  { name: 'r1', lr: 1e-3, opt: 'sgd', layers: 4, loss: 2.4 },
  { name: 'r2', lr: 1e-2, opt: 'adamw', layers: 2, loss: 3.1 },
];

test('spansDecades: positive values with max/min >= 10', () => {
  assert.equal(spansDecades([1e-4, 1e-3]), true);
  assert.equal(spansDecades([32, 256]), false);
  assert.equal(spansDecades([0, 0.01, 0.1]), false);
  assert.equal(spansDecades([1]), false);
  assert.equal(spansDecades([-1, 100]), false);
});

test('parallelCoordinates: one dimension per param plus the metric, coloured by the metric', () => {
  const fig = parallelCoordinates(rows, ['lr', 'opt', 'layers'], 'loss');
  assertJson(fig);
  assert.equal(fig.data.length, 1);
  const t = fig.data[0];
  assert.equal(t.type, 'parcoords');
  const dims = t.dimensions!;
  assert.deepEqual(dims.map((d) => d.label), ['lr (log)', 'opt', 'layers', 'loss']);
  // lr spans decades: log10 values, ticks labelled with the values themselves.
  dims[0].values.forEach((v, i) => assert.ok(Math.abs(v - [-4, -3, -2][i]) < 1e-12));
  assert.deepEqual(dims[0].ticktext, ['1e-4', '0.001', '0.01']);
  // opt is categorical: indices into sorted categories, one tick each.
  assert.deepEqual(dims[1].values, [0, 1, 0]);
  assert.deepEqual(dims[1].tickvals, [0, 1]);
  assert.deepEqual(dims[1].ticktext, ['adamw', 'sgd']);
  assert.deepEqual(dims[2].values, [2, 4, 2]);
  assert.equal(dims[2].tickvals, undefined);
  assert.deepEqual(dims[3].values, [1.9, 2.4, 3.1]);
  const line = t.line as { color: number[]; showscale: boolean };
  assert.deepEqual(line.color, [1.9, 2.4, 3.1]);
  assert.equal(line.showscale, true);
  assert.equal(fig.layout.annotations, undefined);
});

test('parallelCoordinates: NaN metrics and missing numeric params are left out and counted; missing categories are "(none)"', () => {
  const r: Row[] = [...rows, { lr: 1e-3, opt: 'sgd', layers: 2, loss: NaN }, { lr: 3e-4, layers: 6, loss: 2 }, { opt: 'sgd', layers: 1, loss: 2 }];
  const fig = parallelCoordinates(r, ['lr', 'opt', 'layers'], 'loss');
  assertJson(fig);
  const dims = fig.data[0].dimensions!;
  assert.equal(dims[3].values.length, 4);
  assert.deepEqual(dims[1].ticktext, ['adamw', 'sgd', '(none)']);
  assert.deepEqual(dims[1].values, [0, 1, 0, 2]);
  assert.match(fig.layout.annotations![0].text, /2 of 6 runs left out/);
  const none = parallelCoordinates([{ lr: 1, loss: NaN }], ['lr'], 'loss');
  assert.equal(none.data.length, 0);
  assert.match(none.layout.annotations![0].text, /no run has a finite loss/);
  assert.equal(parallelCoordinates([], ['lr'], 'loss').data.length, 0);
});

test('parallelCoordinates: mixed numbers and strings are categories, in natural order; labels escaped', () => {
  const r: Row[] = [{ '<p>': 10, k: 'x', m: 1 }, { '<p>': 'auto', k: '<img src=x>', m: 2 }, { '<p>': 2, k: 'x', m: 3 }];
  const fig = parallelCoordinates(r, ['<p>', 'k'], 'm');
  const dims = fig.data[0].dimensions!;
  assert.equal(dims[0].label, '&lt;p&gt;');
  assert.deepEqual(dims[0].ticktext, ['2', '10', 'auto']);
  assert.deepEqual(dims[0].values, [1, 2, 0]);
  assert.deepEqual(dims[1].ticktext, ['&lt;img src=x&gt;', 'x']);
  assert.ok(!JSON.stringify(fig).includes('<'));
});

test('parallelCoordinates: many distinct values spanning decades get power-of-ten ticks', () => {
  const r: Row[] = Array.from({ length: 12 }, (_, i) => ({ lr: 1e-5 * Math.pow(10, i / 3), loss: i }));
  const d = parallelCoordinates(r, ['lr'], 'loss').data[0].dimensions![0];
  assert.deepEqual(d.ticktext, ['1e-5', '1e-4', '0.001', '0.01']);
});

test('parallelCoordinates / metricVsParam: bad input throws, naming the function', () => {
  assert.throws(() => parallelCoordinates('x' as never, ['lr'], 'loss'), /parallelCoordinates: rows must be an array/);
  assert.throws(() => parallelCoordinates([null as never], ['lr'], 'loss'), /parallelCoordinates: rows\[0\] must be an object/);
  assert.throws(() => parallelCoordinates(rows, 'lr' as never, 'loss'), /parallelCoordinates: params must be an array/);
  assert.throws(() => parallelCoordinates(rows, ['lr'], ''), /parallelCoordinates: param and metric names/);
  assert.throws(() => parallelCoordinates([{ lr: 1, loss: 'low' }], ['lr'], 'loss'), /parallelCoordinates: rows\[0\]\.loss is string/);
  assert.throws(() => metricVsParam(rows, 'lr', 'opt'), /metricVsParam: rows\[0\]\.opt is string/);
});

test('metricVsParam: scatter, log x when the param spans decades, hover labels from the name', () => {
  const fig = metricVsParam(rows, 'lr', 'loss');
  assertJson(fig);
  const t = fig.data[0];
  assert.equal(t.type, 'scatter');
  assert.equal(t.mode, 'markers');
  assert.deepEqual(t.x, [1e-4, 1e-3, 1e-2]);
  assert.deepEqual(t.y, [1.9, 2.4, 3.1]);
  assert.deepEqual(t.text, ['r0', 'r1', 'r2']);
  assert.equal(fig.layout.xaxis!.type, 'log');
  assert.equal(fig.layout.xaxis!.title!.text, 'lr');
  assert.equal(fig.layout.yaxis!.title!.text, 'loss');
  assert.equal(fig.layout.title!.text, 'loss vs lr');
  assert.equal(metricVsParam(rows, 'layers', 'loss').layout.xaxis!.type, undefined);
  assert.equal(metricVsParam(rows, 'lr', 'loss', { logX: false }).layout.xaxis!.type, undefined);
  assert.equal(metricVsParam(rows, 'layers', 'loss', { logX: true, logY: true }).layout.xaxis!.type, 'log');
  assert.equal(metricVsParam(rows, 'layers', 'loss', { logY: true }).layout.yaxis!.type, 'log');
});

test('metricVsParam: categorical param, NaN metric left out, empty and single point', () => {
  const r: Row[] = [...rows, { name: '<x>', lr: 1e-3, opt: 'a<b', loss: 1 }, { name: 'nan', lr: 1e-3, opt: 'sgd', loss: Infinity }];
  const fig = metricVsParam(r, 'opt', 'loss');
  assertJson(fig);
  const t = fig.data[0];
  assert.equal(fig.layout.xaxis!.type, 'category');
  assert.deepEqual(fig.layout.xaxis!.categoryarray, ['a&lt;b', 'adamw', 'sgd']);
  assert.deepEqual(t.x, ['adamw', 'sgd', 'adamw', 'a&lt;b']);
  assert.deepEqual(t.y, [1.9, 2.4, 3.1, 1]);
  assert.deepEqual(t.text, ['r0', 'r1', 'r2', '&lt;x&gt;']);
  assert.match(fig.layout.annotations![0].text, /1 of 5 runs left out/);
  const empty = metricVsParam([], 'lr', 'loss');
  assert.equal(empty.data.length, 0);
  assert.match(empty.layout.annotations![0].text, /no run has both lr and a finite loss/);
  const one = metricVsParam([{ lr: 0.1, loss: 2 }], 'lr', 'loss');
  assert.deepEqual(one.data[0].x, [0.1]);
  assert.equal(one.layout.xaxis!.type, undefined);
  assert.equal(one.data[0].text, undefined);
});
