/**
 * Instruction data in the JSON-lines format of DESIGN.md: one object per line,
 *   {"instruction": "...", "input_image": "<base64 PNG>", "reference_image": "<base64 PNG>"?, "output": "...",
 *    "task": "vqa", "qtype": "colour", "id": "...", ...}
 * A generator builds records from `shapes` scenes (captioning, VQA of every question type, describing how a
 * reference image differs, same-or-not) and from emoji pairs (captioning, same-or-not); a streaming reader loads
 * any such file with errors that name the file and line.
 *
 * Example:
 *   const recs = await makeInstructionRecords({ source: 'shapes', n: 100, seed: 1 });
 *   await writeInstructions('data/shapes-instruct.jsonl', recs);
 *   const { records, skipped } = await readInstructions('data/shapes-instruct.jsonl', { onError: 'skip' });
 */
import * as fs from 'fs';
import * as path from 'path';
import * as readline from 'readline';
import sharp from 'sharp';
import type { ImageRef, InstructionRecord, OnError, Pair, QA, SkipReport } from './types';
import {
  COLOURS,
  QA_TYPES,
  SHAPES,
  article,
  buildScene,
  describe,
  fits,
  generateScenes,
  groundedCaption,
  holds,
  PLURAL,
  placeObject,
  placeOf,
  referTo,
  renderPng,
  rng,
  streamSeed,
  type Relation,
  type Rng,
  type Scene,
  type SceneObject,
  type Size,
} from './shapes';

export type InstructTask = 'caption' | 'vqa' | 'difference' | 'match';
export const INSTRUCT_TASKS: readonly InstructTask[] = ['caption', 'vqa', 'difference', 'match'];
const TASKS_FOR: Record<'shapes' | 'emoji', readonly InstructTask[]> = {
  shapes: ['caption', 'vqa', 'difference', 'match'],
  emoji: ['caption', 'match'],
};

export interface InstructionOptions {
  source: 'shapes' | 'emoji' | 'both';
  /** Number of records. With 'both', even records come from shapes and odd ones from emoji. */
  n: number;
  seed: number;
  /** Pixel size of every image (square PNG). Default 64. */
  size?: number;
  /** Tasks to cycle through (those that apply to a source). Default all. */
  tasks?: InstructTask[];
  /** Emoji image-text pairs (any ImageRef; `group` is the concept). Required for source 'emoji' or 'both'. */
  emojiPairs?: Pair[];
  /** Which shapes stream the scenes come from, so records can follow the dataset splits. Default 'train'. */
  split?: string;
  /**
   * 'places': the answer to a relation question ("is the circle left of the square?") first says where the two
   * objects are, then the answer: "the circle at the top left, the square on the right, so yes" (positionRationale).
   * 'scene': every VQA answer first describes the whole scene as a grounded caption (each object with its place,
   * `groundedCaption`), then answers: "a small blue square at the top left and a large red circle in the middle,
   * so no". The model then reads its answer off its own description instead of finding a named object among the
   * image tokens (the lookup that fails, docs/instruct.md).
   * 'marks': as 'scene', with "(yes)" after each object the question is about and "(no)" after the others
   * (marksRationale): "a small blue square at the top left (no) and a large green star in the middle (yes), so yes".
   * Default 'none': the one-word answer.
   */
  rationale?: 'none' | 'places' | 'scene' | 'marks';
}

const RELATION_Q = /^is (the .+?) (left of|right of|above|below) (the .+)\?$/;

/**
 * The answer to a shapes relation question with its reason first: "the circle at the top left, the square on the
 * right, so yes" (places as placeOf, thirds of the picture, which separate the two objects along the asked axis in
 * about 98 % of these questions). null when `question` is not a relation question about `objects`.
 */
export function positionRationale(question: string, answer: string, objects: readonly SceneObject[]): string | null {
  const m = RELATION_Q.exec(question);
  if (!m) return null;
  const find = (ref: string) => objects.find((o) => referTo(o, objects) === ref);
  const a = find(m[1]);
  const b = find(m[3]);
  if (!a || !b) return null;
  return `${m[1]} ${placeOf(a)}, ${m[3]} ${placeOf(b)}, so ${answer}`;
}

