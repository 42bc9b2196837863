/**
 * The claim step: a delivery's files are renamed out of the inbox into a private working directory
 * named for the delivery id. From then on the partner cannot change or remove them by name, and a
 * crash leaves them where startup recovery finds them.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ensureDir, exists, moveNoClobber, openRegular } from './fsx.js';

/** Files of ours inside a working directory, never a partner's. */
export const INTERNAL_PREFIX = '.inboxd-';

export interface ClaimOptions {
  /** the inbox names, as bytes, of files whose names are not UTF-8: here they get the escaped name */
  bytes?: ReadonlyMap<string, Buffer>;
  /**
   * Files to be read and made read-only: one with another link (made after the inbox was listed)
   * shares its inode with a file elsewhere, so all are given back, to wait and be judged again.
   */
  soleLinks?: boolean;
}

export async function claim(inbox: string, workRoot: string, id: string, files: readonly string[], opts: ClaimOptions = {}): Promise<string | undefined> {
  const dir = join(workRoot, id);
  await ensureDir(dir, 0o700);
  for (const name of files) {
    const raw = opts.bytes?.get(name);
    try {
      await fsp.rename(raw ? Buffer.concat([Buffer.from(`${inbox}/`), raw]) : join(inbox, name), join(dir, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // The partner renamed or removed it meanwhile: give back what was taken and try again later.
      await release(inbox, dir);
      return undefined;
    }
  }
  // Once here, no new link can be made: the partner cannot name the file any more.
  if (opts.soleLinks && (await Promise.all(files.map((n) => fsp.lstat(join(dir, n))))).some((st) => st.nlink > 1)) {
    await release(inbox, dir);
    return undefined;
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

/** Marks a working directory holding a replay's copies (replay.ts). */
export const REPLAY_MARK = `${INTERNAL_PREFIX}replay.json`;

/**
 * A replay's claim: COPIES of the evidence (archive/ or error/) into a fresh working directory, so the
 * evidence itself is never moved or changed. Each source is opened without following symlinks (error/
 * is writable by the partner) and hashed while it is copied. Returns the directory and each copy's SHA-256.
 */
export async function claimCopies(workRoot: string, id: string, sources: readonly { name: string; path: string }[], mark: Record<string, unknown>): Promise<{ dir: string; sha256: Map<string, string> }> {
  const dir = join(workRoot, id);
  await ensureDir(dir, 0o700);
  await fsp.writeFile(join(dir, REPLAY_MARK), JSON.stringify({ pid: process.pid, ...mark }), { flag: 'wx', mode: 0o600 });
  const sha256 = new Map<string, string>();
  try {
    for (const s of sources) sha256.set(s.name, await copyHashed(s.path, join(dir, s.name)));
  } catch (err) {
    await fsp.rm(dir, { recursive: true, force: true });
    throw err;
  }
  return { dir, sha256 };
}

/** Copies a regular file (never through a symlink) to a new private file, synced; returns its SHA-256. */
async function copyHashed(from: string, to: string): Promise<string> {
  const hash = createHash('sha256');
  const src = await openRegular(from);
  try {
    const dst = await fsp.open(to, 'wx', 0o600);
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    // The write stream owns `dst`: it syncs (flush) and closes it, on success and on error alike.
    await pipeline(src.createReadStream({ autoClose: false }), tap, dst.createWriteStream({ flush: true }));
  } finally {
    await src.close();
  }
  return hash.digest('hex');
}

/** A working directory of a replay's copies: cut short before its commit, it is dropped, never released to the inbox. */
export async function isReplayCopy(dir: string): Promise<boolean> {
  return exists(join(dir, REPLAY_MARK));
}
