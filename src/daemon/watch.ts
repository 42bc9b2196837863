/**
 * The watcher: chokidar on every partner's inbox; any file appearing or changing asks for a sweep of
 * that partner. It only ever hastens a sweep: the scheduled sweep lists every inbox as well, so an
 * event lost by the watcher (inotify overflow, a network filesystem) delays a delivery but never loses it.
 */
import { dirname } from 'node:path';
import chokidar, { type FSWatcher } from 'chokidar';

export interface Watched {
  close(): Promise<void>;
}

export function watchInboxes(inboxes: ReadonlyMap<string, string>, onActivity: (partner: string) => void, onError: (err: unknown) => void): Watched {
  const watcher: FSWatcher = chokidar.watch([...inboxes.keys()], { ignoreInitial: true, depth: 0, persistent: true, followSymlinks: false });
  const notify = (path: string) => {
    const partner = inboxes.get(dirname(path));
    if (partner) onActivity(partner);
  };
  watcher.on('add', notify).on('change', notify).on('error', onError);
  // A file that arrived during the watcher's initial scan raises no event: look once it is ready.
  watcher.on('ready', () => new Set(inboxes.values()).forEach(onActivity));
  return { close: () => watcher.close() };
}
