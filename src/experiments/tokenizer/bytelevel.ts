/**
 * The byte-level pieces shared by the trainer and the encoder: GPT-2's byte <-> printable-character table, its
 * pre-tokenization regex, UTF-8 encoding of one piece, and the splitting of text around special tokens.
 *
 * These must agree exactly with HuggingFace `tokenizers` (Rust, regexes compiled by Oniguruma) and
 * `@huggingface/tokenizers` (JavaScript): an id that differs is a silent bug, so tokenizer.test.ts compares
 * all three on several hundred strings.
 */

/**
 * GPT-2's `bytes_to_unicode` (Radford et al. 2019, encoder.py): the 188 printable Latin-1 bytes map to
 * themselves, the other 68 to U+0100.. in byte order, so every byte becomes one visible, non-space character.
 * Vocabulary strings in tokenizer.json are written in these characters (' ' is 'Ġ', '\n' is 'Ċ').
 */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
  return out;
})();

/** The inverse of BYTE_TO_CHAR, by char code (all codes are below 0x144). */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/**
 * GPT-2's pre-tokenization pattern: contractions, optional-space + letters, optional-space + digits,
 * optional-space + other symbols, whitespace not followed by non-space, whitespace.
 *
 * `\s` is spelled `\p{White_Space}` because Oniguruma's `\s` (what the Rust library runs) is the Unicode
 * White_Space property, while JavaScript's `\s` also matches U+FEFF and misses U+0085 (NEL). With this spelling
 * the pattern splits text exactly as the Rust library does.
 */
export const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

/** The same pattern as it is written in tokenizer.json files (for documentation; HF hard-codes it). */
export const GPT2_PATTERN_SOURCE = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** Split one special-token-free segment into pre-tokens (the regex matches cover the whole string). */
export function preTokenize(text: string): string[] {
  return text.match(GPT2_PATTERN) ?? [];
}

/**
 * UTF-8 bytes of `s` into `out` (grown when needed), returning the byte count. A lone surrogate becomes
 * U+FFFD (EF BF BD), as TextEncoder and the HF libraries do. Hand-written because TextEncoder allocates a
 * new array per call, which dominates the cost of short pieces.
 */
export function utf8Into(s: string, out: { buf: Uint8Array }): number {
  let buf = out.buf;
  if (buf.length < s.length * 3) buf = out.buf = new Uint8Array(s.length * 3 + 16);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      buf[n++] = c;
    } else if (c < 0x800) {
      buf[n++] = 0xc0 | (c >> 6);
      buf[n++] = 0x80 | (c & 63);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          buf[n++] = 0xf0 | (c >> 18);
          buf[n++] = 0x80 | ((c >> 12) & 63);
          buf[n++] = 0x80 | ((c >> 6) & 63);
          buf[n++] = 0x80 | (c & 63);
          continue;
        }
        c = 0xfffd;
      }
      buf[n++] = 0xe0 | (c >> 12);
      buf[n++] = 0x80 | ((c >> 6) & 63);
      buf[n++] = 0x80 | (c & 63);
    }
  }
  return n;
}

/** Bytes of a piece as a vocabulary string in GPT-2's characters ("Ġthe"). */
export function bytesToToken(bytes: ArrayLike<number>, n = bytes.length): string {
  let s = '';
  for (let i = 0; i < n; i++) s += BYTE_TO_CHAR[bytes[i]];
  return s;
}

/**
 * Finds special tokens in text the way HF matches added tokens (Rust: aho-corasick, leftmost-longest; JS: a
 * trie, longest match at the leftmost position): at each position the longest token that starts there wins.
 * An alternation sorted longest first has exactly that meaning in a JavaScript RegExp.
 */
export class SpecialMatcher {
  private readonly re: RegExp | null;

  constructor(tokens: readonly string[]) {
    const sorted = [...new Set(tokens)].filter((t) => t.length > 0).sort((a, b) => b.length - a.length || (a < b ? -1 : 1));
    this.re = sorted.length ? new RegExp(sorted.map(escapeRegExp).join('|'), 'g') : null;
  }

  /** Calls `text(segment)` for the text between matches (never empty) and `special(token)` for each match. */
  split(s: string, text: (segment: string) => void, special: (token: string) => void): void {
    if (!this.re) {
      if (s.length) text(s);
      return;
    }
    const re = this.re;
    re.lastIndex = 0;
    let last = 0;
    for (let m = re.exec(s); m; m = re.exec(s)) {
      if (m.index > last) text(s.slice(last, m.index));
      special(m[0]);
      last = m.index + m[0].length;
    }
    if (last < s.length) text(s.slice(last));
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
