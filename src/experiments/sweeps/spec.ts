/**
 * Sweep specs: what to vary, how, and what to optimise. A spec is a JSON file or a plain object:
 *
 * ```ts
 * const spec: SweepSpec = {
 *   name: 'lr-arch', stage: 'align', preset: 'quick',
 *   base: { train: { steps: 300 } },
 *   params: { 'train.lr': { logUniform: [3e-4, 3e-3] }, 'model.arch': { choice: ['dual', 'shared'] } },
 *   method: 'random', trials: 8, seed: 0,
 *   metric: 'val/t2i/r@1', mode: 'max',
 *   halving: { rungs: [50, 150], eta: 3 },
 * };
 * const trials = expandTrials(spec);   // every trial's full, validated config, before anything runs
 * ```
 *
 * Parameter kinds: `grid` (crossed with the other grid axes), `values` (a list: every `values` param is zipped
 * with the others, trial i takes the i-th entry of each, and the zipped list is crossed with the grid axes),
 * `choice` (a grid axis under method grid, one uniform pick per trial under method random), `uniform`,
 * `logUniform` and `int` (ranges, random only). Random sampling uses its own seeded generator (mulberry32), so
 * the same spec always gives the same trials.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import { AlignConfig, resolveAlignConfig } from '../stages/align/config';
import { Json, JsonObject, cloneJson, mergePatches } from '../stages/config';

export type ParamSpec =
  | { grid: Json[] }
  | { values: Json[] }
  | { choice: Json[] }
  | { uniform: [number, number] }
  | { logUniform: [number, number] }
  | { int: [number, number] };

export interface HalvingSpec {
  /** Steps at which trials are compared, strictly increasing and below every trial's train.steps. */
  rungs: number[];
  /** The fraction kept at each rung (default 1/eta). */
  keep?: number;
  /** Keep 1/eta of the trials at each rung (default 3). */
  eta?: number;
}

export interface SweepSpec {
  name: string;
  stage: 'align';
  /** A preset of the stage ('quick', 'small'); none: the stage defaults. */
  preset?: string | null;
  /** A partial config every trial starts from. */
  base?: JsonObject;
  /** Dotted config keys and how to vary them. */
  params: { [key: string]: ParamSpec };
  method?: 'grid' | 'random';
  /** Number of trials (random only). */
  trials?: number;
  /** The seed of the random sampler (not the trials' training seed: that is `seed` in base or params). */
  seed?: number;
  /** The target metric (a key the stage logs, e.g. 'val/t2i/r@1'). */
  metric: string;
  mode: 'max' | 'min';
  halving?: HalvingSpec | null;
}

/** A spec with its defaults filled in. */
export interface NormalizedSpec {
  name: string;
  stage: 'align';
  preset: string | null;
  base: JsonObject;
  params: { [key: string]: ParamSpec };
  method: 'grid' | 'random';
  trials: number | null;
  seed: number;
  metric: string;
  mode: 'max' | 'min';
  halving: { rungs: number[]; keep: number } | null;
}

export interface Trial {
  index: number;
  /** The swept keys and this trial's values (dotted keys, in spec order). */
  params: { [key: string]: Json };
  /** The full, validated config of the trial (name `<sweep>-t<index>`). */
  config: AlignConfig;
}

const TOP_KEYS = ['name', 'stage', 'preset', 'base', 'params', 'method', 'trials', 'seed', 'metric', 'mode', 'halving'];
const KINDS = ['grid', 'values', 'choice', 'uniform', 'logUniform', 'int'] as const;
/** A sweep of more trials than this is almost certainly a mistake (a grid exploding). */
export const MAX_TRIALS = 10000;

function isObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

function fail(where: string, key: string, msg: string): never {
  throw new Error(`${where}: key ${key} ${msg}`);
}

