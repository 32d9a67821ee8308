/** `runInstruct` argument handling and the per-type table: config errors name the key before anything is trained. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { instructTable, runInstruct } from './instruct';

test('runInstruct: --resume refuses config flags; a mistyped --set key is named with a suggestion', async () => {
  await assert.rejects(runInstruct(['--resume', '3', '--set', 'train.lr=1e-3']), /--resume continues a run with its own config/);
  await assert.rejects(runInstruct(['--set', 'lora.rnak=4']), /unknown key lora.rnak \(did you mean lora.rank\?\)/);
  await assert.rejects(runInstruct(['--preset', 'huge']), /instruct config: unknown preset "huge"/);
  await assert.rejects(runInstruct(['--bogus']), /unknown argument "--bogus"/);
});

test('instructTable: one row per question type with its baseline, then overall', () => {
  const t = instructTable({ 'val/vqa_acc': 0.5, 'baseline/vqa_acc': 0.25, 'val/vqa_acc/count': 0.75, 'baseline/vqa_acc/count': 0.5, 'val/vqa_acc/colour': 0.4 });
  const lines = t.trimEnd().split('\n');
  assert.equal(lines[0], 'VQA type    accuracy  baseline');
  assert.match(lines[1], /^colour +40\.0% +- *$/);
  assert.match(lines[2], /^count +75\.0% +50\.0%$/);
  assert.match(lines[3], /^overall +50\.0% +25\.0%$/);
});
