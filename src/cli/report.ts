// `modalab report <run...> -o report.html [--png] [--db FILE]`: a standalone HTML report of runs.
import { parseArgs } from 'util';
import { DEFAULT_DB, type Tracker } from '../experiments/tracking';
import { writeReport } from '../experiments/report';
import { openExisting } from './runs';

export const REPORT_USAGE = `usage: modalab report <run...> [-o report.html] [--png] [--db FILE] [--title T]
  one offline HTML page with the runs' configs and curves (several runs overlaid)
  <run>       a run id, or a run name that is unique in the database
  -o FILE     output file (default report.html)
  --png       also render each figure to PNG (headless Chromium) into <FILE without .html>-png/
`;

/** Run ids for arguments that are ids or unique names; an unknown or ambiguous name is an error naming it. */
export function resolveRuns(tracker: Tracker, args: readonly string[]): number[] {
  const all = tracker.listRuns();
  return args.map((a) => {
    if (/^\d+$/.test(a)) {
      const id = Number(a);
      if (!all.some((r) => r.id === id)) throw new Error(`no run ${id} in ${tracker.file}`);
      return id;
    }
    const hits = all.filter((r) => r.name === a);
    if (hits.length === 0) throw new Error(`no run named '${a}' in ${tracker.file} (modalab runs lists them)`);
    if (hits.length > 1) throw new Error(`${hits.length} runs are named '${a}' (ids ${hits.map((r) => r.id).join(', ')}): give an id`);
    return hits[0].id;
  });
}

export async function runReport(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      output: { type: 'string', short: 'o' }, png: { type: 'boolean' }, db: { type: 'string' }, title: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  });
  if (values.help) {
    out(REPORT_USAGE);
    return 0;
  }
  if (positionals.length === 0) throw new Error(`give at least one run id or name\n${REPORT_USAGE}`);
  const tracker = openExisting(values.db ?? DEFAULT_DB);
  try {
    const ids = resolveRuns(tracker, positionals);
    const res = await writeReport(tracker, ids, values.output ?? 'report.html', { png: values.png === true, title: values.title });
    out(`wrote ${res.path} (${ids.length} run${ids.length === 1 ? '' : 's'}, ${res.figures} figure${res.figures === 1 ? '' : 's'})\n`);
    for (const p of res.pngs) out(`wrote ${p}\n`);
    return 0;
  } finally {
    tracker.close();
  }
}
