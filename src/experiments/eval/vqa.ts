/**
 * VQA accuracy (Antol et al. 2015; the official VQA evaluation script's answer normalisation and consensus
 * rule), per question type, and the majority-answer baseline.
 *
 * ```ts
 * vqaAccuracy(['Two', 'red'], [['2'], ['red', 'red', 'blue']], ['count', 'colour']);
 * // { overall: (1 + 2/3) / 2, byType: { count: { accuracy: 1, n: 1 }, colour: { accuracy: 0.667, n: 1 } }, ... }
 * ```
 * See docs/eval.md for exactly which parts of the official script are reproduced.
 */

/**
 * Punctuation the official script handles (its `punct` list): each is deleted when the text has it beside a
 * space or has a comma between digits ("1,000"), otherwise replaced by a space ("t/shirt" -> "t shirt").
 * '-', '!' and '.' are not in the list ('.' has its own rule below).
 */
const PUNCT = [';', ':', '/', "'", '[', ']', '"', '(', ')', '=', '+', '\\', '_', '>', '<', '@', '`', ',', '?'];
const COMMA_BETWEEN_DIGITS = /(\d)(,)(\d)/;
/**
 * The official script's period rule is `(?!<=\d)(\.)(?!\d)`, meant as "a period not between digits"; its
 * first group is a lookahead (a typo for the lookbehind `(?<!\d)`), so what it does is delete every period
 * not followed by a digit ("3.5" stays, "3." and "yes." lose the period). We reproduce what it does.
 */
const PERIOD = /\.(?!\d)/g;
const NUMBER_WORDS: Record<string, string> = {
  none: '0', zero: '0', one: '1', two: '2', three: '3', four: '4', five: '5', six: '6', seven: '7', eight: '8',
  nine: '9', ten: '10',
};
const ARTICLES = new Set(['a', 'an', 'the']);

/**
 * Contractions written without their apostrophe, as the official script restores them: "dont" -> "don’t".
 * Each canonical form below (with U+2019 apostrophes) is looked up by its apostrophe-free spelling and, for
 * forms with two apostrophes, by the spellings that drop one of them ("couldnt’ve", "couldn’tve").
 */
const CONTRACTED = [
  'ain’t', 'aren’t', 'can’t', 'could’ve', 'couldn’t', 'couldn’t’ve', 'didn’t', 'doesn’t', 'don’t', 'hadn’t',
  'hadn’t’ve', 'hasn’t', 'haven’t', 'he’d', 'he’d’ve', 'he’s', 'how’d', 'how’ll', 'how’s', 'i’d’ve', 'i’m',
  'i’ve', 'isn’t', 'it’d', 'it’d’ve', 'it’ll', 'ma’am', 'mightn’t', 'mightn’t’ve', 'might’ve', 'mustn’t',
  'must’ve', 'needn’t', 'not’ve', 'o’clock', 'oughtn’t', 'shan’t', 'she’d’ve', 'shouldn’t', 'shouldn’t’ve',
  'should’ve', 'somebody’d’ve', 'somebody’ll', 'somebody’s', 'someone’d', 'someone’d’ve', 'someone’ll',
  'someone’s', 'something’d', 'something’d’ve', 'something’ll', 'that’s', 'there’d', 'there’d’ve', 'there’re',
  'there’s', 'they’d', 'they’d’ve', 'they’ll', 'they’re', 'they’ve', '’twas', 'wasn’t', 'we’d’ve', 'we’ve',
  'weren’t', 'what’ll', 'what’re', 'what’s', 'what’ve', 'when’s', 'where’d', 'where’s', 'where’ve', 'who’d',
  'who’d’ve', 'who’ll', 'who’s', 'who’ve', 'why’ll', 'why’re', 'why’s', 'won’t', 'would’ve', 'wouldn’t',
  'wouldn’t’ve', 'y’all', 'y’all’ll', 'y’all’d’ve', 'you’d', 'you’d’ve', 'you’ll', 'you’re', 'you’ve',
];
const CONTRACTIONS: Map<string, string> = (() => {
  const m = new Map<string, string>();
  for (const c of CONTRACTED) {
    const parts = c.split('’');
    m.set(parts.join(''), c);
    // With two or more apostrophes, also the spellings that keep all but one.
    if (parts.length > 2) {
      for (let drop = 1; drop < parts.length; drop++) {
        const s = parts.slice(0, drop).join('’') + parts[drop] + (drop + 1 < parts.length ? '’' + parts.slice(drop + 1).join('’') : '');
        if (s !== c) m.set(s, c);
      }
    }
  }
  return m;
})();

