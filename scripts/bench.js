#!/usr/bin/env node
// npm run bench: compile src/, test/ and bench/ into .test-build/, then run the benchmark suites, modalab beside
// PyTorch (bench/torch/*.py under /usr/bin/python3) in the same run. Arguments go to bench/main.ts:
//   npm run bench -- gemm tiny --threads 2 --rounds 2 --no-docs --list
// The addon is found by the normal loader (MODALAB_ADDON if set, else build/Release); build it first with
// `npm run build:native`.
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const root = path.resolve(__dirname, '..');
const tsc = require.resolve('typescript/bin/tsc');
// tsc emits even when it reports errors. Errors in src/ or bench/ stop the run (the numbers would come from
// code that does not type-check); errors only in test/ files (someone else's test mid-edit) do not.
const tscRun = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.test.json')], { cwd: root, encoding: 'utf8' });
const tscOut = (tscRun.stdout || '') + (tscRun.stderr || '');
if (tscRun.status !== 0) {
  process.stderr.write(tscOut);
  const blocking = tscOut.split('\n').filter((l) => /error TS/.test(l) && !/^test[\\/]/.test(l));
  if (blocking.length || tscRun.status === null) {
    console.error('bench: TypeScript errors outside test/; not running');
    process.exit(1);
  }
  console.error('bench: TypeScript errors only in test/ files; running the benchmarks anyway');
}

// --expose-gc: the harness collects garbage between warm-up and timing, so a sample does not pay for the last.
const r = spawnSync(process.execPath, ['--expose-gc', path.join(root, '.test-build', 'bench', 'main.js'),
  ...process.argv.slice(2)], { stdio: 'inherit', cwd: root });
process.exit(r.status === null ? 1 : r.status);
