/**
 * Instruction JSON lines: the generator (tasks in equal shares, every VQA type, difference sentences that match
 * the edit, balanced match answers, emoji pairs read from files), the atomic writer, and the streaming reader on
 * every kind of bad line, with line numbers, skip counting, blank lines, CRLF and a byte-order mark.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import type { InstructionRecord, Pair } from './types';
import { editScene, finalAnswer, imageProblem, isStrictBase64, makeInstructionRecords, positionRationale, readInstructions, marksRationale, questionTargets, recordImages, sceneQaTexts, sceneRationale, writeInstructions } from './instruct';
import { COLOURS, QA_TYPES, generateScenes, groundedCaption, rng, type SceneObject } from './shapes';

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-instruct-'));
const pngOf = (b64: string) => sharp(Buffer.from(b64, 'base64')).metadata();

// ---------------------------------------------------------------------------------------------------------
// Generator

test('shapes records: tasks in equal shares, every VQA type, answers taken from the scene, images of the right size', async () => {
  const recs = await makeInstructionRecords({ source: 'shapes', n: 40, seed: 2, size: 48 });
  assert.equal(recs.length, 40);
  const tasks = new Map<string, number>();
  for (const r of recs) tasks.set(r.task as string, (tasks.get(r.task as string) ?? 0) + 1);
  assert.deepEqual(Object.fromEntries(tasks), { caption: 10, vqa: 10, difference: 10, match: 10 });
  const scenes = new Map(generateScenes({ seed: 2, n: 40, size: 48 }).map((s) => [s.id, s]));
  const qtypes = new Set<string>();
  for (const r of recs) {
    assert.ok(r.instruction.length > 0 && r.output.length > 0);
    const m = await pngOf(r.input_image!);
    assert.deepEqual([m.format, m.width, m.height], ['png', 48, 48]);
    const scene = scenes.get(r.scene as string)!;
    assert.ok(scene, `record ${r.id} names an unknown scene`);
    if (r.task === 'caption') assert.equal(r.output, scene.caption);
    if (r.task === 'vqa') {
      qtypes.add(r.qtype as string);
      const qa = scene.qa.find((q) => r.instruction.toLowerCase().includes(q.question) && q.type === r.qtype);
      assert.ok(qa, `${r.instruction} is not one of the scene's questions`);
      assert.equal(r.output, qa.answers[0]);
    }
    if (r.task === 'difference' || r.task === 'match') {
      assert.ok(r.reference_image, `${r.task} record without a reference image`);
      assert.notEqual(r.reference_image, r.input_image);
      assert.equal((await pngOf(r.reference_image as string)).width, 48);
    } else assert.equal(r.reference_image, undefined);
  }
  assert.deepEqual([...qtypes].sort(), [...QA_TYPES].sort());
  const match = recs.filter((r) => r.task === 'match').map((r) => r.output);
  assert.equal(match.filter((o) => o === 'yes').length, match.length / 2);
  // deterministic
  assert.deepEqual(await makeInstructionRecords({ source: 'shapes', n: 40, seed: 2, size: 48 }), recs);
  const other = await makeInstructionRecords({ source: 'shapes', n: 40, seed: 3, size: 48 });
  assert.notDeepEqual(other.map((r) => r.output), recs.map((r) => r.output));
});

test('difference sentences describe exactly the one edit made, with references unique in the original', () => {
  const scenes = generateScenes({ seed: 8, n: 300 });
  const kinds = new Map<string, number>();
  const key = (o: SceneObject) => `${o.x},${o.y}`;
  for (const s of scenes) {
    const e = editScene(s, rng(s.objects.length * 7919 + s.objects[0].x), 64)!;
    assert.ok(e, `${s.id}: no edit`);
    const before = new Map(s.objects.map((o) => [key(o), o]));
    const after = new Map(e.scene.objects.map((o) => [key(o), o]));
    const c = e.change;
    let m: RegExpMatchArray | null;
    // "the circle" / "the large circle" / "the red object" / "the red circle": unique in the original scene
    const one = (ref: string) => {
      const words = ref.replace(/^the /, '').split(' ');
      const noun = words.pop()!;
      const hits = s.objects.filter((o) => (noun === 'object' || o.shape === noun) && words.every((w) => w === o.size || w === o.colour));
      assert.equal(hits.length, 1, `"${ref}" in "${c}" is not unique`);
      return hits[0];
    };
    if ((m = c.match(/^(.+) was added$/))) {
      kinds.set('add', (kinds.get('add') ?? 0) + 1);
      assert.equal(e.scene.objects.length, s.objects.length + 1);
      const added = e.scene.objects.filter((o) => !before.has(key(o)));
      assert.equal(added.length, 1);
      assert.equal(m[1], `a ${added[0].size} ${added[0].colour} ${added[0].shape}`);
    } else if ((m = c.match(/^(the .+) was removed$/))) {
      kinds.set('remove', (kinds.get('remove') ?? 0) + 1);
      const gone = one(m[1]);
      assert.deepEqual(e.scene.objects, s.objects.filter((o) => o !== gone));
    } else if ((m = c.match(/^(the .+) is (?:an? )?(\w+) instead of (?:an? )?(\w+)$/))) {
      const o = one(m[1]);
      const changed = after.get(key(o))!;
      assert.ok(changed, `${c}: the object moved`);
      const attr = (COLOURS as readonly string[]).includes(m[2]) ? 'colour' : m[2] === 'small' || m[2] === 'large' ? 'size' : 'shape';
      kinds.set(attr, (kinds.get(attr) ?? 0) + 1);
      assert.equal(o[attr], m[3], c);
      assert.equal(changed[attr], m[2], c);
      assert.deepEqual({ ...changed, [attr]: o[attr] }, o, `${c}: more than one attribute changed`);
      for (const p of s.objects) if (p !== o) assert.deepEqual(after.get(key(p)), p, `${c}: another object changed`);
      // the edited scene keeps (shape, colour) unique
      assert.equal(new Set(e.scene.objects.map((p) => `${p.shape}/${p.colour}`)).size, e.scene.objects.length);
    } else assert.fail(`unrecognised change "${c}"`);
  }
  for (const k of ['add', 'remove', 'colour', 'shape', 'size']) assert.ok((kinds.get(k) ?? 0) > 20, `${k}: ${kinds.get(k)}`);
});

const GOOGLE = path.join(path.dirname(require.resolve('emoji-datasource-google/package.json')), 'img/google/64');
const TWITTER = path.join(path.dirname(require.resolve('emoji-datasource-twitter/package.json')), 'img/twitter/64');

function emojiPairs(): Pair[] {
  const out: Pair[] = [];
  for (const [cp, text] of [['1f600', 'grinning face'], ['1f431', 'cat face'], ['1f34e', 'red apple']]) {
    for (const [vendor, dir] of [['google', GOOGLE], ['twitter', TWITTER]]) {
      out.push({ id: `${vendor}-${cp}`, image: { kind: 'file', path: path.join(dir, `${cp}.png`) }, text, group: cp, meta: { vendor } });
    }
  }
  return out;
}

test('emoji and both: captions from pairs, match answers agree with the groups, shapes and emoji alternate', async () => {
  const pairs = emojiPairs();
  const recs = await makeInstructionRecords({ source: 'both', n: 24, seed: 1, size: 32, emojiPairs: pairs });
  assert.deepEqual(recs.map((r) => r.source), Array.from({ length: 24 }, (_, j) => (j % 2 === 0 ? 'shapes' : 'emoji')));
  const emoji = recs.filter((r) => r.source === 'emoji');
  assert.deepEqual(new Set(emoji.map((r) => r.task)), new Set(['caption', 'match']));
  for (const r of emoji) {
    assert.equal((await pngOf(r.input_image!)).width, 32);
    if (r.task === 'caption') assert.equal(r.output, pairs.find((p) => p.group === r.group)!.text);
    else {
      assert.equal(r.output, r.group === r.reference_group ? 'yes' : 'no');
      if (r.output === 'yes') assert.notEqual(r.input_image, r.reference_image, 'same concept, other vendor');
    }
  }
  const m = emoji.filter((r) => r.task === 'match');
  assert.equal(m.filter((r) => r.output === 'yes').length, m.length / 2);
});

test('generator errors: missing emoji pairs, unreadable emoji file, tasks that do not apply', async () => {
  await assert.rejects(makeInstructionRecords({ source: 'emoji', n: 2, seed: 1 }), /needs emojiPairs/);
  await assert.rejects(makeInstructionRecords({ source: 'emoji', n: 2, seed: 1, tasks: ['vqa'], emojiPairs: emojiPairs() }), /none of the tasks.*applies to emoji/);
  await assert.rejects(makeInstructionRecords({ source: 'shapes', n: 2, seed: 1, tasks: ['ocr' as never] }), /tasks must be/);
  const missing: Pair[] = [{ id: 'gone', image: { kind: 'file', path: '/nonexistent/x.png' }, text: 'x', group: 'x', meta: {} }];
  await assert.rejects(makeInstructionRecords({ source: 'emoji', n: 1, seed: 1, tasks: ['caption'], emojiPairs: missing }), /pair gone at \/nonexistent\/x\.png/);
});

// ---------------------------------------------------------------------------------------------------------
// Writer and reader

test('write then read gives the same records, extra fields kept; the write is atomic and validated', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'sub', 'data.jsonl');
  const recs = await makeInstructionRecords({ source: 'shapes', n: 12, seed: 4, size: 32 });
  await writeInstructions(file, recs);
  const text = fs.readFileSync(file, 'utf8');
  assert.equal(text.split('\n').length, 13); // one line per record and a final newline
  assert.ok(text.startsWith('{"instruction":'));
  const { records, skipped } = await readInstructions(file, { validateImages: true });
  assert.deepEqual(records, recs);
  assert.deepEqual(skipped, { skipped: 0, reasons: [] });
  assert.deepEqual(fs.readdirSync(path.dirname(file)), ['data.jsonl'], 'no temporary file left behind');
  // A bad record throws before anything is written: the old file stays as it was.
  const bad = [...recs, { instruction: 'x', output: '' } as InstructionRecord];
  await assert.rejects(writeInstructions(file, bad), /record 12: "output" is empty/);
  assert.equal(fs.readFileSync(file, 'utf8'), text);
  assert.deepEqual(fs.readdirSync(path.dirname(file)), ['data.jsonl']);
});

/** Base64 of a real 8x8 PNG and JPEG. */
async function images(): Promise<{ png: string; jpeg: string; truncated: string }> {
  const img = sharp({ create: { width: 8, height: 8, channels: 3, background: '#3366cc' } });
  const png = await img.clone().png().toBuffer();
  const jpeg = await img.clone().jpeg().toBuffer();
  return { png: png.toString('base64'), jpeg: jpeg.toString('base64'), truncated: png.subarray(0, png.length - 30).toString('base64') };
}

