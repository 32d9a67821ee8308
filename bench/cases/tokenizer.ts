/**
 * tokenizer: how long training a byte-level BPE takes, and how many tokens per second encoding and decoding
 * run, beside HuggingFace `tokenizers` (the Rust library through its napi binding, a devDependency) on the
 * same tokenizer.json and the same texts. No PyTorch side: a tokenizer has no torch counterpart.
 *
 * Corpus: captions-like English, `textCorpus({ maxGlosses: 20000 })` (WordNet definitions and examples, about
 * 1.9 MB in 28k strings), each string encoded on its own as the loader does. Goal: encoding keeps up with
 * training by a wide margin, stated as at least 1M tokens/s on one core with a warm word cache.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tokenizer, textCorpus, trainBPE } from '../../src/experiments/tokenizer';
import { Goal, Suite, SuiteContext, SuiteResult, fmt, fmtSpread, median, relSpread } from '../harness';

const VOCAB = 4096;
const GLOSSES = 20000;
const GOAL_TOKENS_PER_S = 1e6;

const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;
const cpuMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1e3; };

/**
 * Wall and CPU milliseconds of each run. CPU time is reported beside wall time because on a shared machine
 * the wall clock also counts the time other processes held the core; both are medians over the runs.
 */
interface Runs { wall: number[]; cpu: number[] }

function timeRuns(n: number, fn: () => void): Runs {
  const out: Runs = { wall: [], cpu: [] };
  for (let i = 0; i < n; i++) {
    const t0 = nowMs(), c0 = cpuMs();
    fn();
    out.wall.push(nowMs() - t0);
    out.cpu.push(cpuMs() - c0);
  }
  return out;
}

/**
 * The Rust library in a child process (its encode is async; a suite is synchronous), one thread
 * (RAYON_RS_NUM_CPUS=1) so that the comparison is per core like ours. Returns ms per pass, or a reason.
 */
function hfRust(file: string, textsFile: string, passes: number): { ms: number[]; batchMs: number[]; tokens: number } | string {
  let mod: string;
  try {
    mod = require.resolve('tokenizers', { paths: [process.cwd(), __dirname] });
  } catch {
    return 'the tokenizers devDependency is not installed';
  }
  const script = `
    const { Tokenizer } = require(${JSON.stringify(mod)});
    const texts = JSON.parse(require('fs').readFileSync(${JSON.stringify(textsFile)}, 'utf8'));
    const tok = Tokenizer.fromFile(${JSON.stringify(file)});
    const now = () => Number(process.hrtime.bigint()) / 1e6;
    (async () => {
      const ms = [], batchMs = [];
      let tokens = 0;
      for (let p = 0; p <= ${passes}; p++) {        // pass 0 warms up
        const t0 = now();
        let n = 0;
        for (const t of texts) n += (await tok.encode(t)).getLength();
        if (p) ms.push(now() - t0); else tokens = n;
        const t1 = now();
        for (let i = 0; i < texts.length; i += 256) await tok.encodeBatch(texts.slice(i, i + 256));
        if (p) batchMs.push(now() - t1);
      }
      console.log(JSON.stringify({ ms, batchMs, tokens }));
    })();`;
  const r = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8', timeout: 600_000, maxBuffer: 16 << 20,
    env: { ...process.env, RAYON_RS_NUM_CPUS: '1', RAYON_NUM_THREADS: '1' },
  });
  if (r.status !== 0) return `HF child exited with ${r.status}: ${(r.stderr || '').trim().split('\n').slice(-2).join(' | ')}`;
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

