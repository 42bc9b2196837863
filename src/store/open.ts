/**
 * The backend, picked from the configuration: SQLite (store/sqlite/) for a path, PostgreSQL
 * (store/postgres/) for a postgres:// URL. Each implements types.ts.
 */
import { existsSync } from 'node:fs';
import type { Config } from '../config/config.js';
import { lockInstance as lockSqlite } from './sqlite/instance.js';
import { sqliteStaging } from './sqlite/scratch.js';
import { SqliteStore } from './sqlite/store.js';
import type { InstanceLock, Staging, Store } from './types.js';

/** `readonly`: for commands that promise to change nothing; the database must exist. */
export async function openStore(config: Pick<Config, 'db' | 'file'>, opts: { readonly?: boolean } = {}): Promise<Store> {
  if (config.db.kind === 'sqlite') return new SqliteStore(config.db.path, opts);
  // Loaded only where it is used: node-postgres costs a SQLite start time for nothing.
  const { openPostgres } = await import('./postgres/store.js');
  return openPostgres(config.db, { ...opts, owner: config.file });
}

/**
 * Staging without an open database (inboxd check, inboxd pack): always a scratch SQLite file, whatever
 * the backend, as nothing staged there is ever committed.
 */
export function stagingFor(): Staging {
  return sqliteStaging;
}

/**
 * SQLite: one inboxd at a time per database, per work directory and per root (sqlite/instance.ts); a
 * DB_BUSY means an inboxd of this very configuration is running (replay hands over to it).
 * PostgreSQL: several instances may share the database and the root; each partner is worked by the
 * holder of its lease (postgres/leases.ts, Store.leases), so there is nothing to lock as a whole.
 */
export async function lockInstance(config: Pick<Config, 'file' | 'database' | 'db' | 'root' | 'workDir'>): Promise<InstanceLock> {
  return config.db.kind === 'postgres' ? { release: () => {} } : lockSqlite(config);
}

/** Whether the database exists at all: read-only commands open none that does not, and create none. */
export async function databaseExists(config: Pick<Config, 'db'>): Promise<boolean> {
  if (config.db.kind === 'sqlite') return existsSync(config.db.path);
  const { openPostgres } = await import('./postgres/store.js');
  const store = await openPostgres(config.db, { readonly: true });
  try {
    return await store.initialized();
  } finally {
    await store.close();
  }
}
