/**
 * The caption stage end to end on tiny configurations: a tiny align run and a tiny lm run in a temp db, then
 * caption training through the frozen encoder (its weights bitwise unchanged, only projector and GPT get
 * gradients), the loss falling on a tiny subset, BLEU-4 / ROUGE-L logged, the align run recorded as parent,
 * exact resume, the from-scratch fallback, and config errors that name the key.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ml from '../../../index';
import { resolveAlignConfig } from '../align/config';
import { trainAlign } from '../align/train';
import { loadScorer } from '../align/filter';
import { resolveLmConfig } from '../lm/config';
import { trainLm, loadLm } from '../lm/train';
import { Tracker } from '../../tracking';
import { Tokenizer } from '../../tokenizer';
import { readCheckpointState } from '../checkpoint';
import { CaptionConfig, resolveCaptionConfig } from './config';
import { trainCaption } from './train';
import { captionBatch, captionSceneQa, prepareCaptionData, sceneQaBatch } from './data';
import { sceneQaTexts } from '../../data/instruct';
import { CaptionModel, CaptionNet } from './model';
import { objectMentions, objectScores, placedMentions } from './objects';
import { alignPairs } from '../align/data';
import { decodeBase64Image, decodeImage } from '../../data/image';
import { groundedCaption, shapesDataset, type SceneObject } from '../../data/shapes';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-caption-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
const cache = path.join(dir, 'cache');
const db = path.join(dir, 'c.db');

function tiny(over: Record<string, unknown> = {}): CaptionConfig {
  const base = {
    seed: 2,
    data: { maxTrain: 24, maxTextLen: 12, evalSamples: 6, samples: 3 },
    model: { projectorHidden: 32 },
    train: { steps: 10, batchSize: 8, lr: 3e-3, warmupSteps: 1, evalEvery: 5, checkpointEvery: 0, weightDecay: 0 },
    generate: { maxNewTokens: 8 },
  };
  const merged = JSON.parse(JSON.stringify(base));
  for (const [k, v] of Object.entries(over)) merged[k] = { ...(merged[k] ?? {}), ...(v as object) };
  return resolveCaptionConfig(null, merged);
}

/** A 1-layer GPT of the given context length, trained for 2 steps: the caption stage's language model in these tests. */
function tinyLm(contextLength: number) {
  return resolveLmConfig(null, {
    seed: 1,
    data: { glosses: 300, captions: true, valFraction: 0.1, evalSequences: 8, cacheDir: cache },
    tokenizer: { vocabSize: 320, glosses: 300 },
    model: { contextLength, width: 32, layers: 1, heads: 2 },
    train: { steps: 2, batchSize: 8, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0, samples: 0 },
  });
}

let prepared: Promise<{ align: string; alignRunId: number; lm: string }> | null = null;
function prepare(): Promise<{ align: string; alignRunId: number; lm: string }> {
  prepared ??= (async () => {
    const a = await trainAlign(resolveAlignConfig(null, {
      seed: 3,
      data: { imageSize: 16, maxTrain: 48, evalSize: 16, finalEval: false, workers: 0, cacheDir: cache },
      tokenizer: { vocabSize: 320, contextLength: 12, glosses: 300 },
      model: { patchSize: 4, visionWidth: 32, visionLayers: 1, visionHeads: 2, textWidth: 32, textLayers: 1, textHeads: 2, embedDim: 16 },
      train: { steps: 2, batchSize: 16, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0 },
    }), { db, outDir: path.join(dir, 'align') });
    const l = await trainLm(tinyLm(32), { db, outDir: path.join(dir, 'lm') });
    return { align: a.checkpoint, alignRunId: a.runId, lm: l.checkpoint };
  })();
  return prepared;
}

