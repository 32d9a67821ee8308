// `modalab ui [--db FILE] [--port 8765] [--host 127.0.0.1]`: the read-only web dashboard over a tracking database.
import { parseArgs } from 'util';
import { DEFAULT_DB } from '../experiments/tracking';
import { DEFAULT_HOST, DEFAULT_PORT, startDashboard } from '../experiments/dashboard';

export const UI_USAGE = `usage: modalab ui [--db FILE] [--port ${DEFAULT_PORT}] [--host ${DEFAULT_HOST}]
  a web dashboard of the runs in FILE (default ${DEFAULT_DB}), read-only: runs table, run pages with live
  curves, compare page. Stop it with Ctrl-C.
  --port N    port to listen on (0: any free port)
  --host H    address to bind (default ${DEFAULT_HOST}: this machine only; anything else exposes every run,
              config and artifact path to the network, without authentication)
`;

/**
 * Starts the dashboard and resolves with the exit code once it stops (SIGINT or SIGTERM). Bad flags, a missing
 * database or a port in use reject with an Error that says which.
 */
export async function runUi(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { db: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: true,
  });
  if (values.help) {
    out(UI_USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new Error(`unexpected argument '${positionals[0]}'\n${UI_USAGE}`);
  let port = DEFAULT_PORT;
  if (values.port !== undefined) {
    port = Number(values.port);
    if (!/^\d+$/.test(values.port) || port > 65535) throw new Error(`--port must be an integer in 0..65535, got '${values.port}'`);
  }
  const host = values.host ?? DEFAULT_HOST;
  if (host === '') throw new Error('--host must not be empty');
  const ui = await startDashboard({ db: values.db ?? DEFAULT_DB, port, host });
  out(`modalab ui: ${ui.url} (read-only view of ${ui.store.file}; Ctrl-C stops)\n`);
  if (!/^(127\.\d+\.\d+\.\d+|localhost|::1)$/.test(host)) {
    process.stderr.write(`modalab ui: warning: bound to ${host}: anyone who can reach this address can read every run (no authentication)\n`);
  }
  return new Promise<number>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void ui.close().then(() => resolve(0));
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
