/**
 * clip: one AdamW training step of the stage-1 dual encoder (src/experiments/models, `createAlignModel()` with its
 * defaults): a ViT on 32x32 images (patch 4, width 128, 4 layers, 4 heads) and a causal text transformer
 * (vocabulary 1024, context 32, width 128, 4 layers, 4 heads), embedding 128, InfoNCE, batch 128.
 * modalab in f32 and under ml.autocast('bf16'), PyTorch (bench/torch/clip_model.py, the same model) in f32, in
 * the same run. Goal: modalab f32 at least 2x PyTorch's samples per second.
 *
 * After the timing, one extra modalab f32 step runs with every native call timed (a wrapper around each
 * function of the addon), which splits the step into kernels and what is left (JavaScript: autograd, tidy,
 * argument checks); it is reported in the notes.
 */
import * as ml from '../../src/index';
import { binding } from '../../src/api/binding';
import { createAlignModel, AlignModel } from '../../src/experiments/models';
import {
  Goal, MeasureOptions, Samples, Suite, SuiteContext, SuiteResult, TorchInfo, fmt, fmtRatio, fmtSpread, measure, median,
  medianOfRounds, relSpread, roundTimeRatios, runTorch,
} from '../harness';

const BATCH = 128;
const LR = 1e-4;
const WEIGHT_DECAY = 0.1;
const NUM_BATCHES = 4;
const GOAL = 2;
/**
 * Steps are long (seconds on 2 cores): a fixed few per round, and at most MAX_ROUNDS rounds whatever --rounds
 * says, keep the suite within a couple of minutes (PyTorch's start-up is a good part of each round).
 */
const OPTS: MeasureOptions = { warmup: 1, sampleMs: 0, minSamples: 3, maxSamples: 3, minTimeMs: 0, callsPerSample: 1 };
const MAX_ROUNDS = 2;

interface Batch { images: ml.Tensor; tokens: ml.Tensor<'i32'>; lengths: ml.Tensor<'i32'> }

function batches(model: AlignModel): Batch[] {
  const c = model.config;
  let seed = 777;
  const rand = (): number => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
  return Array.from({ length: NUM_BATCHES }, () => {
    const T = c.contextLength;
    const lens = Int32Array.from({ length: BATCH }, () => 1 + Math.floor(rand() * T));
    const toks = new Int32Array(BATCH * T);
    for (let b = 0; b < BATCH; b++) for (let t = 0; t < lens[b]; t++) toks[b * T + t] = 1 + Math.floor(rand() * (c.vocabSize - 1));
    return {
      images: ml.randn([BATCH, c.channels, c.imageSize, c.imageSize]).keep(),
      tokens: ml.tensor(toks, [BATCH, T], { dtype: 'i32' }).keep(),
      lengths: ml.tensor(lens, [BATCH], { dtype: 'i32' }).keep(),
    };
  });
}

interface Ours { samples: Samples; firstLoss: number; lastLoss: number; finite: boolean }

function setup(): { model: AlignModel; opt: ml.optim.AdamW; data: Batch[] } {
  ml.manualSeed(0);
  const model = createAlignModel({ arch: 'dual' });
  const opt = new ml.optim.AdamW(model.parameters(), { lr: LR, betas: [0.9, 0.98], eps: 1e-6, weightDecay: WEIGHT_DECAY });
  return { model, opt, data: batches(model) };
}

function ours(bf16: boolean): Ours {
  const { model, opt, data } = setup();
  const losses: number[] = [];
  const step = (): void => ml.tidy(() => {
    const b = data[losses.length % NUM_BATCHES];
    opt.zeroGrad();
    const r = bf16 ? ml.autocast('bf16', () => model.loss(b)) : model.loss(b);
    r.loss.backward();
    opt.step();
    losses.push(r.parts.infonce);
  });
  const samples = measure(step, OPTS);
  opt.dispose();
  model.dispose();
  for (const b of data) { b.images.dispose(); b.tokens.dispose(); b.lengths.dispose(); }
  return { samples, firstLoss: losses[0], lastLoss: losses[losses.length - 1], finite: losses.every(Number.isFinite) };
}

