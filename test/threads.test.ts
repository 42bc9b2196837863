/**
 * Staging threads kept from one delivery to the next (pipeline/threads.ts), with the real threads of
 * the built pipeline, in a process of their own (test/helpers/stage-deliveries.js).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { THREADS } from '../src/pipeline/threads.js';

const SCRIPT = new URL('./helpers/stage-deliveries.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'inboxd-threads-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Staged { rows: number; first: unknown[]; last: unknown[]; bad: number; threads: number; idle: number[]; error?: string }

describe('staging threads', () => {
  it('are started ahead, used again by the next delivery with nothing of the last left in them, and dropped after a failure or a large delivery; idle ones do not keep the process alive', async () => {
    // The script leaves its pool open: it exits (and this resolves) only if idle threads do not hold the process.
    const { stdout } = await promisify(execFile)(process.execPath, [SCRIPT, dir], { env: { ...process.env, INBOXD_TEST_CHUNK_BYTES: '4096' }, timeout: 50_000 });
    const out = JSON.parse(stdout) as Record<'first' | 'second' | 'broken' | 'after' | 'large', Staged> & { warm: number[] };
    expect(out.warm).toHaveLength(1); // one thread ready before the first delivery, all a small one needs
    const [warm] = out.warm;
    // The first delivery (many chunks) took the warm thread, started the others, and gave the warm one back.
    expect(out.first).toMatchObject({ rows: 2000, first: ['A-0', 0, 'first'], last: ['A-1999', 1999, 'first'], bad: 0, threads: THREADS, idle: [warm] });
    // The second, another shape (no header, two columns, another mapping), in that same thread: its own rows only.
    expect(out.second).toMatchObject({ rows: 4000, first: ['B-0', 0], last: ['B-3999', 7998], bad: 0, threads: THREADS, idle: [warm] });
    // A rejected delivery's threads are terminated, not kept: the next starts a new one.
    expect(out.broken.error).toBe('line 702: the row has 3 columns, the header has 2');
    expect(out.broken.idle).toEqual([]);
    expect(out.after).toMatchObject({ rows: 100, first: ['D-0'], last: ['D-99'], threads: 1 });
    expect(out.after.idle).toHaveLength(1);
    expect(out.after.idle).not.toContain(warm);
    // More than 16 MB: all its rows staged, and its threads not kept (its commit is where memory peaks).
    expect(out.large).toMatchObject({ rows: 300_000, first: ['E-0', 'x'.repeat(50)], last: ['E-299999', 'x'.repeat(50)], threads: THREADS, idle: [] });
  });
});
