/**
 * The CUDA backend on a machine without a GPU (the CI machines: nvcc, no driver, no GPU). The addon is built with
 * the CUDA kernels whenever CMake found nvcc; it must load and serve everything from the CPU, report CUDA as
 * unavailable, and refuse every way of putting a tensor on 'cuda' with an error that says why, losing nothing.
 * The GPU side itself is checked by scripts/gpu-check.sh on a GPU machine (docs/gpu.md).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ml from '../src/index';
import { binding } from '../src/api/binding';

const root = path.join(__dirname, '..', '..');
const indexJs = path.join(__dirname, '..', 'src', 'index.js');
const mainJs = path.join(__dirname, '..', 'src', 'cli', 'main.js');

/** What CMake found when it configured the loaded addon's build (the CMakeCache.txt beside it or one folder up:
 * build/Release/modalab.node from npm, build-gpu-addon/modalab.node from scripts/gpu-check-node.sh). */
function cmakeFoundNvcc(): boolean {
  const addon = process.env.MODALAB_ADDON ?? path.join(root, 'build', 'Release', 'modalab.node');
  const cache = [path.dirname(addon), path.dirname(path.dirname(addon))].map((d) => path.join(d, 'CMakeCache.txt'))
    .find((f) => fs.existsSync(f));
  if (cache === undefined) return false;
  const m = /^CMAKE_CUDA_COMPILER:[A-Z]+=(.*)$/m.exec(fs.readFileSync(cache, 'utf8'));
  return m !== null && m[1] !== '' && !m[1].endsWith('NOTFOUND');
}

/** A GPU the driver exposes (its device node); without one CUDA cannot be usable. */
const gpuPresent = fs.existsSync('/dev/nvidia0');
/** For the tests about machines without a GPU: reported as skipped where there is one. */
const noGpu = { skip: gpuPresent ? 'a GPU is present: this test is about machines without one' : false };

function runNode(args: string[], env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, args, { env: { ...process.env, ...env }, encoding: 'utf8', cwd: root });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('the addon carries the CUDA backend exactly when CMake found nvcc, and loads without a GPU', () => {
  const info = ml.cuda.info();
  assert.equal(info.build, cmakeFoundNvcc());
  assert.equal(ml.backendInfo().cudaBuild, info.build);
  if (!gpuPresent) {
    assert.equal(ml.cuda.isAvailable(), false);
    assert.equal(ml.cuda.deviceCount(), 0);
    assert.equal(info.available, false);
    assert.equal(info.device, '');
    assert.equal(ml.cuda.memoryReserved(), 0);
    assert.equal(ml.cuda.memoryAllocated(), 0);
  } else {
    assert.equal(ml.cuda.isAvailable(), info.build, 'a CUDA build on a machine with a GPU can use it');
  }
  if (info.build) assert.ok(info.runtime >= 12000, `the statically linked CUDA runtime version, got ${info.runtime}`);
  ml.cuda.synchronize();   // a no-op without a GPU, never an error
});

test('without a GPU everything runs on the CPU: default device, ops, a training step', noGpu, () => {
  assert.equal(ml.getDefaultDevice(), 'cpu');
  const lin = new ml.nn.Linear(4, 2);
  const opt = new ml.optim.AdamW(lin.parameters(), { lr: 1e-2 });
  const x = ml.randn([8, 4]);
  assert.equal(x.device, 'cpu');
  const loss0 = lin.forward(x).square().mean();
  loss0.backward();
  opt.step();
  assert.equal(lin.weight.device, 'cpu');
  assert.ok(lin.forward(x).square().mean().item() < loss0.item());
});

