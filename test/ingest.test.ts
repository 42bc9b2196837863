/**
 * The playbook's file scenarios and the delivery contract of issue 2, end to end: the real CLI on a
 * fresh tree per test, asserting what a user would check (table rows, ACK, error reports, archive).
 */
import { spawn } from 'node:child_process';
import { promises as fsp, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { claim } from '../src/pipeline/claim.js';
import { fixture, nameFor, row, rowsOf, SLOW } from './helpers/fixture.js';

describe.concurrent('B-003: a delivery with sidecar and manifest', SLOW, () => {
  it('upserts typed rows, drops an ACK in outbox/, archives the originals read-only, exits 0', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({
      name: 'inventory_20250916T0200Z_001.csv',
      rows: [
        row(1, { UnitCost: '12.50', Active: 'true', LastModified: '2025-09-16T01:55:00Z' }),
        row(2, { UnitCost: '3.99', Condition: 'USED', Active: 'no', LastModified: '2025-09-16T03:55:00+02:00' }),
        row(3, { UnitCost: '0.45', Currency: 'USD', Active: '', ContactEmail: '', LastModified: '2025-09-15T21:58:30.5-04:00' }),
      ],
    });
    const run = await fx.runOnce();
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);

    const rows = fx.rows();
    expect(rows.map(({ _delivery_id, _updated_at, ...r }) => r)).toEqual([
      { sku: 'A-101', warehouse: 'BER1', qty: 11, unit_cost: 1250, currency: 'EUR', condition: 'NEW', active: 1, contact: 'buyer1@example.com', updated_at: '2025-09-16T01:55:00Z' },
      { sku: 'A-102', warehouse: 'BER1', qty: 12, unit_cost: 399, currency: 'EUR', condition: 'USED', active: 0, contact: 'buyer2@example.com', updated_at: '2025-09-16T01:55:00Z' },
      { sku: 'A-103', warehouse: 'BER1', qty: 13, unit_cost: 45, currency: 'USD', condition: 'NEW', active: null, contact: null, updated_at: '2025-09-16T01:58:30.500Z' },
    ]);
    const [delivery] = fx.query('SELECT * FROM deliveries');
    expect(delivery).toMatchObject({ partner: 'acme', flow: 'inventory', file: d.name, seq: 1, sha256: d.sha256, outcome: 'accepted', records: 3, bad_rows: 0 });
    expect(delivery!.answered_at).toEqual(expect.any(String));
    expect(new Set(rows.map((r) => r._delivery_id))).toEqual(new Set([delivery!.id]));
    expect(fx.query('SELECT partner, flow, seq, sha256, delivery_id FROM dedupe')).toEqual([{ partner: 'acme', flow: 'inventory', seq: 1, sha256: d.sha256, delivery_id: delivery!.id }]);

    expect(fx.listDir('outbox')).toEqual([`${d.name}.ack.json`]);
    const ack = await fx.readJson('outbox', `${d.name}.ack.json`);
    expect(ack).toMatchObject({ status: 'accepted', file: d.name, sequence: 1, sha256: d.sha256, records: 3, sums: { qty: 36 }, delivery_id: delivery!.id });
    expect(Date.parse(ack.processed_at)).not.toBeNaN();

    expect(fx.listDir('archive')).toEqual([...d.files].sort());
    for (const f of d.files) {
      const st = await fsp.stat(fx.path('archive', f));
      expect(st.mode & 0o222, `${f} is read-only`).toBe(0);
    }
    expect(await fsp.readFile(fx.path('archive', d.name))).toEqual(d.data);
    expect(fx.listDir('inbox')).toEqual([]);
    expect(fx.listDir('error')).toEqual([]);
    expect(fx.listWork()).toEqual([]);
  });

  it('parses the long form partner_flow_YYYYMMDDThhmmssZ_seq and records its time', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ name: 'acme_inventory_20250916T020012Z_000042.csv' });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.query('SELECT seq, outcome FROM deliveries')).toEqual([{ seq: 42, outcome: 'accepted' }]);
    expect((await fx.readJson('outbox', `${d.name}.ack.json`)).sequence).toBe(42);
  });
});

