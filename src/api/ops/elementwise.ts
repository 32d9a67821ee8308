/**
 * Element-wise ops with NumPy broadcasting: arithmetic, activations, comparisons, where, dropout.
 *
 * ```ts
 * const x = ml.tensor([[1, 2, 3], [4, 5, 6]], undefined, { requiresGrad: true });
 * const b = ml.tensor([10, 20, 30]);
 * const y = ml.add(x, b).mul(2).relu();          // b broadcasts over the rows; 2 is a plain number
 * ml.where(x.gt(3), x, 0).toArray();             // [0, 0, 0, 4, 5, 6]
 * y.sum().backward();  x.grad!.toArray();        // [2, 2, 2, 2, 2, 2]
 * ```
 *
 * Semantics follow PyTorch: gradients of broadcast operands are summed back to their shape (sumToShape);
 * comparisons give f32 0/1 and no gradient; maximum/minimum send the gradient to the larger/smaller operand
 * and split it half/half on ties; dropout scales kept values by 1/(1-p). A number operand takes the cheap
 * path: x + c, x * c, x / c as one affine pass and x ** c as powScalar, with no temporary tensor. (Where no
 * such kernel exists, as for c / x, a one-element tensor stands in for c.) The ops take f32 tensors; cast
 * others with .cast('f32').
 */
import { binding, BinaryOp, UnaryOp } from '../binding';
import { needsGrad, record } from '../autograd';
import { takeRandom } from '../random';
import { Tensor, Shape } from '../tensor';
import { broadcastShapes, broadcastStrides, checkSameDevice, checkTensor, describe, sameShape, shapeStr } from './util';
import { sumToShape } from './reduce';

export type Operand = Tensor | number;
export interface GeluOptions { approximate?: 'none' | 'tanh' }

// ------------------------------------------------------------------------------------------------ helpers

function checkF32(op: string, name: string, x: unknown): Tensor<'f32'> {
  const t = checkTensor(op, name, x);
  if (t.dtype !== 'f32') {
    throw new TypeError(`${op}: ${name} must be f32, got ${t.dtype} ${shapeStr(t.shape)} (cast it with .cast('f32'))`);
  }
  return t as Tensor<'f32'>;
}

function checkOperand(op: string, name: string, x: unknown): Tensor<'f32'> | number {
  if (typeof x === 'number') return x;
  if (x instanceof Tensor) return checkF32(op, name, x);
  throw new TypeError(`${op}: ${name} must be a Tensor or a number, got ${describe(x)}`);
}

/** Both operands checked; at least one must be a tensor. */
function operands(op: string, a: unknown, b: unknown): [Tensor<'f32'> | number, Tensor<'f32'> | number] {
  const ta = checkOperand(op, 'a', a);
  const tb = checkOperand(op, 'b', b);
  if (typeof ta === 'number' && typeof tb === 'number') {
    throw new TypeError(`${op}: at least one operand must be a Tensor, got the numbers ${ta} and ${tb}`);
  }
  if (ta instanceof Tensor && tb instanceof Tensor) checkSameDevice(op, ta, tb);
  return [ta, tb];
}

/** A one-element f32 tensor holding c (for the few ops with no scalar kernel). The caller disposes it. */
function scalarTensor(c: number, device: Tensor['device']): Tensor<'f32'> {
  const t = Tensor._empty([], 'f32', device);
  binding().fillF32(t._h('scalar'), t._offset, 1, c);
  return t;
}

/** The gradient passed through unchanged (a new handle on the same memory: autograd disposes g itself). */
function pass(g: Tensor<'f32'>): Tensor<'f32'> {
  return g.retainForBackward() as Tensor<'f32'>;
}

function rawAffine(op: string, x: Tensor<'f32'>, scale: number, shift: number): Tensor<'f32'> {
  const out = Tensor._empty(x.shape, 'f32', x.device);
  binding().affine(out._h(op), out._offset, x._h(op), x._offset, x.size, scale, shift);
  return out;
}

function rawUnary(op: string, code: UnaryOp, x: Tensor<'f32'>): Tensor<'f32'> {
  const out = Tensor._empty(x.shape, 'f32', x.device);
  binding().unary(code, out._h(op), out._offset, x._h(op), x._offset, x.size);
  return out;
}

function rawPowScalar(op: string, x: Tensor<'f32'>, p: number): Tensor<'f32'> {
  const out = Tensor._empty(x.shape, 'f32', x.device);
  binding().powScalar(out._h(op), out._offset, x._h(op), x._offset, x.size, p);
  return out;
}

