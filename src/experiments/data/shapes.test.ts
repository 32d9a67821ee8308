/**
 * shapes: determinism by seed, every answer recomputed from the scene's objects by an independent checker (which
 * also proves every reference picks out exactly one object), yes/no balance, captions that name every object,
 * disjoint splits, held-out combinations, and SVG that sharp renders at the right size and colours.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import sharp from 'sharp';
import { COLOURS, SHAPES, QA_TYPES, describe, generateScenes, groundedCaption, majorityBaseline, placeOf, renderPng, reverseRelation, shapesDataset, type Scene, type SceneObject } from './shapes';

const SIZES = ['small', 'large'];
const PLURALS: Record<string, string> = { circles: 'circle', squares: 'square', triangles: 'triangle', stars: 'star', crosses: 'cross' };
const CLEAR = 20; // the documented minimum centre distance for a stated relation

// ---------------------------------------------------------------------------------------------------------
// An independent checker: parses each question and answers it from the objects alone.

/** The one object a reference like "the large red circle" / "the red object" denotes; fails unless exactly one. */
function resolve(ref: string, objects: SceneObject[], question: string): SceneObject {
  const words = ref.replace(/^the /, '').split(' ');
  const noun = words.pop()!;
  const size = words.find((w) => SIZES.includes(w));
  const colour = words.find((w) => (COLOURS as readonly string[]).includes(w));
  assert.equal(words.length, (size ? 1 : 0) + (colour ? 1 : 0), `unknown words in reference "${ref}" of "${question}"`);
  const hits = objects.filter(
    (o) => (noun === 'object' || o.shape === noun) && (!size || o.size === size) && (!colour || o.colour === colour),
  );
  assert.equal(hits.length, 1, `"${ref}" in "${question}" denotes ${hits.length} objects`);
  return hits[0];
}

/** Signed distance by which a lies in direction rel of b. */
function offset(rel: string, a: SceneObject, b: SceneObject): number {
  return rel === 'left of' ? b.x - a.x : rel === 'right of' ? a.x - b.x : rel === 'above' ? b.y - a.y : a.y - b.y;
}

function answer(question: string, objects: SceneObject[]): string {
  let m: RegExpMatchArray | null;
  if ((m = question.match(/^what colour is (the .+)\?$/))) {
    assert.doesNotMatch(m[1], new RegExp(`\\b(${COLOURS.join('|')})\\b`), 'a colour question names the colour');
    return resolve(m[1], objects, question).colour;
  }
  if ((m = question.match(/^what shape is (the .+ object)\?$/))) return resolve(m[1], objects, question).shape;
  if (question === 'how many shapes are there?') return String(objects.length);
  if ((m = question.match(/^how many (\w+) shapes are there\?$/))) return String(objects.filter((o) => o.colour === m![1]).length);
  if ((m = question.match(/^how many (\w+) are there\?$/))) {
    assert.ok(PLURALS[m[1]], `unknown plural in "${question}"`);
    return String(objects.filter((o) => o.shape === PLURALS[m![1]]).length);
  }
  if ((m = question.match(/^is (the .+?) (left of|right of|above|below) (the .+)\?$/))) {
    const a = resolve(m[1], objects, question);
    const b = resolve(m[3], objects, question);
    const d = offset(m[2], a, b);
    assert.ok(Math.abs(d) >= CLEAR, `"${question}" asks about an unclear relation (${d})`);
    return d > 0 ? 'yes' : 'no';
  }
  if ((m = question.match(/^what is (left of|right of|above|below) (the .+)\?$/))) {
    const anchor = resolve(m[2], objects, question);
    const others = objects.filter((o) => o !== anchor);
    const clear = others.filter((o) => offset(m![1], o, anchor) >= CLEAR);
    const anySide = others.filter((o) => offset(m![1], o, anchor) > 0);
    assert.equal(clear.length, 1, `"${question}": ${clear.length} objects clearly there`);
    assert.equal(anySide.length, 1, `"${question}": another object is slightly there too`);
    return clear[0].shape;
  }
  if ((m = question.match(/^is there (a|an) (?:(small|large) )?(\w+) (\w+)\?$/))) {
    assert.equal(m[1], /^[aeiou]/.test(m[2] ?? m[3]) ? 'an' : 'a', `article in "${question}"`);
    const hit = objects.some((o) => o.colour === m![3] && o.shape === m![4] && (!m![2] || o.size === m![2]));
    return hit ? 'yes' : 'no';
  }
  assert.fail(`unrecognised question "${question}"`);
}

