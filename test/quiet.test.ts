/**
 * The print the daemon compares before skipping a quiet partner's scheduled sweep (daemon/quiet.ts):
 * unchanged while nothing happens in the partner's root and inbox, different after any entry changes,
 * and no print at all while a change is too recent to be told from the next one.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { PartnerConfig } from '../src/config/config.js';
import { treePrint } from '../src/daemon/quiet.js';

const settle = () => new Promise((r) => setTimeout(r, 1100));

function tree(t: { onTestFinished: (fn: () => void) => void }) {
  const root = mkdtempSync(join(tmpdir(), 'inboxd-quiet-'));
  t.onTestFinished(() => rmSync(root, { recursive: true, force: true }));
  const dirs = { root, inbox: join(root, 'inbox'), outbox: join(root, 'outbox') };
  mkdirSync(dirs.inbox);
  mkdirSync(dirs.outbox);
  return { dirs, partner: { dirs } as unknown as PartnerConfig };
}

describe('quiet partners', () => {
  it('a file arriving in the inbox or a partner directory replaced changes the print', async (t) => {
    const { dirs, partner } = tree(t);
    expect(treePrint(partner)).toBeUndefined(); // just made
    await settle();
    const quiet = treePrint(partner);
    expect(quiet).toBeDefined();
    expect(treePrint(partner)).toBe(quiet);
    writeFileSync(join(dirs.inbox, 'inventory_20250916T0200Z_001.csv'), 'x');
    expect(treePrint(partner)).toBeUndefined();
    await settle();
    const withFile = treePrint(partner);
    expect(withFile).toBeDefined();
    expect(withFile).not.toBe(quiet);
    rmSync(dirs.outbox, { recursive: true });
    symlinkSync(tmpdir(), dirs.outbox);
    await settle();
    expect(treePrint(partner)).not.toBe(withFile);
  });
});
