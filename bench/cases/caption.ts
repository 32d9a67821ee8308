/**
 * caption: one training step of the caption stage's model (src/experiments/stages/caption/model.ts) at the caption
 * `quick` preset's shapes, modalab beside the same model in PyTorch (bench/torch/caption.py) in the same run.
 *
 * The model: the align `quick` preset's image encoder (ViT on 32x32 images, patch 4, width 96, 3 layers, 4 heads),
 * frozen (eval mode, forward only under noGrad); all 65 of its output tokens go through the projector
 * Linear(96, 256)-GELU-Linear(256, 128) and into a GPT (width 128, 4 layers, 4 heads, context 128, vocabulary
 * 1024) as a prefix; the loss is the GPT's next-token cross entropy on the caption positions only (`lengths`).
 * Batch 24 rows of up to 32 caption tokens of varying length. A step is what the caption trainer does:
 * zeroGrad, `CaptionModel.loss`, backward, `clipGradNorm` (1), AdamW step on projector + GPT (the preset's
 * lr 2e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.05 on tensors of two or more dims); no LR schedule.
 *
 * Both sides start from the same weights and see the same batches: modalab writes its initial weights and the
 * batches to a temporary safetensors file, PyTorch loads them. The loss of batch 0 at those weights (no update)
 * must agree within 1e-3 relative, or the suite stops: a ratio between two different computations means nothing.
 * modalab also runs the step under `ml.autocast('bf16')`. No goal is set (the issue names none): the ratio is
 * reported for tracking.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ml from '../../src/index';
import { createAlignModel } from '../../src/experiments/models';
import { GPT } from '../../src/experiments/models/gpt';
import { CaptionModel, CaptionNet } from '../../src/experiments/stages/caption/model';
import {
  MeasureOptions, Samples, Suite, SuiteContext, SuiteResult, TorchInfo, fmt, fmtRatio, fmtSpread, measure, median,
  medianOfRounds, relSpread, roundTimeRatios, runTorch,
} from '../harness';

/** The align `quick` preset's model (src/experiments/stages/align/config.ts); only the image tower runs. */
const ALIGN = { arch: 'dual' as const, imageSize: 32, patchSize: 4, channels: 3, visionWidth: 96, visionLayers: 3, visionHeads: 4, textWidth: 96, textLayers: 3, textHeads: 4, embedDim: 96 };
/** The caption stage's GPT trained from scratch (lm.scratch defaults) with the align tokenizer's 1024 ids. */
const GPT_SHAPE = { vocabSize: 1024, contextLength: 128, width: 128, layers: 4, heads: 4, mlpRatio: 4 };
const PROJECTOR_HIDDEN = 256;
/** Caption quick preset: batch 24, data.maxTextLen 32. */
const BATCH = 24;
const T = 32;
const HYPER = { lr: 2e-3, betas: [0.9, 0.95] as [number, number], eps: 1e-8, weightDecay: 0.05 };
const GRAD_CLIP = 1;
const NUM_BATCHES = 4;
const LOSS_RTOL = 1e-3;
/** A fixed few steps per round (a step is a few hundred ms on 2 cores); at most MAX_ROUNDS rounds keep the suite near two minutes. */
const OPTS: MeasureOptions = { warmup: 1, sampleMs: 0, minSamples: 5, maxSamples: 5, minTimeMs: 0, callsPerSample: 1 };
const MAX_ROUNDS = 3;

interface Batch { images: Float32Array; tokens: Int32Array; lengths: Int32Array }

/** Seeded random batches: images in [-1, 1), rows `<bos> ... <eos>` of 2..T tokens, zeros after. */
function batches(): Batch[] {
  let seed = 4242;
  const rand = (): number => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
  const S = ALIGN.imageSize;
  return Array.from({ length: NUM_BATCHES }, () => {
    const images = Float32Array.from({ length: BATCH * 3 * S * S }, () => rand() * 2 - 1);
    const lengths = Int32Array.from({ length: BATCH }, () => 2 + Math.floor(rand() * (T - 1)));
    const tokens = new Int32Array(BATCH * T);
    for (let b = 0; b < BATCH; b++) {
      tokens[b * T] = 1;
      for (let t = 1; t < lengths[b] - 1; t++) tokens[b * T + t] = 3 + Math.floor(rand() * (GPT_SHAPE.vocabSize - 3));
      tokens[b * T + lengths[b] - 1] = 2;
    }
    return { images, tokens, lengths };
  });
}

function setup(): { model: CaptionModel; opt: ml.optim.AdamW; params: ml.Tensor[] } {
  ml.manualSeed(0);
  const encoder = createAlignModel(ALIGN);
  const net = new CaptionNet(ALIGN.visionWidth, PROJECTOR_HIDDEN, new GPT(GPT_SHAPE));
  const model = new CaptionModel(encoder, net, ALIGN.imageSize, 'tokens');
  net.train();
  const params = net.parameters();
  return { model, opt: new ml.optim.AdamW(params, HYPER), params };
}