test("every way onto 'cuda' fails with an error that says why, and leaks nothing", noGpu, () => {
  const why = ml.cuda.info().build ? /no driver or GPU was found/ : /no CUDA backend/;
  const before = ml.memory();
  const x = ml.ones([3, 2]);
  assert.throws(() => x.to('cuda'), (e: Error) => /to: cannot allocate \[3, 2\] f32 on cuda/.test(e.message) && why.test(e.message));
  assert.throws(() => ml.zeros([2], { device: 'cuda' }), /isAvailable/);
  assert.throws(() => ml.randn([2], { device: 'cuda' }), why);
  assert.throws(() => x.to('tpu' as ml.Device), /to: unknown device the string "tpu"/);
  // the raw allocator too: GPU memory cannot be asked for, and an unknown device code is refused
  assert.throws(() => binding().alloc(16, false, 1), /alloc: no CUDA device/);
  assert.throws(() => binding().alloc(16, false, 2 as 1), /alloc: unknown device code 2/);
  x.dispose();
  const after = ml.memory();
  assert.equal(after.byDevice.cuda.numBytes, 0);
  assert.equal(after.byDevice.cuda.numBuffers, 0);
  assert.equal(after.byDevice.cpu.numBytes, before.byDevice.cpu.numBytes);
  assert.equal(after.numTensors, before.numTensors);
});

test("setDefaultDevice: tensors are made on it; 'cuda' without a GPU fails at creation; unknown names are refused", () => {
  assert.throws(() => ml.setDefaultDevice('tpu' as ml.Device), /setDefaultDevice: unknown device the string "tpu" \(expected .cpu. or .cuda.\)/);
  const prev = ml.setDefaultDevice('cpu');
  assert.equal(prev, 'cpu');
  if (gpuPresent) return;
  ml.setDefaultDevice('cuda');
  try {
    assert.equal(ml.getDefaultDevice(), 'cuda');
    assert.throws(() => ml.zeros([2]), /device 'cuda' is not available/);
    assert.equal(ml.zeros([2], { device: 'cpu' }).device, 'cpu');   // an explicit device still wins
  } finally {
    ml.setDefaultDevice('cpu');
  }
  assert.equal(ml.zeros([2]).device, 'cpu');
});

