/**
 * dashboard: `modalab ui` under load. 50 concurrent clients (keep-alive connections on loopback) each read one
 * run's curves, `GET /api/runs/:id/metrics` (every metric of a 2000-step run: about 4000 points), back to back for
 * 10 seconds; once for a finished run, once for a run that a third process keeps writing to. The server runs in
 * its own process (as `modalab ui` does); the clients in another, so the two do not share an event loop. Every
 * response must be a 200 with the whole curve; any other answer, a reset connection or a timeout is an error.
 *
 * Suites are synchronous (harness.ts) and this one needs two event loops, so `run()` spawns this file as the
 * load driver (`--load`), which forks it again as the server (`--serve DB`), and reads the driver's JSON result.
 * Goal: no error; p99 latency under 1 s.
 */
import { fork, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import { Goal, Suite, SuiteContext, SuiteResult, fmt } from '../harness';

const CLIENTS = 50;
const DURATION_MS = 10000;
const STEPS = 2000;
const P99_GOAL_MS = 1000;

interface LoadResult {
  clients: number;
  seconds: number;
  requests: number;
  errors: number;
  firstError: string | null;
  bytesPerResponse: number;
  points: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  serverRssMb: number;
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Writes the run the clients read: loss and lr every step, an evaluation every 100 steps. */
function makeDb(dir: string): { file: string; runId: number; points: number } {
  // Loaded here, not at the top: the suite's parent process needs none of it.
  const { Tracker } = require('../../src/experiments/tracking') as typeof import('../../src/experiments/tracking');
  const file = path.join(dir, 'bench.db');
  const t = Tracker.open(file);
  const run = t.startRun({ experiment: 'bench', stage: 'align', name: 'load', config: { optim: { lr: 3e-4 } } });
  let points = 0;
  for (let s = 0; s < STEPS; s++) {
    run.log({ loss: 2 * Math.exp(-s / 500) + 0.1 * Math.sin(s), lr: 3e-4 * Math.min(1, s / 100) }, s);
    points += 2;
    if (s % 100 === 99) {
      run.log({ 'i2t/r@1': s / STEPS, 't2i/r@1': s / STEPS / 2 }, s);
      points += 2;
    }
  }
  run.finish();
  const id = run.id;
  t.close();
  return { file, runId: id, points };
}

async function startServer(file: string): Promise<{ child: ChildProcess; port: number }> {
  const c = await child(['--serve', file]);
  return { child: c.child, port: Number(c.msg.port) };
}

function child(args: string[]): Promise<{ child: ChildProcess; msg: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const c = fork(__filename, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    c.once('message', (m: Record<string, unknown>) => (m.error ? reject(new Error(String(m.error))) : resolve({ child: c, msg: m })));
    c.once('exit', (code) => reject(new Error(`bench child ${args.join(' ')} exited with ${code} before it was ready`)));
  });
}

/** 'finished': clients read a finished run. 'live': they read a run that another process keeps writing to. */
async function load(mode: 'finished' | 'live'): Promise<LoadResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-bench-ui-'));
  let server: ChildProcess | null = null;
  let writer: ChildProcess | null = null;
  try {
    const db = makeDb(dir);
    if (mode === 'live') {
      const w = await child(['--write', db.file]);
      writer = w.child;
      db.runId = Number(w.msg.runId);
    }
    const s = await startServer(db.file);
    server = s.child;
    const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
    const url = `/api/runs/${db.runId}/metrics`;
    const latencies: number[] = [];
    let errors = 0;
    let firstError: string | null = null;
    let bytes = 0;
    let checked = 0;
    const fail = (msg: string) => {
      errors++;
      firstError ??= msg;
    };
    const one = (): Promise<void> => new Promise((resolve) => {
      const t0 = process.hrtime.bigint();
      const req = http.get({ host: '127.0.0.1', port: s.port, path: url, agent, timeout: 10000, headers: { host: `127.0.0.1:${s.port}` } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
          const body = Buffer.concat(chunks);
          if (res.statusCode !== 200) fail(`HTTP ${res.statusCode}: ${body.toString().slice(0, 200)}`);
          else if (mode === 'finished' && bytes !== 0 && body.length !== bytes) fail(`a response of ${body.length} bytes, others had ${bytes}`);
          else {
            bytes = Math.max(bytes, body.length);
            // Parse one response in 100 (parsing every one would make the clients the bottleneck).
            if (checked++ % 100 === 0) {
              const m = JSON.parse(body.toString()) as { metrics: Record<string, { steps: number[] }> };
              const n = Object.values(m.metrics).reduce((a, x) => a + x.steps.length, 0);
              if (mode === 'finished' ? n !== db.points : n < db.points) fail(`a response with ${n} points, expected ${db.points}`);
            }
          }
          resolve();
        });
        res.on('error', (e) => (fail(`response: ${e.message}`), resolve()));
      });
      req.on('timeout', () => req.destroy(new Error('timed out after 10 s')));
      req.on('error', (e) => (fail(`request: ${e.message}`), resolve()));
    });
    const end = Date.now() + DURATION_MS;
    const t0 = Date.now();
    await Promise.all(Array.from({ length: CLIENTS }, async () => {
      while (Date.now() < end) await one();
    }));
    const seconds = (Date.now() - t0) / 1000;
    agent.destroy();
    const rss = await new Promise<number>((resolve) => {
      server!.once('message', (m: { rss?: number }) => resolve(m.rss ?? NaN));
      server!.send('rss');
    });
    latencies.sort((a, b) => a - b);
    return {
      clients: CLIENTS, seconds, requests: latencies.length, errors, firstError, bytesPerResponse: bytes, points: db.points,
      p50: quantile(latencies, 0.5), p95: quantile(latencies, 0.95), p99: quantile(latencies, 0.99), max: latencies[latencies.length - 1],
      serverRssMb: rss / 2 ** 20,
    };
  } finally {
    server?.kill('SIGTERM');
    if (writer) {
      const gone = new Promise((r) => writer!.once('exit', r));
      writer.kill('SIGTERM');
      await gone;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A training run in progress: the same curve, then a step every 10 ms, written by the Tracker (a flush every
 * 500 ms, as in training) until killed. Sends its run id once the first STEPS steps are in the file. */
function write(file: string): void {
  const { Tracker } = require('../../src/experiments/tracking') as typeof import('../../src/experiments/tracking');
  const t = Tracker.open(file);
  const run = t.startRun({ experiment: 'bench', stage: 'align', name: 'live', config: { optim: { lr: 3e-4 } } });
  let s = 0;
  const step = () => {
    run.log({ loss: 2 * Math.exp(-s / 500) + 0.1 * Math.sin(s), lr: 3e-4 * Math.min(1, s / 100) }, s);
    if (s % 100 === 99) run.log({ 'i2t/r@1': s / STEPS, 't2i/r@1': s / STEPS / 2 }, s);
    s++;
  };
  while (s < STEPS) step();
  run.flush();
  process.send!({ runId: run.id });
  setInterval(step, 10);
  process.on('SIGTERM', () => {
    run.finish('killed');
    t.close();
    process.exit(0);
  });
}

async function serve(file: string): Promise<void> {
  const { startDashboard } = require('../../src/experiments/dashboard') as typeof import('../../src/experiments/dashboard');
  try {
    const ui = await startDashboard({ db: file, port: 0 });
    process.on('message', (m) => { if (m === 'rss') process.send!({ rss: process.memoryUsage().rss }); });
    process.on('SIGTERM', () => void ui.close().then(() => process.exit(0)));
    process.send!({ port: ui.port });
  } catch (e) {
    process.send!({ error: (e as Error).message });
    process.exit(1);
  }
}

function drive(mode: 'finished' | 'live'): LoadResult {
  const r = spawnSync(process.execPath, [__filename, '--load', mode], { encoding: 'utf8', timeout: DURATION_MS + 120000 });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !last.startsWith('{')) {
    throw new Error(`dashboard bench: the load driver (${mode}) failed (status ${r.status}): ${(r.stderr ?? '').slice(-2000)}`);
  }
  return JSON.parse(last) as LoadResult;
}

export const dashboard: Suite = {
  name: 'dashboard',
  summary: `modalab ui under load: ${CLIENTS} concurrent clients reading a run's curves for ${DURATION_MS / 1000} s`,
  run(ctx: SuiteContext): SuiteResult {
    const res = (['finished', 'live'] as const).map((mode) => {
      const x = drive(mode);
      ctx.log(`dashboard (${mode} run): ${x.requests} requests in ${x.seconds.toFixed(1)} s, ${x.errors} errors, `
        + `p50 ${fmt(x.p50)} ms, p95 ${fmt(x.p95)} ms, p99 ${fmt(x.p99)} ms`);
      return { mode, x };
    });
    const errors = res.reduce((a, r) => a + r.x.errors, 0);
    const p99 = Math.max(...res.map((r) => r.x.p99));
    const goals: Goal[] = [
      { text: `${CLIENTS} concurrent clients for ${DURATION_MS / 1000} s, finished and live run: no error`, ratio: errors, pass: (e) => e === 0,
        note: res.map((r) => r.x.firstError).find((e) => e !== null) ?? undefined },
      { text: `p99 latency of a run's curves under that load < ${P99_GOAL_MS} ms (ratio: worse p99 / ${P99_GOAL_MS} ms)`,
        ratio: p99 / P99_GOAL_MS, pass: (v) => v < 1 },
    ];
    const x0 = res[0].x;
    return {
      title: 'Dashboard: concurrent readers of a run\'s curves',
      description: `\`modalab ui\` in its own process, over a tracking database holding a ${STEPS}-step run (loss and lr every `
        + `step, two recall metrics every 100 steps: ${x0.points} points, ${fmt(x0.bytesPerResponse / 1024)} KiB of JSON). `
        + `${CLIENTS} clients in another process, on keep-alive loopback connections, each request \`GET /api/runs/:id/metrics\` `
        + `(the whole curve) back to back for ${DURATION_MS / 1000} s. "finished": the run is finished; "live": a third process `
        + 'keeps logging a step every 10 ms to the run being read (the Tracker commits every 500 ms). Latency is from '
        + 'sending the request to the last byte, over every request; one round of each.',
      columns: ['run', 'requests', 'errors', 'requests/s', 'p50', 'p95', 'p99', 'max', 'server RSS'],
      rows: res.map(({ mode, x }) => [mode, String(x.requests), String(x.errors), fmt(x.requests / x.seconds),
        `${fmt(x.p50)} ms`, `${fmt(x.p95)} ms`, `${fmt(x.p99)} ms`, `${fmt(x.max)} ms`, `${fmt(x.serverRssMb)} MiB`]),
      goals,
      notes: [
        'the server answers a curve it already serialised from memory while nothing was committed to the file '
          + '(SQLite data_version, at most 1 s): 50 clients of one run cost one query per commit, not one per request',
        'one server process, one event loop: latency is about clients / throughput',
      ],
      torchSkipped: 'no PyTorch side: this suite measures the dashboard server',
    };
  },
};

if (require.main === module) {
  const i = process.argv.indexOf('--serve');
  if (i > 0) {
    void serve(process.argv[i + 1]);
  } else if (process.argv.includes('--write')) {
    write(process.argv[process.argv.indexOf('--write') + 1]);
  } else if (process.argv.includes('--load')) {
    const mode = process.argv[process.argv.indexOf('--load') + 1] === 'live' ? 'live' : 'finished';
    load(mode).then((x) => {
      process.stdout.write(JSON.stringify(x) + '\n');
      process.exit(0);
    }, (e: unknown) => {
      process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    });
  }
}
