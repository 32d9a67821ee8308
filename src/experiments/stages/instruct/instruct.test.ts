/**
 * The instruct stage end to end on tiny configurations: tiny align, lm and caption runs in a temp db, then LoRA
 * instruction tuning (only adapters and projector move; encoder and base GPT bitwise unchanged), the loss on
 * answer tokens only (against a hand-computed masked cross entropy), images spliced in place of `<image>`,
 * exact resume, Ctrl-C (abort) -> killed and resumable, VQA metrics equal to vqaAccuracy on the samples,
 * answering about an image file, and merged export equal to the adapter model.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ml from '../../../index';
import { resolveAlignConfig } from '../align/config';
import { trainAlign } from '../align/train';
import { resolveLmConfig } from '../lm/config';
import { trainLm } from '../lm/train';
import { resolveCaptionConfig } from '../caption/config';
import { trainCaption } from '../caption/train';
import { Tracker } from '../../tracking';
import { readCheckpointState } from '../checkpoint';
import { vqaAccuracy } from '../../eval/vqa';
import { QA_TYPES, generateScenes, renderPng, rng } from '../../data/shapes';
import { makeInstructionRecords } from '../../data/instruct';
import { InstructConfig, resolveInstructConfig } from './config';
import { buildInstructModel, captionExtra, exportMerged, instructMetrics, loadInstruct, trainInstruct } from './train';
import { InstructExample, compactImages, encodeExample, pickEvalQuestions, prepareInstructData, selectVqa, vqaPoolSize, vqaQuotas } from './data';
import { ImagePositions, concatProjector, windowProjector } from './model';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-instruct-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
const cache = path.join(dir, 'cache');
const db = path.join(dir, 'i.db');

function tiny(over: Record<string, unknown> = {}): InstructConfig {
  const base = {
    seed: 4,
    data: { trainRecords: 24, tasks: ['vqa', 'vqa', 'difference'], evalScenes: 4, evalQuestionsPerScene: 2, evalRecords: 2, maxTextLen: 100, samples: 256 },
    lora: { rank: 2, alpha: 4, dropout: 0.1 },
    train: { steps: 6, batchSize: 4, lr: 3e-3, warmupSteps: 1, evalEvery: 3, checkpointEvery: 0, weightDecay: 0 },
    generate: { maxNewTokens: 4 },
  };
  const merged = JSON.parse(JSON.stringify(base));
  for (const [k, v] of Object.entries(over)) merged[k] = { ...(merged[k] ?? {}), ...(v as object) };
  return resolveInstructConfig(null, merged);
}

let prepared: Promise<{ caption: string; captionRunId: number }> | null = null;
function prepare(): Promise<{ caption: string; captionRunId: number }> {
  prepared ??= (async () => {
    await trainAlign(resolveAlignConfig(null, {
      seed: 3,
      data: { imageSize: 16, maxTrain: 32, evalSize: 16, finalEval: false, workers: 0, cacheDir: cache },
      tokenizer: { vocabSize: 320, contextLength: 12, glosses: 300 },
      model: { patchSize: 4, visionWidth: 32, visionLayers: 1, visionHeads: 2, textWidth: 32, textLayers: 1, textHeads: 2, embedDim: 16 },
      train: { steps: 1, batchSize: 16, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0 },
    }), { db, outDir: path.join(dir, 'align') });
    await trainLm(resolveLmConfig(null, {
      seed: 1,
      data: { glosses: 300, captions: true, valFraction: 0.1, evalSequences: 4, cacheDir: cache },
      tokenizer: { vocabSize: 320, glosses: 300 },
      model: { contextLength: 128, width: 32, layers: 1, heads: 2 },
      train: { steps: 1, batchSize: 4, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0, samples: 0 },
    }), { db, outDir: path.join(dir, 'lm') });
    const c = await trainCaption(resolveCaptionConfig(null, {
      seed: 2,
      data: { maxTrain: 16, maxTextLen: 12, evalSamples: 2, samples: 0 },
      model: { projectorHidden: 32 },
      train: { steps: 2, batchSize: 4, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0 },
      generate: { maxNewTokens: 2 },
    }), { db, outDir: path.join(dir, 'caption') });
    return { caption: c.checkpoint, captionRunId: c.runId };
  })();
  return prepared;
}

const bytesOf = (t: ml.Tensor): Buffer => Buffer.from((t.toArray() as Float32Array).slice().buffer);

/** A 16 px shapes scene of `stream` written as a PNG file in the test folder; its path. */
async function sceneFile(seed: number, stream: string, name: string): Promise<string> {
  const scene = generateScenes({ seed, n: 1, stream, size: 16 })[0];
  const file = path.join(dir, name);
  fs.writeFileSync(file, await renderPng(scene, 16));
  return file;
}

test('instruct config: presets resolve; bad values and unknown keys name the key', () => {
  assert.equal(resolveInstructConfig('quick').experiment, 'instruct');
  assert.equal(resolveInstructConfig('small').train.steps, 2000);
  assert.deepEqual(resolveInstructConfig().lora.targets, ['attn.qkv', 'attn.proj', 'mlp.layers.0', 'mlp.layers.1']);
  assert.throws(() => resolveInstructConfig('huge'), /unknown preset "huge"/);
  assert.throws(() => resolveInstructConfig(null, { data: { tasks: ['vqa', 'ocr'] } }), /key data.tasks\[1\] must be one of/);
  assert.throws(() => resolveInstructConfig(null, { data: { tasks: [] } }), /key data.tasks/);
  assert.throws(() => resolveInstructConfig(null, { data: { source: 'emoji' } }), /key data.source must be one of/);
  assert.throws(() => resolveInstructConfig(null, { lora: { rank: 1.5 } }), /key lora.rank/); // 0 is full fine-tuning (its own test below)
  assert.throws(() => resolveInstructConfig(null, { lora: { targets: [] } }), /key lora.targets/);
  assert.throws(() => resolveInstructConfig(null, { lora: { rnak: 4 } }), /unknown key lora.rnak \(did you mean lora.rank\?\)/);
  assert.throws(() => resolveInstructConfig(null, { model: { imagePool: 0 } }), /key model.imagePool/);
  assert.throws(() => resolveInstructConfig(null, { lora: { trainTokens: [''] } }), /key lora.trainTokens/);
  assert.throws(() => resolveInstructConfig(null, { lora: { encoderTargets: 'attn.qkv' } }), /key lora.encoderTargets must be an array/);
  assert.throws(() => resolveInstructConfig(null, { lora: { encoderTargets: [""] } }), /key lora.encoderTargets must be a list of module names/);
  assert.throws(() => resolveInstructConfig(null, { caption: { checkpoint: 3 } }), /key caption.checkpoint must be a string/);
  assert.throws(() => resolveInstructConfig(null, { data: { vqaTypes: { count: -1 } } }), /key data.vqaTypes.count/);
  assert.throws(() => resolveInstructConfig(null, { data: { vqaTypes: { colour: 0, shape: 0, count: 0, position: 0, yesno: 0 } } }), /every question type weight 0/);
  assert.throws(() => resolveInstructConfig(null, { data: { vqaTypes: { size: 1 } } }), /unknown key data.vqaTypes.size/);
  assert.throws(() => resolveInstructConfig(null, { data: { answerCap: 0 } }), /key data.answerCap/);
  assert.throws(() => resolveInstructConfig(null, { data: { rationale: 'why' } }), /key data.rationale must be one of/);
});