describe.concurrent('B-101: the same delivery resent', SLOW, () => {
  it('changes nothing, records the duplicate and leaves a DUPLICATE notice in error/', async (t) => {
    const fx = await fixture(t);
    const first = await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    const before = fx.rows();
    const ackBefore = await fx.readText('outbox', `${first.name}.ack.json`);

    await fx.makeDelivery({ seq: 1 });
    const run = await fx.runOnce();
    expect(run.code).toBe(0); // a resend is answered, not an error of ours or a rejected delivery
    expect(fx.rows()).toEqual(before);
    expect(await fx.readText('outbox', `${first.name}.ack.json`)).toBe(ackBefore);
    expect(fx.listDir('outbox')).toEqual([`${first.name}.ack.json`]);

    const report = await fx.errorReport();
    expect(report).toMatchObject({ status: 'duplicate', code: 'DUPLICATE', file: first.name, sequence: 1, sha256: first.sha256 });
    expect(report.reason).toMatch(/already applied/);
    expect(fx.listDir('error')).toEqual([...first.files, `${first.name}.error.json`].sort());

    const deliveries = fx.query('SELECT id, outcome, code, answered_at FROM deliveries ORDER BY decided_at, id');
    expect(deliveries.map((x) => [x.outcome, x.code])).toEqual([['accepted', null], ['duplicate', 'DUPLICATE']]);
    expect(deliveries.every((x) => x.answered_at)).toBe(true);
    expect(fx.query('SELECT seq, delivery_id FROM dedupe')).toEqual([{ seq: 1, delivery_id: deliveries[0]!.id }]);
    expect(fx.listDir('inbox')).toEqual([]);
  });

  it('a third copy does not overwrite the second one\'s notice', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    await fx.runOnce();
    await fx.makeDelivery({ seq: 1 });
    await fx.runOnce();
    await fx.makeDelivery({ seq: 1 });
    await fx.runOnce();
    expect(fx.listDir('error').filter((n) => n.endsWith('.error.json'))).toHaveLength(2);
    // the second copy's data file keeps its extension last: <stem>.<delivery id>.csv
    expect(fx.listDir('error').filter((n) => n.startsWith(nameFor(1).replace(/\.csv$/, '')) && n.endsWith('.csv'))).toHaveLength(2);
  });
});

describe.concurrent('sequence conflict', SLOW, () => {
  it('same sequence with different content is rejected and applies nothing', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    await fx.runOnce();
    const before = fx.rows();
    const other = await fx.makeDelivery({ seq: 1, rows: [row(1, { Quantity: '999' })] });
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    expect(fx.rows()).toEqual(before);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ status: 'rejected', code: 'SEQUENCE_CONFLICT', sha256: other.sha256 });
    expect(fx.query("SELECT outcome, code FROM deliveries WHERE code IS NOT NULL")).toEqual([{ outcome: 'rejected', code: 'SEQUENCE_CONFLICT' }]);
  });
});

describe.concurrent('truncated upload (no rename)', SLOW, () => {
  it.for(['x.csv.part', 'x.csv.tmp', 'x.csv.filepart', '.x.csv'])('a file named like %s is never read', async (pattern, t) => {
    const fx = await fixture(t, { incomplete_after: '1s' });
    const final = nameFor(1);
    const temp = pattern.replace('x.csv', final);
    await fsp.mkdir(fx.path('inbox'), { recursive: true });
    const partial = 'SKU,Warehouse,Quantity\nA-1,BER1,1'; // cut short mid-upload
    await fsp.writeFile(fx.path('inbox', temp), partial);
    await sleep(1100); // past settle time and incomplete_after: only its name keeps it from being read or rejected
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.listDir('inbox')).toEqual([temp]);
    expect(await fsp.readFile(fx.path('inbox', temp), 'utf8')).toBe(partial);
    expect(fx.query('SELECT * FROM deliveries')).toEqual([]);
    expect(fx.rows()).toEqual([]);
    expect([...fx.listDir('error'), ...fx.listDir('outbox'), ...fx.listDir('archive')]).toEqual([]);
    expect(run.stdout).not.toContain(temp);
  });

  it('is taken once renamed to its final name', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1 });
    await fsp.rename(fx.path('inbox', d.name), fx.path('inbox', `${d.name}.part`));
    await fx.runOnce();
    expect(fx.rows()).toEqual([]);
    expect(fx.listDir('inbox')).toEqual([...d.files.slice(1), `${d.name}.part`].sort());
    await fsp.rename(fx.path('inbox', `${d.name}.part`), fx.path('inbox', d.name));
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows()).toHaveLength(3);
    expect(fx.listDir('inbox')).toEqual([]);
  });
});

