/**
 * Finite differences over every differentiable op: the second of the three independent gradient checks
 * (the PyTorch fixtures are the first, the CUDA-against-CPU suite the third).
 *
 * For an op f with inputs x and a fixed random R of the output's shape, L(x) = sum(f(x) * R). The autograd
 * gradient (f(x).backward(R)) is compared, element by element, with the central difference
 *
 *     (L(x + h e_j) - L(x - h e_j)) / (x_j^+ - x_j^-)
 *
 * where x_j^+- are the float32 values actually stored (so the rounding of x_j +- h does not count as error).
 *
 * The tolerance is an error budget, not a guess:
 *   - rounding: the op runs in float32, so every output element carries an absolute error up to a few ulps of
 *     the largest output, c u max|out| with u = 2^-24 and c = 8 (a chain of a few correctly rounded steps; fused
 *     ops with sums, like layerNorm, err relative to the row's scale rather than to each element). L is summed
 *     in float64 from those outputs, so |dL| <= c u max|out| sum|R| at each of the two points, and the
 *     difference quotient inherits 2 |dL| / (2h): tol_round = c u max|out| sum|R| / h. With h = 1e-2 and the
 *     small shapes here this is about 1e-4..1e-3 — which is why float32 needs h this large: at h = 1e-4 the same
 *     rounding would be 100 times bigger than the gradients' own precision.
 *   - truncation: the central difference is exact for quadratics and off by h^2/6 |L'''| otherwise; with h = 1e-2
 *     and inputs kept O(1) and away from singularities (log, sqrt, div on [0.5, 2]), that is below 1e-4 relative
 *     to the gradient. We allow 1e-3 relative plus 1e-4 absolute.
 * A wrong gradient (a missing broadcast reduction, a wrong formula, a gradient sent to the wrong input) is off by
 * O(1), orders of magnitude above this budget; the small errors are the fixtures' job (rtol 1e-5 against torch).
 *
 * Inputs avoid kinks: relu and abs see |x| >= 0.1 > h; max/min reductions see values spaced at least 0.1 apart,
 * so no perturbation changes the argmax; maximum/minimum see |a - b| >= 0.1.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../src/index';
import { lcg } from './helpers';

const U = 2 ** -24;
const C_ROUND = 8;
const RTOL_TRUNC = 1e-3;
const ATOL_TRUNC = 1e-4;

type Gen = (n: number, rnd: () => number) => Float32Array;
/** Uniform in [-2, 2]. */
const normal: Gen = (n, r) => Float32Array.from({ length: n }, () => 4 * r() - 2);
/** Random sign, magnitude in [lo, hi] (away from kinks at 0 and singularities). */
const away = (lo = 0.1, hi = 2): Gen => (n, r) => Float32Array.from({ length: n }, () => (r() < 0.5 ? -1 : 1) * (lo + (hi - lo) * r()));
const positive = (lo = 0.5, hi = 2): Gen => (n, r) => Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
/** A shuffled ladder of values 0.2 apart (plus jitter below 0.05): no two are within 0.1, so max/min never tie. */
const distinct: Gen = (n, r) => {
  const v = Array.from({ length: n }, (_, i) => (i - n / 2) * 0.2 + 0.05 * r());
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [v[i], v[j]] = [v[j], v[i]];
  }
  return Float32Array.from(v);
};

interface In { shape: number[]; gen?: Gen; grad?: boolean }

