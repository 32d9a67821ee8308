/**
 * data: can the image pipeline keep up with training? Three numbers, all in images per second:
 * - first load: the emoji train split (google images, English) through sharp (decode, composite on white,
 *   resize, normalise) into one f32 array, written to a cold cache folder (preprocessSplit);
 * - cached load: the same call again, served from the cache file;
 * - augment: random resized crop + colour jitter on a batch of 128 cached images (pure JS, one thread).
 * The goal is a training step of 128 images at 32x32 every 50-100 ms that never waits on data.
 *
 * preprocessSplit is async (sharp works on libuv's thread pool), and a Suite's run() is synchronous, so the load
 * measurements run in a child Node process (this file with `--child`), which prints one JSON line. No PyTorch side.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { preprocessSplit } from '../../src/experiments/data/cache';
import { loadEmoji } from '../../src/experiments/data/emoji';
import { augment } from '../../src/experiments/data/image';
import { Goal, MeasureOptions, Suite, SuiteContext, SuiteResult, fmt, fmtSpread, measure, median, relSpread } from '../harness';

const SIZES = [32, 64];
const BATCH = 128;
/** The step time the loader must keep up with (the slow end of 50-100 ms is not the goal; the fast end is). */
const STEP_MS = 50;
/** Cached loads per round (after the one cold load). */
const CACHED_LOADS = 3;
const AUG_OPTS: MeasureOptions = { warmup: 3, sampleMs: 50, minSamples: 8, maxSamples: 30, minTimeMs: 500 };
const JITTER = { brightness: 0.3, contrast: 0.3, saturation: 0.3 };

/** Times in ms; coldCpuMs is the process's CPU time (all threads: JS and sharp's pool) during the cold load. */
interface LoadResult { size: number; images: number; coldMs: number; coldCpuMs: number; cachedMs: number[] }

