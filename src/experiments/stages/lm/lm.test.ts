/**
 * The lm stage end to end on a tiny configuration: it trains on the real corpus (loss falls), logs validation
 * loss and perplexity, records artifacts, resumes exactly (interrupted-then-resumed losses equal an
 * uninterrupted run's), stops on an abort signal, and rejects bad configs naming the key. Plus the pieces:
 * packing, the batch order as a function of the step, the validation split.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { LmConfig, resolveLmConfig } from './config';
import { evaluateSceneQa, trainLm, loadLm } from './train';
import { alignCaptions, batchRows, isValDocument, lmTokenizer, packDocuments, prepareLmData } from './data';
import { MARK_SPLIT, sceneQaTexts } from '../../data/instruct';
import { Tracker } from '../../tracking';
import { readCheckpointState } from '../checkpoint';
import { Tokenizer } from '../../tokenizer';
import { generate } from '../../models/generate';
import { trainDefaultTokenizer } from '../../tokenizer';
import { resolveAlignConfig } from '../align/config';
import { alignPairs } from '../align/data';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-lm-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

function tiny(over: Record<string, unknown> = {}): LmConfig {
  const base = {
    seed: 1,
    data: { glosses: 400, captions: false, valFraction: 0.1, evalSequences: 16, cacheDir: path.join(dir, 'cache') },
    tokenizer: { vocabSize: 320, glosses: 300 },
    model: { contextLength: 32, width: 32, layers: 2, heads: 2 },
    train: { steps: 12, batchSize: 8, lr: 5e-3, warmupSteps: 2, evalEvery: 6, checkpointEvery: 0, samples: 2 },
  };
  const merged = JSON.parse(JSON.stringify(base));
  for (const [k, v] of Object.entries(over)) merged[k] = { ...(merged[k] ?? {}), ...(v as object) };
  return resolveLmConfig(null, merged);
}

test('lm config: presets resolve; bad values and unknown keys name the key', () => {
  assert.equal(resolveLmConfig('quick').train.steps, 300);
  assert.equal(resolveLmConfig('small').model.contextLength, 128);
  assert.throws(() => resolveLmConfig('huge'), /unknown preset "huge"/);
  assert.throws(() => resolveLmConfig(null, { model: { heads: 3 } }), /key model.heads \(3\) must divide model.width \(128\)/);
  assert.throws(() => resolveLmConfig(null, { train: { lrr: 1 } }), /unknown key train.lrr \(did you mean train.lr\?\)/);
  assert.throws(() => resolveLmConfig(null, { data: { valFraction: 0 } }), /key data.valFraction/);
  assert.throws(() => resolveLmConfig(null, { data: { captions: false, glosses: 0 } }), /leave the corpus empty/);
  assert.throws(() => resolveLmConfig(null, { train: { amp: 'fp8' } }), /key train.amp must be one of/);
  assert.throws(() => resolveLmConfig(null, { tokenizer: { path: 3 } }), /key tokenizer.path must be a string/);
});

test('packing: <bos> doc <eos> in a seeded order, cut into full rows; batches are a function of the step', () => {
  const docs = [[5, 6], [7], [8, 9, 10]];
  const p = packDocuments(docs, 4, 1, 2, 0);
  assert.equal(p.rows, 3); // 4 + 3 + 5 = 12 tokens
  const flat = Array.from(p.tokens);
  assert.equal(flat.filter((x) => x === 1).length, 3);
  assert.equal(flat.filter((x) => x === 2).length, 3);
  assert.deepEqual(flat.filter((x) => x > 2).sort((a, b) => a - b), [5, 6, 7, 8, 9, 10]);
  const q = packDocuments(docs, 5, 1, 2, 0);
  assert.equal(q.rows, 2);
  // Every row of an epoch exactly once; the same step gives the same rows.
  const seen = [...batchRows(0, 4, 10, 3), ...batchRows(1, 4, 10, 3), ...Array.from(batchRows(2, 4, 10, 3)).slice(0, 2)];
  assert.deepEqual(seen.slice().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(batchRows(7, 4, 10, 3), batchRows(7, 4, 10, 3));
  assert.notDeepEqual(batchRows(0, 4, 10, 3), batchRows(0, 4, 10, 4));
  let val = 0;
  for (let i = 0; i < 10000; i++) if (isValDocument(0, i, 0.1)) val++;
  assert.ok(val > 900 && val < 1100, `${val} of 10000 in validation at 0.1`);
});

test('lm trains on the text corpus, logs val perplexity, records artifacts, and resumes exactly', async () => {
  const db = path.join(dir, 'a.db');
  const full = await trainLm(tiny(), { db, outDir: path.join(dir, 'full') });
  assert.equal(full.status, 'finished');
  assert.equal(full.losses.length, 12);
  assert.ok(full.losses.every(Number.isFinite));
  assert.ok(full.losses[0] > Math.log(320) - 0.5, `the first loss ${full.losses[0]} is near ln V = ${Math.log(320)}`);
  assert.ok(full.losses[11] < full.losses[0] - 1, `loss falls: ${full.losses[0]} -> ${full.losses[11]}`);
  assert.ok(Number.isFinite(full.metrics['val/ppl']) && full.metrics['val/ppl'] > 1);
  assert.ok(Math.abs(full.metrics['val/ppl'] - Math.exp(full.metrics['val/loss'])) < 1e-6 * full.metrics['val/ppl']);
  assert.ok(full.metrics['val/ppl'] < 320, 'better than uniform');
  assert.equal(full.samples.length, 2);

  const t = Tracker.open(db);
  try {
    const info = t.getRun(full.runId);
    assert.equal(info.status, 'finished');
    assert.equal(info.stage, 'lm');
    const loss = t.metricSeries(full.runId, 'loss')[0];
    assert.deepEqual(loss.steps, Array.from({ length: 12 }, (_, i) => i + 1));
    assert.deepEqual(loss.values.map((v) => Math.fround(v)), full.losses.map((v) => Math.fround(v)));
    for (const k of ['lr', 'grad_norm', 'tokens_per_s', 'peak_mb']) assert.equal(t.metricSeries(full.runId, k)[0].values.length, 12, k);
    assert.deepEqual(t.metricSeries(full.runId, 'val/ppl')[0].steps, [6, 12]);
    assert.ok(t.metricSeries(full.runId, 'val/loss')[0].values.every(Number.isFinite));
    assert.deepEqual(t.artifacts(full.runId).map((a) => a.kind).sort(), ['checkpoint', 'config', 'samples', 'tokenizer']);
  } finally {
    t.close();
  }

  // The default tokenizer is the align stage's: the align stage's own call (same seed, vocabulary, glosses and
  // cache folder) finds the file this run trained, and it is the run's tokenizer.json.
  const acfg = resolveAlignConfig(null, { seed: 1, data: { cacheDir: path.join(dir, 'cache') }, tokenizer: { vocabSize: 320, glosses: 300 } });
  const alignTok = trainDefaultTokenizer({
    vocabSize: 320, captions: alignPairs(acfg).train.map((p) => p.text), maxGlosses: 300, cachePath: path.join(acfg.data.cacheDir, 'tokenizer'),
  });
  assert.equal(alignTok.fromCache, true);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(full.outDir, 'tokenizer.json'), 'utf8')), JSON.parse(fs.readFileSync(alignTok.path, 'utf8')));

  // The checkpoint loads back as a model that generates with the saved tokenizer.
  const { model, tokenizerPath } = loadLm(full.checkpoint);
  const tok = Tokenizer.fromFile(tokenizerPath);
  const out = generate(model, [tok.bosId], { maxNewTokens: 5, greedy: true });
  assert.equal(model.config.vocabSize, tok.vocabSize);
  assert.ok(out.tokens[0].every((id) => id >= 0 && id < tok.vocabSize));
  model.dispose();

  // Interrupted after 5 steps, then resumed by run id: the remaining losses are those of the uninterrupted run.
  const part = await trainLm(tiny(), { db, outDir: path.join(dir, 'part'), stopAfter: 5 });
  assert.equal(part.status, 'killed');
  assert.deepEqual(part.losses, full.losses.slice(0, 5));
  assert.equal(readCheckpointState(part.checkpoint).step, 5);
  const rest = await trainLm(tiny(), { db, outDir: path.join(dir, 'part'), resume: part.runId });
  assert.equal(rest.runId, part.runId);
  assert.equal(rest.status, 'finished');
  assert.deepEqual(rest.losses, full.losses.slice(5), 'resumed losses equal the uninterrupted run exactly');
  assert.equal(rest.metrics['val/loss'], full.metrics['val/loss']);
});

test('an abort signal stops at a step boundary (run killed, checkpoint written); too little data is a clear error', async () => {
  const db = path.join(dir, 'b.db');
  const ac = new AbortController();
  const r = await trainLm(tiny({ train: { steps: 50 } }), {
    db, outDir: path.join(dir, 'abort'), signal: ac.signal, onStep: (s) => { if (s.step === 2) ac.abort(); },
  });
  assert.equal(r.status, 'killed');
  assert.equal(r.stepsDone, 2);
  assert.equal(readCheckpointState(r.checkpoint).step, 2);
  const t = Tracker.open(db);
  try {
    assert.equal(t.getRun(r.runId).status, 'killed');
  } finally {
    t.close();
  }
  await assert.rejects(trainLm(tiny({ train: { batchSize: 4000 } }), { db, outDir: path.join(dir, 'big') }), /fewer than train.batchSize 4000/);
  await assert.rejects(trainLm(tiny({ tokenizer: { path: path.join(dir, 'missing.json') } }), { db, outDir: path.join(dir, 'tok') }), /key tokenizer.path: cannot load/);
});

test('data.sceneQa: scene questions join the training corpus and are answered at each evaluation', async () => {
  const db = path.join(dir, 'c.db');
  // Long enough to learn the common answers and marks, so that the scoring below has right ones to count.
  const N = 3000;
  const cfg = tiny({ data: { glosses: 100, sceneQa: N, sceneQaEval: 40, sceneQaRationale: 'marks' }, model: { contextLength: 128 }, train: { steps: 400, lr: 1e-2, evalEvery: 200 } });
  const plain = prepareLmData(tiny({ data: { glosses: 100 }, model: { contextLength: 128 } }));
  const data = prepareLmData(cfg);
  assert.equal(data.info.sceneQa, N);
  assert.equal(data.info.documents, plain.info.documents, 'the text documents are unchanged');
  const added = sceneQaTexts(1, N, 'train', 'marks').reduce((a, q) => a + data.tokenizer.encode(`${q.prompt} ${q.answer}`).length + 2, 0);
  assert.equal(data.info.trainTokens, plain.info.trainTokens + added, 'every scene question trains');
  assert.equal(data.info.valTokens, plain.info.valTokens, 'validation perplexity stays that of the text corpus');
  assert.deepEqual(data.sceneQaVal, sceneQaTexts(1, 40, 'val', 'marks'));
  assert.equal(plain.sceneQaVal.length, 0);

  const r = await trainLm(cfg, { db, outDir: path.join(dir, 'sceneqa') });
  const acc = r.metrics['val/scene_qa_acc'];
  assert.ok(acc >= 0 && acc <= 1, `val/scene_qa_acc ${acc}`);
  const types = Object.keys(r.metrics).filter((k) => k.startsWith('val/scene_qa_acc/')).map((k) => k.slice('val/scene_qa_acc/'.length));
  assert.deepEqual(types.sort(), [...new Set(data.sceneQaVal.map((q) => q.type))].sort());
  const t = Tracker.open(db);
  try {
    assert.deepEqual(t.metricSeries(r.runId, 'val/scene_qa_acc')[0].steps, [200, 400]);
    assert.equal(t.metricSeries(r.runId, 'data/scene_qa')[0].values[0], N);
  } finally {
    t.close();
  }

  // The batched, teacher-forced scoring is, question by question, greedy decoding from the true prefix: in the
  // 'scene' form, the answer generated after "..., so" is the reference one.
  const { model } = loadLm(r.checkpoint);
  const tok = data.tokenizer;
  const sameIds = (a: number[], b: number[]) => a.length === b.length && a.every((id, j) => id === b[j]);
  const greedyIds = (prompt: string, n: number) => generate(model, tok.encode(prompt, { bos: true }), { maxNewTokens: n, greedy: true }).tokens[0];
  // The model learned the 'marks' form and gets no 'scene' form answer right, so every other question takes the
  // model's own greedy reply as its answer (where that text encodes back to the same tokens): the match below then
  // has right answers as well as wrong ones to compare. (This 320-token vocabulary makes some texts longer than 128
  // tokens; those are not scored.)
  const sceneForm = sceneQaTexts(1, 40, 'val').map((q, i) => {
    if (i % 2 === 1 || tok.encode(`${q.prompt} ${q.answer}`, { bos: true }).length > 128) return q;
    const ids = greedyIds(q.prompt, tok.encode(` ${q.answer}`).length);
    const text = tok.decode(ids);
    const own = { ...q, answer: text.slice(1) };
    return text.startsWith(' ') && sameIds(tok.encode(`${own.prompt} ${own.answer}`), [...tok.encode(q.prompt), ...ids]) ? own : q;
  });
  const fits = sceneForm.filter((q) => tok.encode(`${q.prompt} ${q.answer}`, { bos: true }).length <= 128);
  assert.ok(fits.length >= 30 && fits.length < 40, `${fits.length} of 40 texts fit`);
  for (const q of fits) assert.deepEqual(tok.encode(`${q.prompt} ${q.answer}`), [...tok.encode(q.prompt), ...tok.encode(` ${q.answer}`)], 'the answer is its own tokens');
  const one = fits.map((q) => {
    const want = tok.encode(` ${q.answer}`);
    return { type: q.type, ok: greedyIds(q.prompt, want.length).every((id, j) => id === want[j]) ? 1 : 0 };
  });
  const right = one.reduce((a, x) => a + x.ok, 0);
  assert.ok(right >= 10 && right < one.length, `greedy decoding gets some right and some wrong (${right} of ${one.length}), so the match below compares something`);
  const e = evaluateSceneQa(model, tok, sceneForm);
  assert.deepEqual([e.scored, e.tooLong], [fits.length, 40 - fits.length]);
  assert.equal(e.marksAcc, 1, "the 'scene' form has no marks to get wrong");
  assert.ok(Math.abs(e.acc - right / one.length) < 1e-12);
  for (const [k, v] of Object.entries(e.byType)) {
    const of = one.filter((x) => x.type === k);
    assert.ok(Math.abs(v - of.reduce((a, x) => a + x.ok, 0) / of.length) < 1e-12, k);
  }
  // 'marks': a question is right only when every mark is, each predicted from the true words before it.
  const mq = data.sceneQaVal.filter((q) => tok.encode(`${q.prompt} ${q.answer}`, { bos: true }).length <= 128);
  const em = evaluateSceneQa(model, tok, data.sceneQaVal);
  assert.equal(em.scored, mq.length);
  assert.equal(r.metrics['val/scene_qa_scored'], mq.length);
  assert.ok(Math.abs(em.acc - acc) < 1e-12, 'the logged figure is the final weights\'');
  assert.ok(Math.abs(em.marksAcc - r.metrics['val/scene_qa_marks_acc']) < 1e-12);
  let marksOk = 0, allOk = 0;
  for (const q of mq) {
    const pieces = q.prompt.split(MARK_SPLIT);
    let prefix = '';
    let good = true;
    pieces.forEach((piece, k) => {
      if (k % 2 === 1) {
        const want = tok.encode(piece);
        const out = generate(model, tok.encode(prefix, { bos: true }), { maxNewTokens: want.length, greedy: true });
        if (!out.tokens[0].every((id, j) => id === want[j])) good = false;
      }
      prefix += piece;
    });
    assert.equal(prefix, q.prompt);
    marksOk += good ? 1 : 0;
    const want = tok.encode(` ${q.answer}`);
    const out = generate(model, tok.encode(q.prompt, { bos: true }), { maxNewTokens: want.length, greedy: true });
    allOk += good && out.tokens[0].every((id, j) => id === want[j]) ? 1 : 0;
  }
  assert.ok(marksOk > 0 && allOk > 0, `something to count: ${marksOk}, ${allOk}`);
  assert.ok(Math.abs(em.marksAcc - marksOk / mq.length) < 1e-12, `marks ${em.marksAcc} vs ${marksOk}/${mq.length}`);
  assert.ok(Math.abs(em.acc - allOk / mq.length) < 1e-12);
  const long = evaluateSceneQa(model, tok, [{ prompt: `is there a red star? ${'a small red circle on the left and '.repeat(20)}, so`, answer: 'no', type: 'yesno' }]);
  assert.deepEqual([long.scored, long.tooLong], [0, 1], 'a text longer than the context is not scored');
  // When no question fits the context, the run says so (scored 0) and logs no accuracy rather than NaN.
  const short = await trainLm(tiny({ data: { sceneQa: 50, sceneQaEval: 10 }, model: { contextLength: 16 }, train: { steps: 2, evalEvery: 0 } }), { db, outDir: path.join(dir, 'short') });
  assert.equal(short.metrics['val/scene_qa_scored'], 0);
  assert.equal(short.metrics['val/scene_qa_acc'], undefined);
  model.dispose();
  assert.throws(() => resolveLmConfig(null, { data: { sceneQa: -1 } }), /key data.sceneQa/);
});

test('tokenizer.sceneTexts: scene texts join the default tokenizer\'s training text, so the shapes words are whole tokens', () => {
  const words = ['circle', 'triangle', 'purple', 'yes'];
  const of = (n: number) => {
    const cfg = tiny({ tokenizer: { vocabSize: 512, sceneTexts: n } });
    const t = lmTokenizer(cfg, alignCaptions(cfg));
    return { file: t.path, pieces: words.map((w) => t.tokenizer.encode(` ${w}`).length) };
  };
  const plain = of(0);
  const scene = of(300);
  assert.notEqual(scene.file, plain.file, 'its own cache file, not the align stage\'s');
  assert.deepEqual(scene.pieces, [1, 1, 1, 1]);
  assert.ok(plain.pieces.every((n) => n > 1), `without them: ${plain.pieces}`);
  assert.equal(of(300).file, scene.file, 'the same texts find the same cache file');
  assert.throws(() => tiny({ tokenizer: { sceneTexts: 10, path: 'runs/x/tokenizer.json' } }), /key tokenizer.sceneTexts trains the default tokenizer/);
});

