/**
 * `modalab ui`: a local web server over a tracking database, read-only (see store.ts), node:http only.
 *
 *   const ui = await startDashboard({ db: 'runs/modalab.db', port: 8765 });   // ui.url: http://127.0.0.1:8765/
 *   ...
 *   await ui.close();
 *
 * Routes (GET and HEAD only):
 *   /                            runs table (filters, sort, live status)        /api/runs?...
 *   /runs/:id                    one run: config, parent/children, artifacts, curves   /api/runs/:id
 *   /compare?runs=1,2            curves overlaid, parallel coordinates           /api/runs/:id/metrics?keys=&since=
 *   /static/plotly.min.js, /static/plots.js, /static/dashboard.js
 *
 * Failure policy: a malformed query is a 400 page (or JSON error under /api), an unknown run or path a 404, and
 * anything a handler throws a 500 for that request only; the server keeps serving. Requests whose Host header
 * is not the address it is bound to are refused (403), which stops DNS-rebinding pages from reading the runs.
 */
import * as fs from 'fs';
import * as http from 'http';
import type { AddressInfo } from 'net';
import { plotlyPath } from '../plots/show';
import {
  HttpError, comparePayload, metricsPayload, parseId, parseRunIds, parseRunsRequest, runDetail, runsPayload,
} from './api';
import { CLIENT_JS, plotsBundle } from './client';
import { comparePage, errorPage, runPage, runsPage } from './pages';
import { Store } from './store';

export const DEFAULT_PORT = 8765;
export const DEFAULT_HOST = '127.0.0.1';

export interface DashboardOptions {
  /** The tracking database (must exist); opened read-only. */
  db: string;
  /** 0 picks a free port. Default 8765. */
  port?: number;
  /** Default 127.0.0.1 (this machine only). */
  host?: string;
  /**
   * Extra GET routes by exact path, tried before the built-in ones (tests use one that throws, to check that a
   * failing handler gives a 500 and the server keeps serving).
   */
  extraRoutes?: Record<string, (req: http.IncomingMessage) => string | Promise<string>>;
  /** Where a failing request is reported; default stderr. */
  log?: (msg: string) => void;
}

export interface Dashboard {
  url: string;
  port: number;
  host: string;
  server: http.Server;
  store: Store;
  /** Stops accepting connections, closes open ones and the database. */
  close(): Promise<void>;
}

type Body = { status: number; type: string; body: string | Buffer; cache?: boolean };

const HTML = 'text/html; charset=utf-8';
const JSON_TYPE = 'application/json; charset=utf-8';
const JS = 'text/javascript; charset=utf-8';

let plotlyCache: Buffer | null = null;
function plotlyBytes(): Buffer {
  plotlyCache ??= fs.readFileSync(plotlyPath());
  return plotlyCache;
}

const LOOPBACK_NAMES = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The hostname part of a Host header ('127.0.0.1:8765' -> '127.0.0.1', '[::1]:80' -> '[::1]'). */
function hostName(h: string): string {
  return h.startsWith('[') ? h.slice(0, h.indexOf(']') + 1) : h.replace(/:\d+$/, '');
}

