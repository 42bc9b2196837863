/**
 * The discover and ready steps: list an inbox, group data files with their sidecar and manifest, and
 * tell which deliveries are ready: complete, and settled (unchanged for the settle time, since some
 * clients such as WinSCP write small files in place under their final name; or seen by the watcher
 * renamed in from a temporary name, and unchanged since, which is complete at once). Temporary
 * names are never read. What waits too long, or is no delivery at all, is returned for rejection.
 *
 * Ages are measured on our clock from a file's inode change time, never its modification time alone:
 * clients such as WinSCP or `sftp put -p` keep the original modification time, so a file uploaded a
 * second ago can claim to be a day old. Every write, rename and `utime` sets the change time to now.
 *
 * Nothing a partner can make goes unseen: names are read as bytes (a name that is not UTF-8 is
 * rejected, BAD_FILE_NAME), a directory named like a data file is reported (and left in place), a
 * timestamp that is no real instant is reported with its delivery, and a lasting hard link is refused.
 */
import { promises as fsp } from 'node:fs';
import type { ErrorCode } from '../errors.js';
import { type FlowPattern, isTempName, manifestName, matchName, type ParsedName, sidecarName } from './naming.js';
import { escapeBytes, visible } from '../visible.js';

export interface DiscoverFlow extends FlowPattern {
  sidecarRequired: boolean;
  manifestRequired: boolean;
}

export interface DiscoverOptions {
  flows: readonly DiscoverFlow[];
  tempPatterns: readonly RegExp[];
  settleMs: number;
  incompleteAfterMs: number;
  now: number;
  /** files the watcher saw renamed in from a temporary name (daemon/watch.ts): complete, no settle time while unchanged */
  renamedIn?: ReadonlyMap<string, RenamedIn>;
}

/** A file as it was just after its rename into the inbox: still that file, unchanged, while both match. */
export interface RenamedIn {
  ino: number;
  ctimeMs: number;
}

export interface ReadyDelivery {
  file: string;
  name: ParsedName;
  /** when it arrived, on our clock: the last write, rename or change (inode change time) of its files */
  arrivedMs: number;
  sidecar?: string;
  manifest?: string;
  /** every file of the delivery, data file first */
  files: string[];
}

export interface Stale {
  file: string;
  /** when its last file arrived, on our clock */
  arrivedMs: number;
  /** flow and sequence, when the file is named like a delivery */
  name?: ParsedName;
  files: string[];
  code: ErrorCode;
  reason: string;
  /** inbox names as bytes, of files whose names are not UTF-8 (`file` is then the escaped name) */
  bytes?: Map<string, Buffer>;
  /** left where it is (a directory): reported once, not every time it is seen */
  inPlace?: boolean;
}

/** A file seen but not ready yet: what it waits for, and until when (Date.now() ms). */
export interface Waiting {
  file: string;
  /**
   * why, stable (a log key): `companion` (sidecar or manifest), `settling`, `link`, `data_file` (a companion
   * without one); and, from the sweep (ingest/pass.ts): `gap`, `backoff`, `behind` (an earlier delivery of its flow)
   */
  reason: 'companion' | 'settling' | 'link' | 'data_file' | 'gap' | 'backoff' | 'behind';
  /** what it waits for, in words */
  waitsFor: string;
  /** unknown for `behind` */
  untilMs?: number;
}

export interface Scan {
  ready: ReadyDelivery[];
  stale: Stale[];
  /** deliveries seen but not ready yet */
  waiting: number;
  /** each of them, with what it waits for */
  waits: Waiting[];
  /** when the first of them can become ready or stale (settled, or incomplete_after passed), on our clock */
  dueMs?: number;
}

interface Entry {
  /** the name, or for one that is not UTF-8, the name with its stray bytes escaped */
  name: string;
  /** the name as bytes, when it is not UTF-8 */
  bytes?: Buffer;
  /** the inode change time, on our clock */
  ctimeMs: number;
  kind: 'file' | 'directory' | 'other';
  /** hard links to the inode */
  links: number;
  ino: number;
}

