/**
 * The dashboard's queries: parsing and checking what a URL asks for (a bad value is an HttpError 400 naming the
 * parameter, a missing run a 404), and the JSON payloads that the pages embed and the API serves.
 *
 *   GET /api/runs?experiment=E&stage=S&status=S&param=key=value&sort=metric:loss&order=asc&metrics=a,b
 *   GET /api/runs/:id                      the run, its config, params, parent, children, artifacts, metric keys
 *   GET /api/runs/:id/metrics?keys=a,b&since=N
 *                                          points with step > N (all without since), by key
 */
import type { JsonValue, RunStatus } from '../tracking';
import { isLossKey, isRetrievalKey } from '../report/html';
import { STATUSES, type DashArtifact, type DashRun, type DashSweep, type RunQuery, type Store, type WireSeries } from './store';

export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export const bad = (msg: string): HttpError => new HttpError(400, msg);

/** Columns of the runs table that are not metrics. */
export const RUN_COLUMNS = ['id', 'name', 'experiment', 'stage', 'status', 'started', 'duration'] as const;
export type RunColumn = (typeof RUN_COLUMNS)[number];
/** Metric columns shown when the URL names none: the loss keys first, then others, at most this many. */
export const DEFAULT_METRIC_COLUMNS = 6;

export interface RunsRequest {
  filter: RunQuery;
  /** A column name or `metric:<key>`. */
  sort: string;
  order: 'asc' | 'desc';
  /** Metric columns asked for (null: the default choice). */
  metrics: string[] | null;
}

/** A positive integer id from a URL, or a 400. */
export function parseId(s: string, what = 'run id'): number {
  if (!/^[1-9]\d{0,15}$/.test(s) || !Number.isSafeInteger(Number(s))) throw bad(`${what} must be a positive integer, got ${JSON.stringify(s)}`);
  return Number(s);
}

/** A comma-separated list, or the repeated parameter: `keys=a,b` or `key=a&key=b`. Empty items are refused. */
function list(q: URLSearchParams, name: string, single?: string): string[] | null {
  const parts: string[] = [];
  let given = false;
  for (const v of q.getAll(name)) {
    given = true;
    for (const p of v.split(',')) {
      if (p === '') throw bad(`${name}: an empty item in ${JSON.stringify(v)}`);
      parts.push(p);
    }
  }
  if (single !== undefined) {
    for (const v of q.getAll(single)) {
      given = true;
      if (v === '') throw bad(`${single}: empty`);
      parts.push(v);
    }
  }
  return given ? parts : null;
}

/** `key=value`: the value as JSON when it parses (3e-4, true, "x"), else the literal string (as `modalab runs`). */
export function parseParam(s: string): [string, JsonValue] {
  const eq = s.indexOf('=');
  if (eq <= 0) throw bad(`param must be key=value, got ${JSON.stringify(s)}`);
  const raw = s.slice(eq + 1);
  let v: JsonValue;
  try {
    v = JSON.parse(raw) as JsonValue;
  } catch {
    v = raw;
  }
  return [s.slice(0, eq), v];
}

export function parseRunsRequest(q: URLSearchParams): RunsRequest {
  const filter: RunQuery = {};
  const one = (name: string): string | undefined => {
    const all = q.getAll(name).filter((v) => v !== '');
    if (all.length > 1) throw bad(`${name} is given ${all.length} times`);
    return all[0];
  };
  const experiment = one('experiment');
  if (experiment !== undefined) filter.experiment = experiment;
  const stage = one('stage');
  if (stage !== undefined) filter.stage = stage;
  const status = one('status');
  if (status !== undefined) {
    if (!STATUSES.includes(status as RunStatus)) throw bad(`status must be one of ${STATUSES.join(', ')}, got ${JSON.stringify(status)}`);
    filter.status = status as RunStatus;
  }
  const sweep = one('sweep');
  if (sweep !== undefined) filter.sweep = parseId(sweep, 'sweep');
  const params = q.getAll('param').filter((v) => v !== '').map(parseParam);
  if (params.length > 0) filter.params = params;
  const sort = one('sort') ?? 'id';
  if (!(RUN_COLUMNS as readonly string[]).includes(sort) && !(sort.startsWith('metric:') && sort.length > 'metric:'.length)) {
    throw bad(`sort must be one of ${RUN_COLUMNS.join(', ')} or metric:<key>, got ${JSON.stringify(sort)}`);
  }
  const order = one('order') ?? (sort === 'id' || sort === 'started' ? 'desc' : 'asc');
  if (order !== 'asc' && order !== 'desc') throw bad(`order must be asc or desc, got ${JSON.stringify(order)}`);
  return { filter, sort, order, metrics: list(q, 'metrics') };
}

