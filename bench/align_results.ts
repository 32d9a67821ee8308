/**
 * Quality of the align stage beside PyTorch (docs/results.md, "Stage 1: align"): trains a preset with modalab's
 * trainAlign, then the same model in PyTorch (bench/torch/clip_model.py via bench/torch/train_align.py) from the
 * same initial weights on the same batches (augmentation included: node produces them with makeBatchStream and
 * streams them to python over stdin), with the same optimizer, schedule and clipping; both sides' final test and
 * held-out embeddings are scored here by one implementation (retrievalMetrics).
 *
 *   npx tsc -p tsconfig.test.json --outDir /tmp/ref-build
 *   node /tmp/ref-build/bench/align_results.js --preset quick [--threads 2] [--set train.steps=20] [--out DIR]
 *
 * Options: --threads N (both sides; alias --torch-threads; default 2), --set key=value (config overrides, as the
 * CLI's), --out DIR (default runs/bench-align/<preset>), --skip modalab|torch (reuse that side's saved result),
 * --only modalab|torch (run that side alone, save its result and stop: a long comparison in two sittings),
 * --resume (the PyTorch side continues from DIR/torch_ckpt.pt, written every --torch-checkpoint-every N steps,
 * default 100, and at the end of a sitting; the losses continue exactly as an uninterrupted run's).
 * Writes DIR/init.safetensors, DIR/modalab.json, DIR/torch_train.json, DIR/torch_embeddings.safetensors,
 * DIR/result.json, and prints the tables as Markdown.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn } from 'child_process';
import * as ml from '../src/index';
import { AlignConfig, resolveAlignConfig } from '../src/experiments/stages/align/config';
import { parseOverrides } from '../src/experiments/stages/config';
import { AlignData, SplitData, makeBatchStream, prepareAlignData } from '../src/experiments/stages/align/data';
import { buildAlignModel } from '../src/experiments/stages/align/model';
import { trainAlign } from '../src/experiments/stages/align/train';
import { chanceLevels, retrievalMetrics } from '../src/experiments/eval/retrieval';

/** The repository root: the first directory above this file holding bench/torch/train_align.py, else the cwd. */
function findRoot(): string {
  for (let d = __dirname; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'bench', 'torch', 'train_align.py'))) return d;
    if (path.dirname(d) === d) return process.cwd();
  }
}
const ROOT = findRoot();
const PY = process.env.MODALAB_PYTHON ?? '/usr/bin/python3';

interface Args { preset: string; threads: number; sets: string[]; out: string; skip: Set<string>; only: string; stopAfter: number; resume: boolean; torchCheckpointEvery: number }

function parseArgs(argv: string[]): Args {
  let preset = '';
  let threads = 2;
  let out = '';
  let stopAfter = 0;
  let only = '';
  let resume = false;
  let torchCheckpointEvery = 100;
  const sets: string[] = [];
  const skip = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`align_results: ${a} needs a value`);
      return v;
    };
    if (a === '--preset') preset = val();
    else if (a === '--threads' || a === '--torch-threads') {
      threads = Number(val());
      if (!Number.isInteger(threads) || threads < 1) throw new Error(`align_results: ${a} must be a positive integer`);
    } else if (a === '--set') sets.push(val());
    else if (a === '--out') out = val();
    else if (a === '--stop-after') {
      stopAfter = Number(val());
      if (!Number.isInteger(stopAfter) || stopAfter < 1) throw new Error(`align_results: ${a} must be a positive integer`);
    }
    else if (a === '--skip') {
      const s = val();
      if (s !== 'modalab' && s !== 'torch') throw new Error(`align_results: --skip takes modalab or torch, got ${JSON.stringify(s)}`);
      skip.add(s);
    } else if (a === '--resume') resume = true;
    else if (a === '--torch-checkpoint-every') {
      torchCheckpointEvery = Number(val());
      if (!Number.isInteger(torchCheckpointEvery) || torchCheckpointEvery < 0) throw new Error(`align_results: ${a} must be a non-negative integer (0: no checkpoints)`);
    } else if (a === '--only') {
      only = val();
      if (only !== 'modalab' && only !== 'torch') throw new Error(`align_results: --only takes modalab or torch, got ${JSON.stringify(only)}`);
    } else throw new Error(`align_results: unknown argument ${JSON.stringify(a)} (--preset quick|small, --threads N, --set k=v, --out DIR, --skip modalab|torch, --only modalab|torch, --resume, --torch-checkpoint-every N, --stop-after N)`);
  }
  if (!preset) throw new Error('align_results: --preset quick|small is required');
  if (only && skip.has(only)) throw new Error(`align_results: --only ${only} and --skip ${only} contradict each other`);
  return { preset, threads, sets, out: path.resolve(out || path.join(ROOT, 'runs', 'bench-align', preset)), skip, only, stopAfter, resume, torchCheckpointEvery };
}

