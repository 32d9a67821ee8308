/**
 * Stage 1, `align`: contrastive image-text training (InfoNCE; `fusion` adds image-text matching on hard
 * negatives; optional cross-modal masked prediction), evaluated by retrieval on the held-out vendor, recorded in
 * SQLite, checkpointed so that `resume` continues exactly.
 *
 * ```ts
 * const res = await trainAlign(resolveAlignConfig('quick'), { db: 'runs/modalab.db' });
 * ```
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ml from '../../../index';
import { Tracker, Run } from '../../tracking';
import { Tokenizer } from '../../tokenizer';
import { AlignConfig, validateAlignConfig } from './config';
import { AlignData, Batch, BatchStream, SplitData, makeBatchStream, prepareAlignData } from './data';
import { AlignModel, buildAlignModel, evaluateRetrieval } from './model';
import { loadCheckpoint, loadModelWeights, readCheckpointState, saveCheckpoint } from '../checkpoint';
import { StageRunOptions, StepPace, due, makeOptimizer, optimizerStep, resolveResume, writeAtomic } from '../run';

export interface StepInfo {
  step: number;
  steps: number;
  loss: number;
  lr: number;
  samplesPerS: number;
  /** Seconds left at the recent pace. */
  etaS: number;
}

export interface TrainAlignOptions extends StageRunOptions<StepInfo> {
  /** A run this one starts from (recorded as its parent). */
  parentRunId?: number;
}

export interface AlignResult {
  runId: number;
  status: 'finished' | 'killed';
  stepsDone: number;
  /** The loss of every step this call ran, in order. */
  losses: number[];
  /** The last evaluation (val/...), plus test/... and heldout/... at the end of a finished run. */
  metrics: Record<string, number>;
  checkpoint: string;
  outDir: string;
  wallS: number;
}

export { resolveResume, writeAtomic } from '../run';

export async function trainAlign(config: AlignConfig, opts: TrainAlignOptions = {}): Promise<AlignResult> {
  const t0 = Date.now();
  const status = opts.onStatus ?? (() => {});
  const ownTracker = !opts.tracker;
  const tracker = opts.tracker ?? Tracker.open(opts.db);
  let cfg = config;
  let run: Run;
  let resumeFile: string | null = null;
  if (opts.resume !== undefined) {
    const r = resolveResume(tracker, opts.resume);
    resumeFile = r.file;
    const st = readCheckpointState(r.file);
    if (st.stage !== 'align') throw new Error(`resume: ${r.file} is a ${st.stage} checkpoint, not align`);
    cfg = st.config as AlignConfig;
    run = tracker.resumeRun(r.runId);
  } else {
    validateAlignConfig(cfg);
    run = tracker.startRun({
      experiment: cfg.experiment, name: cfg.name || undefined, stage: 'align', config: cfg as unknown as { [k: string]: unknown },
      seed: cfg.seed, parentRunId: opts.parentRunId,
    });
  }
  const outDir = path.resolve(opts.outDir ?? path.join(path.dirname(tracker.file), `align-${run.id}`));
  fs.mkdirSync(outDir, { recursive: true });
  const ckpt = path.join(outDir, 'last.safetensors');
  let stream: BatchStream | null = null;
  let model: AlignModel | null = null;
  let finalStatus: 'finished' | 'killed' | 'failed' = 'failed';
  try {
    ml.manualSeed(cfg.seed);
    status('preparing data');
    // Fine-tuning (init.checkpoint) keeps the checkpoint's tokenizer: its text tower's embedding rows are its ids.
    const initFile = cfg.init?.checkpoint ?? '';
    const initTok = initFile ? initTokenizer(initFile) : undefined;
    const init = resumeFile ? '' : initFile;
    const data = await prepareAlignData(cfg, { onStatus: status, tokenizer: initTok });
    const tokPath = path.join(outDir, 'tokenizer.json');
    if (!fs.existsSync(tokPath)) {
      data.tokenizer.save(tokPath);
      run.logArtifact('tokenizer', tokPath);
      const cfgPath = path.join(outDir, 'config.json');
      writeAtomic(cfgPath, JSON.stringify(cfg, null, 2) + '\n');
      run.logArtifact('config', cfgPath);
    }
    ml.manualSeed(cfg.seed);
    model = buildAlignModel(cfg, data.tokenizer.vocabSize);
    if (init) {
      let fresh: string[];
      try {
        fresh = loadInitWeights(init, model.net);
      } catch (e) {
        throw new Error(`align: key init.checkpoint ${init}: ${(e as Error).message} (the model keys must match the checkpoint's)`);
      }
      status(`weights from ${init}${fresh.length ? ` (${fresh.join(', ')} new: initialised fresh)` : ''}`);
    }
    const params = model.parameters();
    const t = cfg.train;
    const { opt, sched } = makeOptimizer(params, t);
    let step = 0;
    if (resumeFile) {
      const st = loadCheckpoint(resumeFile, model.net, opt);
      step = st.step;
      sched.loadStateDict({ lastStep: step });
      ml.setRngState(st.rng);
      status(`resuming run ${run.id} at step ${step}`);
    }
    const save = (): void => {
      saveCheckpoint(ckpt, model!.net, opt, {
        step, rng: ml.getRngState(), config: cfg, stage: 'align', runId: run.id, extra: { tokenizer: tokPath },
      });
    };
    stream = makeBatchStream(cfg, data, step);
    const micro = t.batchSize / t.accumulate;
    const losses: number[] = [];
    let metrics: Record<string, number> = {};
    const startStep = step;
    const paceOf = new StepPace();
    let stopped = false;
    const evalNow = (split: SplitData, prefix: string): Record<string, number> => {
      const m = evaluateRetrieval(model!, split, prefix);
      run.log(m, step);
      opts.onEval?.(step, m);
      return m;
    };
    status(`training ${t.steps - step} steps`);
    ml.resetPeak();
    while (step < t.steps) {
      if (opts.signal?.aborted || (opts.stopAfter !== undefined && step - startStep >= opts.stopAfter)) {
        stopped = true;
        break;
      }
      // Let signal handlers and worker messages run even when batches are always ready (a Ctrl-C is seen at once).
      await new Promise<void>((r) => setImmediate(r));
      const tStep = performance.now();
      const batch: Batch = await stream.next();
      const waitMs = performance.now() - tStep;
      opt.zeroGrad();
      let loss = 0;
      const parts: Record<string, number> = {};
      for (let m = 0; m < t.accumulate; m++) {
        ml.tidy(() => {
          const out = model!.stepLoss(batch, m * micro, micro, t.amp);
          const l = t.accumulate > 1 ? out.loss.mul(1 / t.accumulate) : out.loss;
          l.backward();
          loss += out.loss.item() / t.accumulate;
          for (const [k, v] of Object.entries(out.parts)) parts[k] = (parts[k] ?? 0) + v / t.accumulate;
        });
      }
      const { gradNorm, lr } = optimizerStep(opt, sched, params, t.gradClip);
      step++;
      losses.push(loss);
      const { msPerStep: pace, stepMs } = paceOf.tick(step, tStep);
      const samplesPerS = (t.batchSize * 1000) / stepMs;
      if (step % t.logEvery === 0 || step === t.steps) {
        const mem = ml.memory();
        run.log({
          loss, lr, logit_scale: model.temperatureScale(), grad_norm: gradNorm, samples_per_s: samplesPerS,
          data_wait_ms: waitMs, peak_mb: mem.peakBytes / 2 ** 20, ...prefixed(parts, 'loss/'),
        }, step);
      }
      opts.onStep?.({ step, steps: t.steps, loss, lr, samplesPerS, etaS: ((t.steps - step) * pace) / 1000 });
      if (due(t.evalEvery, step, t.steps)) metrics = evalNow(data.val, 'val/');
      if (due(t.checkpointEvery, step, t.steps)) save();
    }
    save();
    if (!stopped) {
      status('evaluating');
      metrics = { ...evalNow(data.val, 'val/') };
      if (data.test) Object.assign(metrics, evalNow(data.test, 'test/'));
      if (data.heldout && data.heldout.images.length > 0) Object.assign(metrics, evalNow(data.heldout, 'heldout/'));
    }
    run.logArtifact('checkpoint', ckpt);
    finalStatus = stopped ? 'killed' : 'finished';
    run.finish(finalStatus);
    return {
      runId: run.id, status: finalStatus, stepsDone: step - startStep, losses, metrics, checkpoint: ckpt, outDir,
      wallS: (Date.now() - t0) / 1000,
    };
  } catch (e) {
    if (run.status === 'running') run.finish('failed');
    throw e;
  } finally {
    await stream?.close();
    model?.dispose();
    if (ownTracker) tracker.close();
  }
}

