/**
 * gemm: square f32 matmul throughput, modalab's ml.matmul beside torch.mm, at 256, 512, 1024 and 2048.
 * Goal: at 1024, at least 0.9x PyTorch's GFLOP/s.
 */
import * as ml from '../../src/index';
import {
  Goal, MeasureOptions, Samples, Suite, SuiteContext, SuiteResult, TorchInfo, fmt, fmtRatio, fmtSpread, measure,
  median, relSpread, runTorch,
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
    const mine = new Map<number, number[]>(SIZES.map((n) => [n, []]));
    const theirs = new Map<number, number[]>(SIZES.map((n) => [n, []]));
    const roundRatios: number[] = [];
    let torchSkipped: string | undefined;
    let torchInfo: TorchInfo | undefined;
    for (let r = 0; r < ctx.rounds; r++) {
      const ourMedians = new Map<number, number>();
      for (const n of SIZES) {
        ctx.log(`gemm round ${r + 1}/${ctx.rounds}: modalab ${n}`);
        const s = ours(n);
        mine.get(n)!.push(...s.ns);
        ourMedians.set(n, median(s.ns));
      }
      if (torchSkipped) continue;
      ctx.log(`gemm round ${r + 1}/${ctx.rounds}: torch ${SIZES.join(', ')}`);
      const t = runTorch<Record<string, Samples>>('gemm', { sizes: SIZES, measure: OPTS }, ctx.threads);
      if (!t.ok) { torchSkipped = t.reason; continue; }
      torchInfo = t.run.info;
      for (const n of SIZES) theirs.get(n)!.push(...t.run.results[String(n)].ns);
      // Ratio of throughputs = torch time / our time, per round, to show how much the headline moves between runs.
      roundRatios.push(median(t.run.results[String(GOAL_SIZE)].ns) / ourMedians.get(GOAL_SIZE)!);
    }

    const rows = SIZES.map((n) => {
      const m = mine.get(n)!, t = theirs.get(n)!;
      const gm = gflops(n, median(m));
      const gt = t.length ? gflops(n, median(t)) : null;
      return [String(n), fmt(gm), gt === null ? 'skipped' : fmt(gt), gt === null ? 'n/a' : fmtRatio(gm / gt),
        `${fmt(median(m) / 1e6)} / ${t.length ? fmt(median(t) / 1e6) : 'n/a'}`,
        `${fmtSpread(relSpread(m))} / ${fmtSpread(relSpread(t))}`, `${m.length} / ${t.length}`];
    });
    const tGoal = theirs.get(GOAL_SIZE)!;
    const goalRatio = tGoal.length ? median(tGoal) / median(mine.get(GOAL_SIZE)!) : null;
    const goals: Goal[] = [{
      text: `GEMM ${GOAL_SIZE}: modalab at least ${GOAL_RATIO}x PyTorch's GFLOP/s`,
      ratio: goalRatio,
      pass: (x) => x >= GOAL_RATIO,
      note: roundRatios.length > 1 ? `per round: ${roundRatios.map(fmtRatio).join(', ')}` : undefined,
    }];
    const info = ml.backendInfo();
    return {
      title: 'gemm: square f32 matmul',
      description:
        'C = A @ B for random n x n f32 matrices: `ml.matmul(a, b)` (output disposed each call) against ' +
        '`torch.mm(a, b)`. GFLOP/s = 2n^3 / median time per call. Ratio = modalab GFLOP/s / torch GFLOP/s ' +
        '(above 1: modalab is faster).',
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