/** out = a op b with broadcasting (no autograd). Same shapes run as one flat axis. */
function rawBinary(op: string, code: BinaryOp, a: Tensor<'f32'>, b: Tensor<'f32'>): Tensor<'f32'> {
  const bind = binding();
  if (sameShape(a.shape, b.shape)) {
    const out = Tensor._empty(a.shape, 'f32', a.device);
    bind.binaryContig(code, out._h(op), out._offset, a._h(op), a._offset, b._h(op), b._offset, a.size);
    return out;
  }
  const shape = broadcastShapes(op, a.shape, b.shape);
  const out = Tensor._empty(shape, 'f32', a.device);
  bind.binary(code, out._h(op), out._offset, a._h(op), a._offset, b._h(op), b._offset, shape,
    broadcastStrides(a.shape, shape), broadcastStrides(b.shape, shape));
  return out;
}

/** a op b where one side may be a number, through a one-element tensor (no autograd). */
function rawBinaryOperand(op: string, code: BinaryOp, a: Tensor<'f32'> | number, b: Tensor<'f32'> | number): Tensor<'f32'> {
  const dev = (a instanceof Tensor ? a : (b as Tensor)).device;
  const ta = typeof a === 'number' ? scalarTensor(a, dev) : a;
  const tb = typeof b === 'number' ? scalarTensor(b, dev) : b;
  try {
    return rawBinary(op, code, ta, tb);
  } finally {
    if (ta !== a) ta.dispose();
    if (tb !== b) tb.dispose();
  }
}

/** Sum a gradient down to an input's shape and free the full-size one when a new tensor was made. */
function reduceGrad(g: Tensor<'f32'>, shape: Shape): Tensor<'f32'> {
  if (sameShape(g.shape, shape)) return g;
  const r = sumToShape(g, shape);
  g.dispose();
  return r;
}

// ------------------------------------------------------------------------------------------------ arithmetic

/** a + b with broadcasting; either may be a number. */
export function add(a: Operand, b: Operand): Tensor<'f32'> {
  const [ta, tb] = operands('add', a, b);
  if (typeof tb === 'number' || typeof ta === 'number') {
    const t = (typeof ta === 'number' ? tb : ta) as Tensor<'f32'>;
    const c = (typeof ta === 'number' ? ta : tb) as number;
    return record(rawAffine('add', t, 1, c), 'add', [t], (g) => [pass(g)]);
  }
  const out = rawBinary('add', BinaryOp.Add, ta, tb);
  return record(out, 'add', [ta, tb], (g) => [
    ta.requiresGrad ? sumToShape(g, ta.shape) : null,
    tb.requiresGrad ? sumToShape(g, tb.shape) : null,
  ]);
}

/** a - b with broadcasting; either may be a number. */
export function sub(a: Operand, b: Operand): Tensor<'f32'> {
  const [ta, tb] = operands('sub', a, b);
  if (typeof tb === 'number') return record(rawAffine('sub', ta as Tensor<'f32'>, 1, -tb), 'sub', [ta as Tensor], (g) => [pass(g)]);
  if (typeof ta === 'number') {
    return record(rawAffine('sub', tb, -1, ta), 'sub', [tb], (g) => [rawUnary('sub', UnaryOp.Neg, g)]);
  }
  const out = rawBinary('sub', BinaryOp.Sub, ta, tb);
  return record(out, 'sub', [ta, tb], (g) => [
    ta.requiresGrad ? sumToShape(g, ta.shape) : null,
    tb.requiresGrad ? reduceGrad(rawUnary('sub', UnaryOp.Neg, g), tb.shape) : null,
  ]);
}

/** a * b with broadcasting; either may be a number. */
export function mul(a: Operand, b: Operand): Tensor<'f32'> {
  const [ta, tb] = operands('mul', a, b);
  if (typeof tb === 'number' || typeof ta === 'number') {
    const t = (typeof ta === 'number' ? tb : ta) as Tensor<'f32'>;
    const c = (typeof ta === 'number' ? ta : tb) as number;
    return record(rawAffine('mul', t, c, 0), 'mul', [t], (g) => [rawAffine('mul', g, c, 0)]);
  }
  const out = rawBinary('mul', BinaryOp.Mul, ta, tb);
  const grad = needsGrad(ta, tb);
  const sa = grad && tb.requiresGrad ? ta.retainForBackward() : null;
  const sb = grad && ta.requiresGrad ? tb.retainForBackward() : null;
  const saved = [sa, sb].filter((t): t is Tensor<'f32'> => t !== null);
  return record(out, 'mul', [ta, tb], (g) => [
    sb ? reduceGrad(rawBinary('mul', BinaryOp.Mul, g, sb), ta.shape) : null,
    sa ? reduceGrad(rawBinary('mul', BinaryOp.Mul, g, sa), tb.shape) : null,
  ], saved);
}

