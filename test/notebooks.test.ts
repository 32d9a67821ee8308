// Executes every notebooks/*.ipynb headless with Jupyter's nbconvert and the tslab kernel that `modalab
// notebook` installs (written here to a temp JUPYTER_PATH by the same code), in quick mode (MODALAB_QUICK=1),
// and fails on any cell error, showing the cell and its error.
//
// Notebooks load modalab as `import * as ml from '..'`, i.e. the checkout's package.json -> dist/. When dist/ is
// older than src/ (or missing), the sources are compiled into a temp copy of the package instead, so the test
// checks the current code and never rewrites the checkout's dist/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { packageRoot, writeKernelspec } from '../src/cli/notebook';

const root = packageRoot(__dirname);
const notebookDir = path.join(root, 'notebooks');
const notebooks = fs.existsSync(notebookDir) ? fs.readdirSync(notebookDir).filter((f) => f.endsWith('.ipynb')).sort() : [];

function nbconvertVersion(): string | null {
  const r = spawnSync('jupyter', ['nbconvert', '--version'], { encoding: 'utf8', timeout: 60000 });
  return r.error || r.status !== 0 ? null : r.stdout.trim();
}

function newestSource(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

/** A package root whose dist/ matches src/: the checkout itself, or a temp copy compiled now. */
function packageForNotebooks(tmp: string): string {
  const dist = path.join(root, 'dist', 'index.js');
  if (fs.existsSync(dist) && fs.statSync(dist).mtimeMs >= newestSource(path.join(root, 'src'))) return root;
  const pkg = path.join(tmp, 'pkg');
  fs.mkdirSync(pkg);
  fs.copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
  // The addon and the dependencies are found through the package root (src/api/binding.ts).
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'), 'dir');
  fs.symlinkSync(path.join(root, 'build'), path.join(pkg, 'build'), 'dir');
  fs.symlinkSync(path.join(root, 'sweeps'), path.join(pkg, 'sweeps'), 'dir');   // 04-ablations reads its specs there
  fs.cpSync(notebookDir, path.join(pkg, 'notebooks'), { recursive: true });
  const tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json'), '--outDir', path.join(pkg, 'dist')], { encoding: 'utf8' });
  // tsc emits despite type errors; a broken dist then fails the notebook with the real error.
  if (!fs.existsSync(path.join(pkg, 'dist', 'index.js'))) assert.fail(`compiling src/ for the notebooks failed:\n${r.stdout}${r.stderr}`);
  return pkg;
}

type Notebook = { cells: Array<{ cell_type: string; source: string | string[]; outputs: Array<{ output_type: string; name?: string; text?: string | string[]; ename?: string; evalue?: string }> }> };
const text = (t: string | string[] | undefined) => (Array.isArray(t) ? t.join('') : t ?? '');

function nbconvert(input: string, outDir: string, env: NodeJS.ProcessEnv, allowErrors: boolean) {
  return spawnSync('jupyter', ['nbconvert', '--to', 'notebook', '--execute', ...(allowErrors ? ['--allow-errors'] : []),
    '--ExecutePreprocessor.kernel_name=modalab-test', '--ExecutePreprocessor.timeout=300', '--output-dir', outDir, input],
  { encoding: 'utf8', timeout: 540_000, env });
}

/**
 * The failing cell and its error. nbconvert's CellExecutionError names the cell's source, but tslab reports the
 * error itself (a TypeScript diagnostic or a stack trace) as the cell's stderr, not as an error output, so the
 * notebook is run once more with --allow-errors to read that cell's stderr.
 */
function describeFailure(stderr: string, input: string, outDir: string, env: NodeJS.ProcessEnv): string {
  const m = /An error occurred while executing the following cell:\n-+\n([\s\S]*?)\n-+\n/.exec(stderr);
  if (!m) return stderr.slice(-4000);
  const source = m[1].trim();
  const again = nbconvert(input, outDir, env, true);
  let detail = '(no output: see the kernel log below)\n' + stderr.slice(-2000);
  try {
    const nb = JSON.parse(fs.readFileSync(path.join(outDir, path.basename(input)), 'utf8')) as Notebook;
    const cellIndex = nb.cells.findIndex((c) => c.cell_type === 'code' && text(c.source).trim() === source);
    if (cellIndex >= 0) {
      const outs = nb.cells[cellIndex].outputs;
      const err = outs.filter((o) => o.output_type === 'error').map((o) => `${o.ename}: ${o.evalue}`)
        .concat(outs.filter((o) => o.output_type === 'stream' && o.name === 'stderr').map((o) => text(o.text)));
      if (err.length > 0) detail = err.join('\n');
    }
  } catch {
    detail += `\n(re-running with --allow-errors gave status ${again.status})`;
  }
  return `cell:\n${source}\n\nerror:\n${detail}`;
}

test('notebooks/ has notebooks, committed without outputs', () => {
  assert.ok(notebooks.length > 0, 'no notebooks in notebooks/');
  for (const f of notebooks) {
    const nb = JSON.parse(fs.readFileSync(path.join(notebookDir, f), 'utf8')) as { cells: Array<{ cell_type: string; outputs?: unknown[]; execution_count?: number | null }> };
    for (const c of nb.cells.filter((c) => c.cell_type === 'code')) {
      assert.deepEqual(c.outputs, [], `${f}: clear the outputs before committing (Jupyter: Edit > Clear Outputs of All Cells)`);
      assert.equal(c.execution_count, null, `${f}: clear the execution counts before committing`);
    }
  }
});

for (const file of notebooks) {
  test(`notebook ${file} runs headless without a cell error (MODALAB_QUICK=1)`, { timeout: 600_000 }, (t) => {
    const version = nbconvertVersion();
    if (version === null) {
      const why = 'jupyter nbconvert is not installed (Debian: apt-get install jupyter-nbconvert jupyter-client; or pip install nbconvert)';
      if (process.env.CI === 'true') assert.fail(`${why}; CI must have it (.ci/run installs it)`);
      t.skip(why);
      return;
    }
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-notebooks-'));
    try {
      const pkg = packageForNotebooks(tmp);
      const jupyterPath = path.join(tmp, 'jupyter');
      writeKernelspec({ dataDir: jupyterPath, name: 'modalab-test', root: pkg });
      const out = path.join(tmp, 'out');
      const input = path.join(pkg, 'notebooks', file);
      const env = { ...process.env, MODALAB_QUICK: '1', JUPYTER_PATH: jupyterPath, JUPYTER_RUNTIME_DIR: path.join(tmp, 'runtime') };
      const r = nbconvert(input, out, env, false);
      assert.ok(!r.error, `could not run jupyter nbconvert: ${r.error?.message}`);
      if (r.status !== 0) assert.fail(`${file} failed (nbconvert ${version}):\n${describeFailure(r.stderr, input, path.join(tmp, 'out-errors'), env)}`);
      // nbconvert stops at the first cell whose execute_reply is an error; also no cell may carry an error output.
      // (tslab sends no execute_input, so executed cells keep execution_count null: that cannot be checked.)
      const nb = JSON.parse(fs.readFileSync(path.join(out, file), 'utf8')) as Notebook;
      const code = nb.cells.filter((c) => c.cell_type === 'code');
      assert.ok(code.some((c) => c.outputs.length > 0), `${file}: no cell produced output`);
      // plotly.js (plots.show / liveFigure) is sent at most once per notebook, however many figures it draws.
      const html = code.flatMap((c) => c.outputs).map((o) => text((o as { data?: Record<string, string | string[]> }).data?.['text/html']));
      const plotlyCopies = html.filter((h) => h.includes('window.Plotly = Plotly') || h.includes('window.Plotly=Plotly')).length;
      assert.ok(plotlyCopies <= 1, `${file}: plotly.js was output ${plotlyCopies} times`);
      if (html.some((h) => h.includes('class="modalab-plot"'))) assert.equal(plotlyCopies, 1, `${file}: figures shown but plotly.js never output`);
      code.forEach((c, i) => {
        const err = c.outputs.find((o) => o.output_type === 'error');
        assert.equal(err, undefined, `${file}: code cell ${i + 1}: ${err?.ename}: ${err?.evalue}`);
      });
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
}
