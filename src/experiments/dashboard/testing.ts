/**
 * A small tracking database for the dashboard's tests and e2e test, written with the Tracker: a sweep (three
 * align runs over lr and arch, trials of a sweeps row) and a caption run whose parent is the first, a run
 * whose name, param key and metric key are HTML, a run with NaN and Infinity points, a run whose process is
 * gone (stale), and a run that is still running (kept open by the caller, who can log more to it).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tracker, type Run } from '../tracking';

export const XSS_NAME = '<script>alert(1)</script>';
export const XSS_PARAM = 'x"><img src=x onerror=alert(2)>';
export const XSS_METRIC = '</script><!--<b>m';
export const XSS_EXPERIMENT = "exp'\"<i>";

export interface Fixture {
  dir: string;
  file: string;
  tracker: Tracker;
  /** Ids: sweep[0..2] (align, finished), caption (child of sweep[0]), xss, nonfinite, stale, running. */
  /** The sweeps-table id of the three align runs' sweep (named 'lr-arch', target val/loss, min). */
  sweepId: number;
  ids: { sweep: number[]; caption: number; xss: number; nonfinite: number; stale: number; running: number };
  /** The running run: log more to it to test live updates; the caller finishes it or closes the tracker. */
  running: Run;
  /** Points logged per sweep run for 'loss'. */
  steps: number;
}

/** Builds the database in `dir` (created if needed). The caller closes `tracker` when done. */
export function buildFixture(dir: string, steps = 60): Fixture {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'modalab.db');
  const tracker = Tracker.open(file);
  const sweep: number[] = [];
  // The sweep's own row, as `modalab sweep` writes it (schema version 3); its trials point to it.
  const t0 = Date.now() / 1000;
  const sweepId = Number(tracker.db.prepare(`INSERT INTO sweeps (name, spec_hash, spec_json, stage, metric, mode, status, created_at, updated_at)
    VALUES ('lr-arch', 'fixture', '{}', 'align', 'val/loss', 'min', 'finished', ?, ?)`).run(t0, t0).lastInsertRowid);
  const grid: Array<[number, string]> = [[1e-4, 'dual'], [3e-4, 'shared'], [1e-3, 'dual']];
  grid.forEach(([lr, arch], i) => {
    const run = tracker.startRun({
      experiment: 'clip-sweep', stage: 'align', seed: i, name: `align-lr${lr}-${arch}`, sweepId,
      config: { optim: { lr, betas: [0.9, 0.95] }, model: { arch, dim: 64 }, data: { batch: 32 } },
    });
    for (let s = 0; s < steps; s++) {
      // A decaying loss with a deterministic wiggle, different per run.
      const loss = 2.5 * Math.exp(-s * lr * 40) + 0.3 + 0.05 * Math.sin(s * (i + 1));
      run.log({ loss, lr: lr * Math.min(1, (s + 1) / 10) }, s);
      if (s % 10 === 9) run.log({ 'i2t/r@1': 0.1 + 0.8 * (1 - Math.exp(-s * lr * 30)), 'val/loss': loss + 0.1 }, s);
    }
    run.finish();
    sweep.push(run.id);
  });
  const ckpt = path.join(dir, 'align.safetensors');
  fs.writeFileSync(ckpt, Buffer.from('not really a checkpoint, but bytes with a sha256'));
  const cap = tracker.startRun({ experiment: 'clip-sweep', stage: 'caption', parentRunId: sweep[0], config: { optim: { lr: 1e-4 } } });
  for (let s = 0; s < 20; s++) cap.log({ loss: 3 - s * 0.05 }, s);
  cap.logArtifact('checkpoint', ckpt);
  cap.finish();

  const xss = tracker.startRun({ experiment: XSS_EXPERIMENT, stage: 'align', name: XSS_NAME, config: { [XSS_PARAM]: '<b>v</b>' } });
  for (let s = 0; s < 10; s++) xss.log({ loss: 1 / (s + 1), [XSS_METRIC]: s }, s);
  xss.finish('failed');

  const nf = tracker.startRun({ experiment: 'clip-sweep', stage: 'align', name: 'diverged', config: { optim: { lr: 1 } } });
  [1, 2, NaN, Infinity, -Infinity, 3].forEach((v, s) => nf.log({ loss: v }, s));
  nf.finish('killed');

  // A run whose process died without a word: a pid above Linux's pid_max and a heartbeat a minute old. The
  // dashboard must show it as stale and leave it 'running' in the file (a Tracker would fail it).
  const stale = tracker.startRun({ experiment: 'clip-sweep', stage: 'align', name: 'orphan' });
  stale.log({ loss: 1 }, 0);
  stale.flush();
  tracker._finished(stale);
  const old = Date.now() / 1000 - 60;
  tracker.db.prepare('UPDATE runs SET pid = ?, heartbeat_at = ? WHERE id = ?').run(4194304 + 12345, old, stale.id);

  const running = tracker.startRun({ experiment: 'clip-sweep', stage: 'align', name: 'live', config: { optim: { lr: 3e-4 } } });
  for (let s = 0; s < 10; s++) running.log({ loss: 2 - s * 0.1 }, s);
  running.flush();
  return {
    dir, file, tracker, running, steps, sweepId,
    ids: { sweep, caption: cap.id, xss: xss.id, nonfinite: nf.id, stale: stale.id, running: running.id },
  };
}
