/**
 * Reporting: the facts about the machine and both libraries that make a number reproducible, one Markdown
 * section per suite, and rewriting that section (and only it) in docs/benchmarks.md.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ml from '../src/index';
import { addonCandidates } from '../src/api/binding';
import { SuiteResult, TorchInfo, fmtRatio, markdownTable } from './harness';

export const ROOT = path.resolve(__dirname, '..', '..');
export const DOC = path.join(ROOT, 'docs', 'benchmarks.md');

export interface RunInfo {
  date: string;
  commit: string;
  cpu: string;
  cores: number;
  threads: number;
  node: string;
  backend: string;
  addon: string;
  command: string;
  /** 1-minute load average when the run started (before any of our own work). */
  load: number;
}

/** CPU time, in clock ticks: all cores busy, all cores total, and this process with its finished children. */
export interface CpuSnapshot { busy: number; total: number; ours: number }

export function cpuSnapshot(): CpuSnapshot | null {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already counted in user)
    const busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    const total = busy + f[3] + f[4];
    // utime stime cutime cstime: fields 14-17, counted after the ')' that closes the command name
    const self = fs.readFileSync('/proc/self/stat', 'utf8');
    const g = self.slice(self.lastIndexOf(')') + 2).split(' ').map(Number);
    return { busy, total, ours: g[11] + g[12] + g[13] + g[14] };
  } catch {
    return null;
  }
}

/**
 * The share of all cores that other processes kept busy between two snapshots (0..1): the machine's busy
 * time minus our own and the torch children's. The load average cannot tell our work from theirs.
 */
export function othersShare(a: CpuSnapshot | null, b: CpuSnapshot | null): number | null {
  if (!a || !b || b.total <= a.total) return null;
  return Math.max(0, (b.busy - a.busy - (b.ours - a.ours)) / (b.total - a.total));
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) return m[1].trim();
  } catch { /* not Linux */ }
  return os.cpus()[0]?.model ?? 'unknown CPU';
}

function gitCommit(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim();
    return dirty ? `${sha} (with uncommitted changes)` : sha;
  } catch {
    return 'unknown';
  }
}

export function runInfo(threads: number, args: string[]): RunInfo {
  const b = ml.backendInfo();
  const addon = addonCandidates().find((p) => fs.existsSync(p)) ?? 'none';
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    commit: gitCommit(),
    cpu: cpuModel(),
    cores: os.cpus().length,
    threads,
    node: process.version,
    backend: `blas: ${b.blas}; simd: ${b.simd}; threads: ${b.threads}; cuda: ${b.cuda}`,
    addon: path.relative(ROOT, addon) || addon,
    command: `npm run bench${args.length ? ' -- ' + args.join(' ') : ''}`,
    load: os.loadavg()[0],
  };
}

function torchLine(t: TorchInfo): string {
  const libs = t.blasLibs.length ? t.blasLibs.map((p) => path.basename(p)).join(', ') : 'none mapped';
  const ob = t.openblasThreads === null ? '' : `, OpenBLAS threads ${t.openblasThreads}`;
  return `${t.version}, threads ${t.threads}; BLAS_INFO=${t.blasInfo} (loaded: ${libs}${ob})` +
    (t.mkldnn ? `; ${t.mkldnn}` : '') + (t.capability ? `; CPU capability ${t.capability}` : '');
}

/** The Markdown for one suite, without the begin/end markers. */
export function renderSection(name: string, r: SuiteResult, info: RunInfo, others: number | null): string {
  const out: string[] = [];
  out.push(`## ${r.title}`, '', r.description, '');
  out.push(`- Date: ${info.date}, commit ${info.commit}`);
  const busy = others === null ? 'unknown' : `${(others * 100).toFixed(0)}%`;
  const threads = `${info.threads} thread${info.threads === 1 ? '' : 's'}`;
  out.push(`- Machine: ${info.cpu}, ${info.cores} cores; ${threads} for both libraries; node ${info.node}; ` +
    `other processes used ${busy} of the CPUs during this suite (load average ${info.load.toFixed(1)} before the run)`);
  out.push(`- modalab: ${info.backend}; addon ${info.addon}`);
  out.push(`- PyTorch: ${r.torchInfo ? torchLine(r.torchInfo) : `skipped (${r.torchSkipped ?? 'not run'})`}`);
  out.push(`- Command: \`${info.command}\``, '');
  if (others !== null && others > BUSY) {
    // Measured: with other work on both cores, torch's OpenMP and OpenBLAS threads (both spin-wait) lose their
    // cores and a 2-thread MLP step went from ~15 ms to ~500 ms. Ratios still compare the two libraries under
    // the same conditions, but not under the conditions anyone trains in.
    out.push(`**Warning:** the machine was busy (other processes used ${busy} of the CPUs); multi-threaded ` +
      'timings, PyTorch\'s especially, suffer most. Rerun on a quiet machine before trusting these numbers.', '');
  }
  out.push(markdownTable(r.columns, r.rows), '');
  out.push('Goals:', '');
  for (const g of r.goals) {
    const verdict = g.ratio === null ? 'NOT MEASURED' : g.pass(g.ratio) ? 'PASS' : 'MISS';
    const measured = g.ratio === null ? `no PyTorch comparison (${r.torchSkipped ?? 'not run'})` : `measured ${g.format ? g.format(g.ratio) : fmtRatio(g.ratio)}`;
    out.push(`- **${verdict}** ${g.text}: ${measured}${g.note ? ` (${g.note})` : ''}`);
  }
  if (r.goals.length === 0) out.push('- none set for this suite; the ratio is tracked for regressions');
  if (r.torchSkipped) out.push('', `PyTorch comparison skipped: ${r.torchSkipped}.`);
  for (const n of r.notes) out.push('', n);
  return out.join('\n');
}