/** The 'scene' rationale of an answer: the scene's grounded caption, then the answer ("a large red circle in the middle, so no"). */
export function sceneRationale(scene: Scene, answer: string): string {
  return `${groundedCaption(scene.objects)}, so ${answer}`;
}

const COLOUR_Q = /^what colour is (the .+)\?$/;
const SHAPE_Q = /^what shape is (the .+)\?$/;
const COUNT_COLOUR_Q = /^how many (\w+) shapes are there\?$/;
const COUNT_SHAPE_Q = /^how many (\w+) are there\?$/;
const YESNO_Q = /^is there (?:a|an) (?:(small|large) )?(\w+) (\w+)\?$/;
const WHAT_IS_Q = /^what is (left of|right of|above|below) (the .+)\?$/;

/**
 * The objects a shapes question is about: the one it names (colour, shape), the ones it counts, the one that
 * matches "is there a green star?" (none when the answer is no), the two a relation compares, the one that answers
 * "what is left of the circle?". Throws on a question the generator does not ask, or when the objects found do not
 * give `answer` (so a mark never contradicts the answer it leads to).
 */
export function questionTargets(qa: QA, objects: readonly SceneObject[]): SceneObject[] {
  const q = qa.question;
  const answer = qa.answers[0];
  const byRef = (ref: string, parts?: ('size' | 'colour' | 'shape')[]) => objects.filter((o) => referTo(o, objects, parts) === ref);
  let hit: SceneObject[] | null = null;
  let m: RegExpExecArray | null;
  if ((m = COLOUR_Q.exec(q))) hit = byRef(m[1], ['size', 'shape']);
  else if ((m = SHAPE_Q.exec(q))) hit = byRef(m[1], ['size', 'colour']);
  else if (q === 'how many shapes are there?') hit = [...objects];
  else if ((m = COUNT_COLOUR_Q.exec(q))) hit = objects.filter((o) => o.colour === m![1]);
  else if ((m = COUNT_SHAPE_Q.exec(q))) hit = objects.filter((o) => PLURAL[o.shape] === m![1]);
  else if ((m = YESNO_Q.exec(q))) hit = objects.filter((o) => (!m![1] || o.size === m![1]) && o.colour === m![2] && o.shape === m![3]);
  else if ((m = RELATION_Q.exec(q))) hit = objects.filter((o) => referTo(o, objects) === m![1] || referTo(o, objects) === m![3]);
  else if ((m = WHAT_IS_Q.exec(q))) {
    const anchor = byRef(m[2])[0];
    hit = anchor ? objects.filter((o) => o !== anchor && o.shape === answer && holds(m![1] as Relation, o, anchor)) : [];
  }
  if (!hit) throw new Error(`questionTargets: not a shapes question: ${JSON.stringify(q)}`);
  const ok =
    qa.type === 'colour' ? hit.length === 1 && hit[0].colour === answer
    : qa.type === 'shape' ? hit.length === 1 && hit[0].shape === answer
    : qa.type === 'count' ? String(hit.length) === answer
    : qa.type === 'yesno' ? hit.length === (answer === 'yes' ? 1 : 0)
    : RELATION_Q.test(q) ? hit.length === 2
    : hit.length === 1;
  if (!ok) throw new Error(`questionTargets: ${hit.length} objects found for ${JSON.stringify(q)} do not give the answer ${JSON.stringify(answer)}`);
  return hit;
}

/** Splits a 'marks' text around its marks: the odd pieces are the mark words ("yes" or "no"), the even ones the rest. */
export const MARK_SPLIT = /(?<=\()(yes|no)(?=\))/;

/**
 * The 'marks' rationale: the grounded caption with "(yes)" after each object the question is about and "(no)"
 * after the others, then the answer: "is there a green star?" -> "a small blue square at the top left (no) and a
 * large green star in the middle (yes), so yes". Each mark compares one object just written with the question,
 * and the answer reads the marked objects: two local steps instead of one lookup across the description. (From
 * text alone the marks were not learned in 3000 lm steps either: docs/instruct.md, t2.)
 */
