/**
 * `emoji`: real image-text pairs. The same ~1900 concepts drawn by two vendors (npm emoji-datasource-google and
 * emoji-datasource-twitter, 64x64 RGBA PNGs) with captions in 28 locales (emojibase-data: a label and tags).
 *
 * ```ts
 * const ds = loadEmoji({ langs: ['en', 'zh'] });
 * ds.splits.train;    // google images of the training concepts, one Pair per (concept, language)
 * ds.splits.test;     // twitter images of the same concepts: does the model generalise across drawing styles?
 * ds.splits.heldout;  // ~10% of concepts never seen in training (either vendor): zero-shot concepts
 * ```
 *
 * The join. emoji-datasource keys an image by `unified` (upper-case hex code points joined by '-', fully
 * qualified: '2764-FE0F', '1F3C3-200D-2640-FE0F', keycaps '0023-FE0F-20E3'); skin tones are a
 * `skin_variations` map keyed by the tone code point(s) ('1F3FB', or '1F3FB-1F3FC' for two people), each with its
 * own `unified` and `image`. emojibase keys by `hexcode`, the same spelling except that it drops FE0F (variation
 * selector 16) in many places ('2764', '263A') and keeps it in others ('0023-FE0F-20E3'); skin tones are the
 * entries of `skins`, each with its own `hexcode` and a label like 'thumbs up: light skin tone' but no tags.
 * Both spell ZWJ sequences with 200D. So the join key is the code point sequence without FE0F; with it, every
 * emoji-datasource image (base and skin tone) finds its emojibase entry in every locale of version 17.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Pair, Splits } from './types';

export type CaptionStyle = 'label' | 'label+tags' | 'tags';

export interface EmojiOptions {
  /** Vendor whose images are trained on (default 'google') and whose images evaluate (default 'twitter'). */
  trainVendor?: string;
  testVendor?: string;
  /** emojibase-data locales: one Pair per language caption, meta.lang. Default ['en']. */
  langs?: string[];
  /** Add each skin-tone variant as its own concept (group '1F44D-1F3FB', meta.base '1F44D'); default false. A
   *  variant always lands in the same split as its base emoji, so a held-out concept stays unseen in every tone. */
  includeSkinTones?: boolean;
  /** Fraction of base concepts held out of training entirely; default 0.1. */
  heldOutFraction?: number;
  /** Concepts (twitter images by default) in `val`, a fixed subset of `test` for eval during training; 256. */
  valConcepts?: number;
  /** Seeds the held-out and val draws. Default 0. */
  seed?: number;
  /** Which caption is `text`: 'label+tags' (default, "grinning face: face, grin"), 'label', or 'tags'. */
  captionStyle?: CaptionStyle;
  /** Tags kept in a caption (emojibase order), to keep captions short; default 4. */
  maxTags?: number;
  /** Keep only the first `limit` concepts in emoji order (small subsets for tests and quick runs). */
  limit?: number;
  /** Folder holding the packages; default: wherever Node resolves them from here. */
  nodeModules?: string;
}

export interface SplitStats { pairs: number; concepts: number }

export interface EmojiStats {
  concepts: number;
  heldoutConcepts: number;
  pairs: number;
  vendors: string[];
  langs: string[];
  splits: Record<string, SplitStats>;
  /** Concepts per emoji-datasource category ('Smileys & Emotion', ...). */
  categories: Record<string, number>;
  /** Concepts dropped because a vendor in use has no image for them. */
  missingImages: number;
}

export interface EmojiDataset {
  pairs: Pair[];
  splits: Splits<Pair> & { heldout: Pair[] };
  /** Number of distinct concepts (groups) across all pairs. */
  concepts: number;
  stats: EmojiStats;
}

interface DatasourceSkin { unified: string; image: string; [has: string]: unknown }
interface DatasourceEntry {
  name: string; unified: string; image: string; category: string; subcategory: string; sort_order: number;
  skin_variations?: Record<string, DatasourceSkin>;
  [has: string]: unknown;
}
interface BaseEntry { label: string; hexcode: string; tags?: string[]; skins?: BaseEntry[] }

/** A concept: one image per vendor, a caption entry per language. */
interface Concept {
  key: string;
  base: string;
  image: string;
  hasImg: (vendor: string) => boolean;
  category: string;
  subgroup: string;
  order: number;
}

/** Join key: upper-case code points without FE0F (emojibase drops it where emoji-datasource keeps it). */
export function emojiKey(hex: string): string {
  return hex.toUpperCase().split('-').filter((c) => c !== 'FE0F').join('-');
}

