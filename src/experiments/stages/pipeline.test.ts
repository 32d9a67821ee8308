/**
 * The whole recipe on tiny configurations: align -> lm -> caption -> instruct in one call, each stage reading the
 * run the previous one just finished (parent links, one tokenizer), a late typo failing before anything runs,
 * `from` starting at a later stage from the latest finished runs, an abort stopping the running stage (killed)
 * and skipping the rest, and the summary table.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Tracker } from '../tracking';
import { Tokenizer } from '../tokenizer';
import { readCheckpointState } from './checkpoint';
import { JsonObject } from './config';
import { PipelineStage, pipelineTable, resolvePipelineConfigs, runPipeline, splitStageOverrides } from './pipeline';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-pipeline-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
const cache = path.join(dir, 'cache');

const TINY: Record<PipelineStage, JsonObject> = {
  align: {
    seed: 3,
    data: { imageSize: 16, maxTrain: 32, evalSize: 16, finalEval: false, workers: 0, cacheDir: cache, shapesScenes: 24 },
    tokenizer: { vocabSize: 320, contextLength: 12, glosses: 300 },
    model: { patchSize: 4, visionWidth: 32, visionLayers: 1, visionHeads: 2, textWidth: 32, textLayers: 1, textHeads: 2, embedDim: 16 },
    train: { steps: 2, batchSize: 16, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0 },
  },
  lm: {
    seed: 1,
    data: { glosses: 300, captions: true, valFraction: 0.1, evalSequences: 4, cacheDir: cache },
    tokenizer: { vocabSize: 320, glosses: 300 },
    model: { contextLength: 128, width: 32, layers: 1, heads: 2 },
    train: { steps: 2, batchSize: 4, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0, samples: 0 },
  },
  caption: {
    seed: 2,
    data: { maxTrain: 16, maxTextLen: 12, evalSamples: 2, samples: 1 },
    model: { projectorHidden: 32 },
    train: { steps: 2, batchSize: 4, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0 },
    generate: { maxNewTokens: 2 },
  },
  instruct: {
    seed: 4,
    data: { trainRecords: 12, tasks: ['vqa', 'difference'], evalScenes: 3, evalQuestionsPerScene: 2, evalRecords: 1, maxTextLen: 100, samples: 2 },
    lora: { rank: 2, alpha: 4, dropout: 0 },
    train: { steps: 2, batchSize: 4, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0 },
    generate: { maxNewTokens: 3 },
  },
};

test('overrides are split by stage; a key that is not a stage, or a typo in the last stage, fails before anything runs', async () => {
  assert.deepEqual(splitStageOverrides({ caption: { train: { steps: 5 } } }), { caption: { train: { steps: 5 } } });
  assert.throws(() => splitStageOverrides({ train: { steps: 5 } }), /override key train must start with a stage name \(align, lm, caption, instruct\)/);
  assert.throws(() => splitStageOverrides({ lm: 3 } as unknown as JsonObject), /override lm must be an object/);
  assert.equal(resolvePipelineConfigs('quick').align.data.dataset, 'mixed');
  assert.equal(resolvePipelineConfigs('quick', { align: { data: { dataset: 'emoji' } } }).align.data.dataset, 'emoji');
  const db = path.join(dir, 'typo.db');
  await assert.rejects(runPipeline({ preset: null, db, overrides: { ...TINY, instruct: { lora: { rnak: 2 } } } }), /instruct config: unknown key lora.rnak \(did you mean lora.rank\?\)/);
  await assert.rejects(runPipeline({ preset: null, db, from: 'caption', to: 'align' }), /to \(align\) comes before from \(caption\)/);
  await assert.rejects(runPipeline({ preset: null, db, from: 'vision' as PipelineStage }), /from must be one of align, lm, caption, instruct/);
  assert.equal(fs.existsSync(db), false, 'nothing was written');
});

test('align -> lm -> caption -> instruct: each stage from the run before it, parents recorded, one tokenizer; then from caption', async () => {
  const db = path.join(dir, 'all.db');
  const started: string[] = [];
  const res = await runPipeline({ preset: null, db, overrides: TINY, onStageStart: (s) => started.push(s) });
  assert.equal(res.status, 'finished');
  assert.deepEqual(started, ['align', 'lm', 'caption', 'instruct']);
  assert.deepEqual(res.stages.map((s) => [s.stage, s.status]), [['align', 'finished'], ['lm', 'finished'], ['caption', 'finished'], ['instruct', 'finished']]);
  const [al, lm, cap, ins] = res.stages;
  const t = Tracker.open(db);
  try {
    assert.equal(t.getRun(al.runId).parentRunId ?? null, null);
    assert.equal(t.getRun(cap.runId).parentRunId, al.runId, 'caption records the align run as its parent');
    assert.equal(t.getRun(ins.runId).parentRunId, cap.runId, 'instruct records the caption run as its parent');
    assert.equal((t.getRun(al.runId).config.data as { dataset: string }).dataset, 'mixed', 'the pipeline aligns on emoji + shapes');
  } finally {
    t.close();
  }
  // The caption run read this align run's encoder and this lm run's GPT; the lm used the align run's tokenizer.
  const capState = readCheckpointState(cap.checkpoint).extra as { alignCheckpoint: string; lmCheckpoint: string };
  assert.equal(path.resolve(capState.alignCheckpoint), path.resolve(al.checkpoint));
  assert.equal(path.resolve(capState.lmCheckpoint), path.resolve(lm.checkpoint));
  const lmState = readCheckpointState(lm.checkpoint);
  assert.equal(path.resolve(String((lmState.config as { tokenizer: { path: string } }).tokenizer.path)), path.resolve(al.outDir, 'tokenizer.json'));
  const insState = readCheckpointState(ins.checkpoint).extra as { captionCheckpoint: string };
  assert.equal(path.resolve(insState.captionCheckpoint), path.resolve(cap.checkpoint));
  for (const k of ['val/vqa_acc', 'val/bleu4']) assert.ok(k in { ...cap.metrics, ...ins.metrics }, `${k} reported`);

  const table = pipelineTable(res);
  for (const s of ['align', 'lm', 'caption', 'instruct']) assert.match(table, new RegExp(`^${s} +${res.stages.find((o) => o.stage === s)!.runId} +finished`, 'm'));
  assert.match(table, /VQA acc \d+\.\d/);
  assert.match(table, /^R@1 \(t2i\) \d+\.\d  BLEU-4 \d+\.\d  ROUGE-L \d+\.\d  VQA accuracy \d+\.\d/m);

  // from caption: the latest finished align and lm runs of the db are used; the new caption run's parent is that align run.
  const res2 = await runPipeline({ preset: null, db, overrides: TINY, from: 'caption', to: 'caption' });
  assert.deepEqual(res2.stages.map((s) => s.stage), ['caption']);
  const t2 = Tracker.open(db);
  try {
    assert.equal(t2.getRun(res2.stages[0].runId).parentRunId, al.runId);
  } finally {
    t2.close();
  }
});

test('an abort stops the running stage (checkpoint, killed) and skips the rest', async () => {
  const db = path.join(dir, 'abort.db');
  const ctl = new AbortController();
  const res = await runPipeline({
    preset: null, db, to: 'caption', signal: ctl.signal,
    overrides: { ...TINY, lm: { ...TINY.lm, train: { ...(TINY.lm.train as JsonObject), steps: 50 } } },
    onStep: (stage, s) => { if (stage === 'lm' && s.step === 1) ctl.abort(); },
  });
  assert.equal(res.status, 'killed');
  assert.deepEqual(res.stages.map((s) => [s.stage, s.status]), [['align', 'finished'], ['lm', 'killed']]);
  assert.ok(fs.existsSync(res.stages[1].checkpoint), 'the stopped stage wrote its checkpoint');
  const t = Tracker.open(db);
  try {
    assert.deepEqual(t.listRuns({}).map((r) => [r.stage, r.status]), [['align', 'finished'], ['lm', 'killed']]);
  } finally {
    t.close();
  }
});

test('lm.tokenizer.sceneTexts: the lm stage trains its own tokenizer instead of taking the align run\'s', async () => {
  // A folder of its own: run folders are named by run id (align-1, lm-2) next to the database.
  fs.mkdirSync(path.join(dir, 'scenetok'));
  const db = path.join(dir, 'scenetok', 'runs.db');
  const res = await runPipeline({
    preset: null, db, to: 'lm',
    overrides: { ...TINY, lm: { ...TINY.lm, tokenizer: { ...(TINY.lm.tokenizer as JsonObject), sceneTexts: 500 } } },
  });
  assert.deepEqual(res.stages.map((s) => [s.stage, s.status]), [['align', 'finished'], ['lm', 'finished']]);
  const cfg = readCheckpointState(res.stages[1].checkpoint).config as { tokenizer: { path: string; sceneTexts: number } };
  assert.deepEqual([cfg.tokenizer.path, cfg.tokenizer.sceneTexts], ['', 500]);
  // Its own tokenizer, trained with the scene texts: a scene sentence takes fewer tokens than with the align run's.
  const own = Tokenizer.fromFile(path.join(res.stages[1].outDir, 'tokenizer.json'));
  const align = Tokenizer.fromFile(path.join(res.stages[0].outDir, 'tokenizer.json'));
  const text = 'is there a green star? a small red circle at the top left and a large blue triangle in the middle, so no';
  assert.ok(own.encode(text).length < align.encode(text).length, `${own.encode(text).length} vs ${align.encode(text).length} tokens`);
});