/** Reads a spec file: JSON with errors naming the file (and the position JSON.parse reports). */
export function loadSweepSpec(file: string): NormalizedSpec {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`sweep spec ${file}: cannot read it: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    const m = /position (\d+)/.exec((e as Error).message);
    const where = m ? ` (line ${text.slice(0, Number(m[1])).split('\n').length})` : '';
    throw new Error(`sweep spec ${file}: not valid JSON${where}: ${(e as Error).message}`);
  }
  return normalizeSpec(raw, `sweep spec ${file}`);
}

/** Checks a spec's shape (every error names the key) and fills in defaults. Trial configs are checked by expandTrials. */
export function normalizeSpec(raw: unknown, where = 'sweep spec'): NormalizedSpec {
  if (!isObject(raw)) throw new Error(`${where}: must be a JSON object, got ${Array.isArray(raw) ? 'an array' : typeof raw}`);
  for (const k of Object.keys(raw)) if (!TOP_KEYS.includes(k)) fail(where, k, `is not a sweep spec key (keys: ${TOP_KEYS.join(', ')})`);
  if (typeof raw.name !== 'string' || !/^[A-Za-z0-9][\w.-]{0,99}$/.test(raw.name)) {
    fail(where, 'name', `must be 1-100 letters, digits, '.', '_' or '-' (starting with a letter or digit), got ${JSON.stringify(raw.name)}`);
  }
  if (raw.stage !== 'align') fail(where, 'stage', `must be "align" (the only stage sweeps run so far), got ${JSON.stringify(raw.stage)}`);
  const preset = raw.preset ?? null;
  if (preset !== null && typeof preset !== 'string') fail(where, 'preset', `must be a preset name or null, got ${JSON.stringify(preset)}`);
  const base = raw.base ?? {};
  if (!isObject(base)) fail(where, 'base', `must be an object (a partial ${raw.stage} config), got ${JSON.stringify(base)}`);
  if (!isObject(raw.params)) fail(where, 'params', `must be an object of dotted config key -> { grid | values | choice | uniform | logUniform | int }`);
  const method = raw.method ?? 'grid';
  if (method !== 'grid' && method !== 'random') fail(where, 'method', `must be "grid" or "random", got ${JSON.stringify(method)}`);
  const params: { [key: string]: ParamSpec } = {};
  let listLength: number | null = null;
  for (const [key, p] of Object.entries(raw.params)) {
    const k = `params.${key}`;
    if (!/^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$/.test(key)) fail(where, k, 'is not a dotted config key (e.g. "train.lr")');
    if (!isObject(p)) fail(where, k, `must be an object with one of ${KINDS.join(', ')}, got ${JSON.stringify(p)}`);
    const kinds = Object.keys(p);
    if (kinds.length !== 1 || !(KINDS as readonly string[]).includes(kinds[0])) {
      fail(where, k, `must have exactly one of ${KINDS.join(', ')}, got ${JSON.stringify(kinds)}`);
    }
    const kind = kinds[0] as (typeof KINDS)[number];
    const v = (p as Record<string, unknown>)[kind];
    if (kind === 'grid' || kind === 'values' || kind === 'choice') {
      if (!Array.isArray(v) || v.length === 0) fail(where, `${k}.${kind}`, `must be a non-empty array, got ${JSON.stringify(v)}`);
      if (kind === 'values') {
        if (listLength !== null && v.length !== listLength) {
          fail(where, `${k}.values`, `has ${v.length} entries but another values list has ${listLength}: values lists are zipped and must have one length`);
        }
        listLength = v.length;
      }
    } else {
      if (method !== 'random') fail(where, `${k}.${kind}`, `is a range: it needs method "random" (method is "${method}")`);
      if (!Array.isArray(v) || v.length !== 2 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x)) || !(v[0] <= v[1])) {
        fail(where, `${k}.${kind}`, `must be [low, high] with low <= high, got ${JSON.stringify(v)}`);
      }
      if (kind === 'logUniform' && !(v[0] > 0)) fail(where, `${k}.logUniform`, `needs low > 0, got ${JSON.stringify(v)}`);
      if (kind === 'int' && !(Number.isInteger(v[0]) && Number.isInteger(v[1]))) fail(where, `${k}.int`, `needs integer bounds, got ${JSON.stringify(v)}`);
    }
    params[key] = cloneJson(p) as ParamSpec;
  }
  let trials: number | null = null;
  if (method === 'random') {
    if (!Number.isInteger(raw.trials) || (raw.trials as number) < 1 || (raw.trials as number) > MAX_TRIALS) {
      fail(where, 'trials', `must be an integer in [1, ${MAX_TRIALS}] for method "random", got ${JSON.stringify(raw.trials)}`);
    }
    trials = raw.trials as number;
  } else if (raw.trials !== undefined && raw.trials !== null) {
    fail(where, 'trials', 'applies to method "random" only (a grid has one trial per combination)');
  }
  const seed = raw.seed ?? 0;
  if (!Number.isInteger(seed) || (seed as number) < 0 || (seed as number) > 2 ** 32 - 1) fail(where, 'seed', `must be an integer in [0, 2^32), got ${JSON.stringify(seed)}`);
  if (typeof raw.metric !== 'string' || raw.metric.trim() === '') fail(where, 'metric', `must be a metric key such as "val/t2i/r@1", got ${JSON.stringify(raw.metric)}`);
  if (raw.mode !== 'max' && raw.mode !== 'min') fail(where, 'mode', `must be "max" or "min", got ${JSON.stringify(raw.mode)}`);
  let halving: NormalizedSpec['halving'] = null;
  if (raw.halving !== undefined && raw.halving !== null) {
    const h = raw.halving;
    if (!isObject(h)) fail(where, 'halving', `must be { rungs: [steps...], keep | eta } or null, got ${JSON.stringify(h)}`);
    for (const k of Object.keys(h)) if (!['rungs', 'keep', 'eta'].includes(k)) fail(where, `halving.${k}`, 'is not a halving key (rungs, keep, eta)');
    const r = h.rungs;
    if (!Array.isArray(r) || r.length === 0 || r.some((x) => !Number.isInteger(x) || x < 1) || r.some((x, i) => i > 0 && x <= r[i - 1])) {
      fail(where, 'halving.rungs', `must be a non-empty, strictly increasing list of step counts >= 1, got ${JSON.stringify(r)}`);
    }
    if (h.keep !== undefined && h.eta !== undefined) fail(where, 'halving', 'takes keep or eta, not both');
    let keep = 1 / 3;
    if (h.keep !== undefined) {
      if (typeof h.keep !== 'number' || !(h.keep > 0 && h.keep < 1)) fail(where, 'halving.keep', `must be a fraction in (0, 1), got ${JSON.stringify(h.keep)}`);
      keep = h.keep;
    } else if (h.eta !== undefined) {
      if (typeof h.eta !== 'number' || !(h.eta > 1) || !Number.isFinite(h.eta)) fail(where, 'halving.eta', `must be a number > 1, got ${JSON.stringify(h.eta)}`);
      keep = 1 / h.eta;
    }
    if (!(raw.metric as string).startsWith('val/')) {
      fail(where, 'metric', `must be a val/ metric with halving (trials are compared at the rungs, where only val/ metrics are logged), got ${JSON.stringify(raw.metric)}`);
    }
    halving = { rungs: [...(r as number[])], keep };
  }
  return {
    name: raw.name as string, stage: 'align', preset: preset as string | null, base: cloneJson(base) as JsonObject, params,
    method, trials, seed: seed as number, metric: raw.metric as string, mode: raw.mode as 'max' | 'min', halving,
  };
}

/** The hash that, with the name, identifies a sweep (running the same spec again resumes it). Key order does not matter. */
export function specHash(spec: NormalizedSpec): string {
  return createHash('sha256').update(canonicalJson(spec)).digest('hex').slice(0, 16);
}

export function canonicalJson(x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(canonicalJson).join(',')}]`;
  if (isObject(x)) return `{${Object.keys(x).sort().filter((k) => x[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonicalJson(x[k])}`).join(',')}}`;
  return JSON.stringify(x);
}

/** mulberry32: a small, fast, seedable generator; uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Each trial's swept values (dotted key -> value), in a fixed order. */
export function sampleParams(spec: NormalizedSpec): Array<{ [key: string]: Json }> {
  const entries = Object.entries(spec.params);
  const out: Array<{ [key: string]: Json }> = [];
  if (spec.method === 'grid') {
    const lists = entries.filter(([, p]) => 'values' in p);
    const listLen = lists.length > 0 ? (lists[0][1] as { values: Json[] }).values.length : 1;
    // Axes in spec order; the zipped lists form one axis at the position of the first list. The last axis varies fastest.
    type Axis = { keys: string[]; points: Json[][] };
    const axes: Axis[] = [];
    let listAxisAdded = false;
    for (const [k, p] of entries) {
      if ('values' in p) {
        if (listAxisAdded) continue;
        listAxisAdded = true;
        axes.push({ keys: lists.map(([lk]) => lk), points: Array.from({ length: listLen }, (_, i) => lists.map(([, lp]) => (lp as { values: Json[] }).values[i])) });
      } else {
        const vs = 'grid' in p ? p.grid : (p as { choice: Json[] }).choice;
        axes.push({ keys: [k], points: vs.map((v) => [v]) });
      }
    }
    const total = axes.reduce((n, a) => n * a.points.length, 1);
    if (total > MAX_TRIALS) throw new Error(`sweep ${spec.name}: the grid has ${total} trials (more than ${MAX_TRIALS}); use method "random"`);
    for (let i = 0; i < total; i++) {
      const row: { [key: string]: Json } = {};
      let rest = i;
      const picks: number[] = [];
      for (let a = axes.length - 1; a >= 0; a--) {
        picks[a] = rest % axes[a].points.length;
        rest = Math.floor(rest / axes[a].points.length);
      }
      for (const [k] of entries) row[k] = null; // key order = spec order
      axes.forEach((a, ai) => a.keys.forEach((k, ki) => (row[k] = cloneJson(a.points[picks[ai]][ki]))));
      out.push(row);
    }
    return out;
  }
  const rand = mulberry32(spec.seed);
  const lists = entries.filter(([, p]) => 'values' in p);
  for (let t = 0; t < (spec.trials ?? 0); t++) {
    const row: { [key: string]: Json } = {};
    const listPick = lists.length > 0 ? Math.floor(rand() * (lists[0][1] as { values: Json[] }).values.length) : 0;
    for (const [k, p] of entries) {
      if ('values' in p) row[k] = cloneJson(p.values[listPick]);
      else if ('grid' in p) row[k] = cloneJson(p.grid[Math.floor(rand() * p.grid.length)]);
      else if ('choice' in p) row[k] = cloneJson(p.choice[Math.floor(rand() * p.choice.length)]);
      else if ('uniform' in p) row[k] = p.uniform[0] + rand() * (p.uniform[1] - p.uniform[0]);
      else if ('logUniform' in p) {
        const [lo, hi] = p.logUniform;
        row[k] = Math.exp(Math.log(lo) + rand() * (Math.log(hi) - Math.log(lo)));
      } else {
        const [lo, hi] = (p as { int: [number, number] }).int;
        row[k] = lo + Math.min(hi - lo, Math.floor(rand() * (hi - lo + 1)));
      }
    }
    out.push(row);
  }
  return out;
}

/** A nested patch from dotted keys. */
export function patchFromDotted(values: { [key: string]: Json }): JsonObject {
  const patch: JsonObject = {};
  for (const [key, v] of Object.entries(values)) {
    const parts = key.split('.');
    let node = patch;
    for (const p of parts.slice(0, -1)) {
      if (node[p] === undefined || !isObject(node[p])) node[p] = {};
      node = node[p] as JsonObject;
    }
    node[parts[parts.length - 1]] = cloneJson(v);
  }
  return patch;
}

/** The name of trial i's run (and its config's `name`). */
export function trialName(sweepName: string, index: number): string {
  return `${sweepName}-t${index}`;
}

/**
 * Every trial with its full config, validated before anything runs: an unknown key or a bad value in any trial is
 * an error naming the trial, its params and the key. With halving, every trial's train.steps must exceed the last
 * rung, and evaluations must fall on the rungs (train.evalEvery is set to the rungs' gcd unless the spec sets it,
 * in which case it must divide every rung).
 */
export function expandTrials(spec: NormalizedSpec, where = `sweep ${spec.name}`): Trial[] {
  const rows = sampleParams(spec);
  const setsEval = 'evalEvery' in ((spec.base.train as JsonObject | undefined) ?? {}) || 'train.evalEvery' in spec.params;
  return rows.map((params, index) => {
    let patch = mergePatches(spec.base, patchFromDotted(params));
    const fixed: JsonObject = { name: trialName(spec.name, index) };
    if (!('experiment' in spec.base) && !('experiment' in params)) fixed.experiment = spec.name;
    if (spec.halving && !setsEval) fixed.train = { evalEvery: spec.halving.rungs.reduce(gcd) };
    patch = mergePatches(patch, fixed);
    const label = `trial ${index} (${Object.entries(params).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ') || 'base'})`;
    let config: AlignConfig;
    try {
      config = resolveAlignConfig(spec.preset, patch);
    } catch (e) {
      throw new Error(`${where}: ${label}: ${(e as Error).message}`);
    }
    if (spec.halving) {
      const last = spec.halving.rungs[spec.halving.rungs.length - 1];
      if (config.train.steps <= last) {
        throw new Error(`${where}: ${label}: key train.steps (${config.train.steps}) must exceed the last halving rung (${last})`);
      }
      const ev = config.train.evalEvery;
      if (ev === 0 || spec.halving.rungs.some((r) => r % ev !== 0)) {
        throw new Error(`${where}: ${label}: key train.evalEvery (${ev}) must divide every halving rung (${spec.halving.rungs.join(', ')}) so trials are evaluated there`);
      }
    }
    return { index, params, config };
  });
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}