function seedOf(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

const size = (s: number[]): number => s.reduce((a, b) => a * b, 1);

/**
 * Check the autograd gradient of every `grad` input of fn against central differences. `values` may override
 * the generated data of some inputs (by position) when an input must be built from another (maximum's b from a).
 */
function gradcheck(name: string, inputs: In[], fn: (...xs: ml.Tensor[]) => ml.Tensor,
  opts: { h?: number; values?: (xs: Float32Array[]) => void } = {}): void {
  test(`gradcheck ${name}`, (t) => {
    const h = opts.h ?? 1e-2;
    const rnd = lcg(seedOf(name));
    const xs = inputs.map((s) => (s.gen ?? normal)(size(s.shape), rnd));
    opts.values?.(xs);
    const wants = inputs.map((s) => s.grad !== false);

    // Autograd gradient, and R.
    let R!: Float32Array;
    let maxOut = 0;
    const analytic = ml.tidy(() => {
      const ts = xs.map((x, i) => ml.tensor(x, inputs[i].shape, { requiresGrad: wants[i] }));
      const out = fn(...ts);
      assert.equal(out.dtype, 'f32', 'output dtype');
      R = normal(out.size, rnd);
      for (const v of out.toArray() as Float32Array) maxOut = Math.max(maxOut, Math.abs(v));
      out.backward(ml.tensor(R, out.shape));
      return ts.map((t, i) => {
        if (!wants[i]) return null;
        assert.ok(t.grad, `no gradient reached input ${i}`);
        assert.deepEqual([...t.grad.shape], inputs[i].shape, `gradient of input ${i}: shape`);
        return t.grad.toArray() as Float32Array;
      });
    });
    let sumR = 0;
    for (const v of R) sumR += Math.abs(v);

    const loss = (arrays: Float32Array[]): number => ml.noGrad(() => ml.tidy(() => {
      const out = fn(...arrays.map((a, i) => ml.tensor(a, inputs[i].shape))).toArray() as Float32Array;
      let s = 0;
      for (let k = 0; k < out.length; k++) s += out[k] * R[k];
      return s;
    }));

    let worst = 0;
    for (let i = 0; i < xs.length; i++) {
      const a = analytic[i];
      if (!a) continue;
      for (let j = 0; j < xs[i].length; j++) {
        const x0 = xs[i][j];
        const xp = Math.fround(x0 + h), xm = Math.fround(x0 - h);
        const pert = xs.map((x) => x.slice());
        pert[i][j] = xp;
        const lp = loss(pert);
        pert[i][j] = xm;
        const lm = loss(pert);
        const numeric: number = (lp - lm) / (xp - xm);
        const tol: number = C_ROUND * U * maxOut * sumR / (xp - xm) * 2 + RTOL_TRUNC * Math.abs(a[j]) + ATOL_TRUNC;
        worst = Math.max(worst, Math.abs(numeric - a[j]) / tol);
        if (!(Math.abs(numeric - a[j]) <= tol)) {
          assert.fail(`input ${i} ${JSON.stringify(inputs[i].shape)} element ${j} (x = ${x0}): autograd ${a[j]}, ` +
            `finite difference ${numeric} (|diff| ${Math.abs(numeric - a[j]).toExponential(2)} > tol ${tol.toExponential(2)})`);
        }
      }
    }
    t.diagnostic(`worst element used ${(100 * worst).toFixed(1)}% of the error budget`);
  });
}

// ------------------------------------------------------------------------------------------------ elementwise

const binary: Array<[string, (a: ml.Operand, b: ml.Operand) => ml.Tensor, Gen]> = [
  ['add', ml.add, normal], ['sub', ml.sub, normal], ['mul', ml.mul, normal], ['div', ml.div, away(0.5, 2)],
];
for (const [op, fn, gb] of binary) {
  gradcheck(`${op} same shape`, [{ shape: [2, 3] }, { shape: [2, 3], gen: gb }], fn);
  gradcheck(`${op} broadcast [3, 1, 4] with [2, 4]`, [{ shape: [3, 1, 4] }, { shape: [2, 4], gen: gb }], fn);
  gradcheck(`${op} broadcast [4, 1] with [1, 5]`, [{ shape: [4, 1] }, { shape: [1, 5], gen: gb }], fn);
  gradcheck(`${op} tensor and scalar`, [{ shape: [2, 3] }], (a) => fn(a, 0.75));
  gradcheck(`${op} scalar and tensor`, [{ shape: [2, 3], gen: gb }], (b) => fn(-1.25, b));
  gradcheck(`${op} with a 0-d tensor`, [{ shape: [2, 3] }, { shape: [], gen: gb }], fn);
}
gradcheck('pow tensor base and exponent, broadcast', [{ shape: [3, 1, 4], gen: positive() }, { shape: [2, 4] }], ml.pow);
gradcheck('pow scalar exponent 2.5', [{ shape: [2, 3], gen: positive() }], (a) => ml.pow(a, 2.5));
gradcheck('pow negative base, exponent 3', [{ shape: [2, 3], gen: away(0.2, 2) }], (a) => ml.pow(a, 3));
gradcheck('pow scalar base 2', [{ shape: [2, 3] }], (b) => ml.pow(2, b));
for (const [op, fn] of [['maximum', ml.maximum], ['minimum', ml.minimum]] as const) {
  // b = a +- [0.1, 1]: never within a perturbation of a tie.
  const apart = (xs: Float32Array[]) => {
    const r = lcg(7);
    const a = xs[0], b = xs[1];
    for (let j = 0; j < b.length; j++) b[j] = a[j % a.length] + (r() < 0.5 ? -1 : 1) * (0.1 + 0.9 * r());
  };
  gradcheck(`${op} same shape`, [{ shape: [2, 3] }, { shape: [2, 3] }], fn, { values: apart });
  gradcheck(`${op} broadcast [4] with [3, 4]`, [{ shape: [4] }, { shape: [3, 4] }], fn, { values: apart });
  gradcheck(`${op} with a scalar`, [{ shape: [2, 5], gen: away(0.2, 2) }], (a) => fn(a, 0.05));
}

const unary: Array<[string, (x: ml.Tensor) => ml.Tensor, Gen]> = [
  ['neg', ml.neg, normal], ['exp', ml.exp, normal], ['log', ml.log, positive()], ['sqrt', ml.sqrt, positive()],
  ['abs', ml.abs, away()], ['square', ml.square, normal], ['tanh', ml.tanh, normal], ['sigmoid', ml.sigmoid, normal],
  ['relu', ml.relu, away()], ['silu', ml.silu, normal], ['reciprocal', ml.reciprocal, away(0.5, 2)],
  ['sin', ml.sin, normal], ['cos', ml.cos, normal],
  ['gelu', (x) => ml.gelu(x), normal], ['gelu tanh', (x) => ml.gelu(x, { approximate: 'tanh' }), normal],
];
for (const [op, fn, g] of unary) gradcheck(op, [{ shape: [3, 5], gen: g }], fn);

gradcheck('where with f32 condition and broadcast', [{ shape: [3, 1], grad: false, gen: (n, r) => Float32Array.from({ length: n }, () => (r() < 0.5 ? 1 : 0)) },
  { shape: [3, 4] }, { shape: [4] }], (c, a, b) => ml.where(c, a, b));
gradcheck('where with i32 condition and scalar b', [{ shape: [2, 5] }], (a) =>
  ml.where(ml.tensor(Int32Array.from([1, 0, 0, 1, 1, 0, 1, 0, 1, 1]), [2, 5], { dtype: 'i32' }), a, 0.5));
gradcheck('maskedFill with a broadcast mask', [{ shape: [3, 4] }], (x) =>
  ml.maskedFill(x, ml.tensor(Float32Array.from([1, 0, 0, 1]), [1, 4]), -3));
gradcheck('dropout p=0.3 (mask fixed by the seed)', [{ shape: [4, 5] }], (x) => {
  ml.manualSeed(11);
  return ml.dropout(x, 0.3);
});

// ------------------------------------------------------------------------------------------------ reductions

for (const op of ['sum', 'mean', 'max', 'min'] as const) {
  const fn = ml[op];
  const g = op === 'max' || op === 'min' ? distinct : normal;
  gradcheck(`${op} over all axes`, [{ shape: [2, 3, 4], gen: g }], (x) => fn(x));
  gradcheck(`${op} axis 1`, [{ shape: [2, 3, 4], gen: g }], (x) => fn(x, 1));
  gradcheck(`${op} axes [0, 2] keepDims`, [{ shape: [2, 3, 4], gen: g }], (x) => fn(x, [0, 2], true));
  gradcheck(`${op} axis -1 keepDims`, [{ shape: [3, 5], gen: g }], (x) => fn(x, -1, true));
}

// ------------------------------------------------------------------------------------------------ fused ops

for (const op of ['softmax', 'logSoftmax'] as const) {
  gradcheck(`${op} last axis`, [{ shape: [3, 5] }], (x) => ml[op](x, -1));
  gradcheck(`${op} axis 0`, [{ shape: [4, 3] }], (x) => ml[op](x, 0));
  gradcheck(`${op} middle axis`, [{ shape: [2, 3, 4] }], (x) => ml[op](x, 1));
}
gradcheck('layerNorm with weight and bias', [{ shape: [2, 3, 8] }, { shape: [8] }, { shape: [8] }],
  (x, w, b) => ml.layerNorm(x, w, b));
gradcheck('layerNorm without weight and bias', [{ shape: [5, 6] }], (x) => ml.layerNorm(x, null, null));
gradcheck('layerNorm weight only', [{ shape: [3, 7] }, { shape: [7] }], (x, w) => ml.layerNorm(x, w, null));
const idx = (values: number[], shape = [values.length]) => ml.tensor(Int32Array.from(values), shape, { dtype: 'i32' });
gradcheck('embedding with repeated indices', [{ shape: [6, 4] }], (w) => ml.embedding(w, idx([1, 5, 1, 0, 5, 5], [2, 3])));
for (const reduction of ['mean', 'sum', 'none'] as const) {
  gradcheck(`crossEntropy ${reduction}`, [{ shape: [5, 4] }], (x) => ml.crossEntropy(x, idx([0, 3, 1, 1, 2]), { reduction }));
}
gradcheck('crossEntropy with ignored rows and labelSmoothing 0.1', [{ shape: [5, 4] }],
  (x) => ml.crossEntropy(x, idx([0, -100, 1, 3, -100]), { labelSmoothing: 0.1 }));
gradcheck('crossEntropy [B, T, C]', [{ shape: [2, 3, 4] }], (x) => ml.crossEntropy(x, idx([0, 3, 1, 1, 2, 0], [2, 3])));

// ------------------------------------------------------------------------------------------------ matmul

gradcheck('matmul 2-D', [{ shape: [3, 4] }, { shape: [4, 5] }], (a, b) => ml.matmul(a, b));
gradcheck('matmul transA', [{ shape: [4, 3] }, { shape: [4, 5] }], (a, b) => ml.matmul(a, b, { transA: true }));
gradcheck('matmul transB', [{ shape: [3, 4] }, { shape: [5, 4] }], (a, b) => ml.matmul(a, b, { transB: true }));
gradcheck('matmul transA transB', [{ shape: [4, 3] }, { shape: [5, 4] }], (a, b) => ml.matmul(a, b, { transA: true, transB: true }));
gradcheck('matmul broadcast batch [2, 1, 3, 4] @ [5, 4, 2]', [{ shape: [2, 1, 3, 4] }, { shape: [5, 4, 2] }], (a, b) => ml.matmul(a, b));
gradcheck('matmul broadcast [3, 4] @ [2, 4, 5]', [{ shape: [3, 4] }, { shape: [2, 4, 5] }], (a, b) => ml.matmul(a, b));
gradcheck('matmul batched transB', [{ shape: [2, 3, 4] }, { shape: [2, 5, 4] }], (a, b) => ml.matmul(a, b, { transB: true }));

// ------------------------------------------------------------------------------------------------ layout and indexing

gradcheck('reshape', [{ shape: [2, 3, 4] }], (x) => ml.reshape(x, [4, 6]));
gradcheck('flatten', [{ shape: [2, 3, 4] }], (x) => ml.flatten(x, 1));
gradcheck('squeeze', [{ shape: [2, 1, 3] }], (x) => ml.squeeze(x, 1));
gradcheck('unsqueeze', [{ shape: [2, 3] }], (x) => ml.unsqueeze(x, 0));
gradcheck('transpose axes 0 and 2', [{ shape: [2, 3, 4] }], (x) => ml.transpose(x, 0, 2));
gradcheck('permute', [{ shape: [2, 3, 4] }], (x) => ml.permute(x, [2, 0, 1]));
gradcheck('slice axis 0', [{ shape: [4, 3] }], (x) => ml.slice(x, 0, 1, 3));
gradcheck('slice inner axis with negative indices', [{ shape: [2, 5, 3] }], (x) => ml.slice(x, 1, -4, -1));
gradcheck('concat axis 1', [{ shape: [2, 1, 3] }, { shape: [2, 3, 3] }], (a, b) => ml.concat([a, b], 1));
gradcheck('stack axis -1', [{ shape: [2, 3] }, { shape: [2, 3] }], (a, b) => ml.stack([a, b], -1));
gradcheck('broadcastTo', [{ shape: [3, 1] }], (x) => ml.broadcastTo(x, [2, 3, 4]));
gradcheck('clone', [{ shape: [2, 3] }], (x) => ml.clone(x));
gradcheck('cast f32 to f32', [{ shape: [2, 3] }], (x) => ml.cast(x, 'f32'));
gradcheck('gather axis 1 with repeats', [{ shape: [2, 4, 3] }], (x) => ml.gather(x, 1, idx([0, 3, 3, 1, 2, 0, 1, 1, 2, 3, 0, 0, 2, 2, 2, 1, 0, 3], [2, 3, 3])));
gradcheck('indexSelect axis 1 with repeats', [{ shape: [2, 5, 3] }], (x) => ml.indexSelect(x, 1, idx([4, 0, 4])));

// ------------------------------------------------------------------------------------------------ a composite

gradcheck('an MLP loss: matmul, add, gelu, layerNorm, crossEntropy', [{ shape: [4, 6] }, { shape: [6, 5] }, { shape: [5] }],
  (x, w, b) => ml.crossEntropy(ml.layerNorm(ml.gelu(ml.add(ml.matmul(x, w), b)), null, null), idx([0, 4, 2, 2])));

// ------------------------------------------------------------------------------------------------ attention

const pad = (rows: number[][]) => ml.tensor(Float32Array.from(rows.flat()), [rows.length, rows[0].length]);
gradcheck('scaledDotProductAttention without masks', [{ shape: [2, 2, 3, 4] }, { shape: [2, 2, 5, 4] }, { shape: [2, 2, 5, 3] }],
  (q, k, v) => ml.nn.scaledDotProductAttention(q, k, v));
gradcheck('scaledDotProductAttention causal with key padding', [{ shape: [2, 1, 4, 4] }, { shape: [2, 1, 4, 4] }, { shape: [2, 1, 4, 4] }],
  (q, k, v) => ml.nn.scaledDotProductAttention(q, k, v, { causal: true, keyPaddingMask: pad([[0, 0, 1, 0], [0, 1, 0, 0]]) }));
gradcheck('scaledDotProductAttention with an all-masked key row', [{ shape: [2, 1, 3, 4] }, { shape: [2, 1, 4, 4] }, { shape: [2, 1, 4, 4] }],
  (q, k, v) => ml.nn.scaledDotProductAttention(q, k, v, { keyPaddingMask: pad([[0, 1, 0, 0], [1, 1, 1, 1]]) }));

// ------------------------------------------------------------------------------------------------ infoNCE

gradcheck('infoNCE with the logit scale below the clamp', [{ shape: [5, 4] }, { shape: [5, 4] }, { shape: [], gen: positive(0.5, 1.5) }],
  (a, b, s) => ml.infoNCE(a, b, s));
gradcheck('infoNCE with duplicated rows', [{ shape: [1, 3] }, { shape: [4, 3] }, { shape: [], gen: positive(0.2, 1) }],
  (a, b, s) => ml.infoNCE(ml.concat([a, a, a, a]), b, s));
