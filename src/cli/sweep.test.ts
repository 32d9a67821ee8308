// `modalab sweep` arguments: errors that say what is wrong, --help, and --results on a recorded sweep.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseSweepArgs, runSweep as runSweepCli } from './sweep';
import { runSweep } from '../experiments/sweeps/runner';
import { Tracker } from '../experiments/tracking';

test('sweep arguments: bad flags and values are named', () => {
  assert.throws(() => parseSweepArgs([]), /sweep: a spec file is required/);
  assert.throws(() => parseSweepArgs(['a.json', 'b.json']), /one spec file at a time, got "a\.json" and "b\.json"/);
  assert.throws(() => parseSweepArgs(['a.json', '--workers', 'two']), /--workers must be an integer in \[0, 64\], got 'two'/);
  assert.throws(() => parseSweepArgs(['a.json', '--workers']), /--workers needs a value/);
  assert.throws(() => parseSweepArgs(['a.json', '--wokers', '2']), /unknown flag "--wokers"/);
  assert.equal(parseSweepArgs(['--help']), null);
  assert.deepEqual(parseSweepArgs(['s.json', '--workers=3', '--db', 'x.db', '--metric', 'loss', '--results']),
    { spec: 's.json', workers: 3, db: 'x.db', results: true, metrics: ['loss'], html: undefined });
});

test('sweep --results prints the recorded table; --html writes the plots page; a spec error names the file', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-sweep-cli-'));
  const out: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  try {
    const db = path.join(dir, 's.db');
    const specFile = path.join(dir, 'spec.json');
    fs.writeFileSync(specFile, JSON.stringify({
      name: 'cli', stage: 'align', base: { train: { steps: 3, warmupSteps: 1 } }, params: { 'train.lr': { grid: [0.1, 0.3] } },
      metric: 'score', mode: 'max',
    }));
    // Trials faked: each logs score = lr.
    await runSweep(specFile, {
      db, executor: async (job, ctx) => {
        const t = Tracker.open(job.db);
        const run = t.startRun({ experiment: 'cli', name: job.config.name, sweepId: job.sweepId });
        ctx.onRun?.(run.id);
        run.log({ score: job.config.train.lr }, 3);
        run.finish();
        t.close();
        return { runId: run.id, status: 'finished', stepsDone: 3 };
      },
    });
    process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
    const html = path.join(dir, 'plots.html');
    const code = await runSweepCli([specFile, '--results', '--db', db, '--html', html]);
    process.stdout.write = write;
    assert.equal(code, 0);
    const text = out.join('');
    assert.match(text, /sweep cli \(id 1, finished\), target score \(max\)/);
    assert.match(text, /\n1\s+1\s+\d+\s+finished\s+3\s+0\.3000\s+0\.3000\n2\s+0\s+\d+\s+finished\s+3\s+0\.1000\s+0\.1000\n/);
    assert.match(fs.readFileSync(html, 'utf8'), /parcoords/);
    fs.writeFileSync(specFile, '{"name": "cli", "stage": "align", "params": {}, "metric": "m", "mode": "best"}');
    await assert.rejects(runSweepCli([specFile, '--db', db]), new RegExp(`sweep spec ${specFile.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: key mode must be "max" or "min"`));
  } finally {
    process.stdout.write = write;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
