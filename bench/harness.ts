/**
 * The benchmark harness: timing with medians, the PyTorch side, and the result types a suite returns.
 *
 * Both sides follow the same protocol (bench/torch/common.py mirrors `measure` line for line): warm up,
 * calibrate how many calls make one sample long enough to time (at least `sampleMs`), then take samples until
 * there are `minSamples` of them and `minTimeMs` has passed (or `maxSamples` is reached). A sample is the mean
 * time per call over its calls; a result is the median of its samples. Medians, because these machines are
 * shared and noisy: one slow sample (a GC, a neighbour's burst) moves the mean but not the median.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

/** The interpreter with Debian's PyTorch (the `python3` on PATH may be a pyenv without torch). */
export const TORCH_PYTHON = process.env.MODALAB_BENCH_PYTHON ?? '/usr/bin/python3';

export interface MeasureOptions {
  /** Untimed calls before calibration: caches, allocator pools and lazy thread pools warm up. */
  warmup: number;
  /** Each sample lasts at least this long (calls are batched until it does). */
  sampleMs: number;
  minSamples: number;
  maxSamples: number;
  /** Keep sampling until this much time has passed, within maxSamples. */
  minTimeMs: number;
  /** Force the number of calls per sample instead of calibrating (the tiny-op loop uses this). */
  callsPerSample?: number;
}

/** Per-call times in nanoseconds, one per sample. */
export interface Samples {
  ns: number[];
  callsPerSample: number;
}

const nowNs = (): bigint => process.hrtime.bigint();

function maybeGc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) g();
}

