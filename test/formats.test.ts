/**
 * Formats beyond CSV (issue 16), end to end with the real CLI: compressed files made with the gzip and
 * zip command-line tools, NDJSON and fixed-width files as partners export them, and hostile ones (a zip
 * bomb, a zip of two files or with a path out of its directory, a 10 MB line, a line that is not JSON,
 * a trailer with the wrong count). Each rejection names the position, applies nothing, keeps the original.
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { defaultPattern } from '../src/config/config.js';
import { partnerKeys, useKeys } from './helpers/gpg.js';
import ExcelJS from 'exceljs';
import { parseRange } from '../src/config/mapping.js';
import { LineChunker } from '../src/formats/lines.js';
import { ndjsonReader } from '../src/formats/ndjson.js';
import { JsonPaths } from '../src/formats/json-paths.js';
import type { FieldSpec } from '../src/config/mapping.js';
import { csvLine, type Fixture, fixture, HEADER, type Row, rowsOf, runCli, SLOW } from './helpers/fixture.js';

const stamp = '20250916T0200Z';
const csvOf = (rows: Row[]) => [HEADER, ...rows.map((r) => HEADER.map((h) => r[h] ?? ''))].map((c) => `${csvLine(c)}\n`).join('');
const qtyOf = (rows: Row[]) => rows.reduce((s, r) => s + Number(r.Quantity), 0);

/** Runs a partner's tool in a scratch directory of the fixture and returns the file it wrote. */
async function made(fx: Fixture, inputs: Record<string, string | Buffer>, tool: (dir: string) => void, output: string): Promise<Buffer> {
  const dir = await fsp.mkdtemp(join(fx.dir, 'partner-'));
  for (const [name, content] of Object.entries(inputs)) await fsp.writeFile(join(dir, name), content);
  tool(dir);
  return fsp.readFile(join(dir, output));
}
const gzipped = (fx: Fixture, name: string, content: string | Buffer) => made(fx, { [name]: content }, (dir) => execFileSync('gzip', ['-k', name], { cwd: dir }), `${name}.gz`);
const zipped = (fx: Fixture, files: Record<string, string | Buffer>, args: string[] = []) => made(fx, files, (dir) => execFileSync('zip', ['-q', ...args, 'out.zip', ...Object.keys(files)], { cwd: dir }), 'out.zip');

/** A rejection as the partner and the operator see it: the code, nothing applied, the original in error/. */
async function expectRejected(fx: Fixture, file: string, code: string): Promise<Record<string, any>> {
  const run = await fx.runOnce();
  expect(run.code).toBe(1);
  const report = await fx.errorReport();
  expect(report).toMatchObject({ status: 'rejected', code, file });
  expect(fx.rows()).toEqual([]);
  expect(fx.listDir('error')).toContain(file);
  expect(fx.query('SELECT outcome, code FROM deliveries')).toEqual([{ outcome: 'rejected', code }]);
  return report;
}