/** Loss keys first, then retrieval keys, then the rest, each group in name order. */
export function orderKeys(keys: readonly string[]): string[] {
  const rank = (k: string) => (isLossKey(k) ? 0 : isRetrievalKey(k) ? 1 : 2);
  return [...keys].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** A number as JSON can carry it: NaN and ±Infinity become the strings 'NaN', 'Infinity', '-Infinity'. */
export type WireNumber = number | 'NaN' | 'Infinity' | '-Infinity' | null;
function wire(v: number | null): WireNumber {
  if (v === null || Number.isFinite(v)) return v;
  return Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity';
}

export interface RunRow extends DashRun {
  /** The latest value of each metric column. */
  metrics: Record<string, WireNumber>;
}

export interface RunsPayload {
  runs: RunRow[];
  /** The metric columns, in display order. */
  metricKeys: string[];
  /** Every metric key the listed runs logged (the sort choices). */
  allMetricKeys: string[];
  sort: string;
  order: 'asc' | 'desc';
}

function duration(r: DashRun): number {
  return (r.endedAt ?? r.heartbeatAt) - r.startedAt;
}

/** The runs table: filtered, with the latest value of each metric column, sorted. */
export function runsPayload(store: Store, req: RunsRequest): RunsPayload {
  if (req.filter.sweep !== undefined && !store.hasSweeps) throw bad('sweep: this database has no sweeps (its schema predates them)');
  const runs = store.listRuns(req.filter);
  const ids = runs.map((r) => r.id);
  const allMetricKeys = orderKeys(store.metricKeys(ids));
  let metricKeys = req.metrics ?? allMetricKeys.slice(0, DEFAULT_METRIC_COLUMNS);
  const sortKey = req.sort.startsWith('metric:') ? req.sort.slice('metric:'.length) : null;
  if (sortKey !== null && runs.length > 0 && !allMetricKeys.includes(sortKey)) {
    throw bad(`sort: no listed run logged the metric ${JSON.stringify(sortKey)}`);
  }
  if (sortKey !== null && !metricKeys.includes(sortKey)) metricKeys = [...metricKeys, sortKey];
  const latest = store.latest(ids, metricKeys);
  const rows: RunRow[] = runs.map((r) => {
    const m: Record<string, WireNumber> = {};
    for (const [k, v] of Object.entries(latest.get(r.id)!)) m[k] = wire(v);
    return { ...r, metrics: m };
  });
  const num = new Map(runs.map((r) => [r.id, sortKey === null ? null : latest.get(r.id)![sortKey]]));
  const sign = req.order === 'asc' ? 1 : -1;
  const cmp = (a: RunRow, b: RunRow): number => {
    if (sortKey !== null) {
      // Runs without the metric (or with NaN) go last whatever the order, as in a spreadsheet.
      const x = num.get(a.id), y = num.get(b.id);
      const xm = x === null || x === undefined || Number.isNaN(x), ym = y === null || y === undefined || Number.isNaN(y);
      if (xm || ym) return xm && ym ? a.id - b.id : xm ? 1 : -1;
      return x === y ? a.id - b.id : sign * (x! < y! ? -1 : 1);
    }
    const col = req.sort as RunColumn;
    const v = (r: RunRow): string | number => col === 'id' ? r.id : col === 'started' ? r.startedAt : col === 'duration' ? duration(r)
      : (col === 'stage' ? r.stage ?? '' : r[col]);
    const x = v(a), y = v(b);
    return x === y ? a.id - b.id : sign * (x < y ? -1 : 1);
  };
  rows.sort(cmp);
  return { runs: rows, metricKeys, allMetricKeys, sort: req.sort, order: req.order };
}

export interface RunDetail {
  run: DashRun;
  config: { [key: string]: JsonValue };
  params: Record<string, JsonValue>;
  parent: DashRun | null;
  /** The sweep this run is a trial of (null when none, or the file has no sweeps). */
  sweep: DashSweep | null;
  children: DashRun[];
  artifacts: DashArtifact[];
  /** Loss keys first. */
  metricKeys: string[];
}

export function getRunOr404(store: Store, id: number): DashRun {
  const run = store.getRun(id);
  if (run === null) throw new HttpError(404, `no run ${id} in this database`);
  return run;
}

export function runDetail(store: Store, id: number): RunDetail {
  const run = getRunOr404(store, id);
  return {
    run,
    config: store.config(id),
    params: store.params([id]).get(id)!,
    parent: run.parentRunId === null ? null : store.getRun(run.parentRunId),
    sweep: run.sweepId === null ? null : store.sweep(run.sweepId),
    children: store.children(id),
    artifacts: store.artifacts(id),
    metricKeys: orderKeys(store.metricKeys([id])),
  };
}

export interface MetricsPayload {
  runId: number;
  status: RunStatus;
  stale: boolean;
  since: number | null;
  metrics: Record<string, WireSeries>;
}

/** `since` from a URL: an integer (steps are >= 0, so -1 means everything), or a 400. */
export function parseSince(s: string | null): number | undefined {
  if (s === null) return undefined;
  if (!/^-?\d{1,15}$/.test(s)) throw bad(`since must be an integer step, got ${JSON.stringify(s)}`);
  return Number(s);
}

export function metricsPayload(store: Store, id: number, q: URLSearchParams): MetricsPayload {
  // The query is checked before the run is looked up: a malformed request is a 400 whatever the id.
  const since = parseSince(q.get('since'));
  const asked = list(q, 'keys', 'key');
  const run = getRunOr404(store, id);
  const keys = asked ?? store.metricKeys([id]);
  return { runId: id, status: run.status, stale: run.stale, since: since ?? null, metrics: store.series(id, keys, since) };
}

/** Ids for the compare page: `runs=1,2,3`, each a positive integer, no repeats, at least one, at most 50. */
export function parseRunIds(q: URLSearchParams): number[] {
  const parts = list(q, 'runs', 'run');
  if (parts === null || parts.length === 0) throw bad('runs: give the runs to compare, e.g. ?runs=1,2');
  const ids = parts.map((p) => parseId(p, 'runs: a run id'));
  if (new Set(ids).size !== ids.length) throw bad('runs: a run id is given twice');
  if (ids.length > 50) throw bad(`runs: at most 50 runs at once, got ${ids.length}`);
  return ids;
}

export interface ComparePayload {
  runs: DashRun[];
  metricKeys: string[];
  /** series[i][key]: run i's points of key (absent when it never logged it). */
  series: Array<Record<string, WireSeries>>;
  /** Parallel coordinates of the params that differ, when the runs share a sweep or an experiment. */
  sweep: {
    /** 'sweep 3' or 'experiment "x"' */
    scope: string;
    params: string[];
    metricKeys: string[];
    rows: Array<Record<string, number | string | boolean | null>>;
  } | null;
  /** Why there is no parallel-coordinates plot, when there is none. */
  sweepNote: string | null;
}

export function comparePayload(store: Store, ids: readonly number[]): ComparePayload {
  const runs = ids.map((id) => getRunOr404(store, id));
  const metricKeys = orderKeys(store.metricKeys(ids));
  const series = ids.map((id) => {
    const own = store.metricKeys([id]);
    return store.series(id, own);
  });
  let sweep: ComparePayload['sweep'] = null;
  let sweepNote: string | null = null;
  const sweepId = runs[0].sweepId;
  const sw = sweepId !== null && runs.every((r) => r.sweepId === sweepId) ? store.sweep(sweepId) : null;
  const scope = sw !== null ? `sweep ${JSON.stringify(sw.name)}`
    : runs.every((r) => r.experiment === runs[0].experiment) ? `experiment ${JSON.stringify(runs[0].experiment)}` : null;
  if (runs.length < 2) {
    sweepNote = 'pick two runs or more for a parallel-coordinates view of their params';
  } else if (metricKeys.length === 0) {
    sweepNote = 'no metrics logged: no parallel-coordinates view';
  } else if (scope === null) {
    sweepNote = 'these runs share no sweep or experiment: no parallel-coordinates view';
  } else {
    const params = store.params(ids);
    const keys = [...new Set(ids.flatMap((id) => Object.keys(params.get(id)!)))].sort();
    const differ = keys.filter((k) => new Set(ids.map((id) => JSON.stringify(params.get(id)![k] ?? null))).size > 1);
    if (differ.length === 0) {
      sweepNote = 'the runs have the same params: no parallel-coordinates view';
    } else {
      const latest = store.latest(ids, metricKeys);
      // A param named like a metric would collide in a row: it gets a prefix.
      const label = (k: string) => (metricKeys.includes(k) || k === 'name' ? `param:${k}` : k);
      const rows = ids.map((id, i) => {
        const row: Record<string, number | string | boolean | null> = { name: `#${id} ${runs[i].name}` };
        for (const k of differ) {
          const v = params.get(id)![k];
          row[label(k)] = v === undefined || v === null ? null : typeof v === 'object' ? JSON.stringify(v) : v;
        }
        for (const k of metricKeys) {
          const v = latest.get(id)![k];
          row[k] = v === null || !Number.isFinite(v) ? null : v;
        }
        return row;
      });
      // A sweep's own target metric is offered first.
      const keys = sw !== null && metricKeys.includes(sw.metric) ? [sw.metric, ...metricKeys.filter((k) => k !== sw.metric)] : metricKeys;
      sweep = { scope, params: differ.map(label), metricKeys: keys, rows };
    }
  }
  return { runs, metricKeys, series, sweep, sweepNote };
}
