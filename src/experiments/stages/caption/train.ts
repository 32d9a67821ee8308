/**
 * Stage 2, `caption`: a GPT learns to caption images through the frozen image encoder of an align checkpoint
 * (an MLP projector maps the image tokens into the GPT's embedding space as a prefix; only projector and GPT
 * update), evaluated by generating captions (greedy, KV cache) for held-out images and scoring BLEU-4 and
 * ROUGE-L against every caption of the image; recorded in SQLite with the align run as parent, checkpointed so
 * that `resume` continues exactly.
 *
 * ```ts
 * const res = await trainCaption(resolveCaptionConfig('quick'), { db: 'runs/modalab.db' });
 * res.metrics['val/bleu4'];
 * ```
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ml from '../../../index';
import { Tracker, Run } from '../../tracking';
import { GPT, GPTConfig } from '../../models/gpt';
import { corpusBleu, rougeL } from '../../eval/text';
import { Tokenizer } from '../../tokenizer';
import { loadCheckpoint, readCheckpointState, saveCheckpoint } from '../checkpoint';
import { StageRunOptions, StepPace, due, findStageCheckpoint, makeOptimizer, optimizerStep, resolveResume, writeAtomic } from '../run';
import { loadScorer } from '../align/filter';
import { AlignConfig } from '../align/config';
import { loadLm, sceneQaMetrics } from '../lm/train';
import { CaptionConfig, validateCaptionConfig } from './config';
import { CaptionData, captionBatch, captionSceneQa, prepareCaptionData, sceneQaBatch } from './data';
import { CaptionModel, CaptionNet, textKl } from './model';
import { objectScores } from './objects';
import { encodePng } from '../../data/image';

export interface CaptionStepInfo {
  step: number;
  steps: number;
  loss: number;
  lr: number;
  samplesPerS: number;
  /** Seconds left at the recent pace. */
  etaS: number;
}

export type TrainCaptionOptions = StageRunOptions<CaptionStepInfo>;

export interface CaptionSample {
  /** The eval image's pair id. */
  image: string;
  reference: string[];
  generated: string;
  /** 'emoji' | 'shapes' (the pair's meta.source, else the align dataset). */
  source: string;
  /** The image as the encoder saw it (align imageSize, normalisation undone): base64 of PNG bytes. */
  png: string;
}

export interface CaptionResult {
  runId: number;
  status: 'finished' | 'killed';
  stepsDone: number;
  /** The loss (caption CE, plus klWeight * KL and sceneQaWeight * the scene questions' CE when on) of every step this call ran. */
  losses: number[];
  /** The last evaluation: val/bleu4, val/rougeL, per source and object scores (see scoreCaptions). */
  metrics: Record<string, number>;
  /** The train-prior baseline's scores (baseline/..., see priorBaseline) and its captions per source. */
  baseline: Record<string, number>;
  priorCaption: Record<string, string>;
  samples: CaptionSample[];
  checkpoint: string;
  /** The align checkpoint whose encoder was used, and its run. */
  alignCheckpoint: string;
  alignRunId: number;
  /** The lm checkpoint the GPT started from (null: from scratch). */
  lmCheckpoint: string | null;
  outDir: string;
  wallS: number;
}

/** What a caption checkpoint records beyond the common state, to rebuild the model. */
interface CaptionExtra {
  alignCheckpoint: string;
  alignRunId: number;
  lmCheckpoint: string | null;
  tokenizer: string;
  gpt: GPTConfig;
}

export { findStageCheckpoint } from '../run';

/**
 * Scores captions of the eval rows (captions[i] for data.eval row i): `<prefix>/bleu4` and `<prefix>/rougeL`
 * over all rows; with several sources also `<prefix>/<source>/bleu4` and `.../rougeL`; with shapes scenes
 * `<prefix>/shapes/object_recall` and `<prefix>/shapes/object_precision` (objectScores against the scene objects),
 * and `<prefix>/shapes/place_accuracy` when captions state where objects are (grounded captions).
 */
