/**
 * The stage-1 models: shapes, normalisation, gradients reaching every parameter, determinism, config errors,
 * padding, hard negatives, masked objectives, checkpointing, autocast, leaks, and that training lowers the loss.
 * PyTorch fidelity (the first 20 AdamW losses) is test/clip.fixtures.test.ts.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as ml from '../../index';
import {
  AlignModel, AlignModelConfig, DEFAULT_ALIGN_CONFIG, FusionEncoder, MaskedImageHead, MaskedTextHead, VisionTransformer,
  TextTransformer, createAlignModel, maskedMSE, mineHardNegatives, resolveAlignConfig,
} from './index';

const TINY: Partial<AlignModelConfig> = {
  imageSize: 8, patchSize: 4, channels: 3, visionWidth: 16, visionLayers: 1, visionHeads: 2,
  vocabSize: 32, contextLength: 6, textWidth: 16, textLayers: 1, textHeads: 2, embedDim: 8, mlpRatio: 2, fusionLayers: 1,
};
const ARCHS = ['dual', 'shared', 'fusion'] as const;
const B = 4, T = 6;

function batch(seed = 0, lens = [6, 3, 1, 4]): { images: ml.Tensor; tokens: ml.Tensor<'i32'>; lengths: ml.Tensor<'i32'> } {
  let s = seed + 1;
  const r = (): number => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const toks = new Int32Array(B * T);
  lens.forEach((n, b) => { for (let t = 0; t < n; t++) toks[b * T + t] = 1 + Math.floor(r() * 31); });
  return {
    images: ml.tensor(Float32Array.from({ length: B * 3 * 64 }, () => r() * 2 - 1), [B, 3, 8, 8]),
    tokens: ml.tensor(toks, [B, T], { dtype: 'i32' }),
    lengths: ml.tensor(Int32Array.from(lens), [B], { dtype: 'i32' }),
  };
}

function model(cfg: Partial<AlignModelConfig> = {}, seed = 0): AlignModel {
  ml.manualSeed(seed);
  return createAlignModel({ ...TINY, ...cfg });
}

function rowNorms(x: ml.Tensor): number[] {
  const a = x.toArray() as Float32Array, [n, d] = x.shape;
  return Array.from({ length: n }, (_, i) => Math.hypot(...a.subarray(i * d, (i + 1) * d)));
}

for (const arch of ARCHS) {
  test(`${arch}: encodeImage / encodeText give unit rows [B, embedDim]`, () => {
    const m = model({ arch });
    const b = batch();
    ml.tidy(() => {
      const img = m.encodeImage(b.images), txt = m.encodeText(b.tokens, b.lengths);
      assert.deepEqual(img.shape, [B, 8]);
      assert.deepEqual(txt.shape, [B, 8]);
      for (const n of [...rowNorms(img), ...rowNorms(txt)]) assert.ok(Math.abs(n - 1) < 1e-5, `norm ${n}`);
      assert.deepEqual(m.imageTokens(b.images).shape, [B, 5, 16]);
      assert.deepEqual(m.textHidden(b.tokens, b.lengths).shape, [B, T, 16]);
    });
    m.dispose();
  });

  for (const maskedObjective of ['none', 'image', 'text'] as const) {
    test(`${arch} + masked ${maskedObjective}: one backward reaches every parameter`, () => {
      const m = model({ arch, maskedObjective });
      const b = batch();
      ml.tidy(() => {
        const r = m.loss(b);
        assert.deepEqual(r.loss.shape, []);
        r.loss.backward();
        const expectParts = ['infonce', ...(arch === 'fusion' ? ['itm'] : []), ...(maskedObjective !== 'none' ? ['masked'] : [])];
        assert.deepEqual(Object.keys(r.parts).sort(), expectParts.sort());
        for (const v of Object.values(r.parts)) assert.ok(Number.isFinite(v) && v > 0);
        // The total is the weighted sum of the parts (weights 1 by default).
        const sum = Object.values(r.parts).reduce((s, v) => s + v, 0);
        assert.ok(Math.abs(r.loss.item() - sum) < 1e-5 * sum);
        assert.ok(Math.abs(r.logitScale - 1 / 0.07) < 1e-4);
      });
      for (const [name, p] of m.namedParameters()) {
        assert.ok(p.grad, `${name} got no gradient`);
        const g = p.grad!.toArray() as Float32Array;
        assert.ok(g.every(Number.isFinite), `${name}: non-finite gradient`);
        assert.ok(g.some((v) => v !== 0), `${name}: gradient is all zeros`);
      }
      m.dispose();
    });
  }

  test(`${arch}: a caption's embedding ignores its padding tokens and depends on its real ones`, () => {
    const m = model({ arch });
    const b = batch();
    ml.tidy(() => {
      const base = m.encodeText(b.tokens, b.lengths).toArray() as Float32Array;
      const toks = (b.tokens.toArray() as Int32Array).slice();
      toks[1 * T + 4] = 17;  // row 1 has length 3: position 4 is padding
      const padded = m.encodeText(ml.tensor(toks, [B, T], { dtype: 'i32' }), b.lengths).toArray() as Float32Array;
      for (let i = 0; i < B * 8; i++) assert.ok(Math.abs(base[i] - padded[i]) < 1e-6, `padding changed element ${i}`);
      toks[1 * T + 0] = (toks[1 * T + 0] % 31) + 1;  // a real token of row 1
      const changed = m.encodeText(ml.tensor(toks, [B, T], { dtype: 'i32' }), b.lengths).toArray() as Float32Array;
      assert.ok(Array.from({ length: 8 }, (_, j) => Math.abs(changed[8 + j] - base[8 + j])).some((d) => d > 1e-5));
      for (const row of [0, 2, 3]) for (let j = 0; j < 8; j++) assert.ok(Math.abs(changed[row * 8 + j] - base[row * 8 + j]) < 1e-6);
    });
    m.dispose();
  });
}

test('the same seed builds the same model and loss; another seed does not', () => {
  const a = model({ arch: 'fusion' }, 7), c = model({ arch: 'fusion' }, 7), d = model({ arch: 'fusion' }, 8);
  const sa = a.stateDict(), sc = c.stateDict(), sd = d.stateDict();
  let differs = false;
  for (const k of Object.keys(sa)) {
    assert.deepEqual(sa[k].toArray(), sc[k].toArray(), k);
    if (sa[k].size > 1 && ml.tidy(() => ml.sub(sa[k], sd[k]).abs().max().item()) > 0) differs = true;
  }
  assert.ok(differs);
  const b = batch();
  ml.tidy(() => assert.equal(a.loss(b).loss.item(), c.loss(b).loss.item()));
  for (const m of [a, c, d]) m.dispose();
});

test('config: defaults are the bench model; bad values throw errors naming the key', () => {
  const c = resolveAlignConfig();
  assert.equal(c.arch, 'dual');
  assert.equal(c.imageSize, 32);
  assert.equal(c.visionWidth, 128);
  assert.equal(c.vocabSize, 1024);
  assert.deepEqual({ ...c }, { ...DEFAULT_ALIGN_CONFIG });
  const bad: Array<[Partial<AlignModelConfig> | Record<string, unknown>, RegExp]> = [
    [{ arch: 'triple' as never }, /AlignModelConfig\.arch: expected one of 'dual', 'shared', 'fusion'/],
    [{ patchSize: 5 }, /AlignModelConfig\.patchSize: 5 does not divide imageSize 32/],
    [{ visionHeads: 3 }, /AlignModelConfig\.visionHeads: 3 does not divide visionWidth 128/],
    [{ textLayers: 0 }, /AlignModelConfig\.textLayers: expected an integer >= 1, got 0/],
    [{ embedDim: 1.5 }, /AlignModelConfig\.embedDim/],
    [{ dropout: 1 }, /AlignModelConfig\.dropout/],
    [{ maskRatio: 1 }, /AlignModelConfig\.maskRatio/],
    [{ maskedObjective: 'audio' as never }, /AlignModelConfig\.maskedObjective/],
    [{ arch: 'shared', textWidth: 64 }, /AlignModelConfig\.textWidth: arch 'shared'.*must equal it/],
    [{ arch: 'fusion', fusionLayers: 0 }, /AlignModelConfig\.fusionLayers: expected an integer >= 1/],
    [{ learnableTemperature: 'yes' as never }, /AlignModelConfig\.learnableTemperature/],
    [{ imagesize: 32 } as never, /AlignModelConfig\.imagesize: unknown key/],
  ];
  for (const [cfg, re] of bad) assert.throws(() => createAlignModel(cfg as Partial<AlignModelConfig>), re, JSON.stringify(cfg));
});

test('loss: a malformed batch throws naming what is wrong', () => {
  const m = model();
  const b = batch();
  assert.throws(() => m.loss({ ...b, images: ml.zeros([B, 3, 16, 16]) }), /batch\.images must be \[B, 3, 8, 8\]/);
  assert.throws(() => m.loss({ ...b, lengths: ml.tensor([6, 3, 0, 4], [4], { dtype: 'i32' }) }), /lengths\[2\] = 0 is outside \[1, 6\]/);
  assert.throws(() => m.loss({ ...b, lengths: ml.tensor([6, 3, 9, 4], [4], { dtype: 'i32' }) }), /lengths\[2\] = 9/);
  assert.throws(() => m.loss({ ...b, tokens: ml.zeros([B, T]) }), /tokens must be an i32 tensor/);
  assert.throws(() => m.loss({ ...b, tokens: ml.zeros([B, 9], { dtype: 'i32' }) }), /exceed contextLength 6/);
  assert.throws(() => m.loss({ ...b, images: ml.zeros([2, 3, 8, 8]) }), /2 images but 4 captions/);
  m.dispose();
});

test('fusion: hard negatives are the most similar non-matching images', () => {
  // Row i: the diagonal is the largest (a matched pair), the hardest negative is elsewhere.
  const sim = Float32Array.from([9, 1, 5, 2, /**/ 3, 9, 3, 0, /**/ -1, -2, 9, -0.5, /**/ 4, 8, 7, 9]);
  assert.deepEqual(mineHardNegatives(sim, 4), [2, 0, 3, 1]);
  assert.throws(() => mineHardNegatives(new Float32Array(1), 1), /need B >= 2/);
  const m = model({ arch: 'fusion' }) as FusionEncoder;
  const b = batch(3);
  ml.tidy(() => {
    m.loss(b);
    const neg = m.lastHardNegatives;
    assert.equal(neg.length, B);
    neg.forEach((j, i) => assert.notEqual(j, i, `caption ${i} got its own image as a negative`));
    // And each is the argmax of its row of text-image similarities, off the diagonal.
    const enc = m.encode(b);
    const s = ml.matmul(enc.textEmbeds, enc.imageEmbeds, { transB: true }).toArray() as Float32Array;
    neg.forEach((j, i) => {
      for (let k = 0; k < B; k++) if (k !== i) assert.ok(s[i * B + j] >= s[i * B + k]);
    });
  });
  assert.throws(() => ml.tidy(() => m.loss({
    images: b.images.slice(0, 0, 1), tokens: b.tokens.slice(0, 0, 1), lengths: b.lengths.slice(0, 0, 1),
  })), /need B >= 2/);
  m.dispose();
});

