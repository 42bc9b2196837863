/**
 * EDI X12 end to end (issue 16, step 6), with the real CLI and database: an 846 interchange written
 * by hand after the standard's example is mapped by element reference (LIN03, QTY02) into rows; its
 * ISA13 is the delivery's sequence, so a resent interchange is a duplicate; the partner is answered
 * with a 997 (or 999) in outbox/, and a TA1 when it asks (ISA14=1). Broken envelopes and bad elements
 * are rejected naming the segment, nothing applied, the original kept in error/.
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { partnerKeys, useKeys } from './helpers/gpg.js';
import { type Fixture, fixture, runCli, SLOW } from './helpers/fixture.js';
import { interchange, inventory846 } from './helpers/x12.js';

const MAPPING = `ours,partner,type,required
sku,LIN03,string:64,yes
warehouse,N104,string:16,yes
qty,QTY02,integer,yes
counted_on,BIA04,date,
`;
const x12Flow = (over: Record<string, unknown> = {}) => ({
  mapping: MAPPING,
  flow: { format: 'x12', x12: { line: 'LIN' }, key: ['sku', 'warehouse'], totals: ['qty'], manifest: 'optional', ...over },
});
const items = [{ sku: 'SKU-001', qty: '120' }, { sku: 'SKU-002', qty: '7' }];
const nameOf = (n = '') => `inventory_20250916T0200Z${n}.x12`;

/** Outbox files and the one answer of `kind` (997, 999, ta1) for a data file. */
async function answer(fx: Fixture, file: string, kind: string): Promise<string> {
  expect(fx.listDir('outbox')).toContain(`${file}.${kind}`);
  return fx.readText('outbox', `${file}.${kind}`);
}

