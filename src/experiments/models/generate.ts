/**
 * Text generation from a GPT: greedy decoding or seeded sampling (temperature, top-k, top-p), stopping at an
 * end-of-text id or a length limit, with a KV cache (default) or by re-running the whole sequence each step.
 * Both paths give the same tokens: they compute the same logits (to float rounding) and draw from one seeded
 * generator in the same order.
 *
 * ```ts
 * const out = generate(gpt, tok.encode('a red', { bos: true }), { maxNewTokens: 20, eosId: tok.eosId, greedy: true });
 * tok.decode(out.tokens[0]);
 * generate(gpt, [[bos], [bos]], { maxNewTokens: 20, temperature: 0.8, topP: 0.9, seed: 1, prefixEmbeds });  // a batch
 * ```
 *
 * The cache holds, per layer, the keys and values [B, H, t, D] of every position seen; each new token appends
 * one position (ml.concat on axis 2: the copy costs what attending over the cache does) and attends with one
 * query against all t + 1 keys. Generating n tokens thus costs O(n) block evaluations of one position instead of
 * O(n^2) positions without the cache.
 */
import * as ml from '../../index';
import { GPT } from './gpt';

export interface SamplingOptions {
  /** Always take the most likely token (the lowest id among ties). Default false. */
  greedy?: boolean;
  /** Logits are divided by it before the softmax; 0 means greedy. Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens (0: all). Default 0. */
  topK?: number;
  /** Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches p (1: all). Default 1. */
  topP?: number;
}

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  /** Stop a row when it produces this id (not included in its output). Default: none. */
  eosId?: number | null;
  /** Seed of the sampling generator. Default 0. */
  seed?: number;
  /** Default true. */
  useCache?: boolean;
  /** [B, P, W]: embeddings placed before the prompt (projected image tokens). */
  prefixEmbeds?: ml.Tensor | null;
  /** Called with the logits [B * V] the next tokens are drawn from, at each step (0, 1, ...). */
  onLogits?: (step: number, logits: Float32Array) => void;
}

export interface GenerateResult {
  /** The new tokens of each row, without the prompt and without the eos. */
  tokens: number[][];
  /** Why each row stopped: its eos, or maxNewTokens / the context length. */
  finishReason: Array<'eos' | 'length'>;
}

/** A seeded uniform generator in [0, 1) (mulberry32): the same seed gives the same draws on every machine. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function checkSampling(o: SamplingOptions, V: number): { greedy: boolean; temperature: number; topK: number; topP: number } {
  const temperature = o.temperature ?? 1;
  if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature)) {
    throw new Error(`generate: temperature must be a finite number >= 0, got ${JSON.stringify(o.temperature)}`);
  }
  const topK = o.topK ?? 0;
  if (!Number.isInteger(topK) || topK < 0) throw new Error(`generate: topK must be an integer >= 0 (0: off), got ${JSON.stringify(o.topK)}`);
  const topP = o.topP ?? 1;
  if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) throw new Error(`generate: topP must be in (0, 1], got ${JSON.stringify(o.topP)}`);
  return { greedy: !!o.greedy || temperature === 0 || topK === 1, temperature, topK: topK === 0 ? V : Math.min(topK, V), topP };
}

/** The id of the largest logit (the lowest id among ties). */
export function argmaxRow(logits: ArrayLike<number>, offset = 0, V = logits.length - offset): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < V; i++) {
    const v = logits[offset + i];
    if (v > bestV) { bestV = v; best = i; }
  }
  return best;
}

/**
 * The distribution a sampled token is drawn from: the kept ids, most likely first (ties: lower id first), and
 * their renormalised probabilities. softmax(logits / temperature), then top-k, then top-p over what is left.
 */
