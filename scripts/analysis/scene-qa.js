// Usage: node scripts/analysis/scene-qa.js <lm or caption checkpoint> [questions 500] [seed 0] [form]
// (after npm run build; BUILD=<dir> for another build). Answers text-only scene questions (sceneQaTexts of the
// stream 'val': "is there a green star? <grounded caption>, so" -> "no") with the checkpoint's GPT, greedily, as
// the lm stage's val/scene_qa_acc does (teacher-forced: the answer, and in the 'marks' form every mark, each from the
// true words before it). form: 'scene' or 'marks'; default the lm run's data.sceneQaRationale ('scene' otherwise). For a caption checkpoint it is the GPT after stage 2: whether captioning
// kept the lookup that data.sceneQa taught (docs/instruct.md, d2). Prints accuracy overall and by type, in %.
const path = require('path');
const B = process.env.BUILD || path.join(__dirname, '../../dist');
const { readCheckpointState, loadModelWeights } = require(B + '/experiments/stages/checkpoint');
const { Tokenizer } = require(B + '/experiments/tokenizer');
const { GPT } = require(B + '/experiments/models/gpt');
const { loadLm, evaluateSceneQa } = require(B + '/experiments/stages/lm/train');
const { sceneQaTexts } = require(B + '/experiments/data/instruct');

const file = process.argv[2];
if (!file) {
  console.error('usage: node scripts/analysis/scene-qa.js <lm or caption checkpoint> [questions] [seed]');
  process.exit(2);
}
const n = Number(process.argv[3] ?? 500);
const seed = Number(process.argv[4] ?? 0);
const st = readCheckpointState(file);
let form = process.argv[5];
let gpt, tokPath;
if (st.stage === 'lm') {
  const l = loadLm(file);
  gpt = l.model;
  tokPath = l.tokenizerPath;
  form ??= l.config.data.sceneQaRationale;
} else if (st.stage === 'caption') {
  tokPath = st.extra.tokenizer;
  gpt = new GPT(st.extra.gpt);
  // Only the GPT's tensors (the checkpoint's "model.gpt.*"); the projector is not needed for text.
  const { weights } = loadModelWeights(file);
  const sd = {};
  for (const [k, v] of Object.entries(weights)) {
    if (k.startsWith('gpt.')) sd[k.slice(4)] = v;
    else v.dispose();
  }
  gpt.loadStateDict(sd);
  for (const v of Object.values(sd)) v.dispose();
  gpt.eval();
} else {
  throw new Error(`${file} is a ${st.stage} checkpoint; give an lm or caption one`);
}
form ??= 'scene';
const tok = Tokenizer.fromFile(tokPath);
const t0 = Date.now();
const r = evaluateSceneQa(gpt, tok, sceneQaTexts(seed, n, 'val', form));
const pct = (x) => +(100 * x).toFixed(1);
const byType = Object.fromEntries(Object.entries(r.byType).map(([k, v]) => [k, pct(v)]));
console.log(JSON.stringify({ checkpoint: file, stage: st.stage, form, questions: r.scored, seed, accuracy: pct(r.acc), marks: pct(r.marksAcc), byType, seconds: (Date.now() - t0) / 1000 }));
gpt.dispose();
