/**
 * One inboxd at a time per database, per work directory and per root. A second process (a cron
 * `run --once` overlapping a manual one, the daemon, or another configuration on the same partner tree)
 * would take the first one's claimed deliveries for interrupted ones and put them back into the inbox,
 * take deliveries out from under it, and apply a flow's sequences out of order or twice.
 *
 * Every lock is one the kernel drops when the process ends, however it ends, so there is never a stale
 * lock to clean up by hand:
 * - the database and the work directory: an exclusive SQLite transaction held open on a side file
 *   (`<database>.lock`, `<work_dir>/.inboxd.lock`; the work directory is ours, never a partner's);
 * - the root: an abstract Unix socket named for the root directory's device and inode, so every spelling
 *   of the path and every configuration meet the same name, and no file is needed in a root the daemon
 *   may not write (sshd's chroot wants it owned by root). A second inboxd asks the holder who it is.
 */
import { mkdirSync, statSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { openDatabase } from './driver.js';
import type { Config } from '../../config/config.js';
import { dbError, guard } from './db-errors.js';
import { InboxdError } from '../../errors.js';
import type { InstanceLock } from '../types.js';

/** Who holds a root: told to a second inboxd that asks. */
interface Holder {
  pid: number;
  config: string;
  lock: string;
}

export const WORK_LOCK = '.inboxd.lock';

/** Database first: a DB_BUSY means an inboxd of this very configuration is running (replay hands over to it). */
export async function lockInstance(config: Pick<Config, 'file' | 'database' | 'root' | 'workDir'>): Promise<InstanceLock> {
  const held: Array<() => void> = [];
  const release = () => held.splice(0).reverse().forEach((fn) => fn());
  try {
    held.push(lockFile(`${config.database}.lock`, (path) => new InboxdError('DB_BUSY', `another inboxd is running on ${config.database} (it holds ${path}); try again when it has finished`)));
    const local = await lockLocal(config);
    held.push(() => local.release());
  } catch (err) {
    release();
    throw err;
  }
  return { release };
}

/** The work directory and the root, whatever the database. */
export async function lockLocal(config: Pick<Config, 'file' | 'root' | 'workDir'>): Promise<InstanceLock> {
  const work = join(config.workDir, WORK_LOCK);
  const releaseWork = lockFile(work, (path) => new InboxdError('INSTANCE_BUSY', `another inboxd works in ${config.workDir} (it holds ${path}); two on one work directory put back each other's deliveries: stop it, or give this configuration a work_dir of its own`));
  try {
    const releaseRoot = await lockRoot(config.root, { pid: process.pid, config: config.file, lock: work });
    return { release: () => (releaseRoot(), releaseWork()) };
  } catch (err) {
    releaseWork();
    throw err;
  }
}

function lockFile(path: string, busy: (path: string) => InboxdError): () => void {
  mkdirSync(dirname(path), { recursive: true });
  const db = guard(path, () => openDatabase(path, { timeout: 0 }));
  try {
    // No journal file: the lock is the file's own lock, and takes no disk space (a start on a full disk gets as far as its deliveries).
    db.pragma('journal_mode = MEMORY');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if (!String((err as { code?: string }).code).startsWith('SQLITE_BUSY')) throw dbError(path, err);
    throw busy(path);
  }
  return () => db.close();
}

async function lockRoot(root: string, holder: Holder): Promise<() => void> {
  if (process.platform !== 'linux') return () => {}; // abstract sockets are Linux's
  const { dev, ino } = statSync(root);
  const name = `\0inboxd-root-${dev}-${ino}`;
  const server = createServer((sock) => sock.end(JSON.stringify(holder)));
  try {
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(name, resolve));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    const other = await askHolder(name);
    const who = other ? `pid ${other.pid}, configuration ${other.config}; it holds ${other.lock}` : 'it did not say who it is';
    throw new InboxdError('INSTANCE_BUSY', `another inboxd works on root ${root} (${who}); two on one root take each other's deliveries: stop it, or give this configuration a root of its own`);
  }
  server.unref(); // the lock never keeps the process alive
  return () => server.close();
}

function askHolder(name: string): Promise<Holder | undefined> {
  return new Promise((resolve) => {
    let text = '';
    const sock = connect(name);
    sock.setTimeout(1000, () => sock.destroy());
    sock.setEncoding('utf8').on('data', (d: string) => (text += d)).on('error', () => {}).on('close', () => {
      try {
        resolve(JSON.parse(text) as Holder);
      } catch {
        resolve(undefined);
      }
    });
  });
}