test('maskedMSE counts only the masked rows, in value and in gradient', () => {
  const pred = ml.randn([6, 5], { requiresGrad: true });
  const target = ml.randn([6, 5]);
  const rows = [1, 4];
  const loss = maskedMSE(pred, target, rows);
  // Changing unmasked rows of the prediction or the target changes nothing.
  const p2 = ml.noGrad(() => ml.where(ml.tensor([1, 0, 1, 1, 0, 1], [6, 1]), ml.randn([6, 5]), pred));
  const t2 = ml.noGrad(() => ml.where(ml.tensor([1, 0, 1, 1, 0, 1], [6, 1]), ml.randn([6, 5]), target));
  assert.ok(Math.abs(maskedMSE(p2, t2, rows).item() - loss.item()) < 1e-6);
  loss.backward();
  const g = pred.grad!.toArray() as Float32Array;
  for (let r = 0; r < 6; r++) {
    const row = g.subarray(r * 5, r * 5 + 5);
    if (rows.includes(r)) assert.ok(row.some((v) => v !== 0));
    else assert.ok(row.every((v) => v === 0), `unmasked row ${r} got gradient`);
  }
  assert.throws(() => maskedMSE(pred, target, []), /no masked rows/);
});

test('masked objectives: the masked share of patches, and caption tokens that are real and not end-of-text', () => {
  const mi = model({ maskedObjective: 'image', maskRatio: 0.5 });
  const mt = model({ maskedObjective: 'text', maskRatio: 0.5 });
  const b = batch(0, [6, 3, 1, 4]);
  ml.tidy(() => { mi.loss(b); mt.loss(b); });
  const ih = mi.masked as MaskedImageHead, th = mt.masked as MaskedTextHead;
  assert.equal(ih.lastMasked.length, B);
  for (const ps of ih.lastMasked) {
    assert.equal(ps.length, 2);  // 4 patches, ratio 0.5
    for (const p of ps) assert.ok(p >= 0 && p < 4);
  }
  const lens = [6, 3, 1, 4];
  th.lastMasked.forEach((ps, row) => {
    const candidates = lens[row] - 1;
    assert.equal(ps.length, candidates === 0 ? 0 : Math.max(1, Math.round(0.5 * candidates)));
    for (const p of ps) assert.ok(p >= 0 && p < lens[row] - 1, `row ${row}: masked position ${p} is eos or padding`);
  });
  mi.dispose(); mt.dispose();
});

