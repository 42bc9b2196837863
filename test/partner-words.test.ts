/**
 * Error words a partner can act on (issue 15): a date that is no day of the calendar, a manifest sum
 * named by the partner's column, a file split at another delimiter, the key of each bad row in the
 * errors CSV, and a second rejection of a name keeping the file's extension last.
 */
import { describe, expect, it } from 'vitest';
import { fixture, HEADER, MAPPING, nameFor, row, rowsOf } from './helpers/fixture.js';

describe('error words a partner can act on', () => {
  it('"2025-11-31" is not a real date; a malformed one is still "not a date (YYYY-MM-DD)"', async (t) => {
    const fx = await fixture(t, { mapping: `${MAPPING}shipped,ShipDate,date,,,\n` });
    await fx.makeDelivery({ header: [...HEADER, 'ShipDate'], rows: [row(1, { ShipDate: '2025-11-31' }), row(2, { ShipDate: '31.11.2025' }), row(3, { ShipDate: '2025-11-30' })] });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report.code).toBe('ROW_ERRORS');
    expect(report.errors.map((e: Record<string, unknown>) => e.reason)).toEqual(['"2025-11-31" is not a real date', '"31.11.2025" is not a date (YYYY-MM-DD)']);
  });

  it('the errors CSV names each bad row by its key columns, never by personal data', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ rows: [row(1), row(2, { Quantity: 'x1', ContactEmail: 'not-shown@example.com' })] });
    expect((await fx.runOnce()).code).toBe(1);
    const csv = await fx.readText('error', `${nameFor(1)}.errors.csv`);
    expect(csv).toBe('line,SKU,Warehouse,column,reason\r\n3,A-102,BER1,Quantity,"""x1"" is not an integer"\r\n');
    expect((await fx.errorReport()).errors[0]).toMatchObject({ line: 3, column: 'Quantity', key: { SKU: 'A-102', Warehouse: 'BER1' } });
  });

  it("a manifest may name a sum by the partner's column; named both ways it is refused", async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, manifest: { sums: { Quantity: 36 } } });
    expect((await fx.runOnce()).code).toBe(0);
    expect((await fx.readJson('outbox', `${nameFor(1)}.ack.json`)).status).toBe('accepted');
    expect(fx.rows()).toHaveLength(3);
    await fx.makeDelivery({ seq: 2, rows: rowsOf(3, 20), manifest: { sums: { qty: 66, Quantity: 66 } } });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'BAD_MANIFEST', reason: 'the manifest gives the sum of "qty" twice, as "qty" and as "Quantity"; give it once' });
  });

  it('a manifest sum for no control total names the ones there are', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ manifest: { sums: { qty: 36, Stock: 36 } } });
    expect((await fx.runOnce()).code).toBe(1);
    expect((await fx.errorReport()).reason).toBe('the manifest has a sum for "Stock", which is not a control-total column of this flow (its control totals: "qty")');
  });

  it('a semicolon-delimited file rejected as one column hints at the delimiter', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ delimiter: ';' });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report.code).toBe('MISSING_COLUMN');
    expect(report.reason).toMatch(/^line 1: the header lacks "SKU", .*; the header is a single column: the file seems to be delimited by ";", but this flow's csv.delimiter is ","$/);
  });

  it('a second rejection of the same name keeps the extension last: name.<delivery id>.csv', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ corrupt: true });
    expect((await fx.runOnce()).code).toBe(1);
    await fx.makeDelivery({ corrupt: true, rows: rowsOf(2) });
    const second = await fx.runOnce();
    expect(second.code).toBe(1);
    const id = fx.query("SELECT id FROM deliveries ORDER BY received_at DESC, id DESC LIMIT 1")[0]!.id as string;
    const stem = nameFor(1).replace(/\.csv$/, '');
    expect(fx.listDir('error')).toEqual([
      ...[nameFor(1), `${nameFor(1)}.error.json`, `${nameFor(1)}.manifest.json`, `${nameFor(1)}.sha256`],
      ...[`${stem}.${id}.csv`, `${stem}.${id}.csv.error.json`, `${stem}.${id}.csv.manifest.json`, `${stem}.${id}.csv.sha256`],
    ].sort());
  });
});

describe('the ACK gives the sums as the partner sends them', () => {
  it('sums_decimal beside sums in minor units: an amount as a decimal, an integer as itself', async (t) => {
    const fx = await fixture(t, { flow: { totals: ['qty', 'unit_cost'] } });
    await fx.makeDelivery({ rows: [row(1, { UnitCost: '0.05' }), row(2, { UnitCost: '1234.5' }), row(3)], manifest: { sums: { qty: 36, unit_cost: '1236.05' } } });
    expect((await fx.runOnce()).code).toBe(0);
    const ack = await fx.readJson('outbox', `${nameFor(1)}.ack.json`);
    expect(ack.sums).toEqual({ qty: 36, unit_cost: 123605 });
    expect(ack.sums_decimal).toEqual({ qty: '36', unit_cost: '1236.05' });
  });
});
