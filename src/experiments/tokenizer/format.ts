/**
 * Reading HF tokenizer.json: which files we accept and the checks that name what is wrong. Only byte-level BPE
 * files that this package's encoder handles exactly as HF does are accepted; anything else throws, because
 * encoding it anyway would silently give other ids than HF.
 */
import type { Normalizer, TokenizerModel } from './bpe';

/**
 * The largest vocabulary supported. Pairs of ids are packed into one number, a * V + b with V the vocabulary
 * size: exact below 2^42, and a small integer (no boxing in Maps) for V up to 32768, the common case.
 */
export const MAX_VOCAB = 1 << 21;

/** A parsed tokenizer.json as a TokenizerModel; `source` (a file name) starts every error message. */
export function parseTokenizerJSON(obj: unknown, source: string): TokenizerModel {
  const fail = (msg: string): never => { throw new Error(`${source}: not a byte-level BPE tokenizer.json: ${msg}`); };
  const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!isObj(obj)) return fail('the top level is not an object');
  const model = obj.model;
  if (!isObj(model)) return fail('no "model" object');
  if (model.type !== 'BPE') return fail(`model.type is ${JSON.stringify(model.type)}, expected "BPE"`);
  for (const key of ['dropout', 'unk_token', 'continuing_subword_prefix', 'end_of_word_suffix']) {
    if (model[key] !== undefined && model[key] !== null) return fail(`model.${key} is ${JSON.stringify(model[key])}; only null is supported`);
  }
  for (const key of ['fuse_unk', 'byte_fallback', 'ignore_merges']) {
    if (model[key] !== undefined && model[key] !== false) return fail(`model.${key} is ${JSON.stringify(model[key])}; only false is supported`);
  }
  const pre = obj.pre_tokenizer;
  if (!isObj(pre) || pre.type !== 'ByteLevel') return fail(`pre_tokenizer is ${JSON.stringify(isObj(pre) ? pre.type : pre)}, expected {"type": "ByteLevel"}`);
  if (pre.add_prefix_space === true) return fail('pre_tokenizer.add_prefix_space is true; only false is supported');
  if (pre.use_regex === false) return fail('pre_tokenizer.use_regex is false; only the GPT-2 regex is supported');
  const dec = obj.decoder;
  if (dec !== undefined && dec !== null && (!isObj(dec) || dec.type !== 'ByteLevel')) return fail(`decoder is ${JSON.stringify(isObj(dec) ? dec.type : dec)}, expected {"type": "ByteLevel"}`);
  let normalizer: Normalizer;
  const norm = obj.normalizer;
  if (norm === null || norm === undefined) normalizer = 'none';
  else if (isObj(norm) && norm.type === 'NFC') normalizer = 'nfc';
  else return fail(`normalizer ${JSON.stringify(isObj(norm) ? norm.type : norm)} is not supported (null or NFC)`);
  if (obj.post_processor !== undefined && obj.post_processor !== null) {
    const pp = obj.post_processor;
    if (!isObj(pp) || pp.type !== 'ByteLevel') return fail(`post_processor ${JSON.stringify(isObj(pp) ? pp.type : pp)} is not supported (null or ByteLevel, which add no tokens)`);
  }

  const vocabObj = model.vocab;
  if (!isObj(vocabObj)) return fail('model.vocab is not an object of token -> id');
  const vocab: string[] = [];
  const put = (tok: string, id: unknown, where: string): void => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= MAX_VOCAB) fail(`${where}: id ${JSON.stringify(id)} of ${JSON.stringify(tok)} is not an integer in [0, ${MAX_VOCAB})`);
    const i = id as number;
    if (vocab[i] !== undefined && vocab[i] !== tok) fail(`${where}: id ${i} is given to both ${JSON.stringify(vocab[i])} and ${JSON.stringify(tok)}`);
    vocab[i] = tok;
  };
  for (const [tok, id] of Object.entries(vocabObj)) put(tok, id, 'model.vocab');
  const addedRaw = obj.added_tokens ?? [];
  if (!Array.isArray(addedRaw)) return fail('added_tokens is not an array');
  const added: TokenizerModel['added'] = [];
  addedRaw.forEach((t: unknown, i) => {
    if (!isObj(t) || typeof t.content !== 'string' || t.content.length === 0) fail(`added_tokens[${i}] has no content string`);
    const tok = t as Record<string, unknown>;
    for (const key of ['single_word', 'lstrip', 'rstrip', 'normalized']) {
      if (tok[key] === true) fail(`added_tokens[${i}] (${JSON.stringify(tok.content)}) has ${key}: true; only false is supported`);
    }
    put(tok.content as string, tok.id, `added_tokens[${i}]`);
    added.push({ id: tok.id as number, content: tok.content as string, special: tok.special === true });
  });
  for (let i = 0; i < vocab.length; i++) {
    if (vocab[i] === undefined) return fail(`no token has id ${i} (ids must run from 0 to ${vocab.length - 1} without gaps)`);
  }
  const ids = new Map(vocab.map((t, i) => [t, i]));
  const mergesRaw = model.merges;
  if (!Array.isArray(mergesRaw)) return fail('model.merges is not an array');
  const merges: Array<[number, number]> = mergesRaw.map((m: unknown, r): [number, number] => {
    let pair: unknown[];
    if (typeof m === 'string') {
      pair = m.split(' ');
    } else if (Array.isArray(m)) {
      pair = m;
    } else {
      return fail(`model.merges[${r}] is neither "a b" nor ["a", "b"]`);
    }
    if (pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') return fail(`model.merges[${r}] ${JSON.stringify(m)} is not a pair of tokens`);
    const a = ids.get(pair[0]), b = ids.get(pair[1]);
    if (a === undefined || b === undefined) return fail(`model.merges[${r}] ${JSON.stringify(m)}: ${JSON.stringify(a === undefined ? pair[0] : pair[1])} is not in the vocabulary`);
    return [a, b];
  });
  return { vocab, merges, added, normalizer };
}
