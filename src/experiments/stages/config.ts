/**
 * Typed stage configs: defaults, presets, `--set key=value` overrides, and validation whose errors name the key.
 *
 * A config is a plain JSON object. Its shape is the shape of the stage's defaults: every key a user sets must
 * exist there (a typo is an error that suggests the nearest key), and its value must have the default's type
 * (number, string, boolean, array, object; `null` defaults accept an object or null). Value ranges are checked by
 * each stage's own validator, which also names the key.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

function isObject(x: unknown): x is JsonObject {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

/** A deep copy of a JSON value. */
export function cloneJson<T>(x: T): T {
  return JSON.parse(JSON.stringify(x)) as T;
}

function kind(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'array';
  return typeof x;
}

/** Every dotted leaf key of a config (objects are walked, arrays are leaves). */
export function leafKeys(x: JsonObject, prefix = ''): string[] {
  return Object.entries(x).flatMap(([k, v]) => (isObject(v) ? leafKeys(v, `${prefix}${k}.`) : [`${prefix}${k}`]));
}

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return d[b.length];
}

function suggest(key: string, known: string[]): string {
  let best = '';
  let bestD = Infinity;
  for (const k of known) {
    const dd = distance(key, k);
    if (dd < bestD) {
      bestD = dd;
      best = k;
    }
  }
  return bestD <= Math.max(2, Math.floor(key.length / 3)) ? ` (did you mean ${best}?)` : '';
}

/**
 * Merges `patch` into a copy of `base`, checking every key of `patch` against `schema` (the stage defaults).
 * `where` prefixes errors (e.g. "align config").
 */
export function mergeConfig<T extends object>(base: T, patch: unknown, schema: object, where: string, prefix = ''): T {
  if (!isObject(patch)) throw new Error(`${where}: ${prefix ? `key ${prefix.slice(0, -1)}` : 'the config'} must be an object, got ${kind(patch)}`);
  const out = cloneJson(base) as unknown as JsonObject;
  const sch = schema as JsonObject;
  const known = [...Object.keys(sch), ...leafKeys(schema as JsonObject)];
  for (const [k, v] of Object.entries(patch)) {
    const full = `${prefix}${k}`;
    if (!(k in sch)) throw new Error(`${where}: unknown key ${full}${suggest(full, known.map((x) => prefix + x))}`);
    const d = sch[k];
    if (isObject(d)) {
      out[k] = mergeConfig((out[k] ?? d) as JsonObject, v, d, where, `${full}.`) as unknown as Json;
      continue;
    }
    checkType(where, full, d, v);
    out[k] = cloneJson(v as Json);
  }
  return out as unknown as T;
}