/**
 * Fine-tuning's weights (init.checkpoint): both towers must match the checkpoint exactly; an objective head
 * (`masked.*`) the checkpoint lacks starts from its fresh initialisation, and one the checkpoint has but this
 * config does not use is dropped. Returns the heads initialised fresh. Nothing is changed when it throws.
 */
export function loadInitWeights(file: string, net: ml.nn.Module): string[] {
  const { weights } = loadModelWeights(file);
  try {
    const own = net.stateDict();
    const isHead = (k: string): boolean => k.startsWith('masked.');
    const sd: Record<string, ml.Tensor> = {};
    for (const [k, v] of Object.entries(weights)) if (!isHead(k) || k in own) sd[k] = v;
    const missing = Object.keys(own).filter((k) => !(k in sd));
    const bad = missing.filter((k) => !isHead(k));
    if (bad.length) throw new Error(`the checkpoint lacks ${bad.length} of the model's tensors: ${bad.slice(0, 5).map((k) => `'${k}'`).join(', ')}${bad.length > 5 ? ', ...' : ''}`);
    const extra = Object.keys(sd).filter((k) => !(k in own));
    if (extra.length) throw new Error(`unexpected tensors in the checkpoint: ${extra.slice(0, 5).map((k) => `'${k}'`).join(', ')}`);
    net.loadStateDict(sd, { strict: false });
    return [...new Set(missing.map((k) => k.split('.')[0]))];
  } finally {
    for (const t of Object.values(weights)) t.dispose();
  }
}

/** The tokenizer an align checkpoint was trained with (init.checkpoint), checked. */
function initTokenizer(file: string): { tokenizer: Tokenizer; path: string } {
  if (!fs.existsSync(file)) throw new Error(`align: key init.checkpoint: no such file ${file}`);
  const st = readCheckpointState(file);
  if (st.stage !== 'align') throw new Error(`align: key init.checkpoint: ${file} is a ${st.stage} checkpoint, not align`);
  const tokPath = (st.extra as { tokenizer?: string } | undefined)?.tokenizer;
  if (!tokPath || !fs.existsSync(tokPath)) throw new Error(`align: key init.checkpoint: the tokenizer of ${file} (${tokPath ?? 'not recorded'}) is missing`);
  return { tokenizer: Tokenizer.fromFile(tokPath), path: tokPath };
}

function prefixed(o: Record<string, number>, p: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(o)) out[p + k] = v;
  return out;
}
