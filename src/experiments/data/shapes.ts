/**
 * `shapes`: a synthetic visual question-answering world. Each scene holds one to four objects (shape, colour,
 * size, position) on a plain or lightly textured background, drawn as SVG text and rendered to PNG by sharp.
 * Everything is a pure function of (seed, stream, index): scene i of a stream does not depend on how many
 * scenes were asked for, and the train / val / test streams never share a scene.
 *
 * Example:
 *   const { splits } = shapesDataset({ seed: 1, train: 1000, val: 100, test: 100 });
 *   splits.train[0].text;            // "a large red circle left of a small blue square"
 *   const png = await renderPng(generateScenes({ seed: 1, n: 1 })[0], 64);
 *
 * Geometry lives in a 100 x 100 viewBox. Every object occupies a square box of half-side `r` (11 small, 19 large)
 * and boxes never overlap (they are at least GAP apart on one axis), so every pair of objects is separated by at
 * least 26 units on one axis. A spatial relation ("left of", "above") is only stated or asked when the centres
 * differ by at least REL_MIN on that axis; closer than that the relation is called ambiguous and never used.
 */
import sharp from 'sharp';
import type { Pair, QA, Splits } from './types';

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'cross'] as const;
export const COLOURS = ['red', 'orange', 'yellow', 'green', 'blue', 'purple'] as const;
export const SIZES = ['small', 'large'] as const;
export const BACKGROUNDS = ['plain', 'stripes', 'dots', 'noise'] as const;
export const QA_TYPES = ['colour', 'shape', 'count', 'position', 'yesno'] as const;

export type Shape = (typeof SHAPES)[number];
export type Colour = (typeof COLOURS)[number];
export type Size = (typeof SIZES)[number];
export type BackgroundKind = (typeof BACKGROUNDS)[number];
export type QAType = (typeof QA_TYPES)[number];

/** One object: centre (x, y) in the 100 x 100 viewBox, y grows downwards. */
export interface SceneObject {
  shape: Shape;
  colour: Colour;
  size: Size;
  x: number;
  y: number;
}

export interface Background {
  kind: BackgroundKind;
  /** Light base fill. */
  tint: string;
  /** Pattern colour (a slightly darker neutral), unused for 'plain'. */
  ink: string;
  /** Stripe angle in degrees, dot / stripe pitch in viewBox units, and the seed of the noise cells. */
  angle: number;
  pitch: number;
  noiseSeed: number;
}

export interface Scene {
  id: string;
  objects: SceneObject[];
  background: Background;
  /** SVG source at the size the scene was generated for (ShapesOptions.size). */
  svg: string;
  caption: string;
  /** `caption` first, then an equivalent phrasing (the relation read the other way). */
  captions: string[];
  qa: QA[];
}

/** A (shape, colour) combination, used to hold combinations out of training. */
export interface Combo {
  shape: Shape;
  colour: Colour;
}

export interface ShapesOptions {
  seed: number;
  n: number;
  /** Which independent stream of scenes: 'train', 'val', 'test', 'heldout' or any name. Default 'train'. */
  stream?: string;
  /** Index of the first scene: scenes first .. first + n - 1 of the stream, the same as a longer call gives. Default 0. */
  first?: number;
  /** Pixel size of `Scene.svg` (square). Default 64. */
  size?: number;
  /** Objects per scene, inclusive bounds within 1..4. Defaults 1 and 4. */
  minObjects?: number;
  maxObjects?: number;
  /** Background kinds to draw from (uniformly). Default all four. */
  backgrounds?: readonly BackgroundKind[];
  /** Combinations that never appear in these scenes. */
  exclude?: readonly Combo[];
  /** Every scene contains at least one object with one of these combinations (the first object drawn). */
  require?: readonly Combo[];
}

export interface ShapesDatasetOptions {
  seed: number;
  /** Scenes per split. Defaults 1000 / 100 / 100. */
  train?: number;
  val?: number;
  test?: number;
  size?: number;
  minObjects?: number;
  maxObjects?: number;
  backgrounds?: readonly BackgroundKind[];
  /**
   * Combinations held out for compositional generalisation: absent from train, val and test; a fourth split
   * `heldout` (`heldout` scenes, default `test`) has at least one of them in every scene.
   */
  holdout?: readonly Combo[];
  heldout?: number;
}

// ---------------------------------------------------------------------------------------------------------
// Constants of the world