function resolvePackage(name: string, nodeModules: string | undefined): string {
  try {
    if (nodeModules) {
      const dir = path.join(nodeModules, name);
      if (!fs.existsSync(path.join(dir, 'package.json'))) throw new Error('absent');
      return dir;
    }
    return path.dirname(require.resolve(`${name}/package.json`));
  } catch {
    throw new Error(`loadEmoji: package ${name} is not installed${nodeModules ? ` in ${nodeModules}` : ''} (npm install ${name})`);
  }
}

/** Parsed package JSON, kept per file: the packages do not change under a running process. */
const jsonMemo = new Map<string, unknown>();

function readJson<T>(file: string): T {
  try {
    if (!jsonMemo.has(file)) jsonMemo.set(file, JSON.parse(fs.readFileSync(file, 'utf8')));
    return jsonMemo.get(file) as T;
  } catch (e) {
    throw new Error(`loadEmoji: cannot read ${file}: ${(e as Error).message}`);
  }
}

/** The locales emojibase-data ships (folders with a data.json). */
export function emojiLocales(nodeModules?: string): string[] {
  const dir = resolvePackage('emojibase-data', nodeModules);
  return fs.readdirSync(dir).filter((d) => fs.existsSync(path.join(dir, d, 'data.json'))).sort();
}

