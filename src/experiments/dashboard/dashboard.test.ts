// The dashboard over HTTP: routes, errors (400/404/405/403/500 without dying), escaping, read-only, a concurrent
// writer, and the browser's plot builders being the server's own.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { spawn } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import * as vm from 'vm';
import { compareRuns, parallelCoordinates } from '../plots';
import { Tracker } from '../tracking';
import { startDashboard, Store, type Dashboard } from './index';
import { buildFixture, XSS_EXPERIMENT, XSS_METRIC, XSS_NAME, XSS_PARAM, type Fixture } from './testing';
import { runUi } from '../../cli/ui';

interface Res { status: number; type: string; body: string }

function get(ui: Dashboard, p: string, opts: { method?: string; host?: string } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: ui.port, path: p, method: opts.method ?? 'GET',
      headers: { host: opts.host ?? `127.0.0.1:${ui.port}` },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function getJson<T = any>(ui: Dashboard, p: string): Promise<T> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await get(ui, p);
  assert.equal(r.status, 200, `${p}: ${r.body.slice(0, 300)}`);
  assert.match(r.type, /application\/json/);
  return JSON.parse(r.body) as T;
}

/** The text of <script id="page-data">, checked to hold no `</` or `<!--`, parsed. */
function pageData(html: string): any { // eslint-disable-line @typescript-eslint/no-explicit-any
  const m = /<script id="page-data" type="application\/json">([\s\S]*?)<\/script>/.exec(html);
  assert.ok(m, 'the page embeds its data');
  assert.ok(!m[1].includes('</') && !m[1].includes('<!--'), 'embedded JSON can not end the script element');
  return JSON.parse(m[1]);
}

