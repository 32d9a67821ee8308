/**
 * tracking: what recording metrics costs a training loop. The small training step is the demo's (an MLP
 * [2, 64, 64, 2] on 1024 points: forward, cross entropy, backward, gradient clipping, AdamW); the logging is
 * `run.log()` of 10 metrics every step into a tracking database in a temp folder, timed inside a real training
 * loop, where log() hands its buffer to the writer thread every FLUSH_INTERVAL_MS (and, for comparison, with the
 * writer thread off, so that the training thread inserts the rows itself).
 * Goal: logging 10 metrics every step costs under 1% of the small step. There is no PyTorch side.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ml from '../../src/index';
import { FLUSH_INTERVAL_MS, Tracker } from '../../src/experiments/tracking';
import { Goal, MeasureOptions, Suite, SuiteContext, SuiteResult, fmt, measure, median } from '../harness';

const GOAL = 0.01;
const METRICS = 10;
const OPTS: MeasureOptions = { warmup: 5, sampleMs: 50, minSamples: 8, maxSamples: 40, minTimeMs: 600 };

function spirals(n: number): { x: ml.Tensor<'f32'>; y: ml.Tensor<'i32'> } {
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const xs = new Float32Array(n * 2);
  const ys = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const cls = i % 2, r = 0.2 + 0.8 * rnd(), t = 3 * Math.PI * r + cls * Math.PI;
    xs[2 * i] = r * Math.cos(t);
    xs[2 * i + 1] = r * Math.sin(t);
    ys[i] = cls;
  }
  return { x: ml.tensor(xs, [n, 2]), y: ml.tensor(ys, [n], { dtype: 'i32' }) };
}

function trainer(): { step: () => void; dispose: () => void } {
  ml.manualSeed(0);
  const data = spirals(1024);
  const model = new ml.nn.MLP([2, 64, 64, 2], { activation: 'gelu' });
  const opt = new ml.optim.AdamW(model.parameters(), { lr: 1e-3 });
  const step = (): void => ml.tidy(() => {
    const l = ml.crossEntropy(model.forward(data.x), data.y);
    opt.zeroGrad();
    l.backward();
    ml.optim.clipGradNorm(model.parameters(), 1.0);
    opt.step();
    l.item();
  });
  return { step, dispose: () => { data.x.dispose(); data.y.dispose(); } };
}

/** Time of one training step, in ns: one call per sample (as the loop below times them), median of 40. */
function stepTime(): { ns: number[] } {
  const t = trainer();
  const s = measure(t.step, { ...OPTS, callsPerSample: 1, minSamples: 40, maxSamples: 40 });
  t.dispose();
  return s;
}

const nowNs = (): bigint => process.hrtime.bigint();

interface LoopResult {
  /** Mean time of run.log() per step, handoffs (or flushes) included, ns. */
  logNs: number;
  /**
   * The same from medians, robust to a busy machine's preemptions: the median plain call plus the median extra
   * of a call that hands over (or writes) a batch, times the share of calls that do, ns.
   */
  amortNs: number;
  /** Median time of a log() call that handed its buffer over (or wrote it), ns. */
  flushCallNs: number;
  /** Median time of a plain log() call, ns. */
  plainNs: number;
  /** Median training step time in the same loop, ns. */
  stepNs: number;
  steps: number;
  flushes: number;
}

/**
 * A real training loop with logging: a training step, then `run.log()` of 10 metrics, for `ms` of wall time.
 * Only the log() calls are timed (hrtime around each). The buffer goes to SQLite the way a training loop's does:
 * log() itself hands it over once FLUSH_INTERVAL_MS has passed. `inline`: the writer thread is switched off
 * (MODALAB_TRACKING_WRITER=inline), so the training thread does the SQLite inserts itself, as before.
 */