test('selectVqa: type shares by weight, no answer over the cap, other tasks untouched; the pool is big enough', async () => {
  // A pool like the generator's: types in turn, count answers mostly '1', yes/no even.
  const pool: InstructExample[] = [];
  const types = ['colour', 'shape', 'count', 'position', 'yesno'];
  for (let i = 0; i < 1000; i++) {
    const qtype = types[i % 5];
    const j = Math.floor(i / 5);
    const answer = qtype === 'count' ? (j % 10 < 6 ? '1' : String(j % 3 === 0 ? 0 : 2)) : qtype === 'yesno' ? (j % 2 ? 'yes' : 'no') : `${qtype}-${j % 4}`;
    pool.push({ task: 'vqa', qtype, question: 'q', answers: [answer], images: [i] });
  }
  pool.push({ task: 'difference', question: 'd', answers: ['x'], images: [0, 1] });
  const w = { colour: 1, shape: 1, count: 2, position: 0, yesno: 2 };
  const keep = selectVqa(pool, 120, w, 0.4);
  const by = (k: string) => keep.filter((i) => pool[i].qtype === k);
  assert.deepEqual(types.map((t) => by(t).length), [20, 20, 40, 0, 40]);
  const ones = by('count').filter((i) => pool[i].answers[0] === '1').length;
  assert.ok(ones <= 16, `count answer '1' ${ones} of 40, cap 0.4`);
  // Two answers: the cap is raised to 1/2, so yes/no stays even.
  assert.equal(by('yesno').filter((i) => pool[i].answers[0] === 'yes').length, 20);
  assert.ok(keep.every((i) => pool[i].task === 'vqa'));
  assert.deepEqual(keep, [...keep].sort((a, b) => a - b));
  // Answers with a rationale ('scene', 'places': every output a different string) are capped by their conclusion.
  const reasoned = pool.map((e, i) => (e.task === 'vqa' ? { ...e, answers: [`scene ${i}, so ${e.answers[0]}`] } : e));
  assert.deepEqual(selectVqa(reasoned, 120, w, 0.4), keep);
  // All weights 1, no cap: nothing to reshape, the pool is the request. Reshaped: the generator's records, as many
  // as vqaPoolSize says, hold every type's quota, and the last one is taken. Position-only needs more than 5 x n
  // (one-object scenes have no position question): 5 x n, the old size, falls short.
  const d = resolveInstructConfig().data;
  assert.equal(vqaPoolSize(d, 300, 3, 8), 300);
  const positionOnly = { colour: 0, shape: 0, count: 0, position: 1, yesno: 0 };
  for (const [types, cap] of [[positionOnly, 1], [w, 0.4]] as const) {
    const size = vqaPoolSize({ ...d, vqaTypes: types, answerCap: cap }, 60, 3, 8);
    const recs = await makeInstructionRecords({ source: 'shapes', n: size, seed: 3, size: 8, tasks: ['vqa'], split: 'train/vqa' });
    const ex: InstructExample[] = recs.map((r) => ({ task: 'vqa', qtype: r.qtype as string, question: r.instruction, answers: [r.output], images: [] }));
    const taken = selectVqa(ex, 60, types, cap);
    const byType: Record<string, number> = {};
    for (const i of taken) byType[ex[i].qtype!] = (byType[ex[i].qtype!] ?? 0) + 1;
    assert.deepEqual(byType, Object.fromEntries([...vqaQuotas(60, types)].filter(([, k]) => k > 0)), JSON.stringify(types));
    assert.equal(taken[taken.length - 1], size - 1, 'the pool ends at the last record taken');
    if (types === positionOnly) {
      assert.ok(size > 300, `position-only pool ${size}`);
      assert.ok(selectVqa(ex.slice(0, 300), 60, types, cap).length < 60, '5 x n records hold too few position questions');
    }
  }

  // Only the kept records' images go on to the encoder: renumbered in order of use, pixels carried with them, and
  // a key that depends on the selection.
  const px = 3;
  const images = Float32Array.from({ length: 1001 * px }, (_, i) => i);
  const kept = [...keep.map((i) => pool[i]), pool[1000]];
  const c = compactImages({ examples: pool, images, numImages: 1001, key: 'pool' }, kept, px, { w });
  assert.equal(c.numImages, new Set(kept.flatMap((e) => e.images)).size);
  assert.equal(c.images.length, c.numImages * px);
  kept.forEach((e, k) => e.images.forEach((j, m) => {
    const to = c.examples[k].images[m];
    assert.deepEqual(Array.from(c.images.subarray(to * px, (to + 1) * px)), Array.from(images.subarray(j * px, (j + 1) * px)));
  }));
  assert.deepEqual(c.examples.map((e) => e.question), kept.map((e) => e.question));
  assert.ok(c.key && c.key !== 'pool');
  assert.notEqual(compactImages({ examples: pool, images, numImages: 1001, key: 'pool' }, kept, px, { w: 2 }).key, c.key);
  assert.equal(compactImages({ examples: pool, images, numImages: 1001 }, kept, px, {}).key, undefined);
});