test('caption config: presets resolve; bad values and unknown keys name the key', () => {
  assert.equal(resolveCaptionConfig('quick').train.steps, 500);
  assert.equal(resolveCaptionConfig('quick').model.prefix, 'tokens', 'the instruct stage needs the tokens prefix');
  assert.equal(resolveCaptionConfig('small').train.steps, 2000);
  assert.throws(() => resolveCaptionConfig('huge'), /unknown preset "huge"/);
  assert.throws(() => resolveCaptionConfig(null, { model: { prefix: 'mean' } }), /key model.prefix must be one of/);
  assert.throws(() => resolveCaptionConfig(null, { train: { klWieght: 1 } }), /unknown key train.klWieght \(did you mean train.klWeight\?\)/);
  assert.throws(() => resolveCaptionConfig(null, { train: { klWeight: -1 } }), /key train.klWeight/);
  assert.throws(() => resolveCaptionConfig(null, { lm: { scratch: { heads: 3 } } }), /key lm.scratch.heads \(3\) must divide lm.scratch.width/);
  assert.throws(() => resolveCaptionConfig(null, { data: { maxTextLen: 2 } }), /key data.maxTextLen/);
  assert.throws(() => resolveCaptionConfig(null, { align: { checkpoint: 3 } }), /key align.checkpoint must be a string/);
  assert.throws(() => resolveCaptionConfig(null, { data: { shapesCaptions: 'places' } }), /key data.shapesCaptions must be one of/);
  assert.throws(() => resolveCaptionConfig(null, { data: { shapesScenes: -1 } }), /key data.shapesScenes/);
});

test('the frozen encoder gets no gradients and stays bitwise unchanged; projector and GPT all get gradients', async () => {
  const p = await prepare();
  const cfg = tiny();
  const scorer = loadScorer(p.align);
  const lm = loadLm(p.lm);
  const tok = Tokenizer.fromFile(lm.tokenizerPath);
  const net = new CaptionNet(scorer.config.model.visionWidth, 32, lm.model);
  const model = new CaptionModel(scorer.model.net, net, scorer.config.data.imageSize, 'tokens');
  try {
    const before = Object.fromEntries(Object.entries(model.encoder.stateDict()).map(([k, v]) => [k, Buffer.from((v.toArray() as Float32Array).buffer.slice(0))]));
    const data = await prepareCaptionData(cfg, scorer.config, tok);
    const opt = new ml.optim.AdamW(net.parameters(), { lr: 1e-2 });
    for (let s = 0; s < 2; s++) {
      const b = captionBatch(data, s, 4, cfg.seed);
      opt.zeroGrad();
      ml.tidy(() => model.loss(b.images, b.tokens, b.lengths, 4, data.T).backward());
      for (const [k, v] of Object.entries(model.encoder.stateDict())) assert.equal(v.grad, null, `encoder ${k} got a gradient`);
      for (const [k, v] of Object.entries(net.stateDict())) {
        assert.ok(v.grad !== null, `trainable ${k} got no gradient`);
      }
      opt.step();
    }
    for (const [k, v] of Object.entries(model.encoder.stateDict())) {
      assert.ok(before[k].equals(Buffer.from((v.toArray() as Float32Array).buffer.slice(0))), `encoder ${k} changed`);
    }
  } finally {
    model.dispose();
  }
});

test('caption trains (loss falls), logs BLEU-4 / ROUGE-L, records the align parent, and resumes exactly', async () => {
  const p = await prepare();
  const cfg = tiny({ train: { steps: 10, evalEvery: 5 } });
  const full = await trainCaption(cfg, { db, outDir: path.join(dir, 'full') });
  assert.equal(full.status, 'finished');
  assert.equal(full.losses.length, 10);
  assert.ok(full.losses.every(Number.isFinite));
  const head = (full.losses[0] + full.losses[1]) / 2;
  const tail = (full.losses[8] + full.losses[9]) / 2;
  assert.ok(tail < head, `loss falls: ${full.losses.map((x) => x.toFixed(3)).join(' ')}`);
  assert.equal(full.alignCheckpoint, path.resolve(p.align));
  assert.equal(full.lmCheckpoint, path.resolve(p.lm));
  for (const k of ['val/bleu4', 'val/rougeL']) {
    assert.ok(Number.isFinite(full.metrics[k]) && full.metrics[k] >= 0 && full.metrics[k] <= 1, k);
  }
  const samples = JSON.parse(fs.readFileSync(path.join(full.outDir, 'samples.json'), 'utf8')) as Array<{ image: string; reference: string[]; generated: string }>;
  assert.equal(samples.length, 3);
  assert.ok(samples.every((s) => s.image !== '' && s.reference.length >= 1 && typeof s.generated === 'string'));
  assert.ok(samples.every((s) => (s as unknown as { source: string }).source === 'emoji'));
  assert.ok(samples.every((s) => Buffer.from((s as unknown as { png: string }).png, 'base64').subarray(1, 4).toString() === 'PNG'), 'png is base64 PNG');
  assert.deepEqual(Object.keys(full.metrics).sort(), ['val/bleu4', 'val/rougeL'], 'one source: no per-source or object keys');
  assert.ok(Number.isFinite(full.baseline['baseline/rougeL']));
  const st = readCheckpointState(full.checkpoint);
  assert.equal(st.stage, 'caption');
  assert.equal((st.extra as { alignCheckpoint: string }).alignCheckpoint, path.resolve(p.align));

  const t = Tracker.open(db);
  try {
    const info = t.getRun(full.runId);
    assert.equal(info.stage, 'caption');
    assert.equal(info.parentRunId, p.alignRunId);
    const bleu = t.metricSeries(full.runId, 'val/bleu4')[0];
    assert.deepEqual(bleu.steps, [5, 10]);
    assert.ok(bleu.values.every(Number.isFinite));
    assert.deepEqual(t.metricSeries(full.runId, 'val/rougeL')[0].steps, [5, 10]);
    for (const k of ['loss', 'lr', 'grad_norm', 'samples_per_s']) assert.equal(t.metricSeries(full.runId, k)[0].steps.length, 10, k);
    assert.ok(t.artifacts(full.runId).some((a) => a.kind === 'samples'));
  } finally {
    t.close();
  }

  const part = await trainCaption(cfg, { db, outDir: path.join(dir, 'part'), stopAfter: 4 });
  assert.equal(part.status, 'killed');
  const rest = await trainCaption(cfg, { db, resume: part.runId });
  assert.equal(rest.status, 'finished');
  assert.equal(rest.outDir, part.outDir);
  const joined = [...part.losses, ...rest.losses];
  assert.deepEqual(joined.map((x) => Math.fround(x)), full.losses.map((x) => Math.fround(x)));
  assert.deepEqual(rest.samples.map((s) => s.generated), full.samples.map((s) => s.generated));
});

