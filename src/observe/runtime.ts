/**
 * What the daemon runs for operators beside the delivery loop: the HTTP listener (metrics, health,
 * readiness), the delivery observer feeding the metrics, and the prune schedule. The daemon starts it
 * once its store is open and stops it before closing the store.
 */
import { constants, promises as fsp } from 'node:fs';
import cron, { type ScheduledTask } from 'node-cron';
import { dirname } from 'node:path';
import { type Config, configError, type HttpConfig } from '../config/config.js';
import { InboxdError } from '../errors.js';
import { type HttpServer, type Readiness, startHttp } from './http.js';
import type { Logger } from '../log.js';
import { metrics } from './metrics.js';
import type { DeliveryObserver } from '../observers.js';
import { prune } from '../ops/prune.js';
import { webData } from '../web/data.js';
import { webHandler } from '../web/routes.js';
import type { Store } from '../store/types.js';

export interface OpsRuntime {
  observer: DeliveryObserver;
  stop(): Promise<void>;
}

/** `started`: startup recovery is done and the daemon is not stopping. */
export async function startOps(config: Config, store: Store, log: Logger, started: () => boolean): Promise<OpsRuntime> {
  metrics.attach(store, config, async () => (await readiness(config, store, started)).ready);
  let http: HttpServer | undefined;
  if (config.http) {
    metrics.enableDefaults();
    const { ui, tls } = config.http;
    const keys = tls && { cert: await readTls(config, 'cert', tls.certFile), key: await readTls(config, 'key', tls.keyFile) };
    http = await startHttp(config.http, {
      metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      ready: () => readiness(config, store, started),
      ui: ui && webHandler(webData(store, config), log, { usersFile: ui.usersFile, tls: !!tls }),
    }, keys).catch((err: unknown) => {
      throw listenError(config, config.http!, err);
    });
    log.info({ host: http.host, port: http.port, tls: !!tls }, `http${tls ? 's' : ''} listening on ${http.host}:${http.port}: /metrics /healthz /readyz${ui ? ', the operations page at /' : ''}`);
  }
  let pruning: Promise<void> | undefined;
  const runPrune = async () => {
    try {
      const r = await prune(store, config);
      log.info({ files: r.files.length, rows: r.rows, event: 'prune' }, 'prune done');
    } catch (err) {
      log.error({ err: String(err), event: 'prune' }, 'prune failed; it runs again at the next scheduled time');
    }
  };
  const task: ScheduledTask | undefined = config.pruneSchedule
    ? cron.schedule(config.pruneSchedule, () => {
      if (pruning || !started()) return;
      pruning = runPrune().finally(() => (pruning = undefined));
    }, { name: 'inboxd-prune' })
    : undefined;
  return {
    observer: metrics.observer(),
    stop: async () => {
      await task?.stop();
      await pruning; // the store is closed after this
      await http?.close();
    },
  };
}

/**
 * While the daemon waits for its database at start: health and readiness only, /readyz answering 503
 * with the reason, so probes and operators see why it is not ready. Closed before startOps listens.
 */
export async function listenWaiting(config: Config, reason: () => string): Promise<HttpServer | undefined> {
  if (!config.http) return undefined;
  const { tls } = config.http;
  const keys = tls && { cert: await readTls(config, 'cert', tls.certFile), key: await readTls(config, 'key', tls.keyFile) };
  return startHttp(config.http, {
    metrics: async () => ({ contentType: 'text/plain; version=0.0.4', body: '# inboxd is waiting for its database\ninboxd_ready 0\n' }),
    ready: async () => ({ ready: false, checks: { startup: 'waiting for the database', database: `not usable: ${reason()}` } }),
  }, keys).catch((err: unknown) => {
    throw listenError(config, config.http!, err);
  });
}

/** A port in use may come free (an earlier inboxd still stopping): try again (75). One we may not have is configuration (78). */
function listenError(config: Config, http: HttpConfig, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  const at = `${http.host}:${http.port}`;
  if (code === 'EADDRINUSE') return new InboxdError('IO_ERROR', `http.listen: ${at} is in use by another process; try again once it is free`, { cause: code }, { cause: err });
  if (code === 'EACCES' || code === 'EADDRNOTAVAIL') return configError(config.file, 'http.listen', `cannot listen on ${at} (${code})`);
  return err;
}

function readTls(config: Config, key: 'cert' | 'key', file: string): Promise<Buffer> {
  return fsp.readFile(file).catch((err: NodeJS.ErrnoException) => {
    throw configError(config.file, `http.tls.${key}`, `${file}: ${err.code ?? err.message}`);
  });
}

/** Less free space than this on the database's file system and a commit may not fit: not ready. */
const MIN_FREE_BYTES = 8 * 1024 * 1024;

/** The embedded database's file system has room for a commit. */
async function roomFor(path: string): Promise<string> {
  const dir = dirname(path);
  const { bavail, bsize } = await fsp.statfs(dir);
  return bavail * bsize >= MIN_FREE_BYTES ? 'ok' : `disk full: ${bavail * bsize} bytes free on the file system of ${dir}; at least ${MIN_FREE_BYTES} are needed`;
}

/** Ready only when every part of the work can be done: no guessing from the process being alive. */
export async function readiness(config: Config, store: Store, started: () => boolean): Promise<Readiness> {
  const checks: Record<string, string> = {};
  checks.startup = started() ? 'ok' : 'startup recovery not finished, or stopping';
  try {
    await store.ping();
    checks.database = config.db.kind === 'sqlite' ? await roomFor(config.db.path) : 'ok';
  } catch (err) {
    checks.database = `not usable: ${(err as Error).message}`;
  }
  for (const p of config.partners) {
    const bad: string[] = [];
    for (const dir of [p.dirs.inbox, p.dirs.outbox, p.dirs.archive, p.dirs.error, p.dirs.work]) {
      await fsp.access(dir, constants.W_OK).catch((err: NodeJS.ErrnoException) => bad.push(`${dir}: ${err.code ?? err.message}`));
    }
    checks[`partner ${p.id}`] = bad.length ? `not writable: ${bad.join('; ')}` : 'ok';
  }
  return { ready: Object.values(checks).every((v) => v === 'ok'), checks };
}
