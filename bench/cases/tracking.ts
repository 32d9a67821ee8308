/**
 * tracking: what recording metrics costs a training loop. The small training step is the demo's (an MLP
 * [2, 64, 64, 2] on 1024 points: forward, cross entropy, backward, gradient clipping, AdamW); the logging is
 * `run.log()` of 10 metrics every step into a tracking database in a temp folder, with the buffer written to
 * SQLite as often as it would be during that training (every FLUSH_INTERVAL_MS of training time).
 * Goal: logging 10 metrics every step costs under 1% of the small step. There is no PyTorch side.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ml from '../../src/index';
import { FLUSH_INTERVAL_MS, Tracker } from '../../src/experiments/tracking';
import { Goal, MeasureOptions, Suite, SuiteContext, SuiteResult, fmt, fmtSpread, measure, median, relSpread } from '../harness';

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

/** Median time of one training step, in ns. */
function stepTime(): { ns: number[] } {
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
  const s = measure(step, OPTS);
  data.x.dispose(); data.y.dispose();
  return s;
}

/** Time of one `run.log()` of 10 metrics, amortising a flush every `stepsPerFlush` calls, in ns. */
function logTime(dir: string, round: number, stepsPerFlush: number): { ns: number[] } {
  const tracker = Tracker.open(path.join(dir, `bench-${round}.db`));
  const run = tracker.startRun({ experiment: 'bench', name: `tracking-${round}`, config: { stepsPerFlush } });
  const metrics: Record<string, number> = {};
  let step = 0;
  const log = (): void => {
    for (let k = 0; k < METRICS; k++) metrics[`metric_${k}`] = Math.sin(step + k);
    run.log(metrics, step++);
    if (step % stepsPerFlush === 0) run.flush();
  };
  const s = measure(log, { ...OPTS, sampleMs: 20 });
  run.finish();
  const rows = (tracker.db.prepare('SELECT COUNT(*) AS n FROM metrics WHERE run_id = ?').get(run.id) as { n: number }).n;
  tracker.close();
  // Every logged metric must be in the database: a benchmark of writes that were dropped would measure nothing.
  if (rows !== step * METRICS) throw new Error(`tracking bench: ${rows} metric rows in the database, expected ${step * METRICS}`);
  return s;
}

export const tracking: Suite = {
  name: 'tracking',
  summary: 'run.log() of 10 metrics per step (batched SQLite writes) against a small training step',
  run(ctx: SuiteContext): SuiteResult {
    ml.setNumThreads(ctx.threads);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-bench-tracking-'));
    const steps: number[] = [];
    const logs: number[] = [];
    const ratios: number[] = [];
    const spreads: number[] = [];
    let flushEvery = 0;
    try {
      for (let r = 0; r < ctx.rounds; r++) {
        const st = median(stepTime().ns);
        // As in training: the buffer is written every FLUSH_INTERVAL_MS of training time.
        flushEvery = Math.max(1, Math.round((FLUSH_INTERVAL_MS * 1e6) / st));
        const lg = logTime(dir, r, flushEvery);
        const lt = median(lg.ns);
        steps.push(st); logs.push(lt); ratios.push(lt / st); spreads.push(relSpread(lg.ns));
        ctx.log(`tracking round ${r + 1}: step ${fmt(st / 1e3)} us, log ${fmt(lt / 1e3)} us (${(100 * lt / st).toFixed(3)}%)`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const st = median(steps), lt = median(logs), ratio = median(ratios);
    const goal: Goal = {
      text: `logging ${METRICS} metrics every step costs < ${GOAL * 100}% of a small training step (log time / step time < ${GOAL})`,
      ratio, pass: (x) => x < GOAL,
      note: `per round: ${ratios.map((x) => `${(100 * x).toFixed(3)}%`).join(', ')}`,
    };
    return {
      title: 'Tracking: metric writes against a small training step',
      description: `One training step of an MLP [2, 64, 64, 2] on 1024 points (forward, cross entropy, backward, `
        + `clipping, AdamW) against one \`run.log()\` of ${METRICS} metrics into a tracking database in a temp folder, `
        + `with a flush (one SQLite transaction) every ${flushEvery} steps, i.e. every ${FLUSH_INTERVAL_MS} ms of `
        + 'training, as in a real loop. Times are medians over samples, then over rounds; the share is the median '
        + 'of the per-round shares. Every metric is checked to be in the database afterwards.',
      columns: ['what', 'time per step', 'spread', 'share of step'],
      rows: [
        ['training step', `${fmt(st / 1e3)} us`, '', '100%'],
        [`run.log() of ${METRICS} metrics (amortised flush)`, `${fmt(lt / 1e3)} us`, fmtSpread(median(spreads)), `${(100 * ratio).toFixed(3)}%`],
        ['metric writes per second (batched)', `${fmt((METRICS / lt) * 1e9 / 1e6)} M/s`, '', ''],
      ],
      goals: [goal],
      notes: [`the share is log time / step time; goal < ${GOAL * 100}%`],
      torchSkipped: 'no PyTorch side: this suite compares two modalab costs',
    };
  },
};