describe('line formats, unit by unit', () => {
  it('the chunker cuts at newlines only, into chunks of about its size, keeps line numbers across reads, and stops a line over the limit', () => {
    const chunker = new LineChunker(8, 20);
    const chunks = [...chunker.push(Buffer.from('\uFEFFaaaa\nbb')), ...chunker.push(Buffer.from('bb\r\ncc\n\ndd')), ...chunker.end()];
    expect(chunks.map((c) => [c.bytes.toString(), c.firstLine])).toEqual([['aaaa\n', 1], ['bbbb\r\n', 2], ['cc\n\n', 3], ['dd', 5]]);
    // One read of many chunks' worth is cut into many chunks, none much over the size but for a longer line.
    const big = new LineChunker(100, 1000);
    const lines = Array.from({ length: 300 }, (_, i) => (i === 150 ? 'L'.repeat(400) : `line ${i}`));
    const cut = [...big.push(Buffer.from(lines.join('\n') + '\n')), ...big.end()];
    expect(cut.map((c) => c.bytes.toString()).join('')).toBe(lines.join('\n') + '\n');
    expect(cut.length).toBeGreaterThan(20);
    for (const c of cut) expect(c.bytes.length <= 100 || c.bytes.toString().includes('L'.repeat(400)), c.bytes.toString()).toBe(true);
    expect(cut.map((c) => c.firstLine)).toEqual(cut.map((_, i) => 1 + cut.slice(0, i).reduce((n, c) => n + c.bytes.toString().split('\n').length - 1, 0)));
    const tight = new LineChunker(8, 20);
    tight.push(Buffer.from('ok\n'));
    expect(() => tight.push(Buffer.from('x'.repeat(21)))).toThrow('line 2: a record longer than 20 bytes');
  });

  it('NDJSON numbers reach the mapping as written, exactly, beyond what a double holds', () => {
    const fields = ['a', 'b.c', 'd', 'e', 'missing'].map((partner) => ({ partner }) as FieldSpec);
    const records: string[][] = [];
    const text = '{"a": 9007199254740993, "b": {"c": 12.345678901234567891}, "d": 1.5, "e": true}\n{"a": null, "b": 1, "d": "x", "e": {"f": 1}}';
    ndjsonReader(fields, 1 << 20).read({ bytes: Buffer.from(text), firstLine: 1, more: false }, (r) => records.push(r), () => {});
    expect(records).toEqual([['9007199254740993', '12.345678901234567891', '1.5', 'true', ''], ['', '', 'x', '{"f":1}', '']]);
  });

  it("NDJSON's fast path reads what JSON.parse reads, and accepts nothing it refuses", () => {
    // Lines generated from tricky parts (escapes, duplicate keys, numbers a double rounds or String
    // rewrites, `length` and `__proto__` keys), half of them mutated by a character. Each is read by
    // JSON.parse alone (the fast path made to pass), then as it comes, alone and after a non-ASCII line.
    let seed = 16;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const pick = <T,>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const KEYS = ['item', 'sku', 'qty', 'lines', '0', '1', 'length', '__proto__', 'a', 'b', 'price', ''];
    const NUMBERS = ['0', '-0', '-1', '10', '1.50', '0.1', '0.000001', '0.0000001', '-0.0', '1e2', '1E-2', '2e+3', '9007199254740993', '123456789012345', '1234567890123456', '0.123456789012345', '0.1234567890123456', '-12345.678', '00', '01', '-', '1.', '.5', '1e', '1e400'];
    const STRINGS = ['"x"', '""', '"a\\"b"', '"\\u0041"', '"\\n"', '"\\x"', '"\\u12"', '"tab\tin"', '"\\/"', '"\\\\"'];
    const list = (items: string[], open: string, close: string) => open + items.join(pick([',', ', ', ',\t'])) + pick(['', ' ']) + close;
    const value = (depth: number): string => {
      const r = rnd();
      if (depth > 3 || r < 0.3) return pick(NUMBERS);
      if (r < 0.55) return pick(STRINGS);
      if (r < 0.62) return pick(['true', 'false', 'null', 'tru', 'nul']);
      if (r < 0.85) return object(depth + 1);
      return list(Array.from({ length: Math.floor(rnd() * 4) }, () => value(depth + 1)), '[', ']');
    };
    const object = (depth: number) => list(Array.from({ length: Math.floor(rnd() * 5) }, () => `${pick(['', ' '])}"${pick(KEYS)}"${pick(['', ' '])}:${pick(['', ' '])}${value(depth)}`), '{', '}');
    const mutate = (s: string) => {
      const i = Math.floor(rnd() * (s.length + 1));
      return s.slice(0, i) + pick([...'{}[]",:0-e.\\ t\t\r5E+', '']) + s.slice(i + pick([0, 1]));
    };
    const paths = ['item.sku', 'qty', 'lines.0.qty', 'lines.1', 'lines.length', 'price', 'a.b', '__proto__', 'a', 'item.0', ''];
    const reader = ndjsonReader(paths.map((partner) => ({ partner }) as FieldSpec), 1 << 20);
    const lastLine = (text: string) => {
      const out: unknown[] = [];
      reader.read({ bytes: Buffer.from(text), firstLine: 1, more: false }, (r) => out.push(r), (_line, why) => out.push(why));
      return out.at(-1);
    };
    const fast = vi.spyOn(JsonPaths.prototype, 'read');
    let answered = 0;
    let records = 0;
    for (let n = 0; n < 20_000; n++) {
      let line = object(0);
      if (rnd() < 0.5) line = mutate(line);
      fast.mockReturnValueOnce(undefined);
      const parsed = lastLine(line);
      fast.mockClear();
      expect(lastLine(line), line).toEqual(parsed);
      answered += fast.mock.results.filter((r) => r.value !== undefined).length;
      // After a line of non-ASCII text (read by JSON.parse), the fast path finds this line's bytes all the same.
      expect(lastLine(`{"sku": "Überzug – ☃"}\r\n${line}`), line).toEqual(parsed);
      expect(fast).toHaveBeenCalledTimes(2);
      records += typeof parsed === 'string' ? 0 : 1;
      fast.mockClear();
    }
    fast.mockRestore();
    // The comparison means something only if both kinds of line were many, and the fast path answered most records.
    expect(records).toBeGreaterThan(5000);
    expect(answered).toBeGreaterThan(records * 0.6);
    expect(answered).toBeLessThan(records);
  });

  it('a character range is start-end or start+length, 1-based', () => {
    expect(parseRange('1-10')).toEqual({ start: 0, end: 10 });
    expect(parseRange('11+4')).toEqual({ start: 10, end: 14 });
    for (const bad of ['0-3', '5-4', '3', 'a-b', '2+0']) expect(parseRange(bad), bad).toBeUndefined();
  });
});

