// Usage: node scripts/analysis/binding-test.js [align checkpoint] [image size 32] [scenes 400]   (after npm run build)
// Does an align encoder bind attributes and relations? For held-out instruct scenes (stream instruct-heldout, seed 0),
// how often cosine(image, true caption) beats cosine(image, the caption with two colours swapped / two shapes
// swapped / the relation reversed). 50 % is chance. Used in docs/instruct.md ("The encoder itself").
const fs = require('fs'), path = require('path');
const B = process.env.BUILD || path.join(__dirname, '../../dist');
const { generateScenes, renderPng } = require(B + '/experiments/data/shapes');
const { loadScorer, scorePairs } = require(B + '/experiments/stages/align/filter');
const ckpt = process.argv[2] || '/tmp/small/runs/align-1/last.safetensors';
const SIZE = Number(process.argv[3] || 32);
const N = Number(process.argv[4] || 400);
(async () => {
  const sc = loadScorer(ckpt);
  const dir = fs.mkdtempSync('/tmp/bow-');
  const scenes = generateScenes({ seed: 0, n: N, stream: 'instruct-heldout', size: SIZE });
  const kinds = { colour: [], shape: [], relation: [] };
  const pairs = [];
  const add = (sc0, file, text) => { pairs.push({ id: `p${pairs.length}`, image: { kind: 'file', path: file }, text, group: sc0.id, meta: {} }); return pairs.length - 1; };
  const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const swapWords = (text, a, b) => text.replace(new RegExp(`\\b(${esc(a)}|${esc(b)})\\b`, 'g'), (w) => (w === a ? b : a));
  for (const s of scenes) {
    const file = path.join(dir, s.id + '.png');
    fs.writeFileSync(file, await renderPng(s, SIZE));
    const t = s.caption;
    const objs = s.objects;
    if (objs.length < 2) continue;
    const [o1, o2] = objs;
    const variants = [];
    if (o1.colour !== o2.colour && t.includes(o1.colour) && t.includes(o2.colour)) variants.push(['colour', swapWords(t, o1.colour, o2.colour)]);
    if (o1.shape !== o2.shape && t.includes(o1.shape) && t.includes(o2.shape)) variants.push(['shape', swapWords(t, o1.shape, o2.shape)]);
    const rel = t.match(/\b(left of|right of|above|below)\b/);
    if (rel) variants.push(['relation', t.replace(rel[0], { 'left of': 'right of', 'right of': 'left of', above: 'below', below: 'above' }[rel[0]])]);
    if (variants.length === 0) continue;
    const ti = add(s, file, t);
    for (const [k, v] of variants) if (v !== t) kinds[k].push([ti, add(s, file, v)]);
  }
  const score = await scorePairs(sc, pairs, { cacheDir: dir });
  for (const [k, xs] of Object.entries(kinds)) {
    const wins = xs.filter(([a, b]) => score[a] > score[b]).length;
    console.log(`${k}: true caption scores higher in ${wins} of ${xs.length} (${(100 * wins / Math.max(1, xs.length)).toFixed(1)} %)`);
  }
  const ex = kinds.relation[0];
  if (ex) console.log('e.g.', JSON.stringify(pairs[ex[0]].text), '/', JSON.stringify(pairs[ex[1]].text));
  fs.rmSync(dir, { recursive: true, force: true });
  sc.dispose();
})();
