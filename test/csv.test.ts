/** CSV parsing end to end: structure errors name the line, dialects, encodings, and values typed by the mapping only. */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, type TestContext } from 'vitest';
import { csvLine, fixture, HEADER, MAPPING, row, type Row, rowsOf, sha256, SLOW } from './helpers/fixture.js';

const line = (r: Row, delimiter = ',') => csvLine(HEADER.map((h) => r[h] ?? ''), delimiter);
const text = (...lines: string[]) => `${[HEADER.join(','), ...lines].join('\n')}\n`;

const STRUCTURAL: Array<[string, string, string, RegExp]> = [
    ['an unbalanced quote', text(line(row(1)), `"A-102,BER1,12,1.50,EUR,NEW,true,b@example.com,2025-09-16T01:55:00Z`, line(row(3))), 'MALFORMED_CSV', /^line 3, column 1: .*quote/],
    ['an unbalanced quote after a multi-line field', text(line(row(1, { ContactEmail: 'a\nb\nc' })), line(row(2)).replace('12,', '"12,'), line(row(3)), line(row(4))), 'MALFORMED_CSV', /^line 5, column 3: .*quote/],
    ['a stray quote inside a field', text(line(row(1)), line(row(2)).replace('BER1', 'BE"R1'), line(row(3))), 'MALFORMED_CSV', /^line 3\b/],
    ['a row with too many columns', text(line(row(1)), `${line(row(2))},extra`, line(row(3))), 'MALFORMED_CSV', /^line 3\b.*columns/],
    ['a row with too few columns', text(line(row(1)), line(row(2)), 'A-103,BER1,13', line(row(4))), 'MALFORMED_CSV', /^line 4\b.*columns/],
];

async function expectStructural(t: TestContext, [, csvText, code, reason]: (typeof STRUCTURAL)[number], env?: Record<string, string>): Promise<void> {
  const fx = await fixture(t);
  const d = await fx.makeDelivery({ seq: 1, csvText, manifest: { records: 3 } });
  const run = await fx.runOnce({ env });
  expect(run.code).toBe(1);
  const report = await fx.errorReport();
  expect(report).toMatchObject({ code, file: d.name });
  expect(report.reason).toMatch(reason);
  expect(fx.rows()).toEqual([]);
}

describe.concurrent('structural errors reject the whole file and name the line', SLOW, () => {
  it.for(STRUCTURAL)('%s', (c, t) => expectStructural(t, c));

  it('bytes that are not UTF-8 are BAD_ENCODING naming their line', async (t) => {
    const fx = await fixture(t);
    const bytes = Buffer.concat([Buffer.from(text(line(row(1)), line(row(2))) ), Buffer.from('A-103,BER1,13,1.50,EUR,NEW,true,caf'), Buffer.from([0xe9]), Buffer.from('@example.com,2025-09-16T01:55:00Z\n')]);
    await fx.makeDelivery({ seq: 1, csvText: bytes });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report.code).toBe('BAD_ENCODING');
    expect(report.reason).toMatch(/^line 4\b/);
    expect(fx.rows()).toEqual([]);
  });

  it('bytes that are not UTF-8 deep in a large file name their line', async (t) => {
    const fx = await fixture(t);
    const good = Array.from({ length: 5000 }, (_, i) => line(row(i + 1)));
    const bytes = Buffer.concat([Buffer.from(text(...good)), Buffer.from([0xff, 0x0a])]);
    await fx.makeDelivery({ seq: 1, csvText: bytes, manifest: { records: 5001 } });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report.code).toBe('BAD_ENCODING');
    expect(report.reason).toMatch(/^line 5002\b/);
  });

  it('a record larger than max_record_bytes is refused', async (t) => {
    const fx = await fixture(t, { flow: { csv: { max_record_bytes: 1000 } } });
    await fx.makeDelivery({ seq: 1, csvText: text(line(row(1)), line(row(2, { ContactEmail: 'x'.repeat(5000) })), line(row(3))) });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report.code).toBe('MALFORMED_CSV');
    expect(report.reason).toMatch(/^line 3\b.*maximum record size/);
  });

  it('a missing header column is MISSING_COLUMN naming it; a duplicated one is MALFORMED_CSV', async (t) => {
    const fx = await fixture(t);
    const header = HEADER.filter((h) => h !== 'Warehouse');
    await fx.makeDelivery({ seq: 1, header });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report.code).toBe('MISSING_COLUMN');
    expect(report.reason).toContain('"Warehouse"');

    const fx2 = await fixture(t);
    await fx2.makeDelivery({ seq: 1, csvText: `${HEADER.join(',')},SKU\n${line(row(1))},X\n`, manifest: { records: 1, sums: { qty: 11 } } });
    expect((await fx2.runOnce()).code).toBe(1);
    expect(await fx2.errorReport()).toMatchObject({ code: 'MALFORMED_CSV' });
  });

  it('an empty file (no header line) is rejected, even when the manifest says 0 records', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, csvText: '\n', manifest: { records: 0, sums: { qty: 0 } } });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'MISSING_COLUMN', reason: expect.stringMatching(/^line 1\b.*empty/) });
    expect(fx.listDir('outbox')).toEqual([]);
  });

  it('a file in another dialect (semicolons) is rejected, not half-read', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, delimiter: ';' });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'MISSING_COLUMN' });
  });
});

