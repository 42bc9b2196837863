/**
 * A crash at any point never doubles or loses a delivery: the real CLI is killed with SIGKILL at an exact
 * moment (the INBOXD_TEST_CRASH_AT hook, src/crashpoint.ts), and the next run must leave everything as
 * one clean run would: the same rows, one ACK, a complete read-only archive, an empty work directory.
 */
import { promises as fsp } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { fixture, type Fixture, type Row, rowsOf, SLOW } from './helpers/fixture.js';

const crash = (fx: Fixture, at: string) => fx.runOnce({ env: { INBOXD_TEST_CRASH_AT: at } });
const strip = (rows: Record<string, unknown>[]) => rows.map(({ _delivery_id, _updated_at, ...r }) => r);

/** What one clean run leaves: the end state every crash must converge to. */
async function expectCleanOutcome(fx: Fixture, files: string[], rowCount: number): Promise<void> {
  const deliveries = fx.query('SELECT id, outcome, answered_at FROM deliveries');
  expect(deliveries).toEqual([{ id: expect.any(String), outcome: 'accepted', answered_at: expect.any(String) }]);
  const id = deliveries[0]!.id;
  const rows = fx.rows();
  expect(rows).toHaveLength(rowCount);
  expect(new Set(rows.map((r) => r._delivery_id))).toEqual(new Set([id]));
  expect(fx.query('SELECT seq, delivery_id FROM dedupe')).toEqual([{ seq: 1, delivery_id: id }]);
  expect(fx.listDir('outbox')).toEqual([`${files[0]}.ack.json`]);
  expect(await fx.readJson('outbox', `${files[0]}.ack.json`)).toMatchObject({ status: 'accepted', records: rowCount, delivery_id: id });
  expect(fx.listDir('archive')).toEqual([...files].sort());
  for (const f of files) expect((await fsp.stat(fx.path('archive', f))).mode & 0o222, f).toBe(0);
  expect(fx.listDir('inbox')).toEqual([]);
  expect(fx.listDir('error')).toEqual([]);
  expect(fx.listWork()).toEqual([]);
}