describe('the default file-name pattern', () => {
  it('takes .gz or .zip after the data extension and before an OpenPGP one', () => {
    const re = new RegExp(defaultPattern('acme', 'inventory'));
    for (const ok of ['csv', 'csv.gz', 'csv.zip', 'csv.gz.pgp', 'txt.zip.asc']) expect(re.test(`inventory_${stamp}_001.${ok}`), ok).toBe(true);
    for (const bad of ['gz', 'csv.pgp.gz', 'csv.gz.gz', 'ndjson']) expect(re.test(`inventory_${stamp}_001.${bad}`), bad).toBe(false);
    expect(new RegExp(defaultPattern('acme', 'inventory', 'ndjson')).test(`inventory_${stamp}_001.ndjson.gz`)).toBe(true);
    expect(new RegExp(defaultPattern('acme', 'inventory', 'fixed')).test(`inventory_${stamp}_001.dat`)).toBe(true);
  });
});

describe.concurrent('compressed CSV', SLOW, () => {
  it('a .csv.gz from gzip is unpacked and applied; the sidecar covers the .gz, the manifest the records', async (t) => {
    const fx = await fixture(t);
    const rows = rowsOf(500);
    const name = `inventory_${stamp}_001.csv.gz`;
    const data = await gzipped(fx, 'inventory.csv', csvOf(rows));
    const d = await fx.makeDelivery({ name, csvText: data, rows, manifest: { records: 500, sums: { qty: qtyOf(rows) } } });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows()).toHaveLength(500);
    expect(await fx.readJson('outbox', `${name}.ack.json`)).toMatchObject({ status: 'accepted', records: 500, sha256: d.sha256 });
  });

  it('a .csv.zip from zip holding one file is applied', async (t) => {
    const fx = await fixture(t);
    const rows = rowsOf(20);
    const name = `inventory_${stamp}_001.csv.zip`;
    const data = await zipped(fx, { 'inventory.csv': csvOf(rows) });
    await fx.makeDelivery({ name, csvText: data, rows });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows()).toHaveLength(20);
    expect(fx.listWork().flatMap((d) => d)).toEqual([]);
  });

  it('a zip bomb is refused by its ratio before it is unpacked', async (t) => {
    const fx = await fixture(t);
    const name = `inventory_${stamp}_001.csv.zip`;
    const data = await zipped(fx, { 'inventory.csv': Buffer.alloc(50 * 1024 * 1024, '0') });
    expect(data.length).toBeLessThan(200_000);
    await fx.makeDelivery({ name, csvText: data });
    const report = await expectRejected(fx, name, 'LIMIT_EXCEEDED');
    expect(report.reason).toMatch(/inventory\.csv" expands more than 100 times/);
  });

  it('a gzip bomb is stopped while it streams', async (t) => {
    const fx = await fixture(t);
    const name = `inventory_${stamp}_001.csv.gz`;
    const data = await gzipped(fx, 'inventory.csv', Buffer.concat([Buffer.from(`${HEADER.join(',')}\n`), Buffer.alloc(50 * 1024 * 1024, '0,0,0,0,0,0,0,0,0\n')]));
    await fx.makeDelivery({ name, csvText: data });
    const report = await expectRejected(fx, name, 'LIMIT_EXCEEDED');
    expect(report.reason).toMatch(/expands more than 100 times/);
  });

  it('a zip of two files is rejected, naming both', async (t) => {
    const fx = await fixture(t);
    const name = `inventory_${stamp}_001.csv.zip`;
    const data = await zipped(fx, { 'a.csv': csvOf(rowsOf(2)), 'b.csv': csvOf(rowsOf(2)) });
    await fx.makeDelivery({ name, csvText: data, rows: rowsOf(2) });
    const report = await expectRejected(fx, name, 'BAD_COMPRESSION');
    expect(report.reason).toMatch(/more than one file \("a\.csv", "b\.csv"\)/);
  });

  it('a zip entry named with .. is rejected, naming it', async (t) => {
    const fx = await fixture(t);
    const name = `inventory_${stamp}_001.csv.zip`;
    // The zip tool strips "../" itself; a hostile sender writes the name directly.
    const script = "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1],'w'); z.writestr('../evil.csv', sys.argv[2]); z.close()";
    const data = await made(fx, {}, (dir) => execFileSync('python3', ['-c', script, join(dir, 'out.zip'), csvOf(rowsOf(2))]), 'out.zip');
    await fx.makeDelivery({ name, csvText: data, rows: rowsOf(2) });
    const report = await expectRejected(fx, name, 'BAD_COMPRESSION');
    expect(report.reason).toContain('../evil.csv');
  });

  it('a zip holding a symbolic link is rejected', async (t) => {
    const fx = await fixture(t);
    const name = `inventory_${stamp}_001.csv.zip`;
    const data = await made(fx, {}, (dir) => {
      execFileSync('ln', ['-s', '/etc/passwd', 'inventory.csv'], { cwd: dir });
      execFileSync('zip', ['-q', '--symlinks', 'out.zip', 'inventory.csv'], { cwd: dir });
    }, 'out.zip');
    await fx.makeDelivery({ name, csvText: data, rows: rowsOf(2) });
    const report = await expectRejected(fx, name, 'BAD_COMPRESSION');
    expect(report.reason).toMatch(/"inventory\.csv" is not a regular file/);
  });

  it('a zip whose entry is password-protected, or a .zip that is no zip, is rejected', async (t) => {
    const name = `inventory_${stamp}_001.csv.zip`;
    const locked = await fixture(t);
    await locked.makeDelivery({ name, csvText: await zipped(locked, { 'inventory.csv': csvOf(rowsOf(2)) }, ['-P', 'secret']), rows: rowsOf(2) });
    expect((await expectRejected(locked, name, 'BAD_COMPRESSION')).reason).toMatch(/entry "inventory\.csv" is encrypted/);
    const fake = await fixture(t);
    await fake.makeDelivery({ name, csvText: csvOf(rowsOf(2)), rows: rowsOf(2) });
    expect((await expectRejected(fake, name, 'BAD_COMPRESSION')).reason).toMatch(/^the zip file cannot be read/);
  });

  it('a truncated .gz is rejected as BAD_COMPRESSION', async (t) => {
    const fx = await fixture(t);
    const name = `inventory_${stamp}_001.csv.gz`;
    const whole = await gzipped(fx, 'inventory.csv', csvOf(rowsOf(2000)));
    await fx.makeDelivery({ name, csvText: whole.subarray(0, whole.length >> 1), rows: rowsOf(2000) });
    const report = await expectRejected(fx, name, 'BAD_COMPRESSION');
    expect(report.reason).toMatch(/truncated/);
  });
});

