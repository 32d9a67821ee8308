/**
 * The native boundary: one typed interface for everything the addon exports, and the loader.
 *
 * Tensor arguments travel as two numbers, a storage handle and an element offset (`h, off`). Handles are
 * branded numbers naming a slot in the addon's storage table; the addon validates every handle, offset and
 * size, so a stale or forged handle throws instead of touching memory. Enum arguments mirror
 * native/include/modalab/kernels.h (UnaryOp, BinaryOp, ReduceOp, DType) and must stay in the same order.
 *
 * Loading order (as sharp and better-sqlite3 do): MODALAB_ADDON (an explicit path), then build/Release,
 * then build-debug/Debug. If none loads, one Error lists each attempt and the command that fixes it.
 */
import * as fs from 'fs';
import * as path from 'path';

declare const handleBrand: unique symbol;
/** A storage handle: generation * 2^24 + slot. Never a pointer. */
export type Handle = number & { readonly [handleBrand]: 'Handle' };
type H = Handle;

export const enum UnaryOp {
  Neg = 0, Exp, Log, Sqrt, Tanh, Sigmoid, Relu, GeluErf, GeluTanh, Silu, Abs, Square, Reciprocal, Sin, Cos,
}
export const enum BinaryOp { Add = 0, Sub, Mul, Div, Pow, Maximum, Minimum, Eq, Lt, Gt, Le, Ge, Ne }
export const enum ReduceOp { Sum = 0, Mean, Max, Min }
export const enum DTypeCode { F32 = 0, F16 = 1, BF16 = 2, I32 = 3 }

export interface Binding {
  // ---- storage (native/bindings/storage.cc)
  /** device 0 = host memory, 1 = GPU memory (CUDA builds on a machine with a GPU; otherwise it throws). */
  alloc(nbytes: number, zero: boolean, device?: 0 | 1): H;
  free(h: H): void;
  write(h: H, byteOffset: number, data: ArrayBufferView): void;
  read(h: H, byteOffset: number, nbytes: number): ArrayBuffer;
  /** Between any two buffers, host or device. */
  copy(dst: H, dstByteOffset: number, src: H, srcByteOffset: number, nbytes: number): void;
  isLive(h: H): boolean;
  stats(): { buffers: number; bytes: number; cudaBuffers: number; cudaBytes: number };
  setNumThreads(n: number): void;
  backendInfo(): { blas: string; simd: string; threads: number; cuda: boolean; cudaBuild: boolean };
  cudaInfo(): { build: boolean; available: boolean; device: string; runtime: number; driver: number;
    cublas: boolean; reserved: number; inUse: number };
  cudaSynchronize(): void;
  cudaEmptyCache(): void;

  // ---- creation and casts (native/bindings/creation.cc)
  fillF32(out: H, off: number, n: number, value: number): void;
  fillI32(out: H, off: number, n: number, value: number): void;
  arangeF32(out: H, off: number, n: number, start: number, step: number): void;
  arangeI32(out: H, off: number, n: number, start: number, step: number): void;
  /** seed and offset are exact integers below 2^53. */
  randUniform(out: H, off: number, n: number, seed: number, offset: number, lo: number, hi: number): void;
  randNormal(out: H, off: number, n: number, seed: number, offset: number, mean: number, std: number): void;
  cast(out: H, off: number, outDtype: DTypeCode, x: H, xoff: number, xDtype: DTypeCode, n: number): void;

  // ---- elementwise (native/bindings/elementwise.cc)
  unary(op: UnaryOp, y: H, yoff: number, x: H, xoff: number, n: number): void;
  /** dx = dy * f'(x); y = f(x) is passed for the ops whose derivative uses it (may be the same as x otherwise). */
  unaryBackward(op: UnaryOp, dx: H, dxoff: number, dy: H, dyoff: number, x: H, xoff: number, y: H, yoff: number,
    n: number): void;
  affine(y: H, yoff: number, x: H, xoff: number, n: number, scale: number, shift: number): void;
  powScalar(y: H, yoff: number, x: H, xoff: number, n: number, p: number): void;
  /** shape is the output shape; astride/bstride the element strides of a and b over it (0 = broadcast). */
  binary(op: BinaryOp, out: H, ooff: number, a: H, aoff: number, b: H, boff: number, shape: number[],
    astride: number[], bstride: number[]): void;
  /** binary for same-shape contiguous operands of n elements (no arrays cross the boundary). */
  binaryContig(op: BinaryOp, out: H, ooff: number, a: H, aoff: number, b: H, boff: number, n: number): void;
  where(out: H, ooff: number, cond: H, coff: number, condIsI32: boolean, a: H, aoff: number, b: H, boff: number,
    shape: number[], cstride: number[], astride: number[], bstride: number[]): void;
  dropout(y: H, yoff: number, x: H, xoff: number, n: number, p: number, seed: number, offset: number): void;
  dropoutBackward(dx: H, dxoff: number, dy: H, dyoff: number, n: number, p: number, seed: number,
    offset: number): void;

