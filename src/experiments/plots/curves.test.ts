/** lossCurves, compareRuns, retrievalCurves: trace shapes, legend groups, x modes, log axes, edge cases. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { compareRuns, lossCurves, retrievalCurves } from './curves';
import type { RunMetrics } from './curves';
import { smooth } from './smooth';
import type { Figure, Series } from './types';
import { PALETTE } from './util';

const a: Series = { name: 'run-a', steps: [0, 1, 2, 3], values: [4, 3, 2.5, 2], wallTimes: [1000, 1060, 1120, 1180] };
const b: Series = { name: 'run-b', steps: [0, 2, 4], values: [5, 4, 3], wallTimes: [2000, 2010, 2020] };

/** A figure must survive JSON unchanged: no NaN, no typed arrays, no functions. */
function assertJson(fig: Figure): void {
  assert.deepEqual(JSON.parse(JSON.stringify(fig)), fig);
}

test('lossCurves: raw faint behind smoothed, one colour and legend group per run', () => {
  const fig = lossCurves([a, b], { title: 'loss' });
  assertJson(fig);
  assert.equal(fig.data.length, 4);
  const [rawA, smA, rawB, smB] = fig.data;
  assert.equal(rawA.meta!.role, 'raw');
  assert.equal(smA.meta!.role, 'smoothed');
  assert.deepEqual(rawA.x, [0, 1, 2, 3]);
  assert.deepEqual(rawA.y, [4, 3, 2.5, 2]);
  assert.deepEqual(smA.y, smooth([4, 3, 2.5, 2], 0.6));
  assert.equal(rawA.showlegend, false);
  assert.equal(smA.showlegend, true);
  assert.ok((rawA.opacity as number) < 0.5);
  assert.equal(smA.opacity, undefined);
  assert.equal(rawA.legendgroup, smA.legendgroup);
  assert.notEqual(rawA.legendgroup, rawB.legendgroup);
  assert.equal((rawA.line as { color: string }).color, PALETTE[0]);
  assert.equal((smA.line as { color: string }).color, PALETTE[0]);
  assert.equal((smB.line as { color: string }).color, PALETTE[1]);
  assert.equal(smA.name, 'run-a');
  assert.equal(smA.mode, 'lines');
  assert.equal(fig.layout.xaxis!.title!.text, 'step');
  assert.equal(fig.layout.yaxis!.title!.text, 'loss');
  assert.equal(fig.layout.yaxis!.type, undefined);
  assert.equal(fig.layout.title!.text, 'loss');
});

test('lossCurves: smoothing weight, 0 draws only the raw line, colour override', () => {
  const s9 = lossCurves([a], { smoothing: 0.9 });
  assert.deepEqual(s9.data[1].y, smooth(a.values, 0.9));
  const s0 = lossCurves([{ ...a, color: '#123456' }], { smoothing: 0 });
  assert.equal(s0.data.length, 1);
  assert.deepEqual(s0.data[0].y, [4, 3, 2.5, 2]);
  assert.equal(s0.data[0].meta!.role, 'raw');
  assert.equal((s0.data[0].line as { color: string }).color, '#123456');
  assert.throws(() => lossCurves([a], { smoothing: 1 }), /lossCurves: smoothing must be a number in \[0, 1\)/);
  assert.throws(() => lossCurves([a], { rawOpacity: 2 }), /lossCurves: rawOpacity/);
});

test('lossCurves: x by wall time (date axis, ms) and relative time (unit from the longest run)', () => {
  const wall = lossCurves([a, b], { x: 'wall' });
  assertJson(wall);
  assert.equal(wall.layout.xaxis!.type, 'date');
  assert.deepEqual(wall.data[0].x, [1000000, 1060000, 1120000, 1180000]);
  const rel = lossCurves([a, b], { x: 'relative' });
  // a spans 180 s >= 120 s: minutes for both runs, each from its own start.
  assert.match(rel.layout.xaxis!.title!.text, /time since start \(min\)/);
  assert.deepEqual(rel.data[0].x, [0, 1, 2, 3]);
  assert.deepEqual(rel.data[2].x, [0, 10 / 60, 20 / 60]);
  const relS = lossCurves([b], { x: 'relative' });
  assert.match(relS.layout.xaxis!.title!.text, /\(s\)/);
  assert.deepEqual(relS.data[0].x, [0, 10, 20]);
  const relH = lossCurves([{ name: 'h', steps: [0, 1], values: [1, 2], wallTimes: [0, 3 * 3600] }], { x: 'relative' });
  assert.match(relH.layout.xaxis!.title!.text, /\(h\)/);
  assert.deepEqual(relH.data[0].x, [0, 3]);
  const noWall: Series = { name: 'nw', steps: [0], values: [1] };
  assert.throws(() => lossCurves([noWall], { x: 'wall' }), /lossCurves: series "nw" has no wallTimes/);
  assert.throws(() => lossCurves([a], { x: 'time' as 'wall' }), /lossCurves: x must be 'step', 'wall' or 'relative'/);
});