function writeJson(file: string, v: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(v, null, 1) + '\n');
  fs.renameSync(tmp, file);
}

function loadAvg(): string {
  return os.loadavg().map((x) => x.toFixed(2)).join(', ');
}

interface SideResult {
  losses: number[];
  /** Seconds of each training step (data wait included). */
  stepS: number[];
  /** Steps whose time includes an evaluation or checkpoint (left out of samples/s). */
  extraSteps: number[];
  trainS: number;
  wallS: number;
  metrics: Record<string, number>;
  loadBefore: string;
  loadAfter: string;
  info: Record<string, unknown>;
}

async function runModalab(cfg: AlignConfig, out: string, threads: number, stopAfter: number): Promise<SideResult> {
  ml.setNumThreads(threads);
  const loadBefore = loadAvg();
  const cpu0 = process.cpuUsage();
  let tTrain = 0;
  let tPrev = 0;
  const stepS: number[] = [];
  const t = cfg.train;
  const res = await trainAlign(cfg, {
    db: path.join(out, 'modalab.db'), outDir: path.join(out, 'modalab-run'), stopAfter: stopAfter > 0 ? stopAfter : undefined,
    onStatus: (m) => {
      if (m.startsWith('training')) tTrain = tPrev = performance.now();
      process.stderr.write(`modalab: ${m}\n`);
    },
    onStep: (s) => {
      const now = performance.now();
      stepS.push((now - tPrev) / 1000);
      tPrev = now;
      if (s.step % 50 === 0 || s.step === s.steps) process.stderr.write(`modalab step ${s.step}/${s.steps} loss ${s.loss.toFixed(4)} ${(stepS[stepS.length - 1] * 1e3).toFixed(0)} ms/step\n`);
    },
  });
  const cpu = process.cpuUsage(cpu0);
  // The time between step k and k+1 includes the evaluation / checkpoint written after step k.
  const extraSteps: number[] = [];
  for (let k = 1; k < t.steps; k++) {
    if ((t.evalEvery > 0 && k % t.evalEvery === 0) || (t.checkpointEvery > 0 && k % t.checkpointEvery === 0)) extraSteps.push(k + 1);
  }
  return {
    losses: res.losses, stepS, extraSteps, trainS: (tPrev - tTrain) / 1000, wallS: res.wallS, metrics: res.metrics,
    loadBefore, loadAfter: loadAvg(), info: { cpuS: (cpu.user + cpu.system) / 1e6, runId: res.runId, checkpoint: res.checkpoint, threads: ml.backendInfo().threads, blas: ml.backendInfo().blas },
  };
}

function bytesOf(a: Float32Array | Int32Array): Buffer {
  return Buffer.from(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength) as ArrayBuffer);
}

function header(kind: number, a: number, b: number, c: number): Buffer {
  return bytesOf(Int32Array.from([kind, a, b, c]));
}

/**
 * The step DIR/torch_ckpt.json names and the python wall time up to it (train_align.py writes the file after its
 * checkpoint), or an error saying what is missing.
 */
function torchCheckpoint(out: string): { step: number; wallS: number } {
  const f = path.join(out, 'torch_ckpt.json');
  if (!fs.existsSync(f)) throw new Error(`align_results: --resume, but ${f} does not exist (no PyTorch checkpoint in ${out}; run without --resume)`);
  const { step, wallS } = JSON.parse(fs.readFileSync(f, 'utf8'));
  if (!Number.isInteger(step) || step < 1) throw new Error(`align_results: ${f} names no step (${JSON.stringify(step)})`);
  return { step, wallS: Number(wallS) || 0 };
}