test('without an lm run the GPT trains from scratch (with a warning); without an align run it names the key', async () => {
  const p = await prepare();
  const db2 = path.join(dir, 'empty.db');
  await assert.rejects(trainCaption(tiny(), { db: db2, outDir: path.join(dir, 'none') }), /key align.checkpoint/);
  const msgs: string[] = [];
  const r = await trainCaption(tiny({ align: { checkpoint: p.align }, train: { steps: 2, evalEvery: 0 }, lm: { scratch: { contextLength: 32, width: 32, layers: 1, heads: 2 } } }), {
    db: db2, outDir: path.join(dir, 'scratch'), onStatus: (m) => msgs.push(m),
  });
  assert.equal(r.status, 'finished');
  assert.equal(r.lmCheckpoint, null);
  const t = Tracker.open(db2);
  try {
    assert.equal(t.getRun(r.runId).parentRunId, null); // the align run lives in the other db
  } finally {
    t.close();
  }
  assert.ok(msgs.some((m) => /warning: no lm checkpoint/.test(m)), msgs.join('\n'));
  await assert.rejects(trainCaption(tiny({ align: { checkpoint: p.align }, train: { klWeight: 0.5 } }), { db: db2, outDir: path.join(dir, 'kl') }), /key train.klWeight/);
});

test('klWeight > 0: KL to the frozen lm is 0 at the first step (same weights) and logged every step', async () => {
  await prepare();
  const r = await trainCaption(tiny({ train: { steps: 4, evalEvery: 0, klWeight: 0.5 }, data: { evalSamples: 2, samples: 0 } }), { db, outDir: path.join(dir, 'kl') });
  assert.equal(r.status, 'finished');
  const t = Tracker.open(db);
  try {
    const kl = t.metricSeries(r.runId, 'loss/kl')[0];
    assert.deepEqual(kl.steps, [1, 2, 3, 4]);
    assert.ok(Math.abs(kl.values[0]) < 1e-5, `first KL ${kl.values[0]}`);
    assert.ok(kl.values[3] > 1e-6, `KL grows once the GPT moves: ${kl.values.join(' ')}`);
  } finally {
    t.close();
  }
});