const many = generateScenes({ seed: 11, n: 600 });

// ---------------------------------------------------------------------------------------------------------

test('same seed gives identical scenes; another seed or stream gives different ones; scene i does not depend on n', () => {
  const a = generateScenes({ seed: 5, n: 30 });
  const b = generateScenes({ seed: 5, n: 30 });
  assert.deepEqual(a, b);
  const c = generateScenes({ seed: 6, n: 30 });
  const d = generateScenes({ seed: 5, n: 30, stream: 'test' });
  for (const other of [c, d]) {
    const same = a.filter((s, i) => s.svg === other[i].svg).length;
    assert.equal(same, 0, 'no scene repeats under another seed or stream');
    assert.notDeepEqual(a.map((s) => s.caption), other.map((s) => s.caption));
  }
  assert.deepEqual(generateScenes({ seed: 5, n: 7 }), a.slice(0, 7));
});

test('every answer is correct and every reference unique, recomputed from the objects', () => {
  let checked = 0;
  for (const s of many) {
    for (const q of s.qa) {
      assert.ok((QA_TYPES as readonly string[]).includes(q.type), q.type);
      assert.equal(q.answers.length, 1);
      assert.equal(q.answers[0], answer(q.question, s.objects), `${s.id}: "${q.question}"`);
      checked++;
    }
    // no question is asked twice in one scene
    assert.equal(new Set(s.qa.map((q) => q.question)).size, s.qa.length, s.id);
  }
  assert.ok(checked > 5000, `checked ${checked}`);
});

test('answers come from a small closed vocabulary and every question type occurs', () => {
  const vocab = new Set<string>([...COLOURS, ...SHAPES, 'yes', 'no', '0', '1', '2', '3', '4']);
  const byType = new Map<string, number>();
  for (const s of many) {
    for (const q of s.qa) {
      assert.ok(vocab.has(q.answers[0]), `answer "${q.answers[0]}" outside the vocabulary`);
      byType.set(q.type, (byType.get(q.type) ?? 0) + 1);
    }
  }
  for (const t of QA_TYPES) assert.ok((byType.get(t) ?? 0) > 300, `${t}: ${byType.get(t)}`);
});

test('yes/no answers are balanced: exactly for yesno, within 45-55% for position', () => {
  const tally = (type: string) => {
    const qs = many.flatMap((s) => s.qa.filter((q) => q.type === type && (q.answers[0] === 'yes' || q.answers[0] === 'no')));
    return { yes: qs.filter((q) => q.answers[0] === 'yes').length, all: qs.length };
  };
  const yn = tally('yesno');
  assert.equal(yn.yes * 2, yn.all);
  const pos = tally('position');
  assert.ok(pos.all > 400, `${pos.all} position yes/no questions`);
  assert.ok(Math.abs(pos.yes / pos.all - 0.5) < 0.05, `position yes share ${pos.yes}/${pos.all}`);
});

