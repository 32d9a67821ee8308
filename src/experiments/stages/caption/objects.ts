/**
 * Do generated captions name the right objects? For `shapes` scenes: the colour+shape mentions of a caption
 * ("red circle" in "a large red circle", "the red circle") against the scene's objects (shapes.ts SceneObject).
 *
 * ```ts
 * objectMentions('a small blue square left of a large red circle');   // [{ colour: 'blue', shape: 'square' }, { colour: 'red', shape: 'circle' }]
 * objectScores(['a red circle'], [[{ shape: 'circle', colour: 'red', size: 'large', x: 50, y: 50 }]]);  // { recall: 1, precision: 1, ... }
 * ```
 *
 * recall = (scene objects whose colour+shape is mentioned) / (scene objects); precision = (distinct colour+shape
 * mentions that are in the scene) / (distinct colour+shape mentions); both micro-averaged over the captions (a
 * caption with no mention adds nothing to precision's denominator, and all its objects to recall's).
 *
 * Grounded captions (caption data.shapesCaptions 'grounded') also say where each object is ("a red circle at the
 * top left"); placeAccuracy = (right mentions followed by the object's own place, placeOf) / (right mentions
 * followed by any place phrase).
 */
import { COLOURS, SHAPES, placeOf } from '../../data/shapes';
import type { Colour, SceneObject, Shape } from '../../data/shapes';

const MENTION = new RegExp(`\\b(${COLOURS.join('|')})\\s+(${SHAPES.join('|')})(?:e?s)?\\b`, 'g');
const PLACED = new RegExp(`\\b(${COLOURS.join('|')})\\s+(${SHAPES.join('|')})\\s+(at the (?:top|bottom)(?: (?:left|right))?|on the (?:left|right)|in the middle)\\b`, 'g');

/** The colour+shape mentions of a caption followed by a place phrase ("red circle at the top left"), first per object. */
export function placedMentions(caption: string): Array<{ colour: Colour; shape: Shape; place: string }> {
  const seen = new Set<string>();
  const out: Array<{ colour: Colour; shape: Shape; place: string }> = [];
  for (const m of caption.toLowerCase().matchAll(PLACED)) {
    const k = `${m[1]} ${m[2]}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push({ colour: m[1] as Colour, shape: m[2] as Shape, place: m[3] });
  }
  return out;
}

/** The distinct colour+shape mentions of a caption, in order of first appearance (case-insensitive; plurals count). */
export function objectMentions(caption: string): Array<{ colour: Colour; shape: Shape }> {
  const seen = new Set<string>();
  const out: Array<{ colour: Colour; shape: Shape }> = [];
  for (const m of caption.toLowerCase().matchAll(MENTION)) {
    const k = `${m[1]} ${m[2]}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push({ colour: m[1] as Colour, shape: m[2] as Shape });
  }
  return out;
}

export interface ObjectScores {
  /** Share of the scenes' objects whose colour+shape the captions mention. */
  recall: number;
  /** Share of the captions' distinct colour+shape mentions that are objects of their scene (0 when none). */
  precision: number;
  objects: number;
  mentions: number;
  /** Scene objects that were mentioned (= mentions that are right: colour+shape is unique within a scene). */
  matched: number;
  /** Diagnostics: share of scene objects whose colour (resp. shape) is in some colour+shape mention of the caption. */
  colourRecall: number;
  shapeRecall: number;
  /** Right mentions with a place phrase (scenes given with x, y only), and the share of them at the object's place. */
  placed: number;
  placeAccuracy: number;
}

/** Micro-averaged object recall and precision of captions[i] against the objects of scene i. */
export function objectScores(captions: readonly string[], scenes: ReadonlyArray<readonly (Pick<SceneObject, 'colour' | 'shape'> & Partial<Pick<SceneObject, 'x' | 'y'>>)[]>): ObjectScores {
  if (captions.length !== scenes.length) throw new Error(`objectScores: ${captions.length} captions but ${scenes.length} scenes`);
  let objects = 0;
  let mentions = 0;
  let found = 0;
  let right = 0;
  let colours = 0;
  let shapes = 0;
  let placed = 0;
  let placedRight = 0;
  captions.forEach((c, i) => {
    for (const m of placedMentions(c)) {
      const o = scenes[i].find((ob) => ob.colour === m.colour && ob.shape === m.shape);
      if (!o || o.x === undefined || o.y === undefined) continue;
      placed++;
      if (placeOf({ x: o.x, y: o.y }) === m.place) placedRight++;
    }
    const ms = objectMentions(c);
    const said = new Set(ms.map((m) => `${m.colour} ${m.shape}`));
    const saidColours = new Set<string>(ms.map((m) => m.colour));
    const saidShapes = new Set<string>(ms.map((m) => m.shape));
    for (const o of scenes[i]) {
      if (saidColours.has(o.colour)) colours++;
      if (saidShapes.has(o.shape)) shapes++;
    }
    const there = new Set(scenes[i].map((o) => `${o.colour} ${o.shape}`));
    objects += scenes[i].length;
    for (const o of scenes[i]) if (said.has(`${o.colour} ${o.shape}`)) found++;
    mentions += said.size;
    for (const k of said) if (there.has(k)) right++;
  });
  return {
    recall: objects > 0 ? found / objects : 0, precision: mentions > 0 ? right / mentions : 0, objects, mentions, matched: found,
    colourRecall: objects > 0 ? colours / objects : 0, shapeRecall: objects > 0 ? shapes / objects : 0,
    placed, placeAccuracy: placed > 0 ? placedRight / placed : 0,
  };
}
