/**
 * How many batches per second imageTextBatchTask delivers to a consumer that does nothing else: B=128 images of
 * 3x32x32 with 32 tokens each, with and without augmentation, on the main thread and with 1 and 2 workers; and the
 * data wait per step of a consumer whose synchronous step takes 10 ms.
 *
 *   npx tsc -p tsconfig.test.json --outDir /tmp/lb && node /tmp/lb/src/experiments/data/loader-bench.js [batches]
 *
 * Prints one line per configuration and a markdown table (docs/loader.md keeps the last one measured).
 */
import * as os from 'os';
import { performance } from 'perf_hooks';
import { DataLoader, imageTextBatchTask } from './loader';

interface Result { perS: number; imgPerS: number; meanProduceMs: number; stepWaitMs: number }

/**
 * Two phases on one loader: `batches` taken as fast as possible (throughput), then `batches / 2` with a synchronous
 * 10 ms "training step" between them (Atomics.wait: it blocks the thread without using a core), reporting the mean
 * wait per step, i.e. what a training loop would log as data wait.
 */
async function measure(workers: number, augment: boolean, batches: number): Promise<Result> {
  const N = 4096, C = 3, H = 32, W = 32, T = 32, B = 128;
  const images = new Float32Array(new SharedArrayBuffer(N * C * H * W * 4));
  for (let i = 0; i < images.length; i++) images[i] = Math.sin(i * 0.001) * 1.5;
  const tokens = new Int32Array(new SharedArrayBuffer(N * T * 4));
  for (let i = 0; i < tokens.length; i++) tokens[i] = i % 5000;
  const task = imageTextBatchTask({
    images, imageShape: [N, C, H, W], tokens, tokenShape: [N, T],
    augment: augment ? { cropScale: [0.6, 1], jitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4 } } : false,
  });
  const loader = new DataLoader({ length: N, batchSize: B, seed: 0, workers, prefetch: 2, makeBatch: task });
  try {
    await loader.warmup();
    // Warm up the JIT and the pipeline, then time.
    let n = 0;
    const it = loader.batches(0);
    for (let i = 0; i < 5; i++) await it.next();
    loader.resetStats();
    const t0 = performance.now();
    for (; n < batches; n++) await it.next();
    const s = (performance.now() - t0) / 1000;
    const meanProduceMs = loader.stats().meanProduceMs;
    loader.resetStats();
    const lock = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; i < batches / 2; i++) {
      Atomics.wait(lock, 0, 0, 10);
      await it.next();
    }
    const stepWaitMs = loader.stats().meanWaitMs;
    await it.return();
    return { perS: batches / s, imgPerS: (batches * B) / s, meanProduceMs, stepWaitMs };
  } finally {
    await loader.close();
  }
}

async function main(): Promise<void> {
  const batches = Number(process.argv[2] ?? 100);
  console.log(`node ${process.version}, ${os.cpus().length} CPUs, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const rows: string[] = [
    '| augment | workers | batches/s | images/s | batch fn ms (where it ran) | data wait per 10 ms step, ms |',
    '|---|---|---|---|---|---|',
  ];
  for (const augment of [false, true]) {
    for (const workers of [0, 1, 2]) {
      const r = await measure(workers, augment, batches);
      console.log(`augment ${augment ? 'on ' : 'off'} workers ${workers}: ${r.perS.toFixed(1)} batches/s, ${Math.round(r.imgPerS)} images/s, batch fn ${r.meanProduceMs.toFixed(2)} ms, wait per 10 ms step ${r.stepWaitMs.toFixed(2)} ms`);
      rows.push(`| ${augment ? 'on' : 'off'} | ${workers} | ${r.perS.toFixed(1)} | ${Math.round(r.imgPerS)} | ${r.meanProduceMs.toFixed(2)} | ${r.stepWaitMs.toFixed(2)} |`);
    }
  }
  console.log(rows.join('\n'));
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