test('MODALAB_DEVICE sets the default device at start; a bad value is a clear error', () => {
  const code = `const ml = require(${JSON.stringify(indexJs)}); console.log(ml.getDefaultDevice()); ml.zeros([1]);`;
  const cpu = runNode(['-e', code], { MODALAB_DEVICE: 'cpu' });
  assert.equal(cpu.status, 0, cpu.stderr);
  assert.equal(cpu.stdout.trim(), 'cpu');
  const bad = runNode(['-e', code], { MODALAB_DEVICE: 'gpu' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /MODALAB_DEVICE must be 'cpu' or 'cuda', got 'gpu'/);
  if (gpuPresent) return;
  const cuda = runNode(['-e', code], { MODALAB_DEVICE: 'cuda' });
  assert.notEqual(cuda.status, 0);
  assert.match(cuda.stdout, /^cuda$/m);
  assert.match(cuda.stderr, /device 'cuda' is not available/);
});

test('Module.to: the same device keeps the very tensors; a missing device leaves the module unchanged', () => {
  const m = new ml.nn.Sequential(new ml.nn.Linear(3, 4), new ml.nn.LayerNorm(4));
  const before = m.parameters();
  const values = before.map((p) => Array.from(p.toArray()));
  assert.equal(m.to('cpu'), m);
  assert.deepEqual(m.parameters(), before);
  assert.throws(() => m.to('tpu' as ml.Device), /Sequential\.to: unknown device "tpu"/);
  if (gpuPresent) return;
  assert.throws(() => m.to('cuda'), /Sequential\.to\('cuda'\): .*not available.*the module was left unchanged/);
  const now = m.parameters();
  assert.deepEqual(now, before);
  now.forEach((p, i) => {
    assert.equal(p.isDisposed, false);
    assert.equal(p.device, 'cpu');
    assert.deepEqual(Array.from(p.toArray()), values[i]);
  });
  assert.equal(ml.memory().byDevice.cuda.numBytes, 0);
});

test('the command line: --device cuda is refused up front with the reason; modalab info says what was found', () => {
  const info = runNode([mainJs, 'info']);
  assert.equal(info.status, 0, info.stderr);
  const build = ml.cuda.info().build;
  assert.match(info.stdout, build ? (gpuPresent ? /CUDA +\S/ : /CUDA +built with CUDA; no driver or GPU found/)
    : /CUDA +not built/);
  const bad = runNode([mainJs, 'train', '--stage', 'align', '--preset', 'quick', '--device', 'tpu']);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /train: --device must be cpu or cuda, got 'tpu'/);
  if (gpuPresent) return;
  const r = runNode([mainJs, 'train', '--stage', 'align', '--preset', 'quick', '--device', 'cuda', '--db', '/nonexistent/dir/x.db']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /modalab train: --device cuda: no CUDA device here \((no NVIDIA driver or GPU was found|the native addon was built without CUDA)/);
  for (const cmd of [['chat', '--scene', '1', '--device=cuda'], ['generate', '1', '--device', 'cuda']]) {
    const c = runNode([mainJs, ...cmd]);
    assert.equal(c.status, 1, cmd.join(' '));
    assert.match(c.stderr, new RegExp(`modalab ${cmd[0]}: --device cuda: no CUDA device here`));
  }
});

// ---------------------------------------------------------------------------------------------- with a GPU
// These run where ml.cuda.isAvailable() (scripts/gpu-check-node.sh on the GPU machine); the CI machines have no
// GPU and report them as skipped, with the tests above covering that side.
const onGpu = { skip: ml.cuda.isAvailable() ? false : 'no CUDA device on this machine' };

test('to(): cpu -> cuda -> cpu is bit-exact for every dtype, and gradients flow back across', onGpu, () => {
  for (const dtype of ['f32', 'f16', 'bf16', 'i32'] as const) {
    const x = dtype === 'i32' ? ml.tensor([1, -2, 3, 2147483647], [4], { dtype }) : ml.randn([37, 5]).cast(dtype);
    const g = x.to('cuda');
    assert.equal(g.device, 'cuda');
    assert.deepEqual(Array.from(g.to('cpu').toArray()), Array.from(x.toArray()));
    assert.deepEqual(Array.from(g.toArray()), Array.from(x.toArray()));   // read straight from the device
  }
  const w = ml.randn([6, 3], { requiresGrad: true });
  w.to('cuda').mul(2).sum().backward();
  assert.equal(w.grad!.device, 'cpu');
  assert.deepEqual(Array.from(w.grad!.toArray()), new Array(18).fill(2));
});

test('a training step on the GPU matches the same step on the CPU (f32, within 1e-5)', onGpu, () => {
  const step = (device: ml.Device): Float32Array[] => {
    ml.manualSeed(3);
    const m = new ml.nn.Sequential(new ml.nn.Linear(16, 32), new ml.nn.GELU(), new ml.nn.LayerNorm(32), new ml.nn.Linear(32, 5)).to(device);
    const opt = new ml.optim.AdamW(m.parameters(), { lr: 1e-2 });
    const x = ml.randn([24, 16]).to(device);
    const y = ml.tensor(Array.from({ length: 24 }, (_, i) => i % 5), [24], { dtype: 'i32' }).to(device);
    for (let i = 0; i < 3; i++) {
      opt.zeroGrad();
      ml.crossEntropy(m.forward(x) as ml.Tensor, y).backward();
      opt.step();
    }
    return m.parameters().map((p) => p.toArray() as Float32Array);
  };
  const cpu = step('cpu');
  const gpu = step('cuda');
  cpu.forEach((c, i) => c.forEach((v, j) => assert.ok(Math.abs(v - gpu[i][j]) <= 1e-5 + 1e-5 * Math.abs(v), `param ${i}[${j}]: cpu ${v}, cuda ${gpu[i][j]}`)));
});

test('ops refuse tensors on two devices; memory() counts GPU bytes; loadStateDict copies across', onGpu, () => {
  const a = ml.ones([4, 4]);
  const b = ml.ones([4, 4], { device: 'cuda' });
  assert.throws(() => a.add(b), /different devices/);
  assert.throws(() => a.matmul(b), /different devices/);
  const before = ml.memory().byDevice.cuda.numBytes;
  const c = ml.zeros([1024], { device: 'cuda' });
  assert.equal(ml.memory().byDevice.cuda.numBytes, before + 4096);
  assert.ok(ml.cuda.memoryAllocated() >= 4096);
  c.dispose();
  assert.equal(ml.memory().byDevice.cuda.numBytes, before);
  const src = new ml.nn.Linear(3, 2);
  const dst = new ml.nn.Linear(3, 2).to('cuda');
  dst.loadStateDict(src.stateDict());
  assert.equal(dst.weight.device, 'cuda');
  assert.deepEqual(Array.from(dst.weight.toArray()), Array.from(src.weight.toArray()));
});
