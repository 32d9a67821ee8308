// Successive-halving bookkeeping and the runner's scheduling, with a cheap fake trial (a run that logs a known
// metric curve and writes a real, tiny checkpoint) instead of training: who is promoted and pruned at each rung,
// that continued trials resume their own run, and that a stopped sweep resumes without running any segment twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ml from '../../index';
import { Tracker } from '../tracking';
import { readCheckpointState, saveCheckpoint } from '../stages/checkpoint';
import { decide, keepCount, TrialState } from './halving';
import { runSweep, SweepEvent } from './runner';
import { formatResults, sweepFigures, sweepResults } from './results';
import type { SweepSpec } from './spec';
import type { TrialExecutor } from './trial';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-halving-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

/** The metric of a trial with learning rate `lr` at `step`: higher lr is better, and it rises with steps. */
const score = (lr: number, step: number): number => lr * (step / (step + 4));

interface Call { trial: number; from: number; to: number; runId: number }

function fakeExecutor(calls: Call[], opts: { failOnce?: Set<number>; afterCall?: (n: number) => void } = {}): TrialExecutor {
  return async (job, ctx) => {
    if (opts.failOnce?.delete(job.trial)) throw new Error(`fake failure of trial ${job.trial}`);
    const t = Tracker.open(job.db);
    try {
      let from = 0;
      let run;
      if (job.resume) {
        const st = readCheckpointState(job.resume);
        from = st.step;
        run = t.resumeRun(st.runId);
      } else {
        run = t.startRun({ experiment: 'fake', name: job.config.name, stage: 'align', config: { lr: job.config.train.lr }, sweepId: job.sweepId });
      }
      ctx.onRun?.(run.id);
      const steps = job.config.train.steps;
      const to = job.stopAt ?? steps;
      for (let s = from + 1; s <= to; s++) run.log({ 'val/t2i/r@1': score(job.config.train.lr, s), loss: 1 / s }, s);
      const net = new ml.nn.Linear(1, 1);
      saveCheckpoint(path.join(path.dirname(job.db), `align-${run.id}`, 'last.safetensors'), net, null, {
        step: to, rng: ml.getRngState(), config: job.config, stage: 'align', runId: run.id,
      });
      for (const p of net.parameters()) p.dispose();
      run.finish(to === steps ? 'finished' : 'killed');
      calls.push({ trial: job.trial, from, to, runId: run.id });
      opts.afterCall?.(calls.length);
      return { runId: run.id, status: to === steps ? 'finished' : 'killed', stepsDone: to - from };
    } finally {
      t.close();
    }
  };
}

const spec = (name: string, extra: Partial<SweepSpec> = {}): SweepSpec => ({
  name, stage: 'align', preset: null,
  base: { train: { steps: 8, warmupSteps: 1 }, data: { maxTrain: 64 } },
  params: { 'train.lr': { grid: [0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4] } },
  metric: 'val/t2i/r@1', mode: 'max', halving: { rungs: [2, 4], eta: 3 },
  ...extra,
});

test('decide: the best floor(n/eta) of each rung go on, ties to the lower index, missing metrics last', () => {
  const s = (index: number, outcome: TrialState['outcome'], rung: number, metric: number | null): TrialState => ({ index, outcome, rung, metric });
  assert.equal(keepCount(9, 1 / 3), 3);
  assert.equal(keepCount(2, 1 / 3), 1, 'at least one goes on');
  // A trial still short of rung 1: no decision yet.
  assert.equal(decide([s(0, 'paused', 1, 0.5), s(1, 'running', 0, null)], 2, 1 / 2, 'max'), null);
  assert.deepEqual(decide([s(0, 'paused', 1, 0.5), s(1, 'paused', 1, 0.5), s(2, 'paused', 1, null), s(3, 'paused', 1, 0.1)], 2, 1 / 2, 'max'),
    { rung: 1, promote: [0, 1], prune: [3, 2] });
  assert.deepEqual(decide([s(0, 'paused', 1, 0.5), s(1, 'paused', 1, 0.2), s(2, 'failed', 0, null)], 2, 1 / 2, 'min'),
    { rung: 1, promote: [1], prune: [0] });
  // Replayed after a restart where one trial was already promoted: only the remaining slots are filled.
  assert.deepEqual(decide([s(0, 'pending', 1, 0.9), s(1, 'paused', 1, 0.5), s(2, 'paused', 1, 0.4), s(3, 'paused', 1, 0.1)], 2, 1 / 2, 'max'),
    { rung: 1, promote: [1], prune: [2, 3] });
});