/**
 * The official answer normalisation: newlines and tabs to spaces, trim, punctuation (the PUNCT rule, then the
 * period rule), lowercase, split on whitespace, number words zero..ten (and "none") to digits, drop the
 * articles a/an/the, restore apostrophe-less contractions, join with single spaces.
 *
 * ```ts
 * normalizeAnswer('The Two dogs.');   // '2 dogs'
 * normalizeAnswer('1,000');           // '1000'
 * ```
 */
export function normalizeAnswer(answer: string): string {
  if (typeof answer !== 'string') throw new TypeError(`normalizeAnswer: answer must be a string, got ${answer === null ? 'null' : typeof answer}`);
  const text = answer.replace(/[\n\t]/g, ' ').trim();
  let out = text;
  const commaDigits = COMMA_BETWEEN_DIGITS.test(text);
  for (const p of PUNCT) {
    // The official script tests the original text, not the text as rewritten so far.
    const drop = text.includes(p + ' ') || text.includes(' ' + p) || commaDigits;
    out = out.split(p).join(drop ? '' : ' ');
  }
  out = out.replace(PERIOD, '');
  const words: string[] = [];
  for (const w of out.toLowerCase().split(/\s+/)) {
    if (w.length === 0) continue;
    const word = NUMBER_WORDS[w] ?? w;
    if (!ARTICLES.has(word)) words.push(CONTRACTIONS.get(word) ?? word);
  }
  return words.join(' ');
}

function describeValue(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return `an array of length ${x.length}`;
  return typeof x;
}

/** The accuracy of one normalised prediction against normalised references (see `vqaScore`). */
function scoreNormalized(pred: string, refs: readonly string[]): number {
  if (refs.length === 1) return pred === refs[0] ? 1 : 0;
  if (refs.length === 10) {
    // Official: average over the 10 leave-one-out subsets of 9 annotators of min(1, matches in subset / 3).
    const total = refs.reduce((a, r) => a + (r === pred ? 1 : 0), 0);
    let acc = 0;
    for (const r of refs) acc += Math.min(1, (total - (r === pred ? 1 : 0)) / 3);
    return acc / 10;
  }
  const matches = refs.reduce((a, r) => a + (r === pred ? 1 : 0), 0);
  return Math.min(1, matches / 3);
}

/**
 * One question's accuracy. One reference: exact match after normalisation (1 or 0). Ten references (the VQA
 * datasets' ten annotators): the official average over the ten 9-annotator subsets of min(1, matches / 3).
 * Any other count: min(1, matches / 3), so a prediction needs three agreeing annotators for full credit (with
 * two references the best possible score is 2/3).
 */
export function vqaScore(pred: string, refs: readonly string[]): number {
  if (typeof pred !== 'string') throw new TypeError(`vqaScore: pred must be a string, got ${describeValue(pred)}`);
  if (!Array.isArray(refs) || refs.length === 0) throw new Error('vqaScore: refs must be a non-empty array of reference answers');
  return scoreNormalized(normalizeAnswer(pred), refs.map((r, i) => {
    if (typeof r !== 'string') throw new TypeError(`vqaScore: refs[${i}] must be a string, got ${describeValue(r)}`);
    return normalizeAnswer(r);
  }));
}

export interface VqaResult {
  /** Mean accuracy over all questions, in [0, 1]. */
  overall: number;
  /** Mean accuracy and count per question type (empty when no types were given). */
  byType: Record<string, { accuracy: number; n: number }>;
  /** Each question's accuracy, in input order. */
  perQuestion: number[];
}

function checkInputs(fn: string, preds: unknown, refs: unknown, types: unknown): void {
  if (!Array.isArray(preds)) throw new TypeError(`${fn}: preds must be an array of answers, got ${describeValue(preds)}`);
  if (!Array.isArray(refs)) throw new TypeError(`${fn}: refs must be an array of reference-answer lists, got ${describeValue(refs)}`);
  if (preds.length !== refs.length) throw new Error(`${fn}: preds has ${preds.length} answers but refs has ${refs.length} reference lists`);
  if (types !== undefined) {
    if (!Array.isArray(types)) throw new TypeError(`${fn}: types must be an array of strings, got ${describeValue(types)}`);
    if (types.length !== preds.length) throw new Error(`${fn}: types has ${types.length} entries but preds has ${preds.length}`);
    types.forEach((t, i) => {
      if (typeof t !== 'string') throw new TypeError(`${fn}: types[${i}] must be a string, got ${describeValue(t)}`);
    });
  }
  if (preds.length === 0) throw new Error(`${fn}: preds is empty (nothing to score)`);
  refs.forEach((list, i) => {
    if (!Array.isArray(list) || list.length === 0) throw new Error(`${fn}: refs[${i}] must be a non-empty array of reference answers, got ${describeValue(list)}`);
    list.forEach((r, j) => {
      if (typeof r !== 'string') throw new TypeError(`${fn}: refs[${i}][${j}] must be a string, got ${describeValue(r)}`);
    });
  });
  (preds as unknown[]).forEach((p, i) => {
    if (typeof p !== 'string') throw new TypeError(`${fn}: preds[${i}] must be a string, got ${describeValue(p)}`);
  });
}

