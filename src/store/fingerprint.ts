/**
 * What a delivery that failed for a reason of ours is known by between attempts (the attempt ledger):
 * its partner, its data file's name and a fingerprint of its files as they sit on disk (name, inode,
 * size, modification time of each). Its SHA-256 would need the file read, which is what the backoff is
 * there to spare; the fingerprint costs one lstat per file. Inode and modification time survive our own
 * renames (claim, put back); the change time does not, a put-back changes it. A new upload under the
 * same name is a new file (another inode): it starts afresh.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Attempts, Failure } from './types.js';

/** The fingerprint of a delivery's files in `dir` (the inbox, or its working directory: the same inodes). */
export async function fingerprint(dir: string, files: readonly string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const name of files) {
    const st = await fsp.lstat(join(dir, name), { bigint: true });
    hash.update(`${name}\0${st.ino}\0${st.size}\0${st.mtimeNs}\n`);
  }
  return hash.digest('hex');
}

/** The count after a failed attempt: another fingerprint than the one stored is another file, counted afresh. */
export function nextAttempts(before: Attempts | undefined, fingerprint: string, failure: Failure, delayMs: (attempts: number) => number, now: Date): Attempts {
  const same = before?.fingerprint === fingerprint;
  const attempts = same ? before.attempts + 1 : 1;
  return {
    fingerprint, attempts, nextAt: now.getTime() + delayMs(attempts), code: failure.code, error: failure.error,
    deliveryIds: [...(same ? before.deliveryIds : []), failure.deliveryId],
  };
}