test('pickEvalQuestions: one per type in turn from `first`, then further rounds; all of a scene at most, never twice', () => {
  const scenes = generateScenes({ seed: 9, n: 40, stream: 'pick-test', size: 32 });
  let longer = 0;
  scenes.forEach((sc, i) => {
    const typesPresent = QA_TYPES.filter((t) => sc.qa.some((q) => q.type === t));
    const order = QA_TYPES.map((_, k) => QA_TYPES[(i + k) % QA_TYPES.length]).filter((t) => typesPresent.includes(t));
    const five = pickEvalQuestions(sc.qa, 5, rng(i), i);
    assert.deepEqual(five.map((q) => q.type), order, `scene ${i}: one question of each type, starting at type ${i % 5}`);
    const all = pickEvalQuestions(sc.qa, 64, rng(i), i);
    assert.equal(all.length, sc.qa.length, `scene ${i}: 64 asks every question`);
    assert.equal(new Set(all).size, all.length, 'no question twice');
    assert.deepEqual(new Set(all), new Set(sc.qa));
    assert.deepEqual(all.slice(0, five.length), five, 'a larger n extends the smaller one with the same seed');
    if (sc.qa.length > 5) {
      longer++;
      const seven = pickEvalQuestions(sc.qa, 7, rng(i), i);
      assert.deepEqual(seven, all.slice(0, 7));
    }
  });
  assert.ok(longer > 20, `${longer} of 40 scenes have more than 5 questions`);
});

test('splice, masked loss, and only LoRA + projector change (encoder and base GPT bitwise equal)', async () => {
  const p = await prepare();
  const cfg = tiny();
  const { model, alignCfg } = buildInstructModel(cfg, captionExtra(p.caption, p.captionRunId));
  try {
    const data = await prepareInstructData(cfg, alignCfg, model.tokenizer, model.N);
    const table = model.featureTable(data.trainImages, data.numTrainImages);
    const Wv = model.encoder.config.visionWidth;
    const N = model.N;
    // questionFirst: the same tokens, the image block moved from before the question to right after it.
    const tok = model.tokenizer;
    const before = encodeExample(tok, 'what colour is the star?', 1, 'red', N)!;
    const after = encodeExample(tok, 'what colour is the star?', 1, 'red', N, Infinity, true)!;
    assert.deepEqual([...after.ids].sort((x, y) => x - y), [...before.ids].sort((x, y) => x - y));
    assert.deepEqual([...after.mask].sort(), [...before.mask].sort());
    assert.ok(after.slots[0] > before.slots[0] + 3, 'the image comes after the question');
    assert.equal(after.ids[after.slots[0] + N], tok.tokenToId('<|end|>'), 'the user turn ends right after the image');
    // A one-image row and a two-image row.
    const pick = [data.train.images.findIndex((im) => im.length === 1), data.train.images.findIndex((im) => im.length === 2)];
    assert.ok(pick.every((i) => i >= 0), 'the tiny set has one- and two-image rows');
    const rows = pick.map((r) => ({ ids: data.train.ids[r], mask: data.train.mask[r], slots: data.train.slots[r] }));
    const imgs = pick.flatMap((r) => data.train.images[r]);
    const feats = new Float32Array(imgs.length * N * Wv);
    imgs.forEach((r, j) => feats.set(table.subarray(r * N * Wv, (r + 1) * N * Wv), j * N * Wv));

    // Splice: image blocks hold the projector's output, other positions the token embeddings.
    const L = Math.max(...rows.map((r) => r.ids.length));
    ml.noGrad(() => ml.tidy(() => {
      const f = ml.tensor(feats, [imgs.length, N, Wv]);
      const proj = model.project(f);
      const x = model.spliceEmbeds(rows, L, proj);
      const W = model.gpt.config.width;
      assert.deepEqual(x.shape, [2, L, W]);
      const xa = x.toArray() as Float32Array;
      const pa = proj.toArray() as Float32Array;
      const emb = model.gpt.tokenEmbed.weight.toArray() as Float32Array;
      let k = 0;
      rows.forEach((r, b) => {
        const inImage = new Set<number>();
        for (const s of r.slots) {
          for (let t = 0; t < N; t++) {
            inImage.add(s + t);
            assert.deepEqual(xa.subarray((b * L + s + t) * W, (b * L + s + t + 1) * W), pa.subarray((k * N + t) * W, (k * N + t + 1) * W), `row ${b} image ${k} position ${t}`);
          }
          k++;
        }
        for (let t = 0; t < r.ids.length; t++) {
          if (inImage.has(t)) continue;
          assert.deepEqual(xa.subarray((b * L + t) * W, (b * L + t + 1) * W), emb.subarray(r.ids[t] * W, (r.ids[t] + 1) * W), `row ${b} token ${t}`);
        }
      });
    }));

    // The loss: mean CE over answer tokens only (mask), checked against a hand-computed one.
    for (const r of rows) {
      const nAnswer = r.mask.reduce((a, x) => a + x, 0);
      assert.ok(nAnswer >= 2 && r.mask[r.ids.length - 1] === 1 && r.mask[0] === 0, 'the answer and its <|end|> are masked in, the prompt out');
    }
    model.gpt.eval();
    ml.noGrad(() => ml.tidy(() => {
      const f = ml.tensor(feats, [imgs.length, N, Wv]);
      const loss = model.loss(rows, f).item();
      const logits = model.logitsFromEmbeds(model.spliceEmbeds(rows, L, model.project(f))).toArray() as Float32Array;
      const V = model.gpt.config.vocabSize;
      let sum = 0, n = 0;
      rows.forEach((r, b) => {
        for (let t = 0; t + 1 < r.ids.length; t++) {
          if (!r.mask[t + 1]) continue;
          const row = logits.subarray((b * L + t) * V, (b * L + t + 1) * V);
          const max = Math.max(...row);
          const lse = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
          sum += lse - row[r.ids[t + 1]];
          n++;
        }
      });
      assert.ok(Math.abs(loss - sum / n) < 1e-4, `loss ${loss} vs masked CE ${sum / n}`);
    }));
    model.gpt.train();

    // Two steps: only projector and LoRA parameters move, and they get gradients.
    const gptBefore = Object.fromEntries(Object.entries(model.gpt.stateDict()).map(([k, v]) => [k, bytesOf(v)]));
    const encBefore = Object.fromEntries(Object.entries(model.encoder.stateDict()).map(([k, v]) => [k, bytesOf(v)]));
    const projBefore = Object.fromEntries(Object.entries(model.projector.stateDict()).map(([k, v]) => [k, bytesOf(v)]));
    const params = model.trainableParameters();
    const loraNames = Object.keys(model.gpt.stateDict()).filter((k) => /lora_[AB]/.test(k));
    assert.equal(loraNames.length, 2 * 4 * model.gpt.config.layers, 'qkv, proj and both MLP matrices of every block are wrapped');
    assert.equal(params.length, Object.keys(projBefore).length + loraNames.length);
    const E = model.gpt.tokenEmbed.weight;
    assert.deepEqual(model.trainTokenIds, ['<image>', '<|user|>', '<|assistant|>', '<|end|>'].map((t) => model.tokenizer.tokenToId(t)));
    const opt = new ml.optim.AdamW([{ params }, { params: [E], weightDecay: 0 }], { lr: 1e-2 });
    for (let s = 0; s < 2; s++) {
      opt.zeroGrad();
      ml.tidy(() => model.loss(rows, ml.tensor(feats, [imgs.length, N, Wv])).backward());
      model.maskTokenGrad();
      for (const [k, v] of Object.entries(model.projector.stateDict())) assert.ok(v.grad !== null, `projector ${k} got no gradient`);
      for (const [k, v] of Object.entries(model.encoder.stateDict())) assert.equal(v.grad, null, `encoder ${k} got a gradient`);
      opt.step();
    }
    for (const [k, v] of Object.entries(model.gpt.stateDict())) {
      const same = gptBefore[k].equals(bytesOf(v));
      if (/lora_B/.test(k)) assert.ok(!same, `${k} did not change`);
      else if (k === 'tokenEmbed.weight') {
        // Only the chat tokens' rows train; every other row is bitwise unchanged.
        const W = model.gpt.config.width;
        const a = new Float32Array(gptBefore[k].buffer, gptBefore[k].byteOffset, gptBefore[k].byteLength / 4);
        const b = v.toArray() as Float32Array;
        for (let id = 0; id < model.gpt.config.vocabSize; id++) {
          const rowSame = a.subarray(id * W, (id + 1) * W).every((x, i) => Object.is(x, b[id * W + i]));
          if (model.trainTokenIds.includes(id)) assert.ok(!rowSame || id === model.tokenizer.imageId, `token row ${id} did not change`);
          else assert.ok(rowSame, `embedding row ${id} changed`);
        }
      } else if (!/lora_A/.test(k)) assert.ok(same, `base GPT ${k} changed`);
    }
    for (const [k, v] of Object.entries(model.encoder.stateDict())) assert.ok(encBefore[k].equals(bytesOf(v)), `encoder ${k} changed`);
    for (const [k, v] of Object.entries(model.projector.stateDict())) assert.ok(!projBefore[k].equals(bytesOf(v)), `projector ${k} did not change`);
  } finally {
    model.dispose();
  }
});

