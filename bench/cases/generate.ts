/**
 * generate: tokens per second of GPT generation with and without the KV cache (src/experiments/models/generate.ts).
 *
 * Model: GPT width 128, 4 layers, 4 heads, context 128, vocabulary 1024 (the lm stage's default shape), random
 * weights (speed does not depend on what the weights say). A prompt of 8 tokens, 64 new tokens, greedy, no eos,
 * batch 1 and 8. Without the cache every step re-runs the whole sequence (8..71 positions); with it, a step runs
 * one position per row against the cached keys and values. Each round times one call per (batch, cache) pair,
 * alternating, after one untimed warm-up call each; a figure is the median over rounds. Both paths must produce
 * the same tokens (checked). No PyTorch side: this compares two modalab paths.
 * Goal: the cache pays for itself at batch 1, stated as at least 2x the tokens/s of recomputation.
 */
import * as ml from '../../src/index';
import { GPT } from '../../src/experiments/models/gpt';
import { generate } from '../../src/experiments/models/generate';
import { Goal, Suite, SuiteContext, SuiteResult, fmt, fmtSpread, median, relSpread } from '../harness';

const SHAPE = { vocabSize: 1024, contextLength: 128, width: 128, layers: 4, heads: 4 };
const PROMPT = 8;
const NEW = 64;
const BATCHES = [1, 8];
const GOAL_SPEEDUP = 2;

const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

export const generateSuite: Suite = {
  name: 'generate',
  summary: `GPT generation tokens/s with and without the KV cache (width ${SHAPE.width}, ${SHAPE.layers} layers, ${NEW} new tokens)`,
  run(ctx: SuiteContext): SuiteResult {
    ml.manualSeed(0);
    const model = new GPT(SHAPE);
    model.eval();
    const rounds = Math.max(3, ctx.rounds);
    const times = new Map<string, number[]>();
    const key = (B: number, cache: boolean): string => `${B}:${cache}`;
    const prompts = (B: number): number[][] => Array.from({ length: B }, (_, b) => Array.from({ length: PROMPT }, (_, t) => (7 * b + 13 * t + 1) % SHAPE.vocabSize));
    const call = (B: number, useCache: boolean): number[][] => generate(model, prompts(B), { maxNewTokens: NEW, greedy: true, useCache }).tokens;
    try {
      for (const B of BATCHES) {
        ctx.log(`generate: batch ${B}, warm-up and equality check`);
        const a = call(B, true);
        const b = call(B, false);
        if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`generate bench: cached and uncached tokens differ at batch ${B}`);
        if (a.some((r) => r.length !== NEW)) throw new Error('generate bench: a row stopped early');
      }
      for (let r = 0; r < rounds; r++) {
        ctx.log(`generate: round ${r + 1}/${rounds}`);
        for (const B of BATCHES) {
          for (const cache of [true, false]) {
            const t0 = nowMs();
            call(B, cache);
            const ms = nowMs() - t0;
            const k = key(B, cache);
            times.set(k, [...(times.get(k) ?? []), ms]);
          }
        }
      }
    } finally {
      model.dispose();
    }
    const rate = (B: number, cache: boolean): number => (B * NEW * 1000) / median(times.get(key(B, cache))!);
    const rows: string[][] = [];
    for (const B of BATCHES) {
      for (const cache of [true, false]) {
        const ms = times.get(key(B, cache))!;
        rows.push([String(B), cache ? 'KV cache' : 'recompute', fmt(median(ms)), fmt(rate(B, cache)),
          cache ? `${(rate(B, true) / rate(B, false)).toFixed(2)}x` : '1x', fmtSpread(relSpread(ms))]);
      }
    }
    const speedup1 = rate(1, true) / rate(1, false);
    const goals: Goal[] = [{
      text: `generate: the KV cache gives at least ${GOAL_SPEEDUP}x the tokens/s of recomputation at batch 1 (${NEW} new tokens)`,
      ratio: speedup1 / GOAL_SPEEDUP,
      pass: (x) => x >= 1,
      note: `${speedup1.toFixed(2)}x; batch 8: ${(rate(8, true) / rate(8, false)).toFixed(2)}x`,
    }];
    return {
      title: 'generate: GPT decoding with and without the KV cache',
      description:
        `GPT ${JSON.stringify(SHAPE)}, random weights, eval mode. Prompt ${PROMPT} tokens, ${NEW} new tokens, greedy, no eos. ` +
        `One call per (batch, path) per round, ${rounds} rounds after a warm-up call each; ms is the median wall time of one ` +
        `generate() call, tokens/s = batch x ${NEW} / that. "recompute" re-runs the whole sequence at every step (useCache: false). ` +
        'The two paths are checked to produce identical tokens before timing.',
      columns: ['batch', 'path', 'ms per call', 'tokens/s', 'speedup', 'spread'],
      rows,
      goals,
      notes: [],
      torchSkipped: 'not applicable: the comparison is between two modalab decoding paths',
    };
  },
};