test('every bad line throws naming the file, the line and the reason; with skip it is counted', async () => {
  const { png, jpeg, truncated } = await images();
  const good = (extra: object = {}) => JSON.stringify({ instruction: 'Describe the image.', input_image: png, output: 'a blue square', ...extra });
  const cases: [string, RegExp, boolean?][] = [
    ['{"instruction": "x", "output": ', /malformed JSON/],
    ['[1, 2]', /expected a JSON object, got an array/],
    ['null', /expected a JSON object, got null/],
    [JSON.stringify({ output: 'y' }), /missing "instruction"/],
    [JSON.stringify({ instruction: 'x' }), /missing "output"/],
    [JSON.stringify({ instruction: '   ', output: 'y' }), /"instruction" is empty/],
    [JSON.stringify({ instruction: 'x', output: '' }), /"output" is empty/],
    [JSON.stringify({ instruction: 7, output: 'y' }), /"instruction" must be a string, got number/],
    [JSON.stringify({ instruction: 'x', output: ['y'] }), /"output" must be a string, got object/],
    [good({ input_image: 12 }), /"input_image" must be a base64 string, got number/],
    [good({ reference_image: null }), /"reference_image" must be a base64 string, got null/],
    [good({ input_image: 'abc' }), /"input_image" is not valid base64/],
    [good({ input_image: 'ab=c' }), /"input_image" is not valid base64/],
    [good({ input_image: png.slice(0, 8) + '\n' + png.slice(8) }), /"input_image" is not valid base64/],
    [good({ input_image: png.replace(/=+$/, '') }), /"input_image" is not valid base64/],
    [good({ input_image: png.slice(0, 20) + '-_' + png.slice(22) }), /"input_image" is not valid base64/],
    [good({ input_image: Buffer.from('hello, world').toString('base64') }), /"input_image" is not a PNG or JPEG \(bad magic bytes\)/, true],
    [good({ reference_image: truncated }), /"reference_image" is not a decodable PNG/, true],
  ];
  const dir = tmpDir();
  for (const [i, [line, reason, needsValidation]] of cases.entries()) {
    const file = path.join(dir, `case${i}.jsonl`);
    fs.writeFileSync(file, [good(), good({ reference_image: jpeg }), line, good()].join('\n') + '\n');
    const err = await readInstructions(file, { validateImages: true }).then(() => null, (e: Error) => e);
    assert.ok(err, `case ${i} did not throw: ${line.slice(0, 60)}`);
    assert.ok(err.message.startsWith(`${file}:3: `), err.message);
    assert.match(err.message, reason);
    if (needsValidation) {
      // without image validation only the text checks run, and this line passes
      assert.equal((await readInstructions(file)).records.length, 4);
    }
  }
  // All of them in one file, skipped and counted, the first ten reasons kept.
  const file = path.join(dir, 'all.jsonl');
  const lines = [good({ id: 'a' }), ...cases.map((c) => c[0]), good({ id: 'b' })];
  fs.writeFileSync(file, lines.join('\n'));
  const { records, skipped } = await readInstructions(file, { onError: 'skip', validateImages: true });
  assert.deepEqual(records.map((r) => r.id), ['a', 'b']);
  assert.equal(skipped.skipped, cases.length);
  assert.equal(skipped.reasons.length, 10);
  skipped.reasons.forEach((r, k) => assert.ok(r.startsWith(`${file}:${k + 2}: `), r));
});

