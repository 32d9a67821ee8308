/** smooth: TensorBoard's debiased EMA against hand-computed values, non-finite points, edge cases. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { smooth } from './smooth';

function close(actual: number[], expected: number[]): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((a, i) => {
    const e = expected[i];
    if (Number.isNaN(e)) assert.ok(Number.isNaN(a), `[${i}] ${a} should be NaN`);
    else if (!Number.isFinite(e)) assert.equal(a, e);
    else assert.ok(Math.abs(a - e) <= 1e-12 * Math.max(1, Math.abs(e)), `[${i}] ${a} != ${e}`);
  });
}

test('smooth: debiased EMA, hand-computed', () => {
  // w = 0.5: last = 0.5, 0.25, 0.125; debias 0.5, 0.75, 0.875.
  close(smooth([1, 0, 0], 0.5), [1, 1 / 3, 1 / 7]);
  // Default w = 0.6: second point = (0.6*2 + 4) / (1 + 0.6) = 3.25.
  close(smooth([2, 4]), [2, 3.25]);
  // Third point: last = 0.6*2.08 + 0.4*1 = 1.648, debias 1 - 0.216 = 0.784.
  close(smooth([2, 4, 1]), [2, 3.25, 1.648 / 0.784]);
  // The first smoothed value is the first raw value (the point of the debias term), up to rounding.
  close([smooth([123.5, 0, 7], 0.99)[0]], [123.5]);
});

test('smooth: NaN and infinite points pass through and do not advance the average', () => {
  close(smooth([2, NaN, 4]), [2, NaN, 3.25]);
  close(smooth([2, Infinity, 4]), [2, Infinity, 3.25]);
  close(smooth([2, -Infinity, 4]), [2, -Infinity, 3.25]);
  close(smooth([NaN, 2, 4]), [NaN, 2, 3.25]);
  close(smooth([NaN, NaN]), [NaN, NaN]);
});

test('smooth: constant, empty, single point, weight 0, typed input; input untouched', () => {
  assert.deepEqual(smooth([0.1, 0.1, 0.1], 0.9), [0.1, 0.1, 0.1]);
  assert.deepEqual(smooth([]), []);
  assert.deepEqual(smooth([7]), [7]);
  assert.deepEqual(smooth([3, 1, 2], 0), [3, 1, 2]);
  const f = new Float64Array([2, 4]);
  close(smooth(f), [2, 3.25]);
  assert.deepEqual([...f], [2, 4]);
  const a = [1, 0, 0];
  smooth(a, 0.5);
  assert.deepEqual(a, [1, 0, 0]);
});

test('smooth: bad weight or values throw, naming the function', () => {
  for (const w of [1, -0.1, 1.5, NaN, Infinity]) assert.throws(() => smooth([1, 2], w), /smooth: weight must be a number in \[0, 1\)/);
  assert.throws(() => smooth([1, 2], '0.5' as unknown as number), /smooth: weight/);
  assert.throws(() => smooth(null as unknown as number[]), /smooth: values must be an array/);
  assert.throws(() => smooth([1, '2'] as unknown as number[]), /smooth: values\[1\] is string/);
});