test('gradient checkpointing gives the same loss and gradients', () => {
  const grads = (checkpointing: boolean): Map<string, Float32Array> => {
    const m = model({ arch: 'dual', checkpointing });
    ml.tidy(() => m.loss(batch()).loss.backward());
    const out = new Map(m.namedParameters().map(([n, p]) => [n, p.grad!.toArray() as Float32Array]));
    m.dispose();
    return out;
  };
  const a = grads(false), c = grads(true);
  for (const [n, g] of a) {
    const h = c.get(n)!;
    for (let i = 0; i < g.length; i++) assert.ok(Math.abs(g[i] - h[i]) <= 1e-6 + 1e-5 * Math.abs(g[i]), `${n}[${i}]`);
  }
});

test('learnableTemperature false: the logit scale is a buffer, saved but not trained', () => {
  const m = model({ learnableTemperature: false });
  assert.ok(!m.namedParameters().some(([n]) => n === 'logitScale'));
  assert.ok('logitScale' in m.stateDict());
  ml.tidy(() => m.loss(batch()).loss.backward());
  assert.equal(m.logitScale.grad, null);
  m.dispose();
});

test('fusion + masked text under bf16 autocast: finite loss and gradients', () => {
  const m = model({ arch: 'fusion', maskedObjective: 'text' });
  ml.tidy(() => {
    const r = ml.autocast('bf16', () => m.loss(batch()));
    assert.ok(Number.isFinite(r.loss.item()));
    r.loss.backward();
  });
  for (const [n, p] of m.namedParameters()) assert.ok(p.grad && (p.grad.toArray() as Float32Array).every(Number.isFinite), n);
  m.dispose();
});

