/**
 * Fuzzing the public API with wrong arguments: "nothing a caller passes may crash the process".
 *
 * Every exported op (and creation function) is called a few dozen times, seeded, with arguments that are mostly
 * plausible but wrong in one way or another: wrong shapes, wrong dtypes (i32 or f16 where f32 is expected), NaN
 * and inf data, empty tensors ([0, 3]), disposed tensors, views at an offset, numbers / strings / undefined /
 * null / objects / arrays instead of tensors, negative and huge axes, out-of-range indices, bad options. A call
 * must return a live Tensor (then its backward is run too, when it needs grad, under the same rule) or throw an
 * Error; anything else is a violation.
 *
 * The calls run in a CHILD PROCESS (this same file, started with MODALAB_FUZZ_CHILD set), so that a native crash
 * (segfault, abort) shows up here as a failed test naming the last call made, instead of killing the runner.
 * Each call draws its arguments from its own seeded generator, so after a crash the parent restarts the child
 * just past the crashing call and keeps going: one crash does not hide the next.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as ml from '../src/index';

const SEED = 20240611;
const CALLS_PER_OP = 60;
const MAX_CRASHES = 8;
const CHILD_TIMEOUT_MS = 180_000;

// ------------------------------------------------------------------------------------------------ generators

type Rnd = () => number;
interface Arg { v: unknown; d: string }

function fnv(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** xorshift32 seeded per call: independent, reproducible streams. */
function rng(seed: number): Rnd {
  let s = seed || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

const pick = <T>(r: Rnd, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];

/**
 * One line to stdout, synchronously (a crash right after must not lose it). stdout is a pipe to the parent, which
 * may be non-blocking: when the parent is slow to read (a loaded machine) a write fails with EAGAIN, so wait a
 * millisecond and write the rest.
 */
function writeLine(line: string): void {
  const buf = Buffer.from(line + '\n');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(1, buf, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

const SHAPES: number[][] = [[2, 3], [3, 1, 4], [2, 4], [4], [], [0, 3], [3, 0], [1], [2, 3, 4], [1, 1], [5, 33],
  [2, 1, 3, 4], [4, 3], [3, 2], [6], [0]];
const DTYPES = ['f32', 'f32', 'f32', 'f16', 'bf16', 'i32'] as const;

/** Made during a call; disposed after it. */
let made: ml.Tensor[] = [];

function keep<T extends ml.Tensor>(t: T): T {
  made.push(t);
  return t;
}

function tensorArg(r: Rnd, o: { shape?: number[]; dtype?: string; intRange?: [number, number] } = {}): Arg {
  const shape = o.shape ?? pick(r, SHAPES);
  const dtype = (o.dtype ?? pick(r, DTYPES)) as ml.DType;
  const n = shape.reduce((a, b) => a * b, 1);
  const flags: string[] = [];
  let t: ml.Tensor;
  if (dtype === 'i32') {
    const [lo, hi] = o.intRange ?? [-3, 6];
    const data = Int32Array.from({ length: n }, () => lo + Math.floor(r() * (hi - lo)));
    if (n > 0 && r() < 0.1) { data[Math.floor(r() * n)] = pick(r, [2147483647, -2147483648, 1e9]); flags.push('huge index'); }
    t = keep(ml.tensor(data, shape, { dtype: 'i32' }));
  } else {
    const data = Float32Array.from({ length: n }, () => 4 * r() - 2);
    if (n > 0 && r() < 0.15) {
      for (let k = 0; k < 1 + n / 4; k++) data[Math.floor(r() * n)] = pick(r, [NaN, Infinity, -Infinity, 3e38]);
      flags.push('nan/inf');
    }
    const requiresGrad = r() < 0.4;
    if (requiresGrad) flags.push('grad');
    t = keep(ml.tensor(data, shape, { dtype, requiresGrad }));
  }
  // A view at an element offset (if slicing works yet): exercises offset handling in every binding.
  if (shape.length > 0 && shape[0] > 1 && r() < 0.1) {
    try {
      t = keep(ml.slice(t, 0, 1));
      flags.push('view@offset');
    } catch { /* slice not available: keep the plain tensor */ }
  }
  if (r() < 0.05) { t.dispose(); flags.push('disposed'); }
  return { v: t, d: `${dtype}[${t.shape.join(',')}]${flags.length ? '(' + flags.join(',') + ')' : ''}` };
}

const lit = (v: unknown, d?: string): Arg => ({ v, d: d ?? show(v) });

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'symbol') return 'Symbol()';
  if (typeof v === 'function') return 'function';
  if (v instanceof ml.Tensor) return `Tensor[${v.shape.join(',')}]`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${(v as unknown as ArrayLike<number>).length})`;
  if (typeof v === 'number' || typeof v === 'boolean' || v == null) return String(v);
  if (Array.isArray(v) && v.some((x) => x instanceof ml.Tensor || typeof x === 'function')) return `[${v.map(show).join(', ')}]`;
  try {
    const s = JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isFinite(x) ? String(x) : x));
    return s === undefined ? String(v) : s.length > 80 ? s.slice(0, 77) + '...' : s;
  } catch {
    return Object.prototype.toString.call(v);
  }
}

/** Anything but the right thing. */
function junk(r: Rnd): Arg {
  const pool: Array<() => unknown> = [
    () => 0, () => 1, () => -1, () => 2.5, () => NaN, () => Infinity, () => -Infinity, () => 1e300, () => 2 ** 31,
    () => '', () => 'f32', () => 'abc', () => undefined, () => null, () => ({}), () => [], () => [1, 2, 3],
    () => [[1, 2], [3]], () => ({ shape: [2, 3], dtype: 'f32' }), () => (() => 1), () => true, () => Symbol('s'),
    () => 10n, () => new Float32Array(3), () => [ml.ones([2])].map(keep), () => ({ length: 3 }),
  ];
  return lit(pick(r, pool)());
}

// ---- files for load / loadHeader / save: a valid safetensors file, mutated.

let tmpDir = '';
let fileNo = 0;
let baseFile: Buffer | null = null;

function base(): Buffer {
  if (!baseFile) {
    const f = path.join(tmpDir, 'base.safetensors');
    ml.tidy(() => ml.save(f, { w: ml.ones([3, 4]), ids: ml.tensor(Int32Array.from([1, 2, 3]), [3], { dtype: 'i32' }),
      h: ml.ones([2, 2], { dtype: 'bf16' }), s: ml.tensor(2.5) }, { note: 'fuzz' }));
    baseFile = fs.readFileSync(f);
  }
  return baseFile;
}

/** One way of breaking a safetensors file, applied to the valid base file. */
function mutateFile(r: Rnd): { bytes: Buffer | null; d: string } {
  const b = Buffer.from(base());
  const n = Number(b.readBigUInt64LE(0));
  const header = JSON.parse(b.subarray(8, 8 + n).toString('utf8'));
  const withHeader = (h: unknown, pad = true): Buffer => {
    let js = Buffer.from(JSON.stringify(h));
    if (pad) js = Buffer.concat([js, Buffer.alloc((8 - (js.length % 8)) % 8, 0x20)]);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(js.length));
    return Buffer.concat([len, js, b.subarray(8 + n)]);
  };
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const victim = pick(r, names);
  const choice = Math.floor(r() * 14);
  switch (choice) {
    case 0: return { bytes: b.subarray(0, Math.floor(r() * b.length)), d: 'truncated' };
    case 1: { const i = Math.floor(r() * b.length); b[i] ^= 1 + Math.floor(r() * 255); return { bytes: b, d: `byte ${i} flipped` }; }
    case 2: { b.writeBigUInt64LE(pick(r, [0n, 1n, 7n, 2n ** 63n, 2n ** 64n - 1n, BigInt(b.length), 100_000_001n]), 0); return { bytes: b, d: 'bad header length' }; }
    case 3: return { bytes: Buffer.alloc(Math.floor(r() * 64), Math.floor(r() * 256)), d: 'short junk' };
    case 4: return { bytes: Buffer.alloc(0), d: 'empty' };
    case 5: header[victim].dtype = pick(r, ['F64', 'XYZ', 'U8', '', 5, null]); return { bytes: withHeader(header), d: `dtype of ${victim}` };
    case 6: header[victim].shape = pick(r, [[1e9], [-1], [2.5], [], [2 ** 53], 'abc', [3, 4, 1e9], null]); return { bytes: withHeader(header), d: `shape of ${victim}` };
    case 7: header[victim].data_offsets = pick(r, [[0, 1e12], [8, 4], [0, 0], [-4, 4], [0, 2 ** 60], [1.5, 4], 'x', [0]]); return { bytes: withHeader(header), d: `data_offsets of ${victim}` };
    case 8: { // two tensors overlapping
      const [a, c] = [names[0], names[1]];
      header[c].data_offsets = header[a].data_offsets.slice();
      return { bytes: withHeader(header), d: 'overlapping tensors' };
    }
    case 9: header.__metadata__ = pick(r, [{ a: 5 }, 'x', [1], null, { b: { c: 1 } }]); return { bytes: withHeader(header), d: 'bad metadata' };
    case 10: return { bytes: withHeader(pick(r, [[], 'x', 5, null, {}])), d: 'header not an object' };
    case 11: { const len = Buffer.alloc(8); len.writeBigUInt64LE(5n); return { bytes: Buffer.concat([len, Buffer.from('{"a":')]), d: 'header not JSON' }; }
    case 12: return { bytes: Buffer.concat([b, Buffer.alloc(1 + Math.floor(r() * 9))]), d: 'trailing bytes' };
    default: return { bytes: null, d: 'no such file' };
  }
}

function fileArg(r: Rnd): Arg {
  if (r() < 0.1) return lit(pick(r, [tmpDir, '', path.join(tmpDir, 'missing', 'x.safetensors'), 5, undefined, null]));
  const m = mutateFile(r);
  const f = path.join(tmpDir, `${fileNo++}.safetensors`);
  if (m.bytes) fs.writeFileSync(f, m.bytes);
  return { v: f, d: `<file: ${m.d}>` };
}

const AXES = [0, 1, 2, -1, -2, 3, -4, 100, -100, 1e9, 1.5, NaN, Infinity, '1', null, undefined, true];

const gens: Record<string, (r: Rnd, ctx: Arg[]) => Arg> = {
  tensor: (r) => tensorArg(r),
  f32: (r) => tensorArg(r, { dtype: r() < 0.8 ? 'f32' : undefined }),
  // Same shape as the previous tensor argument half the time, so that calls get past the shape checks.
  f32like: (r, ctx) => {
    const prev = ctx.find((a) => a.v instanceof ml.Tensor)?.v as ml.Tensor | undefined;
    return tensorArg(r, { shape: prev && r() < 0.5 ? [...prev.shape] : undefined, dtype: r() < 0.8 ? 'f32' : undefined });
  },
  operand: (r, ctx) => (r() < 0.25 ? lit(pick(r, [0.5, -2, 0, NaN, Infinity, 1e30])) : gens.f32like(r, ctx)),
  cond: (r, ctx) => tensorArg(r, { dtype: pick(r, ['f32', 'i32', 'f16']), intRange: [0, 2],
    shape: ctx.length === 0 && r() < 0.5 ? [2, 3] : undefined }),
  mask: (r, ctx) => gens.f32like(r, ctx),
  index: (r) => tensorArg(r, { dtype: r() < 0.85 ? 'i32' : 'f32', shape: pick(r, [[3], [2], [2, 3], [3, 2], [0], [], [4], [2, 3, 4]]) }),
  optTensor: (r) => (r() < 0.3 ? lit(null) : tensorArg(r, { shape: pick(r, [[3], [4], [33], [8], [2, 3]]) })),
  tensorList: (r) => {
    const n = pick(r, [0, 1, 2, 3]);
    const shape = pick(r, SHAPES);
    const items = Array.from({ length: n }, () => (r() < 0.1 ? junk(r) : tensorArg(r, { shape: r() < 0.6 ? shape : undefined })));
    return { v: items.map((a) => a.v), d: `[${items.map((a) => a.d).join(', ')}]` };
  },
  axis: (r) => lit(pick(r, AXES)),
  axes: (r) => (r() < 0.6 ? lit(pick(r, AXES)) : lit(pick(r, [[0, 1], [0, 0], [-1, 1], [], [5], [0, 'a'], [1.5], [0, 1, 2, 3, 4]]))),
  bool: (r) => lit(pick(r, [true, false, undefined, 'yes', 1, null])),
  number: (r) => lit(pick(r, [0, 1, -1, 0.5, NaN, Infinity, -Infinity, 1e30, 1.5, '0.5', undefined, -0, 1e-12])),
  prob: (r) => lit(pick(r, [0, 0.5, 1, -0.1, 1.5, NaN, 0.999999, '0.5', undefined])),
  int: (r) => lit(pick(r, [0, 1, -1, 2, 3, 100, -100, 1e9, 1.5, NaN, undefined, -0])),
  shape: (r) => lit(pick(r, [[2, 3], [6], [-1], [3, -1], [-1, -1], [0], [], [2.5], [NaN], [-5], [1e15, 1e15],
    [2 ** 26, 2 ** 26], 'abc', [[2]], new Array(40).fill(1), [3, 1], [2, 3, 4], [0, 3], [4, 3]])),
  shapeOpt: (r) => (r() < 0.4 ? lit(undefined) : gens.shape(r, [])),
  perm: (r) => lit(pick(r, [[0, 1], [1, 0], [2, 0, 1], [0, 0], [0, 1, 2, 3], [], [-1, 0], [0, 5], [1.5, 0], [0, 2, 1]])),
  dtype: (r) => lit(pick(r, ['f32', 'f16', 'bf16', 'i32', 'f64', '', undefined, 5, 'F32'])),
  device: (r) => lit(pick(r, ['cpu', 'cuda', 'gpu', undefined, 0])),
  geluOpts: (r) => lit(pick(r, [undefined, {}, { approximate: 'tanh' }, { approximate: 'none' }, { approximate: 'bogus' }, null, 5])),
  ceOpts: (r) => lit(pick(r, [undefined, {}, { reduction: 'sum' }, { reduction: 'none' }, { reduction: 'avg' },
    { ignoreIndex: 1 }, { ignoreIndex: 1.5 }, { ignoreIndex: -100 }, { labelSmoothing: 0.1 }, { labelSmoothing: -1 },
    { labelSmoothing: 2 }, { labelSmoothing: NaN }, null, 'mean'])),
  mmOpts: (r) => lit(pick(r, [undefined, {}, { transA: true }, { transB: true }, { transA: true, transB: true },
    { transA: 'yes' }, null, 3])),
  tensorOpts: (r) => lit(pick(r, [undefined, {}, { dtype: 'i32' }, { dtype: 'f16' }, { dtype: 'bf16' }, { dtype: 'f64' },
    { requiresGrad: true }, { dtype: 'i32', requiresGrad: true }, { device: 'cuda' }, { device: 'tpu' }, null, 'f32'])),
  data: (r) => lit(pick(r, [1, [1, 2, 3], [[1, 2], [3, 4]], [[1, 2], [3]], new Float32Array([1, NaN, Infinity]),
    new Int32Array([1, 2]), new Float64Array(4), new Uint8Array(6), [], [[]], 'abc', [true, false], [1, 'a'], NaN,
    [[[1]], [[2]]], [2 ** 40], null, undefined, { 0: 1 }])),
  qkv: (r, ctx) => {
    const prev = ctx.find((a) => a.v instanceof ml.Tensor)?.v as ml.Tensor | undefined;
    const shapes = [[1, 2, 3, 4], [2, 1, 3, 4], [1, 1, 0, 4], [1, 2, 5, 4], [2, 2, 3, 3], [1, 1, 1, 1], [2, 3, 4], [1, 2, 3, 0]];
    return tensorArg(r, { shape: prev && r() < 0.5 ? [...prev.shape] : pick(r, shapes), dtype: r() < 0.85 ? 'f32' : undefined });
  },
  sdpaOpts: (r) => {
    if (r() < 0.15) return junk(r);
    const o: Record<string, unknown> = {};
    const flags: string[] = [];
    if (r() < 0.5) { o.causal = pick(r, [true, false, 'yes', 1]); flags.push(`causal: ${show(o.causal)}`); }
    if (r() < 0.4) {
      const m = tensorArg(r, { shape: pick(r, [[1, 3], [2, 3], [1, 5], [2, 5], [5], [1, 0]]), dtype: pick(r, ['f32', 'i32', 'f16']), intRange: [0, 2] });
      o.keyPaddingMask = m.v; flags.push(`keyPaddingMask: ${m.d}`);
    }
    if (r() < 0.3) { o.scale = pick(r, [0.5, 0, -1, NaN, Infinity, 'x']); flags.push(`scale: ${show(o.scale)}`); }
    if (r() < 0.3) { o.dropout = pick(r, [0.1, 1, 1.5, -0.1, NaN]); o.training = r() < 0.5; flags.push(`dropout: ${show(o.dropout)}`); }
    if (r() < 0.3) { o.window = pick(r, [1, 2, 3, 0, -1, 2.5, 1e9, 'x', null]); flags.push(`window: ${show(o.window)}`); }
    return { v: o, d: `{${flags.join(', ')}}` };
  },
  activation: (r) => lit(pick(r, ['gelu', 'gelu_tanh', 'relu', 'silu', 'tanh', '', undefined, 5])),
  gradParams: (r) => {
    if (r() < 0.15) return junk(r);
    const items = Array.from({ length: pick(r, [0, 1, 2, 3]) }, () => {
      const a = tensorArg(r, { dtype: r() < 0.85 ? 'f32' : undefined });
      const t = a.v as ml.Tensor;
      if (!t.isDisposed && r() < 0.8) {
        // A gradient of the right shape, mostly; sometimes of another shape or full of NaN.
        const shape = r() < 0.85 ? [...t.shape] : pick(r, SHAPES);
        t.grad = ml.full(shape, pick(r, [0.5, -2, NaN, Infinity, 1e30]));
        a.d += `{grad ${JSON.stringify(shape)}}`;
      }
      return a;
    });
    return { v: r() < 0.2 ? new Set(items.map((a) => a.v)) : items.map((a) => a.v), d: `[${items.map((a) => a.d).join(', ')}]` };
  },
  clipOpts: (r) => lit(pick(r, [undefined, {}, { errorIfNonfinite: true }, { errorIfNonfinite: 'yes' }, null, 3])),
  file: (r) => fileArg(r),
  outPath: (r) => lit(r() < 0.8 ? path.join(tmpDir, `out${fileNo++}.safetensors`)
    : pick(r, [tmpDir, path.join(tmpDir, 'missing', 'x.safetensors'), '', 5, null])),
  stateDict: (r) => {
    if (r() < 0.3) return junk(r);
    const entries = Array.from({ length: pick(r, [0, 1, 2]) }, (_, k) => [pick(r, ['a', 'b.c', '', '__metadata__', `t${k}`]),
      r() < 0.8 ? tensorArg(r) : junk(r)] as const);
    return { v: Object.fromEntries(entries.map(([k, a]) => [k, a.v])), d: `{${entries.map(([k, a]) => `${k}: ${a.d}`).join(', ')}}` };
  },
  metadata: (r) => lit(pick(r, [undefined, {}, { a: 'b' }, { a: 5 }, { __proto__: 'x' }, 'x', null, [1]])),
  // A small model for the LoRA functions: plain, already wrapped, a lone LoRALinear, one with a freed parameter, or junk.
  loraModel: (r) => {
    if (r() < 0.2) return junk(r);
    const kind = pick(r, ['mlp', 'block', 'wrapped', 'lone', 'linear', 'freed']);
    let m: ml.nn.Module;
    if (kind === 'block' || kind === 'wrapped') m = new ml.nn.TransformerBlock(4, 2);
    else if (kind === 'lone') m = new ml.nn.LoRALinear(new ml.nn.Linear(3, 2), { rank: 1 });
    else if (kind === 'linear') m = new ml.nn.Linear(3, 2);
    else m = new ml.nn.MLP([3, 4, 2]);
    if (kind === 'wrapped') ml.nn.applyLora(m, { rank: 2, targets: ['attn.qkv', /mlp/] });
    if (kind === 'freed') m.parameters()[Math.floor(r() * 4)].dispose();
    m.parameters().forEach(keep);   // freed after the call even if the harness swaps the model for junk
    return { v: m, d: `<${kind} ${m.constructor.name}>` };
  },
  loraOpts: (r, ctx) => {
    if (r() < 0.15) return junk(r);
    // Often options that fit the model (every Linear), so that the success path and its cleanup run too.
    if (ctx[0]?.v instanceof ml.nn.Module && r() < 0.4) return lit({ rank: pick(r, [1, 3]), alpha: 2, dropout: 0.1, targets: [/./] });
    const o: Record<string, unknown> = { rank: pick(r, [1, 2, 2, 4, 4, 0, -1, 1.5, NaN, '2', undefined]) };
    if (r() < 0.5) o.alpha = pick(r, [undefined, 1, 16, 0, -1, NaN, Infinity, '8']);
    if (r() < 0.4) o.dropout = pick(r, [undefined, 0, 0.1, 1, -0.1, NaN]);
    o.targets = pick(r, [['layers.0'], ['qkv'], [/layers/], [/mlp/, 'attn.proj'], [], ['nope'], 'layers.0', [5], [''],
      [null], undefined, ['attn.qkv', 'attn.proj'], ['lora_A'], [/./g]]);
    if (r() < 0.3) o.freezeBase = pick(r, [undefined, true, false, 'yes']);
    return lit(o);
  },
  // Half the time the model's own adapter (cloned, sometimes with a tensor missing or of the wrong shape).
  loraState: (r, ctx) => {
    const m = ctx[0]?.v;
    if (m instanceof ml.nn.Module && r() < 0.5) {
      try {
        const entries = Object.entries(ml.nn.loraStateDict(m)).map(([k, t]) => [k, keep(r() < 0.15 ? ml.zeros([1]) : t.clone())] as const);
        if (r() < 0.2) entries.pop();
        return { v: Object.fromEntries(entries), d: `<adapter of the model: ${entries.length} tensors>` };
      } catch { /* no LoRA layers (or a freed one): fall through to a junk state dict */ }
    }
    return gens.stateDict(r, ctx);
  },
  anything: (r) => (r() < 0.5 ? junk(r) : lit(pick(r, [() => 1, () => ml.ones([1]), () => { throw new Error('inner'); }, () => 'x']))),
};

/** Each exported function and the kinds of its arguments (see gens). */
const SIG: Record<string, string[]> = {
  add: ['operand', 'operand'], sub: ['operand', 'operand'], mul: ['operand', 'operand'], div: ['operand', 'operand'],
  pow: ['operand', 'operand'], maximum: ['operand', 'operand'], minimum: ['operand', 'operand'],
  eq: ['operand', 'operand'], ne: ['operand', 'operand'], lt: ['operand', 'operand'], le: ['operand', 'operand'],
  gt: ['operand', 'operand'], ge: ['operand', 'operand'],
  neg: ['f32'], exp: ['f32'], log: ['f32'], sqrt: ['f32'], abs: ['f32'], square: ['f32'], tanh: ['f32'],
  sigmoid: ['f32'], relu: ['f32'], silu: ['f32'], reciprocal: ['f32'], sin: ['f32'], cos: ['f32'],
  gelu: ['f32', 'geluOpts'],
  where: ['cond', 'operand', 'operand'], maskedFill: ['f32', 'mask', 'number'], dropout: ['f32', 'prob', 'bool'],
  sum: ['f32', 'axes', 'bool'], mean: ['f32', 'axes', 'bool'], max: ['f32', 'axes', 'bool'], min: ['f32', 'axes', 'bool'],
  argmax: ['f32', 'axis', 'bool'], argmin: ['f32', 'axis', 'bool'], sumToShape: ['f32', 'shape'],
  softmax: ['f32', 'axis'], logSoftmax: ['f32', 'axis'],
  layerNorm: ['f32', 'optTensor', 'optTensor', 'number'],
  crossEntropy: ['f32', 'index', 'ceOpts'],
  infoNCE: ['f32', 'f32like', 'operand'],
  matmul: ['f32', 'f32', 'mmOpts'],
  reshape: ['tensor', 'shape'], flatten: ['tensor', 'axis', 'axis'], squeeze: ['tensor', 'axis'],
  unsqueeze: ['tensor', 'axis'], transpose: ['tensor', 'axis', 'axis'], permute: ['tensor', 'perm'],
  slice: ['tensor', 'axis', 'int', 'int'], concat: ['tensorList', 'axis'], stack: ['tensorList', 'axis'],
  broadcastTo: ['tensor', 'shape'], clone: ['tensor'],
  gather: ['f32', 'axis', 'index'], indexSelect: ['tensor', 'axis', 'index'], embedding: ['f32', 'index'],
  cast: ['tensor', 'dtype'], to: ['tensor', 'device'],
  tensor: ['data', 'shapeOpt', 'tensorOpts'], full: ['shape', 'number', 'tensorOpts'], zeros: ['shape', 'tensorOpts'],
  ones: ['shape', 'tensorOpts'], zerosLike: ['tensor', 'tensorOpts'], onesLike: ['tensor', 'tensorOpts'],
  arange: ['number', 'number', 'number', 'tensorOpts'], randn: ['shape', 'tensorOpts'], rand: ['shape', 'tensorOpts'],
  uniform: ['shape', 'number', 'number', 'tensorOpts'],
  manualSeed: ['number'], setRngState: ['anything'], tidy: ['anything'], noGrad: ['anything'],
  autocast: ['dtype', 'anything'], checkpoint: ['anything', 'tensor'],
  load: ['file'], loadHeader: ['file'], save: ['outPath', 'stateDict', 'metadata'],
  attention: ['qkv', 'qkv', 'qkv', 'sdpaOpts'],
  'nn.scaledDotProductAttention': ['qkv', 'qkv', 'qkv', 'sdpaOpts'], 'nn.activate': ['f32', 'activation'],
  'optim.clipGradNorm': ['gradParams', 'number', 'clipOpts'],
  'optim.cosineWithWarmup': ['anything'], 'optim.constantWithWarmup': ['anything'],
  'optim.toSafetensors': ['anything'], 'optim.fromSafetensors': ['anything'],
  'nn.applyLora': ['loraModel', 'loraOpts'], 'nn.mergeLora': ['loraModel'], 'nn.loraStateDict': ['loraModel'],
  'nn.loadLoraStateDict': ['loraModel', 'loraState'],
};

/** Exported functions deliberately not fuzzed here, and why. */
const EXCLUDED: Record<string, string> = {
  shapeSize: 'pure arithmetic on a shape array, no tensors',
  isGradEnabled: 'takes no arguments', memory: 'takes no arguments', emptyCache: 'takes no arguments', resetPeak: 'takes no arguments', getRngState: 'takes no arguments',
  backendInfo: 'takes no arguments', autocastDtype: 'takes no arguments',
  setNumThreads: 'global state: fuzzed in its own child below with a fixed list',
  getDefaultDevice: 'takes no arguments',
  setDefaultDevice: "global state: its argument check (anything but 'cpu' or 'cuda' is a TypeError) is tested in test/cuda.test.ts",
};

/** Functions whose results are not tensors (the rule "returns a Tensor or throws" does not apply to them). */
const NOT_TENSOR_OPS = new Set(['manualSeed', 'setRngState', 'tidy', 'noGrad', 'autocast', 'save', 'loadHeader',
  'optim.clipGradNorm', 'optim.cosineWithWarmup', 'optim.constantWithWarmup', 'optim.toSafetensors', 'optim.fromSafetensors',
  'nn.applyLora', 'nn.mergeLora', 'nn.loraStateDict', 'nn.loadLoraStateDict']);

/** `ml.add` for 'add', `ml.nn.activate` for 'nn.activate'. */
function resolve(name: string): unknown {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return name.split('.').reduce<any>((o, k) => (o == null ? undefined : o[k]), ml);
}

/** The exported functions of ml, ml.nn and ml.optim (lower-case names: classes are covered by their own tests). */
function exportedFunctions(): string[] {
  const fns = (o: object, prefix: string) => Object.entries(o).filter(([k, v]) => typeof v === 'function' && /^[a-z]/.test(k))
    .map(([k]) => prefix + k);
  return [...fns(ml, ''), ...fns(ml.nn, 'nn.'), ...fns(ml.optim, 'optim.')];
}
const API_NAMES = new Set(exportedFunctions().map((k) => k.split('.').pop()!));
const RETHROWS = new Set(['tidy', 'noGrad', 'autocast', 'checkpoint']);
/** File functions name the file instead of the op (src/api/io/safetensors.ts: "every error names the file"). */
const NAMES_FILE = new Set(['load', 'loadHeader', 'save']);

// ------------------------------------------------------------------------------------------------ the child

interface Report { kind: 'violation' | 'unnamed'; call: number; desc: string; what: string }

function describeThrown(e: unknown): string {
  if (e instanceof Error) return `${e.constructor.name}: ${e.message.split('\n')[0].slice(0, 200)}`;
  return `non-Error thrown: ${show(e)}`;
}

function runChild(cfg: { seed: number; start: number; count: number; ops: string[]; crashAt?: number }): void {
  const out = writeLine;
  let returned = 0, threw = 0;
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-fuzz-'));
  for (let i = cfg.start; i < cfg.count; i++) {
    const op = cfg.ops[i % cfg.ops.length];
    const r = rng(fnv(`${cfg.seed}:${i}`));
    made = [];
    let args: Arg[] = [];
    try {
      for (const kind of SIG[op]) args.push(gens[kind](r, args));
      const u = r();
      if (u < 0.3 && args.length) args[Math.floor(r() * args.length)] = junk(r);   // one plainly wrong argument
      else if (u < 0.35) args = args.slice(0, Math.floor(r() * args.length));      // missing arguments
      else if (u < 0.4) args.push(junk(r));                                         // one too many
    } catch (e) {
      out(`H\t${i}\tharness failed to build arguments for ${op}: ${describeThrown(e)}`);
      continue;
    }
    const desc = `${op}(${args.map((a) => a.d).join(', ')})`;
    out(`C\t${i}\t${desc}`);   // written synchronously before the call: the last line names a crashing call
    if (cfg.crashAt === i) process.abort();   // the harness's own test: a native-style crash at a known call
    const report = (kind: Report['kind'], what: string) => out(`R\t${JSON.stringify({ kind, call: i, desc, what })}`);
    const checkError = (e: unknown, where: string) => {
      if (!(e instanceof Error)) { report('violation', `${where} threw a non-Error: ${show(e)}`); return; }
      // tidy and noGrad rethrow what their fn throws, as they should.
      // Named: the message names this function, or starts with "<fn>:" for another API function it delegates to
      // (zeros -> "full: ..."). Not named: JS internals ("Cannot read properties of null"), the native layer
      // ("alloc: argument 0 ..."), or no name at all.
      const name = op.split('.').pop()!;
      const prefix = /^(\w+):/.exec(e.message)?.[1];
      const named = e.message.includes(name) || (prefix !== undefined && API_NAMES.has(prefix));
      if (where === op && !RETHROWS.has(op) && !NAMES_FILE.has(op) && !named) report('unnamed', `${describeThrown(e)}`);
    };
    try {
      const res = (resolve(op) as (...a: unknown[]) => unknown)(...args.map((a) => a.v));
      returned++;
      if (NOT_TENSOR_OPS.has(op)) continue;
      if (op === 'load') {
        const ts = (res as { tensors?: unknown } | null | undefined)?.tensors;
        if (!ts || typeof ts !== 'object') { report('violation', `returned ${show(res)} instead of {tensors, metadata}`); continue; }
        for (const t of Object.values(ts)) {
          if (!(t instanceof ml.Tensor)) { report('violation', `returned a non-Tensor entry ${show(t)}`); continue; }
          made.push(t);
          t.toArray();
        }
        continue;
      }
      if (!(res instanceof ml.Tensor)) { report('violation', `returned ${show(res)} instead of a Tensor`); continue; }
      made.push(res);
      if (res.isDisposed) { report('violation', 'returned a disposed tensor'); continue; }
      try {
        res.toArray();
        if (res.requiresGrad) {
          out(`C\t${i}\t${desc}.backward()`);
          res.backward(keep(ml.ones([...res.shape])));
        }
      } catch (e) {
        checkError(e, 'toArray/backward');
      }
    } catch (e) {
      threw++;
      checkError(e, op);
    } finally {
      for (const t of made) { try { t.grad?.dispose(); t.dispose(); } catch { /* already gone */ } }
      for (const a of args) {
        const vs = Array.isArray(a.v) || a.v instanceof Set ? [...(a.v as Iterable<unknown>)]
          : a.v && typeof a.v === 'object' ? [a.v, ...Object.values(a.v)] : [a.v];
        for (const v of vs) if (v instanceof ml.Tensor) { v.grad?.dispose(); v.dispose(); }
        if (a.v instanceof ml.nn.Module) { try { a.v.dispose(); } catch { /* a model the call broke on purpose */ } }
      }
    }
  }
  fs.rmSync(tmpDir, { recursive: true, force: true });
  out(`D\t${JSON.stringify({ returned, threw, memory: ml.memory() })}`);
}

function runRuntimeChild(): void {
  const out = writeLine;
  for (const v of [0, -1, NaN, 'x', 1.5, 2 ** 31, 1e9, undefined, null, {}, Infinity] as unknown[]) {
    out(`C\t0\tsetNumThreads(${show(v)})`);
    try {
      (ml.setNumThreads as (n: unknown) => void)(v);
    } catch (e) {
      if (!(e instanceof Error)) out(`R\t${JSON.stringify({ kind: 'violation', call: 0, desc: `setNumThreads(${show(v)})`, what: 'threw a non-Error' })}`);
    }
  }
  ml.setNumThreads(2);
  out(`C\t0\tadd after setNumThreads(2)`);
  ml.tidy(() => ml.add(ml.ones([1000, 100]), 1).toArray());
  out('D\t{}');
}

// ------------------------------------------------------------------------------------------------ the parent

interface Crash { call: number; desc: string; status: number | null; signal: string | null; stderr: string }
interface Outcome { crashes: Crash[]; reports: Report[]; harness: string[]; calls: number; summaries: unknown[] }

function spawnChild(cfg: object): { lines: string[]; status: number | null; signal: string | null; stderr: string } {
  const r = spawnSync(process.execPath, [__filename], {
    env: { ...process.env, MODALAB_FUZZ_CHILD: JSON.stringify(cfg) },
    encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: CHILD_TIMEOUT_MS,
  });
  return { lines: (r.stdout ?? '').split('\n').filter(Boolean), status: r.status, signal: r.signal, stderr: r.stderr ?? '' };
}

/** Run calls [0, count) in children, restarting past each crash. */
function fuzz(cfg: { mode?: string; seed: number; count: number; ops: string[]; crashAt?: number }): Outcome {
  const o: Outcome = { crashes: [], reports: [], harness: [], calls: 0, summaries: [] };
  let start = 0;
  const seen = new Set<number>();
  while (start < cfg.count && o.crashes.length < MAX_CRASHES) {
    const r = spawnChild({ ...cfg, start });
    let last: { call: number; desc: string } | null = null;
    let done = false;
    for (const line of r.lines) {
      const [tag, a, b] = line.split('\t');
      if (tag === 'C') { last = { call: Number(a), desc: b }; seen.add(last.call); }
      else if (tag === 'R') o.reports.push(JSON.parse(a));
      else if (tag === 'H') o.harness.push(`${a}: ${b}`);
      else if (tag === 'D') { done = true; o.summaries.push(JSON.parse(a)); }
    }
    if (done && r.status === 0) break;
    o.crashes.push({ call: last?.call ?? start, desc: last?.desc ?? '(before the first call)', status: r.status,
      signal: r.signal, stderr: r.stderr.split('\n').filter(Boolean).slice(-6).join('\n') });
    start = (last?.call ?? start) + 1;
  }
  o.calls = seen.size;
  return o;
}

/** Reports grouped by function: how many, then up to `per` distinct messages (numbers masked), one call each. */
function formatReports(rs: Report[], per = 4): string {
  const byOp = new Map<string, { n: number; msgs: Map<string, Report> }>();
  for (const x of rs) {
    const op = x.desc.split('(')[0];
    const key = x.what.replace(/-?\d[\d.e+]*/g, '#').slice(0, 90);
    const g = byOp.get(op) ?? { n: 0, msgs: new Map<string, Report>() };
    byOp.set(op, g);
    g.n++;
    if (!g.msgs.has(key)) g.msgs.set(key, x);
  }
  return [...byOp].map(([op, g]) => `  ${op}: ${g.n} call(s)\n` +
    [...g.msgs.values()].slice(0, per).map((x) => `      #${x.call} ${x.desc}\n        -> ${x.what}`).join('\n')).join('\n');
}

