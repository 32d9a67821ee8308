/**
 * The entry of a sweep worker process (child_process.fork of the compiled trial-worker.js). It runs the trials the
 * runner sends, one at a time, and stops the current one cleanly (checkpoint written, run 'killed', resumable)
 * when the runner says stop, on SIGINT/SIGTERM (Ctrl-C reaches the whole process group), or when the runner
 * goes away (the IPC channel closes).
 *
 * Messages in:  { type: 'run', job } | { type: 'stop' } | { type: 'exit' }
 * Messages out: { type: 'ready' } | { type: 'run-started', trial, runId } | { type: 'done', trial, result }
 *               | { type: 'error', trial, message }
 */
import { runTrial, TrialJob } from './trial';

export type ToTrialWorker = { type: 'run'; job: TrialJob } | { type: 'stop' } | { type: 'exit' };
export type FromTrialWorker =
  | { type: 'ready' }
  | { type: 'run-started'; trial: number; runId: number }
  | { type: 'done'; trial: number; result: { runId: number; status: 'finished' | 'killed'; stepsDone: number } }
  | { type: 'error'; trial: number; message: string };

if (require.main === module && typeof process.send === 'function') {
  let controller = new AbortController();
  let busy = false;
  let exitWhenIdle = false;
  let shouldStop: () => boolean = () => false;
  const send = (m: FromTrialWorker): void => {
    if (process.connected) process.send!(m);
  };
  /** Stops the current trial; exits once idle. The runner gone, nothing else can be reported anyway. */
  const stop = (): void => {
    controller.abort();
    exitWhenIdle = true;
    if (!busy) process.exit(0);
  };
  // Ctrl-C: stop the trial and report it 'done' (killed) to the runner, which then says exit.
  const interrupt = (): void => (process.connected ? controller.abort() : stop());
  process.on('SIGINT', interrupt);
  process.on('SIGTERM', interrupt);
  process.on('disconnect', stop);
  process.on('message', (m: ToTrialWorker) => {
    if (m.type === 'stop') controller.abort();
    else if (m.type === 'exit') stop();
    else if (m.type === 'run') {
      busy = true;
      controller = new AbortController();
      const trial = m.job.trial;
      runTrial(m.job, { signal: controller.signal, shouldStop, onRun: (runId) => send({ type: 'run-started', trial, runId }) })
        .then((result) => send({ type: 'done', trial, result }))
        .catch((e: unknown) => send({ type: 'error', trial, message: e instanceof Error ? e.message : String(e) }))
        .finally(() => {
          busy = false;
          if (exitWhenIdle) process.exit(0);
        });
    }
  });
  // The runner gone (killed outright), this process is re-parented: seen at the next step even when the event loop
  // is not turning (see TrialContext.shouldStop).
  const parent = process.ppid;
  shouldStop = () => process.ppid !== parent;
  send({ type: 'ready' });
}