const VIEW = 100;
const HALF: Record<Size, number> = { small: 11, large: 19 };
/** Minimum empty space between two object boxes on the axis that separates them. */
const GAP = 4;
/** Minimum distance from a box to the border. */
const BORDER = 3;
/** Centres closer than this on an axis have no stated relation on that axis. */
export const REL_MIN = 20;

const FILL: Record<Colour, string> = {
  red: '#d62728',
  orange: '#ff7f0e',
  yellow: '#e6b800',
  green: '#2ca02c',
  blue: '#1f5fd6',
  purple: '#8c3fc0',
};
const TINTS = ['#ffffff', '#f4f1ea', '#edf2f7', '#eff5ec', '#f6eef2', '#f0f0f0'];
const INKS = ['#d9d9d9', '#d4d0c8', '#cfd8e0', '#d6ddd2'];

export const PLURAL: Record<Shape, string> = {
  circle: 'circles',
  square: 'squares',
  triangle: 'triangles',
  star: 'stars',
  cross: 'crosses',
};

// ---------------------------------------------------------------------------------------------------------
// Seeded randomness: mulberry32 streams seeded through a splitmix-style hash of (seed, stream, index).

/** A 32-bit integer hash (the murmur3 finaliser), used to derive independent stream seeds. */
function mix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function hashString(s: string): number {
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Seed of item `index` of stream `stream` under `seed`: distinct inputs give independent mulberry32 streams. */
export function streamSeed(seed: number, stream: string, index: number): number {
  let h = mix32((seed >>> 0) ^ 0x9e3779b9);
  h = mix32(h ^ hashString(stream));
  h = mix32((h + Math.imul(index >>> 0, 0x9e3779b9)) >>> 0);
  return h;
}

export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  int(n: number): number;
  pick<T>(xs: readonly T[]): T;
  coin(): boolean;
}

/** mulberry32: a small, fast 32-bit generator, good enough for drawing scenes. */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { next, int, pick: (xs) => xs[int(xs.length)], coin: () => next() < 0.5 };
}

// ---------------------------------------------------------------------------------------------------------
// Geometry and relations

/** Whether an object of size `size` centred at (x, y) keeps clear of every object in `others` and the border. */
export function fits(x: number, y: number, size: Size, others: readonly SceneObject[]): boolean {
  const r = HALF[size];
  if (x - r < BORDER || y - r < BORDER || x + r > VIEW - BORDER || y + r > VIEW - BORDER) return false;
  for (const o of others) {
    const need = r + HALF[o.size] + GAP;
    if (Math.abs(x - o.x) < need && Math.abs(y - o.y) < need) return false;
  }
  return true;
}

/** A free position for an object of `size`, or null after 200 tries. Centres are whole viewBox units. */
export function placeObject(size: Size, others: readonly SceneObject[], r: Rng): { x: number; y: number } | null {
  const lo = HALF[size] + BORDER;
  const span = VIEW - 2 * lo + 1;
  for (let t = 0; t < 200; t++) {
    const x = lo + r.int(span);
    const y = lo + r.int(span);
    if (fits(x, y, size, others)) return { x, y };
  }
  return null;
}

export type Relation = 'left of' | 'right of' | 'above' | 'below';

/** Whether `rel(a, b)` clearly holds ("a is left of b"): centres at least REL_MIN apart in that direction. */
export function holds(rel: Relation, a: SceneObject, b: SceneObject): boolean {
  switch (rel) {
    case 'left of':
      return b.x - a.x >= REL_MIN;
    case 'right of':
      return a.x - b.x >= REL_MIN;
    case 'above':
      return b.y - a.y >= REL_MIN;
    case 'below':
      return a.y - b.y >= REL_MIN;
  }
}

const OPPOSITE: Record<Relation, Relation> = {
  'left of': 'right of',
  'right of': 'left of',
  above: 'below',
  below: 'above',
};

/** The relation of a to b along the axis that separates them most (always clear: boxes never overlap). */
function dominantRelation(a: SceneObject, b: SceneObject): Relation {
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  if (Math.abs(dx) >= Math.abs(dy)) return dx > 0 ? 'left of' : 'right of';
  return dy > 0 ? 'above' : 'below';
}

// ---------------------------------------------------------------------------------------------------------
// Words

