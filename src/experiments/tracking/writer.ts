/**
 * The metric writer: a worker thread (one per tracking file per process) that inserts the metric batches the
 * training thread hands it, so SQLite's per-row b-tree work runs beside the training loop instead of inside it.
 *
 * Protocol (see tracker.ts, WriterClient): requests arrive on a MessagePort, and a SharedArrayBuffer `ctl` counts
 * them. ctl[0] = requests posted (the main thread bumps it after each postMessage, and notifies only when it is
 * about to wait: a background handoff is found by this thread's poll every WRITER_POLL_MS), ctl[1] = requests
 * handled (this thread bumps it and notifies after each one, committed or failed), ctl[2] = 1 once this thread has
 * stopped for good. Messages are taken with receiveMessageOnPort, so neither side needs its event loop: the main
 * thread can wait for a flush with Atomics.wait inside a synchronous training loop or an 'exit' handler.
 *
 * A request that fails is answered with `{ seq, error }` on the port. A failed handoff (the caller did not wait)
 * is kept and retried before the next request; a failed synchronous flush is not kept (the caller still holds
 * its rows and throws).
 */
import Database from 'better-sqlite3';
import { receiveMessageOnPort, workerData, type MessagePort } from 'worker_threads';

/**
 * One run's metric rows, column by column: views of a SharedArrayBuffer the main thread fills (shared, never
 * copied) and reuses once this request is handled. `keyIds` index the key table built from every request's
 * `newKeys`; non-finite values arrive as they are and are tagged here.
 */
export interface BatchMessage {
  type: 'batch';
  seq: number;
  /** The caller waits for this one: do not keep it for a retry on failure. */
  sync: boolean;
  runId: number;
  n: number;
  /** Keys first used since the previous request, in id order (ids continue the table). */
  newKeys: string[];
  keyIds: Int32Array;
  steps: Float64Array;
  values: Float64Array;
  walls: Float64Array;
  /** Seconds since the epoch, written as the run's heartbeat in the same transaction. */
  heartbeat: number;
}

export interface CloseMessage {
  type: 'close';
  seq: number;
  newKeys: string[];
}

export type WriterMessage = BatchMessage | CloseMessage;

export interface WriterReply {
  seq: number;
  error: string;
}

export interface WriterData {
  file: string;
  ctl: SharedArrayBuffer;
  port: MessagePort;
  busyTimeoutMs: number;
}

/** How often an idle writer looks for handed-over batches (they are committed within this, plus the insert). */
export const WRITER_POLL_MS = 50;

const POSTED = 0;
const HANDLED = 1;
const STOPPED = 2;

function main(data: WriterData): void {
  const ctl = new Int32Array(data.ctl);
  const port = data.port;
  let handled = 0;
  let db: Database.Database | null = null;
  try {
    const conn = (db = new Database(data.file));
    conn.pragma(`busy_timeout = ${data.busyTimeoutMs}`);
    db.pragma('synchronous = NORMAL'); // per connection; the file is already in WAL mode (the main thread set it)
    // Foreign keys stay off on this connection: every row references its own run, which exists (startRun or
    // resumeRun made it and nothing deletes runs), and the per-row check was half the cost of a flush.
    db.pragma('foreign_keys = OFF');
    const ins = db.prepare('INSERT OR REPLACE INTO metrics (run_id, key, step, value, wall_time, nonfinite) VALUES (?, ?, ?, ?, ?, ?)');
    const beat = db.prepare('UPDATE runs SET heartbeat_at = ? WHERE id = ?');
    const keys: string[] = [];
    const write = db.transaction((batches: BatchMessage[]) => {
      for (const b of batches) {
        const id = b.runId;
        for (let i = 0; i < b.n; i++) {
          const v = b.values[i];
          if (Number.isFinite(v)) ins.run(id, keys[b.keyIds[i]], b.steps[i], v, b.walls[i], null);
          else ins.run(id, keys[b.keyIds[i]], b.steps[i], null, b.walls[i], Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf');
        }
        beat.run(b.heartbeat, id);
      }
    });
    const retry: BatchMessage[] = []; // failed handoffs, oldest first
    let closing = false;
    while (!closing) {
      // Sleep until a request is posted: a waiting caller wakes this thread, a handoff does not (it would cost the
      // training thread a system call and, on a busy machine, its core), so look every WRITER_POLL_MS too.
      Atomics.wait(ctl, POSTED, handled, WRITER_POLL_MS);
      const m = receiveMessageOnPort(port);
      if (m === undefined) {
        // Posted but not yet visible on the port (or a timeout): look again shortly.
        if (Atomics.load(ctl, POSTED) !== handled) Atomics.wait(ctl, STOPPED, 0, 1);
        continue;
      }
      const msg = m.message as WriterMessage;
      for (const k of msg.newKeys) keys.push(k);
      try {
        if (msg.type === 'close') {
          closing = true;
          try {
            if (retry.length) write.immediate(retry.splice(0));
          } finally {
            // Closed before the close is acknowledged: the main thread's connection is then the file's last one
            // in this process, so its close checkpoints and removes the -wal and -shm files as before.
            db = null;
            conn.close();
          }
        } else {
          const todo = retry.length ? [...retry, msg] : [msg];
          try {
            write.immediate(todo);
            retry.length = 0;
          } catch (e) {
            // The rows live in the main thread's shared buffer, which it reuses once this request is handled:
            // a handoff kept for a retry keeps a copy.
            if (!msg.sync) {
              retry.push({ ...msg, keyIds: msg.keyIds.slice(0, msg.n), steps: msg.steps.slice(0, msg.n),
                values: msg.values.slice(0, msg.n), walls: msg.walls.slice(0, msg.n) });
            }
            throw e;
          }
        }
      } catch (e) {
        port.postMessage({ seq: msg.seq, error: (e as Error).message } satisfies WriterReply);
      }
      handled++;
      Atomics.store(ctl, HANDLED, handled);
      Atomics.notify(ctl, HANDLED);
    }
  } catch (e) {
    port.postMessage({ seq: -1, error: `the metric writer stopped: ${(e as Error).message}` } satisfies WriterReply);
  } finally {
    try {
      db?.close();
    } catch {
      // already closed or never opened
    }
    Atomics.store(ctl, STOPPED, 1);
    Atomics.notify(ctl, HANDLED);
    port.close();
  }
}

if (workerData && (workerData as { modalabTrackingWriter?: boolean }).modalabTrackingWriter) main(workerData as WriterData);