/**
 * How long a file with more than one link waits before it is refused (at least settle_time): OpenSSH's
 * sftp-server renames by link, then unlink, so an upload being renamed has two links for a moment;
 * microseconds, but a sweep can see it. Each link and unlink sets the change time, so this counts from
 * the last. A link that lasts this long is no rename: the inode is shared with a file elsewhere, whose
 * content we would read and whose mode the archive would change.
 */
const LINK_GRACE_MS = 1000;

export async function scanInbox(inbox: string, opts: DiscoverOptions): Promise<Scan> {
  const listed = await listEntries(inbox, opts);
  const entries = listed.filter((e) => !e.bytes && e.kind !== 'directory');
  const byName = new Map(entries.map((e) => [e.name, e]));
  // Every write, rename and utime sets the change time: a file unchanged that long has settled. One renamed
  // in from a temporary name was complete when it was renamed: unchanged since, it needs no wait.
  const renamed = (e: Entry) => opts.renamedIn?.get(e.name)?.ino === e.ino && opts.renamedIn.get(e.name)!.ctimeMs === e.ctimeMs;
  const settled = (e: Entry) => opts.now - e.ctimeMs >= opts.settleMs || renamed(e);
  const tooOld = (e: Entry) => opts.now - e.ctimeMs >= opts.incompleteAfterMs;
  const linkLasted = (e: Entry) => opts.now - e.ctimeMs >= Math.max(opts.settleMs, LINK_GRACE_MS);
  const scan: Scan = { ready: [], stale: [], waiting: 0, waits: [] };
  const wait = (untilMs: number, file: string, reason: Waiting['reason'], waitsFor: string) => {
    scan.waiting++;
    scan.waits.push({ file, reason, waitsFor, untilMs });
    scan.dueMs = Math.min(scan.dueMs ?? untilMs, untilMs);
  };
  const claimed = new Set<string>();
  // Arrived when its last file did: a delivery is not there before it is complete. Never later than now.
  const arrival = (names: readonly string[]) => Math.min(opts.now, Math.max(...names.map((n) => byName.get(n)!.ctimeMs)));
  const at = (e: Entry) => Math.min(opts.now, e.ctimeMs);

  for (const e of listed) {
    if (e.bytes) {
      // Not UTF-8: no name of ours can match it, and Node cannot even name it as a string.
      if (!settled(e)) wait(e.ctimeMs + opts.settleMs, e.name, 'settling', 'the file to settle (settle_time)');
      else scan.stale.push({ file: e.name, files: [e.name], bytes: new Map([[e.name, e.bytes]]), arrivedMs: at(e), code: 'BAD_FILE_NAME', reason: `the file name is not valid UTF-8; it is shown, and kept in error/, as "${visible(e.name)}" (each byte that is no UTF-8 character as %XX); it was not read` });
    } else if (e.kind === 'directory') {
      // Named like a data file (listEntries), so never silently ignored; but a directory is the partner's to remove.
      scan.stale.push({ file: e.name, name: matchName(e.name, opts.flows), files: [], inPlace: true, arrivedMs: at(e), code: 'NOT_A_REGULAR_FILE', reason: `${visible(e.name)} is a directory, not a file; it was left where it is` });
    }
  }

  for (const e of entries) {
    const name = matchName(e.name, opts.flows);
    if (!name) continue;
    const flow = opts.flows.find((f) => f.id === name.flow)!;
    const sidecar = sidecarName(e.name);
    const manifest = manifestName(flow.manifestName, e.name);
    const present = [e.name, sidecar, manifest].filter((n) => byName.has(n));
    present.forEach((n) => claimed.add(n));
    const stale = (code: ErrorCode, reason: string) => scan.stale.push({ file: e.name, name, files: present, arrivedMs: arrival(present), code, reason });
    if (e.kind !== 'file') {
      stale('NOT_A_REGULAR_FILE', `${visible(e.name)} is not a regular file (a symbolic link or device); it was not read`);
      continue;
    }
    const linked = present.map((n) => byName.get(n)!).filter((f) => f.links > 1);
    if (linked.length > 0) {
      if (linked.some(linkLasted)) stale('HARD_LINK', `${linked.map((f) => `${visible(f.name)} has ${f.links} links`).join(', ')}: a hard link shares the file with another name, perhaps outside the inbox; it was not read`);
      else wait(Math.max(...linked.map((f) => f.ctimeMs)) + Math.max(opts.settleMs, LINK_GRACE_MS), e.name, 'link', 'a rename by hard link to end');
      continue;
    }
    const missing = [flow.sidecarRequired && !byName.has(sidecar) ? sidecar : undefined, flow.manifestRequired && !byName.has(manifest) ? manifest : undefined].filter((n): n is string => !!n);
    if (missing.length > 0) {
      if (!tooOld(e)) wait(e.ctimeMs + opts.incompleteAfterMs, e.name, 'companion', `${missing.map(visible).join(' and ')} (incomplete_after)`);
      else if (name.problem) stale('BAD_FILE_NAME', `${name.problem}; and ${missing.map(visible).join(' and ')} did not arrive`);
      else stale('INCOMPLETE', `the delivery is incomplete: ${missing.map(visible).join(' and ')} did not arrive within ${Math.round(opts.incompleteAfterMs / 1000)} s`);
      continue;
    }
    if (!present.every((n) => settled(byName.get(n)!))) {
      wait(Math.max(...present.map((n) => byName.get(n)!.ctimeMs)) + opts.settleMs, e.name, 'settling', 'its files to settle (settle_time)');
      continue;
    }
    // Judged when it would have been taken: complete and settled, all its files in one report.
    if (name.problem) stale('BAD_FILE_NAME', name.problem);
    else scan.ready.push({ file: e.name, name, arrivedMs: arrival(present), sidecar: byName.has(sidecar) ? sidecar : undefined, manifest: byName.has(manifest) ? manifest : undefined, files: present });
  }

  // Whatever belongs to no data file: a companion waiting for its data file, or a stray file.
  for (const e of entries) {
    if (claimed.has(e.name)) continue;
    if (e.kind !== 'file') scan.stale.push({ file: e.name, files: [e.name], arrivedMs: arrival([e.name]), code: 'NOT_A_REGULAR_FILE', reason: `${visible(e.name)} is not a regular file; it was not read` });
    else if (!tooOld(e)) wait(e.ctimeMs + opts.incompleteAfterMs, e.name, 'data_file', 'the data file it belongs to (incomplete_after)');
    else scan.stale.push({ file: e.name, files: [e.name], arrivedMs: arrival([e.name]), code: 'UNKNOWN_FILE', reason: `${visible(e.name)} is not a delivery of any configured flow, or the data file it belongs to never arrived` });
  }
  scan.ready.sort((a, b) => a.name.flow.localeCompare(b.name.flow) || a.name.seq - b.name.seq);
  return scan;
}

/** Every entry but temporary names; directories only when named like a data file. Names are read as bytes. */
async function listEntries(inbox: string, opts: DiscoverOptions): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const raw of await fsp.readdir(inbox, { encoding: 'buffer' })) {
    const escaped = escapeBytes(raw);
    const name = escaped ?? raw.toString('utf8');
    if (isTempName(name, opts.tempPatterns)) continue;
    let st;
    try {
      st = await fsp.lstat(Buffer.concat([Buffer.from(`${inbox}/`), raw]));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // renamed away meanwhile
      continue;
    }
    const kind = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : 'other';
    if (kind === 'directory' && (escaped !== undefined || !matchName(name, opts.flows))) continue;
    out.push({ name, bytes: escaped === undefined ? undefined : raw, ctimeMs: st.ctimeMs, kind, links: st.nlink, ino: st.ino });
  }
  return out;
}