describe.concurrent('wrong checksum', SLOW, () => {
  it('is rejected CHECKSUM_MISMATCH; the table is unchanged; original and report in error/', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    await fx.runOnce();
    const before = fx.rows();
    const d = await fx.makeDelivery({ seq: 2, rows: [row(1, { Quantity: '1111' })], corrupt: true });
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    expect(fx.rows()).toEqual(before);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ status: 'rejected', code: 'CHECKSUM_MISMATCH', file: d.name, sequence: 2 });
    expect(report.reason).toContain(d.sha256);
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`].sort());
    expect(await fsp.readFile(fx.path('error', d.name))).toEqual(d.data);
    expect(fx.listDir('outbox')).toEqual([`${nameFor(1)}.ack.json`]);
    expect(fx.query('SELECT seq FROM dedupe')).toEqual([{ seq: 1 }]);
    expect(fx.listDir('inbox')).toEqual([]);
  });
});

describe.concurrent('a file still being written in place', SLOW, () => {
  it('a checksum mismatch while the client keeps writing is retried later, not rejected', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, corrupt: true });
    // A client (WinSCP writing in place) that paused long enough for the file to settle, and goes on
    // writing through the handle it holds, wherever the file has been renamed to.
    const writer = spawn('bash', ['-c', 'exec 3>>"$1"; while :; do printf x >&3; sleep 0.2; done', 'writer', fx.path('inbox', d.name)], { stdio: 'ignore' });
    t.onTestFinished(() => { writer.kill('SIGKILL'); });
    const run = await fx.runOnce();
    writer.kill('SIGKILL');
    expect(run.code, run.stderr).toBe(75);
    expect(fx.listDir('inbox')).toEqual([...d.files].sort());
    expect(fx.listDir('error')).toEqual([]);
    expect(fx.query('SELECT count(*) AS n FROM deliveries')).toEqual([{ n: 0 }]);
    expect(fx.query("SELECT detail FROM events WHERE step = 'retry'")[0]!.detail).toMatch(/^FILE_CHANGING/);
  });
});

describe.concurrent('resending after a rejection', SLOW, () => {
  it('a corrected resend under the same sequence is accepted; the rejected copy stays in error/', async (t) => {
    const fx = await fixture(t);
    const bad = await fx.makeDelivery({ seq: 1, corrupt: true });
    expect((await fx.runOnce()).code).toBe(1);
    const good = await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows()).toHaveLength(3);
    expect(fx.listDir('archive')).toEqual([...good.files].sort());
    expect(fx.listDir('error')).toEqual([...bad.files, `${bad.name}.error.json`].sort());
    expect(await fx.readFile('error', bad.name)).toEqual(bad.data);
    expect(fx.query('SELECT outcome, code FROM deliveries ORDER BY decided_at, id')).toEqual([{ outcome: 'rejected', code: 'CHECKSUM_MISMATCH' }, { outcome: 'accepted', code: null }]);
  });

  it('the same broken file sent twice keeps both reports: nothing in error/ is overwritten', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, corrupt: true });
    await fx.runOnce();
    await fx.makeDelivery({ seq: 1, corrupt: true });
    expect((await fx.runOnce()).code).toBe(1);
    expect(fx.listDir('error').filter((n) => n.endsWith('.error.json'))).toHaveLength(2);
    expect(fx.listDir('error')).toHaveLength(8);
  });
});

describe.concurrent('a delivery whose companion has not arrived', SLOW, () => {
  it('waits for a missing manifest, then is rejected INCOMPLETE naming it', async (t) => {
    const fx = await fixture(t, { incomplete_after: '1h' });
    // Uploaded just now with its original time kept (WinSCP, `sftp put -p`): a day-old stamp is no age.
    const d = await fx.makeDelivery({ seq: 1, manifest: false, ageMs: 24 * 3_600_000 });
    const uploaded = new Date().toISOString();
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.listDir('inbox')).toEqual(d.files.sort());
    expect(fx.query('SELECT * FROM deliveries')).toEqual([]);

    await fx.writeConfig({ incomplete_after: '1s' });
    await sleep(1100);
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ code: 'INCOMPLETE', file: d.name });
    expect(report.reason).toContain(`${d.name}.manifest.json`);
    expect(report).toMatchObject({ flow: 'inventory', sequence: 1 });
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`].sort());
    expect(fx.listDir('inbox')).toEqual([]);
    expect(fx.rows()).toEqual([]);
    // Received when it arrived (not the day-old stamp, not the run that gave up on it).
    const [rec] = fx.query('SELECT received_at, decided_at FROM deliveries');
    expect(rec!.received_at <= uploaded && rec!.received_at > new Date(Date.now() - 60_000).toISOString() && rec!.decided_at > uploaded, JSON.stringify({ ...rec, uploaded })).toBe(true);
  });

  it('names a missing sidecar too; an optional one is not waited for', async (t) => {
    const fx = await fixture(t, { incomplete_after: '1s' });
    const d = await fx.makeDelivery({ seq: 1, sidecar: false });
    await sleep(1100);
    expect((await fx.runOnce()).code).toBe(1);
    expect((await fx.errorReport()).reason).toContain(`${d.name}.sha256`);

    const fx2 = await fixture(t, { flow: { sidecar: 'optional', manifest: 'optional' } });
    await fx2.makeDelivery({ seq: 1, sidecar: false, manifest: false });
    expect((await fx2.runOnce()).code).toBe(0);
    expect(fx2.rows()).toHaveLength(3);
  });

  it('a manifest arriving within the grace period completes the delivery', async (t) => {
    const fx = await fixture(t, { incomplete_after: '1h' });
    const full = await fx.makeDelivery({ seq: 1 });
    const manifest = await fsp.readFile(fx.path('inbox', full.manifest));
    await fsp.rm(fx.path('inbox', full.manifest));
    await fx.runOnce();
    expect(fx.listDir('inbox')).toHaveLength(2);
    await fsp.writeFile(fx.path('inbox', full.manifest), manifest);
    await fsp.utimes(fx.path('inbox', full.manifest), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows()).toHaveLength(3);
  });
});

