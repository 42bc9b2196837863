/** The manifest: control totals (record count, sums), its sha256 and its `file`, end to end through the CLI. */
import { describe, expect, it } from 'vitest';
import { fixture, nameFor, row, rowsOf, SLOW } from './helpers/fixture.js';

describe.concurrent('control totals', SLOW, () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['record count', { records: 4 }, 'RECORD_COUNT_MISMATCH'],
    ['sum', { sums: { qty: 37 } }, 'CONTROL_TOTAL_MISMATCH'],
    ['sha256', { sha256: 'a'.repeat(64) }, 'MANIFEST_CHECKSUM_MISMATCH'],
    ['file naming another file', { file: nameFor(9) }, 'BAD_MANIFEST'],
    ['file with a directory', { file: `../${nameFor(1)}` }, 'BAD_MANIFEST'],
    ['file with an absolute path', { file: `/tmp/${nameFor(2)}` }, 'BAD_MANIFEST'],
    ['file with a Windows directory', { file: `..\\${nameFor(2)}` }, 'BAD_MANIFEST'],
    ['sum only inherited through __proto__', { sums: JSON.parse('{"__proto__": {"qty": 48}}') }, 'BAD_MANIFEST'],
    ['sum for a column that is no control total', { sums: { qty: 48, unit_cost: '4.50' } }, 'BAD_MANIFEST'],
    ['no sum for a control-total column', { sums: {} }, 'BAD_MANIFEST'],
    ['records not a number', { records: '3' }, 'BAD_MANIFEST'],
  ];
  it.for(cases)('%s mismatch -> rejected, table unchanged', async ([, manifest, code], t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    await fx.runOnce();
    const before = fx.rows();
    const d = await fx.makeDelivery({ seq: 2, rows: rowsOf(3, 5), manifest });
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    expect(fx.rows()).toEqual(before);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ status: 'rejected', code, file: d.name });
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`].sort());
    expect(fx.query('SELECT seq FROM dedupe')).toEqual([{ seq: 1 }]);
  });

  it('an unreadable manifest is BAD_MANIFEST', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, manifestText: '{"file": "inventory_' });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'BAD_MANIFEST' });
    expect(fx.rows()).toEqual([]);
  });

  it('amount sums are decimals compared in minor units', async (t) => {
    const fx = await fixture(t, { flow: { totals: ['qty', 'unit_cost'] } });
    await fx.makeDelivery({ seq: 1, rows: [row(1, { UnitCost: '1.25' }), row(2, { UnitCost: '2.5' })], manifest: { sums: { qty: 23, unit_cost: '3.75' } } });
    expect((await fx.runOnce()).code).toBe(0);
    expect((await fx.readJson('outbox', `${nameFor(1)}.ack.json`)).sums).toEqual({ qty: 23, unit_cost: 375 });
    await fx.makeDelivery({ seq: 2, rows: [row(1, { UnitCost: '1.25' })], manifest: { sums: { qty: 11, unit_cost: 1.26 } } });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'CONTROL_TOTAL_MISMATCH' });
  });

  it('a header-only file with records 0 is accepted and applies nothing', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, rows: [] });
    expect((await fx.runOnce()).code).toBe(0);
    expect(await fx.readJson('outbox', `${d.name}.ack.json`)).toMatchObject({ status: 'accepted', records: 0, sums: { qty: 0 } });
    expect(fx.rows()).toEqual([]);
  });
});