/** Starts the server; resolves once it listens. Throws for a missing database or a port in use. */
export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const port = opts.port ?? DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`dashboard: port must be an integer in 0..65535, got ${String(port)}`);
  const host = opts.host ?? DEFAULT_HOST;
  const log = opts.log ?? ((m: string) => process.stderr.write(m + '\n'));
  const store = Store.open(opts.db);
  const dbLabel = opts.db;
  const loopback = isLoopback(host);
  const cache = new ResponseCache(store);

  const route = async (req: http.IncomingMessage, url: URL): Promise<Body> => {
    const p = url.pathname;
    const q = url.searchParams;
    const api = p.startsWith('/api/');
    const extra = opts.extraRoutes?.[p];
    if (extra) return { status: 200, type: HTML, body: await extra(req) };
    if (p === '/' || p === '/index.html') {
      const r = parseRunsRequest(q);
      return { status: 200, type: HTML, body: runsPage(runsPayload(store, r), r, q, store.choices(), store.sweeps(), dbLabel) };
    }
    let m = /^\/runs\/([^/]+)\/?$/.exec(p);
    if (m) {
      const id = parseId(decodeURIComponent(m[1]));
      const d = runDetail(store, id);
      return { status: 200, type: HTML, body: runPage(d, store.series(id, d.metricKeys), dbLabel) };
    }
    if (p === '/compare') return { status: 200, type: HTML, body: comparePage(comparePayload(store, parseRunIds(q)), dbLabel) };
    if (api) {
      if (p === '/api/runs') return json(runsPayload(store, parseRunsRequest(q)));
      m = /^\/api\/runs\/([^/]+)(\/metrics)?\/?$/.exec(p);
      if (m) {
        const id = parseId(decodeURIComponent(m[1]));
        if (m[2]) return cache.get(req.url ?? p, () => json(metricsPayload(store, id, q)));
        return json(runDetail(store, id));
      }
      if (p === '/api/compare') return json(comparePayload(store, parseRunIds(q)));
    }
    if (p === '/static/plotly.min.js') return { status: 200, type: JS, body: plotlyBytes(), cache: true };
    if (p === '/static/plots.js') return { status: 200, type: JS, body: plotsBundle(), cache: true };
    if (p === '/static/dashboard.js') return { status: 200, type: JS, body: CLIENT_JS };
    if (p === '/favicon.ico') return { status: 204, type: 'text/plain', body: '' };
    throw new HttpError(404, `no page at ${p}`);
  };

  const server = http.createServer((req, res) => {
    void handle(req, res);
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let url: URL;
    let isApi = false;
    let out: Body;
    try {
      url = new URL(req.url ?? '/', 'http://dashboard.invalid');
      isApi = url.pathname.startsWith('/api/');
      if (loopback && !LOOPBACK_NAMES.has(hostName(req.headers.host ?? ''))) {
        throw new HttpError(403, `this dashboard answers only to ${host} (Host header ${JSON.stringify(req.headers.host ?? '')})`);
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, `${req.method} is not allowed: the dashboard is read-only`);
      out = await route(req, url);
    } catch (e) {
      const status = e instanceof HttpError ? e.status : e instanceof URIError ? 400 : 500;
      const msg = e instanceof HttpError || e instanceof URIError ? e.message : 'the request failed on the server; its error was logged';
      if (status === 500) log(`dashboard: ${req.method} ${req.url}: ${(e as Error)?.stack ?? String(e)}`);
      out = isApi ? { status, type: JSON_TYPE, body: JSON.stringify({ error: msg, status }) }
        : { status, type: HTML, body: errorPage(status, msg, dbLabel) };
    }
    if (res.headersSent || res.destroyed) return;
    const body = typeof out.body === 'string' ? Buffer.from(out.body, 'utf8') : out.body;
    res.writeHead(out.status, {
      'content-type': out.type,
      'content-length': body.length,
      'cache-control': out.cache ? 'public, max-age=3600' : 'no-store',
      'x-content-type-options': 'nosniff',
      // Scripts only from this server: an injected inline <script> would not run even if escaping failed somewhere.
      // ('unsafe-eval': plotly's WebGL traces, parcoords among them, compile code with regl's Function().)
      'content-security-policy': "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
      'referrer-policy': 'no-referrer',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
  });

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    store.close();
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EADDRINUSE') throw new Error(`dashboard: port ${port} on ${host} is in use; pick another with --port`);
    throw new Error(`dashboard: cannot listen on ${host}:${port}: ${err.message}`);
  }
  server.on('error', (e) => log(`dashboard: server error: ${e.message}`));
  const addr = server.address() as AddressInfo;
  const shown = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown}:${addr.port}/`,
    port: addr.port,
    host,
    server,
    store,
    close: () => new Promise<void>((resolve) => {
      server.close(() => {
        store.close();
        resolve();
      });
      server.closeAllConnections();
    }),
  };
}

/**
 * Curves asked for again while nothing was committed to the file are served from memory: many tabs (or a
 * sweep's worth of compare pages) polling one run cost one query per change, not one per poll. An entry is
 * used only while SQLite's data_version is unchanged and for at most MAX_AGE_MS (a run's `stale` flag depends
 * on the clock, not only on the file). Only successful answers are kept.
 */
class ResponseCache {
  static readonly MAX_AGE_MS = 1000;
  static readonly MAX_ENTRIES = 64;
  private readonly entries = new Map<string, { version: number; at: number; body: Body }>();
  constructor(private readonly store: Store) {}

  get(key: string, make: () => Body): Body {
    const version = this.store.dataVersion();
    const now = Date.now();
    const e = this.entries.get(key);
    if (e !== undefined && e.version === version && now - e.at < ResponseCache.MAX_AGE_MS) return e.body;
    const body = make();
    this.entries.delete(key);
    if (this.entries.size >= ResponseCache.MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, { version, at: now, body });
    return body;
  }
}

function json(v: unknown): Body {
  return { status: 200, type: JSON_TYPE, body: Buffer.from(JSON.stringify(v), 'utf8') };
}