/** Deterministic PRNG (mulberry32) for the split draws. */
function rng(seed: number): () => number {
  let a = (Math.trunc(seed) ^ 0x5bd1e995) | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffled<T>(xs: readonly T[], rand: () => number): T[] {
  const a = xs.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** The three caption variants, in CaptionStyle order: label, label + tags, tags (falls back to the label). */
export function emojiCaptions(label: string, tags: readonly string[], maxTags = 4): { label: string; 'label+tags': string; tags: string } {
  const lower = label.toLowerCase();
  // Tags that merely repeat the label ("grinning face: face, grinning face") add length, not information.
  const kept = [...new Set(tags.map((t) => t.trim()).filter((t) => t && t.toLowerCase() !== lower))].slice(0, maxTags);
  return {
    label,
    'label+tags': kept.length ? `${label}: ${kept.join(', ')}` : label,
    tags: kept.length ? kept.join(', ') : label,
  };
}

/**
 * Load the emoji pairs and their splits (synchronous: it reads three or more JSON files and checks that the
 * image files exist; no image is decoded). Throws naming the package or locale when one is missing.
 */
export function loadEmoji(opts: EmojiOptions = {}): EmojiDataset {
  const trainVendor = opts.trainVendor ?? 'google';
  const testVendor = opts.testVendor ?? 'twitter';
  const langs = opts.langs ?? ['en'];
  const frac = opts.heldOutFraction ?? 0.1;
  const valN = opts.valConcepts ?? 256;
  const seed = opts.seed ?? 0;
  const style = opts.captionStyle ?? 'label+tags';
  const maxTags = opts.maxTags ?? 4;
  if (!(frac >= 0 && frac < 1)) throw new Error(`loadEmoji: heldOutFraction must be in [0, 1), got ${frac}`);
  if (!Number.isInteger(valN) || valN < 0) throw new Error(`loadEmoji: valConcepts must be a non-negative integer, got ${valN}`);
  if (!['label', 'label+tags', 'tags'].includes(style)) throw new Error(`loadEmoji: captionStyle must be 'label', 'label+tags' or 'tags', got ${style}`);
  if (!Array.isArray(langs) || langs.length === 0) throw new Error('loadEmoji: langs must name at least one locale');
  if (new Set(langs).size !== langs.length) throw new Error(`loadEmoji: duplicate locale in langs ${JSON.stringify(langs)}`);
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit > 0)) throw new Error(`loadEmoji: limit must be a positive integer, got ${opts.limit}`);

  // --- packages and files
  const vendors = trainVendor === testVendor ? [trainVendor] : [trainVendor, testVendor];
  const vendorDir = new Map<string, string>();
  const vendorFiles = new Map<string, Set<string>>();
  let entries: DatasourceEntry[] | undefined;
  for (const v of vendors) {
    if (!/^[a-z]+$/.test(v)) throw new Error(`loadEmoji: vendor must be a name like 'google' or 'twitter', got ${JSON.stringify(v)}`);
    const dir = resolvePackage(`emoji-datasource-${v}`, opts.nodeModules);
    const imgDir = path.join(dir, 'img', v, '64');
    vendorDir.set(v, imgDir);
    // One directory listing instead of a stat per image.
    vendorFiles.set(v, new Set(fs.existsSync(imgDir) ? fs.readdirSync(imgDir) : []));
    // Each package ships the same emoji.json (all vendors' has_img_* flags); read the first.
    entries ??= readJson<DatasourceEntry[]>(path.join(dir, 'emoji.json'));
  }
  const baseDir = resolvePackage('emojibase-data', opts.nodeModules);
  const locales = new Map<string, Map<string, BaseEntry>>();
  for (const lang of langs) {
    const file = path.join(baseDir, lang, 'data.json');
    if (!/^[a-z]{2,3}(-[a-z]+)?$/.test(lang) || !fs.existsSync(file)) {
      throw new Error(`loadEmoji: unknown locale ${JSON.stringify(lang)}; emojibase-data has ${emojiLocales(opts.nodeModules).join(', ')}`);
    }
    const byKey = new Map<string, BaseEntry>();
    for (const e of readJson<BaseEntry[]>(file)) {
      byKey.set(emojiKey(e.hexcode), e);
      // Skin-tone entries carry no tags: give them their base emoji's.
      for (const s of e.skins ?? []) byKey.set(emojiKey(s.hexcode), { ...s, tags: s.tags ?? e.tags });
    }
    locales.set(lang, byKey);
  }

  // --- concepts (emoji-datasource order = sort_order)
  const sorted = entries!.slice().sort((a, b) => a.sort_order - b.sort_order);
  const bases = opts.limit ? sorted.slice(0, opts.limit) : sorted;
  const concepts: Concept[] = [];
  let missingImages = 0;
  const usable = (c: Concept): boolean => {
    for (const v of vendors) {
      if (!c.hasImg(v) || !vendorFiles.get(v)!.has(c.image)) return false;
    }
    return true;
  };
  for (const e of bases) {
    const baseKey = emojiKey(e.unified);
    const variants: { unified: string; image: string; flags: Record<string, unknown> }[] = [{ unified: e.unified, image: e.image, flags: e }];
    if (opts.includeSkinTones) {
      for (const s of Object.values(e.skin_variations ?? {})) variants.push({ unified: s.unified, image: s.image, flags: s });
    }
    for (const v of variants) {
      const c: Concept = {
        key: emojiKey(v.unified), base: baseKey, image: v.image,
        hasImg: (vendor) => v.flags[`has_img_${vendor}`] !== false,
        category: e.category, subgroup: e.subcategory, order: e.sort_order,
      };
      if (!usable(c)) { missingImages++; continue; }
      for (const [lang, byKey] of locales) {
        if (!byKey.has(c.key)) throw new Error(`loadEmoji: ${v.unified} (${e.name}) has no entry in emojibase-data/${lang}/data.json`);
      }
      concepts.push(c);
    }
  }

  // --- held-out and val draws, over base concepts so that skin tones follow their base emoji
  const baseKeys = [...new Set(concepts.map((c) => c.base))];
  const rand = rng(seed);
  const heldSet = new Set(shuffled(baseKeys, rand).slice(0, Math.round(frac * baseKeys.length)));
  const trainBases = baseKeys.filter((k) => !heldSet.has(k));
  const valSet = new Set(shuffled(trainBases, rand).slice(0, Math.min(valN, trainBases.length)));

  // --- pairs: vendor x concept x lang
  const pairs: Pair[] = [];
  const splits: Splits<Pair> & { heldout: Pair[] } = { train: [], val: [], test: [], heldout: [] };
  for (const v of vendors) {
    for (const c of concepts) {
      for (const [lang, byKey] of locales) {
        const b = byKey.get(c.key)!;
        const caps = emojiCaptions(b.label, b.tags ?? [], maxTags);
        const p: Pair = {
          id: `${v}/${c.key}/${lang}`,
          image: { kind: 'file', path: path.join(vendorDir.get(v)!, c.image) },
          text: caps[style],
          captions: [...new Set([caps.label, caps['label+tags'], caps.tags])],
          group: c.key,
          meta: { vendor: v, lang, category: c.category, subgroup: c.subgroup, ...(opts.includeSkinTones ? { base: c.base } : {}) },
        };
        pairs.push(p);
        if (heldSet.has(c.base)) { splits.heldout.push(p); continue; }
        if (v === trainVendor) splits.train.push(p);
        if (v === testVendor) {
          splits.test.push(p);
          if (valSet.has(c.base)) splits.val.push(p);
        }
      }
    }
  }

  const splitStats = (ps: Pair[]): SplitStats => ({ pairs: ps.length, concepts: new Set(ps.map((p) => p.group)).size });
  const categories: Record<string, number> = {};
  for (const c of concepts) categories[c.category] = (categories[c.category] ?? 0) + 1;
  return {
    pairs,
    splits,
    concepts: concepts.length,
    stats: {
      concepts: concepts.length,
      heldoutConcepts: concepts.filter((c) => heldSet.has(c.base)).length,
      pairs: pairs.length,
      vendors,
      langs: langs.slice(),
      splits: Object.fromEntries(Object.entries(splits).map(([k, ps]) => [k, splitStats(ps)])),
      categories,
      missingImages,
    },
  };
}
