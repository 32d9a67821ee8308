/**
 * gemm: square f32 matmul throughput, modalab's ml.matmul beside torch.mm, at 256, 512, 1024 and 2048.
 * Goal: at 1024, at least 0.9x PyTorch's GFLOP/s.
 */
import * as ml from '../../src/index';
import {
  Goal, MeasureOptions, Samples, Suite, SuiteContext, SuiteResult, TorchInfo, fmt, fmtRatio, fmtSpread, measure,
  median, medianOfRounds, relSpread, roundTimeRatios, runTorch,
} from '../harness';

const SIZES = [256, 512, 1024, 2048];
const GOAL_SIZE = 1024;
const GOAL_RATIO = 0.9;

const OPTS: MeasureOptions = { warmup: 2, sampleMs: 20, minSamples: 5, maxSamples: 40, minTimeMs: 400 };

/** 2 n^3 flops (n^3 multiply-adds) over the median time per call. */
const gflops = (n: number, ns: number): number => (2 * n * n * n) / ns;

function ours(n: number): Samples {
  return ml.tidy(() => {
    ml.manualSeed(n);
    const a = ml.randn([n, n]);
    const b = ml.randn([n, n]);
    return measure(() => ml.matmul(a, b).dispose(), OPTS);
  });
}

export const gemm: Suite = {
  name: 'gemm',
  summary: 'square f32 matmul GFLOP/s at 256..2048, ml.matmul vs torch.mm',
  run(ctx: SuiteContext): SuiteResult {
    // Per size, per round: samples (ns per call) of each side.
    const mine = new Map<number, number[][]>(SIZES.map((n) => [n, []]));
    const theirs = new Map<number, number[][]>(SIZES.map((n) => [n, []]));
    let torchSkipped: string | undefined;
    let torchInfo: TorchInfo | undefined;
    for (let r = 0; r < ctx.rounds; r++) {
      for (const n of SIZES) {
        ctx.log(`gemm round ${r + 1}/${ctx.rounds}: modalab ${n}`);
        mine.get(n)!.push(ours(n).ns);
      }
      if (torchSkipped) continue;
      ctx.log(`gemm round ${r + 1}/${ctx.rounds}: torch ${SIZES.join(', ')}`);
      const t = runTorch<Record<string, Samples>>('gemm', { sizes: SIZES, measure: OPTS }, ctx.threads);
      if (!t.ok) { torchSkipped = t.reason; continue; }
      torchInfo = t.run.info;
      for (const n of SIZES) theirs.get(n)!.push(t.run.results[String(n)].ns);
    }

    // Throughput ratio = torch time / our time, round by round.
    const ratios = (n: number): number[] => roundTimeRatios(mine.get(n)!, theirs.get(n)!).map((x) => 1 / x);
    const rows = SIZES.map((n) => {
      const m = mine.get(n)!, t = theirs.get(n)!;
      const tm = medianOfRounds(m), tt = t.length ? medianOfRounds(t) : null;
      return [String(n), fmt(gflops(n, tm)), tt === null ? 'skipped' : fmt(gflops(n, tt)),
        tt === null ? 'n/a' : fmtRatio(median(ratios(n))),
        `${fmt(tm / 1e6)} / ${tt === null ? 'n/a' : fmt(tt / 1e6)}`,
        `${fmtSpread(relSpread(m.flat()))} / ${fmtSpread(relSpread(t.flat()))}`,
        `${m.flat().length} / ${t.flat().length}`];
    });
    const goalRatios = ratios(GOAL_SIZE);
    const goals: Goal[] = [{
      text: `GEMM ${GOAL_SIZE}: modalab at least ${GOAL_RATIO}x PyTorch's GFLOP/s`,
      ratio: goalRatios.length ? median(goalRatios) : null,
      pass: (x) => x >= GOAL_RATIO,
      note: goalRatios.length > 1 ? `per round: ${goalRatios.map(fmtRatio).join(', ')}` : undefined,
    }];
    const info = ml.backendInfo();
    return {
      title: 'gemm: square f32 matmul',
      description:
        'C = A @ B for random n x n f32 matrices: `ml.matmul(a, b)` (output disposed each call) against ' +
        '`torch.mm(a, b)`. GFLOP/s = 2n^3 / median time per call (the median over rounds of each round\'s ' +
        'median). Ratio = modalab GFLOP/s / torch GFLOP/s, the median of the per-round ratios (above 1: modalab ' +
        'is faster).',
      columns: ['n', 'modalab GFLOP/s', 'torch GFLOP/s', 'ratio', 'ms per call (m / t)', 'spread (m / t)',
        'samples (m / t)'],
      rows,
      goals,
      notes: [`modalab GEMM: ${info.blas}`],
      torchSkipped,
      torchInfo,
    };
  },
};
