/**
 * The whole recipe in one call: align -> lm -> caption -> instruct, each stage starting from the run the previous
 * one just finished (caption reads that align run's image encoder and that lm run's GPT; instruct reads that
 * caption run), all recorded in one tracking database with parent links, and one summary of what each stage
 * reached.
 *
 * ```ts
 * const res = await runPipeline({ preset: 'quick', db: 'runs/modalab.db' });
 * console.log(pipelineTable(res));
 * ```
 *
 * `from` starts at a later stage; the earlier stages' checkpoints then come from the latest finished runs in the
 * db (each stage's own default). Overrides are per stage (`{ caption: { train: { steps: 100 } } }`), applied on
 * top of the preset and of the pipeline's own patches (`PIPELINE_PATCHES`), which are how the stages are tied
 * together. An abort stops the running stage cleanly (checkpoint written, run killed) and skips the rest.
 */
import * as path from 'path';
import { Tracker } from '../tracking';
import { JsonObject, mergePatches } from './config';
import { resolveAlignConfig } from './align/config';
import { trainAlign, type AlignResult } from './align/train';
import { resolveLmConfig } from './lm/config';
import { trainLm, type LmResult } from './lm/train';
import { resolveCaptionConfig } from './caption/config';
import { trainCaption, type CaptionResult } from './caption/train';
import { resolveInstructConfig } from './instruct/config';
import { trainInstruct, type InstructResult } from './instruct/train';
import { fmtDuration } from './run';

export const PIPELINE_STAGES = ['align', 'lm', 'caption', 'instruct'] as const;
export type PipelineStage = (typeof PIPELINE_STAGES)[number];

/**
 * What the pipeline sets in each stage's config before the user's overrides: the align encoder sees the shapes
 * scenes as well as the emoji (stage 3 asks questions about shapes scenes, and a frozen encoder that never saw
 * one cannot answer them).
 */
export const PIPELINE_PATCHES: Record<PipelineStage, JsonObject> = {
  align: { data: { dataset: 'mixed' } },
  lm: {},
  caption: {},
  instruct: {},
};

/** Progress of one stage, as the stage reports it. */
export interface PipelineStepInfo {
  step: number;
  steps: number;
  loss: number;
  /** samples/s (tokens/s for lm). */
  rate: number;
  rateUnit: 'samples/s' | 'tokens/s';
  etaS: number;
}

export interface PipelineOptions {
  /** Preset of every stage (quick, small), or null for the defaults. */
  preset: string | null;
  /** Per-stage config patches, applied last. */
  overrides?: Partial<Record<PipelineStage, JsonObject>>;
  /** The SQLite file (default runs/modalab.db); or an open tracker. */
  db?: string;
  tracker?: Tracker;
  /** The first stage to run (default align). */
  from?: PipelineStage;
  /** The last stage to run (default instruct). */
  to?: PipelineStage;
  signal?: AbortSignal;
  onStageStart?: (stage: PipelineStage, index: number, of: number) => void;
  onStageEnd?: (stage: PipelineStage, result: StageOutcome) => void;
  onStep?: (stage: PipelineStage, s: PipelineStepInfo) => void;
  onEval?: (stage: PipelineStage, step: number, metrics: Record<string, number>) => void;
  onStatus?: (stage: PipelineStage, msg: string) => void;
}

/** One stage's run: what every stage result has in common. */
export interface StageOutcome {
  stage: PipelineStage;
  runId: number;
  status: 'finished' | 'killed';
  stepsDone: number;
  metrics: Record<string, number>;
  checkpoint: string;
  outDir: string;
  wallS: number;
}

export interface PipelineResult {
  /** finished: every stage asked for finished; killed: a stage was stopped and the rest skipped. */
  status: 'finished' | 'killed';
  stages: StageOutcome[];
  wallS: number;
}