test('blank lines, a trailing newline, CRLF line ends and a byte-order mark are all read; line numbers count them', async () => {
  const { png } = await images();
  const rec = (id: string) => JSON.stringify({ instruction: 'Describe the image.', input_image: png, output: 'a blue square', id });
  const dir = tmpDir();
  const file = path.join(dir, 'crlf.jsonl');
  fs.writeFileSync(file, '\uFEFF' + [rec('a'), '', '   ', rec('b'), '', rec('c')].join('\r\n') + '\r\n\r\n');
  const { records, skipped } = await readInstructions(file, { validateImages: true });
  assert.deepEqual(records.map((r) => r.id), ['a', 'b', 'c']);
  assert.equal(skipped.skipped, 0);
  for (const r of records) assert.equal(r.output, 'a blue square'); // no stray \r
  // A bad line after blank CRLF lines is reported at its real line number.
  fs.writeFileSync(file, [rec('a'), '', '', '{oops'].join('\r\n') + '\r\n');
  await assert.rejects(readInstructions(file), new RegExp(`^Error: ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:4: malformed JSON`));
  // An empty file is an empty dataset.
  fs.writeFileSync(file, '');
  assert.deepEqual(await readInstructions(file), { records: [], skipped: { skipped: 0, reasons: [] } });
});

