import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { Tracker } from '../experiments/tracking';
import { runRuns, parseParam, cell } from './runs';

function makeDb(): { file: string; ids: number[] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-runs-'));
  const file = path.join(dir, 'm.db');
  const t = Tracker.open(file);
  const a = t.startRun({ experiment: 'spirals', name: 'base\x1b[31m', stage: 'align', config: { lr: 0.001, opt: { name: 'adamw' } } });
  a.log({ loss: 0.5, 'i2t/r@1': 0.25 }, 0);
  a.log({ loss: 0.123456 }, 10);
  a.finish();
  const b = t.startRun({ experiment: 'spirals', name: 'wide', stage: 'align', parentRunId: a.id, config: { lr: 0.01 } });
  b.log({ loss: NaN }, 3);
  b.finish('failed');
  const c = t.startRun({ experiment: 'other', name: 'c', config: { lr: 0.001 } });
  c.finish();
  t.close();
  return { file, ids: [a.id, b.id, c.id] };
}

function capture(argv: string[]): { code: number; text: string } {
  let text = '';
  const code = runRuns(argv, (s) => { text += s; });
  return { code, text };
}

test('modalab runs: a table with latest metrics, control characters in names made harmless', () => {
  const { file, ids } = makeDb();
  const { code, text } = capture(['--db', file]);
  assert.equal(code, 0);
  const lines = text.trimEnd().split('\n');
  assert.match(lines[0], /^id\s+name\s+experiment\s+stage\s+status\s+parent\s+started \(UTC\)\s+duration\s+loss\s+i2t\/r@1$/);
  assert.equal(lines.length, 2 + 3);
  assert.ok(!text.includes('\x1b'), 'an escape sequence in a run name must not reach the terminal');
  assert.match(lines[2], new RegExp(`^\\s*${ids[0]}\\s+base\\?\\[31m\\s+spirals\\s+align\\s+finished\\s+-\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d\\s+\\d+s\\s+0\\.1235\\s+0\\.25$`));
  assert.match(lines[3], new RegExp(`^\\s*${ids[1]}\\s+wide\\s+spirals\\s+align\\s+failed\\s+${ids[0]}\\s.*\\sNaN\\s+-$`));
});

test('modalab runs: filters by status, experiment, stage and params; --metric picks columns; --json', () => {
  const { file, ids } = makeDb();
  const rows = (argv: string[]) => capture(['--db', file, ...argv]).text.trimEnd().split('\n').slice(2).map((l) => Number(l.trim().split(/\s+/)[0]));
  assert.deepEqual(rows(['--status', 'failed']), [ids[1]]);
  assert.deepEqual(rows(['--experiment', 'spirals']), [ids[0], ids[1]]);
  assert.deepEqual(rows(['--param', 'lr=0.001']), [ids[0], ids[2]]);
  assert.deepEqual(rows(['--param', 'opt.name=adamw', '--stage', 'align']), [ids[0]]);
  assert.equal(capture(['--db', file, '--status', 'killed']).text, `no runs match in ${file}\n`);
  const only = capture(['--db', file, '--metric', 'i2t/r@1']).text.split('\n')[0];
  assert.ok(only.endsWith('i2t/r@1') && !only.includes('loss'));
  const json = capture(['--db', file, '--json']).text.trimEnd().split('\n').map((l) => JSON.parse(l));
  assert.equal(json.length, 3);
  assert.equal(json[1].metrics.loss, 'NaN');
  assert.equal(json[0].config.opt.name, 'adamw');
  assert.equal(json[0].name, 'base\x1b[31m', 'JSON keeps the name exactly');
});

test('modalab runs: bad flags and a missing database give clear errors', () => {
  const { file } = makeDb();
  assert.throws(() => capture(['--db', file, '--status', 'done']), /--status must be one of running, finished, failed, killed, got 'done'/);
  assert.throws(() => capture(['--db', file, '--param', 'lr']), /--param must be key=value, got 'lr'/);
  assert.throws(() => capture(['--db', file, '--bogus']), /--bogus/);
  const missing = path.join(path.dirname(file), 'missing.db');
  assert.throws(() => capture(['--db', missing]), /no tracking database at .*missing\.db/);
  assert.equal(fs.existsSync(missing), false, 'a missing database is not created');
  assert.deepEqual(parseParam('name=a=b'), ['name', 'a=b']);
  assert.deepEqual(parseParam('x="3"'), ['x', '3']);
  assert.equal(cell('x'.repeat(50), 10), 'xxxxxxxxx…');
});

test('modalab report and runs through the command line', () => {
  const { file, ids } = makeDb();
  const main = path.join(__dirname, 'main.js');
  const out = path.join(path.dirname(file), 'r.html');
  const r = spawnSync(process.execPath, [main, 'report', String(ids[0]), 'wide', '-o', out, '--db', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^wrote .*r\.html \(2 runs, \d+ figures\)\n$/);
  assert.ok(fs.readFileSync(out, 'utf8').includes('<td>wide</td>'));
  const bad = spawnSync(process.execPath, [main, 'report', 'nobody', '--db', file], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^modalab report: no run named 'nobody' in .*m\.db/);
  const ls = spawnSync(process.execPath, [main, 'runs', '--db', file, '--stage', 'align'], { encoding: 'utf8' });
  assert.equal(ls.status, 0, ls.stderr);
  assert.equal(ls.stdout.trimEnd().split('\n').length, 4);
  const help = spawnSync(process.execPath, [main, 'help'], { encoding: 'utf8' });
  assert.match(help.stdout, /report <run\.\.\.>/);
});
