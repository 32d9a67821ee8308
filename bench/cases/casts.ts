/**
 * casts: f32 -> bf16 / f16 and back over 16M elements, `x.cast(dtype)` beside torch's `x.to(dtype)`, and the
 * conversion kernels alone (into an output allocated once) beside torch's `out.copy_(x)`.
 * Goal: each of the four conversions at least 2x PyTorch's throughput (`cast` against `.to()`).
 */
import * as ml from '../../src/index';
import { binding } from '../../src/api/binding';
import { dtypeCode } from '../../src/api/dtype';
import {
  Goal, MeasureOptions, Samples, Suite, SuiteContext, SuiteResult, TorchInfo, fmt, fmtRatio, fmtSpread, measure,
  median, medianOfRounds, relSpread, roundTimeRatios, runTorch,
} from '../harness';

const N = 1 << 24;
const GOAL_RATIO = 2;
type Half = 'bf16' | 'f16';
interface Conv { name: string; from: 'f32' | Half; to: 'f32' | Half }
const CONVS: Conv[] = [
  { name: 'f32->bf16', from: 'f32', to: 'bf16' }, { name: 'f32->f16', from: 'f32', to: 'f16' },
  { name: 'bf16->f32', from: 'bf16', to: 'f32' }, { name: 'f16->f32', from: 'f16', to: 'f32' },
];
/** `alloc`: a new output each call (cast / .to); `into`: the kernel alone, into a reused output. */
const MODES = ['alloc', 'into'] as const;
type Mode = typeof MODES[number];
const key = (c: Conv, m: Mode): string => `${c.name} ${m}`;

const OPTS: MeasureOptions = { warmup: 2, sampleMs: 50, minSamples: 5, maxSamples: 30, minTimeMs: 500 };

function ours(): Record<string, Samples> {
  return ml.tidy(() => {
    ml.manualSeed(0);
    const x32 = ml.randn([N]);
    const src: Record<string, ml.Tensor> = { f32: x32, bf16: x32.cast('bf16'), f16: x32.cast('f16') };
    const b = binding();
    const out: Record<string, Samples> = {};
    for (const c of CONVS) {
      const x = src[c.from];
      out[key(c, 'alloc')] = measure(() => ml.cast(x, c.to).dispose(), OPTS);
      const y = ml.Tensor._empty([N], c.to, 'cpu');
      const yh = y._h('bench'), xh = x._h('bench');
      out[key(c, 'into')] = measure(() => b.cast(yh, 0, dtypeCode(c.to), xh, 0, dtypeCode(c.from), N), OPTS);
      y.dispose();
    }
    return out;
  });
}

export const casts: Suite = {
  name: 'casts',
  summary: 'f32 <-> bf16 / f16 casts of 16M elements, ml.cast vs torch .to() (and the kernels alone vs copy_)',
  run(ctx: SuiteContext): SuiteResult {
    const keys = CONVS.flatMap((c) => MODES.map((m) => key(c, m)));
    const mine = new Map<string, number[][]>(keys.map((k) => [k, []]));
    const theirs = new Map<string, number[][]>(keys.map((k) => [k, []]));
    let torchSkipped: string | undefined;
    let torchInfo: TorchInfo | undefined;
    for (let r = 0; r < ctx.rounds; r++) {
      ctx.log(`casts round ${r + 1}/${ctx.rounds}: modalab`);
      const o = ours();
      for (const k of keys) mine.get(k)!.push(o[k].ns);
      if (torchSkipped) continue;
      ctx.log(`casts round ${r + 1}/${ctx.rounds}: torch`);
      const t = runTorch<Record<string, Samples>>('casts', { n: N, convs: CONVS, measure: OPTS }, ctx.threads);
      if (!t.ok) { torchSkipped = t.reason; continue; }
      torchInfo = t.run.info;
      for (const k of keys) theirs.get(k)!.push(t.run.results[k].ns);
    }
    // Throughput ratio = torch time / our time, round by round.
    const ratios = (k: string): number[] => roundTimeRatios(mine.get(k)!, theirs.get(k)!).map((x) => 1 / x);
    const gbps = (ns: number): number => (N * 6) / ns;   // 4 + 2 bytes read and written per element
    const rows = CONVS.flatMap((c) => MODES.map((mode) => {
      const k = key(c, mode);
      const m = mine.get(k)!, t = theirs.get(k)!;
      const tm = medianOfRounds(m), tt = t.length ? medianOfRounds(t) : null;
      return [c.name, mode === 'alloc' ? 'x.cast / x.to' : 'kernel / out.copy_', fmt(tm / 1e6), tt === null ? 'skipped' : fmt(tt / 1e6),
        tt === null ? 'n/a' : fmtRatio(median(ratios(k))), fmt(gbps(tm)), tt === null ? 'n/a' : fmt(gbps(tt)),
        `${fmtSpread(relSpread(m.flat()))} / ${fmtSpread(relSpread(t.flat()))}`];
    }));
    const goals: Goal[] = CONVS.map((c) => {
      const r = ratios(key(c, 'alloc'));
      return {
        text: `cast ${c.name} of 16M elements: modalab at least ${GOAL_RATIO}x PyTorch's throughput`,
        ratio: r.length ? median(r) : null,
        pass: (x) => x >= GOAL_RATIO,
        note: r.length > 1 ? `per round: ${r.map(fmtRatio).join(', ')}` : undefined,
      };
    });
    const paths = binding().halfPaths();
    return {
      title: 'casts: f32 <-> bf16 / f16, 16M elements',
      description:
        '`ml.cast(x, dtype)` of a 16M-element tensor (output disposed each call) against torch\'s `x.to(dtype)` ' +
        '(rows "x.cast / x.to"), and the conversion kernel alone writing into an output allocated once against ' +
        'torch\'s `out.copy_(x)` (rows "kernel / out.copy_"). Times are medians over rounds of each round\'s ' +
        'median; ratio = torch time / modalab time (above 1: modalab is faster); GB/s counts the bytes read and ' +
        'written (6 per element).',
      columns: ['cast', 'what', 'modalab ms', 'torch ms', 'ratio', 'modalab GB/s', 'torch GB/s', 'spread (m / t)'],
      rows,
      goals,
      notes: [
        `modalab cast path: ${paths.cast} (F16C / AVX-512 / AVX-512 BF16 instructions where the processor has ` +
        'them, patched to PyTorch\'s NaN and subnormal results; MODALAB_CAST_KERNEL forces one).',
        'A fresh 32-64 MB output is new memory for both libraries: its first touch faults every 4 KB page in, ' +
        'and on these VMs a fault costs microseconds, so the "x.cast / x.to" rows mostly time page faults; the ' +
        'kernel rows time the conversion itself.',
      ],
      torchSkipped,
      torchInfo,
    };
  },
};