describe.concurrent('what CSV files look like in practice', SLOW, () => {
  it('a UTF-8 BOM is stripped, CRLF works, quoted fields may hold newlines, delimiters and quotes', async (t) => {
    const fx = await fixture(t);
    const rows = [row(1, { ContactEmail: 'line one\r\nline two' }), row(2, { ContactEmail: 'a, "quoted" b' }), row(3, { ContactEmail: 'line one\nline two' })];
    await fx.makeDelivery({ seq: 1, rows, bom: true, lineEnd: '\r\n' });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows().map((r) => [r.sku, r.contact])).toEqual([['A-101', 'line one\r\nline two'], ['A-102', 'a, "quoted" b'], ['A-103', 'line one\nline two']]);
  });

  it('line numbers after a field with embedded newlines are physical lines', async (t) => {
    const fx = await fixture(t);
    const rows = [row(1, { ContactEmail: 'one\ntwo\nthree' }), row(2), row(3, { Quantity: 'many' })];
    await fx.makeDelivery({ seq: 1, rows });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report.code).toBe('ROW_ERRORS');
    expect(report.errors).toMatchObject([{ line: 6, column: 'Quantity', reason: expect.stringContaining('not an integer') }]);
  });

  it('values are typed by the mapping, never by csv-parse: 0x10 is no integer, 00123 stays a string', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, rows: [row(1, { SKU: '00123', Quantity: '0x10' }), row(2, { SKU: '1e3', Quantity: '1e3' }), row(3, { SKU: '0x10', Quantity: '00123' })] });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report.errors.map((e: { line: number; column: string }) => [e.line, e.column])).toEqual([[2, 'Quantity'], [3, 'Quantity']]);
    expect(report.errors[0].reason).toContain('"0x10"');

    const fx2 = await fixture(t);
    await fx2.makeDelivery({ seq: 1, rows: [row(1, { SKU: '00123', Quantity: '00123' }), row(2, { SKU: '0x10', Quantity: '+7' }), row(3, { SKU: 'true', UnitCost: '007.10' })], manifest: { sums: { qty: 143 } } });
    expect((await fx2.runOnce()).code).toBe(0);
    expect(fx2.rows().map((r) => [r.sku, r.qty, r.unit_cost])).toEqual([['00123', 123, 150], ['0x10', 7, 150], ['true', 13, 710]]);
  });

  it('a header named __proto__ (or constructor) is a column like any other and pollutes nothing', async (t) => {
    const mapping = `${MAPPING}note,__proto__,string,,,\nkind,constructor,string,,,\n`;
    const fx = await fixture(t, { mapping });
    const header = [...HEADER, '__proto__', 'constructor', 'hasOwnProperty'];
    const rows = [row(1, { constructor: 'ctor value', hasOwnProperty: 'x' })];
    // Object literals treat __proto__ specially: build the row with defineProperty.
    Object.defineProperty(rows[0], '__proto__', { value: 'proto value', enumerable: true });
    await fx.makeDelivery({ seq: 1, header, rows, manifest: { sums: { qty: 11 } } });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows().map((r) => [r.sku, r.note, r.kind])).toEqual([['A-101', 'proto value', 'ctor value']]);
  });

  it('semicolons, no header, column numbers in the mapping', async (t) => {
    const mapping = MAPPING.split('\n').map((l, i) => (i === 0 || !l ? l : l.replace(/^([^,]+),([^,]+),/, (_m, ours) => `${ours},${i},`))).join('\n');
    const fx = await fixture(t, { mapping, flow: { csv: { delimiter: ';', header: false } } });
    const rows = [row(1, { UnitCost: '2.50' }), row(2)];
    await fx.makeDelivery({ seq: 1, csvText: rows.map((r) => `${line(r, ';')}\n`).join(''), manifest: { records: 2, sums: { qty: 23 } } });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows().map((r) => [r.sku, r.qty, r.unit_cost, r.updated_at])).toEqual([['A-101', 11, 250, '2025-09-16T01:55:00Z'], ['A-102', 12, 150, '2025-09-16T01:55:00Z']]);
  });

  it('latin1 files are decoded as declared', async (t) => {
    const fx = await fixture(t, { flow: { csv: { encoding: 'latin1' } } });
    const csvText = Buffer.from(text(line(row(1, { ContactEmail: 'café@example.com' }))), 'latin1');
    await fx.makeDelivery({ seq: 1, csvText, manifest: { records: 1, sums: { qty: 11 } } });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows().map((r) => r.contact)).toEqual(['café@example.com']);
  });

  it('a custom file-name pattern gives the sequence; other names are not deliveries', async (t) => {
    const fx = await fixture(t, { incomplete_after: '1s', flow: { pattern: '^stock-(?<seq>\\d+)\\.csv$' } });
    const d = await fx.makeDelivery({ name: 'stock-0007.csv' });
    const other = await fx.makeDelivery({ name: 'inventory_20250916T0200Z_001.csv' });
    await sleep(1100); // incomplete_after: then a file that belongs to no flow is rejected
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.readJson('outbox', `${d.name}.ack.json`)).toMatchObject({ status: 'accepted', sequence: 7, sha256: sha256(d.data) });
    const reports = fx.listDir('error').filter((n) => n.endsWith('.error.json'));
    expect(reports).toHaveLength(3); // data file, sidecar and manifest: none belongs to a flow
    for (const r of reports) expect(await fx.readJson('error', r)).toMatchObject({ code: 'UNKNOWN_FILE' });
    expect(fx.listDir('error')).toEqual(expect.arrayContaining(other.files));
  });
});