function trainingLoop(dir: string, tag: string, ms: number, inline: boolean): LoopResult {
  const prev = process.env.MODALAB_TRACKING_WRITER;
  if (inline) process.env.MODALAB_TRACKING_WRITER = 'inline';
  else delete process.env.MODALAB_TRACKING_WRITER;
  const tracker = Tracker.open(path.join(dir, `${tag}.db`));
  const run = tracker.startRun({ experiment: 'bench', name: tag });
  const t = trainer();
  const metrics: Record<string, number> = {};
  const plain: number[] = [];
  const flushCalls: number[] = [];
  const steps: number[] = [];
  let total = 0;
  let step = 0;
  const writes = (): number => (inline ? (run as unknown as { lastFlush: number }).lastFlush : run._handoffs);
  try {
    for (let i = 0; i < 5; i++) t.step(); // warm-up
    // A first log outside the timing starts the writer thread (once per process and file, tens of ms).
    run.log({ warmup: 0 }, 0);
    run.flush();
    const end = Date.now() + ms;
    while (Date.now() < end || step < 50) {
      const s0 = nowNs();
      t.step();
      const s1 = nowNs();
      for (let k = 0; k < METRICS; k++) metrics[`metric_${k}`] = Math.sin(step + k);
      const before = writes();
      const l0 = nowNs();
      run.log(metrics, step);
      const l1 = nowNs();
      const dt = Number(l1 - l0);
      total += dt;
      (writes() !== before ? flushCalls : plain).push(dt);
      steps.push(Number(s1 - s0));
      step++;
    }
    run.finish();
    const rows = (tracker.db.prepare("SELECT COUNT(*) AS n FROM metrics WHERE run_id = ? AND key <> 'warmup'").get(run.id) as { n: number }).n;
    // Every logged metric must be in the database: a benchmark of writes that were dropped would measure nothing.
    if (rows !== step * METRICS) throw new Error(`tracking bench: ${rows} metric rows in the database, expected ${step * METRICS}`);
  } finally {
    t.dispose();
    tracker.close();
    if (prev === undefined) delete process.env.MODALAB_TRACKING_WRITER;
    else process.env.MODALAB_TRACKING_WRITER = prev;
  }
  const plainNs = median(plain), flushCallNs = median(flushCalls);
  return {
    logNs: total / step, amortNs: plainNs + (flushCallNs - plainNs) * flushCalls.length / step, flushCallNs, plainNs,
    stepNs: median(steps),
    steps: step, flushes: flushCalls.length,
  };
}

/** Time of one synchronous `run.flush()` of an empty buffer (a round trip to the writer thread), in ns. */
function syncFlushTime(dir: string): number {
  const tracker = Tracker.open(path.join(dir, 'sync.db'));
  const run = tracker.startRun({ experiment: 'bench', name: 'sync-flush' });
  run.log({ x: 0 }, 0);
  run.flush();
  const s = measure(() => run.flush(), { ...OPTS, sampleMs: 20, minTimeMs: 300 });
  run.finish();
  tracker.close();
  return median(s.ns);
}

/**
 * Batched write throughput: `rows` metric rows logged as fast as log() takes them (10 per step), then finish(),
 * which waits until every row is committed; rows per second from the first log to finish's return, with the
 * writer thread or inline.
 */
function writeThroughput(dir: string, tag: string, inline: boolean, rows = 200_000): number {
  const prev = process.env.MODALAB_TRACKING_WRITER;
  if (inline) process.env.MODALAB_TRACKING_WRITER = 'inline';
  else delete process.env.MODALAB_TRACKING_WRITER;
  const tracker = Tracker.open(path.join(dir, `${tag}.db`));
  try {
    const run = tracker.startRun({ experiment: 'bench', name: tag });
    run.log({ warmup: 0 }, 0);
    run.flush();
    const metrics: Record<string, number> = {};
    const t0 = nowNs();
    for (let step = 1; step <= rows / METRICS; step++) {
      for (let k = 0; k < METRICS; k++) metrics[`metric_${k}`] = step + k;
      run.log(metrics, step);
    }
    run.finish();
    const s = Number(nowNs() - t0) / 1e9;
    const n = (tracker.db.prepare("SELECT COUNT(*) AS n FROM metrics WHERE run_id = ? AND key <> 'warmup'").get(run.id) as { n: number }).n;
    if (n !== rows) throw new Error(`tracking bench: ${n} metric rows in the database after the throughput run, expected ${rows}`);
    return rows / s;
  } finally {
    tracker.close();
    if (prev === undefined) delete process.env.MODALAB_TRACKING_WRITER;
    else process.env.MODALAB_TRACKING_WRITER = prev;
  }
}

