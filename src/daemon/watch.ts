/**
 * The watcher: chokidar on every partner's inbox; any file appearing or changing asks for a sweep of
 * that partner. It only ever hastens a sweep: the scheduled sweep lists every inbox as well, so an
 * event lost by the watcher (inotify overflow, a network filesystem) delays a delivery but never loses it.
 *
 * It also tells a file renamed in from a temporary name (the usual upload: write `x.csv.part`, rename it
 * to `x.csv`), which is complete and needs no settle time, from one being written in place under its
 * final name, which does. A rename shows as two directory events in a row, one for each name (rename(2):
 * moved-from, moved-to; OpenSSH's link-then-unlink: the new name, then the old), where a file written
 * in place shows its own name only. Such a pair, the temporary name gone and the final name a file with
 * one link, is reported with the file's inode and change time: the sweep skips the settle time for that
 * file only while both are unchanged, so a write after the rename makes it settle as any other.
 */
import { promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import chokidar, { type FSWatcher } from 'chokidar';
import type { RenamedIn } from '../pipeline/discover.js';
import { isTempName } from '../pipeline/naming.js';

export interface Watched {
  close(): Promise<void>;
}

export interface WatchHandlers {
  /** something changed in the partner's inbox */
  activity: (partner: string) => void;
  /** `name` was renamed into the partner's inbox from a temporary name: complete */
  renamed: (partner: string, name: string, file: RenamedIn) => void;
  error: (err: unknown) => void;
  /** the inboxes are being watched: events from now on are seen */
  ready?: () => void;
}

/** The two events of one rename come together; a pair further apart is no rename. */
const PAIR_MS = 100;

export function watchInboxes(inboxes: ReadonlyMap<string, string>, tempPatterns: readonly RegExp[], on: WatchHandlers): Watched {
  const watcher: FSWatcher = chokidar.watch([...inboxes.keys()], { ignoreInitial: true, depth: 0, persistent: true, followSymlinks: false });
  const pairs = renamePairs(tempPatterns);
  const notify = (path: string) => {
    const inbox = dirname(path);
    const partner = inboxes.get(inbox);
    // A temporary name is never read: its writes are no reason to sweep, and would put off one due now.
    if (!partner || isTempName(basename(path), tempPatterns)) return;
    const from = pairs.renamedFrom(inbox, basename(path));
    if (!from) return on.activity(partner);
    void renamedIn(join(inbox, from), path).then((file) => (file ? on.renamed(partner, basename(path), file) : on.activity(partner)), () => on.activity(partner));
  };
  watcher.on('raw', (event, name, details) => {
    const inbox = (details as { watchedPath?: string } | undefined)?.watchedPath;
    if (event === 'rename' && inbox && inboxes.has(inbox)) pairs.event(inbox, name);
  });
  watcher.on('add', notify).on('change', notify).on('error', on.error);
  // A file that arrived during the watcher's initial scan raises no event: look once it is ready.
  watcher.on('ready', () => {
    new Set(inboxes.values()).forEach(on.activity);
    on.ready?.();
  });
  return { close: () => watcher.close() };
}

/**
 * Remembers, per inbox, the last directory event, and pairs each with the one before: a temporary name
 * and a final name it contains (`x.csv.part`, `.x.csv`, `x.csv.filepart`) within PAIR_MS of each other.
 */
function renamePairs(tempPatterns: readonly RegExp[]) {
  const last = new Map<string, { name: string; at: number }>();
  const found = new Map<string, { from: string; at: number }>();
  return {
    event(inbox: string, name: string): void {
      const now = Date.now();
      for (const [key, pair] of found) if (now - pair.at > PAIR_MS * 10) found.delete(key); // never reported by chokidar
      const before = last.get(inbox);
      last.set(inbox, { name, at: now });
      if (!before || now - before.at > PAIR_MS) return;
      const [temp, final] = isTempName(name, tempPatterns) ? [name, before.name] : [before.name, name];
      const key = join(inbox, final);
      // The first pair wins: the next upload's temporary name, created just after, is no second one.
      if (final !== temp && temp.includes(final) && isTempName(temp, tempPatterns) && !isTempName(final, tempPatterns) && !found.has(key)) found.set(key, { from: temp, at: now });
    },
    /** the temporary name `name` was just renamed from, once */
    renamedFrom(inbox: string, name: string): string | undefined {
      const key = join(inbox, name);
      const pair = found.get(key);
      found.delete(key);
      return pair?.from;
    },
  };
}

/** The final name's inode and change time, if the rename is over: the temporary name gone, the file with one link. */
async function renamedIn(temp: string, final: string): Promise<RenamedIn | undefined> {
  const gone = await fsp.lstat(temp).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
  if (!gone) return undefined;
  const st = await fsp.lstat(final);
  return st.isFile() && st.nlink === 1 ? { ino: st.ino, ctimeMs: st.ctimeMs } : undefined;
}