test('instruct trains, logs VQA accuracy per type (= vqaAccuracy on the samples) and the baseline, resumes exactly', async () => {
  const p = await prepare();
  const cfg = tiny();
  const full = await trainInstruct(cfg, { db, outDir: path.join(dir, 'full') });
  assert.equal(full.status, 'finished');
  assert.equal(full.losses.length, 6);
  assert.ok(full.losses.every(Number.isFinite));
  assert.equal(full.captionCheckpoint, path.resolve(p.caption));
  const types = ['colour', 'count', 'position', 'shape', 'yesno'].filter((t) => `val/vqa_acc/${t}` in full.metrics);
  assert.ok(types.length >= 3, `per-type metrics: ${Object.keys(full.metrics).join(', ')}`);
  for (const [k, v] of Object.entries(full.metrics)) assert.ok(v >= 0 && v <= 1, `${k} = ${v}`);
  const samples = JSON.parse(fs.readFileSync(path.join(full.outDir, 'samples.json'), 'utf8')) as Array<{ png: string; png2?: string; task: string; qtype?: string; question: string; answers: string[]; prediction: string }>;
  assert.deepEqual(samples, full.samples);
  const vqa = samples.filter((s) => s.task === 'vqa');
  assert.equal(vqa.length, 8, 'every eval question is in the samples (data.samples >= eval size)');
  const re = vqaAccuracy(vqa.map((s) => s.prediction), vqa.map((s) => s.answers), vqa.map((s) => s.qtype!));
  assert.equal(full.metrics['val/vqa_acc'], re.overall);
  for (const [t, v] of Object.entries(re.byType)) assert.equal(full.metrics[`val/vqa_acc/${t}`], v.accuracy, t);
  const diff = samples.filter((s) => s.task === 'difference');
  assert.equal(diff.length, 2);
  const png = Buffer.from(diff[0].png2 ?? '', 'base64');
  assert.ok(png.subarray(1, 4).toString() === 'PNG', 'png2 is a PNG');
  assert.ok(Buffer.from(vqa[0].png, 'base64').subarray(1, 4).toString() === 'PNG');
  assert.equal(vqa[0].png2, undefined);

  const t = Tracker.open(db);
  try {
    const info = t.getRun(full.runId);
    assert.equal(info.stage, 'instruct');
    assert.equal(info.parentRunId, p.captionRunId);
    assert.deepEqual(t.metricSeries(full.runId, 'val/vqa_acc')[0].steps, [3, 6]);
    const b = t.metricSeries(full.runId, 'baseline/vqa_acc')[0];
    assert.deepEqual(b.steps, [0]);
    assert.ok(b.values[0] >= 0 && b.values[0] <= 1);
    assert.equal(t.metricSeries(full.runId, 'loss')[0].steps.length, 6);
    assert.ok(t.artifacts(full.runId).some((a) => a.kind === 'samples'));
  } finally {
    t.close();
  }
  const st = readCheckpointState(full.checkpoint);
  assert.equal(st.stage, 'instruct');
  assert.equal((st.extra as { captionCheckpoint: string }).captionCheckpoint, path.resolve(p.caption));
  const names = Object.keys(ml.loadHeader(full.checkpoint).tensors ?? {}).filter((k) => k.startsWith('model.'));
  assert.ok(names.length > 0 && names.every((k) => k.startsWith('model.projector.') || /lora_[AB]/.test(k) || k === 'model.tokens'), `checkpoint holds projector + LoRA (+ token rows) only: ${names.join(', ')}`);

  const part = await trainInstruct(cfg, { db, outDir: path.join(dir, 'part'), stopAfter: 2 });
  assert.equal(part.status, 'killed');
  const rest = await trainInstruct(cfg, { db, resume: part.runId });
  assert.equal(rest.status, 'finished');
  assert.equal(rest.outDir, part.outDir);
  assert.deepEqual([...part.losses, ...rest.losses].map((x) => Math.fround(x)), full.losses.map((x) => Math.fround(x)));
  assert.deepEqual(rest.samples.map((s) => s.prediction), full.samples.map((s) => s.prediction));
});