export function samplingDistribution(logits: ArrayLike<number>, opts: SamplingOptions = {}, offset = 0, V = logits.length - offset): { ids: Int32Array; probs: Float64Array } {
  const o = checkSampling(opts, V);
  if (o.greedy) return { ids: Int32Array.of(argmaxRow(logits, offset, V)), probs: Float64Array.of(1) };
  const ids = Array.from({ length: V }, (_, i) => i);
  ids.sort((a, b) => (logits[offset + b] - logits[offset + a]) || (a - b));
  const k = o.topK;
  const max = logits[offset + ids[0]];
  const probs = new Float64Array(k);
  let total = 0;
  for (let i = 0; i < k; i++) {
    probs[i] = Math.exp((logits[offset + ids[i]] - max) / o.temperature);
    total += probs[i];
  }
  // Nucleus (Holtzman et al. 2020): the smallest prefix of the sorted tokens whose mass reaches p; at least one.
  let keep = k;
  if (o.topP < 1) {
    let cum = 0;
    for (let i = 0; i < k; i++) {
      cum += probs[i] / total;
      if (cum >= o.topP) { keep = i + 1; break; }
    }
  }
  let kept = 0;
  for (let i = 0; i < keep; i++) kept += probs[i];
  const out = new Float64Array(keep);
  for (let i = 0; i < keep; i++) out[i] = probs[i] / kept;
  return { ids: Int32Array.from(ids.slice(0, keep)), probs: out };
}

/** One token drawn from a row of logits with `rand` (a uniform [0, 1) generator). */
export function sampleToken(logits: ArrayLike<number>, opts: SamplingOptions, rand: () => number, offset = 0, V = logits.length - offset): number {
  const d = samplingDistribution(logits, opts, offset, V);
  if (d.ids.length === 1) return d.ids[0];
  const u = rand();
  let cum = 0;
  for (let i = 0; i < d.ids.length; i++) {
    cum += d.probs[i];
    if (u < cum) return d.ids[i];
  }
  return d.ids[d.ids.length - 1];
}

/** Prompt rows as one Int32Array [B, T]; every row must have the same length T >= 1. */
function promptRows(prompt: number[] | number[][] | ml.Tensor, V: number): { ids: Int32Array; B: number; T: number } {
  let rows: ArrayLike<number>[];
  if (prompt instanceof ml.Tensor) {
    if (prompt.dtype !== 'i32' || prompt.ndim !== 2) throw new Error(`generate: a prompt tensor must be i32 [B, T], got ${prompt.dtype} ${JSON.stringify(prompt.shape)}`);
    const [B, T] = prompt.shape;
    const a = prompt.toArray() as Int32Array;
    rows = Array.from({ length: B }, (_, b) => a.subarray(b * T, (b + 1) * T));
  } else if (Array.isArray(prompt) && prompt.length > 0 && (prompt as unknown[]).every((r) => Array.isArray(r))) {
    rows = prompt as number[][];
  } else if (Array.isArray(prompt) && (prompt as unknown[]).every((x) => typeof x === 'number')) {
    rows = [prompt as number[]];
  } else {
    throw new Error('generate: prompt must be token ids (number[]), a batch of them (number[][]) or an i32 tensor [B, T]');
  }
  const T = rows[0].length;
  if (T === 0) throw new Error('generate: the prompt is empty; start it with a token (e.g. <bos>)');
  rows.forEach((r, b) => {
    if (r.length !== T) throw new Error(`generate: prompt rows must share one length; row 0 has ${T} tokens, row ${b} has ${r.length}`);
    for (let t = 0; t < T; t++) {
      const id = r[t];
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`generate: prompt row ${b} token ${t} = ${id} is not an id in [0, ${V})`);
    }
  });
  const ids = new Int32Array(rows.length * T);
  rows.forEach((r, b) => ids.set(Array.from(r), b * T));
  return { ids, B: rows.length, T };
}

