// `modalab runs`: the runs in a tracking database as a table (or JSON lines), filtered by experiment, stage,
// status and params.
import * as fs from 'fs';
import { parseArgs } from 'util';
import { Tracker, DEFAULT_DB, type RunInfo, type RunStatus } from '../experiments/tracking';
import type { JsonValue } from '../experiments/tracking';

export const RUNS_USAGE = `usage: modalab runs [--db FILE] [--experiment E] [--stage S] [--status S] [--param key=value]... [--metric KEY]... [--json]
  lists runs, oldest first: id, name, experiment, stage, status, parent, started, duration, latest metrics
  --param key=value   config value to match (value as JSON, else as a string), repeatable
  --metric KEY        metric column(s) (default: those of loss, val/loss, i2t/r@1, t2i/r@1 the runs have)
  --json              one JSON object per run instead of the table
`;

const STATUSES: readonly RunStatus[] = ['running', 'finished', 'failed', 'killed'];
const DEFAULT_METRICS = ['loss', 'val/loss', 'i2t/r@1', 't2i/r@1'];

/** Opens an existing database (never creates one: a typo in --db should not leave an empty file behind). */
export function openExisting(db: string): Tracker {
  if (!fs.existsSync(db)) throw new Error(`no tracking database at ${db} (train a run first, or pass --db FILE)`);
  return Tracker.open(db);
}

/** A param filter value: JSON when it parses (3e-4, true, "x"), else the literal string. */
export function parseParam(s: string): [string, JsonValue] {
  const eq = s.indexOf('=');
  if (eq <= 0) throw new Error(`--param must be key=value, got '${s}'`);
  const raw = s.slice(eq + 1);
  let v: JsonValue;
  try {
    v = JSON.parse(raw) as JsonValue;
  } catch {
    v = raw;
  }
  return [s.slice(0, eq), v];
}

/** Terminal-safe text: control characters (a run name is data) become '?', long text is cut with '…'. */
export function cell(s: string, max = 40): string {
  const clean = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  return clean.length > max ? clean.slice(0, max - 1) + '…' : clean;
}

function fmtTime(sec: number): string {
  return new Date(sec * 1000).toISOString().slice(0, 16).replace('T', ' ');
}

function fmtDuration(r: RunInfo): string {
  const s = Math.max(0, Math.round((r.endedAt ?? r.heartbeatAt) - r.startedAt));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

function fmtMetric(v: number | null): string {
  if (v === null) return '-';
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

/** Left-aligned columns separated by two spaces; numbers right-aligned. */
export function formatTable(header: string[], rows: string[][], numeric: boolean[]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (numeric[i] ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(header), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n') + '\n';
}

export function runRuns(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      db: { type: 'string' }, experiment: { type: 'string' }, stage: { type: 'string' }, status: { type: 'string' },
      param: { type: 'string', multiple: true }, metric: { type: 'string', multiple: true }, json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    out(RUNS_USAGE);
    return 0;
  }
  if (values.status !== undefined && !STATUSES.includes(values.status as RunStatus)) {
    throw new Error(`--status must be one of ${STATUSES.join(', ')}, got '${values.status}'`);
  }
  const params = Object.fromEntries((values.param ?? []).map(parseParam));
  const tracker = openExisting(values.db ?? DEFAULT_DB);
  try {
    const runs = tracker.listRuns({
      experiment: values.experiment, stage: values.stage, status: values.status as RunStatus | undefined, params,
    });
    let metricKeys = values.metric ?? [];
    if (metricKeys.length === 0 && runs.length > 0) {
      const ids = runs.map((r) => r.id);
      const have = new Set((tracker.db.prepare(`SELECT DISTINCT key FROM metrics WHERE run_id IN (${ids.map(() => '?').join(',')})`)
        .all(...ids) as Array<{ key: string }>).map((r) => r.key));
      metricKeys = DEFAULT_METRICS.filter((k) => have.has(k));
    }
    const latest = (id: number, k: string) => tracker.latest(id, k)?.value ?? null;
    if (values.json) {
      for (const r of runs) {
        const metrics = Object.fromEntries(metricKeys.map((k) => [k, latest(r.id, k)]));
        // JSON has no NaN: non-finite metrics are written as strings ("NaN", "Infinity").
        out(JSON.stringify({ ...r, metrics }, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v)) + '\n');
      }
      return 0;
    }
    if (runs.length === 0) {
      out(`no runs${Object.keys(values).length > (values.db ? 1 : 0) ? ' match' : ''} in ${tracker.file}\n`);
      return 0;
    }
    const header = ['id', 'name', 'experiment', 'stage', 'status', 'parent', 'started (UTC)', 'duration', ...metricKeys.map((k) => cell(k, 24))];
    const rows = runs.map((r) => [
      String(r.id), cell(r.name), cell(r.experiment, 24), cell(r.stage ?? '-', 12), r.status,
      r.parentRunId === null ? '-' : String(r.parentRunId), fmtTime(r.startedAt), fmtDuration(r),
      ...metricKeys.map((k) => fmtMetric(latest(r.id, k))),
    ]);
    const numeric = header.map((_h, i) => i === 0 || i === 5 || i >= 8);
    out(formatTable(header, rows, numeric));
    return 0;
  } finally {
    tracker.close();
  }
}
