/**
 * `modalab chat --image scene.png "what colour is the circle?"`: answers a question about one image (two for the
 * two-image tasks: `--image a.png --image b.png`) with a trained instruct checkpoint.
 *
 *   modalab chat --image F [--image F2] ["question"] [--checkpoint <file | instruct run id>] [--db FILE]
 *                [--max-new N] [--temperature T] [--seed S]
 *
 * Without a question it reads questions line by line from standard input (a `> ` prompt on a terminal), answering
 * each about the same image(s). The checkpoint defaults to the latest finished instruct run in the db.
 * `--scene N` instead of --image draws shapes scene N (a stream no stage trains on), saves it as
 * runs/scenes/scene-N.png, and prints what is in it and a few questions with their true answers.
 */
import { takeDeviceFlag } from './device';
import * as fs from 'fs';
import * as path from 'path';
import * as readline from 'readline';

export interface ChatArgs {
  images: string[];
  /** A shapes scene to draw and ask about (instead of --image), or null. */
  scene: number | null;
  question: string | null;
  checkpoint: string | null;
  db: string | undefined;
  maxNew: number;
  temperature: number;
  seed: number;
}

export const CHAT_USAGE = 'usage: modalab chat (--image F [--image F2] | --scene N) ["question"] [--checkpoint <file | instruct run id>] [--db FILE] [--max-new N] [--temperature T] [--seed S]';

export function parseChatArgs(argv: string[]): ChatArgs {
  const a: ChatArgs = { images: [], scene: null, question: null, checkpoint: null, db: undefined, maxNew: 24, temperature: 0, seed: 0 };
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    const eq = x.startsWith('--') ? x.indexOf('=') : -1;
    const flag = eq > 0 ? x.slice(0, eq) : x;
    const value = (): string => {
      const v = eq > 0 ? x.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new Error(`chat: ${flag} needs a value\n${CHAT_USAGE}`);
      return v;
    };
    const num = (min: number, max: number, int: boolean): number => {
      const v = value();
      const n = Number(v);
      if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max || (int && !Number.isInteger(n))) {
        throw new Error(`chat: ${flag} must be ${int ? 'an integer' : 'a number'} in [${min}, ${max}], got ${JSON.stringify(v)}`);
      }
      return n;
    };
    switch (flag) {
      case '--image': a.images.push(value()); break;
      case '--scene': a.scene = num(0, 2 ** 31 - 1, true); break;
      case '--checkpoint': a.checkpoint = value(); break;
      case '--db': a.db = value(); break;
      case '--max-new': a.maxNew = num(1, 512, true); break;
      case '--temperature': a.temperature = num(0, 100, false); break;
      case '--seed': a.seed = num(0, 2 ** 31 - 1, true); break;
      case '--help': case '-h': throw new Error(CHAT_USAGE);
      default:
        if (x.startsWith('--')) throw new Error(`chat: unknown argument ${JSON.stringify(x)}\n${CHAT_USAGE}`);
        positional.push(x);
    }
  }
  if (a.scene !== null && a.images.length > 0) throw new Error('chat: give either --image or --scene, not both');
  if (a.images.length === 0 && a.scene === null) throw new Error(`chat: give the image to ask about with --image FILE (or --scene N for a drawn shapes scene)\n${CHAT_USAGE}`);
  if (a.images.length > 2) throw new Error(`chat: at most two --image (the two-image tasks), got ${a.images.length}`);
  if (positional.length > 1) throw new Error(`chat: one question at a time (quote it), got ${positional.length} words: ${JSON.stringify(positional.join(' '))}`);
  a.question = positional[0] ?? null;
  if (a.question !== null && a.question.trim() === '') throw new Error('chat: the question is empty');
  for (const f of a.images) {
    if (!fs.existsSync(f)) throw new Error(`chat: --image ${f}: no such file`);
    if (!fs.statSync(f).isFile()) throw new Error(`chat: --image ${f} is not a file`);
  }
  return a;
}

