/**
 * infonce: CLIP's contrastive loss, forward + backward. `ml.infoNCE` (fused and tiled, no N x N buffer) against
 * PyTorch's plain formulation (logits = s a b^T, two F.cross_entropy, autograd) at N = 4096, D = 256, with the
 * peak memory of a step on both sides; then N = 65536, D = 256 for modalab alone (the plain formulation would
 * need 16 GB for the logits and as much again for their gradient).
 * Goal: at N = 4096, at least 2x PyTorch's speed.
 */
import * as fs from 'fs';
import * as ml from '../../src/index';
import {
  Goal, MeasureOptions, Samples, Suite, SuiteContext, SuiteResult, TorchInfo, fmt, fmtRatio, fmtSpread, measure,
  median, medianOfRounds, relSpread, roundTimeRatios, runTorch,
} from '../harness';

const N = 4096;
const BIG_N = 65536;
const D = 256;
const LOGIT_SCALE = Math.log(1 / 0.07);   // CLIP's initial temperature
const GOAL_RATIO = 2;

const OPTS: MeasureOptions = { warmup: 2, sampleMs: 0, minSamples: 5, maxSamples: 30, minTimeMs: 1500 };

/** GEMM flops of a fused step: S in the forward, S again, da and db in the backward (4 x 2 N^2 D). */
const fusedFlops = (n: number): number => 4 * 2 * n * n * D;

function statusKb(key: string): number {
  const line = fs.readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith(key + ':'));
  if (!line) throw new Error(`no ${key} in /proc/self/status`);
  return Number(line.split(/\s+/)[1]);
}

/**
 * The process's peak resident memory during fn() above its resident memory before it (Linux: "5" written to
 * /proc/self/clear_refs resets the peak, VmHWM), or null where that is not allowed. This counts everything,
 * native scratch included, which the tensor count (ml.memory().peakBytes) does not see.
 */
function peakRss(fn: () => void): number | null {
  (globalThis as { gc?: () => void }).gc?.();
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    fn();
    return null;
  }
  const base = statusKb('VmRSS');
  fn();
  return (statusKb('VmHWM') - base) * 1024;
}

interface Setup { a: ml.Tensor; b: ml.Tensor; ls: ml.Tensor; losses: number[]; step: () => void; dispose: () => void }

/** Unit rows a, b [n, D] and a logit scale that require grad; step() = forward + backward, gradients dropped. */
function setup(n: number): Setup {
  ml.manualSeed(n);
  const unit = (): ml.Tensor => ml.tidy(() => {
    const x = ml.randn([n, D]);
    return ml.div(x, ml.sqrt(ml.sum(ml.square(x), -1, true))).requiresGrad_().keep();
  });
  const a = unit(), b = unit();
  const ls = ml.tensor(LOGIT_SCALE, [], { requiresGrad: true });
  const losses: number[] = [];
  const step = (): void => {
    ml.tidy(() => {
      const loss = ml.infoNCE(a, b, ls);
      loss.backward();
      losses.push(loss.item());
    });
    for (const t of [a, b, ls]) {
      t.grad?.dispose();
      t.grad = null;
    }
  };
  return { a, b, ls, losses, step, dispose: () => { for (const t of [a, b, ls]) t.dispose(); } };
}

interface Mem { tensorBytes: number; rssBytes: number | null }

/** One step's peak memory above what was live before it: tensors (exact) and the whole process (RSS). */
function stepMemory(s: Setup): Mem {
  const live = ml.memory().numBytes;
  ml.resetPeak();
  const rssBytes = peakRss(s.step);
  return { tensorBytes: ml.memory().peakBytes - live, rssBytes };
}

const mb = (x: number | null | undefined): string => (x === null || x === undefined ? 'n/a' : `${fmt(x / 1e6)} MB`);