/**
 * Files are cut into chunks of whole records that threads parse at once. Tiny chunks (a row or two
 * each; INBOXD_TEST_CHUNK_BYTES) make every small file a many-chunk one.
 */
describe.concurrent('a file parsed in many chunks at once reads as one', SLOW, () => {
  const CHUNKS = { INBOXD_TEST_CHUNK_BYTES: '64' };

  it.for(STRUCTURAL)('%s: the same error, the same line', (c, t) => expectStructural(t, c, CHUNKS));

  it('rows are applied in file order: the last row of a key wins', async (t) => {
    const fx = await fixture(t);
    const rows = [...rowsOf(60), ...rowsOf(60).map((r, i) => ({ ...r, Quantity: String(1000 + i) }))];
    const d = await fx.makeDelivery({ seq: 1, rows });
    expect((await fx.runOnce({ env: CHUNKS })).code).toBe(0);
    expect(fx.rows().map((r) => [r.sku, r.qty])).toEqual(rowsOf(60).map((r, i) => [r.SKU, 1000 + i]));
    expect(await fx.readJson('outbox', `${d.name}.ack.json`)).toMatchObject({ records: 120 });
  });

  it('row errors from every chunk: counted in full, listed by line up to the cap', async (t) => {
    const fx = await fixture(t, { flow: { max_reported_errors: 5 } });
    const rows = rowsOf(80).map((r, i) => (i % 7 === 3 ? { ...r, Quantity: 'many' } : r));
    await fx.makeDelivery({ seq: 1, rows });
    expect((await fx.runOnce({ env: CHUNKS })).code).toBe(1);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ code: 'ROW_ERRORS', error_count: 11, errors_truncated: true });
    expect(report.errors.map((e: { line: number }) => e.line)).toEqual([5, 12, 19, 26, 33]);
    expect(fx.rows()).toEqual([]);
  });

  it('the error earliest in the file is the one reported, though later chunks fail too', async (t) => {
    const fx = await fixture(t);
    const lines = rowsOf(40).map((r) => line(r));
    lines[29] = `${lines[29]},extra`; // line 31
    lines[34] = lines[34]!.replace('BER1', 'BE"R1'); // line 36
    await fx.makeDelivery({ seq: 1, csvText: Buffer.concat([Buffer.from(text(...lines)), Buffer.from([0xff, 0x0a])]) });
    expect((await fx.runOnce({ env: CHUNKS })).code).toBe(1);
    expect((await fx.errorReport()).reason).toMatch(/^line 31\b.*columns/);
  });

  it('line numbers after fields with embedded newlines are physical lines', async (t) => {
    const fx = await fixture(t);
    const rows = [row(1, { ContactEmail: 'one\ntwo\nthree' }), ...rowsOf(20, 2), row(22, { ContactEmail: 'a\r\nb' }), row(23, { Quantity: 'many' })];
    await fx.makeDelivery({ seq: 1, rows });
    expect((await fx.runOnce({ env: CHUNKS })).code).toBe(1);
    expect((await fx.errorReport()).errors).toMatchObject([{ line: 27, column: 'Quantity', reason: expect.stringContaining('not an integer') }]);
  });

  it('CR line ends (no newline to cut at): read in order by one parser, lines still named', async (t) => {
    const fx = await fixture(t, { flow: { csv: { max_record_bytes: 200 } } });
    const rows = rowsOf(30).map((r, i) => (i === 24 ? { ...r, Quantity: 'many' } : r));
    await fx.makeDelivery({ seq: 1, rows, lineEnd: '\r' });
    expect((await fx.runOnce({ env: CHUNKS })).code).toBe(1);
    expect((await fx.errorReport()).errors).toMatchObject([{ line: 26, column: 'Quantity', reason: expect.stringContaining('not an integer') }]);

    const ok = await fixture(t, { flow: { csv: { max_record_bytes: 200 } } });
    await ok.makeDelivery({ seq: 1, rows: rowsOf(30), lineEnd: '\r' });
    expect((await ok.runOnce({ env: CHUNKS })).code).toBe(0);
    expect(ok.rows()).toHaveLength(30);
  });

  it('an unclosed quote in a large file names its line', async (t) => {
    const fx = await fixture(t, { flow: { csv: { max_record_bytes: 300 } } });
    const lines = rowsOf(40).map((r) => line(r));
    lines[9] = lines[9]!.replace('BER1', '"BER1'); // line 11
    await fx.makeDelivery({ seq: 1, csvText: text(...lines) });
    expect((await fx.runOnce({ env: CHUNKS })).code).toBe(1);
    expect((await fx.errorReport()).reason).toMatch(/^line 11, column 2: the row grows past the maximum record size by line \d+: is a quote never closed\?/);
  });
});