  // ---- reductions (native/bindings/reduce.cc)
  /** x (outer, len, inner) -> out (outer, inner); argidx (i32, outer*inner) or null for Max/Min. */
  reduce(op: ReduceOp, out: H, ooff: number, argidx: H | null, aoff: number, x: H, xoff: number, outer: number,
    len: number, inner: number): void;
  broadcastAxis(dx: H, dxoff: number, dy: H, dyoff: number, outer: number, len: number, inner: number,
    scale: number): void;
  scatterArg(dx: H, dxoff: number, dy: H, dyoff: number, argidx: H, aoff: number, outer: number, len: number,
    inner: number): void;
  sumSquares(x: H, xoff: number, n: number): number;
  allFinite(x: H, xoff: number, n: number): boolean;

  // ---- softmax (native/bindings/softmax.cc)
  softmax(y: H, yoff: number, x: H, xoff: number, outer: number, len: number, inner: number, log: boolean): void;
  softmaxBackward(dx: H, dxoff: number, dy: H, dyoff: number, y: H, yoff: number, outer: number, len: number,
    inner: number, log: boolean): void;

  // ---- layerNorm (native/bindings/layernorm.cc); weight/bias may be null
  layerNorm(y: H, yoff: number, mean: H, moff: number, rstd: H, roff: number, x: H, xoff: number,
    w: H | null, woff: number, b: H | null, boff: number, rows: number, C: number, eps: number): void;
  layerNormBackward(dx: H, dxoff: number, dw: H | null, dwoff: number, db: H | null, dboff: number, dy: H,
    dyoff: number, x: H, xoff: number, w: H | null, woff: number, mean: H, moff: number, rstd: H, roff: number,
    rows: number, C: number): void;

  // ---- cross entropy (native/bindings/loss.cc); throws naming the row on a target outside [0, C)
  crossEntropy(loss: H, loff: number, lse: H, lseoff: number, logits: H, xoff: number, targets: H, toff: number,
    N: number, C: number, ignoreIndex: number, smoothing: number): void;
  crossEntropyBackward(dlogits: H, dxoff: number, dloss: H, dloff: number, logits: H, xoff: number, lse: H,
    lseoff: number, targets: H, toff: number, N: number, C: number, ignoreIndex: number, smoothing: number): void;

  // ---- matmul (native/bindings/matmul.cc)
  /** c (batch..., M, N) = alpha * op(a) @ op(b) + beta * c; bshape/astride/bstride describe the batch axes. */
  matmul(c: H, coff: number, a: H, aoff: number, b: H, boff: number, M: number, N: number, K: number,
    transA: boolean, transB: boolean, bshape: number[], astride: number[], bstride: number[], alpha: number,
    beta: number): void;

  // ---- half-precision matmul (native/bindings/matmul_half.cc): c f32, a and b both dtype (F16 or BF16)
  matmulHalf(c: H, coff: number, a: H, aoff: number, b: H, boff: number, dtype: DTypeCode, M: number, N: number,
    K: number, transA: boolean, transB: boolean, bshape: number[], astride: number[], bstride: number[],
    alpha: number, beta: number): void;
  /** The instruction paths the cast and half GEMM kernels picked on this processor. */
  halfPaths(): { cast: string; gemmBf16: string; gemmF16: string };

  // ---- layout (native/bindings/layout.cc); elsize in bytes (2 or 4)
  copyStrided(out: H, ooff: number, x: H, xoff: number, shape: number[], xstride: number[], elsize: number): void;
  sliceCopy(out: H, ooff: number, x: H, xoff: number, outer: number, xlen: number, inner: number, start: number,
    len: number, elsize: number): void;
  sliceAssign(out: H, ooff: number, x: H, xoff: number, outer: number, outlen: number, inner: number,
    start: number, len: number, elsize: number): void;
  sliceAddBackward(dx: H, dxoff: number, dy: H, dyoff: number, outer: number, xlen: number, inner: number,
    start: number, len: number): void;

  // ---- indexing (native/bindings/indexing.cc); bad indices throw naming the position and the bound
  indexSelect(out: H, ooff: number, x: H, xoff: number, idx: H, ioff: number, outer: number, xlen: number,
    inner: number, nidx: number, elsize: number): void;
  indexSelectBackward(dx: H, dxoff: number, dy: H, dyoff: number, idx: H, ioff: number, outer: number,
    xlen: number, inner: number, nidx: number): void;
  gather(out: H, ooff: number, x: H, xoff: number, idx: H, ioff: number, outer: number, xlen: number,
    inner: number, glen: number): void;
  gatherBackward(dx: H, dxoff: number, dy: H, dyoff: number, idx: H, ioff: number, outer: number, xlen: number,
    inner: number, glen: number): void;
  embedding(y: H, yoff: number, table: H, toff: number, idx: H, ioff: number, n: number, V: number,
    C: number): void;
  embeddingBackward(dtable: H, dtoff: number, dy: H, dyoff: number, idx: H, ioff: number, n: number, V: number,
    C: number): void;