export function scoreCaptions(captions: readonly string[], data: CaptionData, prefix = 'val'): Record<string, number> {
  const ev = data.eval;
  if (captions.length !== ev.numImages) throw new Error(`scoreCaptions: ${captions.length} captions for ${ev.numImages} eval images`);
  if (captions.length === 0) return {};
  const out: Record<string, number> = {
    [`${prefix}/bleu4`]: corpusBleu(captions as string[], ev.refs).bleu,
    [`${prefix}/rougeL`]: rougeL(captions as string[], ev.refs).rougeL,
  };
  const sources = [...new Set(ev.sources)];
  if (sources.length > 1) {
    for (const src of sources) {
      const rows = ev.sources.flatMap((s, i) => (s === src ? [i] : []));
      const gen = rows.map((i) => captions[i]);
      const refs = rows.map((i) => ev.refs[i]);
      out[`${prefix}/${src}/bleu4`] = corpusBleu(gen, refs).bleu;
      out[`${prefix}/${src}/rougeL`] = rougeL(gen, refs).rougeL;
    }
  }
  const scene = ev.objects.flatMap((o, i) => (o ? [i] : []));
  if (scene.length > 0) {
    const o = objectScores(scene.map((i) => captions[i]), scene.map((i) => ev.objects[i]!));
    out[`${prefix}/shapes/object_recall`] = o.recall;
    out[`${prefix}/shapes/object_precision`] = o.precision;
    out[`${prefix}/shapes/colour_recall`] = o.colourRecall;
    out[`${prefix}/shapes/shape_recall`] = o.shapeRecall;
    if (o.placed > 0) out[`${prefix}/shapes/place_accuracy`] = o.placeAccuracy;
  }
  return out;
}

/**
 * The train-prior baseline: every eval image captioned with its source's most common training caption
 * (data.priorCaption), scored like the model (`baseline/...` keys).
 */
export function priorBaseline(data: CaptionData): Record<string, number> {
  return scoreCaptions(data.eval.sources.map((s) => data.priorCaption[s] ?? ''), data, 'baseline');
}

/** Generated captions for the eval images, scored by scoreCaptions ('val/...'). */
export function evaluateCaptions(model: CaptionModel, data: CaptionData, cfg: CaptionConfig, chunk = 32): {
  metrics: Record<string, number>; generated: string[];
} {
  const S = data.imageSize;
  const px = 3 * S * S;
  const tok = data.tokenizer;
  const generated: string[] = [];
  for (let i = 0; i < data.eval.numImages; i += chunk) {
    const n = Math.min(chunk, data.eval.numImages - i);
    const ids = model.caption(data.eval.images.subarray(i * px, (i + n) * px), n, tok.bosId, tok.eosId, {
      greedy: cfg.generate.greedy, temperature: cfg.generate.temperature, maxNewTokens: cfg.generate.maxNewTokens, seed: cfg.seed + i,
    });
    for (const row of ids) generated.push(tok.decode(row, { skipSpecial: true }).trim());
  }
  return { metrics: scoreCaptions(generated, data), generated };
}

/** Up to n eval rows for samples.json, taken round-robin over the sources (so a mixed run shows both). */
export function sampleRows(sources: readonly string[], n: number): number[] {
  const by = new Map<string, number[]>();
  sources.forEach((s, i) => by.set(s, [...(by.get(s) ?? []), i]));
  const lists = [...by.values()];
  const out: number[] = [];
  for (let k = 0; out.length < Math.min(n, sources.length); k++) {
    for (const l of lists) if (k < l.length && out.length < n) out.push(l[k]);
  }
  return out;
}