if (process.env.MODALAB_FUZZ_CHILD) {
  const cfg = JSON.parse(process.env.MODALAB_FUZZ_CHILD);
  if (cfg.mode === 'runtime') runRuntimeChild(); else runChild(cfg);
} else {
  const ops = Object.keys(SIG);
  let outcome: Outcome | null = null;
  const result = (): Outcome => (outcome ??= fuzz({ seed: SEED, count: ops.length * CALLS_PER_OP, ops }));

  test('fuzz harness: a child that aborts is reported with its last call, and the run resumes after it', () => {
    const o = fuzz({ seed: SEED, count: 6, ops: ['neg'], crashAt: 3 });
    assert.equal(o.crashes.length, 1, JSON.stringify(o.crashes));
    assert.equal(o.crashes[0].call, 3);
    assert.match(o.crashes[0].desc, /^neg\(/);
    assert.equal(o.crashes[0].signal, 'SIGABRT');
    assert.equal(o.calls, 6, 'calls 4 and 5 ran in a restarted child');
  });

  test('fuzz: every exported function is fuzzed or excluded with a reason', () => {
    const uncovered = exportedFunctions().filter((k) => !(k in SIG) && !(k in EXCLUDED));
    assert.deepEqual(uncovered, [], `exported functions with no fuzz signature: ${uncovered.join(', ')}`);
    const stale = Object.keys(SIG).filter((k) => typeof resolve(k) !== 'function');
    assert.deepEqual(stale, [], `fuzz signatures for functions that are not exported: ${stale.join(', ')}`);
  });

  test(`fuzz: ${ops.length * CALLS_PER_OP} seeded calls with wrong arguments never crash the process`, () => {
    const o = result();
    assert.deepEqual(o.harness, [], 'the fuzz harness itself failed');
    if (o.crashes.length) {
      assert.fail(`${o.crashes.length} crash(es) (the child process died; listed with the last call it made):\n` +
        o.crashes.map((c) => `  #${c.call} ${c.desc}\n      -> exit ${c.status} signal ${c.signal}\n${c.stderr.replace(/^/gm, '         ')}`).join('\n'));
    }
    assert.ok(o.calls >= ops.length * CALLS_PER_OP, `only ${o.calls} calls were made`);
  });

  test('fuzz: every call returns a live Tensor or throws an Error', () => {
    const v = result().reports.filter((x) => x.kind === 'violation');
    if (v.length) assert.fail(`${v.length} call(s) broke the rule:\n${formatReports(v)}`);
  });

  test('fuzz: errors name the function (arguments are checked in TypeScript before the native call)', () => {
    const u = result().reports.filter((x) => x.kind === 'unnamed');
    if (u.length) assert.fail(`${u.length} error(s) do not name the function:\n${formatReports(u)}`);
  });

  test('fuzz: setNumThreads with wrong arguments throws and leaves the pool working', () => {
    const o = fuzz({ mode: 'runtime', seed: 0, count: 1, ops: [] });
    if (o.crashes.length) assert.fail(`crashed after ${o.crashes[0].desc}: exit ${o.crashes[0].status} signal ${o.crashes[0].signal}\n${o.crashes[0].stderr}`);
    const v = o.reports.filter((x) => x.kind === 'violation');
    if (v.length) assert.fail(formatReports(v));
  });
}