function checkStage(name: string, v: unknown): PipelineStage {
  if (!PIPELINE_STAGES.includes(v as PipelineStage)) {
    throw new Error(`pipeline: ${name} must be one of ${PIPELINE_STAGES.join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v as PipelineStage;
}

/**
 * Splits `stage.key=value`-style patches by stage: `{ align: {...}, caption: {...} }` from one object whose top-level
 * keys are stage names. Unknown stage names are an error naming the key.
 */
export function splitStageOverrides(patch: JsonObject): Partial<Record<PipelineStage, JsonObject>> {
  const out: Partial<Record<PipelineStage, JsonObject>> = {};
  for (const [k, v] of Object.entries(patch)) {
    if (!PIPELINE_STAGES.includes(k as PipelineStage)) {
      throw new Error(`pipeline: override key ${k} must start with a stage name (${PIPELINE_STAGES.join(', ')}), e.g. caption.train.steps=100`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`pipeline: override ${k} must be an object of that stage's keys`);
    out[k as PipelineStage] = v as JsonObject;
  }
  return out;
}

/** Each stage's resolved config (preset <- pipeline patches <- overrides), all validated before anything runs. */
export function resolvePipelineConfigs(preset: string | null, overrides: Partial<Record<PipelineStage, JsonObject>> = {}): {
  align: ReturnType<typeof resolveAlignConfig>;
  lm: ReturnType<typeof resolveLmConfig>;
  caption: ReturnType<typeof resolveCaptionConfig>;
  instruct: ReturnType<typeof resolveInstructConfig>;
} {
  for (const k of Object.keys(overrides)) checkStage('an overrides key', k);
  const patch = (s: PipelineStage): JsonObject => mergePatches(PIPELINE_PATCHES[s], overrides[s] ?? {});
  return {
    align: resolveAlignConfig(preset, patch('align')),
    lm: resolveLmConfig(preset, patch('lm')),
    caption: resolveCaptionConfig(preset, patch('caption')),
    instruct: resolveInstructConfig(preset, patch('instruct')),
  };
}

function outcome(stage: PipelineStage, r: AlignResult | LmResult | CaptionResult | InstructResult): StageOutcome {
  return { stage, runId: r.runId, status: r.status, stepsDone: r.stepsDone, metrics: r.metrics, checkpoint: r.checkpoint, outDir: r.outDir, wallS: r.wallS };
}

export async function runPipeline(opts: PipelineOptions): Promise<PipelineResult> {
  const t0 = Date.now();
  const from = checkStage('from', opts.from ?? 'align');
  const to = checkStage('to', opts.to ?? 'instruct');
  const i0 = PIPELINE_STAGES.indexOf(from);
  const i1 = PIPELINE_STAGES.indexOf(to);
  if (i1 < i0) throw new Error(`pipeline: to (${to}) comes before from (${from})`);
  const order = PIPELINE_STAGES.slice(i0, i1 + 1);
  const overrides = opts.overrides ?? {};
  // Validate every stage's config first: a typo in the last stage's overrides fails now, not after an hour.
  const cfgs = resolvePipelineConfigs(opts.preset, overrides);
  const ownTracker = !opts.tracker;
  const tracker = opts.tracker ?? Tracker.open(opts.db);
  const stages: StageOutcome[] = [];
  const done = new Map<PipelineStage, StageOutcome>();
  const user = (s: PipelineStage, ...keys: string[]): boolean => {
    let o: unknown = overrides[s];
    for (const k of keys) o = o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined;
    return o !== undefined;
  };
  try {
    for (const [i, stage] of order.entries()) {
      if (opts.signal?.aborted) break;
      opts.onStageStart?.(stage, i, order.length);
      const common = {
        tracker, signal: opts.signal,
        onStatus: (m: string) => opts.onStatus?.(stage, m),
        onEval: (step: number, m: Record<string, number>) => opts.onEval?.(stage, step, m),
      };
      let res: StageOutcome;
      if (stage === 'align') {
        res = outcome(stage, await trainAlign(cfgs.align, {
          ...common, onStep: (s) => opts.onStep?.(stage, { step: s.step, steps: s.steps, loss: s.loss, rate: s.samplesPerS, rateUnit: 'samples/s', etaS: s.etaS }),
        }));
      } else if (stage === 'lm') {
        const cfg = cfgs.lm;
        // One tokenizer for the whole recipe: the align run's, when this pipeline trained it (unless the lm stage
        // is asked to train its own, tokenizer.sceneTexts).
        const al = done.get('align');
        if (al && !user('lm', 'tokenizer', 'path') && cfg.tokenizer.sceneTexts === 0) cfg.tokenizer.path = path.join(al.outDir, 'tokenizer.json');
        res = outcome(stage, await trainLm(cfg, {
          ...common, onStep: (s) => opts.onStep?.(stage, { step: s.step, steps: s.steps, loss: s.loss, rate: s.tokensPerS, rateUnit: 'tokens/s', etaS: s.etaS }),
        }));
      } else if (stage === 'caption') {
        const cfg = cfgs.caption;
        const al = done.get('align');
        const lm = done.get('lm');
        if (al && !user('caption', 'align', 'checkpoint')) cfg.align.checkpoint = al.checkpoint;
        if (lm && !user('caption', 'lm', 'checkpoint')) cfg.lm.checkpoint = lm.checkpoint;
        res = outcome(stage, await trainCaption(cfg, {
          ...common, onStep: (s) => opts.onStep?.(stage, { step: s.step, steps: s.steps, loss: s.loss, rate: s.samplesPerS, rateUnit: 'samples/s', etaS: s.etaS }),
        }));
      } else {
        const cfg = cfgs.instruct;
        const cap = done.get('caption');
        if (cap && !user('instruct', 'caption', 'checkpoint')) cfg.caption.checkpoint = cap.checkpoint;
        res = outcome(stage, await trainInstruct(cfg, {
          ...common, onStep: (s) => opts.onStep?.(stage, { step: s.step, steps: s.steps, loss: s.loss, rate: s.samplesPerS, rateUnit: 'samples/s', etaS: s.etaS }),
        }));
      }
      stages.push(res);
      done.set(stage, res);
      opts.onStageEnd?.(stage, res);
      if (res.status !== 'finished') break;
    }
    const finished = stages.length === order.length && stages.every((s) => s.status === 'finished');
    return { status: finished ? 'finished' : 'killed', stages, wallS: (Date.now() - t0) / 1000 };
  } finally {
    if (ownTracker) tracker.close();
  }
}

function pct(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '-' : (100 * v).toFixed(1);
}

/** The headline figure of each stage, as `label value` pairs. */
export function stageHeadline(o: StageOutcome): Array<[string, string]> {
  const m = o.metrics;
  const first = (...keys: string[]): number | undefined => keys.map((k) => m[k]).find((v) => v !== undefined);
  switch (o.stage) {
    case 'align':
      return [
        ['t2i R@1', pct(first('test/t2i/r@1', 'val/t2i/r@1'))],
        ['i2t R@1', pct(first('test/i2t/r@1', 'val/i2t/r@1'))],
        ['t2i R@10', pct(first('test/t2i/r@10', 'val/t2i/r@10'))],
      ];
    case 'lm':
      return [['val ppl', m['val/ppl'] === undefined ? '-' : m['val/ppl'].toFixed(1)]];
    case 'caption': {
      const out: Array<[string, string]> = [['BLEU-4', pct(m['val/bleu4'])], ['ROUGE-L', pct(m['val/rougeL'])]];
      if (m['val/shapes/object_recall'] !== undefined) out.push(['objects named', pct(m['val/shapes/object_recall'])]);
      return out;
    }
    case 'instruct': {
      const out: Array<[string, string]> = [['VQA acc', pct(m['val/vqa_acc'])]];
      for (const k of Object.keys(m).filter((k) => k.startsWith('val/vqa_acc/')).sort()) {
        const type = k.slice('val/vqa_acc/'.length);
        const base = m[`baseline/vqa_acc/${type}`];
        out.push([type, base === undefined ? pct(m[k]) : `${pct(m[k])} (${pct(base)})`]);
      }
      return out;
    }
  }
}

/**
 * The end-of-pipeline summary: one row per stage (run, status, wall time, headline metrics, percentages), then
 * the four figures the recipe is judged by on one line.
 */
export function pipelineTable(res: PipelineResult): string {
  const rows = res.stages.map((o) => [o.stage, String(o.runId), o.status, fmtDuration(o.wallS),
    stageHeadline(o).map(([k, v]) => `${k} ${v}`).join(', ')]);
  const head = ['stage', 'run', 'status', 'wall', 'result (%; instruct: accuracy (majority baseline))'];
  const w = head.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j].length)));
  const line = (r: string[]): string => r.map((c, j) => (j === r.length - 1 ? c : j === 1 ? c.padStart(w[j]) : c.padEnd(w[j]))).join('  ').trimEnd();
  const lines = [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)];
  const get = (s: PipelineStage): StageOutcome | undefined => res.stages.find((o) => o.stage === s);
  const al = get('align')?.metrics ?? {};
  const cap = get('caption')?.metrics ?? {};
  const ins = get('instruct')?.metrics ?? {};
  lines.push('', `R@1 (t2i) ${pct(al['test/t2i/r@1'] ?? al['val/t2i/r@1'])}  BLEU-4 ${pct(cap['val/bleu4'])}  ROUGE-L ${pct(cap['val/rougeL'])}  VQA accuracy ${pct(ins['val/vqa_acc'])}  (total ${fmtDuration(res.wallS)})`);
  return lines.join('\n') + '\n';
}