describe.concurrent('settle time', SLOW, () => {
  it('a file modified just now is not read yet, whatever modification time it was given', async (t) => {
    const fx = await fixture(t, { settle_time: '1h' }); // generous: the run must start well within it
    const d = await fx.makeDelivery({ seq: 1, ageMs: 0 });
    const d2 = await fx.makeDelivery({ seq: 2, ageMs: 24 * 3_600_000, rows: rowsOf(3, 20) }); // its original time kept by the client
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.listDir('inbox')).toEqual([...d.files, ...d2.files].sort());
    expect(fx.query('SELECT * FROM deliveries')).toEqual([]);
    expect(run.logs.at(-1)).toMatchObject({ msg: 'run complete', waiting: 2, accepted: 0 });

    await fx.writeConfig({ settle_time: '1s' });
    await sleep(1100);
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.query("SELECT seq, outcome FROM deliveries ORDER BY seq")).toEqual([{ seq: 1, outcome: 'accepted' }, { seq: 2, outcome: 'accepted' }]);
  });
});

describe.concurrent('only regular files are read', SLOW, () => {
  it('a symlink named like a delivery is not followed: NOT_A_REGULAR_FILE, the target untouched', async (t) => {
    const fx = await fixture(t);
    const secret = `${fx.dir}/secret.csv`;
    const content = 'SKU,Warehouse,Quantity\nTOP,SECRET,1\n';
    await fsp.writeFile(secret, content);
    const d = await fx.makeDelivery({ seq: 1 });
    await fsp.rm(fx.path('inbox', d.name));
    await fsp.symlink(secret, fx.path('inbox', d.name));
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'NOT_A_REGULAR_FILE', file: d.name });
    expect(await fsp.readFile(secret, 'utf8')).toBe(content);
    expect((await fsp.stat(secret)).mode & 0o777).toBe(0o644);
    expect((await fsp.lstat(fx.path('error', d.name))).isSymbolicLink()).toBe(true);
    expect(fx.rows()).toEqual([]);
    expect(run.stdout).not.toContain('SECRET');
  });

  it('a symlinked manifest is not followed either', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1 });
    const elsewhere = `${fx.dir}/manifest.json`;
    await fsp.rename(fx.path('inbox', d.manifest), elsewhere);
    await fsp.symlink(elsewhere, fx.path('inbox', d.manifest));
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'NOT_A_REGULAR_FILE' });
    expect(fx.rows()).toEqual([]);
    expect((await fsp.stat(elsewhere)).mode & 0o222).not.toBe(0);
  });

  it('a lasting hard link to a file elsewhere is refused HARD_LINK: nothing read, the other file untouched, its SHA-256 not told', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, sidecar: { text: `${'a'.repeat(64)}\n` } }); // a mismatch would tell the file's SHA-256
    const outside = `${fx.dir}/outside.csv`;
    await fsp.rename(fx.path('inbox', d.name), outside);
    await fsp.chmod(outside, 0o644);
    await fsp.link(outside, fx.path('inbox', d.name));
    await sleep(1100); // a second's grace: a link that lasts is no SFTP rename in progress
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ code: 'HARD_LINK', file: d.name, sha256: null, sequence: 1 });
    expect(report.reason).toBe(`${d.name} has 2 links: a hard link shares the file with another name, perhaps outside the inbox; it was not read`);
    expect([JSON.stringify(report), run.stdout].join()).not.toContain(d.sha256);
    expect((await fsp.stat(outside)).mode & 0o777).toBe(0o644);
    expect(await fsp.readFile(outside)).toEqual(d.data);
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`].sort());
    expect(fx.rows()).toEqual([]);
    expect(fx.listDir('archive')).toEqual([]);
  });

  it('a second link that goes away (an OpenSSH rename completing: link, then unlink) is processed normally', async (t) => {
    const fx = await fixture(t, { settle_time: '4s' }); // room for the first run to start within it
    const d = await fx.makeDelivery({ seq: 1 });
    const second = `${fx.dir}/second-link.csv`;
    await fsp.link(fx.path('inbox', d.name), second);
    const early = await fx.runOnce();
    expect(early.code).toBe(0);
    expect(early.logs.at(-1)).toMatchObject({ msg: 'run complete', waiting: 1 });
    expect(fx.listDir('inbox')).toEqual([...d.files].sort());
    expect((await fsp.stat(second)).mode & 0o222).not.toBe(0);
    await fsp.unlink(second);
    await sleep(4100);
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows()).toHaveLength(3);
    expect(fx.listDir('archive')).toEqual([...d.files].sort());
  });

  it('a link made between the listing and the claim: the claim gives the files back, nothing read or changed', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1 });
    const outside = `${fx.dir}/outside.csv`;
    await fsp.link(fx.path('inbox', d.manifest), outside);
    const work = join(fx.dir, 'work');
    expect(await claim(fx.path('inbox'), work, 'x', d.files, { soleLinks: true })).toBeUndefined();
    expect(fx.listDir('inbox')).toEqual([...d.files].sort());
    expect(readdirSync(work)).toEqual([]);
    expect((await fsp.stat(outside)).nlink).toBe(2);
    await fsp.unlink(outside);
    expect(await claim(fx.path('inbox'), work, 'y', d.files, { soleLinks: true })).toBe(join(work, 'y'));
    expect(readdirSync(join(work, 'y')).sort()).toEqual([...d.files].sort());
  });
});

describe.concurrent('names a partner can make (issue 11.9)', SLOW, () => {
  it('a directory named like a data file is reported NOT_A_REGULAR_FILE once, and left where it is', async (t) => {
    const fx = await fixture(t);
    const name = nameFor(1);
    await fsp.mkdir(fx.path('inbox', name), { recursive: true });
    await fsp.writeFile(fx.path('inbox', `${name}/inside.csv`), 'kept');
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'NOT_A_REGULAR_FILE', file: name, flow: 'inventory', sequence: 1, reason: `${name} is a directory, not a file; it was left where it is` });
    expect(fx.listDir('error')).toEqual([`${name}.error.json`]);
    expect(fx.listDir('inbox')).toEqual([name]);
    expect(await fsp.readFile(fx.path('inbox', `${name}/inside.csv`), 'utf8')).toBe('kept');
    // Not again at the next run (a restart), nor the one after.
    expect((await fx.runOnce()).code).toBe(0);
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.listDir('error')).toEqual([`${name}.error.json`]);
    expect(fx.query('SELECT file, code FROM deliveries')).toEqual([{ file: name, code: 'NOT_A_REGULAR_FILE' }]);
    // Other directories are the partner's own business, as before.
    await fsp.mkdir(fx.path('inbox', 'drafts'));
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.listDir('inbox')).toEqual(['drafts', name]);
  });

  it('a file whose name is not valid UTF-8 is reported BAD_FILE_NAME and moved to error/ under its escaped name', async (t) => {
    const fx = await fixture(t);
    await fsp.mkdir(fx.path('inbox'), { recursive: true });
    const raw = Buffer.concat([Buffer.from(`${fx.path('inbox')}/inventory_`), Buffer.from([0xe9, 0xff]), Buffer.from('.csv')]); // Latin-1 é, then a stray byte
    await fsp.writeFile(raw, 'SKU\n');
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ code: 'BAD_FILE_NAME', file: 'inventory_%E9%FF.csv', sha256: null });
    expect(report.reason).toBe('the file name is not valid UTF-8; it is shown, and kept in error/, as "inventory_%E9%FF.csv" (each byte that is no UTF-8 character as %XX); it was not read');
    expect(fx.listDir('error')).toEqual(['inventory_%E9%FF.csv', 'inventory_%E9%FF.csv.error.json']);
    expect(await fx.readText('error', 'inventory_%E9%FF.csv')).toBe('SKU\n');
    expect(await fsp.readdir(fx.path('inbox'), { encoding: 'buffer' })).toEqual([]);
    expect((await fx.runOnce()).code).toBe(0);
  });
});

describe.concurrent('a timestamp that is no real instant (issue 10)', SLOW, () => {
  it('is rejected at once BAD_FILE_NAME saying what is wrong, one report for the delivery, its files together', async (t) => {
    const fx = await fixture(t); // incomplete_after 15m: nothing here waits for it
    const d = await fx.makeDelivery({ name: 'inventory_20250916T020060Z_060.csv' });
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({
      code: 'BAD_FILE_NAME', file: d.name, flow: 'inventory', sequence: 60,
      reason: 'the timestamp 20250916T020060Z in the file name is not a real instant: there is no second 60 (00 to 59)',
    });
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`].sort());
    expect(fx.listDir('inbox')).toEqual([]);
    expect(fx.query('SELECT code FROM deliveries')).toEqual([{ code: 'BAD_FILE_NAME' }]);
    expect(fx.rows()).toEqual([]);
  });

  it('waits for its companions like any delivery, and names what did not arrive', async (t) => {
    const fx = await fixture(t, { incomplete_after: '1s' });
    const d = await fx.makeDelivery({ name: 'inventory_20250931T0200Z_061.csv', manifest: false });
    await sleep(1100);
    expect((await fx.runOnce()).code).toBe(1);
    expect((await fx.errorReport()).reason).toBe(`the timestamp 20250931T0200Z in the file name is not a real instant: 2025-09 has no day 31; and ${d.name}.manifest.json did not arrive`);
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`].sort());
  });
});

describe.concurrent('sequence order', SLOW, () => {
  it('002 and 001 in the inbox together are applied 001 then 002', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 2, rows: [row(1, { Quantity: '222' })] });
    await fx.makeDelivery({ seq: 1, rows: [row(1, { Quantity: '111' }), row(2)] });
    expect((await fx.runOnce()).code).toBe(0);
    const deliveries = fx.query('SELECT id, seq FROM deliveries ORDER BY decided_at, id');
    expect(deliveries.map((x) => x.seq)).toEqual([1, 2]);
    const rows = fx.rows();
    expect(rows.map((r) => [r.sku, r.qty, r._delivery_id])).toEqual([['A-101', 222, deliveries[1]!.id], ['A-102', 12, deliveries[0]!.id]]);
  });

  it('within one file the last row of a key wins', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, rows: [row(1, { Quantity: '1' }), row(1, { Quantity: '2' }), row(1, { Quantity: '3' })] });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows().map((r) => r.qty)).toEqual([3]);
  });
});

describe.concurrent('exit codes', SLOW, () => {
  it('0 when all is good or nothing to do, 1 when some delivery was rejected', async (t) => {
    const fx = await fixture(t);
    expect((await fx.runOnce()).code).toBe(0);
    await fx.makeDelivery({ seq: 1 });
    await fx.makeDelivery({ seq: 2, corrupt: true });
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    expect(run.logs.at(-1)).toMatchObject({ msg: 'run complete', accepted: 1, rejected: 1 });
    expect(fx.rows()).toHaveLength(3);
  });
});

describe.concurrent('logs', SLOW, () => {
  it('are JSON lines, and every line about a delivery names partner, flow, file, seq and delivery id', async (t) => {
    const fx = await fixture(t, { incomplete_after: '1s' });
    await fx.makeDelivery({ seq: 1 });
    await fx.makeDelivery({ seq: 2, corrupt: true });
    await fx.makeDelivery({ seq: 3, manifest: false, ageMs: 10_000 });
    await fsp.writeFile(fx.path('inbox', 'notes.txt'), 'hello');
    await sleep(1100); // incomplete_after
    const run = await fx.runOnce();
    await fx.makeDelivery({ seq: 1 });
    const run2 = await fx.runOnce();
    expect(run.other).toEqual([]);
    const lines = [...run.logs, ...run2.logs];
    const about = lines.filter((l) => 'delivery_id' in l || 'file' in l);
    expect(about.length).toBeGreaterThanOrEqual(8);
    for (const l of about) {
      expect(l, JSON.stringify(l)).toMatchObject({ partner: 'acme', delivery_id: expect.any(String), file: expect.any(String) });
      expect(l, JSON.stringify(l)).toHaveProperty('flow');
      expect(l, JSON.stringify(l)).toHaveProperty('seq');
      if (l.file !== 'notes.txt') expect(l, JSON.stringify(l)).toMatchObject({ flow: 'inventory', seq: expect.any(Number) });
    }
    const outcomes = lines.filter((l) => l.outcome).map((l) => [l.file, l.outcome, l.code]);
    expect(outcomes).toEqual(expect.arrayContaining([
      [nameFor(1), 'accepted', null], [nameFor(2), 'rejected', 'CHECKSUM_MISMATCH'], [nameFor(3), 'rejected', 'INCOMPLETE'],
      ['notes.txt', 'rejected', 'UNKNOWN_FILE'], [nameFor(1), 'duplicate', 'DUPLICATE'],
    ]));
  });
});

describe.concurrent('one inboxd at a time', SLOW, () => {
  it('two runs at once never take each other\'s deliveries: the second exits 75 and changes nothing', async (t) => {
    const fx = await fixture(t);
    for (let seq = 1; seq <= 4; seq++) await fx.makeDelivery({ seq, rows: rowsOf(1500, seq * 10) });
    const runs = await Promise.all([fx.runOnce(), fx.runOnce(), fx.runOnce()]);
    for (const r of runs) {
      if (r.code === 0) continue;
      expect(r.code).toBe(75);
      expect(r.stderr).toMatch(/another inboxd is running/);
    }
    expect(runs.filter((r) => r.code === 0).length).toBeGreaterThanOrEqual(1);
    // Whatever the interleaving: every delivery accepted once, in order, nothing in error/.
    await fx.runOnce();
    expect(fx.query('SELECT seq, outcome FROM deliveries ORDER BY decided_at, id')).toEqual([1, 2, 3, 4].map((seq) => ({ seq, outcome: 'accepted' })));
    expect(fx.listDir('error')).toEqual([]);
    expect(fx.listDir('outbox')).toHaveLength(4);
    expect(fx.listDir('archive')).toHaveLength(12);
    expect(fx.listWork()).toEqual([]);
  });
});