export const tracking: Suite = {
  name: 'tracking',
  summary: 'run.log() of 10 metrics per step (batched SQLite writes on a writer thread) against a small training step',
  run(ctx: SuiteContext): SuiteResult {
    ml.setNumThreads(ctx.threads);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-bench-tracking-'));
    const LOOP_MS = 3000;
    const steps: number[] = [];
    const worker: LoopResult[] = [];
    const inline: LoopResult[] = [];
    const ratios: number[] = [];
    const inlineRatios: number[] = [];
    const meanRatios: number[] = [];
    let syncNs = NaN;
    const rate: number[] = [];
    const rateInline: number[] = [];
    try {
      for (let r = 0; r < ctx.rounds; r++) {
        const st = median(stepTime().ns);
        const w = trainingLoop(dir, `worker-${r}`, LOOP_MS, false);
        const i = trainingLoop(dir, `inline-${r}`, LOOP_MS, true);
        steps.push(st); worker.push(w); inline.push(i);
        ratios.push(w.amortNs / st); inlineRatios.push(i.amortNs / st); meanRatios.push(w.logNs / st);
        ctx.log(`tracking round ${r + 1}: step ${fmt(st / 1e3)} us; log per step ${fmt(w.amortNs / 1e3)} us `
          + `(${(100 * w.amortNs / st).toFixed(3)}%; mean ${fmt(w.logNs / 1e3)} us; plain call ${fmt(w.plainNs / 1e3)} us; `
          + `${w.flushes} handoffs of ~${Math.round(w.steps / Math.max(1, w.flushes))} steps, `
          + `handoff call ${fmt(w.flushCallNs / 1e3)} us; step in loop ${fmt(w.stepNs / 1e3)} us); `
          + `inline ${fmt(i.amortNs / 1e3)} us (${(100 * i.amortNs / st).toFixed(3)}%; mean ${fmt(i.logNs / 1e3)} us; `
          + `flush call ${fmt(i.flushCallNs / 1e3)} us; step in loop ${fmt(i.stepNs / 1e3)} us)`);
      }
      syncNs = syncFlushTime(dir);
      for (let r = 0; r < ctx.rounds; r++) {
        rate.push(writeThroughput(dir, `rate-${r}`, false));
        rateInline.push(writeThroughput(dir, `rate-inline-${r}`, true));
        ctx.log(`tracking throughput round ${r + 1}: ${fmt(rate[r] / 1e6)} M rows/s (writer thread), ${fmt(rateInline[r] / 1e6)} M rows/s (inline)`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const st = median(steps), ratio = median(ratios), inlineRatio = median(inlineRatios);
    const m = (xs: LoopResult[], f: (x: LoopResult) => number): number => median(xs.map(f));
    const goal: Goal = {
      text: `logging ${METRICS} metrics every step costs < ${GOAL * 100}% of a small training step (log time / step time < ${GOAL})`,
      ratio, pass: (x) => x < GOAL, format: (x) => `${(100 * x).toFixed(3)}%`,
      note: `per round: ${ratios.map((x) => `${(100 * x).toFixed(3)}%`).join(', ')}; from means instead of medians: `
        + `${meanRatios.map((x) => `${(100 * x).toFixed(3)}%`).join(', ')}`,
    };
    return {
      title: 'Tracking: metric writes against a small training step',
      description: `One training step of an MLP [2, 64, 64, 2] on 1024 points (forward, cross entropy, backward, `
        + `clipping, AdamW), timed alone, against what \`run.log()\` of ${METRICS} metrics costs the training thread in a `
        + `real loop (step, log, step, log, ... for ${LOOP_MS / 1000} s, only the log calls timed): log() buffers, and every `
        + `${FLUSH_INTERVAL_MS} ms hands the buffer to the writer thread, which inserts it in one SQLite transaction beside `
        + 'the loop. The same loop with the writer thread switched off (the training thread inserts, as before) is the '
        + '"inline" row. Every time is a median of single calls (a busy machine preempts some calls for milliseconds; '
        + 'medians drop those, means do not): log time per step is the median plain call plus the median extra of the '
        + 'call that hands a batch over, times the share of calls that do. Values are medians over rounds; the share is '
        + 'the median of the per-round shares. Every metric is checked to be in the database afterwards.',
      columns: ['what', 'time per step', 'share of step'],
      rows: [
        ['training step (alone)', `${fmt(st / 1e3)} us`, '100%'],
        ['training step (in the loop, writer thread busy beside it)', `${fmt(m(worker, (x) => x.stepNs) / 1e3)} us`, ''],
        [`run.log() of ${METRICS} metrics, writer thread (amortised handoff)`, `${fmt(m(worker, (x) => x.amortNs) / 1e3)} us`, `${(100 * ratio).toFixed(3)}%`],
        ['  a plain log() call / the call that hands a batch over', `${fmt(m(worker, (x) => x.plainNs) / 1e3)} us / ${fmt(m(worker, (x) => x.flushCallNs) / 1e3)} us`, ''],
        [`run.log() of ${METRICS} metrics, inline (amortised flush)`, `${fmt(m(inline, (x) => x.amortNs) / 1e3)} us`, `${(100 * inlineRatio).toFixed(3)}%`],
        ['  a plain log() call / the call that writes the batch', `${fmt(m(inline, (x) => x.plainNs) / 1e3)} us / ${fmt(m(inline, (x) => x.flushCallNs) / 1e3)} us`, ''],
        ['run.flush() round trip to the writer (empty buffer)', `${fmt(syncNs / 1e3)} us`, ''],
        ['metric writes per second, batched: 200k rows logged, then finish() (writer thread)', `${fmt(median(rate) / 1e6)} M rows/s`, ''],
        ['metric writes per second, batched (inline)', `${fmt(median(rateInline) / 1e6)} M rows/s`, ''],
      ],
      goals: [goal],
      notes: [
        `the share is log time / step time; goal < ${GOAL * 100}%`,
        'the writer thread\'s inserts still use CPU: on a machine with no idle core they slow the training step instead '
          + '(compare the two training-step rows)',
      ],
      torchSkipped: 'no PyTorch side: this suite compares two modalab costs',
    };
  },
};
