/**
 * File-system primitives with the durability and safety guarantees the pipeline relies on.
 * A rename is only durable once the directory is fsynced; a written file only once the file is.
 */
import { constants, promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { reject } from '../errors.js';
import { visible } from '../visible.js';

/**
 * Opens a delivered file for reading without following symlinks (a partner can create a symlink to
 * anything over SFTP) and insists on a regular file. Hard links are judged before: at discovery
 * (discover.ts) and once more after the claim (claim.ts).
 */
export async function openRegular(path: string): Promise<fsp.FileHandle> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw reject('NOT_A_REGULAR_FILE', `${visible(basename(path))} is a symbolic link, not a file`);
    throw err;
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw reject('NOT_A_REGULAR_FILE', `${visible(basename(path))} is not a regular file`);
  }
  return fh;
}

/** Reads a small companion file (sidecar, manifest) safely, refusing anything over `max` bytes. */
export async function readSmall(path: string, max: number): Promise<string> {
  const fh = await openRegular(path);
  try {
    const { size } = await fh.stat();
    if (size > max) throw reject('LIMIT_EXCEEDED', `${visible(basename(path))} is ${size} bytes; at most ${max} are accepted`);
    return (await fh.readFile()).toString('utf8');
  } finally {
    await fh.close();
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes a file under a temporary name, syncs it, renames it into place and syncs the directory.
 *
 * The temporary file is made in the target directory, so that it gets the directory's group: a setgid
 * outbox/ hands the partner's group to every answer, which is how the partner may read it (a file
 * renamed in from elsewhere keeps the group it was made with). A partner can write to that directory
 * too, so the temporary name carries `tag`, which it cannot know beforehand (the delivery id, made
 * public only by the answer), and it is created exclusively, never through a link. Whatever is in the
 * way under that name (our own leftover of a write cut short, or something planted) is removed first.
 */
export async function writeAtomic(path: string, data: string, mode = 0o644, tag = String(process.pid)): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${tag}.tmp`);
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  const fh = await fsp.open(tmp, flags, mode).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
    await fsp.unlink(tmp);
    return fsp.open(tmp, flags, mode);
  });
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, path);
  await fsyncDir(dirname(path));
}

/**
 * Renames without replacing an existing target: link + unlink. Returns false when another file has the
 * target name. A target that is the very same file (same inode) is an earlier move cut short between
 * link and unlink by a crash: the move is finished, not refused.
 */
export async function moveNoClobber(from: string, to: string): Promise<boolean> {
  try {
    await fsp.link(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const [a, b] = await Promise.all([fsp.lstat(from), fsp.lstat(to).catch(() => undefined)]);
    if (!b || a.ino !== b.ino || a.dev !== b.dev) return false;
  }
  await fsp.unlink(from);
  return true;
}

export async function exists(path: string): Promise<boolean> {
  try {
    await fsp.lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

export async function ensureDir(dir: string, mode = 0o750): Promise<void> {
  await fsp.mkdir(dir, { recursive: true, mode });
}