describe.concurrent('crash recovery', SLOW, () => {
  it('killed between commit and ACK: the next run answers without applying twice', async (t) => {
    const fx = await fixture(t);
    const rows: Row[] = rowsOf(3);
    const d = await fx.makeDelivery({ seq: 1, rows });
    const killed = await crash(fx, 'after-commit');
    expect(killed.signal).toBe('SIGKILL');
    // Committed, not answered: the rows are in, the partner has heard nothing, the files wait in the work directory.
    expect(fx.query('SELECT outcome, answered_at FROM deliveries')).toEqual([{ outcome: 'accepted', answered_at: null }]);
    expect(fx.rows()).toHaveLength(3);
    const rowsAtCrash = fx.rows();
    expect(fx.listDir('outbox')).toEqual([]);
    expect(fx.listDir('archive')).toEqual([]);
    expect(fx.listWork()).toHaveLength(1);

    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    await expectCleanOutcome(fx, d.files, 3);
    expect(fx.rows()).toEqual(rowsAtCrash); // not applied again: same _updated_at, same delivery
    const recovered = run.logs.filter((l) => /recovered/.test(l.msg));
    expect(recovered).toHaveLength(1);
    expect(recovered[0]).toMatchObject({ partner: 'acme', flow: 'inventory', file: d.name, seq: 1, delivery_id: expect.any(String) });

    // The rows equal those of a clean run of the same delivery.
    const clean = await fixture(t);
    await clean.makeDelivery({ seq: 1, rows });
    await clean.runOnce();
    expect(strip(fx.rows())).toEqual(strip(clean.rows()));
  });

  it('killed after commit, the partner resends meanwhile: one ACK, one DUPLICATE notice, rows unchanged', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1 });
    await crash(fx, 'after-commit');
    const rowsAtCrash = fx.rows();
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows()).toEqual(rowsAtCrash);
    expect(fx.listDir('outbox')).toEqual([`${d.name}.ack.json`]);
    expect(fx.listDir('archive')).toEqual([...d.files].sort());
    expect(await fx.errorReport()).toMatchObject({ code: 'DUPLICATE' });
    expect(fx.query('SELECT outcome FROM deliveries ORDER BY decided_at, id').map((x) => x.outcome)).toEqual(['accepted', 'duplicate']);
    expect(fx.listWork()).toEqual([]);
  });

  it('killed after the ACK was written, before it was recorded: one ACK, same bytes, nothing redone', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1 });
    expect((await crash(fx, 'after-ack')).signal).toBe('SIGKILL');
    expect(fx.listDir('outbox')).toEqual([`${d.name}.ack.json`]);
    const ack = await fx.readText('outbox', `${d.name}.ack.json`);
    // The originals go to archive/ before the ACK is written: a partner who sees it finds all in place.
    expect(fx.listDir('archive')).toEqual([...d.files].sort());
    expect(fx.query('SELECT answered_at FROM deliveries')).toEqual([{ answered_at: null }]);

    expect((await fx.runOnce()).code).toBe(0);
    await expectCleanOutcome(fx, d.files, 3);
    expect(await fx.readText('outbox', `${d.name}.ack.json`)).toBe(ack);
  });

  it('killed in the middle of the archive move: the next run finishes the move', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1 });
    expect((await crash(fx, 'mid-archive')).signal).toBe('SIGKILL');
    expect(fx.listDir('archive')).toHaveLength(1);
    expect(fx.listDir('inbox')).toEqual([]);

    expect((await fx.runOnce()).code).toBe(0);
    await expectCleanOutcome(fx, d.files, 3);
  });

  it('killed mid-stream, before commit: nothing applied; the next run applies it once', async (t) => {
    const fx = await fixture(t);
    const many = rowsOf(5000);
    const d = await fx.makeDelivery({ seq: 1, rows: many });
    expect(d.data.length).toBeGreaterThan(256 * 1024); // two read chunks at least: the hook fires on the second
    expect((await crash(fx, 'mid-stream')).signal).toBe('SIGKILL');
    expect(fx.rows()).toEqual([]);
    expect(fx.query("SELECT * FROM deliveries")).toEqual([]);
    expect(fx.listDir('inbox')).toEqual([]);
    expect(fx.listWork()).toHaveLength(1);

    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    await expectCleanOutcome(fx, d.files, 5000);
    expect(fx.query("SELECT step FROM events WHERE step = 'interrupted'")).toHaveLength(1);
  });

  it('killed mid-stream with a settle time: the next run waits it out for the delivery it put back, and applies it', async (t) => {
    const fx = await fixture(t, { settle_time: '1s' });
    const d = await fx.makeDelivery({ seq: 1, rows: rowsOf(5000) });
    await sleep(1100); // settled
    expect((await crash(fx, 'mid-stream')).signal).toBe('SIGKILL');
    expect(fx.listWork()).toHaveLength(1);

    // Put back into the inbox, the files have just changed there, as if uploaded a moment ago.
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    await expectCleanOutcome(fx, d.files, 5000);
  });

  it('killed after committing a rejection: the next run files the report once', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, corrupt: true });
    expect((await crash(fx, 'after-commit')).signal).toBe('SIGKILL');
    expect(fx.listDir('error')).toEqual([]);
    expect((await fx.runOnce()).code).toBe(0); // the rejection was counted by the run that crashed
    expect(await fx.errorReport()).toMatchObject({ code: 'CHECKSUM_MISMATCH' });
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`].sort());
    expect(fx.query('SELECT outcome, answered_at FROM deliveries')).toEqual([{ outcome: 'rejected', answered_at: expect.any(String) }]);
    expect(fx.listWork()).toEqual([]);
  });

  it('a temporary answer file left in the work directory by a crash mid-write does not stop the next run', async (t) => {
    const fx = await fixture(t);
    await fx.runOnce(); // creates the tree
    const d = await fx.makeDelivery({ seq: 1 });
    // What a SIGKILL between writing and renaming an ACK leaves behind (fsx.writeAtomic's temporary name).
    await fsp.writeFile(`${fx.workDir}/.${d.name}.ack.json.999999.tmp`, '{"status": "acce');
    const run = await fx.runOnce();
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    await expectCleanOutcome(fx, d.files, 3);
  });
});