test('a missing file or a bad onError throws naming it; recordImages gives the decoded bytes', async () => {
  await assert.rejects(readInstructions('/nonexistent/data.jsonl', { onError: 'skip' }), /cannot read \/nonexistent\/data\.jsonl/);
  await assert.rejects(readInstructions(tmpDir()), /not a regular file/);
  await assert.rejects(readInstructions('/x', { onError: 'ignore' as never }), /onError must be/);
  const { png, jpeg } = await images();
  const imgs = recordImages({ instruction: 'x', input_image: png, reference_image: jpeg, output: 'y', id: 'r1' });
  assert.equal(imgs.input.kind, 'bytes');
  assert.deepEqual(imgs.input.kind === 'bytes' && Buffer.from(imgs.input.bytes), Buffer.from(png, 'base64'));
  assert.deepEqual(imgs.reference?.kind === 'bytes' && Buffer.from(imgs.reference.bytes), Buffer.from(jpeg, 'base64'));
  assert.equal(recordImages({ instruction: 'x', input_image: png, output: 'y' }).reference, undefined);
  assert.throws(() => recordImages({ instruction: 'x', output: 'y', id: 'r2' }), /recordImages\(r2\): "input_image" is missing/);
  assert.equal(await imageProblem(Buffer.from(png, 'base64')), null);
  assert.ok(isStrictBase64(png) && !isStrictBase64('') && !isStrictBase64('YQ'));
});