/** a / b with broadcasting; either may be a number (x / c runs as x * (1/c)). */
export function div(a: Operand, b: Operand): Tensor<'f32'> {
  const [ta, tb] = operands('div', a, b);
  if (typeof tb === 'number') {
    const r = 1 / tb;
    // x * (1/c) is within an ulp of x / c; when 1/c is not a normal f32 (c tiny or huge), divide exactly.
    if (Math.abs(r) >= 1.1754943508222875e-38 && Math.abs(r) <= 3.4028234663852886e38 || r === 0) {
      return record(rawAffine('div', ta as Tensor<'f32'>, r, 0), 'div', [ta as Tensor],
        (g) => [rawAffine('div', g, r, 0)]);
    }
  }
  const tA = ta as Tensor<'f32'> | number, tB = tb as Tensor<'f32'> | number;
  const out = rawBinaryOperand('div', BinaryOp.Div, tA, tB);
  const aT = tA instanceof Tensor ? tA : null;
  const bT = tB instanceof Tensor ? tB : null;
  if (!needsGrad(aT, bT)) return out;
  // d/da = g / b;  d/db = -g * (a / b) / b   (torch's formula, reading a / b from the output)
  const sb = tB instanceof Tensor ? tB.retainForBackward() : null;
  const so = bT?.requiresGrad ? out.retainForBackward() : null;
  const saved = [sb, so].filter((t): t is Tensor<'f32'> => t !== null);
  return record(out, 'div', [aT, bT], (g) => {
    let ga: Tensor<'f32'> | null = null, gb: Tensor<'f32'> | null = null;
    if (aT?.requiresGrad) {
      ga = reduceGrad(rawBinaryOperand('div', BinaryOp.Div, g, sb ?? (tB as number)), aT.shape);
    }
    if (bT?.requiresGrad && so && sb) {
      const q = rawBinary('div', BinaryOp.Div, so, sb);
      const gq = rawBinary('div', BinaryOp.Mul, g, q);
      q.dispose();
      gb = reduceGrad(rawUnary('div', UnaryOp.Neg, gq), bT.shape);
      gq.dispose();
    }
    return [ga, gb];
  }, saved);
}

/** a ** b with broadcasting; either may be a number. Gradients for both tensors, with torch's rules at 0. */
export function pow(a: Operand, b: Operand): Tensor<'f32'> {
  const [ta, tb] = operands('pow', a, b);
  if (typeof tb === 'number') {
    const x = ta as Tensor<'f32'>;
    const p = tb;
    const out = rawPowScalar('pow', x, p);
    if (!needsGrad(x)) return out;
    const sx = x.retainForBackward();
    // d/dx x^p = p x^(p-1), and exactly 0 for p = 0 (torch)
    return record(out, 'pow', [x], (g) => {
      if (p === 0) return [rawAffine('pow', g, 0, 0)];
      const t = rawPowScalar('pow', sx, p - 1);
      const d = rawAffine('pow', t, p, 0);
      t.dispose();
      const r = rawBinary('pow', BinaryOp.Mul, g, d);
      d.dispose();
      return [r];
    }, [sx]);
  }
  const out = rawBinaryOperand('pow', BinaryOp.Pow, ta, tb);
  const aT = ta instanceof Tensor ? ta : null;
  if (!needsGrad(aT, tb)) return out;
  const sa = aT ? aT.retainForBackward() : null;
  const sb = tb.retainForBackward();
  const so = tb.requiresGrad ? out.retainForBackward() : null;
  const saved = [sa, sb, so].filter((t): t is Tensor<'f32'> => t !== null);
  const base = ta;
  return record(out, 'pow', [aT, tb], (g) => {
    let ga: Tensor<'f32'> | null = null, gb: Tensor<'f32'> | null = null;
    if (aT?.requiresGrad && sa) {
      // where(b == 0, 0, g * b * a^(b-1))
      const bm1 = rawAffine('pow', sb, 1, -1);
      const ap = rawBinary('pow', BinaryOp.Pow, sa, bm1);
      const d = rawBinary('pow', BinaryOp.Mul, sb, ap);
      const gd = rawBinary('pow', BinaryOp.Mul, g, d);
      const bz = rawBinaryOperand('pow', BinaryOp.Eq, sb, 0);
      const full = where(bz, 0, gd);
      for (const t of [bm1, ap, d, gd, bz]) t.dispose();
      ga = reduceGrad(full, aT.shape);
    }
    if (tb.requiresGrad && so) {
      // g * where(a == 0 & b >= 0, 0, out * log(a))
      let ol: Tensor<'f32'>;
      let zeroMask: Tensor<'f32'> | null = null;
      if (sa) {
        const la = rawUnary('pow', UnaryOp.Log, sa);
        ol = rawBinary('pow', BinaryOp.Mul, so, la);
        la.dispose();
        const az = rawBinaryOperand('pow', BinaryOp.Eq, sa, 0);
        const bn = rawBinaryOperand('pow', BinaryOp.Ge, sb, 0);
        zeroMask = rawBinary('pow', BinaryOp.Mul, az, bn);
        az.dispose();
        bn.dispose();
      } else {
        const c = base as number;
        ol = rawAffine('pow', so, Math.log(c), 0);
        if (c === 0) zeroMask = rawBinaryOperand('pow', BinaryOp.Ge, sb, 0);
      }
      let masked = ol;
      if (zeroMask) {
        masked = where(zeroMask, 0, ol);
        zeroMask.dispose();
        ol.dispose();
      }
      const gm = rawBinary('pow', BinaryOp.Mul, g, masked);
      masked.dispose();
      gb = reduceGrad(gm, tb.shape);
    }
    return [ga, gb];
  }, saved);
}