/** "a" or "an" for the word that follows (only "orange" starts with a vowel in this world). */
export function article(word: string): string {
  return /^[aeiou]/.test(word) ? 'an' : 'a';
}

/** "a large red circle" */
export function describe(o: SceneObject): string {
  return `a ${o.size} ${o.colour} ${o.shape}`;
}

type RefPart = 'size' | 'colour' | 'shape';

/**
 * The shortest definite reference to `o` that picks out exactly one object of `objects` ("the circle", "the large
 * circle", "the red circle"), using only the parts allowed; null when none is unique. Without the shape the noun
 * is "object" ("the red object").
 */
export function referTo(o: SceneObject, objects: readonly SceneObject[], parts: readonly RefPart[] = ['size', 'colour', 'shape']): string | null {
  const orders: RefPart[][] = [['shape'], ['size', 'shape'], ['colour', 'shape'], ['colour'], ['size', 'colour'], ['size', 'colour', 'shape']];
  for (const use of orders) {
    if (!use.every((p) => parts.includes(p))) continue;
    const matches = objects.filter((p) => use.every((k) => p[k] === o[k]));
    if (matches.length !== 1) continue;
    const words: string[] = use.map((k) => o[k]);
    if (!use.includes('shape')) words.push('object');
    return `the ${words.join(' ')}`;
  }
  return null;
}