async function runTorch(cfg: AlignConfig, data: AlignData, modelConfig: unknown, out: string, threads: number, stopAfter: number,
  resume: boolean, checkpointEvery: number): Promise<SideResult> {
  const loadBefore = loadAvg();
  const t0 = performance.now();
  const t = cfg.train;
  const runSteps = stopAfter > 0 ? Math.min(stopAfter, t.steps) : t.steps;
  const ckpt = resume ? torchCheckpoint(out) : { step: 0, wallS: 0 };
  const startStep = ckpt.step;
  if (startStep > runSteps) throw new Error(`align_results: the PyTorch checkpoint is at step ${startStep}, past the ${runSteps} steps this run stops at`);
  if (resume) process.stderr.write(`torch: resuming at step ${startStep} of ${runSteps}\n`);
  const pyCfg = {
    startStep, checkpointEvery,
    model: modelConfig, init: path.join(out, 'init.safetensors'), out, threads, steps: t.steps, runSteps, lr: t.lr, betas: t.betas,
    eps: t.eps, weightDecay: t.weightDecay, warmupSteps: t.warmupSteps, minLrRatio: t.minLrRatio, gradClip: t.gradClip,
  };
  const child = spawn(PY, [path.join(ROOT, 'bench', 'torch', 'train_align.py'), JSON.stringify(pyCfg)], {
    stdio: ['pipe', 'inherit', 'inherit'], env: { ...process.env, OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) },
  });
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', (e) => reject(new Error(`align_results: could not start ${PY}: ${e.message}`)));
    child.on('exit', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
  });
  let pipeError: Error | null = null;
  child.stdin.on('error', (e) => { pipeError = e; });
  const write = async (buf: Buffer): Promise<void> => {
    if (pipeError) throw pipeError;
    if (!child.stdin.write(buf)) {
      await Promise.race([new Promise<void>((r) => child.stdin.once('drain', () => r())), exited.then((c) => {
        throw new Error(`align_results: train_align.py exited (code ${c}) while batches were being sent`);
      })]);
    }
  };
  const S = cfg.data.imageSize;
  const T = cfg.tokenizer.contextLength;
  const stream = makeBatchStream(cfg, data, startStep);
  try {
    for (let i = startStep; i < runSteps; i++) {
      const b = await stream.next();
      const B = b.indices.length;
      await write(header(1, B, S, T));
      await write(bytesOf(b.images));
      await write(bytesOf(b.tokens));
      await write(bytesOf(b.lengths));
    }
  } finally {
    await stream.close();
  }
  const sendSplit = async (id: number, s: SplitData): Promise<void> => {
    await write(header(2, id, s.numImages, s.numTexts));
    await write(bytesOf(s.images.subarray(0, s.numImages * 3 * S * S)));
    await write(bytesOf(s.tokens.subarray(0, s.numTexts * T)));
    await write(bytesOf(s.lengths.subarray(0, s.numTexts)));
  };
  // A run stopped early (--stop-after, a timing and fidelity check) is not evaluated, as trainAlign's.
  if (data.test && runSteps === t.steps) await sendSplit(0, data.test);
  if (data.heldout && data.heldout.numImages > 0 && runSteps === t.steps) await sendSplit(1, data.heldout);
  await write(header(0, 0, 0, 0));
  child.stdin.end();
  const code = await exited;
  if (code !== 0) throw new Error(`align_results: train_align.py failed with exit code ${code}`);
  // A resumed run's wall time: this sitting's, plus the python process time of the sittings before it.
  const wallS = (performance.now() - t0) / 1000 + ckpt.wallS;
  const rep = JSON.parse(fs.readFileSync(path.join(out, 'torch_train.json'), 'utf8'));
  const emb = ml.load(path.join(out, 'torch_embeddings.safetensors')).tensors;
  const metrics: Record<string, number> = {};
  for (const [prefix, s] of [['test/', data.test], ['heldout/', data.heldout]] as const) {
    if (!s || s.numImages === 0 || !emb[`${prefix.slice(0, -1)}.img`]) continue;
    const name = prefix.slice(0, -1);
    const m = retrievalMetrics(emb[`${name}.img`], emb[`${name}.txt`], s.imageGroups, s.textGroups, { normalize: true, skipMissing: true }).flat();
    for (const [k, v] of Object.entries(m)) metrics[prefix + k] = v;
  }
  for (const x of Object.values(emb)) x.dispose();
  return {
    losses: rep.losses, stepS: rep.stepS, extraSteps: [], trainS: rep.trainS, wallS, metrics, loadBefore, loadAfter: loadAvg(),
    info: { cpuS: rep.cpuS, trainCpuS: rep.trainCpuS, sittings: rep.sittings, startStep: rep.startStep, torch: rep.torch, threads: rep.threads, processWallS: rep.wallS, evalS: rep.evalS, dataWaitS: rep.waitS.reduce((a: number, b: number) => a + b, 0), gradNorms: rep.gradNorms.slice(0, 20), lrs: rep.lrs.slice(0, 5) },
  };
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