describe.concurrent('EDI X12', SLOW, () => {
  it('an 846 is applied by element reference, answered with a 997 in outbox/, its ISA13 the sequence', async (t) => {
    const fx = await fixture(t, x12Flow());
    await fx.makeDelivery({ name: nameOf(), csvText: interchange('000000123', inventory846(items)), manifest: false });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows().map(({ _delivery_id, _updated_at, ...r }) => r)).toEqual([
      { sku: 'SKU-001', warehouse: 'BER1', qty: 120, counted_on: '2025-09-16' },
      { sku: 'SKU-002', warehouse: 'BER1', qty: 7, counted_on: '2025-09-16' },
    ]);
    expect(fx.listDir('outbox')).toEqual([`${nameOf()}.997`]); // the translator reads X12: no JSON beside it
    const ack = await answer(fx, nameOf(), '997');
    expect(ack).toMatch(/^ISA\*00\*.{10}\*00\*.{10}\*ZZ\*INBOXD {9}\*ZZ\*ACMEWHSE {7}\*\d{6}\*\d{4}\*U\*00401\*000000123\*0\*P\*>~\n/);
    expect(ack).toContain('ST*997*0001~\nAK1*IB*1~\nAK2*846*0001~\nAK5*A~\nAK9*A*1*1*1~\nSE*6*0001~');
    expect(fx.query('SELECT outcome, seq FROM deliveries')).toEqual([{ outcome: 'accepted', seq: 123 }]);
    const status = await runCli(['status', '--json', '--config', fx.configPath], { cwd: fx.dir });
    expect(JSON.parse(status.stdout).flows[0]).toMatchObject({ lastSeqApplied: 123, lastInterchange: '000000123' });
  });

  it('an interchange resent under another name is a duplicate: nothing rewritten, no second 997, a TA1 025 when asked', async (t) => {
    const fx = await fixture(t, x12Flow());
    const text = interchange('000000200', inventory846(items), { ack: '1' });
    await fx.makeDelivery({ name: nameOf('_001'), csvText: text, manifest: false });
    expect((await fx.runOnce()).code).toBe(0);
    expect(await answer(fx, nameOf('_001'), '997')).toContain('TA1*000000200*'); // asked for: TA1 A in the same interchange
    const before = fx.rows();
    await fx.makeDelivery({ name: nameOf('_002'), csvText: text, manifest: false });
    await fx.runOnce();
    expect(fx.rows()).toEqual(before);
    expect(fx.query('SELECT outcome, code, seq FROM deliveries ORDER BY received_at')).toEqual([
      { outcome: 'accepted', code: null, seq: 200 },
      { outcome: 'duplicate', code: 'DUPLICATE', seq: 200 },
    ]);
    expect(fx.listDir('outbox')).not.toContain(`${nameOf('_002')}.997`);
    expect(await answer(fx, nameOf('_002'), 'ta1')).toMatch(/TA1\*000000200\*\d{6}\*\d{4}\*R\*025~/);
    expect(fx.listDir('error')).toContain(nameOf('_002'));
  });

  it('a wrong SE count: rejected naming the segment, nothing applied, original in error/, the 997 rejects the set (AK5 R 4)', async (t) => {
    const fx = await fixture(t, x12Flow());
    await fx.makeDelivery({ name: nameOf(), csvText: interchange('000000124', inventory846(items, { se01: '99' })), manifest: false });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ code: 'BAD_ENVELOPE', reason: 'segment 10 (SE01): SE01 says 99 segments, the set has 8 (ST to SE)', sequence: 124 });
    expect(fx.rows()).toEqual([]);
    expect(fx.listDir('error')).toContain(nameOf());
    expect(await answer(fx, nameOf(), '997')).toContain('AK2*846*0001~\nAK5*R*4~\nAK9*R*1*1*0~');
  });

  it('IEA02 not ISA13: the interchange is not read; a TA1 rejects it (note 001) when asked', async (t) => {
    const fx = await fixture(t, x12Flow());
    await fx.makeDelivery({ name: nameOf(), csvText: interchange('000000125', inventory846(items), { iea: '000000999', ack: '1' }), manifest: false });
    expect((await fx.runOnce()).code).toBe(1);
    expect((await fx.errorReport()).reason).toBe('segment 12 (IEA02): IEA02 "000000999" is not ISA13 "000000125" (segment 1)');
    expect(fx.rows()).toEqual([]);
    expect(fx.listDir('outbox')).toEqual([`${nameOf()}.ta1`]);
    expect(await answer(fx, nameOf(), 'ta1')).toMatch(/TA1\*000000125\*\d{6}\*\d{4}\*R\*001~\nIEA\*0\*000000125~/);
  });

  it('a bad element: rejected with the row error at its segment, the 997 names the segment (AK3) and element (AK4)', async (t) => {
    const fx = await fixture(t, x12Flow());
    await fx.makeDelivery({ name: nameOf(), csvText: interchange('000000126', inventory846([items[0]!, { sku: 'SKU-002', qty: 'x5' }])), manifest: false });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report.code).toBe('ROW_ERRORS');
    expect(report.errors).toEqual([expect.objectContaining({ line: 8, column: 'QTY02', reason: expect.stringContaining('is not an integer') })]);
    expect(fx.rows()).toEqual([]);
    // the second LIN loop starts at segment 8 of the interchange; its QTY is the 7th segment of the set (ST being 1)
    expect(await answer(fx, nameOf(), '997')).toContain('AK2*846*0001~\nAK3*QTY*7**8~\nAK4*2**6*x5~\nAK5*R*5~\nAK9*R*1*1*0~');
  });

  it('999 where configured; bad rows the flow tolerates are accepted with errors (IK5 E)', async (t) => {
    const fx = await fixture(t, x12Flow({ x12: { line: 'LIN', ack: 999 }, max_bad_rows: 1 }));
    await fx.makeDelivery({ name: nameOf(), csvText: interchange('000000127', inventory846([items[0]!, { sku: 'SKU-002', qty: '' }])), manifest: false });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows().map((r) => r.sku)).toEqual(['SKU-001']);
    const ack = await answer(fx, nameOf(), '999');
    expect(ack).toContain('ST*999*0001*005010X231A1~');
    expect(ack).toContain('IK3*QTY*7**8~\nIK4*2**1*~\nIK5*E*5~\nAK9*E*1*1*1~');
  });

  it('a crash after the commit: the next run writes the very 997 that was planned, once, and applies nothing twice', async (t) => {
    const fx = await fixture(t, x12Flow());
    await fx.makeDelivery({ name: nameOf(), csvText: interchange('000000128', inventory846(items)), manifest: false });
    expect((await fx.runOnce({ env: { INBOXD_TEST_CRASH_AT: 'after-commit' } })).signal).toBe('SIGKILL');
    expect(fx.listDir('outbox')).toEqual([]);
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.listDir('outbox')).toEqual([`${nameOf()}.997`]);
    const planned = fx.query('SELECT plan FROM deliveries')[0]!.plan as string;
    expect(JSON.parse(planned).writes[0].content).toBe(await fx.readText('outbox', `${nameOf()}.997`));
    expect(fx.rows()).toHaveLength(2);
  });

  it('inboxd check reads an interchange as the pipeline does: envelopes, rows, and ISA13 as the sequence', async (t) => {
    const fx = await fixture(t, x12Flow());
    await fx.makeDelivery({ name: nameOf(), csvText: interchange('000000130', inventory846(items)), manifest: false });
    expect((await fx.runOnce()).code).toBe(0);
    const check = async (text: string) => {
      const sample = join(fx.dir, nameOf());
      await fsp.writeFile(sample, text);
      const run = await runCli(['check', '--config', fx.configPath, '--partner', 'acme', '--flow', 'inventory', sample, '--json'], { cwd: fx.dir });
      return JSON.parse(run.stdout).deliveries[0].checks as { check: string; status: string; message: string }[];
    };
    expect(await check(interchange('000000130', inventory846(items)))).toContainEqual(expect.objectContaining({ check: 'sequence', status: 'fail', message: expect.stringContaining('sequence 130 was already applied with this very content') }));
    expect(await check(interchange('000000131', inventory846(items, { st02: '0009' })))).toContainEqual(expect.objectContaining({ check: 'x12', status: 'fail', message: expect.stringContaining('SE02 "0001" is not ST02 "0009"') }));
    expect(fx.rows()).toHaveLength(2); // check applies nothing
  });

  it('configuration: x12 needs x12.line, element references, and no gap waiting', async (t) => {
    for (const [over, mapping, message] of [
      [{ x12: undefined }, MAPPING, 'format x12 needs x12.line'],
      [{}, MAPPING.replace('QTY02', 'Quantity'), 'partner "Quantity" of "qty" must be an element reference'],
      [{ sequence_gap: 'wait' }, MAPPING, 'a gap cannot be waited for'],
    ] as const) {
      const fx = await fixture(t, { ...x12Flow(over), mapping });
      const run = await fx.runOnce();
      expect(run.code).toBe(78);
      expect(run.stderr + run.stdout).toContain(message);
    }
  });
});

describe('EDI X12, compressed and encrypted', SLOW, () => {
  const keys = partnerKeys({ beforeAll, afterAll });

  it('an .x12.gz.pgp made with gzip and gpg is decrypted, verified, unpacked, applied and answered', async (t) => {
    const fx = await fixture(t, x12Flow());
    const gpg = keys.gpg();
    await useKeys(gpg, fx);
    const many = Array.from({ length: 500 }, (_, i) => ({ sku: `SKU-${i}`, qty: String(i) }));
    const plain = join(fx.dir, 'inventory.x12');
    await fsp.writeFile(plain, interchange('000000140', inventory846(many)));
    execFileSync('gzip', ['-k', plain]);
    await gpg.run(['-u', '<partner@acme>', '-r', '<inboxd@us>', '--compress-algo', 'none', '--sign', '--encrypt', '-o', `${plain}.gz.pgp`, `${plain}.gz`]);
    const name = 'inventory_20250916T0200Z.x12.gz.pgp';
    await fx.makeDelivery({ name, csvText: await fsp.readFile(`${plain}.gz.pgp`), manifest: false });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows()).toHaveLength(500);
    expect(await fx.readText('outbox', `${name}.997`)).toContain('AK5*A~\nAK9*A*1*1*1~');
  });
});