test('reverseRelation: the same caption with its relation reversed, which is false; null without a relation', () => {
  assert.equal(reverseRelation('a large red circle left of a small blue square'), 'a large red circle right of a small blue square');
  assert.equal(reverseRelation('a red star, a blue cross and a green circle, with the star below the cross'), 'a red star, a blue cross and a green circle, with the star above the cross');
  assert.equal(reverseRelation('a large red circle'), null);
  assert.equal(reverseRelation('grinning face'), null);
  let checked = 0;
  for (const s of many) {
    for (const c of s.captions) {
      const r = reverseRelation(c);
      if (s.objects.length === 1) { assert.equal(r, null, c); continue; }
      assert.ok(r !== null && r !== c, c);
      const rel = (x: string) => x.match(/\b(left of|right of|above|below)\b/)![1];
      assert.equal(r.replace(rel(r), rel(c)), c, 'only the relation changes');
      const obj = '(?:small|large) \\w+ \\w+';
      const m = s.objects.length === 2
        ? r.match(new RegExp(`^a (${obj}) (left of|right of|above|below) a (${obj})$`))
        : r.match(new RegExp(`, with (the .+?) (left of|right of|above|below) (the .+)$`));
      assert.ok(m, r);
      const find = (d: string) => (s.objects.length === 2 ? s.objects.find((o) => `${o.size} ${o.colour} ${o.shape}` === d)! : resolve(d, s.objects, r));
      assert.ok(offset(m[2], find(m[1]), find(m[3])) <= -CLEAR, `the reversed caption "${r}" is false`);
      checked++;
    }
  }
  assert.ok(checked > 500, `${checked} captions checked`);
});

test('captions name every object by size, colour and shape and state a true relation', () => {
  const counts = new Map<number, number>();
  for (const s of many) {
    const n = s.objects.length;
    counts.set(n, (counts.get(n) ?? 0) + 1);
    assert.ok(n >= 1 && n <= 4);
    for (const o of s.objects) assert.ok(s.caption.includes(`${o.size} ${o.colour} ${o.shape}`), `${s.caption} misses ${o.colour} ${o.shape}`);
    assert.equal(s.caption, s.captions[0]);
    // (shape, colour) never repeats, so colour-and-shape questions are never ambiguous
    assert.equal(new Set(s.objects.map((o) => `${o.shape}/${o.colour}`)).size, n);
    const obj = '(?:small|large) \\w+ \\w+';
    for (const c of s.captions) {
      if (n === 1) assert.match(c, new RegExp(`^a ${obj}$`));
      else if (n === 2) {
        const m = c.match(new RegExp(`^a (${obj}) (left of|right of|above|below) a (${obj})$`));
        assert.ok(m, c);
        const find = (d: string) => s.objects.find((o) => `${o.size} ${o.colour} ${o.shape}` === d)!;
        assert.ok(offset(m[2], find(m[1]), find(m[3])) >= CLEAR, `false relation in "${c}"`);
      } else {
        const m = c.match(new RegExp(`^a ${obj}(?:, a ${obj})* and a ${obj}, with (the .+?) (left of|right of|above|below) (the .+)$`));
        assert.ok(m, c);
        const a = resolve(m[1], s.objects, c);
        const b = resolve(m[3], s.objects, c);
        assert.ok(offset(m[2], a, b) >= CLEAR, `false relation in "${c}"`);
      }
    }
  }
  for (let n = 1; n <= 4; n++) assert.ok((counts.get(n) ?? 0) > 100, `${counts.get(n)} scenes with ${n} objects`);
});

test('objects keep apart: centres at least 26 units apart on some axis, inside the 100-unit canvas', () => {
  for (const s of many) {
    for (const o of s.objects) assert.ok(o.x >= 14 && o.x <= 86 && o.y >= 14 && o.y <= 86, `${s.id} ${JSON.stringify(o)}`);
    for (let i = 0; i < s.objects.length; i++) {
      for (let j = i + 1; j < s.objects.length; j++) {
        const [a, b] = [s.objects[i], s.objects[j]];
        assert.ok(Math.max(Math.abs(a.x - b.x), Math.abs(a.y - b.y)) >= 26, `${s.id}: objects ${i} and ${j} crowd`);
      }
    }
  }
});