/** Generate up to maxNewTokens after each prompt row (see the file comment). The model is run in eval mode. */
export function generate(model: GPT, prompt: number[] | number[][] | ml.Tensor, opts: GenerateOptions): GenerateResult {
  if (!(model instanceof GPT)) throw new Error('generate: model must be a GPT');
  if (opts === null || typeof opts !== 'object') throw new Error('generate: options are required ({ maxNewTokens, ... })');
  const { vocabSize: V, contextLength } = model.config;
  if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 1) {
    throw new Error(`generate: maxNewTokens must be an integer >= 1, got ${JSON.stringify(opts.maxNewTokens)}`);
  }
  checkSampling(opts, V);
  const eos = opts.eosId ?? null;
  if (eos !== null && (!Number.isInteger(eos) || eos < 0 || eos >= V)) throw new Error(`generate: eosId ${eos} is not an id in [0, ${V})`);
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed)) throw new Error(`generate: seed must be an integer, got ${JSON.stringify(opts.seed)}`);
  const { ids, B, T } = promptRows(prompt, V);
  const prefix = opts.prefixEmbeds ?? null;
  const P = prefix ? prefix.shape[1] : 0;
  if (prefix && (prefix.ndim !== 3 || prefix.shape[0] !== B)) {
    throw new Error(`generate: prefixEmbeds ${JSON.stringify(prefix.shape)} must be [${B}, P, ${model.config.width}] (one row per prompt)`);
  }
  if (P + T > contextLength) throw new Error(`generate: prefix ${P} + prompt ${T} positions exceed contextLength ${contextLength}`);
  // The token after position contextLength - 1 is the last one there are logits for.
  const maxNew = Math.min(opts.maxNewTokens, contextLength - P - T + 1);
  const rand = seededRandom(seed);
  const device = model.device;
  const out: number[][] = Array.from({ length: B }, () => []);
  const reason: Array<'eos' | 'length'> = new Array(B).fill('length');
  const done = new Array<boolean>(B).fill(false);
  const seq: number[][] = Array.from({ length: B }, (_, b) => Array.from(ids.subarray(b * T, (b + 1) * T)));
  const wasTraining = model.training;
  model.eval();
  const cache = model.emptyCache();
  try {
    return ml.noGrad(() => {
      const useCache = opts.useCache ?? true;
      // Logits [B * V] of the next token after everything in `seq`.
      const nextLogits = (step: number, fed: Int32Array | null): Float32Array => ml.tidy(() => {
        if (!useCache) {
          const all = Int32Array.from(seq.flat());
          const toks = ml.tensor(all, [B, all.length / B], { dtype: 'i32', device });
          const h = model.hidden(prefix, toks);
          const L = h.shape[1];
          return model.head(ml.reshape(ml.slice(h, 1, L - 1, L), [B, model.config.width])).toArray() as Float32Array;
        }
        const x = step === 0
          ? model.embed(prefix, ml.tensor(ids, [B, T], { dtype: 'i32', device }), 0)
          : model.embed(null, ml.tensor(fed!, [B, 1], { dtype: 'i32', device }), cache.length);
        return model.head(model.step(x, cache)).toArray() as Float32Array;
      });
      let fed: Int32Array | null = null;
      for (let step = 0; step < maxNew; step++) {
        const logits = nextLogits(step, fed);
        opts.onLogits?.(step, logits);
        fed = new Int32Array(B);
        for (let b = 0; b < B; b++) {
          // Every row draws (finished ones too), so a row's tokens do not depend on when the others stop.
          const id = sampleToken(logits, opts, rand, b * V, V);
          if (done[b]) { fed[b] = eos ?? id; continue; }
          fed[b] = id;
          if (eos !== null && id === eos) { done[b] = true; reason[b] = 'eos'; continue; }
          out[b].push(id);
        }
        for (let b = 0; b < B; b++) seq[b].push(fed[b]);
        if (done.every(Boolean)) break;
      }
      return { tokens: out, finishReason: reason };
    });
  } finally {
    cache.dispose();
    model.train(wasTraining);
  }
}
