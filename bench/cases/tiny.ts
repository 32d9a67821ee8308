/**
 * tiny: the fixed cost of one op call, measured on the smallest useful work: adding two [16] f32 tensors.
 * Everything but the 16 additions is overhead (argument checks, the native call, allocating and freeing the
 * output), and that overhead is what small models and optimizer loops pay thousands of times per step.
 * Goal: at most half of PyTorch's per-call time for `a + b` in a Python loop.
 */
import * as ml from '../../src/index';
import {
  Goal, MeasureOptions, Samples, Suite, SuiteContext, SuiteResult, TorchInfo, fmt, fmtRatio, fmtSpread, measure,
  median, medianOfRounds, relSpread, roundTimeRatios, runTorch,
} from '../harness';

const N = 16;
const GOAL_RATIO = 0.5;
/** Batches of adds per ml.tidy() scope in the second variant. */
const TIDY_BATCH = 100;

/** 10 samples of 20k calls after 20k warm-up calls: 200k timed calls per side per round. */
const OPTS: MeasureOptions = {
  warmup: 20_000, sampleMs: 0, minSamples: 10, maxSamples: 10, minTimeMs: 0, callsPerSample: 20_000,
};

function inputs(): { a: ml.Tensor<'f32'>; b: ml.Tensor<'f32'> } {
  ml.manualSeed(0);
  return { a: ml.randn([N]), b: ml.randn([N]) };
}

/** Fail loudly rather than time a broken op. */
function check(a: ml.Tensor<'f32'>, b: ml.Tensor<'f32'>): void {
  const c = ml.add(a, b);
  const x = a.toArray(), y = b.toArray(), z = c.toArray();
  c.dispose();
  for (let i = 0; i < N; i++) {
    if (Math.abs(z[i] - (x[i] + y[i])) > 1e-6) throw new Error(`tiny: ml.add gave ${z[i]} at ${i}, expected ${x[i] + y[i]}`);
  }
}

/** The headline: what a user writes when they manage memory by hand. */
function plain(): Samples {
  const { a, b } = inputs();
  check(a, b);
  const s = measure(() => ml.add(a, b).dispose(), OPTS);
  a.dispose(); b.dispose();
  return s;
}

/** The same adds inside ml.tidy() scopes of TIDY_BATCH calls each, results left for tidy to free. */
function tidied(): Samples {
  const { a, b } = inputs();
  const batch = (): void => ml.tidy(() => { for (let i = 0; i < TIDY_BATCH; i++) ml.add(a, b); });
  const s = measure(batch, { ...OPTS, warmup: OPTS.warmup / TIDY_BATCH, callsPerSample: OPTS.callsPerSample! / TIDY_BATCH });
  a.dispose(); b.dispose();
  return { ns: s.ns.map((x) => x / TIDY_BATCH), callsPerSample: s.callsPerSample * TIDY_BATCH };
}

/** No dispose at all: every result waits for the garbage collector (what a careless loop costs). */
function collected(): Samples {
  const { a, b } = inputs();
  const s = measure(() => { ml.add(a, b); }, OPTS);
  a.dispose(); b.dispose();
  return s;
}

export const tiny: Suite = {
  name: 'tiny',
  summary: 'per-call time of adding two [16] f32 tensors, ml.add + dispose vs torch a + b',
  run(ctx: SuiteContext): SuiteResult {
    // Per round: samples (ns per call) of each variant.
    const mine: number[][] = [], mineTidy: number[][] = [], mineGc: number[][] = [], theirs: number[][] = [];
    let torchSkipped: string | undefined;
    let torchInfo: TorchInfo | undefined;
    for (let r = 0; r < ctx.rounds; r++) {
      ctx.log(`tiny round ${r + 1}/${ctx.rounds}: modalab`);
      mine.push(plain().ns);
      mineTidy.push(tidied().ns);
      mineGc.push(collected().ns);
      if (torchSkipped) continue;
      ctx.log(`tiny round ${r + 1}/${ctx.rounds}: torch`);
      const t = runTorch<{ add: Samples }>('tiny', { n: N, measure: OPTS }, ctx.threads);
      if (!t.ok) { torchSkipped = t.reason; continue; }
      torchInfo = t.run.info;
      theirs.push(t.run.results.add.ns);
    }
    const tt = theirs.length ? medianOfRounds(theirs) : null;
    const row = (label: string, xs: number[][]): string[] => [
      label, fmt(medianOfRounds(xs) / 1e3), tt === null ? 'skipped' : fmt(tt / 1e3),
      tt === null ? 'n/a' : fmtRatio(median(roundTimeRatios(xs, theirs))),
      `${fmtSpread(relSpread(xs.flat()))} / ${fmtSpread(relSpread(theirs.flat()))}`,
      `${xs.flat().length} x ${OPTS.callsPerSample}`];
    const ratios = roundTimeRatios(mine, theirs);
    const goals: Goal[] = [{
      text: `tiny op: ml.add + dispose at most ${GOAL_RATIO}x PyTorch's per-call time`,
      ratio: ratios.length ? median(ratios) : null,
      pass: (x) => x <= GOAL_RATIO,
      note: ratios.length > 1 ? `per round: ${ratios.map(fmtRatio).join(', ')}` : undefined,
    }];
    return {
      title: 'tiny: per-call cost of a 16-element add',
      description:
        `Adding two [${N}] f32 tensors in a loop, ${OPTS.callsPerSample! * OPTS.minSamples} timed calls per side ` +
        `per round after ${OPTS.warmup} warm-up calls, in samples of ${OPTS.callsPerSample}. ` +
        '`ml.add(a, b).dispose()` is the headline; the tidy row runs the same adds inside `ml.tidy()` scopes of ' +
        `${TIDY_BATCH} calls; the last row never disposes and leaves every result to the garbage collector. PyTorch runs \`c = a + b\` in a plain Python loop. Times are the median over rounds ` +
        'of each round\'s median; ratio = modalab time / torch time, the median of the per-round ratios (below 1: ' +
        'modalab is faster).',
      columns: ['variant', 'modalab us/call', 'torch us/call', 'ratio', 'spread (m / t)', 'samples'],
      rows: [row('ml.add + dispose', mine), row(`ml.add in tidy (${TIDY_BATCH}/scope)`, mineTidy),
        row('ml.add, never disposed (GC frees)', mineGc)],
      goals,
      notes: [],
      torchSkipped,
      torchInfo,
    };
  },
};
