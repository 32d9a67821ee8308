// `modalab notebook`: a Jupyter kernelspec for tslab from this checkout, so notebooks load this modalab.
//
// tslab's own `tslab install` runs a Python script (jupyter_client's KernelSpecManager, and IPython for a temp
// dir) that writes kernels/<name>/kernel.json with
//   { "argv": [<tslab binary>, "kernel", "--config-path", "{connection_file}"], "display_name", "language" }.
// We write the same file directly (no IPython, no Python at all), with argv naming this node and this checkout's
// node_modules/tslab, so the kernel cannot pick up another node or a global tslab.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { parseArgs } from 'util';

export const KERNEL_NAME = 'modalab';
export const DISPLAY_NAME = 'TypeScript (modalab)';

/** The checkout (or installed package) root: the nearest folder above this file whose package.json names modalab. */
export function packageRoot(from: string = __dirname): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if ((JSON.parse(fs.readFileSync(pj, 'utf8')) as { name?: string }).name === 'modalab') return dir;
      } catch { /* not ours: keep looking */ }
    }
    if (path.dirname(dir) === dir) throw new Error(`cannot find modalab's package.json above ${from}`);
  }
}

/**
 * Jupyter's per-user data folder, as jupyter_core computes it: $JUPYTER_DATA_DIR, else ~/Library/Jupyter
 * (macOS), %APPDATA%\jupyter (Windows), $XDG_DATA_HOME/jupyter or ~/.local/share/jupyter (Linux and others).
 */
export function jupyterDataDir(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform,
  home: string = os.homedir()): string {
  if (env.JUPYTER_DATA_DIR) return env.JUPYTER_DATA_DIR;
  if (platform === 'darwin') return path.join(home, 'Library', 'Jupyter');
  if (platform === 'win32') return path.join(env.APPDATA ?? path.join(home, 'AppData', 'Roaming'), 'jupyter');
  return path.join(env.XDG_DATA_HOME || path.join(home, '.local', 'share'), 'jupyter');
}

export interface KernelJson {
  argv: string[];
  display_name: string;
  language: string;
  interrupt_mode: 'signal';
  metadata: { modalab_root: string };
}

/** kernel.json for the tslab of `root` (default: this checkout), started by this node binary. */
export function kernelJson(root: string = packageRoot()): KernelJson {
  let tslabPkg: string;
  try {
    tslabPkg = require.resolve('tslab/package.json', { paths: [root] });
  } catch {
    throw new Error(`tslab is not installed in ${path.join(root, 'node_modules')}: run npm install in ${root}`);
  }
  const tslabBin = path.join(path.dirname(tslabPkg), 'bin', 'tslab');
  if (!fs.existsSync(tslabBin)) throw new Error(`tslab's launcher is missing: ${tslabBin} (reinstall: npm install in ${root})`);
  return {
    argv: [process.execPath, tslabBin, 'kernel', '--config-path', '{connection_file}'],
    display_name: DISPLAY_NAME,
    language: 'typescript',
    // tslab stops a running cell on SIGINT (its executor.interrupt), which is Jupyter's default for 'signal'.
    interrupt_mode: 'signal',
    metadata: { modalab_root: root },
  };
}

export interface KernelspecOptions {
  /** Kernel name (the folder name, and what nbconvert's --ExecutePreprocessor.kernel_name takes). */
  name?: string;
  /** Install under `<prefix>/share/jupyter/kernels/` (as `jupyter kernelspec install --prefix`). */
  prefix?: string;
  /** Jupyter data folder to install into (its kernels/ subfolder); default jupyterDataDir(). */
  dataDir?: string;
  root?: string;
}

