/**
 * `modalab filter --checkpoint <file | align run id> [--split train] [--noise 0.2] (--threshold T |
 *  --keep-fraction F) [--out kept.json] [--db file]`: CLIP-score cleaning of a dataset split with a trained align
 * checkpoint. With --noise, a seeded fraction of captions is first swapped into wrong pairs and the output says how
 * many of them the filter removed and how many clean pairs it kept.
 */
import * as fs from 'fs';
import * as path from 'path';

export async function runFilter(argv: string[]): Promise<number> {
  const flags: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`filter: unexpected argument ${JSON.stringify(a)}`);
    const eq = a.indexOf('=');
    if (eq > 0) flags[a.slice(2, eq)] = a.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw new Error(`filter: ${a} needs a value`);
      flags[a.slice(2)] = argv[++i];
    }
  }
  const known = ['checkpoint', 'split', 'noise', 'threshold', 'keep-fraction', 'out', 'db', 'seed'];
  for (const k of Object.keys(flags)) if (!known.includes(k)) throw new Error(`filter: unknown flag --${k} (flags: ${known.map((x) => '--' + x).join(', ')})`);
  if (!flags.checkpoint) throw new Error('filter: --checkpoint <file | align run id> is required');
  const num = (k: string): number | undefined => {
    if (flags[k] === undefined) return undefined;
    const v = Number(flags[k]);
    if (!Number.isFinite(v)) throw new Error(`filter: --${k} must be a number, got ${JSON.stringify(flags[k])}`);
    return v;
  };
  const threshold = num('threshold');
  const keepFraction = num('keep-fraction');
  if ((threshold === undefined) === (keepFraction === undefined)) throw new Error('filter: give exactly one of --threshold and --keep-fraction');
  if (keepFraction !== undefined && !(keepFraction > 0 && keepFraction <= 1)) throw new Error(`filter: --keep-fraction must be in (0, 1], got ${keepFraction}`);
  const noise = num('noise') ?? 0;
  if (!(noise >= 0 && noise < 1)) throw new Error(`filter: --noise must be in [0, 1), got ${noise}`);
  const split = flags.split ?? 'train';

  const { Tracker } = require('../experiments/tracking') as typeof import('../experiments/tracking');
  const { resolveResume } = require('../experiments/stages/align/train') as typeof import('../experiments/stages/align/train');
  const { readCheckpointState } = require('../experiments/stages/checkpoint') as typeof import('../experiments/stages/checkpoint');
  const { alignPairs, addCaptionNoise } = require('../experiments/stages/align/data') as typeof import('../experiments/stages/align/data');
  const { cleanPairs, noiseReport } = require('../experiments/stages/align/filter') as typeof import('../experiments/stages/align/filter');

  let file = flags.checkpoint;
  if (/^\d+$/.test(file)) {
    const t = Tracker.open(flags.db);
    try {
      file = resolveResume(t, Number(file)).file;
    } finally {
      t.close();
    }
  }
  const st = readCheckpointState(file);
  const cfg = st.config as import('../experiments/stages/align/config').AlignConfig;
  const splits = alignPairs(cfg) as unknown as Record<string, import('../experiments/data/types').Pair[] | undefined>;
  let pairs = splits[split];
  if (!pairs) throw new Error(`filter: the ${cfg.data.dataset} dataset has no split ${JSON.stringify(split)} (splits: ${Object.keys(splits).join(', ')})`);
  if (noise > 0) pairs = addCaptionNoise(pairs, noise, Number(flags.seed ?? 0));
  process.stderr.write(`filter: scoring ${pairs.length} ${cfg.data.dataset}/${split} pairs with ${path.relative(process.cwd(), file)}\n`);
  const r = await cleanPairs(file, pairs, { threshold, keepFraction });
  process.stdout.write(`kept ${r.kept.length} of ${pairs.length} pairs (score >= ${r.threshold.toFixed(4)}), dropped ${r.dropped.length}\n`);
  if (noise > 0) {
    const rep = noiseReport(r);
    process.stdout.write(`swapped captions: ${rep.noisy}, removed ${(100 * rep.noisyRemoved).toFixed(1)}%; ` +
      `clean pairs: ${rep.clean}, kept ${(100 * rep.cleanKept).toFixed(1)}%\n`);
  }
  if (flags.out) {
    const out = {
      checkpoint: path.resolve(file), dataset: cfg.data.dataset, split, noise, threshold: r.threshold,
      kept: r.kept.map((p) => p.id), dropped: r.dropped.map((p) => p.id), scores: Array.from(r.scores),
    };
    const tmp = `${flags.out}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify(out) + '\n');
    fs.renameSync(tmp, flags.out);
    process.stdout.write(`wrote ${flags.out}\n`);
  }
  return 0;
}
