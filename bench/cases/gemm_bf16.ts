/**
 * gemm_bf16: square bf16 matmul (f32 accumulation) against modalab's own f32 matmul at 512, 1024 and 2048, with
 * torch's bf16 torch.mm beside it for reference. Goal: at 1024, bf16 at least 1.5x our f32 GFLOP/s where the
 * processor has bf16 dot products (AVX-512 BF16).
 */
import * as ml from '../../src/index';
import { binding } from '../../src/api/binding';
import {
  Goal, MeasureOptions, Samples, Suite, SuiteContext, SuiteResult, TorchInfo, fmt, fmtRatio, fmtSpread, measure,
  median, medianOfRounds, relSpread, roundTimeRatios, runTorch,
} from '../harness';

const SIZES = [512, 1024, 2048];
const GOAL_SIZE = 1024;
const GOAL_RATIO = 1.5;

const OPTS: MeasureOptions = { warmup: 2, sampleMs: 20, minSamples: 5, maxSamples: 40, minTimeMs: 400 };

const gflops = (n: number, ns: number): number => (2 * n * n * n) / ns;

/** ns per call of ml.matmul on two n x n matrices of `dtype` (the f32 result disposed each call). */
function ours(n: number, dtype: 'f32' | 'bf16'): Samples {
  return ml.tidy(() => {
    ml.manualSeed(n);
    const a = ml.randn([n, n]).cast(dtype);
    const b = ml.randn([n, n]).cast(dtype);
    return measure(() => ml.matmul(a, b).dispose(), OPTS);
  });
}

export const gemmBf16: Suite = {
  name: 'gemm_bf16',
  summary: 'square bf16 matmul (f32 accumulation) vs our own f32 matmul, torch bf16 mm beside it',
  run(ctx: SuiteContext): SuiteResult {
    const f32 = new Map<number, number[][]>(SIZES.map((n) => [n, []]));
    const bf16 = new Map<number, number[][]>(SIZES.map((n) => [n, []]));
    const torchBf16 = new Map<number, number[][]>(SIZES.map((n) => [n, []]));
    let torchSkipped: string | undefined;
    let torchInfo: TorchInfo | undefined;
    for (let r = 0; r < ctx.rounds; r++) {
      for (const n of SIZES) {
        ctx.log(`gemm_bf16 round ${r + 1}/${ctx.rounds}: modalab ${n} f32 and bf16`);
        f32.get(n)!.push(ours(n, 'f32').ns);
        bf16.get(n)!.push(ours(n, 'bf16').ns);
      }
      if (torchSkipped) continue;
      ctx.log(`gemm_bf16 round ${r + 1}/${ctx.rounds}: torch bf16 ${SIZES.join(', ')}`);
      const t = runTorch<Record<string, Samples>>('gemm_bf16', { sizes: SIZES, measure: OPTS }, ctx.threads);
      if (!t.ok) { torchSkipped = t.reason; continue; }
      torchInfo = t.run.info;
      for (const n of SIZES) torchBf16.get(n)!.push(t.run.results[String(n)].ns);
    }
    // bf16 over f32 (ours), and ours over torch's bf16: time ratios inverted into throughput ratios per round.
    const vsF32 = (n: number): number[] => roundTimeRatios(bf16.get(n)!, f32.get(n)!).map((x) => 1 / x);
    const vsTorch = (n: number): number[] => roundTimeRatios(bf16.get(n)!, torchBf16.get(n)!).map((x) => 1 / x);
    const rows = SIZES.map((n) => {
      const mf = medianOfRounds(f32.get(n)!), mb = medianOfRounds(bf16.get(n)!);
      const t = torchBf16.get(n)!, tt = t.length ? medianOfRounds(t) : null;
      return [String(n), fmt(gflops(n, mf)), fmt(gflops(n, mb)), fmtRatio(median(vsF32(n))),
        tt === null ? 'skipped' : fmt(gflops(n, tt)), tt === null ? 'n/a' : fmtRatio(median(vsTorch(n))),
        `${fmt(mf / 1e6)} / ${fmt(mb / 1e6)} / ${tt === null ? 'n/a' : fmt(tt / 1e6)}`,
        `${fmtSpread(relSpread(f32.get(n)!.flat()))} / ${fmtSpread(relSpread(bf16.get(n)!.flat()))} / ${fmtSpread(relSpread(t.flat()))}`];
    });
    const paths = binding().halfPaths();
    const dot = paths.gemmBf16 === 'avx512_bf16';
    const g = vsF32(GOAL_SIZE);
    const goals: Goal[] = [{
      text: `bf16 GEMM ${GOAL_SIZE}: at least ${GOAL_RATIO}x our own f32 GFLOP/s (where the processor has bf16 dot products)`,
      ratio: dot && g.length ? median(g) : null,
      pass: (x) => x >= GOAL_RATIO,
      note: dot ? (g.length > 1 ? `per round: ${g.map(fmtRatio).join(', ')}` : undefined)
        : 'not applicable: this processor has no AVX-512 BF16, bf16 runs through f32',
    }];
    return {
      title: 'gemm_bf16: square bf16 matmul',
      description:
        'C (f32) = A @ B for random n x n matrices: `ml.matmul` on two bf16 tensors against `ml.matmul` on two ' +
        'f32 tensors (both modalab, output disposed each call), and torch.mm on two bfloat16 tensors for ' +
        'reference (its result is bf16). GFLOP/s = 2n^3 / median time per call (the median over rounds of each ' +
        'round\'s median); ratios are throughput ratios, the median of the per-round ratios.',
      columns: ['n', 'modalab f32 GFLOP/s', 'modalab bf16 GFLOP/s', 'bf16 / f32', 'torch bf16 GFLOP/s',
        'modalab bf16 / torch bf16', 'ms (f32 / bf16 / torch bf16)', 'spread (f32 / bf16 / torch)'],
      rows,
      goals,
      notes: [`modalab bf16 GEMM path: ${paths.gemmBf16}; f32 GEMM: ${ml.backendInfo().blas}`],
      torchSkipped,
      torchInfo,
    };
  },
};