export function marksRationale(scene: Scene, qa: QA): string {
  const hit = new Set(questionTargets(qa, scene.objects));
  return `${groundedCaption(scene.objects, (o) => (hit.has(o) ? '(yes)' : '(no)'))}, so ${qa.answers[0]}`;
}

export interface SceneQaText {
  /** The question, then the rationale up to its conclusion: "is there a green star? a small blue square ..., so". */
  prompt: string;
  /** The plain answer ("no"); the document is `${prompt} ${answer}`. */
  answer: string;
  type: string;
}

/**
 * `n` text-only scene questions, deterministic in (seed, stream, n): question `j` is asked of scene `j` of the
 * `shapes` stream `lm/${stream}` (independent of the image stages' streams), cycling through the question types as
 * the VQA records do (vqaQuestion), and written as the words an instruct answer with `rationale: 'scene'` ends in:
 * "is there a green star? a small blue square at the top left and a large red circle in the middle, so no".
 * With `rationale` 'marks' the words are those of a 'marks' answer (marksRationale). A language model pretrained
 * on these learns to read an answer off a scene description, the text lookup the instruct stage could not learn
 * (docs/instruct.md, d1); it never sees a picture here.
 */
export function sceneQaTexts(seed: number, n: number, stream: string, rationale: 'scene' | 'marks' = 'scene'): SceneQaText[] {
  if (!Number.isInteger(n) || n < 0) throw new Error(`sceneQaTexts: n must be a non-negative integer, got ${String(n)}`);
  const out: SceneQaText[] = [];
  // Scenes in chunks (the same scenes as one call: scene j depends only on j), so that only the texts are held.
  for (let first = 0; first < n; first += 10_000) {
    const scenes = generateScenes({ seed, n: Math.min(10_000, n - first), stream: `lm/${stream}`, first });
    scenes.forEach((scene, i) => {
      const j = first + i;
      const qa = vqaQuestion(scene, j, rng(streamSeed(seed, `lm/sceneqa/${stream}`, j)));
      const answer = qa.answers[0];
      const full = `${qa.question} ${rationale === 'marks' ? marksRationale(scene, qa) : sceneRationale(scene, answer)}`;
      out.push({ prompt: full.slice(0, full.length - answer.length - 1), answer, type: qa.type });
    });
  }
  return out;
}

/** The answer part of a generated reply: what follows the last ", so " (a rationale's conclusion), else all of it. */
export function finalAnswer(reply: string): string {
  const k = reply.lastIndexOf(', so ');
  return k < 0 ? reply : reply.slice(k + ', so '.length);
}

// ---------------------------------------------------------------------------------------------------------
// Instruction templates: a few phrasings per task, picked by the record's seeded generator.

const CAPTION_PROMPTS = [
  'Describe the image.',
  'What is in this picture?',
  'Write a short caption for this image.',
  'Describe what you see.',
  'Give a one-line description of the image.',
];
const VQA_PROMPTS = ['{q}', 'Answer the question about the image: {q}', 'Look at the image. {Q}', '{Q} Answer with one word.'];
const DIFF_PROMPTS = [
  'How does the reference image differ from the input image?',
  'Describe what changed between the two images.',
  'What is different in the second image?',
  'Compare the two images and say what changed.',
];
const MATCH_SHAPES_PROMPTS = [
  'Do these two images show the same objects? Answer yes or no.',
  'Are the same objects (shape, colour and size) in both images, wherever they are? yes or no',
  'Apart from the layout and background, are these two pictures the same? Answer yes or no.',
];
const MATCH_EMOJI_PROMPTS = [
  'Do these two images show the same thing? Answer yes or no.',
  'Is the second image the same emoji as the first, drawn by anyone? yes or no',
  'Do both pictures show the same concept? Answer yes or no.',
];

const capitalise = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);
function fill(template: string, q: string): string {
  return template.replace('{q}', q).replace('{Q}', capitalise(q));
}

// ---------------------------------------------------------------------------------------------------------
// Scene edits for the two-image tasks

/**
 * A copy of `scene` with exactly one change, and a sentence saying what changed from `scene` to the copy
 * ("the circle is blue instead of red", "a small green star was added"). Objects are referred to by references
 * that are unique in the original scene. Returns null only when no edit applies (never for 1..4 objects).
 */