test('lossCurves: log y axis', () => {
  const fig = lossCurves([a], { logY: true });
  assert.equal(fig.layout.yaxis!.type, 'log');
});

test('lossCurves: empty list, empty series, single point', () => {
  const none = lossCurves([], { title: 't' });
  assertJson(none);
  assert.equal(none.data.length, 0);
  assert.equal(none.layout.annotations![0].text, 'no data');
  const empty = lossCurves([{ name: 'e', steps: [], values: [] }]);
  assertJson(empty);
  assert.equal(empty.data.length, 2);
  assert.deepEqual(empty.data[1].y, []);
  const one = lossCurves([{ name: 'one', steps: [5], values: [2.5] }]);
  assert.deepEqual(one.data[1].x, [5]);
  assert.deepEqual(one.data[1].y, [2.5]);
  // A line through a single point draws nothing: markers make it visible.
  assert.equal(one.data[1].mode, 'lines+markers');
});

test('lossCurves: NaN and infinite values are gaps (null), smoothing skips them', () => {
  const s: Series = { name: 'nan', steps: [0, 1, 2, 3, 4], values: [2, NaN, 4, Infinity, 1] };
  const fig = lossCurves([s]);
  assertJson(fig);
  assert.deepEqual(fig.data[0].y, [2, null, 4, null, 1]);
  const expected = smooth([2, NaN, 4, Infinity, 1]).map((v) => (Number.isFinite(v) ? v : null));
  assert.deepEqual(fig.data[1].y, expected);
  assert.equal((fig.data[1].y as number[])[2], 3.25);
  // Every finite point is isolated between gaps: markers.
  assert.equal(fig.data[1].mode, 'lines+markers');
  const all = lossCurves([{ name: 'n', steps: [0, 1], values: [NaN, NaN] }]);
  assert.deepEqual(all.data[1].y, [null, null]);
});

test('lossCurves: names are data, escaped for plotly\'s pseudo-HTML; the raw name stays in meta', () => {
  const name = '<b>x</b> & <a href="javascript:alert(1)">y</a>';
  const fig = lossCurves([{ name, steps: [0, 1], values: [1, 2] }], { title: '<i>t</i>' });
  assertJson(fig);
  for (const t of fig.data) {
    assert.equal(t.name, '&lt;b&gt;x&lt;/b&gt; &amp; &lt;a href="javascript:alert(1)"&gt;y&lt;/a&gt;');
    assert.equal(t.meta!.run, name);
  }
  assert.equal(fig.layout.title!.text, '&lt;i&gt;t&lt;/i&gt;');
  assert.ok(!fig.data.some((t) => (t.name ?? '').includes('<')));
});

test('lossCurves: bad input throws, naming the function and the run', () => {
  assert.throws(() => lossCurves([{ name: 'r', steps: [0, 1], values: [1] }]), /lossCurves: series "r": 2 steps but 1 values/);
  assert.throws(() => lossCurves([{ name: 'r', steps: [0], values: [1], wallTimes: [] }]), /lossCurves: series "r": 1 steps but 0 wallTimes/);
  assert.throws(() => lossCurves([{ name: 7 as unknown as string, steps: [], values: [] }]), /lossCurves: series name must be a string/);
  assert.throws(() => lossCurves([{ name: 'r', steps: [0], values: ['1' as unknown as number] }]), /lossCurves: series "r": values\[0\] is string/);
  assert.throws(() => lossCurves([null as unknown as Series]), /lossCurves: a series must be an object/);
  assert.throws(() => lossCurves('x' as unknown as Series[]), /lossCurves: series must be an array/);
  // Typed arrays are accepted and come out as plain arrays.
  const typed = lossCurves([{ name: 't', steps: new Int32Array([0, 1]), values: new Float32Array([1, 0.5]) }]);
  assert.deepEqual(typed.data[0].y, [1, 0.5]);
  assert.ok(Array.isArray(typed.data[0].x));
});