test('splits come from disjoint streams; pairs carry group = scene id and meta', () => {
  const { pairs, splits, scenes } = shapesDataset({ seed: 3, train: 400, val: 100, test: 100 });
  assert.equal(pairs.length, 600);
  assert.deepEqual(Object.keys(splits).sort(), ['test', 'train', 'val']);
  const svgs = (name: string) => new Set(splits[name].map((p) => (p.image.kind === 'svg' ? p.image.svg : '')));
  for (const [x, y] of [['train', 'val'], ['train', 'test'], ['val', 'test']]) {
    const sx = svgs(x);
    for (const s of svgs(y)) assert.ok(!sx.has(s), `${x} and ${y} share a scene`);
  }
  assert.equal(new Set(pairs.map((p) => p.id)).size, 600);
  for (const p of splits.test) {
    assert.equal(p.group, p.id);
    assert.equal(p.meta.source, 'shapes');
    assert.equal(p.meta.split, 'test');
    const scene = scenes.test.find((s) => s.id === p.id)!;
    assert.equal(p.meta.objects, scene.objects.length);
    assert.equal(p.text, scene.caption);
  }
});

test('held-out combinations never appear in train/val/test and appear in every heldout scene', () => {
  const holdout = [
    { shape: 'triangle', colour: 'green' },
    { shape: 'circle', colour: 'blue' },
  ] as const;
  const { scenes, splits } = shapesDataset({ seed: 4, train: 500, val: 50, test: 50, heldout: 80, holdout: [...holdout] });
  const held = (o: SceneObject) => holdout.some((h) => h.shape === o.shape && h.colour === o.colour);
  for (const name of ['train', 'val', 'test']) {
    for (const s of scenes[name]) assert.ok(!s.objects.some(held), `${name} ${s.id} has a held-out combination`);
    // the words do not leak either
    for (const p of splits[name]) assert.ok(!/green triangle|blue circle/.test(p.text), p.text);
  }
  assert.equal(scenes.heldout.length, 80);
  for (const s of scenes.heldout) assert.ok(s.objects.some(held), s.id);
  // both held-out combinations are used in the heldout split
  for (const h of holdout) assert.ok(scenes.heldout.some((s) => s.objects.some((o) => o.shape === h.shape && o.colour === h.colour)));
});

/** Hue in degrees of an RGB pixel. */
function hue(r: number, g: number, b: number): number {
  const max = Math.max(r, g, b);
  const min = Math.min(r, g, b);
  if (max === min) return 0;
  let h = max === r ? (g - b) / (max - min) : max === g ? 2 + (b - r) / (max - min) : 4 + (r - g) / (max - min);
  h *= 60;
  return h < 0 ? h + 360 : h;
}
const HUES: Record<string, number> = { red: 358, orange: 28, yellow: 48, green: 120, blue: 220, purple: 276 };

test('SVG renders to PNG of the requested size, with each object drawn in its named colour at its centre', async () => {
  const scenes = generateScenes({ seed: 9, n: 12, size: 100 });
  const meta64 = await sharp(Buffer.from(scenes[0].svg)).metadata();
  assert.equal(meta64.width, 100); // Scene.svg is drawn at ShapesOptions.size
  for (const px of [32, 64]) {
    const png = await renderPng(scenes[0], px);
    const m = await sharp(Buffer.from(png)).metadata();
    assert.deepEqual([m.format, m.width, m.height], ['png', px, px]);
  }
  for (const s of scenes) {
    // At 100 px one pixel is one viewBox unit, so an object's centre pixel is at (x, y).
    const { data, info } = await sharp(Buffer.from(await renderPng(s, 100))).raw().toBuffer({ resolveWithObject: true });
    for (const o of s.objects) {
      const at = (o.y * info.width + o.x) * info.channels;
      const [r, g, b] = [data[at], data[at + 1], data[at + 2]];
      const h = hue(r, g, b);
      const nearest = Object.entries(HUES).sort((p, q) => Math.min(Math.abs(p[1] - h), 360 - Math.abs(p[1] - h)) - Math.min(Math.abs(q[1] - h), 360 - Math.abs(q[1] - h)))[0][0];
      assert.equal(nearest, o.colour, `${s.id}: pixel (${r},${g},${b}) at the ${o.shape}'s centre`);
      assert.ok(Math.max(r, g, b) - Math.min(r, g, b) > 100, `${s.id}: ${o.colour} ${o.shape} is not saturated at its centre`);
    }
  }
});

