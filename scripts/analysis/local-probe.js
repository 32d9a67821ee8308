// Usage: node scripts/analysis/local-probe.js [align checkpoint] [out prefix /tmp/local-probe] [scenes 3000]   (after npm run build)
// then:  /usr/bin/python3 scripts/analysis/local-probe.py [out prefix]
// Where in an align encoder's image tokens is an object's shape readable? For each object of N generated 32 px
// shapes scenes (stream 'probe', seed 0), writes the features a reader could use: the token of the patch under the
// object's centre after the embedding and after every block (then the final LayerNorm), the 3 x 3 patch tokens
// around it, the 2 x 2 cell it falls in as the instruct stage sees it (mean-pooled, or the four tokens side by
// side: model.imagePoolMode), the 3 x 3 mean-pooled cells around it, and the raw pixels of the 12 x 12 window
// around it. local-probe.py fits linear and MLP classifiers of shape / colour / size on each. docs/instruct.md
// ("Where shape is lost") has the figures.
const fs = require('fs'), path = require('path');
const B = process.env.BUILD || path.join(__dirname, '../../dist');
const ml = require(B + '/index');
const { generateScenes, renderPng } = require(B + '/experiments/data/shapes');
const { loadScorer } = require(B + '/experiments/stages/align/filter');
const { decodeImage } = require(B + '/experiments/data/image');
const ckpt = process.argv[2] || 'runs/align-1/last.safetensors';
const out = process.argv[3] || '/tmp/local-probe';
const N = Number(process.argv[4] || 3000);
(async () => {
  ml.setNumThreads(2);
  const sc = loadScorer(ckpt);
  const vis = sc.model.net.visual;
  if (!vis) throw new Error(`local-probe: ${ckpt} is not a dual-encoder align checkpoint`);
  const S = sc.config.data.imageSize, P = sc.config.model.patchSize, G = S / P, W = vis.opts.width, T = 1 + G * G;
  const cell = G / 2; // 2 x 2 pooling, as the instruct stage's default imagePool
  const scenes = generateScenes({ seed: 0, n: N, stream: 'probe', size: S });
  const rows = [], labels = [];
  const blocks = [];
  for (let i = 0; i < N; i += 100) {
    const batch = scenes.slice(i, i + 100);
    const imgs = new Float32Array(batch.length * 3 * S * S);
    for (let k = 0; k < batch.length; k++) imgs.set(await decodeImage({ kind: 'bytes', bytes: await renderPng(batch[k], S), name: batch[k].id }, { size: S }), k * 3 * S * S);
    const layers = ml.noGrad(() => {
      let h = vis.embed(ml.tensor(imgs, [batch.length, 3, S, S]));
      const outs = [h.toArray()];
      for (let l = 0; l < vis.blocks.length; l++) {
        const next = vis.blocks.at(l).forward(h, { causal: false, keyPaddingMask: null });
        h.dispose();
        h = next;
        outs.push(h.toArray());
      }
      outs.push(vis.lnPost.forward(h).toArray());
      h.dispose();
      return outs;
    });
    const Lf = layers[layers.length - 1];
    const tok = (k, r, c, j) => (r >= 0 && r < G && c >= 0 && c < G ? Lf[(k * T + 1 + r * G + c) * W + j] : 0);
    batch.forEach((s, k) => {
      for (const o of s.objects) {
        const c = Math.min(G - 1, Math.floor((o.x / 100) * G)), r = Math.min(G - 1, Math.floor((o.y / 100) * G));
        const pc = Math.min(cell - 1, Math.floor((o.x / 100) * cell)), pr = Math.min(cell - 1, Math.floor((o.y / 100) * cell));
        const v = [];
        const mark = (name) => { if (rows.length === 0) blocks.push([name, v.length]); };
        layers.forEach((L, li) => {
          mark(li === 0 ? 'embed' : li === layers.length - 1 ? 'lnPost' : `block${li}`);
          for (let j = 0; j < W; j++) v.push(L[(k * T + 1 + r * G + c) * W + j]);
        });
        mark('tokens3x3');
        for (let dr = -1; dr <= 1; dr++) for (let dc = -1; dc <= 1; dc++) for (let j = 0; j < W; j++) v.push(tok(k, r + dr, c + dc, j));
        mark('cellMean');
        for (let j = 0; j < W; j++) v.push((tok(k, 2 * pr, 2 * pc, j) + tok(k, 2 * pr, 2 * pc + 1, j) + tok(k, 2 * pr + 1, 2 * pc, j) + tok(k, 2 * pr + 1, 2 * pc + 1, j)) / 4);
        mark('cellConcat');
        for (let a = 0; a < 2; a++) for (let b = 0; b < 2; b++) for (let j = 0; j < W; j++) v.push(tok(k, 2 * pr + a, 2 * pc + b, j));
        mark('cellMean3x3');
        for (let dr = -1; dr <= 1; dr++) for (let dc = -1; dc <= 1; dc++) for (let j = 0; j < W; j++) {
          const rr = pr + dr, cc = pc + dc;
          let acc = 0;
          if (rr >= 0 && rr < cell && cc >= 0 && cc < cell) for (let a = 0; a < 2; a++) for (let b = 0; b < 2; b++) acc += tok(k, 2 * rr + a, 2 * cc + b, j) / 4;
          v.push(acc);
        }
        mark('pixels3x3');
        for (let ch = 0; ch < 3; ch++) for (let y = (r - 1) * P; y < (r + 2) * P; y++) for (let x = (c - 1) * P; x < (c + 2) * P; x++) {
          v.push(y >= 0 && y < S && x >= 0 && x < S ? imgs[k * 3 * S * S + ch * S * S + y * S + x] : 0);
        }
        mark('end');
        rows.push(Float32Array.from(v));
        labels.push({ shape: o.shape, colour: o.colour, size: o.size });
      }
    });
  }
  const D = rows[0].length, buf = new Float32Array(rows.length * D);
  rows.forEach((v, i) => buf.set(v, i * D));
  fs.writeFileSync(out + '.f32', Buffer.from(buf.buffer));
  fs.writeFileSync(out + '.json', JSON.stringify({ checkpoint: ckpt, D, blocks, labels }));
  console.log(`local-probe: ${rows.length} objects of ${N} scenes, ${D} numbers each -> ${out}.f32, ${out}.json`);
  sc.dispose();
})();
