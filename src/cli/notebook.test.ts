import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { DISPLAY_NAME, jupyterDataDir, jupyterVersion, packageRoot, writeKernelspec } from './notebook';

test('kernelspec: kernel.json runs this node with this checkout\'s tslab, as tslab install would write it', () => {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-kspec-'));
  const dir = writeKernelspec({ dataDir: data });
  assert.equal(dir, path.join(data, 'kernels', 'modalab'));
  const spec = JSON.parse(fs.readFileSync(path.join(dir, 'kernel.json'), 'utf8'));
  assert.equal(spec.display_name, DISPLAY_NAME);
  assert.equal(spec.language, 'typescript');
  assert.equal(spec.argv[0], process.execPath);
  assert.equal(spec.argv[1], path.join(packageRoot(), 'node_modules', 'tslab', 'bin', 'tslab'));
  assert.ok(fs.existsSync(spec.argv[1]));
  assert.deepEqual(spec.argv.slice(2), ['kernel', '--config-path', '{connection_file}']);
  assert.deepEqual(fs.readdirSync(dir), ['kernel.json'], 'no temp file left');
  // Writing again replaces it in place.
  writeKernelspec({ dataDir: data });
  assert.deepEqual(fs.readdirSync(path.join(data, 'kernels')), ['modalab']);
});

test('kernelspec: --prefix and the Jupyter data folder rules', () => {
  const pre = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-kspec-'));
  assert.equal(writeKernelspec({ prefix: pre, name: 'ml-2' }), path.join(pre, 'share', 'jupyter', 'kernels', 'ml-2'));
  assert.throws(() => writeKernelspec({ dataDir: pre, name: 'a b' }), /kernel name must be letters/);
  assert.throws(() => writeKernelspec({ dataDir: pre, prefix: pre }), /not both/);
  assert.equal(jupyterDataDir({ JUPYTER_DATA_DIR: '/j' }, 'linux', '/h'), '/j');
  assert.equal(jupyterDataDir({}, 'linux', '/h'), path.join('/h', '.local', 'share', 'jupyter'));
  assert.equal(jupyterDataDir({ XDG_DATA_HOME: '/x' }, 'linux', '/h'), path.join('/x', 'jupyter'));
  assert.equal(jupyterDataDir({}, 'darwin', '/h'), path.join('/h', 'Library', 'Jupyter'));
});

test('kernelspec: Jupyter itself finds the kernel', { skip: jupyterVersion() === null ? 'jupyter is not installed' : false }, () => {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-kspec-'));
  writeKernelspec({ dataDir: data, name: 'modalab-test' });
  const r = spawnSync('jupyter', ['kernelspec', 'list', '--json'], { encoding: 'utf8', env: { ...process.env, JUPYTER_PATH: data } });
  assert.equal(r.status, 0, r.stderr);
  const specs = JSON.parse(r.stdout).kernelspecs;
  assert.equal(specs['modalab-test'].spec.display_name, DISPLAY_NAME);
  assert.equal(specs['modalab-test'].resource_dir, path.join(data, 'kernels', 'modalab-test'));
});

test('modalab notebook: installs into JUPYTER_DATA_DIR and says how to open Jupyter', () => {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-kspec-'));
  const r = spawnSync(process.execPath, [path.join(__dirname, 'main.js'), 'notebook', '--user'], { encoding: 'utf8', env: { ...process.env, JUPYTER_DATA_DIR: data } });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(fs.existsSync(path.join(data, 'kernels', 'modalab', 'kernel.json')));
  assert.match(r.stdout, /Installed the Jupyter kernel "TypeScript \(modalab\)"/);
  assert.match(r.stdout, /jupyter lab notebooks\//);
  const bad = spawnSync(process.execPath, [path.join(__dirname, 'main.js'), 'notebook', '--user', '--prefix', data], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--user or --prefix, not both/);
});