/** The instruct checkpoint to use: --checkpoint (a file, or a run id in the db), else the latest finished instruct run. */
export function chatCheckpoint(a: ChatArgs): string {
  const { Tracker } = require('../experiments/tracking') as typeof import('../experiments/tracking');
  if (a.checkpoint !== null && !/^\d+$/.test(a.checkpoint)) {
    if (!fs.existsSync(a.checkpoint)) throw new Error(`chat: --checkpoint ${a.checkpoint}: no such file`);
    return a.checkpoint;
  }
  const t = Tracker.open(a.db);
  try {
    if (a.checkpoint !== null) {
      const run = t.getRun(Number(a.checkpoint));
      if (run.stage !== 'instruct') throw new Error(`chat: run ${run.id} is a ${run.stage ?? 'stage-less'} run, not an instruct run`);
      const arts = t.artifacts(run.id).filter((x) => x.kind === 'checkpoint' && fs.existsSync(x.path));
      if (arts.length === 0) throw new Error(`chat: run ${run.id} has no checkpoint on disk`);
      return arts[arts.length - 1].path;
    }
    const { findStageCheckpoint } = require('../experiments/stages/run') as typeof import('../experiments/stages/run');
    const found = findStageCheckpoint(t, 'instruct', '');
    if (found) return found.file;
    throw new Error(`chat: ${t.file} has no finished instruct run with a checkpoint; train one (modalab train --stage all --preset quick) or give --checkpoint`);
  } finally {
    t.close();
  }
}

/**
 * Draws shapes scene `n` (stream 'chat', which no stage trains or evaluates on) at 128 px, writes it to
 * `<dir>/scene-<n>.png` (temp file + rename) and returns the path, its caption and a few questions with answers.
 */
export async function drawScene(n: number, dir: string): Promise<{ file: string; caption: string; questions: Array<[string, string]> }> {
  const { generateScenes, renderPng } = require('../experiments/data/shapes') as typeof import('../experiments/data/shapes');
  const scene = generateScenes({ seed: n, n: 1, stream: 'chat', size: 128 })[0];
  const png = await renderPng(scene, 128);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `scene-${n}.png`);
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, png);
  fs.renameSync(tmp, file);
  const seen = new Set<string>();
  const questions: Array<[string, string]> = [];
  for (const q of scene.qa) {
    if (seen.has(q.type)) continue;
    seen.add(q.type);
    questions.push([q.question, q.answers[0]]);
  }
  return { file, caption: scene.caption, questions };
}

export async function runChat(argv: string[]): Promise<number> {
  const a = parseChatArgs(takeDeviceFlag(argv, 'chat'));
  const file = chatCheckpoint(a);
  if (a.scene !== null) {
    const { DEFAULT_DB } = require('../experiments/tracking') as typeof import('../experiments/tracking');
    const s = await drawScene(a.scene, path.join(path.dirname(a.db ?? DEFAULT_DB), 'scenes'));
    a.images = [s.file];
    process.stderr.write(`scene ${a.scene}: ${s.caption}\n  saved to ${path.relative(process.cwd(), s.file)}\n  for example:\n`);
    for (const [q, ans] of s.questions) process.stderr.write(`    ${q}  (true answer: ${ans})\n`);
  }
  const { loadInstruct } = require('../experiments/stages/instruct') as typeof import('../experiments/stages/instruct');
  const model = loadInstruct(file);
  const images = a.images.map((p) => ({ kind: 'file' as const, path: path.resolve(p) }));
  const ask = async (q: string): Promise<string> => model.answer(images, q, {
    maxNewTokens: a.maxNew, greedy: a.temperature === 0, temperature: a.temperature || 1, seed: a.seed,
  });
  try {
    if (a.question !== null) {
      process.stdout.write(`${await ask(a.question)}\n`);
      return 0;
    }
    const tty = process.stdin.isTTY === true;
    if (tty) process.stderr.write(`chat: ${a.images.join(', ')} with ${path.relative(process.cwd(), file)}; one question per line, Ctrl-D to end\n`);
    const rl = readline.createInterface({ input: process.stdin, output: tty ? process.stderr : undefined, terminal: tty, prompt: '> ' });
    if (tty) rl.prompt();
    for await (const line of rl) {
      const q = line.trim();
      if (q !== '') process.stdout.write(`${await ask(q)}\n`);
      if (tty) rl.prompt();
    }
    return 0;
  } finally {
    model.dispose();
  }
}
