#!/usr/bin/env node
// npm test: compile src/, test/ and bench/ into .test-build/, then run every *.test.js with node's test runner
// (and, where a GPU is usable, the src/api tests a second time on device cuda).
// Extra arguments are substrings that select test files (npm test -- autograd safetensors).
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const tsc = require.resolve('typescript/bin/tsc');
const filters = process.argv.slice(2);

// The native kernel tests (native/test, every kernel against plain reference loops) run first, unless test
// files were selected by name.
if (filters.length === 0 || filters.includes('native')) {
  const bdir = path.join(root, 'build-native-test');
  const gen = spawnSync('ninja', ['--version']).status === 0 ? ['-G', 'Ninja'] : [];
  execFileSync('cmake', ['-S', root, '-B', bdir, ...gen, '-DCMAKE_BUILD_TYPE=Release'], { stdio: ['ignore', 'ignore', 'inherit'] });
  execFileSync('cmake', ['--build', bdir, '--target', 'modalab_native_test', '-j', '2'], { stdio: ['ignore', 'ignore', 'inherit'] });
  console.log('# native kernel tests (native/test)');
  const nt = spawnSync(path.join(bdir, 'modalab_native_test'), [], { stdio: 'inherit' });
  if (nt.status !== 0) {
    console.error('run-tests: native kernel tests failed');
    process.exit(1);
  }
  if (filters.length > 0 && filters.every((f) => f === 'native')) process.exit(0);
}
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.test.json')], { stdio: 'inherit', cwd: root });

function walk(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : e.name.endsWith('.test.js') ? [p] : [];
  });
}
const files = walk(path.join(root, '.test-build', 'test')).concat(walk(path.join(root, '.test-build', 'src')))
  .filter((f) => filters.length === 0 || filters.some((s) => path.basename(f).includes(s)))
  .sort();
if (files.length === 0) {
  console.error('run-tests: no test files matched');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], { stdio: 'inherit', cwd: root });
if (r.status !== 0) process.exit(r.status === null ? 1 : r.status);

// Once per available device: with a GPU, the tensor-level tests (src/api: every op, autograd, nn, optimizers,
// amp) run again with every tensor made on 'cuda' (MODALAB_DEVICE sets the default device of ml.tensor, ml.randn,
// ...), so each op's GPU kernels meet the same assertions and PyTorch fixtures as the CPU's.
// MODALAB_TEST_DEVICES=cpu skips the second pass.
const probe = spawnSync(process.execPath, ['-e',
  `process.stdout.write(String(require(${JSON.stringify(path.join(root, '.test-build', 'src', 'index.js'))}).cuda.isAvailable()))`],
{ encoding: 'utf8', cwd: root });
const wantCuda = (process.env.MODALAB_TEST_DEVICES ?? 'cpu,cuda').split(',').includes('cuda');
if (probe.stdout !== 'true' || !wantCuda) {
  console.log(`# device cuda: ${probe.stdout !== 'true' ? 'not available (no CUDA build, driver or GPU)' : 'skipped (MODALAB_TEST_DEVICES)'}; the suite ran on cpu`);
  process.exit(0);
}
const apiFiles = files.filter((f) => f.startsWith(path.join(root, '.test-build', 'src', 'api') + path.sep));
console.log(`# device cuda: ${apiFiles.length} test files of src/api again, tensors on the GPU`);
const rc = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...apiFiles],
  { stdio: 'inherit', cwd: root, env: { ...process.env, MODALAB_DEVICE: 'cuda' } });
process.exit(rc.status === null ? 1 : rc.status);