const NDJSON_MAPPING = `ours,partner,type,required
sku,item.sku,string:64,yes
warehouse,item.warehouse,string:16,yes
qty,qty,integer,yes
unit_cost,price.amount,amount:2,
active,active,boolean,
updated_at,updated,datetime,yes
`;
const ndjsonFlow = { flow: { format: 'ndjson', key: ['sku', 'warehouse'], totals: ['qty'] }, mapping: NDJSON_MAPPING };
const jsonRow = (i: number, extra: Record<string, unknown> = {}) => JSON.stringify({ item: { sku: `A-${i}`, warehouse: 'BER1' }, qty: i, price: { amount: 1.5, currency: 'EUR' }, active: i % 2 === 0, updated: '2025-09-16T01:55:00Z', ...extra });
const ndjsonName = (seq = 1, ext = 'ndjson') => `inventory_${stamp}_${String(seq).padStart(3, '0')}.${ext}`;

describe.concurrent('NDJSON', SLOW, () => {
  it('one object per line, nested values by path, blank lines and CRLF taken', async (t) => {
    const fx = await fixture(t, ndjsonFlow);
    const text = `${jsonRow(1)}\r\n\n${jsonRow(2, { price: { amount: '12.34' } })}\n${jsonRow(3, { active: null })}`;
    await fx.makeDelivery({ name: ndjsonName(), csvText: text, manifest: { records: 3, sums: { qty: 6 } } });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows().map(({ _delivery_id, _updated_at, ...r }) => r)).toEqual([
      { sku: 'A-1', warehouse: 'BER1', qty: 1, unit_cost: 150, active: 0, updated_at: '2025-09-16T01:55:00Z' },
      { sku: 'A-2', warehouse: 'BER1', qty: 2, unit_cost: 1234, active: 1, updated_at: '2025-09-16T01:55:00Z' },
      { sku: 'A-3', warehouse: 'BER1', qty: 3, unit_cost: 150, active: null, updated_at: '2025-09-16T01:55:00Z' },
    ]);
  });

  it('a gzip-compressed NDJSON file is applied', async (t) => {
    const fx = await fixture(t, ndjsonFlow);
    const lines = Array.from({ length: 1000 }, (_, i) => jsonRow(i + 1)).join('\n');
    const data = await gzipped(fx, 'x.ndjson', lines);
    await fx.makeDelivery({ name: ndjsonName(1, 'ndjson.gz'), csvText: data, manifest: { records: 1000, sums: { qty: 500500 } } });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows()).toHaveLength(1000);
  });

  it('a line that is not JSON is a row error with its line', async (t) => {
    const fx = await fixture(t, ndjsonFlow);
    const text = `${jsonRow(1)}\n{"item": {"sku": "A-2",\n${jsonRow(3)}\n[1,2]\n`;
    const name = ndjsonName();
    await fx.makeDelivery({ name, csvText: text, manifest: { records: 4, sums: { qty: 4 } } });
    const report = await expectRejected(fx, name, 'ROW_ERRORS');
    expect(report.errors).toEqual([
      expect.objectContaining({ line: 2, reason: expect.stringMatching(/^The line is not JSON/) }),
      expect.objectContaining({ line: 4, reason: 'The line is not a JSON object' }),
    ]);
  });

  it('a 10 MB line is read when max_record_bytes allows it, and rejected naming its line when not', async (t) => {
    const big = jsonRow(2, { notes: 'x'.repeat(10 * 1024 * 1024) });
    const text = `${jsonRow(1)}\n${big}\n${jsonRow(3)}\n`;
    const roomy = await fixture(t, { ...ndjsonFlow, flow: { ...ndjsonFlow.flow, max_record_bytes: 16 * 1024 * 1024 } });
    await roomy.makeDelivery({ name: ndjsonName(), csvText: text, manifest: { records: 3, sums: { qty: 6 } } });
    expect((await roomy.runOnce()).code).toBe(0);
    expect(roomy.rows().map((r) => r.sku)).toEqual(['A-1', 'A-2', 'A-3']);

    const tight = await fixture(t, ndjsonFlow);
    await tight.makeDelivery({ name: ndjsonName(), csvText: text, manifest: { records: 3, sums: { qty: 6 } } });
    const report = await expectRejected(tight, ndjsonName(), 'LIMIT_EXCEEDED');
    expect(report.reason).toBe(`line 2: a record longer than ${1024 * 1024} bytes (the flow's max_record_bytes)`);
  });
});