function pace(r: SideResult, batch: number): { msPerStep: number; samplesPerS: number; medianMs: number } {
  const skip = new Set(r.extraSteps);
  const pure = r.stepS.filter((_, i) => !skip.has(i + 1));
  const mean = pure.reduce((a, b) => a + b, 0) / pure.length;
  return { msPerStep: mean * 1e3, samplesPerS: batch / mean, medianMs: median(pure) * 1e3 };
}

const f3 = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(3));
const f1 = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(1));

function markdown(res: Record<string, any>): string {
  const m = res.modalab as SideResult;
  const p = res.torch as SideResult;
  const ch = res.chance as Record<string, Record<string, number>>;
  const lines: string[] = [];
  const splits = ['test', 'heldout'].filter((s) => ch[s]);
  lines.push(`| metric | ${splits.map((s) => `modalab ${s} | PyTorch ${s} | chance ${s}`).join(' | ')} |`);
  lines.push(`| --- |${splits.map(() => ' ---: | ---: | ---: ').join('|')}|`);
  for (const dir of ['t2i', 'i2t']) {
    for (const k of ['r@1', 'r@5', 'r@10', 'map', 'median_rank']) {
      const key = `${dir}/${k}`;
      const fmt = k === 'median_rank' ? f1 : f3;
      lines.push(`| ${key} | ${splits.map((s) => `${fmt(m.metrics[`${s}/${key}`])} | ${fmt(p.metrics[`${s}/${key}`])} | ${k === 'map' ? '–' : fmt(ch[s][key])}`).join(' | ')} |`);
    }
  }
  const B = res.config.train.batchSize;
  const pm = pace(m, B);
  const pp = pace(p, B);
  lines.push('');
  lines.push('| | modalab | PyTorch |');
  lines.push('| --- | ---: | ---: |');
  lines.push(`| wall, whole run (s) | ${f1(m.wallS)} | ${f1(p.wallS)} |`);
  lines.push(`| training loop (s) | ${f1(m.trainS)} | ${f1(p.trainS)} |`);
  lines.push(`| ms/step, mean (median) | ${f1(pm.msPerStep)} (${f1(pm.medianMs)}) | ${f1(pp.msPerStep)} (${f1(pp.medianMs)}) |`);
  lines.push(`| CPU time of the process, user + sys (s) | ${f1(m.info.cpuS as number)} | ${f1(p.info.cpuS as number)} |`);
  lines.push(`| samples/s (training steps) | ${f1(pm.samplesPerS)} | ${f1(pp.samplesPerS)} |`);
  lines.push(`| final loss (mean of last 20 steps) | ${f3(mean(m.losses.slice(-20)))} | ${f3(mean(p.losses.slice(-20)))} |`);
  lines.push(`| load average before / after | ${m.loadBefore} / ${m.loadAfter} | ${p.loadBefore} / ${p.loadAfter} |`);
  lines.push('');
  lines.push('| step | modalab loss | PyTorch loss | relative difference |');
  lines.push('| ---: | ---: | ---: | ---: |');
  const n = Math.min(m.losses.length, p.losses.length);
  const show = [...Array.from({ length: Math.min(20, n) }, (_, i) => i), ...[50, 100, 200, 400, 1000, 2000, 3000].map((s) => s - 1).filter((i) => i >= 20 && i < n)];
  if (n > 0 && !show.includes(n - 1)) show.push(n - 1);
  for (const i of show) lines.push(`| ${i + 1} | ${m.losses[i].toFixed(6)} | ${p.losses[i].toFixed(6)} | ${relDiff(m.losses[i], p.losses[i]).toExponential(2)} |`);
  return lines.join('\n');
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function relDiff(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const overrides = parseOverrides(args.sets, 'align_results');
  const cfg = resolveAlignConfig(args.preset, overrides);
  fs.mkdirSync(args.out, { recursive: true });
  process.chdir(ROOT);
  ml.setNumThreads(args.threads);
  const tPrep = performance.now();
  const data = await prepareAlignData(cfg, { onStatus: (m) => process.stderr.write(`data: ${m}\n`) });
  const prepS = (performance.now() - tPrep) / 1000;
  // The initial weights exactly as trainAlign builds them: the seed is set again right before the model.
  ml.manualSeed(cfg.seed);
  const init = buildAlignModel(cfg, data.tokenizer.vocabSize);
  const modelConfig = { ...init.net.config };
  ml.save(path.join(args.out, 'init.safetensors'), init.net.stateDict());
  const initTensors = Object.keys(init.net.stateDict()).length;
  init.dispose();
  const chance: Record<string, Record<string, number>> = {};
  if (data.test) chance.test = chanceLevels(data.test.imageGroups, data.test.textGroups);
  if (data.heldout && data.heldout.numImages > 0) chance.heldout = chanceLevels(data.heldout.imageGroups, data.heldout.textGroups);

  const mFile = path.join(args.out, 'modalab.json');
  let modalab: SideResult;
  if (args.skip.has('modalab') || args.only === 'torch') modalab = JSON.parse(fs.readFileSync(mFile, 'utf8'));
  else {
    modalab = await runModalab(cfg, args.out, args.threads, args.stopAfter);
    writeJson(mFile, modalab);
    if (args.only === 'modalab') {
      console.log(`wrote ${mFile}; run again with --skip modalab (or --only torch) for the PyTorch side`);
      return;
    }
  }
  const tFile = path.join(args.out, 'torch.json');
  let torch: SideResult;
  if (args.skip.has('torch')) torch = JSON.parse(fs.readFileSync(tFile, 'utf8'));
  else {
    torch = await runTorch(cfg, data, modelConfig, args.out, args.threads, args.stopAfter, args.resume, args.torchCheckpointEvery);
    writeJson(tFile, torch);
  }
  const n = Math.min(modalab.losses.length, torch.losses.length);
  const rel = Array.from({ length: n }, (_, i) => relDiff(modalab.losses[i], torch.losses[i]));
  const res = {
    date: new Date().toISOString(), command: `node bench/align_results.js --preset ${args.preset} --threads ${args.threads}${args.stopAfter ? ` --stop-after ${args.stopAfter}` : ''}${args.only ? ` --only ${args.only}` : ''}${args.resume ? ' --resume' : ''}${args.sets.map((s) => ` --set ${s}`).join('')}`,
    preset: args.preset, threads: args.threads, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, dataPrepS: prepS,
    sizes: {
      train: data.train.numTexts, test: data.test ? [data.test.numImages, data.test.numTexts] : null,
      heldout: data.heldout ? [data.heldout.numImages, data.heldout.numTexts] : null, vocab: data.tokenizer.vocabSize, initTensors,
    },
    config: cfg, chance, modalab, torch,
    lossAgreement: {
      first20MaxRel: Math.max(...rel.slice(0, 20)), first100MaxRel: Math.max(...rel.slice(0, 100)), allMaxRel: Math.max(...rel),
      firstAbove1e4: rel.findIndex((r) => r > 1e-4) + 1 || null, firstAbove1e2: rel.findIndex((r) => r > 1e-2) + 1 || null,
    },
  };
  writeJson(path.join(args.out, 'result.json'), res);
  const md = markdown(res);
  fs.writeFileSync(path.join(args.out, 'result.md'), md + '\n');
  console.log(md);
  console.log(`\nloss agreement: ${JSON.stringify(res.lossAgreement)}`);
  console.log(`wrote ${path.join(args.out, 'result.json')}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
