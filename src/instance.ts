/**
 * One inboxd at a time per database. A second process (a cron `run --once` overlapping a manual one,
 * or the daemon) would take the first one's claimed deliveries for interrupted ones and put them back
 * into the inbox, and apply a flow's sequences out of order. The lock is an exclusive SQLite
 * transaction held open on a side file: the OS drops it when the process ends, however it ends, so
 * there is never a stale lock to clean up by hand.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { InboxdError } from './errors.js';

export interface InstanceLock {
  release(): void;
}

export function lockInstance(database: string): InstanceLock {
  const path = `${database}.lock`;
  mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path, { timeout: 0 });
  try {
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if (!String((err as { code?: string }).code).startsWith('SQLITE_BUSY')) throw err;
    throw new InboxdError('DB_BUSY', `another inboxd is running on ${database} (it holds ${path}); try again when it has finished`);
  }
  return { release: () => db.close() };
}