export async function trainCaption(config: CaptionConfig, opts: TrainCaptionOptions = {}): Promise<CaptionResult> {
  const t0 = Date.now();
  const status = opts.onStatus ?? (() => {});
  const ownTracker = !opts.tracker;
  const tracker = opts.tracker ?? Tracker.open(opts.db);
  let cfg = config;
  let run: Run | null = null;
  let resumeFile: string | null = null;
  let model: CaptionModel | null = null;
  let ref: GPT | null = null;
  let finalStatus: 'finished' | 'killed' | 'failed' = 'failed';
  try {
    let extra: CaptionExtra;
    let lmGpt: GPT | null = null;
    if (opts.resume !== undefined) {
      const r = resolveResume(tracker, opts.resume);
      resumeFile = r.file;
      const st = readCheckpointState(r.file);
      if (st.stage !== 'caption') throw new Error(`resume: ${r.file} is a ${st.stage} checkpoint, not caption`);
      cfg = st.config as CaptionConfig;
      extra = st.extra as unknown as CaptionExtra;
      run = tracker.resumeRun(r.runId);
    } else {
      validateCaptionConfig(cfg);
      const al = findStageCheckpoint(tracker, 'align', cfg.align.checkpoint);
      if (!al) throw new Error(`caption: key align.checkpoint is '' and the db ${tracker.file} has no finished align run with a checkpoint; train one (modalab train --stage align) or set align.checkpoint`);
      const lm = findStageCheckpoint(tracker, 'lm', cfg.lm.checkpoint);
      let tokenizer: string;
      let gptCfg: GPTConfig;
      if (lm) {
        const l = loadLm(lm.file);
        lmGpt = l.model;
        tokenizer = l.tokenizerPath;
        gptCfg = { ...lmGpt.config };
      } else {
        if (cfg.train.klWeight > 0) throw new Error('caption: key train.klWeight > 0 needs an lm checkpoint (set lm.checkpoint or finish an lm run), none was found');
        status('warning: no lm checkpoint (lm.checkpoint is \'\' and the db has no finished lm run): the GPT trains from scratch with the align tokenizer');
        const ast = readCheckpointState(al.file);
        tokenizer = String((ast.extra as { tokenizer?: string } | undefined)?.tokenizer ?? path.join(path.dirname(al.file), 'tokenizer.json'));
        const s = cfg.lm.scratch;
        gptCfg = { vocabSize: Tokenizer.fromFile(tokenizer).vocabSize, ...s, dropout: 0, checkpointing: false };
      }
      // The align run is the parent when it is in this db (an explicit checkpoint may come from another db).
      const inDb = ((): boolean => {
        try {
          return tracker.artifacts(al.runId).some((a) => a.kind === 'checkpoint' && path.resolve(a.path) === path.resolve(al.file));
        } catch {
          return false;
        }
      })();
      if (!inDb) status(`note: the align checkpoint's run ${al.runId} is not in ${tracker.file}; no parent run recorded`);
      extra = { alignCheckpoint: al.file, alignRunId: al.runId, lmCheckpoint: lm?.file ?? null, tokenizer, gpt: gptCfg };
      run = tracker.startRun({
        experiment: cfg.experiment, name: cfg.name || undefined, stage: 'caption', config: cfg as unknown as { [k: string]: unknown },
        seed: cfg.seed, parentRunId: inDb ? al.runId : undefined,
      });
    }
    // A resumed run keeps writing beside its checkpoint unless told otherwise.
    const outDir = path.resolve(opts.outDir ?? (resumeFile ? path.dirname(resumeFile) : path.join(path.dirname(tracker.file), `caption-${run.id}`)));
    fs.mkdirSync(outDir, { recursive: true });
    const ckpt = path.join(outDir, 'last.safetensors');

    status(`image encoder from ${extra.alignCheckpoint}`);
    const scorer = loadScorer(extra.alignCheckpoint);
    const alignCfg: AlignConfig = scorer.config;
    const tokenizer = Tokenizer.fromFile(extra.tokenizer);
    if (tokenizer.vocabSize !== extra.gpt.vocabSize) {
      scorer.dispose();
      lmGpt?.dispose();
      throw new Error(`caption: the tokenizer ${extra.tokenizer} has ${tokenizer.vocabSize} ids but the GPT has ${extra.gpt.vocabSize}`);
    }
    ml.manualSeed(cfg.seed);
    const gpt = lmGpt ?? new GPT(extra.gpt);
    const net = new CaptionNet(alignCfg.model.visionWidth, cfg.model.projectorHidden, gpt);
    model = new CaptionModel(scorer.model.net, net, alignCfg.data.imageSize, cfg.model.prefix);
    if (model.prefixLength + cfg.data.maxTextLen > gpt.config.contextLength) {
      throw new Error(`caption: the image prefix (${model.prefixLength} positions, model.prefix ${cfg.model.prefix}) plus data.maxTextLen (${cfg.data.maxTextLen}) exceeds the GPT's context length ${gpt.config.contextLength}`);
    }
    if (cfg.train.klWeight > 0) {
      if (!extra.lmCheckpoint) throw new Error('caption: key train.klWeight > 0 needs an lm checkpoint');
      ref = loadLm(extra.lmCheckpoint).model;
      ref.requiresGrad_(false);
      ref.eval();
    }

    status('preparing data');
    const data = await prepareCaptionData(cfg, alignCfg, tokenizer, { onStatus: status });
    const baseline = priorBaseline(data);
    const Tq = gpt.config.contextLength;
    if ((cfg.data.sceneQa ?? 0) > 0) status(`generating ${cfg.data.sceneQa} scene questions`);
    const qa = captionSceneQa(cfg, tokenizer, Tq);
    if (!fs.existsSync(path.join(outDir, 'config.json'))) {
      const cfgPath = path.join(outDir, 'config.json');
      writeAtomic(cfgPath, JSON.stringify(cfg, null, 2) + '\n');
      run.logArtifact('config', cfgPath);
      run.log({
        'data/train_pairs': data.train.numTexts, 'data/eval_images': data.eval.numImages, 'data/prefix_len': model.prefixLength,
        ...(qa.train.rows > 0 ? { 'data/scene_qa': qa.train.documents, 'data/scene_qa_rows': qa.train.rows } : {}), ...baseline,
      }, 0);
    }

    const params = net.parameters();
    const t = cfg.train;
    const { opt, sched } = makeOptimizer(params, t);
    let step = 0;
    if (resumeFile) {
      const st = loadCheckpoint(resumeFile, net, opt);
      step = st.step;
      sched.loadStateDict({ lastStep: step });
      ml.setRngState(st.rng);
      status(`resuming run ${run.id} at step ${step}`);
    }
    const save = (): void => {
      saveCheckpoint(ckpt, net, opt, {
        step, rng: ml.getRngState(), config: cfg, stage: 'caption', runId: run!.id, extra: extra as unknown as Record<string, unknown>,
      });
    };
    const T = data.T;
    const B = t.batchSize;
    const losses: number[] = [];
    let metrics: Record<string, number> = {};
    let generated: string[] = [];
    const startStep = step;
    const paceOf = new StepPace();
    let stopped = false;
    const evalNow = (): Record<string, number> => {
      const e = evaluateCaptions(model!, data, cfg);
      generated = e.generated;
      const m = qa.val.length > 0 ? { ...e.metrics, ...sceneQaMetrics(gpt, tokenizer, qa.val, false) } : e.metrics;
      run!.log(m, step);
      opts.onEval?.(step, m);
      return m;
    };
    status(`training ${t.steps - step} steps`);
    net.train();
    while (step < t.steps) {
      if (opts.signal?.aborted || (opts.stopAfter !== undefined && step - startStep >= opts.stopAfter)) {
        stopped = true;
        break;
      }
      const tStep = performance.now();
      const b = captionBatch(data, step, B, cfg.seed);
      opt.zeroGrad();
      let loss = 0;
      let kl = 0;
      let qaLoss = 0;
      ml.tidy(() => {
        let l = model!.loss(b.images, b.tokens, b.lengths, B, T);
        if (ref) {
          const k = textKl(gpt, ref, b.tokens, b.lengths, B, T);
          kl = k.item();
          l = ml.add(l, ml.mul(k, t.klWeight));
        }
        if (qa.train.rows > 0) {
          const q = gpt.loss(ml.tensor(sceneQaBatch(qa.train, step, t.sceneQaBatch, Tq, cfg.seed), [t.sceneQaBatch, Tq], { dtype: 'i32' }));
          qaLoss = q.item();
          l = ml.add(l, ml.mul(q, t.sceneQaWeight));
        }
        l.backward();
        loss = l.item();
      });
      const { gradNorm, lr } = optimizerStep(opt, sched, params, t.gradClip);
      step++;
      losses.push(loss);
      const { msPerStep: pace, stepMs } = paceOf.tick(step, tStep);
      const samplesPerS = (B * 1000) / stepMs;
      if (step % t.logEvery === 0 || step === t.steps) {
        run.log({ loss, lr, grad_norm: gradNorm, samples_per_s: samplesPerS, ...(ref ? { 'loss/kl': kl } : {}), ...(qa.train.rows > 0 ? { 'loss/scene_qa': qaLoss } : {}) }, step);
      }
      opts.onStep?.({ step, steps: t.steps, loss, lr, samplesPerS, etaS: ((t.steps - step) * pace) / 1000 });
      if (due(t.evalEvery, step, t.steps)) metrics = evalNow();
      if (due(t.checkpointEvery, step, t.steps)) save();
      await new Promise<void>((r) => setImmediate(r));
    }
    save();
    let samples: CaptionSample[] = [];
    if (!stopped) {
      status('evaluating');
      metrics = evalNow();
      const S = data.imageSize;
      const px = 3 * S * S;
      for (const i of sampleRows(data.eval.sources, cfg.data.samples)) {
        const png = await encodePng(data.eval.images.subarray(i * px, (i + 1) * px), { size: S });
        samples.push({ image: data.eval.ids[i], reference: data.eval.refs[i], generated: generated[i], source: data.eval.sources[i], png: png.toString('base64') });
      }
      if (samples.length > 0) {
        const file = path.join(outDir, 'samples.json');
        writeAtomic(file, JSON.stringify(samples, null, 2) + '\n');
        run.logArtifact('samples', file);
      }
    }
    run.logArtifact('checkpoint', ckpt);
    finalStatus = stopped ? 'killed' : 'finished';
    run.finish(finalStatus);
    return {
      runId: run.id, status: finalStatus, stepsDone: step - startStep, losses, metrics, baseline, priorCaption: data.priorCaption, samples, checkpoint: ckpt,
      alignCheckpoint: extra.alignCheckpoint, alignRunId: extra.alignRunId, lmCheckpoint: extra.lmCheckpoint, outDir,
      wallS: (Date.now() - t0) / 1000,
    };
  } catch (e) {
    if (run && run.status === 'running') run.finish('failed');
    throw e;
  } finally {
    model?.dispose();
    ref?.dispose();
    if (ownTracker) tracker.close();
  }
}
