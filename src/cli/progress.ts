/** A terminal progress bar (rate and time left) and a text sparkline for loss curves. */

export class ProgressBar {
  private done_: number;
  private readonly start = Date.now();
  private lastDraw = 0;
  private readonly tty = Boolean(process.stderr.isTTY);

  /** `first`: where the count starts (a resumed run); the rate counts only this process's ticks. */
  constructor(private readonly total: number, private readonly label: string, private readonly first = 0) {
    this.done_ = first;
  }

  tick(status = ''): void {
    this.done_++;
    const now = Date.now();
    if (this.done_ < this.total && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const frac = this.total > 0 ? this.done_ / this.total : 1;
    const width = 30;
    const filled = Math.round(frac * width);
    const elapsed = (now - this.start) / 1000;
    const rate = (this.done_ - this.first) / Math.max(elapsed, 1e-9);
    const left = rate > 0 ? (this.total - this.done_) / rate : 0;
    const line = `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${this.done_}/${this.total} ` +
      `${rate.toFixed(1)} it/s, ${fmt(left)} left  ${status}`;
    if (this.tty) process.stderr.write(`\r${line}\x1b[K`);
    else if (this.done_ === this.total || this.done_ % Math.max(1, Math.floor(this.total / 10)) === 0) process.stderr.write(line + '\n');
  }

  done(): void {
    if (this.tty) process.stderr.write('\n');
  }
}

function fmt(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${Math.round(s % 60).toString().padStart(2, '0')}s` : `${s.toFixed(1)}s`;
}

/** A one-line plot of a series with block characters (min at the bottom). */
export function sparkline(values: number[], width: number): string {
  if (values.length === 0) return '';
  const blocks = '▁▂▃▄▅▆▇█';
  const buckets: number[] = [];
  for (let i = 0; i < width; i++) {
    const a = Math.floor((i * values.length) / width);
    const b = Math.max(a + 1, Math.floor(((i + 1) * values.length) / width));
    const seg = values.slice(a, b);
    if (seg.length) buckets.push(seg.reduce((s, v) => s + v, 0) / seg.length);
  }
  const lo = Math.min(...buckets), hi = Math.max(...buckets);
  return buckets.map((v) => blocks[hi > lo ? Math.min(7, Math.floor(((v - lo) / (hi - lo)) * 8)) : 0]).join('');
}