/** One f32 step with every native call timed: [name, ms] sorted, plus the step's total. */
function profile(): { total: number; kernels: Array<[string, number, number]> } {
  const { model, opt, data } = setup();
  const step = (): void => ml.tidy(() => {
    opt.zeroGrad();
    model.loss(data[0]).loss.backward();
    opt.step();
  });
  step();  // warm
  const b = binding() as unknown as Record<string, unknown>;
  const orig = new Map<string, (...a: unknown[]) => unknown>();
  const time = new Map<string, [number, number]>();
  for (const [k, f] of Object.entries(b)) {
    if (typeof f !== 'function') continue;
    orig.set(k, f as (...a: unknown[]) => unknown);
    b[k] = (...args: unknown[]): unknown => {
      const t0 = process.hrtime.bigint();
      try { return (f as (...a: unknown[]) => unknown)(...args); } finally {
        const e = time.get(k) ?? [0, 0];
        e[0] += Number(process.hrtime.bigint() - t0) / 1e6;
        e[1]++;
        time.set(k, e);
      }
    };
  }
  const t0 = process.hrtime.bigint();
  try { step(); } finally { for (const [k, f] of orig) b[k] = f; }
  const total = Number(process.hrtime.bigint() - t0) / 1e6;
  opt.dispose();
  model.dispose();
  for (const d of data) { d.images.dispose(); d.tokens.dispose(); d.lengths.dispose(); }
  return { total, kernels: [...time].map(([k, [ms, n]]) => [k, ms, n] as [string, number, number]).sort((x, y) => y[1] - x[1]) };
}