test('abort (Ctrl-C) writes the checkpoint, marks the run killed, and it resumes to the end', async () => {
  await prepare();
  const cfg = tiny({ train: { steps: 4, evalEvery: 0 }, data: { samples: 0 } });
  const ac = new AbortController();
  const r = await trainInstruct(cfg, { db, outDir: path.join(dir, 'abort'), signal: ac.signal, onStep: (s) => { if (s.step === 1) ac.abort(); } });
  assert.equal(r.status, 'killed');
  assert.equal(r.stepsDone, 1);
  assert.equal(readCheckpointState(r.checkpoint).step, 1);
  const t = Tracker.open(db);
  try {
    assert.equal(t.getRun(r.runId).status, 'killed');
  } finally {
    t.close();
  }
  const rest = await trainInstruct(cfg, { db, resume: r.checkpoint });
  assert.equal(rest.status, 'finished');
  assert.equal(rest.stepsDone, 3);
  await assert.rejects(trainInstruct(cfg, { db: path.join(dir, 'empty.db'), outDir: path.join(dir, 'none') }), /key caption.checkpoint/);
});

test('loadInstruct answers about an image file; bad files and image counts are clear errors; merged export answers the same', async () => {
  await prepare();
  const r = await trainInstruct(tiny({ train: { steps: 3, evalEvery: 0, lr: 2e-2 }, data: { samples: 0 } }), { db, outDir: path.join(dir, 'chat') });
  const file = await sceneFile(9, 'chat-test', 'scene.png');
  const m = loadInstruct(r.checkpoint);
  let merged: ReturnType<typeof loadInstruct> | null = null;
  try {
    const img = { kind: 'file' as const, path: file };
    const a = await m.answer([img], 'what colour is the circle?');
    assert.equal(typeof a, 'string');
    assert.equal(await m.answer([img], 'what colour is the circle?'), a, 'greedy answers are deterministic');
    const two = await m.answer([img, img], 'Do these two images show the same objects? Answer yes or no.');
    assert.equal(typeof two, 'string');
    const missing = path.join(dir, 'nope', 'missing.png');
    await assert.rejects(m.answer([{ kind: 'file', path: missing }], 'what colour?'), (e: Error) => e.message.includes(missing));
    const junk = path.join(dir, 'junk.png');
    fs.writeFileSync(junk, 'not a png');
    await assert.rejects(m.answer([{ kind: 'file', path: junk }], 'what colour?'), (e: Error) => e.message.includes(junk));
    await assert.rejects(m.answer([], 'what colour?'), /at least one image/);
    await assert.rejects(m.answer([img], '<image><image>same?'), /2 <image> placeholders but 1 images/);
    await assert.rejects(m.answer(Array.from({ length: 40 }, () => img), 'same?'), /got 40 images; this model takes at most/);

    const out = path.join(dir, 'merged', 'instruct-merged.safetensors');
    const e = exportMerged(r.checkpoint, out);
    assert.equal(e.merged.length, 4 * m.model.gpt.config.layers);
    assert.ok(fs.existsSync(out) && fs.readdirSync(path.dirname(out)).every((f) => !f.includes('.tmp')));
    merged = loadInstruct(out);
    assert.ok(Object.keys(merged.model.gpt.stateDict()).every((k) => !/lora/.test(k)), 'the merged GPT has plain Linears');
    const qs = ['what colour is the circle?', 'how many shapes are there?', 'Describe the image.'];
    for (const q of qs) assert.equal(await merged.answer([img], q, { maxNewTokens: 6 }), await m.answer([img], q, { maxNewTokens: 6 }), q);
    // Same logits up to float rounding (the adapters moved, so this is not the caption model's output).
    const x = await (async () => {
      const { decodeImage } = await import('../../data/image');
      return decodeImage(img, m.transform);
    })();
    ml.noGrad(() => ml.tidy(() => {
      const f = (mm: typeof m): Float32Array => {
        const feats = mm.model.features(x, 1);
        const row = { ids: Int32Array.from([1, 5, ...Array(mm.model.N).fill(mm.model.tokenizer.imageId), 9, 7, 6]), slots: [2] };
        return mm.model.logitsFromEmbeds(mm.model.spliceEmbeds([row], row.ids.length, mm.model.project(feats))).toArray() as Float32Array;
      };
      const la = f(m), lb = f(merged!);
      let worst = 0;
      for (let i = 0; i < la.length; i++) worst = Math.max(worst, Math.abs(la[i] - lb[i]));
      assert.ok(worst < 1e-4, `merged logits differ by ${worst}`);
    }));
  } finally {
    m.dispose();
    merged?.dispose();
  }
});

test('encoder adapters (lora.encoderTargets): they train, move the features, resume exactly, and merge', async () => {
  const p = await prepare();
  const cfg = tiny({ lora: { encoderTargets: ['attn.qkv', 'mlp.layers.1'] }, train: { steps: 4, evalEvery: 2, lr: 2e-2 }, data: { samples: 0 } });
  const full = await trainInstruct(cfg, { db, outDir: path.join(dir, 'enc-full') });
  assert.equal(full.status, 'finished');
  const names = Object.keys(ml.loadHeader(full.checkpoint).tensors ?? {}).filter((k) => k.startsWith('model.encoder.')).sort();
  assert.deepEqual(names, ['model.encoder.blocks.0.attn.qkv.lora_A.weight', 'model.encoder.blocks.0.attn.qkv.lora_B.weight',
    'model.encoder.blocks.0.mlp.layers.1.lora_A.weight', 'model.encoder.blocks.0.mlp.layers.1.lora_B.weight']);
  const saved = ml.load(full.checkpoint);
  try {
    const B = saved.tensors['model.encoder.blocks.0.attn.qkv.lora_B.weight'].toArray() as Float32Array;
    assert.ok(B.some((v) => v !== 0), 'the encoder adapter B (initialised to zero) trained');
  } finally {
    for (const t of Object.values(saved.tensors)) t.dispose();
  }

  const part = await trainInstruct(cfg, { db, outDir: path.join(dir, 'enc-part'), stopAfter: 1 });
  const rest = await trainInstruct(cfg, { db, resume: part.runId });
  assert.deepEqual([...part.losses, ...rest.losses].map((x) => Math.fround(x)), full.losses.map((x) => Math.fround(x)));
  assert.deepEqual(rest.metrics, full.metrics);

  const file = await sceneFile(9, 'enc-test', 'enc-scene.png');
  const m = loadInstruct(full.checkpoint);
  const frozen = buildInstructModel(tiny(), captionExtra(p.caption, p.captionRunId)).model;
  let merged: ReturnType<typeof loadInstruct> | null = null;
  try {
    const { decodeImage } = await import('../../data/image');
    const x = await decodeImage({ kind: 'file', path: file }, m.transform);
    const feats = (mm: { features(x: Float32Array, n: number): ml.Tensor }): Float32Array => {
      const f = mm.features(x, 1);
      try { return (f.toArray() as Float32Array).slice(); } finally { f.dispose(); }
    };
    const fa = feats(m.model), ff = feats(frozen);
    assert.ok(fa.some((v, i) => Math.abs(v - ff[i]) > 1e-4), 'the adapted encoder gives other features than the frozen one');
    const e = exportMerged(full.checkpoint, path.join(dir, 'enc-merged.safetensors'));
    assert.equal(e.merged.filter((n) => n.startsWith('encoder.blocks.')).length, 2);
    merged = loadInstruct(e.file);
    const fm = feats(merged.model);
    let worst = 0;
    for (let i = 0; i < fa.length; i++) worst = Math.max(worst, Math.abs(fa[i] - fm[i]));
    assert.ok(worst < 1e-4, `merged encoder features differ by ${worst}`);
    const img = { kind: 'file' as const, path: file };
    assert.equal(await merged.answer([img], 'how many shapes are there?', { maxNewTokens: 6 }), await m.answer([img], 'how many shapes are there?', { maxNewTokens: 6 }));
  } finally {
    m.dispose();
    frozen.dispose();
    merged?.dispose();
  }
  await assert.rejects(trainInstruct(tiny({ lora: { encoderTargets: ['attn.nope'] } }), { db, outDir: path.join(dir, 'enc-bad') }), /key lora.encoderTargets: .*attn\.nope/);
});

