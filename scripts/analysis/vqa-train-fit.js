// Usage: node scripts/analysis/vqa-train-fit.js <instruct checkpoint> <instruct data cache .json> [n 2000]
// (after npm run build; BUILD=<dir> for another build). How well a checkpoint fits its own training questions:
// the first n examples of the stage's training-data cache (runs/cache/instruct-<key>.json and the .f32 image table
// beside it, the images exactly as trained on), answered greedily and scored as the stage scores (vqaAccuracy),
// per type. Beside the held-out figures of vqa-errors.js this tells under-fitting (both low) from memorising
// (training high, held-out low). Used in docs/instruct.md ("Grounding in stage 2").
const fs = require('fs');
const path = require('path');
const B = process.env.BUILD || path.join(__dirname, '../../dist');
const { loadInstruct, answerExamples } = require(B + '/experiments/stages/instruct');
const { vqaAccuracy } = require(B + '/experiments/eval/vqa');
const { readFloat32File } = require(B + '/experiments/data/f32file');
const { finalAnswer } = require(B + '/experiments/data/instruct');

const [ckpt, cacheJson, nArg] = process.argv.slice(2);
if (!ckpt || !cacheJson) {
  console.error('usage: node scripts/analysis/vqa-train-fit.js <instruct checkpoint> <instruct data cache .json> [n]');
  process.exit(2);
}
const meta = JSON.parse(fs.readFileSync(cacheJson, 'utf8'));
const m = loadInstruct(ckpt);
try {
  const S = meta.key.transform.size;
  const px = 3 * S * S;
  const all = meta.examples.filter((e) => e.task === 'vqa' && e.images.length === 1);
  const ex = all.slice(0, Math.min(Number(nArg || 2000), all.length));
  const maxImage = Math.max(...ex.map((e) => e.images[0])) + 1;
  // The image table beside the json: every image of the set, normalised, f32 [images * 3 * S * S].
  const file = cacheJson.replace(/\.json$/, '.f32');
  const bytes = fs.statSync(file).size;
  const images = readFloat32File(file, bytes / 4);
  if (!images) throw new Error(`${file}: unreadable`);
  const table = m.model.featureTable(images.subarray(0, maxImage * px), maxImage);
  const preds = answerExamples(m.model, ex, table, { maxNewTokens: Math.max(32, m.config.generate.maxNewTokens) }).map((p) => finalAnswer(p.trim().toLowerCase()));
  const r = vqaAccuracy(preds, ex.map((e) => [finalAnswer(e.answers[0])]), ex.map((e) => e.qtype));
  const accuracy = { overall: +(100 * r.overall).toFixed(1) };
  for (const [t, v] of Object.entries(r.byType)) accuracy[t] = +(100 * v.accuracy).toFixed(1);
  const isForm = ex.map((e, i) => [e, i]).filter(([e]) => e.qtype === 'position' && /\bis (the|a) /i.test(e.question) && !/what is/i.test(e.question));
  const isRight = isForm.filter(([e, i]) => finalAnswer(e.answers[0]) === preds[i]).length;
  console.log(JSON.stringify({ checkpoint: ckpt, examples: ex.length, accuracy, 'is X rel Y': `${isRight} of ${isForm.length}` }, null, 1));
} finally {
  m.dispose();
}
