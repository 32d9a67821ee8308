/**
 * Successive halving (Jamieson & Talwalkar 2016; the inner loop of Hyperband, Li et al. 2017) as bookkeeping over
 * trial states, with no I/O: the runner asks `decide` what to promote and prune, and records the answer.
 *
 * A trial's `rung` is the number of rung boundaries it has passed. A `pending` trial with rung j runs to
 * rungs[j] (or to its last step when j equals the number of rungs). Reaching rungs[j] it is `paused` at rung j+1
 * with the metric it scored there. When no trial below rung j is still pending, running or paused, the paused
 * trials at rung j are compared: of the n_j trials that reached rung j, the best max(1, floor(n_j * keep)) go on
 * (pending again) and the rest are `pruned`. Ties go to the lower trial index, trials without a metric come last,
 * so the decision is a pure function of the recorded states and replays identically after a restart.
 */

export type TrialOutcome = 'pending' | 'running' | 'paused' | 'finished' | 'pruned' | 'failed';

export interface TrialState {
  index: number;
  outcome: TrialOutcome;
  rung: number;
  /** The target metric at the last rung (or at the end), null when not yet scored or not logged. */
  metric: number | null;
}

/** The step a pending trial runs to: its next rung, or its last step after the last rung. */
export function targetStep(rung: number, rungs: readonly number[], totalSteps: number): number {
  return rung < rungs.length ? rungs[rung] : totalSteps;
}

/** How many of n trials that reached a rung go on. */
export function keepCount(n: number, keep: number): number {
  return Math.max(1, Math.floor(n * keep + 1e-9));
}

/** Best first: larger for 'max', smaller for 'min'; null and NaN last; ties by trial index. */
export function compareTrials(a: TrialState, b: TrialState, mode: 'max' | 'min'): number {
  const va = a.metric === null || Number.isNaN(a.metric) ? null : a.metric;
  const vb = b.metric === null || Number.isNaN(b.metric) ? null : b.metric;
  if (va === null || vb === null) return va === vb ? a.index - b.index : va === null ? 1 : -1;
  if (va !== vb) return mode === 'max' ? vb - va : va - vb;
  return a.index - b.index;
}

export interface Decision {
  rung: number;
  promote: number[];
  prune: number[];
}

/** The next halving decision that can be taken now, or null (trials below the lowest waiting rung are unfinished). */
export function decide(states: readonly TrialState[], numRungs: number, keep: number, mode: 'max' | 'min'): Decision | null {
  const waiting = states.filter((s) => s.outcome === 'paused');
  if (waiting.length === 0) return null;
  const j = Math.min(...waiting.map((s) => s.rung));
  if (j < 1 || j > numRungs) throw new Error(`halving: a paused trial is at rung ${j}, outside 1..${numRungs}`);
  const busyBelow = states.some((s) => s.rung < j && (s.outcome === 'pending' || s.outcome === 'running' || s.outcome === 'paused'));
  if (busyBelow) return null;
  const reached = states.filter((s) => s.rung >= j).length;
  const already = states.filter((s) => s.rung > j || (s.rung === j && (s.outcome === 'pending' || s.outcome === 'running' || s.outcome === 'finished'))).length;
  const slots = Math.max(0, keepCount(reached, keep) - already);
  const ranked = waiting.filter((s) => s.rung === j).sort((a, b) => compareTrials(a, b, mode));
  return { rung: j, promote: ranked.slice(0, slots).map((s) => s.index), prune: ranked.slice(slots).map((s) => s.index) };
}