const FIXED_MAPPING = `ours,partner,type,required
sku,2-11,string:64,yes
warehouse,12+4,string:16,yes
qty,16-21,integer,yes
unit_cost,22-31,amount:2,
`;
const fixedFlow = {
  flow: {
    format: 'fixed', key: ['sku', 'warehouse'], totals: ['qty', 'unit_cost'], totals_from: 'trailer',
    fixed: { record_type: { start: 1, length: 1, data: 'D', header: 'H', trailer: 'T' }, trailer: { count: '2-10', sums: { qty: '11-20', unit_cost: '21-35' } } },
  },
  mapping: FIXED_MAPPING,
};
const fixedRow = (i: number) => `D${`B-${i}`.padEnd(10)}BER1${String(i).padStart(6, '0')}${(i * 1.25).toFixed(2).padStart(10)}`;
function fixedFile(n: number, count = n): string {
  const rows = Array.from({ length: n }, (_, i) => fixedRow(i + 1));
  const qty = (n * (n + 1)) / 2;
  const cost = rows.reduce((s, _r, i) => s + (i + 1) * 125, 0);
  const trailer = `T${String(count).padStart(9, '0')}${String(qty).padStart(10, '0')}${(cost / 100).toFixed(2).padStart(15)}`;
  return [`H ACME INVENTORY EXTRACT ${stamp}`, ...rows, trailer].join('\r\n') + '\r\n';
}
const fixedName = `inventory_${stamp}_001.dat`;

