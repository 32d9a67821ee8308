/** `modalab chat` argument handling and checkpoint lookup: every mistake is named before a model is loaded. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { chatCheckpoint, parseChatArgs } from './chat';
import { Tracker } from '../experiments/tracking';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-chat-'));
const img = path.join(dir, 'scene.png');
fs.writeFileSync(img, Buffer.from([0x89, 0x50, 0x4e, 0x47]));

test('chat arguments: images, question, sampling flags; bad input names the flag', () => {
  const a = parseChatArgs(['--image', img, 'what colour is the circle?', '--max-new', '8', '--temperature=0.5', '--seed', '3']);
  assert.deepEqual(a.images, [img]);
  assert.equal(a.question, 'what colour is the circle?');
  assert.deepEqual([a.maxNew, a.temperature, a.seed, a.checkpoint], [8, 0.5, 3, null]);
  assert.equal(parseChatArgs(['--image', img]).question, null);
  assert.deepEqual(parseChatArgs(['--image', img, '--image', img, 'same?']).images, [img, img]);
  assert.throws(() => parseChatArgs(['what?']), /give the image to ask about with --image FILE/);
  assert.throws(() => parseChatArgs(['--image', path.join(dir, 'nope.png'), 'q']), /--image .*nope\.png: no such file/);
  assert.throws(() => parseChatArgs(['--image', dir, 'q']), /is not a file/);
  assert.throws(() => parseChatArgs(['--image', img, '--image', img, '--image', img, 'q']), /at most two --image/);
  assert.throws(() => parseChatArgs(['--image', img, 'what', 'colour']), /one question at a time \(quote it\)/);
  assert.throws(() => parseChatArgs(['--image', img, '  ']), /the question is empty/);
  assert.throws(() => parseChatArgs(['--image', img, '--max-new', '0', 'q']), /--max-new must be an integer in \[1, 512\]/);
  assert.throws(() => parseChatArgs(['--image', img, '--temprature', '1']), /unknown argument "--temprature"/);
  assert.throws(() => parseChatArgs(['--image']), /--image needs a value/);
});

test('chat checkpoint: a missing file, a db without instruct runs, and a run of another stage are named', () => {
  const db = path.join(dir, 'runs.db');
  assert.throws(() => chatCheckpoint(parseChatArgs(['--image', img, '--checkpoint', path.join(dir, 'x.safetensors')])), /--checkpoint .*x\.safetensors: no such file/);
  const t = Tracker.open(db);
  const run = t.startRun({ experiment: 'align', stage: 'align', config: { a: 1 } });
  run.finish('finished');
  t.close();
  assert.throws(() => chatCheckpoint({ ...parseChatArgs(['--image', img]), db }), /has no finished instruct run with a checkpoint; train one/);
  assert.throws(() => chatCheckpoint({ ...parseChatArgs(['--image', img, '--checkpoint', String(run.id)]), db }), /is a align run, not an instruct run/);
});

test('command errors name the command once', () => {
  const { errorLine } = require('./main') as typeof import('./main');
  assert.equal(errorLine('chat', new Error('chat: --image x.png: no such file')), 'modalab chat: --image x.png: no such file\n');
  assert.equal(errorLine('train', new Error('caption config: unknown key x')), 'modalab train: caption config: unknown key x\n');
});

test('chat --scene draws a shapes scene to a PNG and lists questions with their answers', async () => {
  const { drawScene } = require('./chat') as typeof import('./chat');
  assert.equal(parseChatArgs(['--scene', '7', 'q']).scene, 7);
  assert.throws(() => parseChatArgs(['--scene', '7', '--image', img, 'q']), /either --image or --scene, not both/);
  assert.throws(() => parseChatArgs(['--scene', '-1']), /--scene must be an integer/);
  const s = await drawScene(7, path.join(dir, 'scenes'));
  const bytes = fs.readFileSync(s.file);
  assert.deepEqual([...bytes.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], 'a PNG');
  assert.ok(s.caption.length > 0 && s.questions.length >= 3);
  const again = await drawScene(7, path.join(dir, 'scenes2'));
  assert.deepEqual([again.caption, again.questions], [s.caption, s.questions], 'the same scene for the same number');
  assert.deepEqual(fs.readdirSync(path.join(dir, 'scenes')), ['scene-7.png'], 'no temp file left');
});