/** Time fn with the protocol above. fn must clean up after itself (dispose what it makes). */
export function measure(fn: () => void, o: MeasureOptions): Samples {
  for (let i = 0; i < o.warmup; i++) fn();
  let calls = o.callsPerSample ?? 0;
  if (!calls) {
    // Calibrate on one timed call; a batch makes sub-millisecond calls long enough for the clock and the noise.
    const t0 = nowNs();
    fn();
    const one = Number(nowNs() - t0);
    calls = Math.max(1, Math.ceil((o.sampleMs * 1e6) / Math.max(one, 1)));
  }
  maybeGc(); // start from a clean heap so that one sample does not inherit the warm-up's garbage
  const ns: number[] = [];
  const start = nowNs();
  while (ns.length < o.maxSamples) {
    const t0 = nowNs();
    for (let i = 0; i < calls; i++) fn();
    ns.push(Number(nowNs() - t0) / calls);
    const elapsedMs = Number(nowNs() - start) / 1e6;
    if (ns.length >= o.minSamples && elapsedMs >= o.minTimeMs) break;
  }
  return { ns, callsPerSample: calls };
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Combining rounds. Each round gives each side a list of samples; the number of samples varies with speed (a
 * round sampled for a fixed time yields more samples when the machine was quiet), so pooling them would weigh
 * quiet rounds more. Instead every round counts once: a side's value is the median of its round medians, and
 * a ratio is the median of the per-round ratios, each taken between the two sides' runs that sat next to each
 * other in time, so that slow drift of the machine cancels.
 */
export function medianOfRounds(rounds: readonly (readonly number[])[]): number {
  return median(rounds.filter((r) => r.length > 0).map(median));
}

/** Per-round ratios of median times, ours / theirs, for the rounds where both sides ran. */
export function roundTimeRatios(ours: readonly (readonly number[])[], theirs: readonly (readonly number[])[]): number[] {
  const out: number[] = [];
  for (let r = 0; r < Math.min(ours.length, theirs.length); r++) {
    if (ours[r].length && theirs[r].length) out.push(median(ours[r]) / median(theirs[r]));
  }
  return out;
}

/** Quartile spread relative to the median, (q3 - q1) / median: how noisy the samples were. */
export function relSpread(xs: readonly number[]): number {
  if (xs.length < 4) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  const q = (p: number): number => {
    const i = p * (s.length - 1);
    const lo = Math.floor(i);
    return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (i - lo);
  };
  return (q(0.75) - q(0.25)) / median(s);
}

// ------------------------------------------------------------------------------------------ the PyTorch side

/** What a torch script reports about itself (bench/torch/common.py `info()`). */
export interface TorchInfo {
  version: string;
  threads: number;
  /** BLAS_INFO from torch.__config__.show(), and the BLAS/LAPACK libraries the process actually mapped. */
  blasInfo: string;
  blasLibs: string[];
  /** OpenBLAS's own thread count when torch links OpenBLAS (torch.set_num_threads does not reach it). */
  openblasThreads: number | null;
  mkldnn: string | null;
  capability: string | null;
}

export interface TorchRun<R> {
  info: TorchInfo;
  results: R;
}

export type TorchOutcome<R> = { ok: true; run: TorchRun<R> } | { ok: false; reason: string };

let torchChecked: { ok: boolean; reason: string } | null = null;

/** Whether TORCH_PYTHON can import torch; checked once per process. */
export function torchAvailable(): { ok: boolean; reason: string } {
  if (torchChecked) return torchChecked;
  if (!fs.existsSync(TORCH_PYTHON)) {
    torchChecked = { ok: false, reason: `${TORCH_PYTHON} not found` };
    return torchChecked;
  }
  const r = spawnSync(TORCH_PYTHON, ['-c', 'import torch'], { encoding: 'utf8', timeout: 60_000 });
  torchChecked = r.status === 0
    ? { ok: true, reason: '' }
    : { ok: false, reason: `${TORCH_PYTHON} cannot import torch (${(r.stderr || r.error?.message || '').trim().split('\n').pop()})` };
  return torchChecked;
}

/**
 * Run bench/torch/<suite>.py with `config` as one JSON argument and parse the one JSON object it prints last.
 * The child gets the same thread count through the environment as well, because torch.set_num_threads sets
 * OpenMP's pool but not OpenBLAS's, and torch's GEMM goes through OpenBLAS on Debian.
 */
export function runTorch<R>(suite: string, config: object, threads: number): TorchOutcome<R> {
  const avail = torchAvailable();
  if (!avail.ok) return { ok: false, reason: avail.reason };
  const script = path.resolve(__dirname, '..', '..', 'bench', 'torch', `${suite}.py`);
  if (!fs.existsSync(script)) return { ok: false, reason: `${script} not found` };
  const t = String(threads);
  const r = spawnSync(TORCH_PYTHON, [script, JSON.stringify({ ...config, threads })], {
    encoding: 'utf8',
    timeout: 600_000,
    maxBuffer: 64 << 20,
    env: { ...process.env, OMP_NUM_THREADS: t, OPENBLAS_NUM_THREADS: t, MKL_NUM_THREADS: t },
  });
  if (r.error) return { ok: false, reason: `${path.basename(script)}: ${r.error.message}` };
  if (r.status !== 0) {
    const tail = (r.stderr || '').trim().split('\n').slice(-3).join(' | ');
    return { ok: false, reason: `${path.basename(script)} exited with ${r.status}: ${tail}` };
  }
  const lines = r.stdout.trim().split('\n');
  try {
    return { ok: true, run: JSON.parse(lines[lines.length - 1]) as TorchRun<R> };
  } catch {
    return { ok: false, reason: `${path.basename(script)} printed no JSON: ${lines.slice(-2).join(' | ')}` };
  }
}

// ------------------------------------------------------------------------------------------ suite contract

export interface Goal {
  /** What it promises, in words: "GEMM 1024: modalab >= 0.9x torch throughput". */
  text: string;
  /** Measured ratio, or null when there was nothing to compare against. */
  ratio: number | null;
  pass: (ratio: number) => boolean;
  /** Extra evidence, e.g. the ratio from each round. */
  note?: string;
  /** How the measured ratio is written (default: `2.29x`); e.g. a share as a percentage. */
  format?: (ratio: number) => string;
}

export interface SuiteResult {
  title: string;
  /** One paragraph: what is measured and how, so the table can be read on its own. */
  description: string;
  columns: string[];
  rows: string[][];
  goals: Goal[];
  notes: string[];
  /** Set when the PyTorch side did not run. */
  torchSkipped?: string;
  torchInfo?: TorchInfo;
}

export interface SuiteContext {
  threads: number;
  /** Rounds of (modalab, torch) alternation; samples from all rounds are pooled. */
  rounds: number;
  log: (msg: string) => void;
}

export interface Suite {
  name: string;
  /** One line for `npm run bench -- --list`. */
  summary: string;
  run(ctx: SuiteContext): SuiteResult;
}

// ------------------------------------------------------------------------------------------ formatting

export function fmt(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return 'n/a';
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  return x.toPrecision(digits);
}

export function fmtRatio(x: number | null | undefined): string {
  return x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(2)}x`;
}

export function fmtSpread(x: number): string {
  return Number.isFinite(x) ? `±${(x * 50).toFixed(0)}%` : 'n/a';
}

/** A Markdown table, padded so that it also reads well on a terminal. */
export function markdownTable(columns: string[], rows: string[][]): string {
  const widths = columns.map((c, i) => Math.max(c.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => (c ?? '').padEnd(widths[i])).join(' | ') + ' |';
  return [line(columns), '| ' + widths.map((w) => '-'.repeat(w)).join(' | ') + ' |', ...rows.map(line)].join('\n');
}