test('successive halving: 9 trials to step 2, the best 3 to step 4, the best 1 to the end; each continues its own run', async () => {
  const db = path.join(dir, 'h.db');
  const calls: Call[] = [];
  const events: SweepEvent[] = [];
  const sum = await runSweep(spec('halve'), { db, executor: fakeExecutor(calls), concurrency: 3, onEvent: (e) => events.push(e) });
  assert.equal(sum.status, 'finished');
  const lrs = [0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4];
  // Rung 1: everyone 0 -> 2. Rung 2: lr 0.9, 0.8, 0.7 (trials 1, 5, 3) 2 -> 4. End: lr 0.9 (trial 1) 4 -> 8.
  const seg = (from: number) => calls.filter((c) => c.from === from).map((c) => c.trial).sort((a, b) => a - b);
  assert.deepEqual(seg(0), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(calls.filter((c) => c.from === 0).map((c) => c.to), Array(9).fill(2));
  assert.deepEqual(seg(2), [1, 3, 5]);
  assert.deepEqual(seg(4), [1]);
  assert.equal(calls.length, 13);
  for (const c of calls) assert.equal(c.runId, calls.find((d) => d.trial === c.trial && d.from === 0)!.runId, 'a continued trial keeps its run');
  const byTrial = new Map(sum.trials.map((t) => [t.index, t]));
  assert.equal(byTrial.get(1)!.outcome, 'finished');
  assert.equal(byTrial.get(1)!.rung, 2);
  assert.equal(byTrial.get(1)!.steps, 8);
  assert.ok(Math.abs(byTrial.get(1)!.metric! - score(0.9, 8)) < 1e-9);
  for (const i of [3, 5]) assert.deepEqual([byTrial.get(i)!.outcome, byTrial.get(i)!.rung, byTrial.get(i)!.steps], ['pruned', 2, 4]);
  for (const i of [0, 2, 4, 6, 7, 8]) {
    assert.deepEqual([byTrial.get(i)!.outcome, byTrial.get(i)!.rung, byTrial.get(i)!.steps], ['pruned', 1, 2]);
    assert.ok(Math.abs(byTrial.get(i)!.metric! - score(lrs[i], 2)) < 1e-9, 'pruned at rung 1 with its rung-1 metric');
  }
  assert.deepEqual(events.filter((e) => e.type === 'prune'), [
    { type: 'prune', rung: 1, promoted: [1, 5, 3], pruned: [7, 0, 8, 4, 6, 2] },
    { type: 'prune', rung: 2, promoted: [1], pruned: [5, 3] },
  ]);
  // Runs: 9, all marked as trials of the sweep; the pruned ones stay 'killed' (resumable by hand).
  const t = Tracker.open(db);
  const runs = t.listRuns({ sweepId: sum.sweepId });
  t.close();
  assert.equal(runs.length, 9);
  assert.deepEqual(runs.map((r) => r.status).sort(), ['finished', ...Array(8).fill('killed')]);
  // Results, best first: the finished trial, then rung-2 prunes, then rung-1 prunes by metric.
  const rows = sweepResults(db, 'halve', { metrics: ['loss'] });
  assert.deepEqual(rows.map((r) => r.trial), [1, 5, 3, 7, 0, 8, 4, 6, 2]);
  assert.equal(rows[0].metrics.loss, 1 / 8);
  const table = formatResults(rows);
  assert.match(table.split('\n')[0], /#\s+trial\s+run\s+outcome\s+steps\s+train\.lr\s+val\/t2i\/r@1 \(max\)\s+loss/);
  assert.match(table.split('\n')[2], /^1\s+1\s+\d+\s+finished\s+8\s+0\.9000/);
  const figs = sweepFigures(rows, { includeUnfinished: true });
  assert.equal(figs.perParam.length, 1);
  assert.equal((figs.parallel.data[0] as { type: string }).type, 'parcoords');
  // Running the finished sweep again runs nothing.
  const again = await runSweep(spec('halve'), { db, executor: fakeExecutor(calls) });
  assert.equal(again.resumed, true);
  assert.equal(again.trialsRun, 0);
  assert.equal(calls.length, 13);
});

test('a stopped sweep resumes: no segment runs twice, and a failed trial is retried', async () => {
  const db = path.join(dir, 'r.db');
  const calls: Call[] = [];
  const ctl = new AbortController();
  const first = await runSweep(spec('resume'), { db, executor: fakeExecutor(calls, { afterCall: (n) => n === 5 && ctl.abort() }), concurrency: 2, signal: ctl.signal });
  assert.equal(first.status, 'killed');
  assert.ok(calls.length >= 5 && calls.length < 13, `${calls.length} segments before the stop`);
  const failOnce = new Set([8]);
  const events: SweepEvent[] = [];
  const second = await runSweep(spec('resume'), { db, executor: fakeExecutor(calls, { failOnce }), concurrency: 2, onEvent: (e) => events.push(e) });
  assert.equal(second.status, 'finished');
  assert.equal(second.resumed, true);
  const keys = calls.map((c) => `${c.trial}:${c.from}`);
  assert.equal(new Set(keys).size, keys.length, `no segment twice: ${keys.join(' ')}`);
  assert.equal(calls.length, 13);
  assert.ok(events.some((e) => e.type === 'error' && e.trial === 8 && e.willRetry), 'trial 8 failed once and was retried');
  assert.equal(second.trials.find((t) => t.index === 1)!.outcome, 'finished');
});

test('without halving, every trial runs to the end; min mode sorts ascending', async () => {
  const db = path.join(dir, 'g.db');
  const calls: Call[] = [];
  const sum = await runSweep(spec('plain', { halving: null, mode: 'min', params: { 'train.lr': { grid: [0.3, 0.1, 0.2] } } }), { db, executor: fakeExecutor(calls), concurrency: 2 });
  assert.equal(sum.status, 'finished');
  assert.deepEqual(calls.map((c) => [c.from, c.to]), [[0, 8], [0, 8], [0, 8]]);
  assert.deepEqual(sweepResults(db, 'plain').map((r) => r.params['train.lr']), [0.1, 0.2, 0.3]);
  assert.throws(() => sweepResults(db, 'nope'), /no sweep named "nope"/);
});
