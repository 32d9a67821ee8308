// Usage: node scripts/analysis/vqa-errors.js <instruct checkpoint> [scenes 200]   (after npm run build)
// Every question of the instruct stage's held-out scenes (seed 0, 32 px; 200 scenes: 2,793 questions, all five
// types, against the stage's 5 a scene) answered by the checkpoint:
// - "accuracy": per type and overall, scored as the stage scores (vqaAccuracy), beside "bestConstant", the best
//   single answer per type for these very questions (an oracle constant), with n per type;
// - "errors": wrong colour and shape answers split into another object's attribute (a binding error) and an absent
//   one; position split by form ("is X left of Y?" and "what is left of X?"); with data.rationale 'scene' or
//   'marks', how often the description is the scene's grounded caption word for word (marks aside), and how often
//   the answer is right when it is; with 'marks' also how often the marks are all right, and the answer then.
// Used in docs/instruct.md ("Error analysis of s5", the full-question rescoring of the concat runs).
const path = require('path');
const B = process.env.BUILD || path.join(__dirname, '../../dist');
const { generateScenes, groundedCaption, renderPng } = require(B + '/experiments/data/shapes');
const { loadInstruct } = require(B + '/experiments/stages/instruct');
const { vqaAccuracy, vqaScore } = require(B + '/experiments/eval/vqa');
const { finalAnswer, marksRationale } = require(B + '/experiments/data/instruct');
(async () => {
  const m = loadInstruct(process.argv[2]);
  const n = Number(process.argv[3] || 200);
  const scenes = generateScenes({ seed: 0, n, stream: 'instruct-heldout', size: 32 });
  const st = {};
  const bump = (k) => (st[k] = (st[k] || 0) + 1);
  const preds = [], refs = [], types = [];
  for (const sc of scenes) {
    const png = await renderPng(sc, 32);
    const img = { kind: 'bytes', bytes: png, name: sc.id };
    for (const q of sc.qa) {
      // A rationale ("the circle at the top left, the square on the right, so yes") is scored on its conclusion.
      const reply = (await m.answer([img], q.question, { maxNewTokens: Math.max(32, m.config.generate.maxNewTokens) })).trim().toLowerCase();
      const a = finalAnswer(reply);
      preds.push(a); refs.push(q.answers); types.push(q.type);
      // data.rationale 'scene': is the description before ", so " the scene's grounded caption, word for word? And
      // when it is, is the answer read off it right? (Separates describing the scene from reasoning over the words.)
      // With 'marks' the description is checked without its marks, and then the marks themselves: are they the
      // right ones ("marked right"), and is the answer right when description and marks both are?
      const rat = m.config.data.rationale;
      if (rat === 'scene' || rat === 'marks') {
        const kind = q.type === 'position' ? (q.question.startsWith('is ') ? 'pos-is' : 'pos-what') : q.type;
        const said = reply.endsWith(`, so ${a}`) ? reply.slice(0, -`, so ${a}`.length) : null;
        const exact = said !== null && said.replace(/ \((yes|no)\)/g, '') === groundedCaption(sc.objects);
        bump(`described ${kind} n`);
        if (exact) bump(`described ${kind} exactly`);
        if (exact && q.answers.includes(a)) bump(`described ${kind} exactly, answer right`);
        if (rat === 'marks' && exact && `${said}, so ${q.answers[0]}` === marksRationale(sc, q)) {
          bump(`described ${kind} exactly, marked right`);
          if (q.answers.includes(a)) bump(`described ${kind} exactly, marked right, answer right`);
        }
      }
      if (!['colour', 'shape', 'position'].includes(q.type)) continue;
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
  const acc = vqaAccuracy(preds, refs, types);
  const accuracy = {}, bestConstant = {}, count = {};
  for (const t of [...new Set(types)]) {
    const idx = types.map((x, i) => (x === t ? i : -1)).filter((i) => i >= 0);
    const cands = [...new Set(idx.flatMap((i) => refs[i]))];
    const score = (c) => idx.reduce((s, i) => s + vqaScore(c, refs[i]), 0) / idx.length;
    const best = cands.map((c) => [c, score(c)]).sort((x, y) => y[1] - x[1])[0];
    accuracy[t] = +(100 * acc.byType[t].accuracy).toFixed(1);
    bestConstant[t] = `${(100 * best[1]).toFixed(1)} ("${best[0]}")`;
    count[t] = idx.length;
  }
  accuracy.overall = +(100 * acc.overall).toFixed(1);
  console.log(JSON.stringify({ checkpoint: process.argv[2], questions: preds.length, accuracy, bestConstant, n: count, errors: st }, null, 1));
  m.dispose();
})();
