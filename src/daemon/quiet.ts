/**
 * Quiet partners: the scheduled sweep of a partner whose last sweep found nothing at all (an empty
 * inbox, nothing waiting, retried or recovered) is skipped while its tree is unchanged. A sweep of an
 * idle partner costs a dozen system calls and two database queries; with 3,000 partners every 30 s that
 * was most of the daemon's idle CPU (npm run bench:partners). The schedule stays the safety net for lost
 * watcher events: any file created, renamed or removed in the inbox changes the inbox's modification
 * time, and any directory of the partner replaced or removed changes its root's; a partner directory
 * itself replaced is another inode. Only the schedule's sweeps are skipped: a watcher event, a replay,
 * a lease taken or a retry sweeps in full, and so does every FULL_EVERY-th scheduled sweep, which bounds
 * what a file system that keeps a directory's times stale (attribute caching on NFS) can hide.
 */
import { lstatSync } from 'node:fs';
import type { PartnerConfig } from '../config/config.js';

/** Scheduled sweeps skipped in a row at most: with the default schedule, a full sweep every 5 minutes. */
export const FULL_EVERY = 10;

/**
 * A directory's times move in coarse steps (the kernel's clock tick): a change in the same step as the
 * one before leaves them as they were. So a print is trusted only when both changed longer ago than this.
 */
const SETTLED_MS = 1000;

/** What the partner's root and inbox were (inode, modification and change time), or undefined if either could not be read. */
export type TreePrint = string;

/**
 * Synchronous on purpose: an lstat through the thread pool costs ten times the system call itself
 * (30-50 us against 3-4 on the 2-core bench machine), 6,000 of them every 30 s with 3,000 partners; the
 * call is as short as the SQLite queries the daemon already makes synchronously.
 */
export function treePrint(partner: PartnerConfig): TreePrint | undefined {
  const now = Date.now();
  try {
    const parts: string[] = [];
    for (const dir of [partner.dirs.root, partner.dirs.inbox]) {
      const st = lstatSync(dir);
      if (!st.isDirectory() || Math.max(st.mtimeMs, st.ctimeMs) > now - SETTLED_MS) return undefined;
      parts.push(`${st.dev}:${st.ino}:${st.mtimeMs}:${st.ctimeMs}`);
    }
    return parts.join(' ');
  } catch {
    return undefined; // the full sweep says what is wrong
  }
}