test('majority baseline: one answer per type, accuracy is the share of that answer in the test split', () => {
  const train = generateScenes({ seed: 1, n: 300 });
  const test_ = generateScenes({ seed: 1, n: 200, stream: 'test' });
  const base = majorityBaseline(train, test_);
  assert.deepEqual(Object.keys(base).sort(), [...QA_TYPES].sort());
  for (const [type, b] of Object.entries(base)) {
    const qs = test_.flatMap((s: Scene) => s.qa.filter((q) => q.type === type));
    assert.equal(b.n, qs.length);
    assert.equal(b.accuracy, qs.filter((q) => q.answers[0] === b.answer).length / qs.length);
  }
  assert.equal(base.yesno.accuracy, 0.5);
});

test('bad options throw errors that name the option', () => {
  assert.throws(() => generateScenes({ seed: 1.5, n: 1 }), /seed must be an integer/);
  assert.throws(() => generateScenes({ seed: 1, n: -1 }), /n must be a non-negative integer/);
  assert.throws(() => generateScenes({ seed: 1, n: 1, maxObjects: 5 }), /maxObjects/);
  assert.throws(() => generateScenes({ seed: 1, n: 1, size: 3 }), /size must be/);
  assert.throws(() => generateScenes({ seed: 1, n: 1, backgrounds: ['checks' as never] }), /backgrounds/);
  assert.throws(() => shapesDataset({ seed: 1, holdout: [{ shape: 'hexagon' as never, colour: 'red' }] }), /unknown combination.*hexagon/);
  assert.deepEqual(generateScenes({ seed: 1, n: 0 }), []);
});

test('placeOf names the third of the picture an object is in; groundedCaption lists every object with its place in reading order', () => {
  assert.equal(placeOf({ x: 10, y: 10 }), 'at the top left');
  assert.equal(placeOf({ x: 50, y: 10 }), 'at the top');
  assert.equal(placeOf({ x: 90, y: 50 }), 'on the right');
  assert.equal(placeOf({ x: 50, y: 50 }), 'in the middle');
  assert.equal(placeOf({ x: 33, y: 67 }), 'at the bottom left');
  assert.equal(placeOf({ x: 34, y: 66 }), 'in the middle');
  const o = (shape: SceneObject['shape'], colour: SceneObject['colour'], x: number, y: number): SceneObject => ({ shape, colour, size: 'small', x, y });
  assert.equal(groundedCaption([o('circle', 'red', 50, 80), o('square', 'blue', 80, 20), o('star', 'green', 20, 25)]),
    'a small green star at the top left, a small blue square at the top right and a small red circle at the bottom');
  assert.equal(groundedCaption([]), 'an empty picture');
  // Generated scenes: every object once, by its description and place; thirds from the top, then left to right.
  for (const sc of generateScenes({ seed: 5, n: 200 })) {
    const cap = groundedCaption(sc.objects);
    const parts = cap.split(/, | and (?=an? )/);
    assert.equal(parts.length, sc.objects.length, cap);
    const placed = parts.map((part) => sc.objects.find((ob) => part === `${describe(ob)} ${placeOf(ob)}`));
    assert.ok(placed.every((ob) => ob !== undefined), cap);
    assert.equal(new Set(placed).size, sc.objects.length);
    for (let k = 1; k < placed.length; k++) {
      const [a, b] = [placed[k - 1]!, placed[k]!];
      const band = (ob: SceneObject) => Math.min(2, Math.floor((3 * ob.y) / 100));
      assert.ok(band(a) < band(b) || (band(a) === band(b) && a.x <= b.x), cap);
    }
  }
});
