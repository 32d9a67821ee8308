/**
 * attention: the fused ml.attention (forward + backward) beside PyTorch's plain attention with autograd
 * (q k^T, softmax, @ v), at B4 H4 N256 D64, without and with the causal mask; and the peak memory of one forward
 * and backward at N = 8192 (B1 H1 D64), where one score matrix is 256 MB.
 * Goals: at least 2x PyTorch's speed for the step, at least 3x with the causal mask.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import * as ml from '../../src/index';
import {
  Goal, MeasureOptions, Samples, Suite, SuiteContext, SuiteResult, TorchInfo, fmt, fmtRatio, fmtSpread, measure,
  median, medianOfRounds, relSpread, roundTimeRatios, runTorch,
} from '../harness';

const B = 4, H = 4, N = 256, D = 64;
const MEM = { N: 8192, D: 64 };
const GOALS = { plain: 2, causal: 3 };
const CASES = ['plain', 'causal'] as const;
type Case = typeof CASES[number];

const OPTS: MeasureOptions = { warmup: 5, sampleMs: 0, minSamples: 20, maxSamples: 300, minTimeMs: 1000 };

/** Multiply-adds of the full (unmasked) problem: forward q k^T and P v, backward also dV, dP, dQ, dK. */
const FWD_FLOPS = 2 * 2 * B * H * N * N * D;
const STEP_FLOPS = 3 * FWD_FLOPS;

interface Ours { step: Record<Case, Samples>; forward: Record<Case, Samples> }

function ours(): Ours {
  return ml.tidy(() => {
    ml.manualSeed(0);
    const [q, k, v] = [0, 1, 2].map(() => ml.randn([B, H, N, D], { requiresGrad: true }));
    const g = ml.randn([B, H, N, D]);
    const step = {} as Record<Case, Samples>, forward = {} as Record<Case, Samples>;
    for (const c of CASES) {
      const causal = c === 'causal';
      step[c] = measure(() => ml.tidy(() => {
        ml.attention(q, k, v, { causal }).backward(g);
        for (const t of [q, k, v]) { t.grad!.dispose(); t.grad = null; }
      }), OPTS);
      forward[c] = measure(() => ml.noGrad(() => ml.attention(q, k, v, { causal }).dispose()), OPTS);
    }
    return { step, forward };
  });
}

/**
 * Peak memory of one forward + backward at N = MEM.N, in a fresh process (as the torch side): the growth of the
 * peak resident size, and the high-water mark of live tensor bytes (ml.memory().peakBytes).
 */
function oursMemory(threads: number): { rssMB: number; tensorMB: number } | { error: string } {
  const indexJs = path.join(__dirname, '..', '..', 'src', 'index.js');
  const code = `
    const ml = require(${JSON.stringify(indexJs)});
    ml.manualSeed(0);
    const mk = (n) => ml.randn([1, 1, n, ${MEM.D}], { requiresGrad: true });
    ml.attention(mk(8), mk(8), mk(8)).sum().backward();
    const q = mk(${MEM.N}), k = mk(${MEM.N}), v = mk(${MEM.N}), g = ml.randn([1, 1, ${MEM.N}, ${MEM.D}]);
    const rss0 = process.resourceUsage().maxRSS;
    ml.resetPeak();
    const live0 = ml.memory().numBytes;
    ml.attention(q, k, v).backward(g);
    const tensorMB = (ml.memory().peakBytes - live0) / 2 ** 20;
    console.log(JSON.stringify({ rssMB: (process.resourceUsage().maxRSS - rss0) / 1024, tensorMB }));`;
  const r = spawnSync(process.execPath, ['-e', code], {
    encoding: 'utf8', timeout: 600_000, env: { ...process.env, MODALAB_NUM_THREADS: String(threads) },
  });
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || 'failed').trim().split('\n').slice(-2).join(' | ') };
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

interface TorchResults {
  step: Record<Case, Samples>;
  forward: Record<Case, Samples>;
  memory: { rssMB: number } | { error: string };
}