function list(items: string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/**
 * Captions. One object: "a large red circle". Two: "a large red circle left of a small blue square". Three or
 * four: "a large red circle, a small blue square and a small green star, with the circle above the square".
 * Returns the main caption and the same scene with the relation read the other way.
 */
export function captionsFor(objects: readonly SceneObject[]): string[] {
  if (objects.length === 0) return ['an empty picture'];
  if (objects.length === 1) return [describe(objects[0])];
  const [a, b] = objects;
  const rel = dominantRelation(a, b);
  if (objects.length === 2) {
    return [`${describe(a)} ${rel} ${describe(b)}`, `${describe(b)} ${OPPOSITE[rel]} ${describe(a)}`];
  }
  const names = list(objects.map(describe));
  // (shape, colour) is unique within a scene, so a colour-and-shape reference always exists.
  const ra = referTo(a, objects)!;
  const rb = referTo(b, objects)!;
  return [`${names}, with ${ra} ${rel} ${rb}`, `${names}, with ${rb} ${OPPOSITE[rel]} ${ra}`];
}

/** Which third of the 100-unit view a coordinate falls in: 0, 1 or 2. */
function third(v: number): number {
  return v < VIEW / 3 ? 0 : v < (2 * VIEW) / 3 ? 1 : 2;
}

/**
 * Where an object's centre lies in a 3 x 3 division of the picture: "at the top left", "at the top", "on the left",
 * "in the middle", ... (thirds of the 100-unit view).
 */
export function placeOf(o: Pick<SceneObject, 'x' | 'y'>): string {
  const row = ['top', '', 'bottom'][third(o.y)];
  const col = ['left', '', 'right'][third(o.x)];
  if (row && col) return `at the ${row} ${col}`;
  if (row) return `at the ${row}`;
  if (col) return `on the ${col}`;
  return 'in the middle';
}

/**
 * A grounded caption: every object with its place, in reading order (by thirds from the top, then left to right):
 * "a small blue square at the top left and a large red circle in the middle". Each object's words sit beside
 * where it is, so a captioner trained on these has to find each object in the image, not only list what is there.
 * `mark`, when given, adds a word after each object's place ("... in the middle (yes)").
 */
export function groundedCaption(objects: readonly SceneObject[], mark?: (o: SceneObject) => string): string {
  if (objects.length === 0) return 'an empty picture';
  const order = [...objects].sort((a, b) => third(a.y) - third(b.y) || a.x - b.x);
  return list(order.map((o) => `${describe(o)} ${placeOf(o)}${mark ? ` ${mark(o)}` : ''}`));
}

/**
 * The caption with its spatial relation reversed ("a red circle left of a blue square" -> "... right of ..."): a
 * false caption of the same scene that differs only in the relation, the hard negative that makes a contrastive
 * encoder represent where things are. null when the caption states no relation (one object, or not a shapes
 * caption).
 */
export function reverseRelation(caption: string): string | null {
  const m = /\b(left of|right of|above|below)\b/.exec(caption);
  if (!m) return null;
  return caption.slice(0, m.index) + OPPOSITE[m[1] as Relation] + caption.slice(m.index + m[1].length);
}

// ---------------------------------------------------------------------------------------------------------
// Questions

/**
 * Question-answer pairs for a scene. Every question has exactly one correct answer in a closed vocabulary
 * (colour names, shape names, digits 0-4, yes / no), and refers to objects only by unique references.
 * Yes / no questions of type 'yesno' come in equal numbers per scene; 'position' yes / no questions are asked
 * in the true or the false direction by a coin.
 */
export function questionsFor(objects: readonly SceneObject[], r: Rng): QA[] {
  const qa: QA[] = [];
  const add = (type: QAType, question: string, answer: string) => qa.push({ question, answers: [answer], type });

  // colour: refer without naming the colour.
  for (const o of objects) {
    const ref = referTo(o, objects, ['size', 'shape']);
    if (ref) add('colour', `what colour is ${ref}?`, o.colour);
  }
  // shape: refer by colour (and size) only.
  for (const o of objects) {
    const ref = referTo(o, objects, ['size', 'colour']);
    if (ref) add('shape', `what shape is ${ref}?`, o.shape);
  }
  // count: all objects, each present shape, one absent shape, one present colour.
  add('count', 'how many shapes are there?', String(objects.length));
  const present = SHAPES.filter((s) => objects.some((o) => o.shape === s));
  const absent = SHAPES.filter((s) => !present.includes(s));
  for (const s of present) add('count', `how many ${PLURAL[s]} are there?`, String(objects.filter((o) => o.shape === s).length));
  if (absent.length > 0) add('count', `how many ${PLURAL[r.pick(absent)]} are there?`, '0');
  const colour = r.pick(objects).colour;
  add('count', `how many ${colour} shapes are there?`, String(objects.filter((o) => o.colour === colour).length));

  // position: yes/no on one clear axis for up to two pairs, alternating true and false; then "what is <rel> X?".
  const pairs: [SceneObject, SceneObject][] = [];
  for (let i = 0; i < objects.length; i++) for (let j = i + 1; j < objects.length; j++) pairs.push([objects[i], objects[j]]);
  let truth = r.coin();
  for (let k = 0; k < 2 && pairs.length > 0; k++) {
    const [p, q] = pairs.splice(r.int(pairs.length), 1)[0];
    const [a, b] = r.coin() ? [p, q] : [q, p];
    const clear = (['left of', 'above'] as Relation[]).flatMap((rel) => (holds(rel, a, b) ? [rel] : holds(OPPOSITE[rel], a, b) ? [OPPOSITE[rel]] : []));
    const rel = r.pick(clear); // never empty: boxes are separated on one axis by >= 26 > REL_MIN
    const asked = truth ? rel : OPPOSITE[rel];
    add('position', `is ${referTo(a, objects)} ${asked} ${referTo(b, objects)}?`, truth ? 'yes' : 'no');
    truth = !truth;
  }
  const whatIs: { rel: Relation; anchor: SceneObject; answer: SceneObject }[] = [];
  for (const anchor of objects) {
    for (const rel of ['left of', 'right of', 'above', 'below'] as Relation[]) {
      const others = objects.filter((o) => o !== anchor);
      const hits = others.filter((o) => holds(rel, o, anchor));
      // Unique answer: one object clearly there, and every other object not even slightly in that direction.
      const slight = others.filter((o) => o !== hits[0] && sameSide(rel, o, anchor));
      if (hits.length === 1 && slight.length === 0) {
        whatIs.push({ rel, anchor, answer: hits[0] });
      }
    }
  }
  if (whatIs.length > 0) {
    const w = r.pick(whatIs);
    add('position', `what is ${w.rel} ${referTo(w.anchor, objects)}?`, w.answer.shape);
  }

  // yesno: one present and one absent combination; half the scenes also ask with a size word.
  const o = r.pick(objects);
  add('yesno', `is there ${article(o.colour)} ${o.colour} ${o.shape}?`, 'yes');
  const missing: Combo[] = [];
  for (const shape of SHAPES) for (const c of COLOURS) if (!objects.some((p) => p.shape === shape && p.colour === c)) missing.push({ shape, colour: c });
  // Prefer a near miss (a present shape in another colour, or a present colour on another shape) half the time.
  const near = missing.filter((m) => objects.some((p) => p.shape === m.shape || p.colour === m.colour));
  const m = near.length > 0 && r.coin() ? r.pick(near) : r.pick(missing);
  add('yesno', `is there ${article(m.colour)} ${m.colour} ${m.shape}?`, 'no');
  if (r.coin()) {
    const p = r.pick(objects);
    const q = r.pick(objects);
    const other: Size = q.size === 'small' ? 'large' : 'small';
    add('yesno', `is there a ${p.size} ${p.colour} ${p.shape}?`, 'yes');
    // (shape, colour) is unique in a scene, so the other size of q's combination is absent.
    add('yesno', `is there a ${other} ${q.colour} ${q.shape}?`, 'no');
  }
  return qa;
}

/** o lies on the `rel` side of anchor, however slightly (strictly, by centres). */
function sameSide(rel: Relation, o: SceneObject, anchor: SceneObject): boolean {
  switch (rel) {
    case 'left of':
      return o.x < anchor.x;
    case 'right of':
      return o.x > anchor.x;
    case 'above':
      return o.y < anchor.y;
    case 'below':
      return o.y > anchor.y;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Drawing

const f = (v: number) => (Math.round(v * 100) / 100).toString();

function shapeSvg(o: SceneObject): string {
  const r = HALF[o.size];
  const fill = FILL[o.colour];
  const { x, y } = o;
  const poly = (pts: [number, number][]) => `<polygon points="${pts.map(([a, b]) => `${f(a)},${f(b)}`).join(' ')}" fill="${fill}"/>`;
  switch (o.shape) {
    case 'circle':
      return `<circle cx="${x}" cy="${y}" r="${f(r * 0.95)}" fill="${fill}"/>`;
    case 'square':
      return `<rect x="${f(x - r * 0.85)}" y="${f(y - r * 0.85)}" width="${f(r * 1.7)}" height="${f(r * 1.7)}" fill="${fill}"/>`;
    case 'triangle':
      return poly([[x, y - r], [x + r, y + r * 0.8], [x - r, y + r * 0.8]]);
    case 'star': {
      const pts: [number, number][] = [];
      for (let k = 0; k < 10; k++) {
        const rad = k % 2 === 0 ? r : r * 0.45;
        const th = -Math.PI / 2 + (k * Math.PI) / 5;
        pts.push([x + rad * Math.cos(th), y + rad * Math.sin(th) + r * 0.08]);
      }
      return poly(pts);
    }
    case 'cross': {
      const t = r * 0.34;
      return poly([
        [x - t, y - r], [x + t, y - r], [x + t, y - t], [x + r, y - t], [x + r, y + t], [x + t, y + t],
        [x + t, y + r], [x - t, y + r], [x - t, y + t], [x - r, y + t], [x - r, y - t], [x - t, y - t],
      ]);
    }
  }
}

function backgroundSvg(b: Background): string {
  const base = `<rect width="${VIEW}" height="${VIEW}" fill="${b.tint}"/>`;
  switch (b.kind) {
    case 'plain':
      return base;
    case 'stripes':
      return (
        `<defs><pattern id="bg" width="${b.pitch}" height="${b.pitch}" patternUnits="userSpaceOnUse" patternTransform="rotate(${b.angle})">` +
        `<rect width="${f(b.pitch / 2)}" height="${b.pitch}" fill="${b.ink}"/></pattern></defs>` +
        base +
        `<rect width="${VIEW}" height="${VIEW}" fill="url(#bg)" opacity="0.6"/>`
      );
    case 'dots':
      return (
        `<defs><pattern id="bg" width="${b.pitch}" height="${b.pitch}" patternUnits="userSpaceOnUse" patternTransform="rotate(${b.angle})">` +
        `<circle cx="${f(b.pitch / 2)}" cy="${f(b.pitch / 2)}" r="${f(b.pitch / 5)}" fill="${b.ink}"/></pattern></defs>` +
        base +
        `<rect width="${VIEW}" height="${VIEW}" fill="url(#bg)"/>`
      );
    case 'noise': {
      // A 10 x 10 grid of cells, each the ink at a random low opacity: cheap deterministic "noise".
      const nr = rng(b.noiseSeed);
      let cells = '';
      for (let i = 0; i < 10; i++) {
        for (let j = 0; j < 10; j++) {
          cells += `<rect x="${i * 10}" y="${j * 10}" width="10" height="10" fill="${b.ink}" opacity="${f(nr.next() * 0.7)}"/>`;
        }
      }
      return base + cells;
    }
  }
}

/** The SVG source of a scene drawn at `px` x `px` pixels. */
export function sceneSvg(objects: readonly SceneObject[], background: Background, px: number): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${px}" height="${px}" viewBox="0 0 ${VIEW} ${VIEW}">` +
    backgroundSvg(background) +
    objects.map(shapeSvg).join('') +
    `</svg>`
  );
}

/** PNG bytes (RGB, `size` x `size`) of a scene, rendered from SVG by sharp (librsvg). */
export async function renderPng(scene: Pick<Scene, 'objects' | 'background'>, size: number): Promise<Uint8Array> {
  checkSize(size, 'renderPng');
  const svg = sceneSvg(scene.objects, scene.background, size);
  const buf = await sharp(Buffer.from(svg)).flatten({ background: '#ffffff' }).png().toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

// ---------------------------------------------------------------------------------------------------------
// Scenes

function checkSize(size: unknown, where: string): void {
  if (!Number.isInteger(size) || (size as number) < 8 || (size as number) > 4096) {
    throw new Error(`${where}: size must be an integer pixel size in 8..4096, got ${String(size)}`);
  }
}

function checkCombos(combos: readonly Combo[] | undefined, where: string): void {
  for (const c of combos ?? []) {
    if (!c || !SHAPES.includes(c.shape) || !COLOURS.includes(c.colour)) {
      throw new Error(`${where}: unknown combination ${JSON.stringify(c)}; shapes are ${SHAPES.join('|')}, colours ${COLOURS.join('|')}`);
    }
  }
}

function drawBackground(kinds: readonly BackgroundKind[], r: Rng): Background {
  return {
    kind: r.pick(kinds),
    tint: r.pick(TINTS),
    ink: r.pick(INKS),
    angle: r.int(180),
    pitch: 6 + r.int(7),
    noiseSeed: r.int(0x7fffffff),
  };
}

/** Scene content (caption, QA, SVG) built from objects; used for generated and edited scenes alike. */
export function buildScene(id: string, objects: SceneObject[], background: Background, size: number, r: Rng): Scene {
  const captions = captionsFor(objects);
  return {
    id,
    objects,
    background,
    svg: sceneSvg(objects, background, size),
    caption: captions[0],
    captions,
    qa: questionsFor(objects, r),
  };
}

const comboKey = (shape: Shape, colour: Colour) => `${shape}/${colour}`;

/** Draws objects for a scene: (shape, colour) unique within the scene, excluded combos avoided, boxes apart. */
function drawObjects(count: number, r: Rng, exclude: Set<string>, require: readonly Combo[]): SceneObject[] {
  for (;;) {
    const objects: SceneObject[] = [];
    let ok = true;
    for (let k = 0; k < count && ok; k++) {
      let combo: Combo;
      if (k === 0 && require.length > 0) combo = r.pick(require);
      else {
        const free: Combo[] = [];
        for (const shape of SHAPES) {
          for (const colour of COLOURS) {
            const key = comboKey(shape, colour);
            if (!exclude.has(key) && !objects.some((o) => o.shape === shape && o.colour === colour)) free.push({ shape, colour });
          }
        }
        combo = r.pick(free);
      }
      let size: Size = r.pick(SIZES);
      let at = placeObject(size, objects, r);
      if (!at && size === 'large') {
        size = 'small';
        at = placeObject(size, objects, r);
      }
      if (!at) ok = false;
      else objects.push({ ...combo, size, ...at });
    }
    if (ok) return objects; // else crowded: draw the layout again from where the stream is
  }
}

/** `n` scenes of one stream. Scene i depends only on (seed, stream, i) and the drawing options. */
export function generateScenes(opts: ShapesOptions): Scene[] {
  const where = 'generateScenes';
  if (!opts || !Number.isInteger(opts.seed)) throw new Error(`${where}: seed must be an integer, got ${String(opts?.seed)}`);
  if (!Number.isInteger(opts.n) || opts.n < 0) throw new Error(`${where}: n must be a non-negative integer, got ${String(opts.n)}`);
  const size = opts.size ?? 64;
  checkSize(size, where);
  const lo = opts.minObjects ?? 1;
  const hi = opts.maxObjects ?? 4;
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 1 || hi > 4 || lo > hi) {
    throw new Error(`${where}: need integers 1 <= minObjects <= maxObjects <= 4, got ${lo} and ${hi}`);
  }
  const kinds = opts.backgrounds ?? BACKGROUNDS;
  if (kinds.length === 0 || kinds.some((k) => !BACKGROUNDS.includes(k))) {
    throw new Error(`${where}: backgrounds must be a non-empty subset of ${BACKGROUNDS.join('|')}, got ${JSON.stringify(kinds)}`);
  }
  checkCombos(opts.exclude, where);
  checkCombos(opts.require, where);
  const exclude = new Set((opts.exclude ?? []).map((c) => comboKey(c.shape, c.colour)));
  const require = opts.require ?? [];
  if (require.some((c) => exclude.has(comboKey(c.shape, c.colour)))) throw new Error(`${where}: a combination is both required and excluded`);
  const stream = opts.stream ?? 'train';
  const first = opts.first ?? 0;
  if (!Number.isInteger(first) || first < 0) throw new Error(`${where}: first must be a non-negative integer, got ${String(opts.first)}`);

  const scenes: Scene[] = [];
  for (let i = first; i < first + opts.n; i++) {
    const r = rng(streamSeed(opts.seed, stream, i));
    const count = lo + r.int(hi - lo + 1);
    const objects = drawObjects(count, r, exclude, require);
    const background = drawBackground(kinds, r);
    scenes.push(buildScene(`shapes-${opts.seed}-${stream}-${i}`, objects, background, size, r));
  }
  return scenes;
}

/** A scene as an image-text pair: group = scene id, the SVG as image. */
export function sceneToPair(scene: Scene, split: string): Pair {
  return {
    id: scene.id,
    image: { kind: 'svg', svg: scene.svg, name: scene.id },
    text: scene.caption,
    captions: scene.captions,
    group: scene.id,
    meta: { objects: scene.objects.length, source: 'shapes', split, background: scene.background.kind },
  };
}

/** Train / val / test (and `heldout` when combinations are held out) scenes and pairs from disjoint streams. */
export function shapesDataset(opts: ShapesDatasetOptions): { pairs: Pair[]; splits: Splits<Pair>; scenes: Splits<Scene> } {
  const counts: Record<string, number> = { train: opts.train ?? 1000, val: opts.val ?? 100, test: opts.test ?? 100 };
  const holdout = opts.holdout ?? [];
  checkCombos(holdout, 'shapesDataset');
  if (holdout.length > 0) counts.heldout = opts.heldout ?? counts.test;
  const common = { seed: opts.seed, size: opts.size, minObjects: opts.minObjects, maxObjects: opts.maxObjects, backgrounds: opts.backgrounds };
  const scenes = { train: [], val: [], test: [] } as Splits<Scene>;
  const splits = { train: [], val: [], test: [] } as Splits<Pair>;
  const pairs: Pair[] = [];
  for (const [name, n] of Object.entries(counts)) {
    const s =
      name === 'heldout'
        ? generateScenes({ ...common, n, stream: name, require: holdout })
        : generateScenes({ ...common, n, stream: name, exclude: holdout });
    scenes[name] = s;
    splits[name] = s.map((sc) => sceneToPair(sc, name));
    pairs.push(...splits[name]);
  }
  return { pairs, splits, scenes };
}

/**
 * The answer-prior baseline: for each question type, the most frequent answer among `train` scenes' questions,
 * and its accuracy on `test` scenes' questions of that type. Later VQA accuracy is judged against this.
 */
export function majorityBaseline(train: readonly Scene[], test: readonly Scene[]): Record<string, { answer: string; accuracy: number; n: number }> {
  const freq = new Map<string, Map<string, number>>();
  for (const s of train) {
    for (const q of s.qa) {
      const m = freq.get(q.type) ?? new Map<string, number>();
      m.set(q.answers[0], (m.get(q.answers[0]) ?? 0) + 1);
      freq.set(q.type, m);
    }
  }
  const out: Record<string, { answer: string; accuracy: number; n: number }> = {};
  for (const [type, m] of freq) {
    const answer = [...m.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0][0];
    const qs = test.flatMap((s) => s.qa.filter((q) => q.type === type));
    const right = qs.filter((q) => q.answers.includes(answer)).length;
    out[type] = { answer, accuracy: qs.length ? right / qs.length : NaN, n: qs.length };
  }
  return out;
}
