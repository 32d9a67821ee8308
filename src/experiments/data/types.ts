/**
 * The shared shapes of the data layer: what a dataset yields, what the image pipeline takes, what the loader
 * batches. Everything in src/experiments/data, the tokenizer, the stages and the notebooks speak these types.
 */

/** Where an image's bytes come from: a file, bytes in memory (PNG/JPEG/WebP...), or SVG source text. */
export type ImageRef =
  | { kind: 'file'; path: string }
  | { kind: 'bytes'; bytes: Uint8Array; name?: string }
  | { kind: 'svg'; svg: string; name?: string };

/** One image-text pair. `id` is unique within its dataset and stable across runs. */
export interface Pair {
  id: string;
  image: ImageRef;
  /** The caption used for training (one string; `captions` holds every alternative). */
  text: string;
  captions?: string[];
  /** A grouping key: the concept (emoji code point, scene id...). Retrieval counts a match by `group`. */
  group: string;
  /** Free-form labels used by samplers and splits: vendor, lang, category, source, modality... */
  meta: Record<string, string | number | boolean>;
}

/** A visual question with its answers (several references allowed, VQA style). */
export interface QA {
  question: string;
  answers: string[];
  /** colour | shape | count | position | yesno | ... */
  type: string;
}

/** A record of the instruction JSON-lines format (DESIGN.md): images as base64 of PNG bytes. */
export interface InstructionRecord {
  instruction: string;
  input_image?: string;
  reference_image?: string;
  output: string;
  /** Optional fields a generator may add (task type, question type, scene id); readers keep them. */
  [extra: string]: unknown;
}

/** Named splits of a dataset. */
export interface Splits<T> {
  train: T[];
  val: T[];
  test: T[];
  [name: string]: T[];
}

/** How bad records are handled by readers and the image pipeline. */
export type OnError = 'throw' | 'skip';

/** Counts a reader or pipeline reports when `onError: 'skip'` dropped records. */
export interface SkipReport {
  skipped: number;
  /** The first few reasons, each naming the file or line. */
  reasons: string[];
}