/** The merged export of `checkpoint` answers `questions` about a fresh scene exactly as the adapter model does. */
async function assertMergedAnswersSame(checkpoint: string, tag: string, questions: string[]): Promise<void> {
  const file = await sceneFile(11, `${tag}-test`, `${tag}-scene.png`);
  const m = loadInstruct(checkpoint);
  let merged: ReturnType<typeof loadInstruct> | null = null;
  try {
    merged = loadInstruct(exportMerged(checkpoint, path.join(dir, `${tag}-merged.safetensors`)).file);
    const img = { kind: 'file' as const, path: file };
    for (const q of questions) assert.equal(await merged.answer([img], q, { maxNewTokens: 6 }), await m.answer([img], q, { maxNewTokens: 6 }), q);
  } finally {
    m.dispose();
    merged?.dispose();
  }
}

test("model.imagePositions '2d': a 2-D sine-cosine table after the projector that trains, resumes exactly and merges", async () => {
  // The table itself: CLS row zero, grid rows at the given RMS, every cell coded differently, added to each image.
  const pe = new ImagePositions(3, 8, 0.5);
  try {
    const t = pe.table.toArray() as Float32Array;
    assert.deepEqual([...pe.table.shape], [10, 8]);
    assert.ok(t.subarray(0, 8).every((v) => v === 0), 'the CLS row starts at zero');
    const rows = Array.from({ length: 9 }, (_, i) => [...t.subarray((i + 1) * 8, (i + 2) * 8)]);
    for (const r of rows) assert.ok(Math.abs(Math.sqrt(r.reduce((s, v) => s + v * v, 0) / 8) - 0.5) < 1e-6);
    assert.equal(new Set(rows.map((r) => r.map((v) => v.toFixed(5)).join(','))).size, 9, 'nine distinct cell codes');
    // Cells of one column share the column half of the code; cells of one row the row half.
    assert.deepEqual(rows[0].slice(0, 4), rows[3].slice(0, 4));
    assert.deepEqual(rows[0].slice(4), rows[1].slice(4));
    const x = ml.randn([2, 10, 8]);
    const y = pe.forward(x);
    const xs = x.toArray() as Float32Array, ys = y.toArray() as Float32Array;
    for (let i = 0; i < xs.length; i++) assert.ok(Math.abs(ys[i] - (xs[i] + t[i % 80])) < 1e-6);
    x.dispose();
    y.dispose();
  } finally {
    pe.dispose();
  }
  assert.throws(() => new ImagePositions(2, 6, 1), /GPT width divisible by 4, got 6/);
  assert.throws(() => resolveInstructConfig(null, { model: { imagePositions: 'learned' } }), /key model.imagePositions/);

  // In the stage: the table is the projector's 4th layer, trains, is checkpointed, resumes and merges.
  const p = await prepare();
  const cfg = tiny({ model: { imagePositions: '2d' }, train: { steps: 4, evalEvery: 2, lr: 2e-2 }, data: { samples: 0 } });
  const built = buildInstructModel(cfg, captionExtra(p.caption, p.captionRunId)).model;
  const t0 = (built.projector.stateDict()['3.table'].toArray() as Float32Array).slice();
  assert.ok(built.trainableParameters().some((q) => q.shape.length === 2 && q.shape[0] === built.N), 'the table is trainable');
  built.dispose();
  const full = await trainInstruct(cfg, { db, outDir: path.join(dir, 'pos-full') });
  assert.equal(full.status, 'finished');
  const saved = ml.load(full.checkpoint);
  try {
    const t1 = saved.tensors['model.projector.3.table'].toArray() as Float32Array;
    assert.ok(t1.some((v, i) => Math.abs(v - t0[i]) > 1e-6), 'the table trained');
  } finally {
    for (const t of Object.values(saved.tensors)) t.dispose();
  }
  const part = await trainInstruct(cfg, { db, outDir: path.join(dir, 'pos-part'), stopAfter: 1 });
  const rest = await trainInstruct(cfg, { db, resume: part.runId });
  assert.deepEqual([...part.losses, ...rest.losses].map((x) => Math.fround(x)), full.losses.map((x) => Math.fround(x)));

  await assertMergedAnswersSame(full.checkpoint, 'pos', ['is the circle left of the square?', 'what colour is the star?']);
});