test("rationale 'places': relation answers say where the two objects are, then the same answer; nothing else changes", async () => {
  const o = (shape: SceneObject['shape'], colour: SceneObject['colour'], x: number, y: number): SceneObject => ({ shape, colour, size: 'small', x, y });
  const objects = [o('circle', 'red', 15, 20), o('square', 'blue', 80, 50), o('star', 'green', 50, 85)];
  assert.equal(positionRationale('is the circle left of the square?', 'yes', objects), 'the circle at the top left, the square on the right, so yes');
  assert.equal(positionRationale('is the star above the circle?', 'no', objects), 'the star at the bottom, the circle at the top left, so no');
  assert.equal(positionRationale('what is left of the square?', 'circle', objects), null, 'only the yes/no relation form');
  assert.equal(positionRationale('is the cross left of the square?', 'no', objects), null, 'no such object');
  assert.equal(finalAnswer('the circle at the top left, the square on the right, so yes'), 'yes');
  assert.equal(finalAnswer('yes'), 'yes');
  assert.equal(finalAnswer('a, so b, so no'), 'no');

  const opts = { source: 'shapes' as const, n: 60, seed: 4, size: 16, tasks: ['vqa' as const] };
  const plain = await makeInstructionRecords(opts);
  const reasoned = await makeInstructionRecords({ ...opts, rationale: 'places' });
  assert.equal(reasoned.length, plain.length);
  let changed = 0;
  reasoned.forEach((r, i) => {
    const p = plain[i];
    assert.deepEqual({ ...r, output: '' }, { ...p, output: '' }, 'same question, image and everything but the output');
    assert.equal(finalAnswer(r.output), p.output);
    if (r.output !== p.output) {
      changed++;
      assert.equal(r.qtype, 'position');
      assert.match(r.instruction.toLowerCase(), /is the .+ (left of|right of|above|below) the .+\?/);
      assert.match(r.output, /^the .+ (at the|on the|in the) .+, the .+ (at the|on the|in the) .+, so (yes|no)$/);
    }
  });
  assert.ok(changed >= 3, `${changed} relation answers reasoned`);
});

test("rationale 'scene': every VQA answer is the scene's grounded caption, then ', so ' and the same answer", async () => {
  const opts = { source: 'shapes' as const, n: 40, seed: 6, size: 16, tasks: ['vqa' as const] };
  const plain = await makeInstructionRecords(opts);
  const described = await makeInstructionRecords({ ...opts, rationale: 'scene' });
  const scenes = generateScenes({ seed: 6, n: 40, stream: 'train', size: 16 });
  assert.equal(described.length, plain.length);
  const types = new Set<string>();
  described.forEach((r, i) => {
    const p = plain[i];
    assert.deepEqual({ ...r, output: '' }, { ...p, output: '' }, 'same question, image and everything but the output');
    assert.equal(r.scene, scenes[i].id);
    assert.equal(r.output, `${groundedCaption(scenes[i].objects)}, so ${p.output}`);
    assert.match(r.output, / (at the|on the|in the) /);
    assert.equal(finalAnswer(r.output), p.output);
    types.add(r.qtype as string);
  });
  assert.deepEqual([...types].sort(), ['colour', 'count', 'position', 'shape', 'yesno']);
});

