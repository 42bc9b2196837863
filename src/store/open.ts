/**
 * The backend, picked from the configuration: today always SQLite (store/sqlite/). A second backend is
 * one more branch in each of these, and its own folder implementing types.ts.
 */
import { existsSync } from 'node:fs';
import type { Config } from '../config/config.js';
import { lockInstance as lockSqlite } from './sqlite/instance.js';
import { sqliteStaging } from './sqlite/scratch.js';
import { SqliteStore } from './sqlite/store.js';
import type { InstanceLock, Staging, Store } from './types.js';

/** `readonly`: for commands that promise to change nothing; the database must exist. */
export async function openStore(config: Pick<Config, 'database'>, opts: { readonly?: boolean } = {}): Promise<Store> {
  return new SqliteStore(config.database, opts);
}

/** Staging without an open database (inboxd check, inboxd pack; without a configuration: the embedded default). */
export function stagingFor(_config?: Pick<Config, 'database'>): Staging {
  return sqliteStaging;
}

/**
 * One inboxd at a time per database, per work directory and per root (sqlite/instance.ts). A DB_BUSY
 * means an inboxd of this very configuration is running (replay hands over to it).
 */
export function lockInstance(config: Pick<Config, 'file' | 'database' | 'root' | 'workDir'>): Promise<InstanceLock> {
  return lockSqlite(config);
}

/** Whether the database exists at all: read-only commands open none that does not, and create none. */
export function databaseExists(config: Pick<Config, 'database'>): boolean {
  return existsSync(config.database);
}
