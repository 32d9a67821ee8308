// A run's example outputs (its 'samples' artifact) in the report: captions beside their image, instruct answers
// beside their image(s) and marked right or wrong, lm texts as a list. Reading never throws: a missing, corrupt
// or oversized file, or entries of an unknown shape, become a short note on the page. Every string is escaped
// here; an image is inlined only when its text is base64 whose bytes start with the PNG signature.
import * as fs from 'fs';
import { escapeHtml as esc } from '../plots/show';
import { normalizeAnswer } from '../eval/vqa';

/** What the caption stage writes (samples.json); `png`, when present, is the image as base64 PNG. */
export interface CaptionSampleView {
  image: string;
  /** Where the image comes from ('emoji' | 'shapes'), when the stage says. */
  source?: string;
  png?: string;
  reference: string[];
  generated: string;
}

/** What the instruct stage writes (samples.json); `png2` is the second image of two-image tasks. */
export interface InstructSampleView {
  png?: string;
  png2?: string;
  task: string;
  qtype?: string;
  question: string;
  answers: string[];
  prediction: string;
}

/** A run's samples as the report shows them; `notes` say what was left out or could not be read. */
export type RunSamples =
  | { kind: 'caption'; file: string; total: number; items: CaptionSampleView[]; notes: string[] }
  | { kind: 'instruct'; file: string; total: number; items: InstructSampleView[]; notes: string[] }
  | { kind: 'text'; file: string; total: number; items: string[]; notes: string[] }
  | { kind: 'none'; file: string; total: 0; items: []; notes: string[] };

/** Samples shown per run unless ReportOptions.maxSamples says otherwise. */
export const DEFAULT_MAX_SAMPLES = 16;
/** A samples file larger than this is not read (a report is one page; 16 small PNGs are a few hundred KB). */
export const MAX_SAMPLES_FILE_BYTES = 32 * 1024 * 1024;
/** A single inlined image larger than this (base64 characters) shows the placeholder instead. */
const MAX_PNG_CHARS = 2 * 1024 * 1024;
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * The base64 text of a PNG, or null: it must be (optionally after a `data:image/png;base64,` prefix) canonical
 * base64 whose decoded bytes start with the PNG signature. Anything else, a non-string included, is null.
 */
export function pngBase64(s: unknown): string | null {
  if (typeof s !== 'string') return null;
  const b64 = s.startsWith('data:image/png;base64,') ? s.slice('data:image/png;base64,'.length) : s;
  if (b64.length < 12 || b64.length > MAX_PNG_CHARS || b64.length % 4 !== 0) return null;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return null;
  const head = Buffer.from(b64.slice(0, 12), 'base64');
  return PNG_SIGNATURE.every((byte, i) => head[i] === byte) ? b64 : null;
}

const isStr = (x: unknown): x is string => typeof x === 'string';
const isStrArray = (x: unknown): x is string[] => Array.isArray(x) && x.every(isStr);
const isObj = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);

function asCaption(x: unknown): CaptionSampleView | null {
  if (!isObj(x) || !isStr(x.generated) || !isStrArray(x.reference)) return null;
  return {
    image: isStr(x.image) ? x.image : '', source: isStr(x.source) ? x.source : undefined, png: isStr(x.png) ? x.png : undefined,
    reference: x.reference, generated: x.generated,
  };
}

function asInstruct(x: unknown): InstructSampleView | null {
  if (!isObj(x) || !isStr(x.question) || !isStr(x.prediction) || !isStrArray(x.answers)) return null;
  return {
    png: isStr(x.png) ? x.png : undefined, png2: isStr(x.png2) ? x.png2 : undefined, task: isStr(x.task) ? x.task : '',
    qtype: isStr(x.qtype) ? x.qtype : undefined, question: x.question, answers: x.answers, prediction: x.prediction,
  };
}

/**
 * Reads a samples file: a JSON array of caption samples, of instruct samples or of strings, or (any file not
 * ending in .json) plain text with one sample per line, as the lm stage writes. At most `max` items are kept.
 * Never throws: what cannot be read is a note.
 */
