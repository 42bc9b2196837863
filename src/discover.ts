/**
 * The discover and ready steps: list an inbox, group data files with their sidecar and manifest, and
 * tell which deliveries are ready: complete, and settled (unchanged for the settle time, since some
 * clients such as WinSCP write small files in place under their final name). Temporary
 * names are never read. What waits too long, or is no delivery at all, is returned for rejection.
 *
 * Ages are measured on our clock from a file's inode change time, never its modification time alone:
 * clients such as WinSCP or `sftp put -p` keep the original modification time, so a file uploaded a
 * second ago can claim to be a day old. Every write, rename and `utime` sets the change time to now.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { ErrorCode } from './errors.js';
import { type FlowPattern, isTempName, manifestName, type ParsedName, parseName, sidecarName } from './naming.js';

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
}

export interface Scan {
  ready: ReadyDelivery[];
  stale: Stale[];
  /** deliveries seen but not ready yet */
  waiting: number;
  /** when the first of them can become ready or stale (settled, or incomplete_after passed), on our clock */
  dueMs?: number;
}

interface Entry {
  name: string;
  /** the inode change time, on our clock */
  ctimeMs: number;
  regular: boolean;
}

export async function scanInbox(inbox: string, opts: DiscoverOptions): Promise<Scan> {
  const entries = await listEntries(inbox, opts.tempPatterns);
  const byName = new Map(entries.map((e) => [e.name, e]));
  // Every write, rename and utime sets the change time: a file unchanged that long has settled.
  const settled = (e: Entry) => opts.now - e.ctimeMs >= opts.settleMs;
  const tooOld = (e: Entry) => opts.now - e.ctimeMs >= opts.incompleteAfterMs;
  const scan: Scan = { ready: [], stale: [], waiting: 0 };
  const wait = (untilMs: number) => {
    scan.waiting++;
    scan.dueMs = Math.min(scan.dueMs ?? untilMs, untilMs);
  };
  const claimed = new Set<string>();
  // Arrived when its last file did: a delivery is not there before it is complete. Never later than now.
  const arrival = (names: readonly string[]) => Math.min(opts.now, Math.max(...names.map((n) => byName.get(n)!.ctimeMs)));

  for (const e of entries) {
    const name = parseName(e.name, opts.flows);
    if (!name) continue;
    const flow = opts.flows.find((f) => f.id === name.flow)!;
    const sidecar = sidecarName(e.name);
    const manifest = manifestName(flow.manifestName, e.name);
    const present = [e.name, sidecar, manifest].filter((n) => byName.has(n));
    present.forEach((n) => claimed.add(n));
    if (!e.regular) {
      scan.stale.push({ file: e.name, name, files: present, arrivedMs: arrival(present), code: 'NOT_A_REGULAR_FILE', reason: `${e.name} is not a regular file (a symbolic link or device); it was not read` });
      continue;
    }
    const missing = [flow.sidecarRequired && !byName.has(sidecar) ? sidecar : undefined, flow.manifestRequired && !byName.has(manifest) ? manifest : undefined].filter((n): n is string => !!n);
    if (missing.length > 0) {
      if (tooOld(e)) scan.stale.push({ file: e.name, name, files: present, arrivedMs: arrival(present), code: 'INCOMPLETE', reason: `the delivery is incomplete: ${missing.join(' and ')} did not arrive within ${Math.round(opts.incompleteAfterMs / 1000)} s` });
      else wait(e.ctimeMs + opts.incompleteAfterMs);
      continue;
    }
    if (!present.every((n) => settled(byName.get(n)!))) {
      wait(Math.max(...present.map((n) => byName.get(n)!.ctimeMs)) + opts.settleMs);
      continue;
    }
    scan.ready.push({ file: e.name, name, arrivedMs: arrival(present), sidecar: byName.has(sidecar) ? sidecar : undefined, manifest: byName.has(manifest) ? manifest : undefined, files: present });
  }

  // Whatever belongs to no data file: a companion waiting for its data file, or a stray file.
  for (const e of entries) {
    if (claimed.has(e.name)) continue;
    if (!e.regular) scan.stale.push({ file: e.name, files: [e.name], arrivedMs: arrival([e.name]), code: 'NOT_A_REGULAR_FILE', reason: `${e.name} is not a regular file; it was not read` });
    else if (!tooOld(e)) wait(e.ctimeMs + opts.incompleteAfterMs);
    else scan.stale.push({ file: e.name, files: [e.name], arrivedMs: arrival([e.name]), code: 'UNKNOWN_FILE', reason: `${e.name} is not a delivery of any configured flow, or the data file it belongs to never arrived` });
  }
  scan.ready.sort((a, b) => a.name.flow.localeCompare(b.name.flow) || a.name.seq - b.name.seq);
  return scan;
}

async function listEntries(inbox: string, tempPatterns: readonly RegExp[]): Promise<Entry[]> {
  const dirents = await fsp.readdir(inbox, { withFileTypes: true });
  const out: Entry[] = [];
  for (const d of dirents) {
    if (d.isDirectory() || isTempName(d.name, tempPatterns)) continue;
    try {
      const st = await fsp.lstat(join(inbox, d.name));
      out.push({ name: d.name, ctimeMs: st.ctimeMs, regular: st.isFile() });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // renamed away meanwhile
    }
  }
  return out;
}