function sha(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

async function withFixture(fn: (f: Fixture, ui: Dashboard) => Promise<void>, opts: { extra?: Parameters<typeof startDashboard>[0]['extraRoutes'] } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-ui-test-'));
  const f = buildFixture(dir, 30);
  const logged: string[] = [];
  const ui = await startDashboard({ db: f.file, port: 0, extraRoutes: opts.extra, log: (m) => logged.push(m) });
  try {
    await fn(f, ui);
  } finally {
    await ui.close();
    f.tracker.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('pages and API: runs table, run page, compare page, static scripts', async () => {
  await withFixture(async (f, ui) => {
    const home = await get(ui, '/');
    assert.equal(home.status, 200);
    assert.match(home.type, /text\/html/);
    for (const id of [...f.ids.sweep, f.ids.caption, f.ids.running]) assert.ok(home.body.includes(`data-run="${id}"`));
    const run = await get(ui, `/runs/${f.ids.sweep[0]}`);
    assert.equal(run.status, 200);
    const d = pageData(run.body);
    assert.equal(d.metricKeys[0], 'loss', 'loss comes first');
    assert.deepEqual(d.metricKeys.slice(1), ['val/loss', 'i2t/r@1', 'lr']);
    assert.equal(d.series.loss.steps.length, 30);
    assert.ok(run.body.includes(`href="/runs/${f.ids.caption}"`), 'the child run is linked');
    const child = await get(ui, `/runs/${f.ids.caption}`);
    assert.ok(child.body.includes(`href="/runs/${f.ids.sweep[0]}"`), 'the parent run is linked');
    assert.match(child.body, /<td>checkpoint<\/td><td><code>[^<]*align\.safetensors<\/code><\/td><td class="num">48 B<\/td>/);
    const cmp = await get(ui, `/compare?runs=${f.ids.sweep.join(',')}`);
    assert.equal(cmp.status, 200);
    const c = pageData(cmp.body);
    assert.deepEqual(c.sweep.params, ['model.arch', 'optim.lr']);
    assert.equal(c.sweep.scope, 'sweep "lr-arch"');
    assert.equal(c.sweep.metricKeys[0], 'val/loss', "the sweep's target metric is offered first");
    assert.ok(run.body.includes(`href="/?sweep=${f.sweepId}"`), 'the run page links its sweep');
    // Runs of two experiments: no parallel coordinates, and the page says why.
    const mixed = pageData((await get(ui, `/compare?runs=${f.ids.sweep[0]},${f.ids.xss}`)).body);
    assert.equal(mixed.sweep, null);
    assert.match((await get(ui, `/compare?runs=${f.ids.sweep[0]},${f.ids.xss}`)).body, /share no sweep or experiment/);
    assert.equal(c.sweep.rows.length, 3);
    for (const p of ['/static/plotly.min.js', '/static/plots.js', '/static/dashboard.js']) {
      const r = await get(ui, p);
      assert.equal(r.status, 200, p);
      assert.match(r.type, /javascript/);
    }
    const head = await get(ui, '/', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
  });
});

test('runs API: filters by experiment, stage, status and param; sorts by a metric, runs without it last', async () => {
  await withFixture(async (f, ui) => {
    const ids = (p: { runs: Array<{ id: number }> }) => p.runs.map((r) => r.id);
    assert.deepEqual(ids(await getJson(ui, '/api/runs?stage=caption')), [f.ids.caption]);
    assert.deepEqual(ids(await getJson(ui, `/api/runs?sweep=${f.sweepId}&sort=id&order=asc`)), f.ids.sweep);
    assert.deepEqual(ids(await getJson(ui, '/api/runs?status=killed')), [f.ids.nonfinite]);
    assert.deepEqual(ids(await getJson(ui, `/api/runs?experiment=${encodeURIComponent(XSS_EXPERIMENT)}`)), [f.ids.xss]);
    assert.deepEqual(ids(await getJson(ui, '/api/runs?param=optim.lr%3D0.0003')).sort(), [f.ids.sweep[1], f.ids.running].sort());
    assert.deepEqual(ids(await getJson(ui, '/api/runs?param=model.arch%3Ddual&param=optim.lr%3D0.001')), [f.ids.sweep[2]]);
    // Sorted by the latest val/loss, ascending, checked against the Tracker's own latest().
    const p = await getJson(ui, '/api/runs?sort=metric:val/loss&order=asc');
    const withMetric = f.ids.sweep.slice().sort((a, b) => f.tracker.latest(a, 'val/loss')!.value - f.tracker.latest(b, 'val/loss')!.value);
    assert.deepEqual(ids(p).slice(0, 3), withMetric);
    assert.equal(p.runs.length, 8);
    assert.ok(p.runs.slice(3).every((r: { metrics: Record<string, unknown> }) => r.metrics['val/loss'] === null));
    const desc = await getJson(ui, '/api/runs?sort=metric:val/loss&order=desc');
    assert.deepEqual(ids(desc).slice(0, 3), withMetric.slice().reverse());
    assert.deepEqual(ids(await getJson(ui, '/api/runs?sort=name&order=asc')).length, 8);
    // Stale and live runs: read-only status, as the file says, with the stale flag.
    const all = await getJson(ui, '/api/runs');
    const st = all.runs.find((r: { id: number }) => r.id === f.ids.stale);
    assert.equal(st.status, 'running');
    assert.equal(st.stale, true);
    assert.equal(all.runs.find((r: { id: number }) => r.id === f.ids.running).stale, false);
  });
});

test('metrics API: keys, since (steps after it), non-finite values tagged', async () => {
  await withFixture(async (f, ui) => {
    const id = f.ids.sweep[0];
    const all = await getJson(ui, `/api/runs/${id}/metrics`);
    assert.deepEqual(Object.keys(all.metrics).sort(), ['i2t/r@1', 'loss', 'lr', 'val/loss']);
    const s = await getJson(ui, `/api/runs/${id}/metrics?keys=loss,lr&since=24`);
    assert.deepEqual(Object.keys(s.metrics), ['loss', 'lr']);
    assert.deepEqual(s.metrics.loss.steps, [25, 26, 27, 28, 29]);
    assert.deepEqual(s.metrics.loss.values, f.tracker.metricSeries(id, 'loss')[0].values.slice(25));
    const one = await getJson(ui, `/api/runs/${id}/metrics?key=i2t/r@1`);
    assert.deepEqual(one.metrics['i2t/r@1'].steps, [9, 19, 29]);
    const nf = await getJson(ui, `/api/runs/${f.ids.nonfinite}/metrics?keys=loss`);
    assert.deepEqual(nf.metrics.loss.values, [1, 2, null, null, null, 3]);
    assert.deepEqual(nf.metrics.loss.nonfinite, { 2: 'nan', 3: 'inf', 4: '-inf' });
    // The same URL again after a write sees the new points (answers are cached only until the file changes).
    const live = `/api/runs/${f.ids.running}/metrics?keys=loss`;
    assert.equal((await getJson(ui, live)).metrics.loss.steps.length, 10);
    assert.equal((await getJson(ui, live)).metrics.loss.steps.length, 10);
    f.running.log({ loss: 0.5 }, 10);
    f.running.log({ loss: 0.4 }, 11);
    f.running.flush();
    assert.deepEqual((await getJson(ui, live)).metrics.loss.steps.slice(-3), [9, 10, 11]);
    const detail = await getJson(ui, `/api/runs/${f.ids.caption}`);
    assert.equal(detail.parent.id, f.ids.sweep[0]);
    assert.equal(detail.artifacts[0].sha256, createHash('sha256').update(fs.readFileSync(path.join(f.dir, 'align.safetensors'))).digest('hex'));
  });
});

test('errors: a missing run is 404, a malformed query 400, other methods 405, a foreign Host 403', async () => {
  await withFixture(async (f, ui) => {
    const cases: Array<[string, number]> = [
      ['/runs/999', 404], ['/api/runs/999', 404], ['/api/runs/999/metrics', 404], ['/compare?runs=1,999', 404], ['/nowhere', 404],
      ['/runs/abc', 400], ['/runs/0', 400], ['/runs/1.5', 400], ['/api/runs/-1', 400], ['/runs/%E0%A4%A', 400],
      ['/?sort=bogus', 400], ['/api/runs?sort=metric:nope', 400], ['/api/runs?order=up', 400], ['/?status=done', 400],
      ['/?param=noequals', 400], [`/api/runs/${f.ids.sweep[0]}/metrics?since=x`, 400], ['/api/runs/999/metrics?since=1e3', 400],
      ['/api/runs/1/metrics?keys=a,,b', 400], ['/compare', 400], ['/compare?runs=1,1', 400], ['/compare?runs=a', 400],
      ['/?stage=a&stage=b', 400], ['/?sweep=abc', 400],
    ];
    for (const [p, status] of cases) {
      const r = await get(ui, p);
      assert.equal(r.status, status, `${p}: ${r.body.slice(0, 200)}`);
      if (p.startsWith('/api/')) assert.equal(typeof JSON.parse(r.body).error, 'string', p);
      else assert.match(r.body, new RegExp(`<h1>${status} `), p);
    }
    assert.match((await get(ui, '/?sort=bogus')).body, /sort must be one of id, name/);
    assert.equal((await get(ui, '/', { method: 'POST' })).status, 405);
    assert.equal((await get(ui, '/api/runs', { method: 'DELETE' })).status, 405);
    assert.equal((await get(ui, '/', { host: 'attacker.example:8765' })).status, 403);
    assert.equal((await get(ui, '/', { host: `localhost:${ui.port}` })).status, 200);
  });
});

test('a handler that throws gives a 500 page for that request; the server keeps serving', async () => {
  await withFixture(async (_f, ui) => {
    const r = await get(ui, '/boom');
    assert.equal(r.status, 500);
    assert.match(r.body, /<h1>500 Server error/);
    assert.ok(!r.body.includes('secret detail'), 'the error itself goes to the log, not to the page');
    assert.equal((await get(ui, '/boom-async')).status, 500);
    assert.equal((await get(ui, '/')).status, 200);
    assert.equal((await get(ui, '/api/runs')).status, 200);
  }, {
    extra: {
      '/boom': () => { throw new Error('secret detail'); },
      '/boom-async': async () => { await new Promise((r) => setTimeout(r, 1)); throw new Error('later'); },
    },
  });
});

test('escaping: a run named <script> shows as text in HTML, attributes and embedded JSON', async () => {
  await withFixture(async (f, ui) => {
    const pages = ['/', `/runs/${f.ids.xss}`, `/compare?runs=${f.ids.xss},${f.ids.sweep[0]}`, `/?experiment=${encodeURIComponent(XSS_EXPERIMENT)}`];
    for (const p of pages) {
      const r = await get(ui, p);
      assert.equal(r.status, 200, p);
      for (const raw of [XSS_NAME, XSS_PARAM, XSS_METRIC, '<img src=x', '<b>v</b>', '<!--']) assert.ok(!r.body.includes(raw), `${p} has raw ${raw}`);
      // Every <script> element is ours: plotly, the plot builders, the dashboard script, the page data.
      const scripts = r.body.match(/<script[^>]*>/g) ?? [];
      for (const s of scripts) assert.match(s, /^<script (src="\/static\/[a-z.]+\.js"|id="page-data" type="application\/json")>$/, `${p}: ${s}`);
    }
    const home = (await get(ui, '/')).body;
    assert.ok(home.includes('&lt;script&gt;alert(1)&lt;/script&gt;'), 'the name is shown as text');
    assert.ok(home.includes(`value="${'x&quot;&gt;&lt;img src=x onerror=alert(2)&gt;'}="`), 'a param key is escaped inside an attribute');
    assert.ok(home.includes('exp&#39;&quot;&lt;i&gt;'), 'an experiment name is escaped in options');
    const run = (await get(ui, `/runs/${f.ids.xss}`)).body;
    const d = pageData(run);
    assert.equal(d.run.name, XSS_NAME, 'the JSON carries the exact name');
    assert.ok(d.metricKeys.includes(XSS_METRIC));
    const api = await getJson(ui, '/api/runs');
    assert.ok(api.runs.some((r: { name: string }) => r.name === XSS_NAME));
  });
});

test('read-only: serving every page changes nothing in the database file, and a dead run stays running', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-ui-ro-'));
  try {
    const f = buildFixture(dir, 10);
    f.running.finish();
    f.tracker.close(); // a Tracker would now fail the orphan run; the dashboard must not
    const before = sha(f.file);
    const ui = await startDashboard({ db: f.file, port: 0 });
    try {
      for (const p of ['/', '/api/runs', `/runs/${f.ids.stale}`, `/api/runs/${f.ids.stale}/metrics`, `/compare?runs=${f.ids.sweep.join(',')}`]) {
        assert.equal((await get(ui, p)).status, 200, p);
      }
      assert.throws(() => (ui.store as unknown as { db: Database.Database }).db.prepare('DELETE FROM metrics').run(), /readonly/i);
    } finally {
      await ui.close();
    }
    assert.equal(sha(f.file), before, 'the database file is unchanged');
    const wal = `${f.file}-wal`;
    assert.ok(!fs.existsSync(wal) || fs.statSync(wal).size === 0, 'nothing was written to the WAL');
    const db = new Database(f.file, { readonly: true });
    assert.equal((db.prepare('SELECT status FROM runs WHERE id = ?').get(f.ids.stale) as { status: string }).status, 'running');
    db.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the dashboard keeps answering while another process logs metrics to the same database', async () => {
  await withFixture(async (f, ui) => {
    const trackingJs = path.join(__dirname, '..', 'tracking', 'index.js');
    // The writer: a run logging two metrics every 2 ms for about 1.5 s, flushed every 20 ms (as a sweep trial would,
    // in bigger batches), printing its id first and its step count last.
    const script = `
      const { Tracker } = require(${JSON.stringify(trackingJs)});
      const t = Tracker.open(${JSON.stringify(f.file)});
      const run = t.startRun({ experiment: 'writer', stage: 'align' });
      console.log('id ' + run.id);
      let step = 0; const end = Date.now() + 1500;
      const tick = () => {
        for (let i = 0; i < 10; i++) run.log({ loss: 1 / (step + 1), acc: step / 1000 }, step++);
        run.flush();
        if (Date.now() < end) setTimeout(tick, 20); else { run.finish(); t.close(); console.log('steps ' + step); }
      };
      tick();`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    while (!/id \d+/.test(out)) await new Promise((r) => setTimeout(r, 10));
    const id = Number(/id (\d+)/.exec(out)![1]);
    let done = false;
    void exited.then(() => (done = true));
    let points = 0;
    const seen: number[] = [];
    let requests = 0;
    while (!done) {
      const m = await getJson(ui, `/api/runs/${id}/metrics?keys=loss&since=${points - 1}`);
      points += m.metrics.loss.steps.length;
      seen.push(points);
      for (const p of ['/', `/runs/${id}`, '/api/runs']) assert.equal((await get(ui, p)).status, 200, p);
      requests += 4;
    }
    assert.equal(await exited, 0);
    const total = Number(/steps (\d+)/.exec(out)![1]);
    const last = await getJson(ui, `/api/runs/${id}/metrics?keys=loss&since=${points - 1}`);
    points += last.metrics.loss.steps.length;
    assert.equal(points, total, 'every point arrived exactly once through since');
    assert.ok(requests >= 8, `only ${requests} requests were made while the writer ran`);
    assert.ok(new Set(seen).size > 1, 'points arrived while the writer was running');
    assert.equal((await getJson(ui, `/api/runs/${id}`)).run.status, 'finished');
  });
});

test('the browser gets the server plot builders: the served bundle draws the same figures', async () => {
  await withFixture(async (f, ui) => {
    const src = (await get(ui, '/static/plots.js')).body;
    const sandbox: { window: Record<string, any> } = { window: {} }; // eslint-disable-line @typescript-eslint/no-explicit-any
    vm.runInNewContext(src, sandbox);
    const P = sandbox.window.modalabPlots;
    const series = f.tracker.metricSeries(f.ids.sweep, 'loss');
    const runs = series.map((s, i) => ({ name: `run ${i}`, metrics: { loss: { steps: s.steps, values: s.values, wallTimes: s.wallTimes } } }));
    for (const opts of [{ smoothing: 0.6 }, { smoothing: 0, logY: true }, { smoothing: 0.9, x: 'relative' as const }]) {
      // Through JSON: the sandbox's arrays come from another realm.
      assert.deepEqual(JSON.parse(JSON.stringify(P.compareRuns(runs, 'loss', opts))), JSON.parse(JSON.stringify(compareRuns(runs, 'loss', opts))));
    }
    const rows = [{ lr: 1e-4, arch: 'dual', loss: 1 }, { lr: 1e-3, arch: 'shared', loss: 2 }];
    assert.deepEqual(JSON.parse(JSON.stringify(P.parallelCoordinates(rows, ['lr', 'arch'], 'loss'))),
      JSON.parse(JSON.stringify(parallelCoordinates(rows, ['lr', 'arch'], 'loss'))));
  });
});

test('opening: a missing file, a file that is not SQLite and bad CLI flags are clear errors', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-ui-open-'));
  try {
    const missing = path.join(dir, 'none.db');
    await assert.rejects(startDashboard({ db: missing, port: 0 }), /no tracking database at .*none\.db/);
    assert.ok(!fs.existsSync(missing), 'no file is created for a typo');
    const junk = path.join(dir, 'junk.db');
    fs.writeFileSync(junk, 'this is not a database, just text that is long enough');
    assert.throws(() => Store.open(junk), /junk\.db/);
    const empty = path.join(dir, 'empty.db');
    new Database(empty).close();
    assert.throws(() => Store.open(empty), /no runs table/);
    await assert.rejects(runUi(['--port', 'x']), /--port must be an integer/);
    await assert.rejects(runUi(['--db', missing, '--port', '0']), /no tracking database/);
    await assert.rejects(runUi(['--bogus']), /bogus/);
    let out = '';
    assert.equal(await runUi(['--help'], (s) => (out += s)), 0);
    assert.match(out, /usage: modalab ui/);
    // A port in use.
    const t = Tracker.open(path.join(dir, 'ok.db'));
    t.close();
    const a = await startDashboard({ db: path.join(dir, 'ok.db'), port: 0 });
    try {
      await assert.rejects(startDashboard({ db: path.join(dir, 'ok.db'), port: a.port }), /port \d+ on 127\.0\.0\.1 is in use/);
    } finally {
      await a.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('modalab ui (runUi) serves until SIGINT, then exits 0', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-ui-cli-'));
  try {
    const db = path.join(dir, 'ok.db');
    Tracker.open(db).close();
    const uiJs = path.join(__dirname, '..', '..', 'cli', 'ui.js');
    const script = `require(${JSON.stringify(uiJs)}).runUi(['--db', ${JSON.stringify(db)}, '--port', '0']).then((c) => process.exit(c))`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    while (!/http:\/\/127\.0\.0\.1:(\d+)\//.test(out)) await new Promise((r) => setTimeout(r, 10));
    const port = Number(/127\.0\.0\.1:(\d+)/.exec(out)![1]);
    assert.match(out, /read-only view of .*ok\.db/);
    const status = await new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/' }, (res) => { res.resume(); resolve(res.statusCode!); }).on('error', reject);
    });
    assert.equal(status, 200);
    child.kill('SIGINT');
    assert.equal(await exited, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