export const clip: Suite = {
  name: 'clip',
  summary: 'one AdamW step of the stage-1 dual encoder (ViT 32x32/4 + text transformer, width 128, batch 128), f32 and bf16, vs torch',
  run(ctx: SuiteContext): SuiteResult {
    const f32: number[][] = [], bf16: number[][] = [], theirs: number[][] = [];
    const losses: string[] = [];
    let torchSkipped: string | undefined;
    let torchInfo: TorchInfo | undefined;
    const rounds = Math.min(ctx.rounds, MAX_ROUNDS);
    for (let r = 0; r < rounds; r++) {
      ctx.log(`clip round ${r + 1}/${rounds}: modalab f32`);
      const o = ours(false);
      // Untrained, InfoNCE over 128 pairs is near ln 128 = 4.85; anything far off means a broken step.
      if (!o.finite || !(Math.abs(o.firstLoss - Math.log(BATCH)) < 1)) {
        throw new Error(`clip: first loss ${o.firstLoss} (expected near ln ${BATCH} = ${Math.log(BATCH).toFixed(2)}, all finite); not timing a broken step`);
      }
      f32.push(o.samples.ns);
      ctx.log(`clip round ${r + 1}/${rounds}: modalab bf16 autocast`);
      const h = ours(true);
      bf16.push(h.samples.ns);
      if (r === 0) losses.push(`modalab f32 ${o.firstLoss.toFixed(3)} -> ${o.lastLoss.toFixed(3)}`, `bf16 ${h.firstLoss.toFixed(3)} -> ${h.lastLoss.toFixed(3)}`);
      if (torchSkipped) continue;
      ctx.log(`clip round ${r + 1}/${rounds}: torch`);
      const t = runTorch<{ step: Samples; firstLoss: number; lastLoss: number }>('clip',
        { model: { arch: 'dual' }, batch: BATCH, lr: LR, weightDecay: WEIGHT_DECAY, numBatches: NUM_BATCHES, measure: OPTS },
        ctx.threads);
      if (!t.ok) { torchSkipped = t.reason; continue; }
      torchInfo = t.run.info;
      theirs.push(t.run.results.step.ns);
      if (r === 0) losses.push(`torch ${t.run.results.firstLoss.toFixed(3)} -> ${t.run.results.lastLoss.toFixed(3)}`);
    }
    ctx.log('clip: one profiled modalab f32 step');
    const prof = profile();
    const native = prof.kernels.reduce((s, [, ms]) => s + ms, 0);
    const top = prof.kernels.slice(0, 8).map(([k, ms, n]) => `${k} ${ms.toFixed(0)} ms (${n} calls)`).join(', ');

    const m = medianOfRounds(f32), mb = medianOfRounds(bf16), t = theirs.length ? medianOfRounds(theirs) : null;
    // samples/s ratio = torch time / modalab time, per round.
    const speed = roundTimeRatios(f32, theirs).map((x) => 1 / x);
    const speedBf16 = roundTimeRatios(bf16, theirs).map((x) => 1 / x);
    const sps = (ns: number): string => fmt(BATCH / (ns / 1e9));
    const goals: Goal[] = [{
      text: `clip dual encoder training step, f32: modalab at least ${GOAL}x PyTorch's samples/s`,
      ratio: speed.length ? median(speed) : null,
      pass: (x) => x >= GOAL,
      note: speed.length > 1 ? `per round: ${speed.map(fmtRatio).join(', ')}` : undefined,
    }];
    return {
      title: 'clip: one training step of the stage-1 dual encoder',
      description:
        '`createAlignModel()` with its defaults: a ViT on 32x32 images (patch 4, width 128, 4 layers, 4 heads, ' +
        'class-token pooling) and a causal text transformer (vocabulary 1024, context 32, width 128, 4 layers, 4 ' +
        `heads, end-of-text pooling), projections to 128, learnable logit scale, \`ml.infoNCE\`; batch ${BATCH} ` +
        `of random images and captions of random length (${NUM_BATCHES} batches cycled); a step is \`zeroGrad\`, ` +
        `\`model.loss\`, \`backward\`, AdamW \`step\` (lr ${LR}, betas 0.9/0.98, weight decay ${WEIGHT_DECAY} on ` +
        'tensors of two or more dims), in `ml.tidy`. bf16 runs the same step inside `ml.autocast(\'bf16\')`. ' +
        'PyTorch: bench/torch/clip_model.py, the same model and step in float32 (explicit softmax attention with ' +
        'masks). Times are medians over rounds (at most ' + MAX_ROUNDS + ') of each round\'s median of ' + OPTS.minSamples +
        ' steps after one warm-up step; speed = torch time / modalab time.',
      columns: ['step', 'ms / step', 'steps/s', 'samples/s', 'speed vs torch', 'spread', 'samples'],
      rows: [
        ['modalab f32', fmt(m / 1e6), fmt(1e9 / m), sps(m), speed.length ? fmtRatio(median(speed)) : 'n/a', fmtSpread(relSpread(f32.flat())), String(f32.flat().length)],
        ['modalab bf16 autocast', fmt(mb / 1e6), fmt(1e9 / mb), sps(mb), speedBf16.length ? fmtRatio(median(speedBf16)) : 'n/a', fmtSpread(relSpread(bf16.flat())), String(bf16.flat().length)],
        ['torch f32', t === null ? 'skipped' : fmt(t / 1e6), t === null ? 'n/a' : fmt(1e9 / t), t === null ? 'n/a' : sps(t), '1.00x', fmtSpread(relSpread(theirs.flat())), String(theirs.flat().length)],
      ],
      goals,
      notes: [
        `One profiled modalab f32 step took ${prof.total.toFixed(0)} ms, ${native.toFixed(0)} ms of it in native calls ` +
        `(${((native / prof.total) * 100).toFixed(0)}%); the largest: ${top}. ` +
        `Loss over the timed steps of the first round (InfoNCE; the inits differ): ${losses.join('; ')}.`,
      ],
      torchSkipped,
      torchInfo,
    };
  },
};