describe.concurrent('fixed-width', SLOW, () => {
  it('positions from the mapping; header skipped; the trailer is the control totals, no manifest needed', async (t) => {
    const fx = await fixture(t, fixedFlow);
    await fx.makeDelivery({ name: fixedName, csvText: fixedFile(3), manifest: false });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows().map(({ _delivery_id, _updated_at, ...r }) => r)).toEqual([
      { sku: 'B-1', warehouse: 'BER1', qty: 1, unit_cost: 125 },
      { sku: 'B-2', warehouse: 'BER1', qty: 2, unit_cost: 250 },
      { sku: 'B-3', warehouse: 'BER1', qty: 3, unit_cost: 375 },
    ]);
    expect(await fx.readJson('outbox', `${fixedName}.ack.json`)).toMatchObject({ status: 'accepted', records: 3, sums: { qty: 6 } });
  });

  it('a trailer with the wrong count is rejected, naming the trailer line', async (t) => {
    const fx = await fixture(t, fixedFlow);
    await fx.makeDelivery({ name: fixedName, csvText: fixedFile(3, 4), manifest: false });
    const report = await expectRejected(fx, fixedName, 'RECORD_COUNT_MISMATCH');
    expect(report.reason).toBe('the trailer (line 5) says 4 records, the file has 3');
  });

  it('a file without its trailer is rejected', async (t) => {
    const fx = await fixture(t, fixedFlow);
    await fx.makeDelivery({ name: fixedName, csvText: fixedFile(3).split('\r\n').slice(0, 4).join('\r\n'), manifest: false });
    const report = await expectRejected(fx, fixedName, 'BAD_TRAILER');
    expect(report.reason).toBe('line 4: the last record is of type "D", not the trailer "T"');
  });

  it('a record of an unknown type is a row error with its line', async (t) => {
    const fx = await fixture(t, fixedFlow);
    await fx.makeDelivery({ name: fixedName, csvText: fixedFile(3).replace('\r\nD', '\r\nX'), manifest: false });
    const report = await expectRejected(fx, fixedName, 'ROW_ERRORS');
    expect(report.errors).toEqual([expect.objectContaining({ line: 2, reason: 'The record type "X" (characters 1-1) is none of "D", "H", "T"' })]);
  });
});

