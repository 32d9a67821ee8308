/**
 * Byte-level BPE tokenizer: training, HF tokenizer.json in and out, encoding identical to HuggingFace
 * `tokenizers`, the special tokens and the instruction template, and the default English corpus.
 * See docs/tokenizer.md.
 */
export { SPECIAL_TOKENS, PAD, BOS, EOS, IMAGE, AUDIO, USER, ASSISTANT, END } from './specials';
export { Tokenizer } from './bpe';
export type { TokenizerModel, Normalizer, EncodeOptions, BatchOptions, Batch, ChatTurn, ChatOptions, ChatEncoding } from './bpe';
export { trainBPE } from './train';
export type { TrainOptions } from './train';
export { textCorpus, trainDefaultTokenizer, readGlosses, parseGlossLine, wordnetDir } from './corpus';
export type { CorpusOptions, DefaultTokenizerOptions, DefaultTokenizer, Gloss } from './corpus';