test('object mentions and scores on hand-made captions', () => {
  const obj = (colour: string, shape: string): SceneObject => ({ colour, shape, size: 'small', x: 50, y: 50 } as SceneObject);
  assert.deepEqual(objectMentions('A large Red circle, a small blue square and a small red circle, with the red circle above the blue square'),
    [{ colour: 'red', shape: 'circle' }, { colour: 'blue', shape: 'square' }]);
  assert.deepEqual(objectMentions('two green crosses and the purple object'), [{ colour: 'green', shape: 'cross' }]);
  assert.deepEqual(objectMentions('a large circle left of a redcircle'), []);
  const scene = [obj('red', 'circle'), obj('blue', 'square'), obj('green', 'star')];
  // Two of three objects named, one wrong mention (yellow star): recall 2/3, precision 2/3.
  let s = objectScores(['a small red circle left of a large blue square and a yellow star'], [scene]);
  assert.equal(s.recall, 2 / 3);
  assert.equal(s.precision, 2 / 3);
  assert.deepEqual([s.objects, s.mentions, s.matched], [3, 3, 2]);
  assert.equal(s.colourRecall, 2 / 3, 'red and blue named, green not');
  assert.equal(s.shapeRecall, 1, 'circle, square and star all named (the star with the wrong colour)');
  // Micro average: a perfect caption of a one-object scene, and one with no mention at all (adds 2 objects, no mention).
  s = objectScores(['a large orange triangle', 'a small thing'], [[obj('orange', 'triangle')], [obj('red', 'star'), obj('blue', 'cross')]]);
  assert.equal(s.recall, 1 / 3);
  assert.equal(s.precision, 1);
  // Colour and shape must go together: right colour on the wrong shape is a miss and a wrong mention.
  s = objectScores(['a red square'], [[obj('red', 'circle')]]);
  assert.deepEqual([s.recall, s.precision, s.colourRecall, s.shapeRecall], [0, 0, 1, 0]);
  assert.deepEqual(objectScores([], []), { recall: 0, precision: 0, objects: 0, mentions: 0, matched: 0, colourRecall: 0, shapeRecall: 0, placed: 0, placeAccuracy: 0 });
  assert.equal(s.placed, 0, 'no place phrase, no place score');
  // Grounded captions: places of right mentions are checked against placeOf; a wrong object's place is not counted.
  const at = (colour: string, shape: string, x: number, y: number): SceneObject => ({ colour, shape, size: 'small', x, y } as SceneObject);
  const grounded = [at('red', 'circle', 10, 10), at('blue', 'square', 90, 50), at('green', 'star', 50, 90)];
  assert.deepEqual(placedMentions('a small Red circle at the top left and a large blue square in the middle'),
    [{ colour: 'red', shape: 'circle', place: 'at the top left' }, { colour: 'blue', shape: 'square', place: 'in the middle' }]);
  s = objectScores(['a small red circle at the top left, a small blue square in the middle, a yellow star at the bottom and a green star at the bottom'], [grounded]);
  assert.deepEqual([s.placed, s.placeAccuracy, s.recall], [3, 2 / 3, 1]);
  assert.throws(() => objectScores(['a'], []), /1 captions but 0 scenes/);
});

test('on a mixed align run: per-source BLEU-4 / ROUGE-L, shapes object scores, the prior baseline, samples with both sources and their PNG', async () => {
  const p = await prepare();
  const a = await trainAlign(resolveAlignConfig(null, {
    seed: 3,
    data: { dataset: 'mixed', shapesScenes: 40, imageSize: 16, maxTrain: 48, evalSize: 16, finalEval: false, workers: 0, cacheDir: cache },
    tokenizer: { vocabSize: 320, contextLength: 12, glosses: 300 },
    model: { patchSize: 4, visionWidth: 32, visionLayers: 1, visionHeads: 2, textWidth: 32, textLayers: 1, textHeads: 2, embedDim: 16 },
    train: { steps: 2, batchSize: 16, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0 },
  }), { db: path.join(dir, 'mixed.db'), outDir: path.join(dir, 'align-mixed') });
  const cfg = tiny({ align: { checkpoint: a.checkpoint }, lm: { checkpoint: p.lm }, train: { steps: 3, evalEvery: 0 }, data: { maxTrain: 24, evalSamples: 8, samples: 4, maxTextLen: 12 } });
  const r = await trainCaption(cfg, { db: path.join(dir, 'mixed.db'), outDir: path.join(dir, 'cap-mixed') });
  assert.equal(r.status, 'finished');
  const keys = ['bleu4', 'rougeL', 'emoji/bleu4', 'emoji/rougeL', 'shapes/bleu4', 'shapes/rougeL', 'shapes/object_recall', 'shapes/object_precision', 'shapes/colour_recall', 'shapes/shape_recall'];
  for (const k of keys) {
    for (const m of [r.metrics[`val/${k}`], r.baseline[`baseline/${k}`]]) assert.ok(Number.isFinite(m) && m >= 0 && m <= 1, `${k}: ${m}`);
  }
  // The baseline captions are the most common training captions; shapes scenes are all different, emoji ones not.
  assert.ok(typeof r.priorCaption.shapes === 'string' && r.priorCaption.shapes !== '' && typeof r.priorCaption.emoji === 'string');
  const t = Tracker.open(path.join(dir, 'mixed.db'));
  try {
    assert.deepEqual(t.metricSeries(r.runId, 'val/shapes/object_recall')[0].steps, [3]);
    assert.deepEqual(t.metricSeries(r.runId, 'baseline/shapes/object_recall')[0].steps, [0]);
  } finally {
    t.close();
  }
  assert.deepEqual(r.samples.map((s) => s.source), ['emoji', 'shapes', 'emoji', 'shapes'], 'samples alternate between the sources');
  const sc = loadScorer(a.checkpoint);
  const val = alignPairs(sc.config).val;
  sc.dispose();
  for (const s of r.samples.filter((x) => x.source === 'shapes')) {
    const pair = val.find((q) => q.id === s.image)!;
    assert.ok(pair, s.image);
    const shown = await decodeBase64Image(s.png, { size: 16 });
    const want = await decodeImage(pair.image, { size: 16 });
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(shown[i] - want[i]));
    assert.ok(worst < 0.03, `the PNG is the encoder's input image (max difference ${worst})`);
  }
});