/** modalab's initial weights (image tower, projector, GPT) and the batches, for PyTorch to start from. */
function writeInit(file: string, data: Batch[]): number {
  const { model, opt } = setup();
  const S = ALIGN.imageSize;
  const made: ml.Tensor[] = [];
  try {
    const map: Record<string, ml.Tensor> = {};
    for (const [k, v] of Object.entries(model.encoder.stateDict())) if (k.startsWith('visual.')) map[k] = v;
    for (const [k, v] of Object.entries(model.net.stateDict())) map[k] = v;
    data.forEach((b, i) => {
      made.push(map[`batch${i}.images`] = ml.tensor(b.images, [BATCH, 3, S, S]));
      made.push(map[`batch${i}.tokens`] = ml.tensor(b.tokens, [BATCH, T], { dtype: 'i32' }));
      made.push(map[`batch${i}.lengths`] = ml.tensor(b.lengths, [BATCH], { dtype: 'i32' }));
    });
    ml.save(file, map);
    // The loss of batch 0 at the initial weights, no update: what PyTorch's `loss0` must equal.
    return ml.noGrad(() => ml.tidy(() => model.loss(data[0].images, data[0].tokens, data[0].lengths, BATCH, T).item()));
  } finally {
    for (const t of made) t.dispose();
    opt.dispose();
    model.dispose();
  }
}

interface Ours { samples: Samples; firstLoss: number; lastLoss: number; finite: boolean }

function ours(data: Batch[], bf16: boolean): Ours {
  const { model, opt, params } = setup();
  const losses: number[] = [];
  const step = (): void => ml.tidy(() => {
    const b = data[losses.length % NUM_BATCHES];
    opt.zeroGrad();
    const loss = bf16
      ? ml.autocast('bf16', () => model.loss(b.images, b.tokens, b.lengths, BATCH, T))
      : model.loss(b.images, b.tokens, b.lengths, BATCH, T);
    loss.backward();
    ml.optim.clipGradNorm(params, GRAD_CLIP);
    opt.step();
    losses.push(loss.item());
  });
  try {
    const samples = measure(step, OPTS);
    return { samples, firstLoss: losses[0], lastLoss: losses[losses.length - 1], finite: losses.every(Number.isFinite) };
  } finally {
    opt.dispose();
    model.dispose();
  }
}

