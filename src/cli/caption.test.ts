/** `runCaption` argument handling: config errors name the key before anything is trained. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { runCaption } from './caption';

test('runCaption: --resume refuses config flags; a mistyped --set key is named with a suggestion', async () => {
  await assert.rejects(runCaption(['--resume', '3', '--set', 'train.lr=1e-3']), /--resume continues a run with its own config/);
  await assert.rejects(runCaption(['--set', 'train.klWieght=1']), /unknown key train.klWieght \(did you mean train.klWeight\?\)/);
  await assert.rejects(runCaption(['--preset', 'huge']), /caption config: unknown preset "huge"/);
  await assert.rejects(runCaption(['--bogus']), /unknown argument "--bogus"/);
});