/** Shared by maximum and minimum: the gradient goes to the winner, half each on ties (torch). */
function extremum(op: 'maximum' | 'minimum', code: BinaryOp.Maximum | BinaryOp.Minimum, a: Operand, b: Operand): Tensor<'f32'> {
  const [ta, tb] = operands(op, a, b);
  const out = rawBinaryOperand(op, code, ta, tb);
  const aT = ta instanceof Tensor ? ta : null;
  const bT = tb instanceof Tensor ? tb : null;
  if (!needsGrad(aT, bT)) return out;
  const sa = aT ? aT.retainForBackward() : null;
  const sb = bT ? bT.retainForBackward() : null;
  const saved = [sa, sb].filter((t): t is Tensor<'f32'> => t !== null);
  const ca = ta, cb = tb;
  // a loses where a < b (maximum) or a > b (minimum); b loses on the opposite comparison.
  const loseA = code === BinaryOp.Maximum ? BinaryOp.Lt : BinaryOp.Gt;
  const loseB = code === BinaryOp.Maximum ? BinaryOp.Gt : BinaryOp.Lt;
  return record(out, op, [aT, bT], (g) => {
    const va = sa ?? (ca as number), vb = sb ?? (cb as number);
    const tie = rawBinaryOperand(op, BinaryOp.Eq, va, vb);
    const half = rawAffine(op, g, 0.5, 0);
    const h = where(tie, half, g);
    tie.dispose();
    half.dispose();
    const side = (lose: BinaryOp, shape: Shape): Tensor<'f32'> => {
      const m = rawBinaryOperand(op, lose, va, vb);
      const r = where(m, 0, h);
      m.dispose();
      return reduceGrad(r, shape);
    };
    const ga = aT?.requiresGrad ? side(loseA, aT.shape) : null;
    const gb = bT?.requiresGrad ? side(loseB, bT.shape) : null;
    h.dispose();
    return [ga, gb];
  }, saved);
}

/** Element-wise maximum (NaN propagates); the gradient goes to the larger operand, half each on ties. */
export function maximum(a: Operand, b: Operand): Tensor<'f32'> { return extremum('maximum', BinaryOp.Maximum, a, b); }
/** Element-wise minimum (NaN propagates); the gradient goes to the smaller operand, half each on ties. */
export function minimum(a: Operand, b: Operand): Tensor<'f32'> { return extremum('minimum', BinaryOp.Minimum, a, b); }

// ------------------------------------------------------------------------------------------------ comparisons
// f32 1/0 results with no gradient (like torch's bool results, but usable directly as masks and weights).

function compare(op: string, code: BinaryOp, a: Operand, b: Operand): Tensor<'f32'> {
  const [ta, tb] = operands(op, a, b);
  return rawBinaryOperand(op, code, ta, tb);
}

