// TensorBoard's scalar smoothing: a debiased exponential moving average.

/**
 * Smooths a series the way TensorBoard's scalar dashboard does (its `classicSmoothing`):
 *
 *   last_t = w * last_{t-1} + (1 - w) * v_t,   last_0 = 0,   smoothed_t = last_t / (1 - w^t)
 *
 * where t counts the finite points seen so far. Dividing by 1 - w^t removes the pull towards the initial 0, so
 * the first smoothed value equals the first raw value. Like TensorBoard:
 * - a NaN or infinite point is passed through unchanged and neither enters the average nor advances t;
 * - a constant series is returned as is (the debias division would otherwise add rounding noise to it).
 *
 * `weight` is in [0, 1): 0 returns the values unchanged; 1 would freeze the average at its initial 0, so it is
 * refused (TensorBoard's slider stops at 0.999).
 *
 * @example
 * smooth([1, 0, 0], 0.5)  // [1, 1/3, 1/7]
 */
export function smooth(values: ArrayLike<number>, weight = 0.6): number[] {
  if (typeof weight !== 'number' || !(weight >= 0 && weight < 1)) {
    throw new RangeError(`smooth: weight must be a number in [0, 1), got ${String(weight)}`);
  }
  if (values === null || typeof values !== 'object' || typeof values.length !== 'number') {
    throw new TypeError('smooth: values must be an array of numbers');
  }
  const n = values.length;
  const out = new Array<number>(n);
  let constant = true;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (typeof v !== 'number') throw new TypeError(`smooth: values[${i}] is ${typeof v}, not a number`);
    out[i] = v;
    // `==` as TensorBoard: a NaN anywhere makes the series non-constant.
    if (v !== values[0]) constant = false;
  }
  if (constant || weight === 0) return out;
  let last = 0;
  let count = 0;
  for (let i = 0; i < n; i++) {
    const v = out[i];
    if (!Number.isFinite(v)) continue;
    last = last * weight + (1 - weight) * v;
    count++;
    out[i] = last / (1 - Math.pow(weight, count));
  }
  return out;
}