test('a training step leaks no tensors', () => {
  const m = model({ arch: 'fusion', maskedObjective: 'image' });
  const opt = new ml.optim.AdamW(m.parameters(), { lr: 1e-3 });
  const b = batch();
  const step = (): void => ml.tidy(() => { opt.zeroGrad(); m.loss(b).loss.backward(); opt.step(); });
  step();
  const before = ml.memory().numTensors;
  step(); step();
  assert.equal(ml.memory().numTensors, before);
  opt.dispose(); m.dispose();
});

test('towers on their own: ViT tokens and text pooling', () => {
  ml.manualSeed(0);
  const vit = new VisionTransformer({ imageSize: 8, patchSize: 2, channels: 1, width: 8, layers: 1, heads: 2, embedDim: 4 });
  const txt = new TextTransformer({ vocabSize: 10, contextLength: 5, width: 8, layers: 1, heads: 2, embedDim: 4 });
  ml.tidy(() => {
    assert.deepEqual(vit.forwardTokens(ml.randn([3, 1, 8, 8])).shape, [3, 17, 8]);
    assert.deepEqual(vit.forward(ml.randn([3, 1, 8, 8])).shape, [3, 4]);
    const tokens = ml.tensor(Int32Array.from([1, 2, 3, 0, 0, 4, 5, 6, 7, 8]), [2, 5], { dtype: 'i32' });
    const lens = ml.tensor([3, 5], [2], { dtype: 'i32' });
    const h = txt.forwardTokens(tokens, lens);
    // Pooling takes position length - 1 of each row.
    const pooled = txt.pool(h, lens).toArray() as Float32Array;
    const manual = txt.proj.forward(ml.concat([h.slice(0, 0, 1).slice(1, 2, 3), h.slice(0, 1, 2).slice(1, 4, 5)], 0).reshape([2, 8])).toArray() as Float32Array;
    for (let i = 0; i < 8; i++) assert.ok(Math.abs(pooled[i] - manual[i]) < 1e-6);
  });
  vit.dispose(); txt.dispose();
});