export const tokenizer: Suite = {
  name: 'tokenizer',
  summary: `byte-level BPE: train a ${VOCAB} vocabulary, encode/decode tokens per second, vs HF tokenizers (Rust)`,
  run(ctx: SuiteContext): SuiteResult {
    const passes = Math.max(5, 2 * ctx.rounds);
    ctx.log('tokenizer: reading the corpus');
    const texts = textCorpus({ maxGlosses: GLOSSES });
    const bytes = texts.reduce((a, t) => a + Buffer.byteLength(t), 0);

    ctx.log(`tokenizer: training ${VOCAB} tokens on ${(bytes / 1e6).toFixed(2)} MB, ${ctx.rounds} times`);
    let tok: Tokenizer | null = null;
    const trainMs = timeRuns(ctx.rounds, () => { tok = trainBPE(texts, { vocabSize: VOCAB }); });
    const trained = tok! as Tokenizer;
    const json = JSON.stringify(trained.toJSON());

    ctx.log('tokenizer: encoding');
    let tokens = 0;
    // One untimed pass so that the JIT has compiled the encoder before anything is timed.
    const warmup = Tokenizer.fromJSON(json);
    for (const t of texts) warmup.encode(t);
    // Cold: a fresh tokenizer each pass, so every distinct word goes through the merge loop once.
    const coldMs: Runs = { wall: [], cpu: [] };
    for (let p = 0; p < passes; p++) {
      const fresh = Tokenizer.fromJSON(json);
      let n = 0;
      const r = timeRuns(1, () => { for (const t of texts) n += fresh.encode(t).length; });
      coldMs.wall.push(r.wall[0]);
      coldMs.cpu.push(r.cpu[0]);
      tokens = n;
    }
    // Warm: the same tokenizer again, words come from the cache.
    const warmMs = timeRuns(passes, () => { for (const t of texts) trained.encode(t); });
    const encoded = texts.map((t) => trained.encode(t));
    const decodeMs = timeRuns(passes, () => { for (const ids of encoded) trained.decode(ids); });
    const batchMs = timeRuns(passes, () => {
      for (let i = 0; i < texts.length; i += 256) trained.encodeBatch(texts.slice(i, i + 256), { maxLen: 128, bos: true, eos: true });
    });

    ctx.log('tokenizer: HF tokenizers (Rust) in a child process');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-bench-tok-'));
    const file = path.join(dir, 'tokenizer.json');
    trained.save(file);
    const textsFile = path.join(dir, 'texts.json');
    fs.writeFileSync(textsFile, JSON.stringify(texts));
    const hf = hfRust(file, textsFile, passes);
    fs.rmSync(dir, { recursive: true, force: true });
    const hfOk = typeof hf === 'object';
    if (hfOk && hf.tokens !== tokens) throw new Error(`tokenizer bench: HF produced ${hf.tokens} tokens, modalab ${tokens}; the encoders disagree`);

    const rate = (ms: number[]): number => tokens / (median(ms) / 1e3);
    const row = (label: string, r: Runs, hfMs: number[] | null): string[] => [
      label, fmt(median(r.wall)), fmt(median(r.cpu)), fmt(rate(r.wall) / 1e6), fmt(rate(r.cpu) / 1e6),
      hfMs ? fmt(rate(hfMs) / 1e6) : 'n/a', hfMs ? `${(median(hfMs) / median(r.wall)).toFixed(2)}x` : 'n/a',
      fmtSpread(relSpread(r.wall)),
    ];
    const warmRate = rate(warmMs.wall);
    const goals: Goal[] = [{
      text: `tokenizer: encode at least ${GOAL_TOKENS_PER_S / 1e6}M tokens/s on one core (warm cache)`,
      ratio: warmRate / GOAL_TOKENS_PER_S,
      pass: (x) => x >= 1,
      note: `${fmt(warmRate / 1e6)}M tokens/s`,
    }];
    return {
      title: 'tokenizer: byte-level BPE training and encoding',
      description:
        `Training: trainBPE on textCorpus({ maxGlosses: ${GLOSSES} }) (${texts.length} strings, ${(bytes / 1e6).toFixed(2)} MB) ` +
        `to a ${VOCAB}-token vocabulary, ${ctx.rounds} runs. Encoding: each string on its own, ${tokens} tokens per pass ` +
        `(${(bytes / tokens).toFixed(2)} bytes/token), ${passes} passes; "cold" uses a fresh tokenizer (empty word cache) per pass. ` +
        'Batch: encodeBatch of 256 strings, maxLen 128, with bos/eos. HF is `tokenizers` (Rust, napi binding) on the same ' +
        'tokenizer.json, one thread (RAYON_RS_NUM_CPUS=1), `await encode()` per string and `encodeBatch` of 256, in a child ' +
        'process; its token count is checked equal to ours. Speedup = HF wall time / modalab wall time (above 1: modalab ' +
        'is faster). CPU ms is this process\'s CPU time over the same runs (on a busy machine, closer to the cost).',
      columns: ['work', 'wall ms', 'CPU ms', 'M tok/s (wall)', 'M tok/s (CPU)', 'HF M tok/s (wall)', 'speedup', 'spread'],
      rows: [
        ['train (whole corpus)', fmt(median(trainMs.wall)), fmt(median(trainMs.cpu)), 'n/a', 'n/a', 'n/a', 'n/a', fmtSpread(relSpread(trainMs.wall))],
        row('encode, cold cache', coldMs, null),
        row('encode, warm cache', warmMs, hfOk ? hf.ms : null),
        row('encodeBatch 256 (warm)', batchMs, hfOk ? hf.batchMs : null),
        row('decode', decodeMs, null),
      ],
      goals,
      notes: hfOk ? [] : [`HF side not run: ${hf}`],
      torchSkipped: 'not applicable: a tokenizer has no PyTorch counterpart; HF tokenizers (Rust) is the reference in the table',
    };
  },
};
