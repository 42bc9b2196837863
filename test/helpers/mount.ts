/**
 * Small file systems of their own, for tests of what happens across file systems or on a full disk:
 * tmpfs mounts (root only), unmounted when the test ends, before its fixture is removed.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestHooks } from './fixture.js';

function probe(): boolean {
  if (process.getuid?.() !== 0) return false;
  const dir = mkdtempSync(join(tmpdir(), 'inboxd-mount-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'ignore' });
    execFileSync('umount', [dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    rmdirSync(dir);
  }
}

/** Whether this process may mount file systems (root, with CAP_SYS_ADMIN). */
export const canMount = probe();

/** A tmpfs of `size` (e.g. "16m") mounted on `dir` (made if missing) until the test ends. */
export function mountTmpfs(t: TestHooks, dir: string, size: string): void {
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  // Registered after the fixture: vitest runs these hooks in reverse, so this runs before it is removed.
  t.onTestFinished(() => void execFileSync('umount', ['-l', dir]));
}