export const attention: Suite = {
  name: 'attention',
  summary: `fused attention B${B} H${H} N${N} D${D} forward+backward (plain, causal) and peak memory at N ${MEM.N}, vs torch`,
  run(ctx: SuiteContext): SuiteResult {
    const mine = { step: { plain: [], causal: [] }, forward: { plain: [], causal: [] } } as Record<'step' | 'forward', Record<Case, number[][]>>;
    const theirs = { step: { plain: [], causal: [] }, forward: { plain: [], causal: [] } } as Record<'step' | 'forward', Record<Case, number[][]>>;
    let torchSkipped: string | undefined;
    let torchInfo: TorchInfo | undefined;
    let torchMem: TorchResults['memory'] | undefined;
    for (let r = 0; r < ctx.rounds; r++) {
      ctx.log(`attention round ${r + 1}/${ctx.rounds}: modalab`);
      const o = ours();
      for (const c of CASES) { mine.step[c].push(o.step[c].ns); mine.forward[c].push(o.forward[c].ns); }
      if (torchSkipped) continue;
      ctx.log(`attention round ${r + 1}/${ctx.rounds}: torch${r === 0 ? ' (and its memory run at N ' + MEM.N + ')' : ''}`);
      const t = runTorch<TorchResults>('attention', { B, H, N, D, measure: OPTS, memory: MEM }, ctx.threads);
      if (!t.ok) { torchSkipped = t.reason; continue; }
      torchInfo = t.run.info;
      torchMem ??= t.run.results.memory;
      for (const c of CASES) {
        theirs.step[c].push(t.run.results.step[c].ns);
        theirs.forward[c].push(t.run.results.forward[c].ns);
      }
    }
    ctx.log(`attention: modalab memory run at N ${MEM.N}`);
    const mem = oursMemory(ctx.threads);

    // Speedup = torch time / our time, round by round.
    const speedups = (kind: 'step' | 'forward', c: Case): number[] =>
      roundTimeRatios(mine[kind][c], theirs[kind][c]).map((x) => 1 / x);
    const timeRow = (kind: 'step' | 'forward', c: Case): string[] => {
      const m = mine[kind][c], t = theirs[kind][c];
      const tm = medianOfRounds(m), tt = t.length ? medianOfRounds(t) : null;
      const flops = kind === 'step' ? STEP_FLOPS : FWD_FLOPS;
      return [`B${B} H${H} N${N} D${D} ${kind === 'step' ? 'forward+backward' : 'forward'}, ${c}`, fmt(tm / 1e6),
        tt === null ? 'skipped' : fmt(tt / 1e6), tt === null ? 'n/a' : fmtRatio(median(speedups(kind, c))),
        `${fmt(flops / tm)} / ${tt === null ? 'n/a' : fmt(flops / tt)}`,
        `${fmtSpread(relSpread(m.flat()))} / ${fmtSpread(relSpread(t.flat()))}`, `${m.flat().length} / ${t.flat().length}`];
    };
    const rows = [timeRow('step', 'plain'), timeRow('step', 'causal'), timeRow('forward', 'plain'), timeRow('forward', 'causal')];
    const ourRss = 'rssMB' in mem ? mem.rssMB : null;
    const torchRss = torchMem && 'rssMB' in torchMem ? torchMem.rssMB : null;
    rows.push([`N ${MEM.N} B1 H1 D${MEM.D} forward+backward: peak memory growth, MB`, fmt(ourRss),
      torchRss === null ? (torchSkipped ? 'skipped' : 'n/a') : fmt(torchRss),
      ourRss && torchRss ? `${(torchRss / ourRss).toFixed(0)}x less` : 'n/a', '', '', '1 / 1']);

    const goals: Goal[] = CASES.map((c) => {
      const s = speedups('step', c);
      return {
        text: `attention B${B} H${H} N${N} D${D} forward+backward${c === 'causal' ? ', causal' : ''}: at least ${GOALS[c]}x PyTorch's speed`,
        ratio: s.length ? median(s) : null,
        pass: (x: number) => x >= GOALS[c],
        note: s.length > 1 ? `per round: ${s.map(fmtRatio).join(', ')}` : undefined,
      };
    });
    const notes = [
      `GFLOP/s counts the unmasked problem (${(FWD_FLOPS / 1e9).toFixed(3)} GFLOP forward, 3x that for ` +
      'forward+backward) for both libraries, so causal rows show the work the mask lets each one skip.',
      'Memory: the growth of the peak resident size (maxRSS) of a fresh process over one forward and backward, after ' +
      'the inputs exist and a small warm-up call; one N x N f32 score matrix is ' +
      `${(MEM.N * MEM.N * 4 / 2 ** 20).toFixed(0)} MB. ` +
      ('tensorMB' in mem ? `modalab's tensors alone (ml.memory().peakBytes): ${fmt(mem.tensorMB)} MB; the rest is ` +
        'the kernel\'s tiles and dq group buffers (O(N D)). ' : `modalab memory run failed: ${(mem as { error: string }).error}. `) +
      (torchMem && 'error' in torchMem ? `torch memory run failed: ${torchMem.error}` : ''),
      `modalab SIMD: ${ml.backendInfo().simd} (the attention kernel picks AVX-512, AVX2 + FMA or baseline at load time).`,
    ];
    return {
      title: 'attention: fused scaled dot-product attention',
      description:
        `\`ml.attention(q, k, v, { causal })\` on q, k, v [${B}, ${H}, ${N}, ${D}] f32 that require gradients, then ` +
        '`backward(g)` with a fixed g, the gradients disposed each step (in `ml.tidy`), against PyTorch\'s plain ' +
        'attention with autograd: `softmax((q @ k^T) * scale [masked_fill causal]) @ v`, `backward(g)`, grads set ' +
        'to None (torch 1.13 has no fused CPU attention). Forward rows run without gradients (`ml.noGrad` / ' +
        '`torch.no_grad`). Times are the median over rounds of each round\'s median; speedup = torch time / modalab ' +
        'time, the median of the per-round ratios (above 1: modalab is faster).',
      columns: ['case', 'modalab', 'torch', 'speedup', 'GFLOP/s (m / t)', 'spread (m / t)', 'samples (m / t)'],
      rows: rows.map((r, i) => (i < 4 ? [r[0] + ' (ms)', ...r.slice(1)] : r)),
      goals,
      notes,
      torchSkipped,
      torchInfo,
    };
  },
};