test("sceneQaTexts: text-only questions in exactly the words of a 'scene' answer, a stream of their own", () => {
  const qs = sceneQaTexts(3, 60, 'train');
  assert.equal(qs.length, 60);
  assert.deepEqual(sceneQaTexts(3, 60, 'train'), qs, 'deterministic');
  assert.deepEqual(sceneQaTexts(3, 20, 'train'), qs.slice(0, 20), 'a prefix of a longer call');
  // Made in chunks of 10,000 scenes: across the boundary, question j is still about scene j of the stream.
  const across = sceneQaTexts(3, 10_002, 'train').slice(9_998);
  generateScenes({ seed: 3, n: 4, stream: 'lm/train', first: 9_998 }).forEach((sc, i) => {
    assert.ok(across[i].prompt.endsWith(`${groundedCaption(sc.objects)}, so`), `question ${9_998 + i}`);
  });
  const scenes = generateScenes({ seed: 3, n: 60, stream: 'lm/train' });
  const types = new Set<string>();
  qs.forEach((q, j) => {
    const qa = scenes[j].qa.find((x) => q.prompt.startsWith(`${x.question} `) && x.answers[0] === q.answer && x.type === q.type);
    assert.ok(qa, `${q.prompt} asks one of scene ${j}'s questions`);
    assert.equal(`${q.prompt} ${q.answer}`, `${qa.question} ${groundedCaption(scenes[j].objects)}, so ${q.answer}`);
    assert.equal(finalAnswer(`${q.prompt} ${q.answer}`), q.answer);
    types.add(q.type);
  });
  assert.deepEqual([...types].sort(), ['colour', 'count', 'position', 'shape', 'yesno']);
  // Another stream of scenes for validation; none of the image stages' streams.
  const val = sceneQaTexts(3, 60, 'val');
  assert.ok(val.filter((q, j) => q.prompt === qs[j].prompt).length < 3);
  const imageScenes = generateScenes({ seed: 3, n: 60, stream: 'train' });
  assert.ok(!qs.some((q, j) => q.prompt.includes(groundedCaption(imageScenes[j].objects) + ', so')), 'not the train split the image stages use');
  assert.throws(() => sceneQaTexts(3, -1, 'train'), /n must be a non-negative integer/);
});

test("rationale 'marks': each object of the description is marked by whether the question is about it", async () => {
  // Every question of 400 scenes: the marks agree with the answer, type by type.
  const seen = new Set<string>();
  for (const sc of generateScenes({ seed: 9, n: 400, stream: 'train' })) {
    for (const qa of sc.qa) {
      const out = marksRationale(sc, qa);
      const a = qa.answers[0];
      assert.equal(finalAnswer(out), a);
      const marks = [...out.matchAll(/ \((yes|no)\)/g)].map((m) => m[1]);
      assert.equal(marks.length, sc.objects.length, out);
      assert.equal(out.replace(/ \((yes|no)\)/g, ''), sceneRationale(sc, a), 'the grounded caption with marks added, nothing else');
      const yes = marks.filter((m) => m === 'yes').length;
      const form = qa.type === 'position' ? (qa.question.startsWith('is ') ? 'relation' : 'what-is') : qa.type;
      seen.add(form);
      if (form === 'count') assert.equal(String(yes), a, out);
      else if (form === 'yesno') assert.equal(yes, a === 'yes' ? 1 : 0, out);
      else if (form === 'relation') assert.equal(yes, 2, out);
      else {
        assert.equal(yes, 1, out);
        // The marked object carries the answer: its colour, or its shape.
        const marked = out.split(/, | and /).find((part) => part.endsWith('(yes)'))!;
        assert.ok(marked.split(' ').includes(a), `${qa.question} -> ${out}`);
      }
    }
  }
  assert.deepEqual([...seen].sort(), ['colour', 'count', 'relation', 'shape', 'what-is', 'yesno']);
  const sc = generateScenes({ seed: 9, n: 1, stream: 'train' })[0];
  assert.throws(() => marksRationale(sc, { question: 'why is the sky blue?', answers: ['no'], type: 'yesno' }), /not a shapes question/);
  assert.throws(() => questionTargets({ question: 'how many shapes are there?', answers: ['9'], type: 'count' }, sc.objects), /do not give the answer "9"/);

  // In records: only the output changes.
  const opts = { source: 'shapes' as const, n: 30, seed: 6, size: 16, tasks: ['vqa' as const] };
  const plain = await makeInstructionRecords(opts);
  const marked = await makeInstructionRecords({ ...opts, rationale: 'marks' });
  marked.forEach((r, i) => {
    assert.deepEqual({ ...r, output: '' }, { ...plain[i], output: '' });
    assert.match(r.output, /\((yes|no)\)/);
    assert.equal(finalAnswer(r.output), plain[i].output);
  });
  // And the lm stage's text-only questions in the same words.
  for (const q of sceneQaTexts(3, 30, 'train', 'marks')) assert.match(`${q.prompt} ${q.answer}`, /^[^?]+\? .*\((yes|no)\).*, so \w+$/);
});
