/**
 * The claim step: a delivery's files are renamed out of the inbox into a private working directory
 * named for the delivery id. From then on the partner cannot change or remove them by name, and a
 * crash leaves them where startup recovery finds them.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { ensureDir, moveNoClobber } from './fsx.js';

/** Files of ours inside a working directory, never a partner's. */
export const INTERNAL_PREFIX = '.inboxd-';

export async function claim(inbox: string, workRoot: string, id: string, files: readonly string[]): Promise<string | undefined> {
  const dir = join(workRoot, id);
  await ensureDir(dir, 0o700);
  const moved: string[] = [];
  for (const name of files) {
    try {
      await fsp.rename(join(inbox, name), join(dir, name));
      moved.push(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // The partner renamed or removed it meanwhile: give back what was taken and try again later.
      await release(inbox, dir);
      return undefined;
    }
  }
  // No fsync: whether a power cut keeps the rename or not, recovery finds the files in one of the two
  // places, and nothing has been committed or answered yet.
  return dir;
}

/**
 * Puts an unfinished delivery back into the inbox, to be taken again later. A file the partner has
 * meanwhile uploaded again under the same name wins; our copy then stays in the working directory
 * (reported, never deleted). Returns the names that could not go back.
 */
export async function release(inbox: string, dir: string): Promise<string[]> {
  const stuck: string[] = [];
  for (const name of await fsp.readdir(dir)) {
    if (name.startsWith(INTERNAL_PREFIX)) continue;
    if (!(await moveNoClobber(join(dir, name), join(inbox, name)))) stuck.push(name);
  }
  if (stuck.length === 0) await fsp.rm(dir, { recursive: true, force: true });
  return stuck;
}