describe.concurrent('the configuration and inboxd check', SLOW, () => {
  it.for([
    ['a fixed-width mapping whose partner is no range', { ...fixedFlow, mapping: FIXED_MAPPING.replace('12+4', 'Warehouse') }, /flows\.inventory\.mapping: with format fixed, partner "Warehouse" of "warehouse" must be a character range/],
    ['totals from a trailer the layout does not describe', { flow: { ...fixedFlow.flow, fixed: { record_type: { start: 1, length: 1 } } }, mapping: FIXED_MAPPING }, /flows\.inventory\.totals_from: totals from the trailer need format fixed/],
    ['a bad range in the trailer', { flow: { ...fixedFlow.flow, fixed: { ...fixedFlow.flow.fixed, trailer: { count: '10-2' } } }, mapping: FIXED_MAPPING }, /flows\.inventory\.fixed\.trailer\.count: expected a 1-based character range/],
    ['an unknown format', { flow: { format: 'xml' } }, /flows\.inventory\.format/],
  ] as const)('%s is refused naming the key', async ([, opts, message], t) => {
    const fx = await fixture(t, opts);
    const run = await runCli(['check-config', '--config', fx.configPath]);
    expect(run.code).toBe(78);
    expect(run.stderr).toMatch(message);
  });

  it('check names the format and the compression, and checks the trailer totals', async (t) => {
    const fx = await fixture(t, fixedFlow);
    const sample = join(fx.dir, fixedName.replace('.dat', '.dat.gz'));
    await fsp.writeFile(sample, await gzipped(fx, 'x.dat', fixedFile(4)));
    const run = await runCli(['check', '--partner', 'acme', '--flow', 'inventory', sample, '--json', '--config', fx.configPath], { cwd: fx.dir });
    const checks = JSON.parse(run.stdout).deliveries[0].checks as Array<{ check: string; status: string; message: string }>;
    expect(checks.find((c) => c.check === 'fixed')).toMatchObject({ status: 'ok', message: 'format fixed, gzip-compressed: 4 records' });
    expect(checks.find((c) => c.check === 'control totals')).toMatchObject({ status: 'ok', message: "the trailer's record count and sums (qty, unit_cost) match" });
  });
});

describe('compressed, then encrypted', SLOW, () => {
  const keys = partnerKeys({ beforeAll, afterAll });

  it.for(['gz', 'zip'])('a .csv.%s.pgp made with the tool and gpg is decrypted, verified, unpacked and applied; the sidecar covers the .pgp', async (ext, t) => {
    const fx = await fixture(t);
    const gpg = keys.gpg();
    await useKeys(gpg, fx);
    const rows = rowsOf(300);
    const packed = join(fx.dir, `inventory.csv.${ext}`);
    await fsp.writeFile(packed, ext === 'gz' ? await gzipped(fx, 'inventory.csv', csvOf(rows)) : await zipped(fx, { 'inventory.csv': csvOf(rows) }));
    await gpg.run(['-u', '<partner@acme>', '-r', '<inboxd@us>', '--compress-algo', 'none', '--sign', '--encrypt', '-o', `${packed}.pgp`, packed]);
    const name = `inventory_${stamp}_001.csv.${ext}.pgp`;
    const d = await fx.makeDelivery({ name, csvText: await fsp.readFile(`${packed}.pgp`), rows, manifest: { records: 300, sums: { qty: qtyOf(rows) } } });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows()).toHaveLength(300);
    expect(await fx.readJson('outbox', `${name}.ack.json`)).toMatchObject({ status: 'accepted', records: 300, sha256: d.sha256 });
  });
});

/** A workbook as ExcelJS's streaming writer makes it: `sheets` of rows, each row an array of cell values. */
async function workbook(fx: Fixture, sheets: Record<string, ExcelJS.CellValue[][]>, emptyRowsAfter = 0): Promise<Buffer> {
  const path = join(fx.dir, `book-${Math.random().toString(36).slice(2)}.xlsx`);
  const wb = new ExcelJS.stream.xlsx.WorkbookWriter({ filename: path, useSharedStrings: true, useStyles: true });
  for (const [name, rows] of Object.entries(sheets)) {
    const ws = wb.addWorksheet(name);
    rows.forEach((values, i) => {
      const row = ws.getRow(i + 1);
      row.values = values;
      row.commit();
    });
    // Rows with a height and no cell, as a sheet formatted far beyond its data has them.
    for (let i = 1; i <= emptyRowsAfter; i++) {
      const row = ws.getRow(rows.length + i);
      row.height = 15;
      row.commit();
    }
  }
  await wb.commit();
  return fsp.readFile(path);
}
const xlsxName = `inventory_${stamp}_001.xlsx`;
const when = new Date(Date.UTC(2025, 8, 16, 1, 55));

