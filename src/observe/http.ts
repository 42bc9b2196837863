/**
 * The HTTP listener for operators (off unless `http.listen` is set; loopback unless allowed):
 *   /metrics  Prometheus text format
 *   /healthz  the process is alive and its event loop keeps up (503 when the loop's p99 delay over the
 *             last 10 s exceeds 1 s: the daemon is stuck or starved, restarting may help)
 *   /readyz   the daemon can do its work: startup recovery done, database open with room on its
 *             disk, every partner directory writable (503 naming what is not; restarting does not
 *             help, fixing does)
 *   /...      the operations page (web/), when `http.ui` is on: it answers every other path
 * GET and HEAD only, but for the page. Over TLS when certificate and key are given. Handlers' failures
 * answer 500 and never reach the daemon.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { HttpConfig } from '../config/config.js';

export interface Readiness {
  ready: boolean;
  /** check -> 'ok' or what is wrong */
  checks: Record<string, string>;
}

export interface HttpHandlers {
  metrics(): Promise<{ contentType: string; body: string }>;
  ready(): Promise<Readiness>;
  /** every other path (the operations page), any method */
  ui?: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
}

export interface HttpServer {
  host: string;
  port: number;
  close(): Promise<void>;
}

const MAX_LOOP_DELAY_MS = 1000;

export async function startHttp(cfg: HttpConfig, handlers: HttpHandlers, tls?: { cert: Buffer; key: Buffer }): Promise<HttpServer> {
  const started = Date.now();
  const loop = monitorEventLoopDelay({ resolution: 20 });
  loop.enable();
  let window = { p99: 0, max: 0 };
  const sampler = setInterval(() => {
    window = { p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 };
    loop.reset();
  }, 10_000).unref();

  const routes: Record<string, (res: ServerResponse) => Promise<void>> = {
    '/metrics': async (res) => {
      const m = await handlers.metrics();
      send(res, 200, m.contentType, m.body);
    },
    '/healthz': async (res) => {
      const current = Math.max(window.p99, loop.count > 0 ? loop.percentile(99) / 1e6 : 0);
      const ok = current <= MAX_LOOP_DELAY_MS;
      json(res, ok ? 200 : 503, { status: ok ? 'ok' : 'event loop stalled', uptime_s: Math.round((Date.now() - started) / 1000), event_loop_delay_ms: { p99: Math.round(current), max: Math.round(Math.max(window.max, loop.max / 1e6)) } });
    },
    '/readyz': async (res) => {
      const r = await handlers.ready();
      json(res, r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not ready', checks: r.checks });
    },
  };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const route = routes[new URL(req.url ?? '/', 'http://x').pathname];
    if (!route && handlers.ui) return void handlers.ui(req, res).catch((err: unknown) => send(res, 500, 'text/plain', `error: ${String(err)}\n`));
    if (!route) return send(res, 404, 'text/plain', 'not found: /metrics, /healthz, /readyz\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'GET or HEAD\n', { allow: 'GET, HEAD' });
    route(res).catch((err: unknown) => send(res, 500, 'text/plain', `error: ${String(err)}\n`));
  };
  const server = tls ? createTlsServer({ cert: tls.cert, key: tls.key }, handle) : createServer(handle);
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port, cfg.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err: unknown) => {
    // A listener that never started takes nothing with it.
    clearInterval(sampler);
    loop.disable();
    throw err;
  });
  const address = server.address() as AddressInfo;
  return {
    host: address.address,
    port: address.port,
    close: () => new Promise<void>((resolve) => {
      clearInterval(sampler);
      loop.disable();
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

function send(res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) return void res.end();
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers }).end(res.req.method === 'HEAD' ? undefined : body);
}

function json(res: ServerResponse, status: number, body: unknown): void {
  send(res, status, 'application/json', `${JSON.stringify(body)}\n`);
}