test('a few AdamW steps on one random batch lower every architecture\'s loss', () => {
  for (const arch of ARCHS) {
    const m = model({ arch, maskedObjective: arch === 'dual' ? 'image' : 'none' });
    const opt = new ml.optim.AdamW(m.parameters(), { lr: 3e-3 });
    const b = batch(5, [6, 5, 4, 6]);
    const losses: number[] = [];
    for (let i = 0; i < 12; i++) ml.tidy(() => { opt.zeroGrad(); const r = m.loss(b); r.loss.backward(); opt.step(); losses.push(r.loss.item()); });
    assert.ok(losses[11] < 0.8 * losses[0], `${arch}: ${losses[0]} -> ${losses[11]}`);
    opt.dispose(); m.dispose();
  }
});

test('columns past the longest caption are dropped without changing the loss or the embeddings', () => {
  for (const arch of ARCHS) {
    const m = model({ arch, maskedObjective: 'text' });
    const b = batch(2, [3, 2, 1, 2]);  // T = 6, longest caption 3
    const cut = { ...b, tokens: ml.tensor((b.tokens.toArray() as Int32Array).filter((_, i) => i % T < 3), [B, 3], { dtype: 'i32' }) };
    ml.tidy(() => {
      ml.manualSeed(9);
      const full = m.loss(b).loss.item();
      ml.manualSeed(9);  // the masked positions are drawn from the same stream
      const short = m.loss(cut).loss.item();
      assert.ok(Math.abs(full - short) < 1e-5 * Math.abs(full), `${arch}: ${full} vs ${short}`);
      const e1 = m.encodeText(b.tokens, b.lengths).toArray() as Float32Array;
      const e2 = m.encodeText(cut.tokens, cut.lengths).toArray() as Float32Array;
      e1.forEach((v, i) => assert.ok(Math.abs(v - e2[i]) < 1e-6));
    });
    m.dispose();
  }
});