/** Writes `<data dir>/kernels/<name>/kernel.json` (temp file + rename) and returns the kernel folder. */
export function writeKernelspec(opts: KernelspecOptions = {}): string {
  const name = opts.name ?? KERNEL_NAME;
  // jupyter_client accepts kernel names of ASCII letters, digits, '.', '_' and '-'.
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`notebook: kernel name must be letters, digits, '.', '_' or '-', got ${JSON.stringify(name)}`);
  if (opts.prefix !== undefined && opts.dataDir !== undefined) throw new Error('notebook: give a prefix or a data dir, not both');
  const base = opts.prefix !== undefined ? path.join(path.resolve(opts.prefix), 'share', 'jupyter') : path.resolve(opts.dataDir ?? jupyterDataDir());
  const dir = path.join(base, 'kernels', name);
  const spec = kernelJson(opts.root);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new Error(`notebook: cannot create ${dir}: ${(e as Error).message}`);
  }
  const file = path.join(dir, 'kernel.json');
  const tmp = path.join(dir, `.kernel.json.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, JSON.stringify(spec, null, 1) + '\n', { mode: 0o644 });
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch { /* never written */ }
    throw new Error(`notebook: cannot write ${file}: ${(e as Error).message}`);
  }
  return dir;
}

/** Whether `jupyter` runs here, and its version line ("jupyter_core : 4.12.0"), or null. */
export function jupyterVersion(): string | null {
  const r = spawnSync('jupyter', ['--version'], { encoding: 'utf8', timeout: 30000 });
  if (r.error || r.status !== 0) return null;
  return /jupyter_core\s*:\s*\S+/.exec(r.stdout)?.[0] ?? r.stdout.split('\n')[0];
}

/** Whether `jupyter <sub>` exists (e.g. 'lab', 'notebook'). */
function jupyterHas(sub: string): boolean {
  const r = spawnSync('jupyter', [sub, '--version'], { encoding: 'utf8', timeout: 30000 });
  return !r.error && r.status === 0;
}

export const NOTEBOOK_USAGE = `usage: modalab notebook [--user | --prefix DIR] [--name NAME]
  writes a Jupyter kernelspec "${DISPLAY_NAME}" that runs this checkout's tslab with this node
  --user        into your Jupyter data folder ($JUPYTER_DATA_DIR or ~/.local/share/jupyter), the default
  --prefix DIR  into DIR/share/jupyter/kernels (e.g. a virtualenv: --prefix "$VIRTUAL_ENV")
  --name NAME   kernel name (default ${KERNEL_NAME})
`;

export function runNotebook(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: { user: { type: 'boolean' }, prefix: { type: 'string' }, name: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(NOTEBOOK_USAGE);
    return 0;
  }
  if (values.user && values.prefix !== undefined) throw new Error('give --user or --prefix, not both');
  const name = values.name ?? KERNEL_NAME;
  const dir = writeKernelspec({ name, prefix: values.prefix });
  const root = packageRoot();
  const out = [`Installed the Jupyter kernel "${DISPLAY_NAME}" (name: ${name}) in ${dir}`,
    `It runs ${process.execPath} with ${path.join(root, 'node_modules', 'tslab')}.`];
  if (values.prefix !== undefined) {
    out.push(`Jupyter finds it if ${path.join(path.resolve(values.prefix), 'share', 'jupyter')} is on its path `
      + '(it is for the Jupyter installed in that prefix; otherwise add it to JUPYTER_PATH).');
  }
  const ver = jupyterVersion();
  const hasUi = ver !== null && (jupyterHas('lab') || jupyterHas('notebook'));
  if (!hasUi) {
    out.push('', ver === null ? 'Jupyter is not installed here.' : 'Only part of Jupyter is installed here (no JupyterLab or Notebook UI).',
      'Get it with one of:',
      '  apt-get install jupyter-notebook        (Debian/Ubuntu; jupyter-nbconvert alone runs notebooks headless)',
      '  pip install jupyterlab', 'then open the notebooks as below.');
  }
  out.push('', 'Open the notebooks:', `  cd ${root} && jupyter lab notebooks/        (or: jupyter notebook notebooks/)`,
    `and pick the kernel "${DISPLAY_NAME}". Run one headless:`,
    `  jupyter nbconvert --to notebook --execute --ExecutePreprocessor.kernel_name=${name} notebooks/00-tour.ipynb --output-dir /tmp`, '');
  process.stdout.write(out.join('\n'));
  return 0;
}
