// Usage: node scripts/analysis/vqa-errors.js <instruct checkpoint> [scenes 200]   (after npm run build)
// Error analysis on the instruct stage's held-out scenes (seed 0, 32 px): every colour / shape / position question of
// each scene answered by the checkpoint; wrong colour and shape answers split into another object's attribute (a
// binding error) and an absent one. Used in docs/instruct.md ("Error analysis of s5").
const path = require('path');
const B = process.env.BUILD || path.join(__dirname, '../../dist');
const { generateScenes, renderPng } = require(B + '/experiments/data/shapes');
const { loadInstruct } = require(B + '/experiments/stages/instruct');
(async () => {
  const m = loadInstruct(process.argv[2]);
  const n = Number(process.argv[3] || 200);
  const scenes = generateScenes({ seed: 0, n, stream: 'instruct-heldout', size: 32 });
  const st = {};
  const bump = (k) => (st[k] = (st[k] || 0) + 1);
  for (const sc of scenes) {
    const png = await renderPng(sc, 32);
    const img = { kind: 'bytes', bytes: png, name: sc.id };
    for (const q of sc.qa) {
      if (!['colour', 'shape', 'position'].includes(q.type)) continue;
      const a = (await m.answer([img], q.question, { maxNewTokens: 4 })).trim().toLowerCase();
      const ok = q.answers.includes(a);
      let form = q.type;
      if (q.type === 'position') form = q.question.startsWith('is ') ? 'pos-is' : 'pos-what';
      bump(form + ' n');
      if (ok) { bump(form + ' right'); continue; }
      if (q.type === 'colour') bump(sc.objects.some((o) => o.colour === a) ? 'colour wrong: another object\'s' : 'colour wrong: absent');
      if (q.type === 'shape') bump(sc.objects.some((o) => o.shape === a) ? 'shape wrong: another object\'s' : 'shape wrong: absent');
      if (form === 'pos-what') bump(sc.objects.some((o) => o.shape === a) ? 'pos-what wrong: a present shape' : 'pos-what wrong: absent');
      if (form === 'pos-is') bump('pos-is wrong: said ' + a);
    }
  }
  console.log(JSON.stringify(st, null, 1));
  m.dispose();
})();