  // ---- optimizers (native/bindings/optim.cc)
  adamw(p: H, poff: number, m: H, moff: number, v: H, voff: number, g: H, goff: number, n: number, lr: number,
    beta1: number, beta2: number, eps: number, weightDecay: number, biasC1: number, biasC2: number): void;
  sgd(p: H, poff: number, buf: H | null, boff: number, g: H, goff: number, n: number, lr: number, momentum: number,
    dampening: number, weightDecay: number, nesterov: boolean, firstStep: boolean): void;
  scaleInplace(x: H, xoff: number, n: number, s: number): void;
  addInplace(x: H, xoff: number, y: H, yoff: number, n: number, alpha: number): void;

  // ---- fused attention (native/bindings/attention.cc). q [B,H,N,D], k [B,H,M,D], v [B,H,M,Dv] share `dtype`
  // (f32, f16 or bf16); out [B,H,N,Dv] is outDtype (dtype or f32); stats [B,H,N,2] f32 (row max and log-sum) is
  // saved for the backward;
  // mask [B,M] (f32 or i32, nonzero = padded) may be null; window 0 = none. dq, dk, dv, dout are f32 (overwritten).
  attention(out: H, ooff: number, stats: H, soff: number, q: H, qoff: number, k: H, koff: number, v: H, voff: number,
    dtype: DTypeCode, outDtype: DTypeCode, mask: H | null, moff: number, maskIsI32: boolean, B: number, Hh: number,
    N: number, M: number, D: number, Dv: number, scale: number, causal: boolean, window: number): void;
  attentionBackward(dq: H, dqoff: number, dk: H, dkoff: number, dv: H, dvoff: number, dout: H, dooff: number,
    q: H, qoff: number, k: H, koff: number, v: H, voff: number, stats: H, soff: number, dtype: DTypeCode,
    mask: H | null, moff: number, maskIsI32: boolean, B: number, Hh: number, N: number, M: number, D: number,
    Dv: number, scale: number, causal: boolean, window: number): void;

  // ---- infoNCE (native/bindings/infonce.cc); logitScale is a 1-element f32 tensor read by the addon;
  // stats (4N) is written by the forward and read by the backward; da/db/dlogitScale may be null (not computed)
  infoNCE(loss: H, loff: number, stats: H, soff: number, a: H, aoff: number, b: H, boff: number, logitScale: H,
    lsoff: number, N: number, D: number): void;
  infoNCEBackward(da: H | null, daoff: number, db: H | null, dboff: number, dlogitScale: H | null, dlsoff: number,
    dloss: H, dloff: number, a: H, aoff: number, b: H, boff: number, stats: H, soff: number, logitScale: H,
    lsoff: number, N: number, D: number): void;
}

let cached: Binding | null = null;

/** The package root: the nearest directory above this file whose package.json is modalab's. */
function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pj = path.join(dir, 'package.json');
    try {
      if (JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'modalab') return dir;
    } catch {
      // no package.json here, or not readable: keep walking up
    }
    const up = path.dirname(dir);
    if (up === dir) return path.resolve(__dirname, '..', '..');
    dir = up;
  }
}

/** Candidate paths in the order they are tried. */
export function addonCandidates(): string[] {
  const root = packageRoot();
  const out: string[] = [];
  if (process.env.MODALAB_ADDON) out.push(path.resolve(process.env.MODALAB_ADDON));
  out.push(path.join(root, 'build', 'Release', 'modalab.node'));
  out.push(path.join(root, 'build-debug', 'Debug', 'modalab.node'));
  return out;
}

/** Load the addon once; throws one Error that lists every attempt and how to fix it. */
export function binding(): Binding {
  if (cached) return cached;
  const tried: string[] = [];
  const explicit = process.env.MODALAB_ADDON;
  for (const p of addonCandidates()) {
    if (!fs.existsSync(p)) {
      tried.push(`  ${p}: not found`);
    } else {
      try {
        // eslint-disable-next-line @typescript-eslint/no-var-requires
        cached = require(p) as Binding;
        return cached;
      } catch (e) {
        tried.push(`  ${p}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    // An explicit MODALAB_ADDON that does not load is an error, not a reason to quietly use another build.
    if (explicit && tried.length === 1) break;
  }
  throw new Error(
    'modalab: the native addon could not be loaded.\n' + tried.join('\n') + '\n' +
    (explicit ? 'MODALAB_ADDON is set: point it at a built modalab.node, or unset it to use build/Release.\n' : '') +
    'Build it with `npm run build:native` (needs cmake, g++ and, for fast GEMM, libopenblas-dev).');
}