function checkType(where: string, key: string, def: Json, v: unknown): void {
  if (v === undefined) throw new Error(`${where}: key ${key} has no value`);
  if (def === null) return; // optional object / value: anything JSON goes, the stage validates it
  if (typeof def === 'number') {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${where}: key ${key} must be a finite number, got ${JSON.stringify(v)}`);
  } else if (kind(def) !== kind(v) && !(v === null && isObject(def))) {
    throw new Error(`${where}: key ${key} must be ${kind(def) === 'array' ? 'an array' : `a ${kind(def)}`}, got ${JSON.stringify(v)}`);
  }
}

/**
 * Parses `key=value` overrides (the command line's `--set`). The value is read as JSON when it parses
 * (`3e-4`, `true`, `[0.9,0.98]`, `null`), otherwise as a string (`arch=shared`). Returns a nested patch.
 */
export function parseOverrides(items: string[], where: string): JsonObject {
  const patch: JsonObject = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new Error(`${where}: --set expects key=value, got ${JSON.stringify(item)}`);
    const key = item.slice(0, eq).trim();
    const raw = item.slice(eq + 1);
    let value: Json;
    try {
      value = JSON.parse(raw) as Json;
    } catch {
      value = raw;
    }
    const parts = key.split('.');
    if (parts.some((p) => p === '')) throw new Error(`${where}: bad key ${JSON.stringify(key)} in --set`);
    let node = patch;
    for (const p of parts.slice(0, -1)) {
      const next = node[p];
      if (next !== undefined && !isObject(next)) throw new Error(`${where}: --set ${key} conflicts with an earlier --set of ${p}`);
      node = (node[p] ??= {}) as JsonObject;
    }
    node[parts[parts.length - 1]] = value;
  }
  return patch;
}

/** Range checks used by the stage validators. */
export function checkInt(where: string, key: string, v: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new Error(`${where}: key ${key} must be an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? '∞' : max}], got ${v}`);
  }
}

export function checkRange(where: string, key: string, v: number, min: number, max: number, openMin = false): void {
  if (!(openMin ? v > min : v >= min) || !(v <= max)) {
    throw new Error(`${where}: key ${key} must be in ${openMin ? '(' : '['}${min}, ${max}], got ${v}`);
  }
}

export function checkOneOf<T extends string>(where: string, key: string, v: string, allowed: readonly T[]): void {
  if (!(allowed as readonly string[]).includes(v)) {
    throw new Error(`${where}: key ${key} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${JSON.stringify(v)}`);
  }
}

/** Deep merge of two patches (b wins; objects merge, everything else is replaced). No schema check. */
export function mergePatches(a: JsonObject, b: JsonObject): JsonObject {
  const out: JsonObject = cloneJson(a);
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] = isObject(prev) && isObject(v) ? mergePatches(prev, v) : cloneJson(v);
  }
  return out;
}

/**
 * Defaults <- preset <- overrides, every key checked against the defaults, then the stage's own validator: what
 * each stage's `resolve...Config(preset, overrides)` does.
 */
export function resolveStageConfig<T extends object>(where: string, defaults: T, presets: Record<string, JsonObject>,
  preset: string | null, overrides: unknown, validate: (c: T) => void): T {
  let cfg = cloneJson(defaults);
  if (preset !== null) {
    const p = presets[preset];
    if (!p) throw new Error(`${where}: unknown preset ${JSON.stringify(preset)}; presets: ${Object.keys(presets).join(', ')}`);
    cfg = mergeConfig(cfg, p, defaults, where);
  }
  cfg = mergeConfig(cfg, overrides, defaults, where);
  validate(cfg);
  return cfg;
}

/** The optimizer, schedule and bookkeeping keys every stage's `train` section has. */
export interface TrainSection {
  steps: number;
  /** Examples per step (lm: sequences). */
  batchSize: number;
  lr: number;
  minLrRatio: number;
  warmupSteps: number;
  weightDecay: number;
  betas: [number, number];
  eps: number;
  /** Max global gradient norm (0: no clipping). */
  gradClip: number;
  /** Evaluate every N steps (0: only at the end): retrieval, perplexity, BLEU-4 / ROUGE-L or VQA by stage. */
  evalEvery: number;
  /** Write a resumable checkpoint every N steps (0: only at the end). */
  checkpointEvery: number;
  logEvery: number;
}

/** Range checks of a stage's `train` section (keys named `train.<key>` in errors). */
export function checkTrainSection(where: string, t: TrainSection, batch: { min?: number; max?: number } = {}): void {
  checkInt(where, 'train.steps', t.steps, 1);
  checkInt(where, 'train.batchSize', t.batchSize, batch.min ?? 1, batch.max ?? 4096);
  checkRange(where, 'train.lr', t.lr, 0, 10, true);
  checkRange(where, 'train.minLrRatio', t.minLrRatio, 0, 1);
  checkInt(where, 'train.warmupSteps', t.warmupSteps, 0, t.steps);
  checkRange(where, 'train.weightDecay', t.weightDecay, 0, 10);
  if (!Array.isArray(t.betas) || t.betas.length !== 2 || t.betas.some((b) => typeof b !== 'number' || !(b >= 0 && b < 1))) {
    throw new Error(`${where}: key train.betas must be [beta1, beta2] in [0, 1), got ${JSON.stringify(t.betas)}`);
  }
  checkRange(where, 'train.eps', t.eps, 0, 1, true);
  checkRange(where, 'train.gradClip', t.gradClip, 0, 1e9);
  checkInt(where, 'train.evalEvery', t.evalEvery, 0);
  checkInt(where, 'train.checkpointEvery', t.checkpointEvery, 0);
  checkInt(where, 'train.logEvery', t.logEvery, 1);
}