export function eq(a: Operand, b: Operand): Tensor<'f32'> { return compare('eq', BinaryOp.Eq, a, b); }
export function ne(a: Operand, b: Operand): Tensor<'f32'> { return compare('ne', BinaryOp.Ne, a, b); }
export function lt(a: Operand, b: Operand): Tensor<'f32'> { return compare('lt', BinaryOp.Lt, a, b); }
export function le(a: Operand, b: Operand): Tensor<'f32'> { return compare('le', BinaryOp.Le, a, b); }
export function gt(a: Operand, b: Operand): Tensor<'f32'> { return compare('gt', BinaryOp.Gt, a, b); }
export function ge(a: Operand, b: Operand): Tensor<'f32'> { return compare('ge', BinaryOp.Ge, a, b); }

// ------------------------------------------------------------------------------------------------ unary
// Which derivative reads the output y = f(x) rather than x (see unary_backward in native/cpu/elementwise.cc).
const USES_OUTPUT = new Set<UnaryOp>([UnaryOp.Exp, UnaryOp.Sqrt, UnaryOp.Tanh, UnaryOp.Sigmoid, UnaryOp.Reciprocal]);

function unary(op: string, code: UnaryOp, x: Tensor): Tensor<'f32'> {
  const t = checkF32(op, 'x', x);
  const out = rawUnary(op, code, t);
  if (!needsGrad(t)) return out;
  const saved = code === UnaryOp.Neg ? null : USES_OUTPUT.has(code) ? out.retainForBackward() : t.retainForBackward();
  return record(out, op, [t], (g) => {
    const dx = Tensor._empty(t.shape, 'f32', t.device);
    const s = saved ?? g;   // the kernel reads x or y as it needs; Neg reads neither
    binding().unaryBackward(code, dx._h(op), dx._offset, g._h(op), g._offset, s._h(op), s._offset, s._h(op), s._offset,
      t.size);
    return [dx];
  }, saved ? [saved] : []);
}

export function neg(x: Tensor): Tensor<'f32'> { return unary('neg', UnaryOp.Neg, x); }
export function exp(x: Tensor): Tensor<'f32'> { return unary('exp', UnaryOp.Exp, x); }
export function log(x: Tensor): Tensor<'f32'> { return unary('log', UnaryOp.Log, x); }
export function sqrt(x: Tensor): Tensor<'f32'> { return unary('sqrt', UnaryOp.Sqrt, x); }
export function abs(x: Tensor): Tensor<'f32'> { return unary('abs', UnaryOp.Abs, x); }
export function square(x: Tensor): Tensor<'f32'> { return unary('square', UnaryOp.Square, x); }
export function tanh(x: Tensor): Tensor<'f32'> { return unary('tanh', UnaryOp.Tanh, x); }
export function sigmoid(x: Tensor): Tensor<'f32'> { return unary('sigmoid', UnaryOp.Sigmoid, x); }
export function relu(x: Tensor): Tensor<'f32'> { return unary('relu', UnaryOp.Relu, x); }
export function silu(x: Tensor): Tensor<'f32'> { return unary('silu', UnaryOp.Silu, x); }
export function reciprocal(x: Tensor): Tensor<'f32'> { return unary('reciprocal', UnaryOp.Reciprocal, x); }
export function sin(x: Tensor): Tensor<'f32'> { return unary('sin', UnaryOp.Sin, x); }
export function cos(x: Tensor): Tensor<'f32'> { return unary('cos', UnaryOp.Cos, x); }

/**
 * GELU. approximate 'none' (default): 0.5 x (1 + erf(x / sqrt 2)); 'tanh': PyTorch's tanh approximation
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 */
export function gelu(x: Tensor, opts?: GeluOptions): Tensor<'f32'> {
  if (opts !== undefined && (opts === null || typeof opts !== 'object')) {
    throw new TypeError(`gelu: options must be an object, got ${describe(opts)}`);
  }
  const approx = opts?.approximate ?? 'none';
  if (approx !== 'none' && approx !== 'tanh') {
    throw new TypeError(`gelu: approximate must be 'none' or 'tanh', got ${describe(approx)}`);
  }
  return unary('gelu', approx === 'tanh' ? UnaryOp.GeluTanh : UnaryOp.GeluErf, x);
}

// ------------------------------------------------------------------------------------------------ where

