/**
 * The partner tree on disk, made and checked before anything is read or written:
 * - every partner directory (`<root>/<partner>` and its inbox, outbox, error, archive) is a real
 *   directory inside root, never a symbolic link: through one we would sweep, answer and archive
 *   wherever it points (checked again at each sweep, run.ts);
 * - the database is outside every partner's tree and the work directory, and the work directory is
 *   outside every partner's tree: a partner could read, move or replace what is there (the database, and
 *   the dedupe history with it), and recovery clears what in a working directory is no delivery;
 * - the work directory is on the file system of the partner directories: claiming, releasing and
 *   archiving a delivery are renames.
 * Each is a configuration error (exit 78) naming the key. `check-config` runs the same checks and
 * creates nothing.
 */
import { lstatSync, promises as fsp } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, sep } from 'node:path';
import { type Config, configError, type PartnerConfig } from '../config/config.js';

export interface DirProblem {
  dir: string;
  reason: string;
  /** it does not exist (yet): at start it is made, for check-config it would be */
  missing: boolean;
}

/** The partner's own directories, its tree first: what must be real directories inside root. */
const partnerDirs = (p: PartnerConfig) => [p.dirs.root, p.dirs.inbox, p.dirs.outbox, p.dirs.error, p.dirs.archive];

/** The first of a partner's directories that is not a real directory (a link, a file, missing), or undefined. */
export function partnerDirProblem(p: PartnerConfig): DirProblem | undefined {
  for (const dir of partnerDirs(p)) {
    const code = dirCode(dir);
    if (code) return { dir, reason: `${dir} ${WHY[code] ?? `cannot be opened (${code})`}`, missing: code === 'ENOENT' };
  }
  return undefined;
}

const WHY: Record<string, string> = {
  ELOOP: 'is a symbolic link; partner directories must be real directories inside root',
  ENOTDIR: 'is not a directory',
  ENOENT: 'does not exist',
};

/**
 * What is at `dir` itself, its last component not followed. One lstat, not an open and close, and
 * synchronous, as daemon/quiet.ts's: every full sweep checks each partner's five directories (15,000
 * with 3,000 partners, npm run bench:partners), and through the thread pool an lstat costs ten times
 * the system call.
 */
function dirCode(dir: string): string | undefined {
  try {
    const st = lstatSync(dir);
    return st.isSymbolicLink() ? 'ELOOP' : st.isDirectory() ? undefined : 'ENOTDIR';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  }
}

/** At start: creates what is missing (`create`), then checks the whole layout; throws CONFIG_INVALID naming the key. */
export async function prepareTree(config: Config, opts: { create: boolean }): Promise<void> {
  await checkPlacement(config);
  const dir = (key: string, path: string, mode: number) => makeDir(config, key, path, mode, opts.create);
  await dir('root', config.root, 0o750);
  for (const p of config.partners) for (const d of partnerDirs(p)) await dir(`partners.${p.id}`, d, 0o750);
  for (const p of config.partners) await dir('work_dir', p.dirs.work, 0o700);
  for (const p of config.partners) {
    const wrong = partnerDirProblem(p);
    if (wrong && !(wrong.missing && !opts.create)) throw configError(config.file, `partners.${p.id}`, wrong.reason);
  }
  await checkSameFileSystem(config);
}

/** mkdir -p, or (without `create`) whether it would succeed; what is in the way is a configuration error. */
async function makeDir(config: Config, key: string, dir: string, mode: number, create: boolean): Promise<void> {
  try {
    if (create) await fsp.mkdir(dir, { recursive: true, mode });
    else if (!(await fsp.stat(dir)).isDirectory()) await fsp.mkdir(dir); // EEXIST, as mkdir would say
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !create) return makeDir(config, key, dirname(dir), mode, false);
    if (code === 'ENOTDIR' || code === 'EEXIST') throw configError(config.file, key, `cannot make the directory ${dir}: ${await firstExisting(dir)} is not a directory`);
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') throw configError(config.file, key, `cannot make the directory ${dir} (${code})`);
    throw err;
  }
}

/** The path itself or its nearest ancestor that exists. */
async function firstExisting(path: string): Promise<string> {
  const found = await fsp.lstat(path).then(() => true, () => false);
  return found || dirname(path) === path ? path : firstExisting(dirname(path));
}

async function checkPlacement(config: Config): Promise<void> {
  // A PostgreSQL database lives on its server: no file of ours to place.
  const db = config.db.kind === 'sqlite' ? await realish(config.db.path) : undefined;
  const work = await realish(config.workDir);
  for (const p of config.partners) {
    const tree = await realish(p.dirs.root);
    const whose = `partner ${p.id}'s directory ${tree}`;
    if (db && inside(db, tree)) throw configError(config.file, 'database', `${config.database} is inside ${whose}: the partner could read, move or replace it; put it outside every partner's directory`);
    if (inside(work, tree)) throw configError(config.file, 'work_dir', `${config.workDir} is inside ${whose}: the partner could take files out of it; put it outside every partner's directory`);
    if (inside(tree, work)) throw configError(config.file, 'work_dir', `${config.workDir} holds ${whose}; put the work directory beside the partners' directories, not above them`);
  }
  if (db && inside(db, work)) throw configError(config.file, 'database', `${config.database} is inside the work directory ${config.workDir}, which recovery clears; put it elsewhere`);
}

/**
 * Once both exist: a delivery's files are renamed from the inbox into the work directory and from there
 * into archive/ or error/, which must not cross file systems (EXDEV). Answers are written in outbox/ itself.
 */
async function checkSameFileSystem(config: Config): Promise<void> {
  const dev = (path: string) => fsp.stat(path).then((st) => st.dev, () => undefined);
  for (const p of config.partners) {
    const work = await dev(p.dirs.work);
    for (const d of [p.dirs.inbox, p.dirs.error, p.dirs.archive]) {
      const other = await dev(d);
      if (work !== undefined && other !== undefined && other !== work) throw configError(config.file, 'work_dir', `${config.workDir} is on another file system than ${d}: deliveries are moved between them by rename; put work_dir on the file system of root`);
    }
  }
}

/** The real path of what exists of `path`, followed by the rest: where it is, through any links. */
async function realish(path: string): Promise<string> {
  try {
    return await fsp.realpath(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if ((code !== 'ENOENT' && code !== 'ENOTDIR') || dirname(path) === path) throw err;
    return join(await realish(dirname(path)), basename(path));
  }
}

function inside(path: string, dir: string): boolean {
  const r = relative(dir, path);
  return r === '' || (r !== '..' && !r.startsWith(`..${sep}`) && !isAbsolute(r));
}