export function readSamples(file: string, max = DEFAULT_MAX_SAMPLES): RunSamples {
  const none = (note: string): RunSamples => ({ kind: 'none', file, total: 0, items: [], notes: [note] });
  let text: string;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return none(`the samples file ${file} is not a file`);
    if (st.size > MAX_SAMPLES_FILE_BYTES) return none(`the samples file ${file} is ${(st.size / 2 ** 20).toFixed(0)} MB, more than the report reads (${MAX_SAMPLES_FILE_BYTES / 2 ** 20} MB)`);
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return none(code === 'ENOENT' ? `the samples file ${file} is missing` : `the samples file ${file} cannot be read (${code ?? (e as Error).message})`);
  }
  const cap = (total: number, notes: string[]) => {
    if (total > max) notes.push(`showing ${max} of ${total} samples`);
    return notes;
  };
  const isJson = /\.json$/i.test(file);
  const asLines = (): RunSamples => {
    const lines = text.split('\n').map((l) => l.trimEnd()).filter((l) => l !== '');
    return { kind: 'text', file, total: lines.length, items: lines.slice(0, max), notes: cap(lines.length, []) };
  };
  if (!isJson && !/^\s*\[/.test(text)) return asLines();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    // A text file (lm samples.txt) may well start with '['.
    if (!isJson) return asLines();
    return none(`the samples file ${file} is not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  const json = parsed;
  if (!Array.isArray(json)) return none(`the samples file ${file} holds ${json === null ? 'null' : typeof json}, not an array of samples`);
  if (json.length === 0) return none(`the samples file ${file} is empty`);
  // The kind is the one that fits the first entry that fits any; entries of another shape are counted, not shown.
  const readers: Array<['caption' | 'instruct' | 'text', (x: unknown) => unknown]> = [
    ['caption', asCaption], ['instruct', asInstruct], ['text', (x) => (isStr(x) ? x : null)],
  ];
  const reader = readers.find(([, read]) => json.some((x: unknown) => read(x) !== null));
  if (!reader) return none(`the samples file ${file} has no entry of a known shape (caption: generated + reference; instruct: question + prediction + answers)`);
  const [kind, read] = reader;
  const all = json.map(read).filter((x) => x !== null);
  const notes: string[] = [];
  if (all.length < json.length) notes.push(`${json.length - all.length} of ${json.length} entries are not ${kind} samples and are left out`);
  cap(all.length, notes);
  return { kind, file, total: all.length, items: all.slice(0, max), notes } as RunSamples;
}

/** True when the prediction equals one of the answers after VQA answer normalisation. */
export function exactMatch(prediction: string, answers: readonly string[]): boolean {
  const p = normalizeAnswer(prediction);
  return answers.some((a) => normalizeAnswer(a) === p);
}

function img(png: string | undefined, alt: string): string {
  const b64 = pngBase64(png);
  if (b64 === null) return `<div class="noimg" title="${esc(png === undefined ? 'no image in the samples file' : 'not a base64 PNG')}">${png === undefined ? 'no image' : 'bad image'}</div>`;
  return `<img src="data:image/png;base64,${b64}" alt="${esc(alt)}">`;
}

function captionCard(s: CaptionSampleView): string {
  const refs = s.reference.map((r) => `<li>${esc(r)}</li>`).join('');
  return `<div class="sample">${img(s.png, s.image)}<div class="stext">`
    + `<div><span class="lbl">generated</span> ${s.generated === '' ? '<span class="muted">(empty)</span>' : esc(s.generated)}</div>`
    + `<div class="lbl">reference${s.reference.length === 1 ? '' : 's'}</div><ul>${refs}</ul>`
    + (s.image || s.source ? `<div class="muted small">${[s.image, s.source ?? ''].filter((x) => x !== '').map(esc).join(' · ')}</div>` : '') + '</div></div>';
}

function instructCard(s: InstructSampleView): string {
  const ok = exactMatch(s.prediction, s.answers);
  const images = img(s.png, s.task) + (s.png2 !== undefined ? img(s.png2, `${s.task} (second image)`) : '');
  return `<div class="sample ${ok ? 'right' : 'wrong'}"><div class="imgs">${images}</div><div class="stext">`
    + `<div class="muted small">${esc(s.task)}${s.qtype ? ` · ${esc(s.qtype)}` : ''}</div>`
    + `<div><span class="lbl">Q</span> ${esc(s.question)}</div>`
    + `<div><span class="lbl">predicted</span> <span class="mark">${ok ? '✓' : '✗'}</span> ${s.prediction === '' ? '<span class="muted">(empty)</span>' : esc(s.prediction)}</div>`
    + `<div><span class="lbl">answer${s.answers.length === 1 ? '' : 's'}</span> ${s.answers.map(esc).join(' <span class="muted">|</span> ')}</div>`
    + '</div></div>';
}

/** The HTML of one run's samples (a heading, the notes, the cards). */
export function samplesHtml(s: RunSamples): string {
  const notes = s.notes.map((n) => `<p class="muted">${esc(n)}</p>`).join('\n');
  const from = `<p class="muted small">from ${esc(s.file)}</p>`;
  if (s.kind === 'none') return `<h3>samples</h3>\n${notes}`;
  if (s.kind === 'text') {
    return `<h3>samples: generated texts</h3>\n${notes}\n<ol class="texts">${s.items.map((t) => `<li>${esc(t)}</li>`).join('')}</ol>\n${from}`;
  }
  if (s.kind === 'caption') {
    return `<h3>samples: generated captions of held-out images</h3>\n${notes}\n<div class="samples">${s.items.map(captionCard).join('\n')}</div>\n${from}`;
  }
  const right = s.items.filter((x) => exactMatch(x.prediction, x.answers)).length;
  return `<h3>samples: answers</h3>\n<p>${right} of ${s.items.length} shown right (normalised exact match with an answer)</p>\n${notes}\n`
    + `<div class="samples">${s.items.map(instructCard).join('\n')}</div>\n${from}`;
}

export const SAMPLES_STYLE = `
.samples { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 10px; margin: .5em 0; }
.sample { display: flex; gap: 10px; border: 1px solid #ddd; border-radius: 4px; padding: 8px; }
.sample.right { border-left: 4px solid #2ca02c; } .sample.wrong { border-left: 4px solid #d62728; }
.sample.right .mark { color: #2ca02c; } .sample.wrong .mark { color: #d62728; }
.sample img, .noimg { width: 96px; height: 96px; flex: none; image-rendering: pixelated; background: #fafafa; border: 1px solid #eee; }
.imgs { display: flex; flex-direction: column; gap: 4px; flex: none; }
.noimg { display: flex; align-items: center; justify-content: center; color: #999; font-size: 12px; }
.stext { min-width: 0; overflow-wrap: anywhere; } .stext ul { margin: 2px 0; padding-left: 1.2em; }
.lbl { font-weight: 600; } .small { font-size: 12px; } ol.texts li { font-family: ui-monospace, monospace; white-space: pre-wrap; }
`;
