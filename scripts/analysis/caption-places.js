// Usage: node scripts/analysis/caption-places.js <caption checkpoint> [images 0 = the run's data.evalSamples]
// (after npm run build; BUILD=<dir> for another build). Captions the run's held-out images again, greedily, and
// prints the stage's caption metrics for them, with val/shapes/place_accuracy when the captions say where objects
// are (data.shapesCaptions 'grounded'): of the mentions that name a scene object, the share placed in its own third
// of the picture. Used in docs/instruct.md ("Grounding in stage 2") for runs trained before that metric existed.
const path = require('path');
const B = process.env.BUILD || path.join(__dirname, '../../dist');
const ml = require(B + '/index');
const { readCheckpointState, loadCheckpoint } = require(B + '/experiments/stages/checkpoint');
const { loadScorer } = require(B + '/experiments/stages/align/filter');
const { Tokenizer } = require(B + '/experiments/tokenizer');
const { GPT } = require(B + '/experiments/models/gpt');
const { CaptionNet, CaptionModel } = require(B + '/experiments/stages/caption/model');
const { prepareCaptionData } = require(B + '/experiments/stages/caption/data');
const { evaluateCaptions } = require(B + '/experiments/stages/caption/train');

(async () => {
  const file = process.argv[2];
  if (!file) { console.error('usage: node scripts/analysis/caption-places.js <caption checkpoint> [images]'); process.exit(2); }
  const st = readCheckpointState(file);
  if (st.stage !== 'caption') throw new Error(`${file} is a ${st.stage} checkpoint, not caption`);
  const cfg = st.config;
  if (process.argv[3]) cfg.data.evalSamples = Number(process.argv[3]);
  const extra = st.extra;
  const scorer = loadScorer(extra.alignCheckpoint);
  const tok = Tokenizer.fromFile(extra.tokenizer);
  const net = new CaptionNet(scorer.config.model.visionWidth, cfg.model.projectorHidden, new GPT(extra.gpt));
  loadCheckpoint(file, net, null);
  const model = new CaptionModel(scorer.model.net, net, scorer.config.data.imageSize, cfg.model.prefix);
  net.eval();
  const data = await prepareCaptionData(cfg, scorer.config, tok);
  const { metrics } = ml.noGrad(() => evaluateCaptions(model, data, cfg));
  const out = {};
  for (const [k, v] of Object.entries(metrics)) if (k.startsWith('val/shapes/')) out[k] = +(100 * v).toFixed(1);
  console.log(JSON.stringify({ checkpoint: file, images: data.eval.numImages, ...out }, null, 1));
  model.dispose?.();
})().catch((e) => { console.error(e); process.exit(1); });
