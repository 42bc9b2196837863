/**
 * One inboxd at a time per PostgreSQL schema: a session advisory lock, held on a connection of its own
 * for as long as the process runs; the server drops it when the connection goes, however the process
 * ended. Plus the work directory and root locks every backend takes (sqlite/instance.ts).
 */
import pg from 'pg';
import type { PostgresConfig } from '../../config/database.js';
import type { Config } from '../../config/config.js';
import { InboxdError } from '../../errors.js';
import type { InstanceLock } from '../types.js';
import { clientConfig, connectOptions, pgError } from './db.js';
import { lockLocal } from '../sqlite/instance.js';

export async function lockPostgres(c: PostgresConfig, config: Pick<Config, 'file' | 'root' | 'workDir'>): Promise<InstanceLock> {
  const client = new pg.Client(clientConfig({ ...connectOptions(c), applicationName: 'inboxd instance lock' }));
  try {
    await client.connect();
    client.on('error', () => {}); // a lost connection loses the lock; the commit's own checks still hold
    const got = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock(hashtextextended('inboxd instance ' || $1, 0)) AS ok", [c.schema]);
    if (!got.rows[0]?.ok) throw new InboxdError('DB_BUSY', `another inboxd is running on ${c.url} schema ${c.schema} (it holds the schema's advisory lock); try again when it has finished`);
  } catch (err) {
    await client.end().catch(() => {});
    throw pgError(c.url, err);
  }
  try {
    const local = await lockLocal(config);
    return { release: () => (local.release(), void client.end().catch(() => {})) };
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
}