/**
 * where(cond, a, b): a where cond is nonzero, else b. cond is f32 or i32; a and b are f32 tensors or numbers;
 * all three broadcast together. Gradients flow to a and b (summed back to their shapes).
 */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor<'f32'> {
  const c = checkTensor('where', 'cond', cond);
  if (c.dtype !== 'f32' && c.dtype !== 'i32') {
    throw new TypeError(`where: cond must be f32 or i32 (nonzero = true), got ${c.dtype} ${shapeStr(c.shape)}`);
  }
  const ta = checkOperand('where', 'a', a);
  const tb = checkOperand('where', 'b', b);
  for (const t of [ta, tb]) if (t instanceof Tensor) checkSameDevice('where', c, t);
  const sa: Shape = ta instanceof Tensor ? ta.shape : [];
  const sb: Shape = tb instanceof Tensor ? tb.shape : [];
  let shape: number[];
  try {
    shape = broadcastShapes('where', broadcastShapes('where', c.shape, sa), sb);
  } catch {
    throw new Error(`where: cond ${shapeStr(c.shape)}, a ${shapeStr(sa)} and b ${shapeStr(sb)} cannot be broadcast together`);
  }
  const A = typeof ta === 'number' ? scalarTensor(ta, c.device) : ta;
  const B = typeof tb === 'number' ? scalarTensor(tb, c.device) : tb;
  const out = Tensor._empty(shape, 'f32', c.device);
  try {
    binding().where(out._h('where'), out._offset, c._h('where'), c._offset, c.dtype === 'i32', A._h('where'), A._offset,
      B._h('where'), B._offset, shape, broadcastStrides(c.shape, shape), broadcastStrides(A.shape, shape),
      broadcastStrides(B.shape, shape));
  } catch (e) {
    out.dispose();
    throw e;
  } finally {
    if (A !== ta) A.dispose();
    if (B !== tb) B.dispose();
  }
  const aT = ta instanceof Tensor ? ta : null;
  const bT = tb instanceof Tensor ? tb : null;
  if (!needsGrad(aT, bT)) return out;
  const sc = c.retainForBackward();
  return record(out, 'where', [aT, bT], (g) => [
    aT?.requiresGrad ? reduceGrad(where(sc, g, 0), aT.shape) : null,
    bT?.requiresGrad ? reduceGrad(where(sc, 0, g), bT.shape) : null,
  ], [sc]);
}

/** x with `value` wherever mask is nonzero (mask f32 or i32, broadcast to x's shape); like torch.masked_fill. */
export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor<'f32'> {
  const t = checkF32('maskedFill', 'x', x);
  const m = checkTensor('maskedFill', 'mask', mask);
  if (typeof value !== 'number') throw new TypeError(`maskedFill: value must be a number, got ${describe(value)}`);
  let ok = m.ndim <= t.ndim;
  if (ok) {
    try {
      ok = sameShape(broadcastShapes('maskedFill', t.shape, m.shape), t.shape);
    } catch {
      ok = false;
    }
  }
  if (!ok) throw new Error(`maskedFill: mask ${shapeStr(m.shape)} cannot be broadcast to x ${shapeStr(t.shape)}`);
  if (m.dtype !== 'f32' && m.dtype !== 'i32') {
    throw new TypeError(`maskedFill: mask must be f32 or i32 (nonzero = fill), got ${m.dtype} ${shapeStr(m.shape)}`);
  }
  return where(m, value, t);
}

// ------------------------------------------------------------------------------------------------ dropout

/**
 * Inverted dropout: in training, zero each element with probability p and scale the rest by 1/(1-p); the
 * identity when not training or p = 0. The mask is never stored: the backward regenerates it from the
 * random stream (seed, offset) recorded here, so `ml.manualSeed` makes it reproducible.
 */
export function dropout(x: Tensor, p: number, training = true): Tensor<'f32'> {
  const t = checkF32('dropout', 'x', x);
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw new RangeError(`dropout: p must be in [0, 1], got ${describe(p)}`);
  if (typeof training !== 'boolean') throw new TypeError(`dropout: training must be a boolean, got ${describe(training)}`);
  if (!training || p === 0) return record(t._view(t.shape), 'dropout', [t], (g) => [pass(g)]);
  const { seed, offset } = takeRandom(t.size);
  const out = Tensor._empty(t.shape, 'f32', t.device);
  binding().dropout(out._h('dropout'), out._offset, t._h('dropout'), t._offset, t.size, p, seed, offset);
  return record(out, 'dropout', [t], (g) => {
    const dx = Tensor._empty(t.shape, 'f32', t.device);
    binding().dropoutBackward(dx._h('dropout'), dx._offset, g._h('dropout'), g._offset, t.size, p, seed, offset);
    return [dx];
  });
}
