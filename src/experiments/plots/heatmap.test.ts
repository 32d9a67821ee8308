/** attentionHeatmap: nested and flat input, labels by position, orientation, NaN, escaping, bad input. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { attentionHeatmap } from './heatmap';
import type { Figure } from './types';

function assertJson(fig: Figure): void {
  assert.deepEqual(JSON.parse(JSON.stringify(fig)), fig);
}

test('attentionHeatmap: number[][] with token labels; repeated tokens stay separate columns', () => {
  const tokens = ['the', 'cat', 'the'];
  const m = [[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]];
  const fig = attentionHeatmap(m, { xLabels: tokens, yLabels: tokens, title: 'head 0', zmin: 0, zmax: 1 });
  assertJson(fig);
  assert.equal(fig.data.length, 1);
  const t = fig.data[0];
  assert.equal(t.type, 'heatmap');
  assert.deepEqual(t.z, m);
  assert.deepEqual(t.x, [0, 1, 2]);
  assert.deepEqual(t.y, [0, 1, 2]);
  assert.equal(t.zmin, 0);
  assert.equal(t.zmax, 1);
  assert.deepEqual((t.text as string[][])[2], ['the → the', 'the → cat', 'the → the']);
  assert.deepEqual(fig.layout.xaxis!.tickvals, [0, 1, 2]);
  assert.deepEqual(fig.layout.xaxis!.ticktext, tokens);
  assert.deepEqual(fig.layout.yaxis!.ticktext, tokens);
  // Query 0 on top, as the matrix reads.
  assert.equal(fig.layout.yaxis!.autorange, 'reversed');
  assert.equal(fig.layout.title!.text, 'head 0');
});

test('attentionHeatmap: Float32Array + shape, non-square, no labels', () => {
  const f = new Float32Array([0.5, 0.25, 0.25, 1, 0, 0]);
  const fig = attentionHeatmap(f, { shape: [2, 3] });
  assertJson(fig);
  assert.deepEqual(fig.data[0].z, [[0.5, 0.25, 0.25], [1, 0, 0]]);
  assert.equal(fig.layout.xaxis!.tickvals, undefined);
  assert.deepEqual((fig.data[0].text as string[][])[1], ['1 → 0', '1 → 1', '1 → 2']);
  const flatArr = attentionHeatmap([1, 2, 3, 4], { shape: [2, 2] });
  assert.deepEqual(flatArr.data[0].z, [[1, 2], [3, 4]]);
  const single = attentionHeatmap([[0.7]]);
  assert.deepEqual(single.data[0].z, [[0.7]]);
});

test('attentionHeatmap: NaN and infinite weights are gaps; empty matrix', () => {
  const fig = attentionHeatmap(new Float64Array([NaN, 1, -Infinity, 0]), { shape: [2, 2] });
  assertJson(fig);
  assert.deepEqual(fig.data[0].z, [[null, 1], [null, 0]]);
  const e1 = attentionHeatmap([]);
  assert.equal(e1.data.length, 0);
  assert.match(e1.layout.annotations![0].text, /empty matrix \[0, 0\]/);
  assert.equal(attentionHeatmap(new Float32Array(0), { shape: [0, 4] }).data.length, 0);
});

test('attentionHeatmap: labels are data, escaped for plotly', () => {
  const fig = attentionHeatmap([[1, 0], [0, 1]], { xLabels: ['<s>', '&'], yLabels: ['<b>', 'x'], title: '<script>' });
  assert.deepEqual(fig.layout.xaxis!.ticktext, ['&lt;s&gt;', '&amp;']);
  assert.equal((fig.data[0].text as string[][])[0][0], '&lt;b&gt; → &lt;s&gt;');
  assert.equal(fig.layout.title!.text, '&lt;script&gt;');
  // The only markup is the hover template's own, which names no data.
  const { hovertemplate, ...rest } = fig.data[0];
  assert.equal(hovertemplate, '%{text}: %{z:.4f}<extra></extra>');
  assert.ok(!JSON.stringify([rest, fig.layout]).includes('<'));
});

test('attentionHeatmap: bad input throws, naming the function and the shapes', () => {
  assert.throws(() => attentionHeatmap(new Float32Array(4)), /attentionHeatmap: a flat matrix needs opts.shape/);
  assert.throws(() => attentionHeatmap(new Float32Array(4), { shape: [2, 3] }), /attentionHeatmap: shape \[2, 3\] needs 6 values, got 4/);
  assert.throws(() => attentionHeatmap(new Float32Array(4), { shape: [2, -2] as never }), /needs opts.shape/);
  assert.throws(() => attentionHeatmap([[1, 2], [3]]), /attentionHeatmap: ragged matrix: row 0 has 2 columns, row 1 has 1/);
  assert.throws(() => attentionHeatmap([[1, 2]], { shape: [2, 2] }), /opts.shape \[2, 2\] but the matrix is \[1, 2\]/);
  assert.throws(() => attentionHeatmap([[1, 2]], { xLabels: ['a'] }), /attentionHeatmap: xLabels has 1 labels for 2 columns \(matrix \[1, 2\]\)/);
  assert.throws(() => attentionHeatmap([[1, 2]], { yLabels: ['a', 'b'] }), /yLabels has 2 labels for 1 rows/);
  assert.throws(() => attentionHeatmap([[1, 2]], { xLabels: [1, 2] as never }), /xLabels must be an array of strings/);
  assert.throws(() => attentionHeatmap([[1, 'x']] as never), /\[0\]\[1\] is string/);
  assert.throws(() => attentionHeatmap([[1]], { zmin: NaN }), /zmin must be a finite number/);
  assert.throws(() => attentionHeatmap('m' as never), /matrix must be number\[\]\[\]/);
});