/** In the child: one cold load and CACHED_LOADS cached loads per size, in a fresh cache folder. */
async function childLoads(): Promise<LoadResult[]> {
  const items = loadEmoji().splits.train.map((p) => ({ id: p.id, image: p.image }));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-bench-data-'));
  const out: LoadResult[] = [];
  try {
    for (const size of SIZES) {
      const t0 = performance.now(), cpu0 = process.cpuUsage();
      const cold = await preprocessSplit(items, { size }, { cacheDir: dir, key: 'bench' });
      const coldMs = performance.now() - t0;
      const used = process.cpuUsage(cpu0);
      const coldCpuMs = (used.user + used.system) / 1e3;
      if (cold.fromCache || cold.ids.length !== items.length) throw new Error(`data bench: cold load of ${size}px was not a full decode`);
      const cachedMs: number[] = [];
      for (let i = 0; i < CACHED_LOADS; i++) {
        const t1 = performance.now();
        const hit = await preprocessSplit(items, { size }, { cacheDir: dir, key: 'bench' });
        cachedMs.push(performance.now() - t1);
        if (!hit.fromCache) throw new Error(`data bench: second load of ${size}px missed the cache`);
      }
      out.push({ size, images: items.length, coldMs, coldCpuMs, cachedMs });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

function runChild(): LoadResult[] {
  const r = spawnSync(process.execPath, [__filename, '--child'], { encoding: 'utf8', timeout: 600_000, maxBuffer: 16 << 20 });
  if (r.status !== 0) throw new Error(`data bench child exited with ${r.status}: ${(r.stderr || r.error?.message || '').trim().split('\n').slice(-3).join(' | ')}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as LoadResult[];
}

/** Per-image ms of augmenting one batch of BATCH images of side `size` (values: a fresh random batch). */
function augmentSamples(size: number): number[] {
  const x = new Float32Array(BATCH * 3 * size * size);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 12.9898) * 1.8;
  const out = new Float32Array(x.length);
  let seed = 0;
  const s = measure(() => { augment(x, [BATCH, 3, size, size], { seed: seed++, cropScale: [0.6, 1], jitter: JITTER, out }); }, AUG_OPTS);
  return s.ns.map((ns) => ns / 1e6); // ms per batch
}

export const data: Suite = {
  name: 'data',
  summary: 'images/s through the sharp pipeline (first load, cached load) and augment throughput at 32/64 px',
  run(ctx: SuiteContext): SuiteResult {
    const loads: LoadResult[][] = [];
    const aug = new Map<number, number[][]>(SIZES.map((s) => [s, []]));
    for (let r = 0; r < ctx.rounds; r++) {
      ctx.log(`data round ${r + 1}/${ctx.rounds}: loads (child process)`);
      loads.push(runChild());
      ctx.log(`data round ${r + 1}/${ctx.rounds}: augment`);
      for (const s of SIZES) aug.get(s)!.push(augmentSamples(s));
    }
    const rows: string[][] = [];
    const goals: Goal[] = [];
    const cpuNotes: string[] = [];
    for (const size of SIZES) {
      const per = loads.map((l) => l.find((x) => x.size === size)!);
      const n = per[0].images;
      const cold = median(per.map((p) => p.coldMs));
      const cached = median(per.map((p) => median(p.cachedMs)));
      const cpuPerImage = median(per.map((p) => p.coldCpuMs)) / n;
      rows.push([`first load (decode + cache write), ${size}px`, fmt(n / (cold / 1e3)), fmt(cold), `${per.length} loads of ${n}`, 'n/a']);
      cpuNotes.push(`first load at ${size}px: ${fmt(cpuPerImage)} ms of CPU per image (all threads)`);
      rows.push([`cached load, ${size}px`, fmt(n / (cached / 1e3)), fmt(cached), `${per.length * CACHED_LOADS} loads of ${n}`,
        fmtSpread(relSpread(per.flatMap((p) => p.cachedMs)))]);
      goals.push({
        text: `cached load of the emoji train split (${size}px) at most 0.1x the first load's time`,
        ratio: cached / cold, pass: (x) => x <= 0.1,
      });
    }
    for (const size of SIZES) {
      const rounds = aug.get(size)!;
      const ms = median(rounds.map(median));
      rows.push([`augment (crop + jitter), batch ${BATCH}, ${size}px`, fmt(BATCH / (ms / 1e3)), fmt(ms), `${rounds.flat().length} batches`,
        fmtSpread(relSpread(rounds.flat()))]);
      if (size === 32) {
        goals.push({
          text: `augment of a ${BATCH}-image 32x32 batch at most 0.1x a ${STEP_MS} ms training step`,
          ratio: ms / STEP_MS, pass: (x) => x <= 0.1,
        });
      }
    }
    return {
      title: 'data: image pipeline throughput',
      description:
        'The emoji train split (google images of the training concepts, English captions; 64x64 RGBA PNGs) through ' +
        '`preprocessSplit`: sharp decodes, composites onto white, resizes (contain, lanczos3) and the result is ' +
        'normalised to f32 [N, 3, H, W] and written to a fresh cache folder (first load), then read back from that ' +
        `file (cached load, ${CACHED_LOADS} per round). Loads run in a child process (sharp is async; the default ` +
        `decode concurrency, libuv's default pool of ${process.env.UV_THREADPOOL_SIZE ?? 4} threads). Augment: ` +
        `random resized crop (scale 0.6-1) and colour jitter (0.3 each) on a batch of ${BATCH} on one JS thread. ` +
        'Values are medians over rounds; spread is over all samples. No PyTorch side.',
      columns: ['what', 'images/s', 'ms', 'samples', 'spread'],
      rows,
      goals,
      notes: [`The ${STEP_MS} ms step is the fast end of the 50-100 ms per 128-image step the loader must keep up with: ` +
        `${BATCH} images per ${STEP_MS} ms is ${fmt(BATCH / (STEP_MS / 1e3))} images/s.`, ...cpuNotes],
    };
  },
};

if (require.main === module && process.argv[2] === '--child') {
  childLoads().then((r) => console.log(JSON.stringify(r)), (e) => { console.error((e as Error).stack ?? e); process.exit(1); });
}