/** Above this share of the CPUs used by others, a section carries a warning. */
export const BUSY = 0.2;

const begin = (name: string): string => `<!-- bench:${name}:begin -->`;
const end = (name: string): string => `<!-- bench:${name}:end -->`;

const HEADER = `# Benchmarks

Written by \`npm run bench\` (bench/main.ts): each suite measures modalab and runs the same work in PyTorch
(Debian's /usr/bin/python3, bench/torch/<suite>.py) in the same run, with the same thread count. Both sides take
repeated timed samples after a warm-up; the run alternates modalab and PyTorch in rounds (default 3), each
round counts once (a side's figure is the median of its round medians; a ratio is the median of the per-round
ratios, each between two runs that sat next to each other in time). Each section is rewritten by the run that
measured it; the rest of this file is left alone.

\`\`\`
npm run bench                      # every suite, all cores
npm run bench -- gemm tiny         # some suites
npm run bench -- --threads 1       # both libraries on 1 thread; written to its own sections (gemm-t1, ...)
npm run bench -- --rounds 5        # more alternations of modalab and PyTorch (default 3)
npm run bench -- --no-docs         # print only, leave this file alone
npm run bench -- --list            # the suites
\`\`\`

Reading these numbers:

- The machines are shared and noisy. Quote ratios from one run, not absolute times across runs. Each section
  says how much of the CPUs other processes used while it ran and warns above 20%.
- On these machines both libraries reach the same OpenBLAS (Debian's libopenblas 0.3.21, pthreads build), so
  a GEMM ratio near 1 is what to expect; departures from it are noise or overhead around the call.
- PyTorch parallelises element-wise ops with OpenMP, which splits the work statically between its threads.
  When another process holds one of the two cores, every parallel region waits for the descheduled thread:
  \`mul_\` on 262k floats measured 56 us on 1 thread and 6.9 ms on 2 while other work ran. modalab's pool
  hands out chunks dynamically, so the calling thread finishes the work when a worker is late. Multi-threaded
  PyTorch numbers from a busy machine are therefore pessimistic; the 1-thread sections avoid the effect.
- A suite is a file in bench/cases exporting a \`Suite\`, a script bench/torch/<suite>.py doing the same work in
  PyTorch, and an entry in SUITES in bench/main.ts.
`;

/**
 * Replace the section `name` (a suite, or `suite-tN` for a run at N threads) in docs/benchmarks.md, or insert it
 * before the sections of the suites that come after its suite in `order`.
 */
export function writeSection(name: string, body: string, order: string[]): void {
  let doc = fs.existsSync(DOC) ? fs.readFileSync(DOC, 'utf8') : HEADER;
  const block = `${begin(name)}\n${body}\n${end(name)}`;
  const i = doc.indexOf(begin(name));
  const j = doc.indexOf(end(name));
  if (i >= 0 && j > i) {
    doc = doc.slice(0, i) + block + doc.slice(j + end(name).length);
  } else {
    const suite = name.replace(/-t\d+$/, '');
    const later = order.slice(order.indexOf(suite) + 1).map((n) => doc.indexOf(begin(n))).filter((k) => k >= 0);
    if (later.length) {
      const k = Math.min(...later);
      doc = doc.slice(0, k) + block + '\n\n' + doc.slice(k);
    } else {
      doc = doc.replace(/\s*$/, '\n\n') + block + '\n';
    }
  }
  fs.mkdirSync(path.dirname(DOC), { recursive: true });
  fs.writeFileSync(DOC, doc);
}
