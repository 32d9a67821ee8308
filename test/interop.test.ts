/**
 * Interop with Python's safetensors: ml.save still writes exactly the bytes of the committed
 * test/fixtures/modalab_written.safetensors, which check_modalab_written.py verified with the Python library,
 * and ml.load reads it back.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ml from '../src/index';
import { METADATA, tensors, expected } from './fixtures/modalab_written';

const fixtures = path.join(__dirname, '..', '..', 'test', 'fixtures');

test('ml.save writes the same bytes as the committed file that Python safetensors read', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modalab-interop-'));
  try {
    const f = path.join(dir, 'x.safetensors');
    ml.save(f, tensors(), METADATA);
    assert.deepEqual(fs.readFileSync(f), fs.readFileSync(path.join(fixtures, 'modalab_written.safetensors')));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('ml.load reads the committed file back with its metadata', () => {
  const { tensors: got, metadata } = ml.load(path.join(fixtures, 'modalab_written.safetensors'));
  assert.deepEqual(metadata, METADATA);
  const want = JSON.parse(fs.readFileSync(path.join(fixtures, 'modalab_written.json'), 'utf8'));
  assert.deepEqual(want.tensors, expected());
  for (const [k, spec] of Object.entries(want.tensors as Record<string, { dtype: string; shape: number[]; values: number[] }>)) {
    assert.equal(got[k].dtype, spec.dtype, k);
    assert.deepEqual([...got[k].shape], spec.shape, k);
    assert.deepEqual(Array.from(got[k].toArray() as ArrayLike<number>), spec.values, k);
  }
});