test("model.imagePoolMode 'concat': a cell's patches side by side, a widened projector that starts equal to 'mean', trains, loads and merges", async () => {
  // The widened projector maps k2 concatenated copies of the patches exactly as the original maps their mean.
  ml.manualSeed(5);
  const proj = new ml.nn.Sequential(new ml.nn.Linear(4, 6), new ml.nn.GELU(), new ml.nn.Linear(6, 3));
  const patches = ml.randn([2, 3, 4, 4]); // [n, cells, k2, Wv]
  const mean = ml.mean(patches, 2);
  const want = proj.forward(mean).toArray() as Float32Array;
  const wide = concatProjector(proj, 4);
  try {
    assert.deepEqual([...wide.at(0).parameters()[0].shape], [6, 16]);
    const got = wide.forward(ml.reshape(patches, [2, 3, 16])).toArray() as Float32Array;
    for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-5, `${got[i]} vs ${want[i]}`);
  } finally {
    wide.dispose();
    for (const t of [patches, mean]) t.dispose();
  }
  assert.throws(() => resolveInstructConfig(null, { model: { imagePoolMode: 'max' } }), /key model.imagePoolMode/);

  // In the stage (16 px, patch 4: a 4 x 4 grid pooled 2 x 2 into 4 cells of 4 patches).
  const p = await prepare();
  const cfg = tiny({ model: { imagePoolMode: 'concat' }, train: { steps: 4, evalEvery: 2, lr: 2e-2 }, data: { samples: 0 } });
  const extra = captionExtra(p.caption, p.captionRunId);
  const cat = buildInstructModel(cfg, extra).model;
  const avg = buildInstructModel(tiny({ train: { steps: 4 } }), extra).model;
  try {
    assert.equal(cat.N, avg.N);
    assert.equal(cat.featureWidth, 4 * avg.featureWidth);
    const images = Float32Array.from({ length: 2 * 3 * 16 * 16 }, (_, i) => Math.sin(i * 0.37));
    const fc = cat.features(images, 2), fa = avg.features(images, 2);
    const c = fc.toArray() as Float32Array, a = fa.toArray() as Float32Array;
    const W = avg.featureWidth, N = avg.N;
    assert.deepEqual([...fc.shape], [2, N, 4 * W]);
    // Each token's four blocks average to the mean-pooled token; the CLS token is its four copies.
    for (let r = 0; r < 2 * N; r++) {
      for (let j = 0; j < W; j++) {
        let sum = 0;
        for (let b = 0; b < 4; b++) sum += c[(r * 4 + b) * W + j];
        assert.ok(Math.abs(sum / 4 - a[r * W + j]) < 1e-5);
        if (r % N === 0) for (let b = 1; b < 4; b++) assert.equal(c[(r * 4 + b) * W + j], c[r * 4 * W + j]);
      }
    }
    // The blocks are different patches (not four copies of one).
    assert.ok(c.subarray(4 * W, 5 * W).some((v, j) => v !== c[5 * W + j]));
    // At initialisation the projected image tokens are the mean-pooled model's.
    const pc = ml.noGrad(() => cat.project(fc)).toArray() as Float32Array, pa = ml.noGrad(() => avg.project(fa)).toArray() as Float32Array;
    for (let i = 0; i < pa.length; i++) assert.ok(Math.abs(pc[i] - pa[i]) < 1e-4, `projected ${pc[i]} vs ${pa[i]}`);
    fc.dispose();
    fa.dispose();
  } finally {
    cat.dispose();
    avg.dispose();
  }

  const full = await trainInstruct(cfg, { db, outDir: path.join(dir, 'cat-full') });
  assert.equal(full.status, 'finished');
  const saved = ml.load(full.checkpoint);
  try {
    assert.deepEqual([...saved.tensors['model.projector.0.weight'].shape].slice(1), [4 * 32]);
  } finally {
    for (const t of Object.values(saved.tensors)) t.dispose();
  }
  await assertMergedAnswersSame(full.checkpoint, 'cat', ['what shape is the red object?', 'how many shapes are there?']);
});

test("model.imagePoolMode 'window': each cell with the ring of patches around it (zeros beyond the grid), a projector that starts equal to 'mean', trains, loads and merges", async () => {
  // The window projector maps a cell's (k+2)^2 window as the original maps the mean of its k x k inner patches,
  // whatever the ring holds.
  ml.manualSeed(6);
  const proj = new ml.nn.Sequential(new ml.nn.Linear(4, 6), new ml.nn.GELU(), new ml.nn.Linear(6, 3));
  const win = ml.randn([2, 3, 4, 4, 4]); // [n, cells, 4, 4, Wv]: k = 2, a ring of one
  const inner = ml.slice(ml.slice(win, 2, 1, 3), 3, 1, 3);
  const mean = ml.mean(ml.reshape(inner, [2, 3, 4, 4]), 2);
  const want = proj.forward(mean).toArray() as Float32Array;
  const wide = windowProjector(proj, 2);
  try {
    assert.deepEqual([...wide.at(0).parameters()[0].shape], [6, 64]);
    const got = wide.forward(ml.reshape(win, [2, 3, 64])).toArray() as Float32Array;
    for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-5, `${got[i]} vs ${want[i]}`);
  } finally {
    wide.dispose();
    for (const t of [win, inner, mean]) t.dispose();
  }

  // In the stage (16 px, patch 4: a 4 x 4 grid, cells of 2 x 2 patches, windows of 4 x 4), against the
  // unpooled tokens of imagePool 1.
  const p = await prepare();
  const cfg = tiny({ model: { imagePoolMode: 'window' }, train: { steps: 4, evalEvery: 2, lr: 2e-2 }, data: { samples: 0 } });
  const extra = captionExtra(p.caption, p.captionRunId);
  const wm = buildInstructModel(cfg, extra).model;
  const raw = buildInstructModel(tiny({ model: { imagePool: 1 }, train: { steps: 4 } }), extra).model;
  const avg = buildInstructModel(tiny({ train: { steps: 4 } }), extra).model;
  try {
    const W = raw.featureWidth;
    assert.equal(wm.N, avg.N);
    assert.equal(wm.featureWidth, 16 * W);
    const images = Float32Array.from({ length: 2 * 3 * 16 * 16 }, (_, i) => Math.sin(i * 0.29));
    const fw = wm.features(images, 2), fr = raw.features(images, 2), fa = avg.features(images, 2);
    const w = fw.toArray() as Float32Array, r = fr.toArray() as Float32Array;
    assert.deepEqual([...fw.shape], [2, 5, 16 * W]);
    let zeros = 0;
    for (let b = 0; b < 2; b++) {
      for (let cell = 0; cell < 5; cell++) {
        for (let dy = 0; dy < 4; dy++) {
          for (let dx = 0; dx < 4; dx++) {
            const at = ((b * 5 + cell) * 16 + dy * 4 + dx) * W;
            const block = w.subarray(at, at + W);
            let expect: Float32Array | null;
            if (cell === 0) {
              // CLS: itself in the four inner blocks, zeros in the ring.
              expect = dy >= 1 && dy <= 2 && dx >= 1 && dx <= 2 ? r.subarray(b * 17 * W, (b * 17 + 1) * W) : null;
            } else {
              const py = 2 * Math.floor((cell - 1) / 2) + dy - 1, px = 2 * ((cell - 1) % 2) + dx - 1;
              const inside = py >= 0 && py < 4 && px >= 0 && px < 4;
              expect = inside ? r.subarray((b * 17 + 1 + py * 4 + px) * W, (b * 17 + 2 + py * 4 + px) * W) : null;
            }
            if (expect === null) zeros++;
            for (let j = 0; j < W; j++) assert.equal(block[j], expect === null ? 0 : expect[j], `image ${b} cell ${cell} window (${dy}, ${dx})`);
          }
        }
      }
    }
    // Per image: CLS ring 12, and each corner cell of the 2 x 2 cells has 7 of its 12 ring patches beyond the grid.
    assert.equal(zeros, 2 * (12 + 4 * 7));
    // At initialisation the projected image tokens are the mean-pooled model's.
    const pw = ml.noGrad(() => wm.project(fw)).toArray() as Float32Array, pa = ml.noGrad(() => avg.project(fa)).toArray() as Float32Array;
    for (let i = 0; i < pa.length; i++) assert.ok(Math.abs(pw[i] - pa[i]) < 1e-4, `projected ${pw[i]} vs ${pa[i]}`);
    for (const t of [fw, fr, fa]) t.dispose();
  } finally {
    wm.dispose();
    raw.dispose();
    avg.dispose();
  }

  const full = await trainInstruct(cfg, { db, outDir: path.join(dir, 'win-full') });
  assert.equal(full.status, 'finished');
  const saved = ml.load(full.checkpoint);
  try {
    const w1 = saved.tensors['model.projector.0.weight'];
    assert.deepEqual([...w1.shape].slice(1), [16 * 32]);
    // The ring's weights (initialised to zero) trained.
    const a = w1.toArray() as Float32Array;
    assert.ok(a.subarray(0, 32).some((v) => v !== 0), 'ring block (0, 0) of row 0 trained');
  } finally {
    for (const t of Object.values(saved.tensors)) t.dispose();
  }
  await assertMergedAnswersSame(full.checkpoint, 'win', ['what shape is the red object?', 'is the circle left of the square?']);
});

