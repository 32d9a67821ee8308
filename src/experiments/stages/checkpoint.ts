/**
 * Resumable training checkpoints: one safetensors file holding the model ("model.*"), the optimizer
 * ("optim.*", via optim.toSafetensors) and, in the metadata, the step, the RNG state, the stage config and
 * anything else the stage needs to continue exactly. ml.save writes a temporary file and renames it, so a
 * checkpoint on disk is always whole.
 *
 * The model-only weights a later stage loads are the "model.*" tensors of the same file (`loadModelWeights`).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ml from '../../index';

export interface TrainingState {
  /** Optimizer steps taken. */
  step: number;
  rng: { seed: number; counter: number };
  /** The stage's config, as JSON. */
  config: unknown;
  stage: string;
  runId: number;
  /** Anything else (a GradScaler's state, the tokenizer path...). */
  extra?: Record<string, unknown>;
}

const FORMAT = 'modalab.training-checkpoint.v1';

export function saveCheckpoint(file: string, model: ml.nn.Module, optimizer: ml.optim.Optimizer<any> | null, state: TrainingState): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tensors: Record<string, ml.Tensor> = {};
  for (const [k, v] of Object.entries(model.stateDict())) tensors[`model.${k}`] = v;
  let metadata: Record<string, string> = {};
  if (optimizer) {
    const o = ml.optim.toSafetensors(optimizer.stateDict());
    Object.assign(tensors, o.tensors);
    metadata = o.metadata;
  }
  metadata['modalab.format'] = FORMAT;
  metadata['modalab.state'] = JSON.stringify(state);
  ml.save(file, tensors, metadata);
}

export interface LoadedCheckpoint {
  state: TrainingState;
  /** Disposes the loaded tensors not adopted by the model / optimizer. */
  dispose(): void;
}

/** Reads a checkpoint's state (step, config...) without loading tensors. */
export function readCheckpointState(file: string): TrainingState {
  if (!fs.existsSync(file)) throw new Error(`checkpoint ${file} does not exist`);
  const h = ml.loadHeader(file);
  const md = h.metadata ?? {};
  if (md['modalab.format'] !== FORMAT || typeof md['modalab.state'] !== 'string') {
    throw new Error(`${file} is not a modalab training checkpoint (no ${FORMAT} metadata)`);
  }
  try {
    return JSON.parse(md['modalab.state']) as TrainingState;
  } catch (e) {
    throw new Error(`${file}: invalid checkpoint state metadata: ${(e as Error).message}`);
  }
}

/** Loads a checkpoint into `model` (strict) and `optimizer` (when given). */
export function loadCheckpoint(file: string, model: ml.nn.Module, optimizer: ml.optim.Optimizer<any> | null): TrainingState {
  const state = readCheckpointState(file);
  const loaded = ml.load(file);
  try {
    const sd: Record<string, ml.Tensor> = {};
    for (const [k, v] of Object.entries(loaded.tensors)) if (k.startsWith('model.')) sd[k.slice(6)] = v;
    model.loadStateDict(sd);
    if (optimizer) optimizer.loadStateDict(ml.optim.fromSafetensors(loaded));
  } finally {
    for (const t of Object.values(loaded.tensors)) t.dispose();
  }
  return state;
}

/** The model tensors of a checkpoint (names without the "model." prefix); the caller owns them. */
export function loadModelWeights(file: string): { weights: Record<string, ml.Tensor>; state: TrainingState } {
  const state = readCheckpointState(file);
  const loaded = ml.load(file);
  const weights: Record<string, ml.Tensor> = {};
  for (const [k, v] of Object.entries(loaded.tensors)) {
    if (k.startsWith('model.')) weights[k.slice(6)] = v;
    else v.dispose();
  }
  return { weights, state };
}
