/**
 * mlp: one training step of a small MLP, 256 -> 512 -> 512 -> 10 with GELU, batch 128: zero grad, forward,
 * crossEntropy, backward, AdamW step. GEMMs dominate (0.27 GFLOP a step), but a step also runs dozens of small
 * ops (bias adds, activations, per-parameter optimizer updates), so it shows the autograd and optimizer overhead.
 * No goal yet; the ratio is tracked.
 */
import * as ml from '../../src/index';
import {
  MeasureOptions, Samples, Suite, SuiteContext, SuiteResult, TorchInfo, fmt, fmtRatio, fmtSpread, measure, median,
  medianOfRounds, relSpread, roundTimeRatios, runTorch,
} from '../harness';

const SIZES = [256, 512, 512, 10];
const BATCH = 128;
const LR = 1e-3;
const WEIGHT_DECAY = 0.01;

const OPTS: MeasureOptions = { warmup: 10, sampleMs: 0, minSamples: 30, maxSamples: 300, minTimeMs: 1500 };

/**
 * GEMM flops of a step: forward, dW of every layer, and dx of every layer but the first (the input needs no
 * gradient, in either library). Everything else in a step is small beside them.
 */
const layerFlops = SIZES.slice(1).map((out, i) => 2 * BATCH * SIZES[i] * out);
const FLOPS_PER_STEP = layerFlops.reduce((s, f, i) => s + (i === 0 ? 2 : 3) * f, 0);

interface Ours { samples: Samples; firstLoss: number; lastLoss: number }

function ours(): Ours {
  ml.manualSeed(0);
  const layers = SIZES.slice(1).map((out, i) => new ml.nn.Linear(SIZES[i], out));
  const params = layers.flatMap((l) => l.parameters());
  // A group that sets weightDecay decays every parameter, biases included, as torch.optim.AdamW does.
  const opt = new ml.optim.AdamW([{ params, weightDecay: WEIGHT_DECAY }], { lr: LR });
  const x = ml.randn([BATCH, SIZES[0]]);
  const yData = new Int32Array(BATCH).map((_, i) => (i * 7 + 3) % SIZES[SIZES.length - 1]);
  const y = ml.tensor(yData, [BATCH], { dtype: 'i32' });
  const losses: number[] = [];
  const step = (): void => ml.tidy(() => {
    opt.zeroGrad();
    let h: ml.Tensor = x;
    layers.forEach((l, i) => {
      h = l.forward(h);
      if (i < layers.length - 1) h = ml.gelu(h);
    });
    const loss = ml.crossEntropy(h, y);
    loss.backward();
    opt.step();
    losses.push(loss.item()); // the torch side reads loss.item() too
  });
  const samples = measure(step, OPTS);
  opt.dispose();
  x.dispose(); y.dispose();
  for (const p of params) p.dispose();
  return { samples, firstLoss: losses[0], lastLoss: losses[losses.length - 1] };
}

export const mlp: Suite = {
  name: 'mlp',
  summary: 'one AdamW training step of an MLP 256-512-512-10 (gelu) on batch 128, vs torch',
  run(ctx: SuiteContext): SuiteResult {
    // Per round: samples (ns per step) of each side.
    const mine: number[][] = [], theirs: number[][] = [];
    const losses: string[] = [];
    let torchSkipped: string | undefined;
    let torchInfo: TorchInfo | undefined;
    for (let r = 0; r < ctx.rounds; r++) {
      ctx.log(`mlp round ${r + 1}/${ctx.rounds}: modalab`);
      const o = ours();
      if (!(o.lastLoss < o.firstLoss)) throw new Error(`mlp: the loss did not fall (${o.firstLoss} -> ${o.lastLoss}); not timing a broken step`);
      mine.push(o.samples.ns);
      losses.push(`modalab ${o.firstLoss.toFixed(3)} -> ${o.lastLoss.toFixed(3)}`);
      if (torchSkipped) continue;
      ctx.log(`mlp round ${r + 1}/${ctx.rounds}: torch`);
      const t = runTorch<{ step: Samples; firstLoss: number; lastLoss: number }>('mlp',
        { batch: BATCH, sizes: SIZES, lr: LR, weightDecay: WEIGHT_DECAY, measure: OPTS }, ctx.threads);
      if (!t.ok) { torchSkipped = t.reason; continue; }
      torchInfo = t.run.info;
      theirs.push(t.run.results.step.ns);
      losses.push(`torch ${t.run.results.firstLoss.toFixed(3)} -> ${t.run.results.lastLoss.toFixed(3)}`);
    }
    const m = medianOfRounds(mine), t = theirs.length ? medianOfRounds(theirs) : null;
    const ratios = roundTimeRatios(mine, theirs);
    return {
      title: 'mlp: one training step',
      description:
        `An MLP ${SIZES.join(' -> ')} with GELU (exact) between layers, batch ${BATCH}, f32: \`opt.zeroGrad()\`, ` +
        'forward through `nn.Linear` and `ml.gelu`, `ml.crossEntropy`, `backward()`, AdamW `step()` ' +
        `(lr ${LR}, weight decay ${WEIGHT_DECAY}), each step in \`ml.tidy\`, the loss read with \`item()\`; ` +
        'PyTorch does the same with `zero_grad(set_to_none=True)`, `nn.Linear`, `F.gelu`, `F.cross_entropy` and ' +
        '`torch.optim.AdamW`. Times are the median over rounds of each round\'s median; ratio = modalab time / ' +
        'torch time, the median of the per-round ratios (below 1: modalab is faster).',
      columns: ['step', 'modalab ms', 'torch ms', 'ratio', 'modalab GFLOP/s', 'torch GFLOP/s', 'spread (m / t)',
        'samples (m / t)'],
      rows: [[`MLP ${SIZES.join('-')}, batch ${BATCH}`, fmt(m / 1e6), t === null ? 'skipped' : fmt(t / 1e6),
        t === null ? 'n/a' : fmtRatio(median(ratios)), fmt(FLOPS_PER_STEP / m), t === null ? 'n/a' : fmt(FLOPS_PER_STEP / t),
        `${fmtSpread(relSpread(mine.flat()))} / ${fmtSpread(relSpread(theirs.flat()))}`,
        `${mine.flat().length} / ${theirs.flat().length}`]],
      goals: [],
      notes: [
        `GFLOP/s counts ${(FLOPS_PER_STEP / 1e9).toFixed(3)} GFLOP a step (the GEMMs of forward and backward). ` +
        (ratios.length > 1 ? `Ratio per round: ${ratios.map(fmtRatio).join(', ')}. ` : '') +
        `Loss over the timed steps (a sanity check; the two inits differ): ${losses.join('; ')}.`,
      ],
      torchSkipped,
      torchInfo,
    };
  },
};