test('compareRuns: one metric of several runs; colours by run position; missing runs in a footnote', () => {
  const runs: RunMetrics[] = [
    { name: 'a', metrics: { loss: a, lr: a } },
    { name: 'b', metrics: { lr: b } },
    { name: 'c', metrics: { loss: b } },
  ];
  const fig = compareRuns(runs, 'loss', { smoothing: 0.5 });
  assertJson(fig);
  assert.equal(fig.data.length, 4);
  assert.deepEqual(fig.data.filter((t) => t.showlegend).map((t) => t.name), ['a', 'c']);
  assert.equal((fig.data[3].line as { color: string }).color, PALETTE[2]);
  assert.deepEqual(fig.data[1].y, smooth(a.values, 0.5));
  assert.equal(fig.layout.title!.text, 'loss');
  assert.equal(fig.layout.yaxis!.title!.text, 'loss');
  assert.equal(fig.layout.annotations!.length, 1);
  assert.match(fig.layout.annotations![0].text, /not logged by: b/);
  const rel = compareRuns(runs, 'loss', { x: 'relative', logY: true, title: 'cmp' });
  assert.equal(rel.layout.yaxis!.type, 'log');
  assert.equal(rel.layout.title!.text, 'cmp');
  const none = compareRuns(runs, 'acc');
  assert.equal(none.data.length, 0);
  assert.match(none.layout.annotations![0].text, /not logged by: a, b, c/);
  assert.equal(compareRuns([], 'loss').data.length, 0);
  assert.throws(() => compareRuns(runs, ''), /compareRuns: metricKey/);
  assert.throws(() => compareRuns([{ metrics: {} } as never], 'loss'), /compareRuns: runs\[0\]/);
  // A metric key like '__proto__' or 'toString' is not inherited from Object.prototype.
  assert.equal(compareRuns(runs, 'toString').data.length, 0);
});

test('retrievalCurves: colour per K, dash per direction, sorted, unsmoothed by default', () => {
  const s = (v: number) => ({ steps: [100, 200], values: [v, v + 0.1] });
  const fig = retrievalCurves({
    't2i/r@10': s(0.5), 'i2t/r@1': s(0.1), 'i2t/r@5': s(0.3), 't2i/r@1': s(0.12),
    'i2t/r@10': s(0.55), 't2i/r@5': s(0.33),
  });
  assertJson(fig);
  assert.equal(fig.data.length, 6);
  assert.deepEqual(fig.data.map((t) => t.meta!.run), ['i2t/r@1', 'i2t/r@5', 'i2t/r@10', 't2i/r@1', 't2i/r@5', 't2i/r@10']);
  assert.deepEqual(fig.data.map((t) => t.name), [
    'image→text R@1', 'image→text R@5', 'image→text R@10', 'text→image R@1', 'text→image R@5', 'text→image R@10']);
  const line = (i: number) => fig.data[i].line as { color: string; dash: string };
  for (let i = 0; i < 3; i++) {
    assert.equal(line(i).color, line(i + 3).color);
    assert.equal(line(i).dash, 'solid');
    assert.equal(line(i + 3).dash, 'dash');
  }
  assert.equal(new Set([0, 1, 2].map((i) => line(i).color)).size, 3);
  assert.deepEqual(fig.data[0].y, [0.1, 0.2]);
  assert.equal(fig.layout.yaxis!.rangemode, 'tozero');
  // Same colours whichever subset is logged.
  const only10 = retrievalCurves({ 'eval/t2i/r@10': s(0.5) });
  assert.equal((only10.data[0].line as { color: string }).color, line(2).color);
  const sm = retrievalCurves({ 'val/i2t_r@5': s(0.3) }, { smoothing: 0.5 });
  assert.equal(sm.data.length, 2);
  // Several splits in one figure keep their split in the legend.
  const splits = retrievalCurves({ 'val/i2t/r@1': s(0.1), 'test/i2t/r@1': s(0.05) });
  assert.deepEqual(splits.data.map((t) => t.name).sort(), ['test image→text R@1', 'val image→text R@1']);
  assert.equal(retrievalCurves({}).data.length, 0);
  assert.throws(() => retrievalCurves({ 'i2t/map': s(0.1) }), /retrievalCurves: metric "i2t\/map" names no direction and K/);
  assert.throws(() => retrievalCurves({ 'r@1': s(0.1) }), /retrievalCurves: metric "r@1"/);
  assert.throws(() => retrievalCurves([] as never), /retrievalCurves: series must be an object/);
});
