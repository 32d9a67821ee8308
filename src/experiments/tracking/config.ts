/**
 * A run's config: checked to be plain JSON (so it reads back exactly as written) and flattened into dotted
 * params for filtering and sweep tables.
 *
 *   flattenConfig({ optim: { lr: 1e-3, betas: [0.9, 0.95] }, seed: 0 })
 *   // [['optim.lr', '0.001'], ['optim.betas', '[0.9,0.95]'], ['seed', '0']]
 *
 * Plain objects are flattened; everything else (numbers, strings, booleans, null, arrays) is a leaf stored as
 * its JSON text. An empty object is a leaf too (`{}`), so no key silently disappears.
 */

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

function describe(v: unknown): string {
  if (typeof v === 'bigint') return `a BigInt (${v}n)`;
  if (typeof v === 'function') return 'a function';
  if (typeof v === 'symbol') return 'a symbol';
  if (v === undefined) return 'undefined';
  if (typeof v === 'number') return String(v);
  const proto = Object.getPrototypeOf(v);
  return `an instance of ${proto?.constructor?.name ?? 'an unknown class'}`;
}

/**
 * Throws unless `config` is plain JSON data: no cycles, BigInts, functions, symbols, undefined, NaN/Infinity
 * (JSON would turn them into null) or class instances (a Date or Map would not read back as itself). Keys may
 * not contain '.', which separates levels in the flattened params.
 */
export function checkConfig(config: unknown, where = 'startRun'): asserts config is { [key: string]: JsonValue } {
  const bad = (path: string, what: string): never => {
    throw new Error(`${where}: config${path} is ${what}; a config must be JSON-serialisable plain data`);
  };
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new Error(`${where}: config must be a plain object, got ${config === null ? 'null' : Array.isArray(config) ? 'an array' : typeof config}`);
  }
  const stack: object[] = [];
  const visit = (v: unknown, path: string): void => {
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) bad(path, `${v} (JSON would store null)`);
      return;
    }
    if (typeof v !== 'object') return bad(path, describe(v));
    if (stack.includes(v)) return bad(path, 'a cycle (it contains itself)');
    const isArray = Array.isArray(v);
    const proto = Object.getPrototypeOf(v);
    if (!isArray && proto !== Object.prototype && proto !== null) return bad(path, describe(v));
    stack.push(v);
    if (isArray) {
      (v as unknown[]).forEach((x, i) => visit(x, `${path}[${i}]`));
    } else {
      if (Object.getOwnPropertySymbols(v).length > 0) bad(path, 'an object with symbol keys');
      for (const [k, x] of Object.entries(v)) {
        if (k === '' || k.includes('.')) bad(`${path}.${k}`, "a key that is empty or contains '.' (dots separate levels in params)");
        visit(x, `${path}.${k}`);
      }
    }
    stack.pop();
  };
  visit(config, '');
}

/** [dotted key, JSON text of the leaf] pairs, in the config's key order. Call checkConfig first. */
export function flattenConfig(config: { [key: string]: JsonValue }): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const walk = (v: JsonValue, prefix: string): void => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 0) {
      for (const [k, x] of Object.entries(v)) walk(x, prefix === '' ? k : `${prefix}.${k}`);
    } else {
      out.push([prefix, JSON.stringify(v)]);
    }
  };
  for (const [k, x] of Object.entries(config)) walk(x, k);
  return out;
}