describe.concurrent('Excel (.xlsx)', SLOW, () => {
  it('the named sheet, header row, values as Excel stores them, formulas by their cached result', async (t) => {
    const fx = await fixture(t, { flow: { format: 'xlsx', xlsx: { sheet: 'Stock' } } });
    const data = await workbook(fx, {
      Notes: [['not this sheet']],
      Stock: [
        HEADER,
        ['A-1', 'BER1', { formula: '5+6', result: 11 }, 12.5, 'EUR', 'NEW', true, 'buyer1@example.com', when],
        [],
        ['A-2', 'BER1', 12, { formula: 'D2/2', result: 6.25 }, 'EUR', 'USED', false, { richText: [{ text: 'buyer2' }, { text: '@example.com' }] }, when],
      ],
    });
    await fx.makeDelivery({ name: xlsxName, csvText: data, manifest: { records: 2, sums: { qty: 23 } } });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows().map(({ _delivery_id, _updated_at, ...r }) => r)).toEqual([
      { sku: 'A-1', warehouse: 'BER1', qty: 11, unit_cost: 1250, currency: 'EUR', condition: 'NEW', active: 1, contact: 'buyer1@example.com', updated_at: '2025-09-16T01:55:00Z' },
      { sku: 'A-2', warehouse: 'BER1', qty: 12, unit_cost: 625, currency: 'EUR', condition: 'USED', active: 0, contact: 'buyer2@example.com', updated_at: '2025-09-16T01:55:00Z' },
    ]);
  });

  it('a bad value is a row error naming the sheet row', async (t) => {
    const fx = await fixture(t, { flow: { format: 'xlsx' } });
    const data = await workbook(fx, { Sheet1: [HEADER, ['A-1', 'BER1', 3, 1, 'EUR', 'NEW', true, '', when], [], ['A-2', 'BER1', 'many', 1, 'EUR', 'NEW', true, '', when]] });
    await fx.makeDelivery({ name: xlsxName, csvText: data, manifest: { records: 2, sums: { qty: 3 } } });
    const report = await expectRejected(fx, xlsxName, 'ROW_ERRORS');
    expect(report.errors).toEqual([expect.objectContaining({ line: 4, column: 'Quantity', reason: '"many" is not an integer' })]);
  });

  it('a header without a mapped column is rejected naming the row', async (t) => {
    const fx = await fixture(t, { flow: { format: 'xlsx' } });
    const data = await workbook(fx, { Sheet1: [HEADER.filter((h) => h !== 'Quantity'), ['A-1']] });
    await fx.makeDelivery({ name: xlsxName, csvText: data, rows: [] });
    const report = await expectRejected(fx, xlsxName, 'MISSING_COLUMN');
    expect(report.reason).toBe('row 1: the header lacks "Quantity"');
  });

  it('a sheet with a million empty rows is stopped at max_rows, naming the row', async (t) => {
    const fx = await fixture(t, { flow: { format: 'xlsx', xlsx: { max_rows: 500_000 } } });
    const data = await workbook(fx, { Sheet1: [HEADER, ['A-1', 'BER1', 3, 1, 'EUR', 'NEW', true, '', when]] }, 1_000_000);
    await fx.makeDelivery({ name: xlsxName, csvText: data, rows: [] });
    const report = await expectRejected(fx, xlsxName, 'LIMIT_EXCEEDED');
    expect(report.reason).toBe("row 500001: the sheet has more than 500000 rows (the flow's xlsx.max_rows)");
  });

  it('a workbook whose parts unpack beyond max_decompressed_size is refused before it is read', async (t) => {
    const fx = await fixture(t, { flow: { format: 'xlsx', max_decompressed_size: '4KB' } });
    const data = await workbook(fx, { Sheet1: [HEADER, ...rowsOf(200).map((r) => HEADER.map((h) => r[h] ?? ''))] });
    await fx.makeDelivery({ name: xlsxName, csvText: data, rows: rowsOf(200) });
    const report = await expectRejected(fx, xlsxName, 'LIMIT_EXCEEDED');
    expect(report.reason).toMatch(/^the decompressed file is too large: the workbook unpacks to \d+ bytes, more than 4000$/);
  });

  it('a file that is no workbook is rejected', async (t) => {
    const fx = await fixture(t, { flow: { format: 'xlsx' } });
    await fx.makeDelivery({ name: xlsxName, csvText: csvOf(rowsOf(2)), rows: rowsOf(2) });
    const report = await expectRejected(fx, xlsxName, 'BAD_COMPRESSION');
    expect(report.reason).toMatch(/^the file is not an xlsx workbook/);
  });
});
