// A report of runs of different stages (align + lm + caption + instruct, ids given together): one group of
// figures per stage, never a figure that mixes stages; metrics logged once are a table, not one-point figures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tracker } from '../tracking';
import type { Figure } from '../plots/types';
import { collectReport, writeReport } from './index';

function figures(html: string): Figure[] {
  return [...html.matchAll(/var fig = (.*);\n/g)].map((m) => JSON.parse(m[1]) as Figure);
}

test('report of align + lm + caption + instruct runs: figures grouped per stage, none mixes stages', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-report-stages-'));
  const file = path.join(dir, 'm.db');
  const t = Tracker.open(file);
  const ids: Record<string, number[]> = {};
  const stages = ['align', 'lm', 'caption', 'instruct', 'align'];
  stages.forEach((stage, j) => {
    const r = t.startRun({ experiment: 'recipe', name: `${stage}-<${j}>`, stage, config: {} });
    for (let s = 1; s <= 6; s++) r.log({ loss: 3 + j - s * 0.1, lr: 1e-3 * s }, s);
    if (stage === 'align') r.log({ 'val/i2t/r@1': 0.1 * (j + 1) }, 6);
    if (stage === 'caption') {
      r.log({ 'data/train_pairs': 1720, 'data/prefix_len': 65 }, 0);
      for (const s of [3, 6]) r.log({ 'val/bleu4': 0.01 * s, 'val/rougeL': 0.02 * s }, s);
    }
    if (stage === 'instruct') r.log({ 'val/accuracy': 0.4 }, 6);
    r.finish();
    (ids[stage] ??= []).push(r.id);
  });
  const all = [ids.align[0], ids.lm[0], ids.caption[0], ids.instruct[0], ids.align[1]];
  const data = collectReport(t, all);
  const out = path.join(dir, 'r.html');
  await writeReport(t, all, out);
  t.close();

  const stageOf = new Map(stages.map((s, j) => [all[j], s]));
  // Every figure belongs to one stage group and shows only that stage's runs.
  for (const f of data.figures) {
    assert.ok(f.group !== undefined, `${f.title} has no group`);
    for (const d of f.figure.data) {
      const run = Number(/^#(\d+) /.exec(String(d.meta?.run ?? d.name))?.[1]);
      if (Number.isFinite(run)) assert.equal(stageOf.get(run), f.group, `${f.title} draws run #${run}`);
    }
    assert.ok(f.id.includes(`-${f.group}-`), f.id);
  }
  // Groups in the order their first run was given; the two align runs share the align figures.
  assert.deepEqual([...new Set(data.figures.map((f) => f.group))], ['align', 'lm', 'caption', 'instruct']);
  const alignLoss = data.figures.find((f) => f.title === 'align: loss')!;
  assert.deepEqual(new Set(alignLoss.figure.data.map((d) => d.meta?.run)), new Set([`#${ids.align[0]} align-<0>`, `#${ids.align[1]} align-<4>`]));
  assert.equal(data.figures.filter((f) => f.title.endsWith(': loss')).length, 4, 'one loss figure per stage');
  // Caption: loss, then the held-out metrics, then lr; data/* (logged once) in a table, not in figures.
  assert.deepEqual(data.figures.filter((f) => f.group === 'caption').map((f) => f.title),
    ['caption: loss', 'caption: val/bleu4', 'caption: val/rougeL', 'caption: lr']);
  assert.deepEqual(data.scalars?.map((s) => [s.group, s.keys]), [['caption', ['data/prefix_len', 'data/train_pairs']], ['instruct', ['val/accuracy']]]);

  const html = fs.readFileSync(out, 'utf8');
  assert.equal(figures(html).length, data.figures.length);
  assert.ok(html.includes(`<h3 class="group">stage caption: <a href="#run-${ids.caption[0]}">#${ids.caption[0]}</a> caption-&lt;2&gt;</h3>`));
  // One-off values: a row per metric, a column per run.
  assert.ok(html.includes(`<tr><th>metric</th><th><a href="#run-${ids.caption[0]}">#${ids.caption[0]}</a> caption-&lt;2&gt;</th></tr>`));
  assert.ok(html.includes('<tr><td>data/prefix_len</td><td class="v">65</td></tr>\n<tr><td>data/train_pairs</td><td class="v">1720</td></tr>'));
  assert.ok(!html.includes('caption-<2>'), 'run names escaped in the group headings');
});

test('report of runs of one stage keeps plain titles and ids (no stage groups)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-report-stages-'));
  const t = Tracker.open(path.join(dir, 'm.db'));
  try {
    const runs = [0, 1].map((j) => {
      const r = t.startRun({ experiment: 'x', name: `c${j}`, stage: 'caption', config: {} });
      for (let s = 1; s <= 3; s++) r.log({ loss: 1 / s, 'val/bleu4': 0.1 * s }, s);
      r.finish();
      return r.id;
    });
    const data = collectReport(t, runs);
    assert.deepEqual(data.figures.map((f) => [f.id, f.title, f.group]), [['01-loss', 'loss', undefined], ['02-val-bleu4', 'val/bleu4', undefined]]);
    assert.equal(data.figures[0].figure.data.filter((d) => d.meta?.role === 'raw').length, 2, 'both runs overlaid');
    assert.deepEqual(data.scalars, []);
  } finally {
    t.close();
  }
});