test('lora.rank 0: full fine-tuning (no adapters, every GPT weight but the token embedding trains), saved whole, resumes exactly, exports', async () => {
  assert.throws(() => resolveInstructConfig(null, { lora: { rank: 0, encoderTargets: ['attn.qkv'] } }), /key lora.encoderTargets needs lora.rank >= 1/);
  assert.throws(() => resolveInstructConfig(null, { lora: { rank: -1 } }), /key lora.rank/);
  const p = await prepare();
  const cfg = tiny({ lora: { rank: 0, dropout: 0 }, train: { steps: 4, evalEvery: 2, lr: 1e-2 }, data: { samples: 0 } });
  const built = buildInstructModel(cfg, captionExtra(p.caption, p.captionRunId)).model;
  let before: Record<string, Float32Array>;
  try {
    assert.equal(built.fullFineTune, true);
    const names = Object.keys(built.gpt.stateDict());
    assert.ok(!names.some((k) => k.includes('lora_')), 'no adapters');
    const trainable = new Set(built.trainableParameters());
    for (const [k, v] of Object.entries(built.gpt.stateDict())) {
      assert.equal(trainable.has(v), k !== 'tokenEmbed.weight', `${k} trainable`);
    }
    before = Object.fromEntries(Object.entries(built.gpt.stateDict()).map(([k, v]) => [k, (v.toArray() as Float32Array).slice()]));
  } finally {
    built.dispose();
  }
  const full = await trainInstruct(cfg, { db, outDir: path.join(dir, 'fft-full') });
  assert.equal(full.status, 'finished');
  const saved = ml.load(full.checkpoint);
  try {
    const gptKeys = Object.keys(saved.tensors).filter((k) => k.startsWith('model.gpt.')).map((k) => k.slice('model.gpt.'.length));
    assert.deepEqual(gptKeys.sort(), Object.keys(before).filter((k) => k !== 'tokenEmbed.weight').sort(), 'every GPT weight but the embedding');
    for (const k of ['blocks.0.attn.qkv.weight', 'blocks.0.ln1.weight']) {
      const t = saved.tensors[`model.gpt.${k}`];
      assert.ok(t, k);
      const a = t.toArray() as Float32Array;
      assert.ok(a.some((v, i) => Math.abs(v - before[k][i]) > 1e-6), `${k} trained`);
    }
  } finally {
    for (const t of Object.values(saved.tensors)) t.dispose();
  }
  const part = await trainInstruct(cfg, { db, outDir: path.join(dir, 'fft-part'), stopAfter: 1 });
  const rest = await trainInstruct(cfg, { db, resume: part.runId });
  assert.deepEqual([...part.losses, ...rest.losses].map((x) => Math.fround(x)), full.losses.map((x) => Math.fround(x)));
  await assertMergedAnswersSame(full.checkpoint, 'fft', ['what colour is the star?', 'is the circle left of the square?']);
});

test('data.vqaTypes in the stage: only the selected records\' images go to the encoder, numbered 0..n-1', async () => {
  const p = await prepare();
  const cfg = tiny({ data: { tasks: ['vqa'], trainRecords: 20, vqaTypes: { colour: 1, shape: 0, count: 0, position: 0, yesno: 0 } } });
  const { model, alignCfg } = buildInstructModel(cfg, captionExtra(p.caption, p.captionRunId));
  try {
    const data = await prepareInstructData(cfg, alignCfg, model.tokenizer, model.N);
    // 20 asked, 20 given: the pool is sized by walking the generator's questions (vqaPoolSize).
    assert.equal(data.train.examples.length, 20);
    assert.ok(data.train.examples.every((e) => e.qtype === 'colour'));
    const used = [...new Set(data.train.images.flat())].sort((a, b) => a - b);
    assert.deepEqual(used, Array.from({ length: used.length }, (_, i) => i));
    assert.equal(data.numTrainImages, used.length, 'not every image of the generated pool');
    assert.equal(data.trainImages.length, used.length * 3 * data.imageSize * data.imageSize);
    assert.ok(data.cache.train && !data.cache.train.startsWith('pool'));
  } finally {
    model.dispose();
  }
});

test("instructMetrics scores a reply with a rationale on its conclusion (data.rationale 'places')", () => {
  const ex = (qtype: string, answer: string): InstructExample => ({ task: 'vqa', qtype, question: 'q', answers: [answer], images: [0] });
  const examples = [ex('position', 'yes'), ex('position', 'no'), ex('colour', 'red'), ex('colour', 'blue')];
  const m = instructMetrics(examples, ['the circle at the top left, the square on the right, so yes', 'the star at the bottom, the circle in the middle, so yes', 'red', 'green, so blue']);
  assert.equal(m['val/vqa_acc/position'], 0.5);
  assert.equal(m['val/vqa_acc/colour'], 1);
  assert.equal(m['val/vqa_acc'], 0.75);
});