test("data.shapesCaptions 'grounded': every shapes pair captioned with its objects' places (text and references), emoji pairs unchanged; data.shapesScenes sets the scene count", async () => {
  const p = await prepare();
  const lm = loadLm(p.lm);
  const tok = Tokenizer.fromFile(lm.tokenizerPath);
  lm.model.dispose();
  const alignCfg = resolveAlignConfig(null, {
    seed: 3,
    data: { dataset: 'mixed', shapesScenes: 40, imageSize: 16, maxTrain: 0, evalSize: 16, finalEval: false, workers: 0, cacheDir: cache },
    tokenizer: { vocabSize: 320, contextLength: 12, glosses: 300 },
    model: { patchSize: 4, visionWidth: 32, visionLayers: 1, visionHeads: 2, textWidth: 32, textLayers: 1, textHeads: 2, embedDim: 16 },
  });
  const cfg = tiny({ data: { maxTrain: 0, shapesCaptions: 'grounded', shapesScenes: 30, maxTextLen: 60, evalSamples: 0 } });
  const data = await prepareCaptionData(cfg, alignCfg, tok);
  const scenes = shapesDataset({ seed: 3, train: 30, val: 10, test: 10 }).scenes;
  const byId = new Map([...scenes.train, ...scenes.val].map((sc) => [sc.id, sc]));
  const plain = alignPairs(alignCfg).train;
  const shapesPairs = data.train.pairs.filter((q) => q.meta.source === 'shapes');
  assert.equal(shapesPairs.length, 30, 'data.shapesScenes replaces the align run\'s 40');
  for (const q of shapesPairs) {
    const sc = byId.get(q.id)!;
    assert.ok(sc, q.id);
    assert.equal(q.text, groundedCaption(sc.objects));
    assert.deepEqual(q.captions, [q.text]);
  }
  const emoji = data.train.pairs.filter((q) => q.meta.source === 'emoji');
  assert.ok(emoji.length > 0);
  assert.deepEqual(emoji.map((q) => q.text), plain.filter((q) => q.meta.source === 'emoji').map((q) => q.text));
  // The tokens are the grounded texts' (maxTextLen 60 holds them whole).
  const i = data.train.pairs.indexOf(shapesPairs[0]);
  const ids = Array.from(data.train.tokens.subarray(i * data.T, i * data.T + data.train.lengths[i]));
  assert.equal(tok.decode(ids, { skipSpecial: true }).trim(), shapesPairs[0].text);
  // Held-out shapes images are judged against their grounded caption.
  data.eval.sources.forEach((src, r) => {
    if (src === 'shapes') assert.deepEqual(data.eval.refs[r], [groundedCaption(byId.get(data.eval.ids[r])!.objects)]);
  });
  assert.ok(data.eval.sources.includes('shapes'));
});

