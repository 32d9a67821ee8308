/**
 * The special tokens and the instruction template. Their ids are fixed: they are the first entries of every
 * vocabulary this package trains, in this order, so `<pad>` is always 0 and a model's embedding rows for them
 * do not move when the tokenizer is retrained on other text.
 */

export const PAD = '<pad>';
export const BOS = '<bos>';
export const EOS = '<eos>';
/** Placeholder for one image; the model replaces its embedding with the projected image features. */
export const IMAGE = '<image>';
/** Placeholder for one audio clip (the `tones` modality). */
export const AUDIO = '<audio>';
/** Opens a user turn in the instruction template. */
export const USER = '<|user|>';
/** Opens an assistant turn in the instruction template. */
export const ASSISTANT = '<|assistant|>';
/** Closes a turn; the model learns to emit it after an answer, so generation stops there. */
export const END = '<|end|>';

/** In id order: `<pad>`=0, `<bos>`=1, `<eos>`=2, `<image>`=3, `<audio>`=4, `<|user|>`=5, `<|assistant|>`=6, `<|end|>`=7. */
export const SPECIAL_TOKENS: readonly string[] = Object.freeze([PAD, BOS, EOS, IMAGE, AUDIO, USER, ASSISTANT, END]);