export function editScene(scene: Scene, r: Rng, size: number): { scene: Scene; change: string } | null {
  const objs = scene.objects;
  const edits: (() => { objects: SceneObject[]; change: string } | null)[] = [
    // colour: a different colour whose (shape, colour) is still unique; the object named without its colour.
    () => {
      const cands = objs.filter((o) => referTo(o, objs, ['size', 'shape']));
      if (cands.length === 0) return null;
      const o = r.pick(cands);
      const colours = COLOURS.filter((c) => c !== o.colour && !objs.some((p) => p.shape === o.shape && p.colour === c));
      if (colours.length === 0) return null;
      const colour = r.pick(colours);
      return { objects: objs.map((p) => (p === o ? { ...p, colour } : p)), change: `${referTo(o, objs, ['size', 'shape'])} is ${colour} instead of ${o.colour}` };
    },
    // shape: named by colour (and size) only.
    () => {
      const cands = objs.filter((o) => referTo(o, objs, ['size', 'colour']));
      if (cands.length === 0) return null;
      const o = r.pick(cands);
      const shapes = SHAPES.filter((s) => s !== o.shape && !objs.some((p) => p.shape === s && p.colour === o.colour));
      if (shapes.length === 0) return null;
      const shape = r.pick(shapes);
      return {
        objects: objs.map((p) => (p === o ? { ...p, shape } : p)),
        change: `${referTo(o, objs, ['size', 'colour'])} is ${article(shape)} ${shape} instead of ${article(o.shape)} ${o.shape}`,
      };
    },
    // size: only when the resized box still keeps clear of the others.
    () => {
      const cands = objs.filter((o) => {
        const other: Size = o.size === 'small' ? 'large' : 'small';
        return fits(o.x, o.y, other, objs.filter((p) => p !== o));
      });
      if (cands.length === 0) return null;
      const o = r.pick(cands);
      const other: Size = o.size === 'small' ? 'large' : 'small';
      const ref = referTo(o, objs, ['colour', 'shape'])!; // (shape, colour) is unique in a scene
      return { objects: objs.map((p) => (p === o ? { ...p, size: other } : p)), change: `${ref} is ${other} instead of ${o.size}` };
    },
    // add: a new (shape, colour) combination in a free place.
    () => {
      if (objs.length >= 4) return null;
      const shape = r.pick(SHAPES);
      const colours = COLOURS.filter((c) => !objs.some((p) => p.shape === shape && p.colour === c));
      const colour = r.pick(colours);
      let sz: Size = r.coin() ? 'small' : 'large';
      let at = placeObject(sz, objs, r);
      if (!at && sz === 'large') {
        sz = 'small';
        at = placeObject(sz, objs, r);
      }
      if (!at) return null;
      const o: SceneObject = { shape, colour, size: sz, ...at };
      return { objects: [...objs, o], change: `${describe(o)} was added` };
    },
    // remove: any object of a scene with two or more.
    () => {
      if (objs.length < 2) return null;
      const o = r.pick(objs);
      return { objects: objs.filter((p) => p !== o), change: `${referTo(o, objs, ['colour', 'shape'])} was removed` };
    },
  ];
  // Try the edits in a seeded order; the first that applies wins.
  const order = edits.map((_, i) => i);
  for (let k = order.length - 1; k > 0; k--) {
    const j = r.int(k + 1);
    [order[k], order[j]] = [order[j], order[k]];
  }
  for (const i of order) {
    const e = edits[i]();
    if (e) return { scene: buildScene(`${scene.id}-edit`, e.objects, scene.background, size, r), change: e.change };
  }
  return null;
}