function summarise(perQuestion: number[], types?: readonly string[]): VqaResult {
  const byType: Record<string, { accuracy: number; n: number }> = {};
  if (types) {
    const sums = new Map<string, { s: number; n: number }>();
    perQuestion.forEach((a, i) => {
      const e = sums.get(types[i]) ?? { s: 0, n: 0 };
      e.s += a; e.n++;
      sums.set(types[i], e);
    });
    for (const t of [...sums.keys()].sort()) byType[t] = { accuracy: sums.get(t)!.s / sums.get(t)!.n, n: sums.get(t)!.n };
  }
  return { overall: perQuestion.reduce((a, x) => a + x, 0) / perQuestion.length, byType, perQuestion };
}

/** VQA accuracy over a set of questions, overall and per question type (`types[i]` is question i's type). */
export function vqaAccuracy(preds: string[], refs: string[][], types?: string[]): VqaResult {
  checkInputs('vqaAccuracy', preds, refs, types);
  const perQuestion = preds.map((p, i) => scoreNormalized(normalizeAnswer(p), refs[i].map(normalizeAnswer)));
  return summarise(perQuestion, types);
}

/** The most frequent normalised answer; ties go to the first in sort order, so the choice is deterministic. */
function majority(answers: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const a of answers) {
    const n = normalizeAnswer(a);
    counts.set(n, (counts.get(n) ?? 0) + 1);
  }
  let best = '';
  let bestN = -1;
  for (const [a, n] of counts) if (n > bestN || (n === bestN && a < best)) { best = a; bestN = n; }
  return best;
}

/**
 * The majority-answer baseline: for each test question, answer the most frequent training answer of its
 * question type (a type absent from training falls back to the most frequent training answer overall), and
 * score that with `vqaAccuracy`. `trainAnswers` maps a question type to its training answers.
 *
 * ```ts
 * majorityBaseline({ yesno: ['yes', 'yes', 'no'], count: ['2', 'two', '3'] }, [['no'], ['2']], ['yesno', 'count']);
 * // answers { yesno: 'yes', count: '2' }, overall 0.5
 * ```
 */
export function majorityBaseline(trainAnswers: Record<string, string[]>, refs: string[][], types: string[]):
  VqaResult & { answers: Record<string, string> } {
  const fn = 'majorityBaseline';
  if (trainAnswers === null || typeof trainAnswers !== 'object' || Array.isArray(trainAnswers)) {
    throw new TypeError(`${fn}: trainAnswers must be an object mapping question type to its training answers`);
  }
  if (!Array.isArray(types)) throw new TypeError(`${fn}: types must be an array of strings, got ${describeValue(types)}`);
  if (!Array.isArray(refs)) throw new TypeError(`${fn}: refs must be an array of reference-answer lists, got ${describeValue(refs)}`);
  if (types.length !== refs.length) throw new Error(`${fn}: types has ${types.length} entries but refs has ${refs.length} reference lists`);
  types.forEach((t, i) => {
    if (typeof t !== 'string') throw new TypeError(`${fn}: types[${i}] must be a string, got ${describeValue(t)}`);
  });
  const all: string[] = [];
  for (const [t, list] of Object.entries(trainAnswers)) {
    if (!Array.isArray(list)) throw new TypeError(`${fn}: trainAnswers[${JSON.stringify(t)}] must be an array of strings`);
    list.forEach((a, i) => {
      if (typeof a !== 'string') throw new TypeError(`${fn}: trainAnswers[${JSON.stringify(t)}][${i}] must be a string, got ${describeValue(a)}`);
    });
    all.push(...list);
  }
  if (all.length === 0) throw new Error(`${fn}: trainAnswers holds no answers`);
  const overall = majority(all);
  const answers: Record<string, string> = {};
  for (const t of new Set(types)) {
    const list = Object.prototype.hasOwnProperty.call(trainAnswers, t) ? trainAnswers[t] : undefined;
    answers[t] = list && list.length > 0 ? majority(list) : overall;
  }
  const preds = types.map((t) => answers[t]);
  checkInputs(fn, preds, refs, types);
  const perQuestion = preds.map((p, i) => scoreNormalized(p, refs[i].map(normalizeAnswer)));
  return { ...summarise(perQuestion, types), answers };
}