export const caption: Suite = {
  name: 'caption',
  summary: `one AdamW step of the caption model (frozen ViT width ${ALIGN.visionWidth} -> projector -> GPT width ${GPT_SHAPE.width}, 65-token prefix, batch ${BATCH}), f32 and bf16, vs torch`,
  run(ctx: SuiteContext): SuiteResult {
    const data = batches();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-bench-caption-'));
    const init = path.join(dir, 'init.safetensors');
    const f32: number[][] = [], bf16: number[][] = [], theirs: number[][] = [];
    const losses: string[] = [];
    let torchSkipped: string | undefined;
    let torchInfo: TorchInfo | undefined;
    let check = '';
    const rounds = Math.min(ctx.rounds, MAX_ROUNDS);
    try {
      ctx.log('caption: writing the initial weights and batches for PyTorch');
      const loss0 = writeInit(init, data);
      // Untrained (GPT-2 init, small logits), the loss is near ln 1024 = 6.93; far off means a broken model.
      if (!(Math.abs(loss0 - Math.log(GPT_SHAPE.vocabSize)) < 1)) {
        throw new Error(`caption: initial loss ${loss0} (expected near ln ${GPT_SHAPE.vocabSize} = ${Math.log(GPT_SHAPE.vocabSize).toFixed(2)}); not timing a broken step`);
      }
      for (let r = 0; r < rounds; r++) {
        ctx.log(`caption round ${r + 1}/${rounds}: modalab f32`);
        const o = ours(data, false);
        if (!o.finite) throw new Error('caption: a modalab f32 loss was not finite; not timing a broken step');
        f32.push(o.samples.ns);
        ctx.log(`caption round ${r + 1}/${rounds}: modalab bf16 autocast`);
        const h = ours(data, true);
        if (!h.finite) throw new Error('caption: a modalab bf16 loss was not finite; not timing a broken step');
        bf16.push(h.samples.ns);
        if (r === 0) losses.push(`modalab f32 ${o.firstLoss.toFixed(3)} -> ${o.lastLoss.toFixed(3)}`, `bf16 ${h.firstLoss.toFixed(3)} -> ${h.lastLoss.toFixed(3)}`);
        if (torchSkipped) continue;
        ctx.log(`caption round ${r + 1}/${rounds}: torch`);
        const t = runTorch<{ step: Samples; firstLoss: number; lastLoss: number; loss0: number }>('caption', {
          align: ALIGN, gpt: GPT_SHAPE, projectorHidden: PROJECTOR_HIDDEN, batch: BATCH, ...HYPER, gradClip: GRAD_CLIP,
          init, measure: OPTS,
        }, ctx.threads);
        if (!t.ok) { torchSkipped = t.reason; continue; }
        const res = t.run.results;
        const rel = Math.abs(loss0 - res.loss0) / Math.abs(res.loss0);
        if (!(rel <= LOSS_RTOL)) {
          throw new Error(`caption: initial loss of batch 0 differs: modalab ${loss0}, PyTorch ${res.loss0} (relative ${rel.toExponential(2)} > ${LOSS_RTOL}); the two sides do not compute the same thing`);
        }
        check = `From the same initial weights and batch, the loss before any update is ${loss0.toFixed(5)} in modalab and ` +
          `${res.loss0.toFixed(5)} in PyTorch (relative difference ${rel.toExponential(1)}, checked <= ${LOSS_RTOL}).`;
        torchInfo = t.run.info;
        theirs.push(res.step.ns);
        if (r === 0) losses.push(`torch ${res.firstLoss.toFixed(3)} -> ${res.lastLoss.toFixed(3)}`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }

    const m = medianOfRounds(f32), mb = medianOfRounds(bf16), t = theirs.length ? medianOfRounds(theirs) : null;
    // speed = torch time / modalab time, per round (each round's runs sat next to each other in time).
    const speed = roundTimeRatios(f32, theirs).map((x) => 1 / x);
    const speedBf16 = roundTimeRatios(bf16, theirs).map((x) => 1 / x);
    const sps = (ns: number): string => fmt(BATCH / (ns / 1e9));
    const perRound = (xs: number[]): string => (xs.length > 1 ? ` (per round: ${xs.map(fmtRatio).join(', ')})` : '');
    return {
      title: 'caption: one training step of the caption-stage model',
      description:
        'The caption stage\'s `CaptionModel` at the caption `quick` preset\'s shapes: the align `quick` image encoder ' +
        `(ViT on 32x32 images, patch ${ALIGN.patchSize}, width ${ALIGN.visionWidth}, ${ALIGN.visionLayers} layers, ` +
        `${ALIGN.visionHeads} heads), frozen (eval, forward only under noGrad); its 65 output tokens go through the ` +
        `projector Linear(${ALIGN.visionWidth}, ${PROJECTOR_HIDDEN})-GELU-Linear(${PROJECTOR_HIDDEN}, ${GPT_SHAPE.width}) into a GPT ` +
        `(width ${GPT_SHAPE.width}, ${GPT_SHAPE.layers} layers, ${GPT_SHAPE.heads} heads, context ${GPT_SHAPE.contextLength}, ` +
        `vocabulary ${GPT_SHAPE.vocabSize}, tied head) as a prefix; next-token cross entropy on the caption positions only. ` +
        `Batch ${BATCH} of random images and caption rows of 2..${T} tokens (${NUM_BATCHES} batches cycled). A step is ` +
        `\`zeroGrad\`, \`CaptionModel.loss\`, \`backward\`, \`clipGradNorm\` (${GRAD_CLIP}), AdamW \`step\` on projector + GPT ` +
        `(lr ${HYPER.lr}, betas ${HYPER.betas.join('/')}, weight decay ${HYPER.weightDecay} on tensors of two or more dims), ` +
        'in `ml.tidy`; bf16 runs the same step inside `ml.autocast(\'bf16\')`. PyTorch: bench/torch/caption.py, the same ' +
        'model from clip_model.py\'s ViT and gpt.py\'s GPT, in float32, loaded with modalab\'s initial weights and fed ' +
        'the same batches. Times are medians over rounds (at most ' + MAX_ROUNDS + ') of each round\'s median of ' +
        OPTS.minSamples + ' steps after one warm-up step; speed = torch time / modalab time.',
      columns: ['step', 'ms / step', 'steps/s', 'samples/s', 'speed vs torch', 'spread', 'samples'],
      rows: [
        ['modalab f32', fmt(m / 1e6), fmt(1e9 / m), sps(m), speed.length ? fmtRatio(median(speed)) : 'n/a', fmtSpread(relSpread(f32.flat())), String(f32.flat().length)],
        ['modalab bf16 autocast', fmt(mb / 1e6), fmt(1e9 / mb), sps(mb), speedBf16.length ? fmtRatio(median(speedBf16)) : 'n/a', fmtSpread(relSpread(bf16.flat())), String(bf16.flat().length)],
        ['torch f32', t === null ? 'skipped' : fmt(t / 1e6), t === null ? 'n/a' : fmt(1e9 / t), t === null ? 'n/a' : sps(t), t === null ? 'n/a' : '1.00x', fmtSpread(relSpread(theirs.flat())), String(theirs.flat().length)],
      ],
      goals: [],
      notes: [
        ...(speed.length ? [`Speed vs torch, f32${perRound(speed)}: ${fmtRatio(median(speed))}; bf16 autocast${perRound(speedBf16)}: ${fmtRatio(median(speedBf16))}.`] : []),
        ...(check ? [check] : []),
        `Loss over the timed steps of the first round (same start, same batches): ${losses.join('; ')}.`,
      ],
      torchSkipped,
      torchInfo,
    };
  },
};