test('data.sceneQa: the lm stage\'s scene questions replayed as text-only rows; their loss adds to the caption loss, held-out ones are scored', async () => {
  const p = await prepare();
  assert.throws(() => resolveCaptionConfig(null, { data: { sceneQa: -1 } }), /key data.sceneQa/);
  assert.throws(() => resolveCaptionConfig(null, { train: { sceneQaBatch: 0 } }), /key train.sceneQaBatch/);
  assert.throws(() => resolveCaptionConfig(null, { train: { sceneQaWeight: -0.5 } }), /key train.sceneQaWeight/);
  // A GPT long enough for whole scene questions, in a db of its own (the lm runs of the shared db stay as they are).
  const db3 = path.join(dir, 'qa.db');
  const l = await trainLm(tinyLm(128), { db: db3, outDir: path.join(dir, 'qa-lm') });
  const tok = Tokenizer.fromFile(loadLm(l.checkpoint).tokenizerPath);
  const over = (qa: Record<string, unknown>, train: Record<string, unknown> = {}) => tiny({
    align: { checkpoint: p.align }, lm: { checkpoint: l.checkpoint },
    data: { evalSamples: 2, samples: 0, ...qa }, train: { steps: 6, evalEvery: 3, ...train },
  });

  // The rows hold exactly the lm stage's 'train' questions, packed; a batch is a function of the step.
  const cfg = over({ sceneQa: 40, sceneQaEval: 30 }, { sceneQaBatch: 4 });
  const qa = captionSceneQa(cfg, tok, 128);
  assert.equal(qa.train.documents, 40);
  assert.equal(qa.val.length, 30);
  const texts = sceneQaTexts(cfg.seed, 40, 'train').map((q) => `${q.prompt} ${q.answer}`);
  const packed = tok.decode(Array.from(qa.train.tokens), { skipSpecial: true });
  assert.ok(texts.filter((t) => packed.includes(t)).length >= 30, 'most questions appear whole (the last ones may be cut by the row length)');
  assert.deepEqual(sceneQaBatch(qa.train, 5, 4, 128, cfg.seed), sceneQaBatch(qa.train, 5, 4, 128, cfg.seed));
  assert.notDeepEqual(sceneQaBatch(qa.train, 5, 4, 128, cfg.seed), sceneQaBatch(qa.train, 6, 4, 128, cfg.seed));
  assert.deepEqual(captionSceneQa(over({}), tok, 128).val, [], 'off by default');
  assert.throws(() => captionSceneQa(over({ sceneQa: 1 }, { sceneQaBatch: 4 }), tok, 128), /key data.sceneQa \(1\) fills 0 rows of 128 tokens, fewer than train.sceneQaBatch 4/);

  const plain = await trainCaption(over({}), { db: db3, outDir: path.join(dir, 'qa-plain') });
  const withQa = await trainCaption(cfg, { db: db3, outDir: path.join(dir, 'qa-on') });
  const zero = await trainCaption(over({ sceneQa: 40, sceneQaEval: 30 }, { sceneQaBatch: 4, sceneQaWeight: 0 }), { db: db3, outDir: path.join(dir, 'qa-zero') });
  assert.deepEqual(zero.losses, plain.losses, 'weight 0: the caption loss alone, the same steps');
  const t = Tracker.open(db3);
  try {
    const q = t.metricSeries(withQa.runId, 'loss/scene_qa')[0];
    assert.deepEqual(q.steps, [1, 2, 3, 4, 5, 6]);
    assert.ok(q.values.every((v) => Number.isFinite(v) && v > 0));
    // Step 1 starts from the same weights: total = caption loss + 1 x scene-question loss.
    assert.ok(Math.abs(withQa.losses[0] - q.values[0] - plain.losses[0]) < 1e-4, `${withQa.losses[0]} = ${plain.losses[0]} + ${q.values[0]}`);
    assert.ok(withQa.losses[0] > plain.losses[0] + 1);
    assert.equal(t.metricSeries(withQa.runId, 'data/scene_qa')[0].values[0], 40);
    assert.deepEqual(t.metricSeries(withQa.runId, 'val/scene_qa_scored')[0].steps, [3, 6]);
    const scored = withQa.metrics['val/scene_qa_scored'];
    assert.ok(scored > 0 && scored <= 30, `scored ${scored}`);
    const acc = withQa.metrics['val/scene_qa_acc'];
    assert.ok(acc >= 0 && acc <= 1);
    assert.ok(Object.keys(withQa.metrics).some((k) => k.startsWith('val/scene_qa_acc/')), 'accuracy by question type');
    assert.equal(plain.metrics['val/scene_qa_acc'], undefined, 'not scored when off');
    assert.deepEqual(t.metricSeries(plain.runId, 'loss/scene_qa')[0].steps, []);
  } finally {
    t.close();
  }
});
