/**
 * The align stage end to end on a tiny configuration: it trains on real emoji pairs, records the run, writes a
 * checkpoint, resumes exactly (the loss sequence of an interrupted-then-resumed run equals an uninterrupted one),
 * and stops cleanly on an abort signal.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { resolveAlignConfig, AlignConfig } from './config';
import { trainAlign } from './train';
import { addCaptionNoise, alignPairs, makeBatchStream, prepareAlignData } from './data';
import { Tracker } from '../../tracking';
import { readCheckpointState } from '../checkpoint';
import { buildAlignModel } from './model';
import { reverseRelation } from '../../data/shapes';
import * as ml from '../../../index';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-align-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

function tiny(over: Record<string, unknown> = {}): AlignConfig {
  const base = {
    seed: 3,
    data: { imageSize: 16, maxTrain: 96, evalSize: 48, finalEval: false, workers: 1, cacheDir: path.join(dir, 'cache') },
    tokenizer: { vocabSize: 320, contextLength: 12, glosses: 300 },
    model: { patchSize: 4, visionWidth: 32, visionLayers: 1, visionHeads: 2, textWidth: 32, textLayers: 1, textHeads: 2, embedDim: 16 },
    train: { steps: 8, batchSize: 16, warmupSteps: 2, lr: 3e-3, evalEvery: 4, checkpointEvery: 0 },
  };
  const merged = JSON.parse(JSON.stringify(base));
  for (const [k, v] of Object.entries(over)) merged[k] = { ...(merged[k] ?? {}), ...(v as object) };
  return resolveAlignConfig(null, merged);
}

test('align trains on emoji pairs, records metrics and artifacts, and resumes exactly', async () => {
  const db = path.join(dir, 'a.db');
  const full = await trainAlign(tiny(), { db, outDir: path.join(dir, 'full') });
  assert.equal(full.status, 'finished');
  assert.equal(full.losses.length, 8);
  assert.ok(full.losses.every(Number.isFinite));
  assert.ok(full.losses[0] > Math.log(16) * 0.8, `the first loss ${full.losses[0]} is near ln(batch) = ${Math.log(16)}`);
  for (const k of ['val/i2t/r@1', 'val/t2i/r@5', 'val/i2t/map', 'val/t2i/median_rank']) assert.ok(Number.isFinite(full.metrics[k]), k);

  const t = Tracker.open(db);
  try {
    const info = t.getRun(full.runId);
    assert.equal(info.status, 'finished');
    assert.equal(info.stage, 'align');
    assert.equal((info.config as { train: { steps: number } }).train.steps, 8);
    const loss = t.metricSeries(full.runId, 'loss')[0];
    assert.deepEqual(loss.steps, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(loss.values.map((v) => Math.fround(v)), full.losses.map((v) => Math.fround(v)));
    for (const k of ['lr', 'logit_scale', 'grad_norm', 'samples_per_s', 'peak_mb', 'data_wait_ms', 'loss/infonce']) {
      assert.equal(t.metricSeries(full.runId, k)[0].values.length, 8, k);
    }
    assert.deepEqual(t.metricSeries(full.runId, 'val/i2t/r@1')[0].steps, [4, 8]);
    const kinds = t.artifacts(full.runId).map((a) => a.kind).sort();
    assert.deepEqual(kinds, ['checkpoint', 'config', 'tokenizer']);
  } finally {
    t.close();
  }

  // Interrupted after 3 steps, then resumed by run id: the remaining losses are those of the uninterrupted run.
  const part = await trainAlign(tiny(), { db, outDir: path.join(dir, 'part'), stopAfter: 3 });
  assert.equal(part.status, 'killed');
  assert.deepEqual(part.losses, full.losses.slice(0, 3));
  assert.equal(readCheckpointState(part.checkpoint).step, 3);
  const rest = await trainAlign(tiny(), { db, outDir: path.join(dir, 'part'), resume: part.runId });
  assert.equal(rest.runId, part.runId);
  assert.equal(rest.status, 'finished');
  assert.deepEqual(rest.losses, full.losses.slice(3), 'resumed losses equal the uninterrupted run exactly');
  const t2 = Tracker.open(db);
  try {
    assert.equal(t2.metricSeries(part.runId, 'loss')[0].values.length, 8);
    assert.equal(t2.getRun(part.runId).status, 'finished');
  } finally {
    t2.close();
  }
});

test('an abort signal stops at a step boundary: checkpoint written, run killed', async () => {
  const db = path.join(dir, 'b.db');
  const ac = new AbortController();
  const res = await trainAlign(tiny({ train: { steps: 50, evalEvery: 0 } }), {
    db, outDir: path.join(dir, 'abort'), signal: ac.signal, onStep: (s) => { if (s.step === 2) ac.abort(); },
  });
  assert.equal(res.status, 'killed');
  assert.equal(res.stepsDone, 2);
  assert.equal(readCheckpointState(res.checkpoint).step, 2);
  const t = Tracker.open(db);
  try {
    assert.equal(t.getRun(res.runId).status, 'killed');
  } finally {
    t.close();
  }
});

test('bad configs fail before anything is recorded; a bad resume target is named', async () => {
  const db = path.join(dir, 'c.db');
  const bad = tiny();
  (bad.train as { lr: number }).lr = -1;
  await assert.rejects(trainAlign(bad, { db }), /align config: key train\.lr must be in \(0, 10\], got -1/);
  const t = Tracker.open(db);
  try {
    assert.equal(t.listRuns().length, 0);
    await assert.rejects(trainAlign(tiny(), { tracker: t, resume: path.join(dir, 'nope.safetensors') }), /does not exist/);
    await assert.rejects(trainAlign(tiny(), { tracker: t, resume: 77 }), /no run 77|no checkpoint/);
  } finally {
    t.close();
  }
});

test('caption noise gives a chosen fraction of pairs another pair\'s caption', () => {
  const pairs = Array.from({ length: 100 }, (_, i) => ({
    id: `p${i}`, image: { kind: 'svg' as const, svg: '' }, text: `caption ${i}`, group: `g${i}`, meta: {},
  }));
  const noisy = addCaptionNoise(pairs, 0.2, 1);
  const changed = noisy.filter((p, i) => p.text !== pairs[i].text);
  assert.equal(changed.length, 20);
  assert.ok(changed.every((p) => p.meta.noisy === true));
  assert.deepEqual(noisy.map((p) => p.text).sort(), pairs.map((p) => p.text).sort(), 'captions are moved, not invented');
  assert.deepEqual(addCaptionNoise(pairs, 0.2, 1), noisy, 'seeded');
});

test('CLIP-score cleaning with a trained checkpoint removes most swapped captions and keeps the clean pairs', async () => {
  const { cleanPairs, noiseReport } = await import('./filter');
  const { prepareAlignData } = await import('./data');
  const cfg = tiny({
    data: { maxTrain: 64, augment: { cropScale: [0.9, 1], jitter: 0 } },
    train: { steps: 80, batchSize: 32, warmupSteps: 5, evalEvery: 0 },
  });
  const res = await trainAlign(cfg, { db: path.join(dir, 'f.db'), outDir: path.join(dir, 'filter') });
  const data = await prepareAlignData(cfg, { splits: ['train'] });
  const pairs = addCaptionNoise(data.train.pairs, 0.2, 7);
  const r = await cleanPairs(res.checkpoint, pairs, { keepFraction: 0.8 });
  const rep = noiseReport(r);
  assert.equal(rep.noisy, 12);
  assert.equal(r.kept.length, Math.ceil(0.8 * 64));
  assert.ok(rep.noisyRemoved >= 0.75, `removed ${rep.noisyRemoved} of the swapped captions`);
  assert.ok(rep.cleanKept >= 0.9, `kept ${rep.cleanKept} of the clean pairs`);
  await assert.rejects(cleanPairs(path.join(dir, 'missing.safetensors'), pairs, { keepFraction: 0.5 }), /does not exist/);
});

test('the mixed source: emoji + shapes split by split, meta.source on every pair, balanced by source, trains and evaluates', async () => {
  assert.throws(() => tiny({ data: { dataset: 'mix' } }), /key data.dataset must be one of/);
  const cfg = tiny({
    data: { dataset: 'mixed', shapesScenes: 50, maxTrain: 96, evalSize: 24, workers: 0, balance: { emoji: 1, shapes: 1 }, balanceKey: 'source' },
    train: { steps: 2, batchSize: 16, warmupSteps: 0, evalEvery: 0 },
  });
  const mixed = alignPairs(cfg);
  const emoji = alignPairs({ ...cfg, data: { ...cfg.data, dataset: 'emoji' } });
  const shapes = alignPairs({ ...cfg, data: { ...cfg.data, dataset: 'shapes' } });
  for (const k of ['train', 'val', 'test'] as const) {
    assert.equal(mixed[k].length, emoji[k].length + shapes[k].length, k);
    assert.deepEqual(mixed[k].map((p) => p.id), [...emoji[k], ...shapes[k]].map((p) => p.id), k);
  }
  assert.equal(shapes.train.length, 50);
  assert.equal(shapes.val.length, 10);
  assert.deepEqual(mixed.heldout!.map((p) => p.id), emoji.heldout!.map((p) => p.id));
  for (const k of Object.keys(mixed)) {
    for (const p of mixed[k]) assert.equal(p.meta.source, p.id.startsWith('shapes-') ? 'shapes' : 'emoji', `${k} ${p.id}`);
  }
  assert.equal(emoji.train[0].meta.source, undefined, 'the emoji source itself is unchanged');

  const data = await prepareAlignData(cfg, { splits: ['train'] });
  const raw = data.train.pairs.filter((p) => p.meta.source === 'shapes').length / data.train.pairs.length;
  assert.ok(raw > 0 && raw < 0.2, `shapes are a small share of the capped train split: ${raw}`);
  const stream = makeBatchStream(cfg, data, 0);
  let n = 0;
  let sh = 0;
  try {
    for (let i = 0; i < 8; i++) {
      const b = await stream.next();
      for (const j of b.indices) { n++; if (data.train.pairs[j].meta.source === 'shapes') sh++; }
    }
  } finally {
    await stream.close();
  }
  assert.ok(sh / n > 0.35 && sh / n < 0.65, `balanceKey source gives about half shapes: ${sh}/${n}`);

  const res = await trainAlign(cfg, { db: path.join(dir, 'm.db'), outDir: path.join(dir, 'mixed') });
  assert.equal(res.status, 'finished');
  for (const k of ['val/i2t/r@1', 'val/t2i/r@1']) assert.ok(Number.isFinite(res.metrics[k]), k);
});

test('hard negatives (data.hardNegatives relation): reversed captions per pair, in the batches, a hardneg term equal to its formula, the relation test', async () => {
  assert.throws(() => tiny({ data: { hardNegatives: 'relation' } }), /key data.hardNegatives 'relation' needs shapes captions/);
  assert.throws(() => tiny({ data: { hardNegatives: 'swap' } }), /key data.hardNegatives must be one of/);
  assert.throws(() => tiny({ model: { hardNegativeWeight: -1 } }), /key model.hardNegativeWeight/);
  // A caption cut before its relation word has no negative (its reversed tokens would be its own).
  const cut = await prepareAlignData(tiny({ data: { dataset: 'shapes', shapesScenes: 64, maxTrain: 64, evalSize: 16, workers: 0, hardNegatives: 'relation' } }), { splits: ['train'] });
  const L = cut.train.tokens.length / cut.train.numTexts;
  cut.train.pairs.forEach((p, i) => {
    const r = reverseRelation(p.text);
    const rt = r === null ? null : cut.tokenizer.encodeBatch([r], { maxLen: L, bos: true, eos: true, padTo: 'max' }).ids;
    const same = rt === null || rt.every((v, t) => v === cut.train.tokens[i * L + t]);
    assert.equal(cut.train.negLengths[i] > 0, !same, p.text);
  });
  assert.ok(cut.train.pairs.some((p, i) => reverseRelation(p.text) !== null && cut.train.negLengths[i] === 0), 'context 12 cuts some relations off');
  const cfg = tiny({
    data: { dataset: 'shapes', shapesScenes: 64, maxTrain: 64, evalSize: 16, workers: 0, hardNegatives: 'relation' },
    tokenizer: { contextLength: 40 },
    train: { steps: 3, batchSize: 16, warmupSteps: 0, evalEvery: 3 },
  });
  const data = await prepareAlignData(cfg, { splits: ['train', 'val'] });
  const T = cfg.tokenizer.contextLength;
  const tr = data.train;
  let withNeg = 0;
  tr.pairs.forEach((p, i) => {
    const r = reverseRelation(p.text);
    if (r === null) { assert.equal(tr.negLengths[i], 0, p.text); return; }
    withNeg++;
    const want = data.tokenizer.encodeBatch([r], { maxLen: T, bos: true, eos: true, padTo: 'max' });
    if (want.ids.every((v, t) => v === tr.tokens[i * T + t])) { assert.equal(tr.negLengths[i], 0, `cut before the relation: ${p.text}`); return; }
    assert.deepEqual([...tr.negTokens.subarray(i * T, (i + 1) * T)], [...want.ids], r);
    assert.equal(tr.negLengths[i], want.lengths[0]);
  });
  assert.ok(withNeg > tr.pairs.length / 2 && withNeg < tr.pairs.length, `${withNeg} of ${tr.pairs.length} captions state a relation`);

  const stream = makeBatchStream(cfg, data, 0);
  try {
    const b = await stream.next();
    const neg = b.negatives!;
    assert.deepEqual([...neg.rows], [...b.indices].flatMap((j, r) => (tr.negLengths[j] > 0 ? [r] : [])));
    neg.rows.forEach((r, k) => assert.deepEqual([...neg.tokens.subarray(k * T, (k + 1) * T)], [...tr.negTokens.subarray(b.indices[r] * T, (b.indices[r] + 1) * T)]));

    // The term, against its formula on the model's own normalised embeddings.
    const model = buildAlignModel(cfg, data.tokenizer.vocabSize);
    try {
      const S = cfg.data.imageSize;
      const B = b.indices.length;
      const images = ml.tensor(b.images, [B, 3, S, S]);
      const tokens = ml.tensor(b.tokens, [B, T], { dtype: 'i32' });
      const lengths = ml.tensor(b.lengths, [B], { dtype: 'i32' });
      const K = neg.rows.length;
      const negatives = { tokens: ml.tensor(neg.tokens, [K, T], { dtype: 'i32' }), lengths: ml.tensor(neg.lengths, [K], { dtype: 'i32' }), rows: ml.tensor(neg.rows, [K], { dtype: 'i32' }) };
      const out = model.net.loss({ images, tokens, lengths, negatives });
      const plain = model.net.loss({ images, tokens, lengths });
      const img = model.net.encodeImage(images).toArray() as Float32Array;
      const txt = model.net.encodeText(tokens, lengths).toArray() as Float32Array;
      const ng = model.net.encodeText(negatives.tokens, negatives.lengths).toArray() as Float32Array;
      const E = img.length / B;
      const dot = (a: Float32Array, i: number, c: Float32Array, j: number) => { let s = 0; for (let e = 0; e < E; e++) s += a[i * E + e] * c[j * E + e]; return s; };
      const s = Math.min(Math.exp(model.net.logitScale.item()), 100);
      let want = 0;
      neg.rows.forEach((r, k) => {
        const p = s * dot(img, r, txt, r), q = s * dot(img, r, ng, k);
        want += Math.log(Math.exp(p) + Math.exp(q)) - p;
      });
      want /= K;
      assert.ok(Math.abs(out.parts.hardneg - want) < 1e-4, `hardneg ${out.parts.hardneg} vs ${want}`);
      assert.equal(plain.parts.hardneg, undefined);
      assert.ok(Math.abs(out.loss.item() - (plain.loss.item() + want)) < 1e-4, 'loss = infonce + 1 * hardneg');
      // The relation test against the same count done by hand from model.embed and the reversed captions' embeddings.
      const v = data.val;
      const e = model.embed(v);
      let right = 0, n = 0;
      for (let i = 0; i < v.numTexts; i++) {
        if (v.negLengths[i] === 0) continue;
        const ne = model.net.encodeText(ml.tensor(v.negTokens.subarray(i * T, (i + 1) * T), [1, T], { dtype: 'i32' }), ml.tensor([v.negLengths[i]], [1], { dtype: 'i32' }));
        const nv = ne.toArray() as Float32Array;
        ne.dispose();
        const im = v.pairImage[i];
        let sp = 0, sn = 0;
        for (let k = 0; k < e.dim; k++) { sp += e.img[im * e.dim + k] * e.txt[i * e.dim + k]; sn += e.img[im * e.dim + k] * nv[k]; }
        n++;
        if (sp > sn) right++;
      }
      assert.ok(n > 0, 'the val split has captions stating a relation');
      assert.equal(model.relationAccuracy(v), right / n);
      for (const t of [images, tokens, lengths, negatives.tokens, negatives.lengths, negatives.rows, out.loss, plain.loss]) t.dispose();
    } finally {
      model.dispose();
    }
  } finally {
    await stream.close();
  }

  const res = await trainAlign(cfg, { db: path.join(dir, 'hn.db'), outDir: path.join(dir, 'hn') });
  assert.equal(res.status, 'finished');
  assert.ok(res.metrics['val/relation'] >= 0 && res.metrics['val/relation'] <= 1, 'val/relation is logged');
  const t = Tracker.open(path.join(dir, 'hn.db'));
  try {
    assert.deepEqual(t.metricSeries(res.runId, 'loss/hardneg')[0].steps, [1, 2, 3]);
  } finally {
    t.close();
  }

  // init.checkpoint: a run starts from another's weights and tokenizer (stopped before its first step, its
  // checkpoint holds exactly the weights it started from).
  const from = await trainAlign(tiny({ data: { dataset: 'shapes', shapesScenes: 64, maxTrain: 64, evalSize: 16, workers: 0 }, tokenizer: { contextLength: 40 }, train: { steps: 2, batchSize: 16, warmupSteps: 0, evalEvery: 0 } }), { db: path.join(dir, 'hn.db'), outDir: path.join(dir, 'from') });
  const started = await trainAlign({ ...cfg, init: { checkpoint: from.checkpoint } }, { db: path.join(dir, 'hn.db'), outDir: path.join(dir, 'init'), stopAfter: 0 });
  const a = ml.load(from.checkpoint), b2 = ml.load(started.checkpoint);
  try {
    const names = Object.keys(a.tensors).filter((k) => k.startsWith('model.'));
    assert.ok(names.length > 10);
    for (const k of names) assert.deepEqual(b2.tensors[k].toArray(), a.tensors[k].toArray(), k);
  } finally {
    for (const x of [...Object.values(a.tensors), ...Object.values(b2.tensors)]) x.dispose();
  }
  await assert.rejects(trainAlign({ ...cfg, init: { checkpoint: path.join(dir, 'nope.safetensors') } }, { db: path.join(dir, 'hn.db'), outDir: path.join(dir, 'bad') }), /key init.checkpoint: no such file/);
  const wide = tiny({ data: { dataset: 'shapes', shapesScenes: 64, maxTrain: 64, evalSize: 16, workers: 0 }, tokenizer: { contextLength: 40 }, model: { visionWidth: 64 }, init: { checkpoint: from.checkpoint } });
  await assert.rejects(trainAlign(wide, { db: path.join(dir, 'hn.db'), outDir: path.join(dir, 'bad2') }), /key init.checkpoint [\s\S]*visual.posEmbed[\s\S]*model keys must match/);
  // Fine-tuning with an objective head the checkpoint lacks (maskedObjective): the towers come from the
  // checkpoint, the head starts fresh; going back to no head drops it.
  const masked = await trainAlign({ ...cfg, model: { ...cfg.model, maskedObjective: 'text' }, init: { checkpoint: from.checkpoint } }, { db: path.join(dir, 'hn.db'), outDir: path.join(dir, 'masked'), stopAfter: 0 });
  const m = ml.load(masked.checkpoint), f = ml.load(from.checkpoint);
  try {
    const heads = Object.keys(m.tensors).filter((k) => k.startsWith('model.masked.'));
    assert.ok(heads.length > 5, 'the masked head is in the checkpoint');
    assert.ok(heads.every((k) => !(k in f.tensors)));
    for (const k of Object.keys(f.tensors).filter((k) => k.startsWith('model.'))) assert.deepEqual(m.tensors[k].toArray(), f.tensors[k].toArray(), k);
  } finally {
    for (const x of [...Object.values(m.tensors), ...Object.values(f.tensors)]) x.dispose();
  }
  const back = await trainAlign({ ...cfg, init: { checkpoint: masked.checkpoint } }, { db: path.join(dir, 'hn.db'), outDir: path.join(dir, 'back'), stopAfter: 0 });
  assert.equal(back.status, 'killed');
  const fb = ml.load(back.checkpoint);
  try {
    assert.ok(!Object.keys(fb.tensors).some((k) => k.startsWith('model.masked.')), 'the unused head is dropped');
  } finally {
    for (const x of Object.values(fb.tensors)) x.dispose();
  }
});