export const infonce: Suite = {
  name: 'infonce',
  summary: `infoNCE forward+backward at N ${N}, D ${D} vs torch (time, peak memory); N ${BIG_N} for modalab alone`,
  run(ctx: SuiteContext): SuiteResult {
    const mine: number[][] = [], theirs: number[][] = [];
    let myMem: Mem | null = null;
    let torchPeak: number | null = null, torchPeakMethod = '';
    const losses: string[] = [];
    let torchSkipped: string | undefined;
    let torchInfo: TorchInfo | undefined;
    for (let r = 0; r < ctx.rounds; r++) {
      ctx.log(`infonce round ${r + 1}/${ctx.rounds}: modalab N ${N}`);
      const s = setup(N);
      s.step();   // first call: thread-local scratch and the packing buffers, as torch's side warms up too
      if (r === 0) myMem = stepMemory(s);
      mine.push(measure(s.step, OPTS).ns);
      if (r === 0) losses.push(`modalab ${s.losses[s.losses.length - 1].toFixed(4)}`);
      s.dispose();
      if (torchSkipped) continue;
      ctx.log(`infonce round ${r + 1}/${ctx.rounds}: torch N ${N}`);
      const t = runTorch<{ step: Samples; loss: number; peakExtraBytes: number; peakMethod: string }>('infonce',
        { N, D, logitScale: LOGIT_SCALE, measure: OPTS }, ctx.threads);
      if (!t.ok) { torchSkipped = t.reason; continue; }
      torchInfo = t.run.info;
      theirs.push(t.run.results.step.ns);
      if (r === 0) {
        torchPeak = t.run.results.peakExtraBytes;
        torchPeakMethod = t.run.results.peakMethod;
        losses.push(`torch ${t.run.results.loss.toFixed(4)}`);
      }
    }

    // N = 65536: one step, once (about half a minute on two cores); its memory measured on that step.
    ctx.log(`infonce: modalab N ${BIG_N} (one step)`);
    const big = setup(BIG_N);
    const t0 = process.hrtime.bigint();
    const bigMem = stepMemory(big);
    const bigNs = Number(process.hrtime.bigint() - t0);
    const bigLoss = big.losses[0];
    big.dispose();
    if (!Number.isFinite(bigLoss)) throw new Error(`infonce: loss at N ${BIG_N} is ${bigLoss}`);

    const m = medianOfRounds(mine), t = theirs.length ? medianOfRounds(theirs) : null;
    const speed = roundTimeRatios(mine, theirs).map((x) => 1 / x);   // torch time / modalab time
    const goals: Goal[] = [{
      text: `infoNCE N ${N} D ${D} forward+backward: modalab at least ${GOAL_RATIO}x PyTorch's speed`,
      ratio: speed.length ? median(speed) : null,
      pass: (x) => x >= GOAL_RATIO,
      note: speed.length > 1 ? `per round: ${speed.map(fmtRatio).join(', ')}` : undefined,
    }];
    const naive = (n: number): number => 4 * n * n;   // bytes of the f32 logits alone
    return {
      title: 'infonce: contrastive loss forward + backward',
      description:
        `CLIP's symmetric InfoNCE on a, b [N, ${D}] (L2-normalised rows) with a learnable logit scale ` +
        `(log(1/0.07)), forward and backward, gradients dropped after each step. modalab: \`ml.infoNCE(a, b, ` +
        'logitScale)`, fused and tiled (Inf-CL): no N x N buffer. PyTorch: `s = logit_scale.exp().clamp(max=100)`, ' +
        '`logits = s * a @ b.T`, `(F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2`, `backward()`. ' +
        'Times are the median over rounds of each round\'s median; speed = torch time / modalab time, the median ' +
        'of the per-round ratios (above 1: modalab is faster). Peak memory = the peak resident memory of one step ' +
        'above the resident memory before it (inputs excluded), for modalab also the peak of live tensor bytes.',
      columns: ['case', 'modalab ms', 'torch ms', 'speed', 'modalab GFLOP/s', 'modalab peak (RSS / tensors)',
        'torch peak', 'spread (m / t)', 'samples (m / t)'],
      rows: [
        [`N ${N}, D ${D}`, fmt(m / 1e6), t === null ? 'skipped' : fmt(t / 1e6),
          t === null ? 'n/a' : fmtRatio(median(speed)), fmt(fusedFlops(N) / m),
          `${mb(myMem?.rssBytes)} / ${mb(myMem?.tensorBytes)}`, torchPeak === null ? 'n/a' : mb(torchPeak),
          `${fmtSpread(relSpread(mine.flat()))} / ${fmtSpread(relSpread(theirs.flat()))}`,
          `${mine.flat().length} / ${theirs.flat().length}`],
        [`N ${BIG_N}, D ${D}`, fmt(bigNs / 1e6), 'not run', 'n/a', fmt(fusedFlops(BIG_N) / bigNs),
          `${mb(bigMem.rssBytes)} / ${mb(bigMem.tensorBytes)}`, `(logits alone: ${mb(naive(BIG_N))})`, 'one step', '1 / 0'],
      ],
      goals,
      notes: [
        `modalab GFLOP/s counts the four GEMMs of a fused step, 8 N^2 D flops (the score tiles in the forward, ` +
        'recomputed in the backward, and the two gradient products); PyTorch runs three (it keeps the logits). ' +
        `The N ${BIG_N} step is one timed call, memory included; its tensor peak is a, b's gradients as the ` +
        'kernel writes them plus their copies as the leaves\' .grad. RSS is the growth of resident memory over the ' +
        'step: it also sees native scratch (the kernel packs a copy of b, N D floats), but memory the C allocator ' +
        'kept from earlier frees is reused without growing it, so it can read below the tensor peak; PyTorch\'s ' +
        'N x N buffers are large enough to be mapped and unmapped on every step, so its figure is close to its ' +
        'true peak.' +
        (torchPeakMethod ? ` Peak RSS read as ${torchPeakMethod} on the torch side.` : '') +
        ` Losses of the first round (different random inputs, both near ln N + spread): ${losses.join('; ')}; ` +
        `N ${BIG_N}: ${bigLoss.toFixed(4)}.`,
      ],
      torchSkipped,
      torchInfo,
    };
  },
};