/** The same objects (shape, colour, size) at new positions; same background kind and tint, new pattern phase. */
function relayout(scene: Scene, r: Rng, size: number): Scene {
  for (;;) {
    const objects: SceneObject[] = [];
    for (const o of scene.objects) {
      const at = placeObject(o.size, objects, r);
      if (!at) break;
      objects.push({ ...o, ...at });
    }
    if (objects.length === scene.objects.length) {
      const bg = { ...scene.background, angle: r.int(180), noiseSeed: r.int(0x7fffffff) };
      return buildScene(`${scene.id}-relayout`, objects, bg, size, r);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Images

const b64 = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');

/** PNG bytes of any ImageRef at `size` x `size` (fit inside, transparency on white). Errors name the image. */
async function refToPng(ref: ImageRef, size: number, what: string): Promise<Uint8Array> {
  let input: Buffer;
  if (ref.kind === 'file') {
    try {
      input = await fs.promises.readFile(ref.path);
    } catch (e) {
      throw new Error(`makeInstructionRecords: cannot read image of ${what} at ${ref.path}: ${(e as Error).message}`);
    }
  } else if (ref.kind === 'bytes') input = Buffer.from(ref.bytes.buffer, ref.bytes.byteOffset, ref.bytes.byteLength);
  else input = Buffer.from(ref.svg);
  try {
    const out = await sharp(input)
      .resize(size, size, { fit: 'contain', background: { r: 255, g: 255, b: 255, alpha: 1 } })
      .flatten({ background: '#ffffff' })
      .png()
      .toBuffer();
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  } catch (e) {
    throw new Error(`makeInstructionRecords: cannot decode image of ${what}${ref.kind === 'file' ? ` (${ref.path})` : ''}: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Generator

/** The seeded generator of record `j` of makeInstructionRecords (its question, prompt and edits draw from it). */
export function recordRng(seed: number, source: 'shapes' | 'emoji', split: string, j: number): Rng {
  return rng(streamSeed(seed, `instruct/${source}/${split}`, j));
}

/**
 * The question of the `t`-th VQA record of a stream, on `scene`: one of the scene's questions of type
 * QA_TYPES[t mod 5], or of the next type the scene has (one-object scenes have no position question), drawn with
 * `r`. What makeInstructionRecords asks, and what the instruct stage's pool sizing (vqaPoolSize) walks.
 */
export function vqaQuestion(scene: Scene, t: number, r: Rng): QA {
  for (let d = 0; d < QA_TYPES.length; d++) {
    const want = QA_TYPES[(t + d) % QA_TYPES.length];
    const cands = scene.qa.filter((q) => q.type === want);
    if (cands.length > 0) return r.pick(cands);
  }
  // Every scene has colour, count and yesno questions.
  throw new Error(`vqaQuestion: scene ${scene.id} has no questions`);
}

/**
 * `n` instruction records, deterministic in (seed, source, n, size, tasks, split, emojiPairs). Tasks are cycled
 * in order so they come in equal shares; VQA records cycle through the question types (colour, shape, count,
 * position, yesno), falling back to the next type a scene has; match records alternate yes and no.
 */
export async function makeInstructionRecords(opts: InstructionOptions): Promise<InstructionRecord[]> {
  const where = 'makeInstructionRecords';
  if (!opts || !['shapes', 'emoji', 'both'].includes(opts.source)) throw new Error(`${where}: source must be 'shapes', 'emoji' or 'both', got ${String(opts?.source)}`);
  if (!Number.isInteger(opts.n) || opts.n < 0) throw new Error(`${where}: n must be a non-negative integer, got ${String(opts.n)}`);
  if (!Number.isInteger(opts.seed)) throw new Error(`${where}: seed must be an integer, got ${String(opts.seed)}`);
  const size = opts.size ?? 64;
  if (!Number.isInteger(size) || size < 8 || size > 4096) throw new Error(`${where}: size must be an integer in 8..4096, got ${String(size)}`);
  const tasks = opts.tasks ?? [...INSTRUCT_TASKS];
  const unknown = tasks.filter((t) => !INSTRUCT_TASKS.includes(t));
  if (tasks.length === 0 || unknown.length > 0) throw new Error(`${where}: tasks must be a non-empty list of ${INSTRUCT_TASKS.join('|')}, got ${JSON.stringify(tasks)}`);
  const sources: ('shapes' | 'emoji')[] = opts.source === 'both' ? ['shapes', 'emoji'] : [opts.source];
  const applicable = {
    shapes: TASKS_FOR.shapes.filter((t) => tasks.includes(t)),
    emoji: TASKS_FOR.emoji.filter((t) => tasks.includes(t)),
  };
  for (const s of sources) {
    if (applicable[s].length === 0) throw new Error(`${where}: none of the tasks ${JSON.stringify(tasks)} applies to ${s} (it supports ${TASKS_FOR[s].join(', ')})`);
  }
  const pairs = opts.emojiPairs ?? [];
  if (sources.includes('emoji') && pairs.length === 0) throw new Error(`${where}: source '${opts.source}' needs emojiPairs (a non-empty Pair[])`);

  const sourceOf = (j: number) => sources[j % sources.length];
  const nShapes = Array.from({ length: opts.n }, (_, j) => sourceOf(j)).filter((s) => s === 'shapes').length;
  const split = opts.split ?? 'train';
  const scenes = nShapes > 0 ? generateScenes({ seed: opts.seed, n: nShapes, stream: split, size }) : [];

  // Emoji groups, for same / different pairs.
  const byGroup = new Map<string, Pair[]>();
  for (const p of pairs) byGroup.set(p.group, [...(byGroup.get(p.group) ?? []), p]);
  const withPartner = pairs.filter((p) => byGroup.get(p.group)!.length > 1);

  const counters = { shapes: 0, emoji: 0 };
  const taskCount = new Map<string, number>();
  const out: InstructionRecord[] = [];
  for (let j = 0; j < opts.n; j++) {
    const source = sourceOf(j);
    const k = counters[source]++;
    const task = applicable[source][k % applicable[source].length];
    const t = taskCount.get(`${source}/${task}`) ?? 0;
    taskCount.set(`${source}/${task}`, t + 1);
    const r = recordRng(opts.seed, source, split, j);
    const id = `${source}-${opts.seed}-${split}-${j}`;

    if (source === 'shapes') {
      const scene = scenes[k];
      const input = () => renderPng(scene, size).then(b64);
      if (task === 'caption') {
        out.push({ instruction: r.pick(CAPTION_PROMPTS), input_image: await input(), output: scene.caption, task, source, id, scene: scene.id });
      } else if (task === 'vqa') {
        const qa = vqaQuestion(scene, t, r);
        const reasoned =
          opts.rationale === 'places' && qa.type === 'position' ? positionRationale(qa.question, qa.answers[0], scene.objects)
          : opts.rationale === 'scene' ? sceneRationale(scene, qa.answers[0])
          : opts.rationale === 'marks' ? marksRationale(scene, qa)
          : null;
        out.push({
          instruction: fill(r.pick(VQA_PROMPTS), qa.question),
          input_image: await input(),
          output: reasoned ?? qa.answers[0],
          task,
          qtype: qa.type,
          source,
          id,
          scene: scene.id,
        });
      } else if (task === 'difference') {
        const edit = editScene(scene, r, size)!;
        out.push({
          instruction: r.pick(DIFF_PROMPTS),
          input_image: await input(),
          reference_image: b64(await renderPng(edit.scene, size)),
          output: edit.change,
          task,
          source,
          id,
          scene: scene.id,
        });
      } else {
        // match: same objects re-laid out ("yes"), or re-laid out with one attribute changed ("no").
        const same = t % 2 === 0;
        let other = relayout(scene, r, size);
        if (!same) {
          const edit = editScene(other, r, size)!;
          other = edit.scene;
        }
        out.push({
          instruction: r.pick(MATCH_SHAPES_PROMPTS),
          input_image: await input(),
          reference_image: b64(await renderPng(other, size)),
          output: same ? 'yes' : 'no',
          task,
          source,
          id,
          scene: scene.id,
        });
      }
    } else {
      if (task === 'caption') {
        const p = r.pick(pairs);
        out.push({ instruction: r.pick(CAPTION_PROMPTS), input_image: b64(await refToPng(p.image, size, `pair ${p.id}`)), output: p.text, task, source, id, group: p.group });
      } else {
        // match: the same concept by another vendor (or the same image when no group has two pairs) vs another concept.
        const same = t % 2 === 0;
        let a: Pair;
        let b: Pair;
        if (same) {
          a = withPartner.length > 0 ? r.pick(withPartner) : r.pick(pairs);
          const partners = byGroup.get(a.group)!.filter((p) => p.id !== a.id);
          b = partners.length > 0 ? r.pick(partners) : a;
        } else {
          a = r.pick(pairs);
          const others = pairs.filter((p) => p.group !== a.group);
          if (others.length === 0) throw new Error(`${where}: emoji match needs pairs of at least two groups`);
          b = r.pick(others);
        }
        out.push({
          instruction: r.pick(MATCH_EMOJI_PROMPTS),
          input_image: b64(await refToPng(a.image, size, `pair ${a.id}`)),
          reference_image: b64(await refToPng(b.image, size, `pair ${b.id}`)),
          output: same ? 'yes' : 'no',
          task,
          source,
          id,
          group: a.group,
          reference_group: b.group,
        });
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Validation, writing and reading

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Strict base64: the standard alphabet, padded, no whitespace, and canonical (re-encodes to itself). */
export function isStrictBase64(s: string): boolean {
  if (s.length === 0 || s.length % 4 !== 0 || !BASE64.test(s)) return false;
  return Buffer.from(s, 'base64').toString('base64') === s;
}

const IMAGE_KEYS = ['input_image', 'reference_image'] as const;

/** Why `rec` is not a valid record (naming the key), or null. Image bytes are not decoded here. */
export function recordProblem(rec: unknown): string | null {
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) return `expected a JSON object, got ${Array.isArray(rec) ? 'an array' : rec === null ? 'null' : typeof rec}`;
  const o = rec as Record<string, unknown>;
  for (const key of ['instruction', 'output']) {
    if (!(key in o)) return `missing "${key}"`;
    if (typeof o[key] !== 'string') return `"${key}" must be a string, got ${o[key] === null ? 'null' : typeof o[key]}`;
    if ((o[key] as string).trim() === '') return `"${key}" is empty`;
  }
  for (const key of IMAGE_KEYS) {
    if (!(key in o) || o[key] === undefined) continue;
    if (typeof o[key] !== 'string') return `"${key}" must be a base64 string, got ${o[key] === null ? 'null' : typeof o[key]}`;
    if (!isStrictBase64(o[key] as string)) return `"${key}" is not valid base64`;
  }
  return null;
}

/** Why `bytes` is not a decodable PNG or JPEG, or null: magic bytes, sharp metadata, then a full decode. */
export async function imageProblem(bytes: Uint8Array): Promise<string | null> {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const png = b.length >= 8 && b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  const jpeg = b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
  if (!png && !jpeg) return 'is not a PNG or JPEG (bad magic bytes)';
  try {
    const meta = await sharp(b).metadata();
    if (meta.format !== (png ? 'png' : 'jpeg') || !meta.width || !meta.height) return `has unreadable ${png ? 'PNG' : 'JPEG'} metadata`;
    // Metadata only reads the header; a truncated body shows up when the pixels are decoded.
    await sharp(b).raw().toBuffer();
  } catch (e) {
    return `is not a decodable ${png ? 'PNG' : 'JPEG'} (${(e as Error).message})`;
  }
  return null;
}

/** The record with the four format keys first, then the extra fields in their order. */
function ordered(rec: InstructionRecord): Record<string, unknown> {
  const out: Record<string, unknown> = { instruction: rec.instruction };
  if (rec.input_image !== undefined) out.input_image = rec.input_image;
  if (rec.reference_image !== undefined) out.reference_image = rec.reference_image;
  out.output = rec.output;
  for (const [k, v] of Object.entries(rec)) if (!(k in out) && v !== undefined) out[k] = v;
  return out;
}

let tmpCounter = 0;

/**
 * Writes records as JSON lines, atomically: into a temporary file beside `file`, then renamed over it, so a
 * reader never sees a half-written file. Every record is checked first; a bad one throws naming its index.
 */
export async function writeInstructions(file: string, records: readonly InstructionRecord[]): Promise<void> {
  records.forEach((rec, i) => {
    const why = recordProblem(rec);
    if (why) throw new Error(`writeInstructions(${file}): record ${i}: ${why}`);
  });
  await fs.promises.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${Date.now().toString(36)}-${tmpCounter++}`;
  const handle = await fs.promises.open(tmp, 'w');
  try {
    const CHUNK = 256;
    for (let i = 0; i < records.length; i += CHUNK) {
      const text = records.slice(i, i + CHUNK).map((r) => JSON.stringify(ordered(r)) + '\n').join('');
      await handle.write(text);
    }
    await handle.sync();
    await handle.close();
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await handle.close().catch(() => undefined);
    await fs.promises.rm(tmp, { force: true });
    throw e;
  }
}

export interface ReadInstructionsOptions {
  /** 'throw' (default): the first bad line throws. 'skip': bad lines are skipped and counted. */
  onError?: OnError;
  /** Also decode every image (PNG/JPEG magic bytes, sharp metadata, pixels). Default false. */
  validateImages?: boolean;
}

/**
 * Reads a JSON-lines instruction file line by line. Blank lines (and a trailing newline, CRLF line ends, a UTF-8
 * byte-order mark) are accepted. A bad line - malformed JSON, a missing, empty or non-string "instruction" or
 * "output", a non-string or non-base64 image, or (with validateImages) bytes that are not a decodable PNG/JPEG -
 * throws an Error "<file>:<line>: <reason>", or with onError 'skip' is skipped and counted in `skipped`.
 * A file that cannot be opened always throws.
 */
export async function readInstructions(
  file: string,
  opts: ReadInstructionsOptions = {},
): Promise<{ records: InstructionRecord[]; skipped: SkipReport }> {
  const onError = opts.onError ?? 'throw';
  if (onError !== 'throw' && onError !== 'skip') throw new Error(`readInstructions: onError must be 'throw' or 'skip', got ${String(onError)}`);
  try {
    const st = await fs.promises.stat(file);
    if (!st.isFile()) throw new Error('not a regular file');
  } catch (e) {
    throw new Error(`readInstructions: cannot read ${file}: ${(e as Error).message}`);
  }
  const records: InstructionRecord[] = [];
  const skipped: SkipReport = { skipped: 0, reasons: [] };
  const stream = fs.createReadStream(file, { encoding: 'utf8' });
  const lines = readline.createInterface({ input: stream, crlfDelay: Infinity });
  let lineNo = 0;
  try {
    for await (const raw of lines) {
      lineNo++;
      const line = lineNo === 1 ? raw.replace(/^\uFEFF/, '') : raw;
      if (line.trim() === '') continue;
      let why: string | null = null;
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch (e) {
        why = `malformed JSON (${(e as Error).message})`;
      }
      if (!why) why = recordProblem(rec);
      if (!why && opts.validateImages) {
        for (const key of IMAGE_KEYS) {
          const v = (rec as Record<string, unknown>)[key];
          if (typeof v !== 'string') continue;
          const bad = await imageProblem(Buffer.from(v, 'base64'));
          if (bad) {
            why = `"${key}" ${bad}`;
            break;
          }
        }
      }
      if (why) {
        const msg = `${file}:${lineNo}: ${why}`;
        if (onError === 'throw') throw new Error(msg);
        skipped.skipped++;
        if (skipped.reasons.length < 10) skipped.reasons.push(msg);
        continue;
      }
      records.push(rec as InstructionRecord);
    }
  } finally {
    lines.close();
    stream.destroy();
  }
  return { records, skipped };
}

/** The record's images as bytes refs for the image pipeline. Throws when the record has no valid input image. */
export function recordImages(rec: InstructionRecord): { input: ImageRef; reference?: ImageRef } {
  const name = typeof rec.id === 'string' ? rec.id : undefined;
  const decode = (key: 'input_image' | 'reference_image'): ImageRef => {
    const v = rec[key];
    if (typeof v !== 'string' || !isStrictBase64(v)) throw new Error(`recordImages${name ? `(${name})` : ''}: "${key}" is missing or not valid base64`);
    const buf = Buffer.from(v, 'base64');
    return { kind: 'bytes', bytes: new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), name: name ? `${name}/${key}` : key };
  };
  const out: { input: ImageRef; reference?: ImageRef } = { input: decode('input_image') };
  if (rec.reference_image !== undefined) out.reference = decode('reference_image');
  return out;
}
