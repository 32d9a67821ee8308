/**
 * Fidelity of the align models against PyTorch (llm.c's check of the first steps): from the same initial weights
 * and the same batches, modalab's first 20 AdamW losses match bench/torch/clip_model.py's within 1e-4 relative,
 * in float32, for `dual`, `shared` and `fusion` (whose hard negatives are argmax-mined, so deterministic).
 * The references are test/fixtures/clip_fidelity.json, written by test/fixtures/make_clip_fixtures.py (see
 * test/fixtures/clip_fixtures.ts for how to regenerate them).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ml from '../src/index';
import { FusionEncoder } from '../src/experiments/models';
import { ARCHS, HYPER, STEPS, checksums, initialModel, rawBatches, toTensors } from './fixtures/clip_fixtures';

function fixture(): any {
  const candidates = [
    path.join(__dirname, 'fixtures', 'clip_fidelity.json'),
    path.resolve(__dirname, '..', '..', 'test', 'fixtures', 'clip_fidelity.json'),
    path.join(process.cwd(), 'test', 'fixtures', 'clip_fidelity.json'),
  ];
  for (const f of candidates) if (fs.existsSync(f)) return JSON.parse(fs.readFileSync(f, 'utf8'));
  throw new Error(`clip_fidelity.json not found in ${candidates.join(', ')}`);
}

const FX = fixture();
const RTOL = 1e-4;

for (const arch of ARCHS) {
  test(`align ${arch}: the first ${STEPS} AdamW losses match PyTorch within ${RTOL} relative (f32)`, (t) => {
    const ref = FX.archs[arch];
    assert.ok(ref, `no ${arch} entry in clip_fidelity.json`);
    const model = initialModel(arch);
    // The initial weights must be the ones PyTorch started from; otherwise the fixtures are stale.
    const sums = checksums(model.stateDict());
    assert.deepEqual(Object.keys(sums).sort(), Object.keys(ref.checksums).sort(), 'parameter names changed: regenerate the fixtures');
    for (const [k, [s, q, first]] of Object.entries(sums)) {
      const [rs, rq, rf] = ref.checksums[k] as number[];
      assert.ok(Math.abs(s - rs) <= 1e-9 * (1 + Math.abs(rs)) && Math.abs(q - rq) <= 1e-9 * (1 + rq) && first === rf,
        `${arch}: initial ${k} differs from the fixtures' (modalab's init changed?): regenerate them (test/fixtures/clip_fixtures.ts)`);
    }
    const opt = new ml.optim.AdamW(model.parameters(), HYPER);
    const batches = rawBatches();
    const losses: number[] = [];
    for (let i = 0; i < STEPS; i++) {
      ml.tidy(() => {
        opt.zeroGrad();
        const r = model.loss(toTensors(batches[i]));
        r.loss.backward();
        opt.step();
        losses.push(r.loss.item());
        if (arch === 'fusion' && i === 0) assert.ok(Math.abs(r.parts.itm - ref.parts[0].itm) <= RTOL * Math.abs(ref.parts[0].itm));
      });
    }
    if (arch === 'fusion') assert.ok((model as FusionEncoder).lastHardNegatives.length > 0);
    let worst = 0, at = -1;
    losses.forEach((l, i) => {
      const r = Math.abs(l - ref.losses[i]) / Math.abs(ref.losses[i]);
      if (!(r <= worst)) { worst = r; at = i; }
    });
    assert.ok(worst <= RTOL, `${arch}: step ${at}: loss ${losses[at]} vs torch ${ref.losses[at]} (relative ${worst.toExponential(2)} > ${RTOL})`);
    t.diagnostic(`${arch}: worst relative difference ${worst.toExponential(2)} at step ${at}; loss ${losses[0].toFixed(5)} -> ${losses[STEPS - 1].toFixed(5)}`);
    assert.ok(losses[STEPS - 1] < losses[0], `${arch}: the loss did not fall (${losses[0]} -> ${losses[STEPS - 1]})`);
    opt.dispose();
    model.dispose();
  });
}
