/** The pure pieces: sidecar and manifest parsing, totals, value conversion, names, CSV cells, decoding. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { type AnswerFacts, csvCell, errorsCsv, planAccepted, planRejected, takenNames } from '../src/pipeline/answer.js';
import { defaultPattern, globToRegExp } from '../src/config/config.js';
import { parseDuration } from '../src/config/units.js';
import type { FieldSpec } from '../src/config/mapping.js';
import { type Chunk, completeUtf8, RecordChunker } from '../src/formats/csv/chunk.js';
import { stagingSink } from '../src/pipeline/stage.js';
import { getHeapSpaceStatistics } from 'node:v8';
import { collectAll, collectYoung, shrinkYoung } from '../src/pipeline/collect.js';
import { LineChunker } from '../src/formats/lines.js';
import { addExact, convert, mergeStats, RowMapper, toMinorUnits, toUtc } from '../src/pipeline/map.js';
import { parseExact, stringifyExact } from '../src/json.js';
import { escapeBytes, visible } from '../src/visible.js';
import { isTempName, manifestName, matchName, parseCompactTime, parseName } from '../src/pipeline/naming.js';
import { decoder, fieldsDecodedInPlace, RecordReader, splitLines, utf8ErrorLine } from '../src/formats/csv/parse.js';
import { checkTotals, parseManifest, parseSidecar } from '../src/pipeline/verify.js';

/** Seeded random integers below n (mulberry32): the same cases on every run, spread over the whole range. */
function seeded(seed: number): (n: number) => number {
  return (n) => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
}

const HEX = 'ab'.repeat(32);
const FILE = 'inventory_20250916T0200Z_001.csv';
const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return 'no error';
};

describe('sidecar', () => {
  it.each([
    ['bare', `${HEX}\n`],
    ['bare, no newline', HEX],
    ['GNU text', `${HEX}  ${FILE}\n`],
    ['GNU binary', `${HEX} *${FILE}\n`],
    ['GNU with a path', `${HEX}  ./out/${FILE}\n`],
    ['BSD', `SHA256 (${FILE}) = ${HEX}\n`],
    ['upper case', `${HEX.toUpperCase()}  ${FILE}\r\n`],
    ['surrounding blank lines', `\n${HEX}  ${FILE}\n\n`],
  ])('accepts %s', (_label, text) => {
    expect(parseSidecar(text, FILE)).toBe(HEX);
  });

  it.each([
    ['another file', `${HEX}  other.csv`],
    ['another file, BSD', `SHA256 (other.csv) = ${HEX}`],
    ['a short digest', `${HEX.slice(2)}  ${FILE}`],
    ['two digests', `${HEX}\n${HEX}`],
    ['nothing', ''],
    ['MD5 in BSD form', `MD5 (${FILE}) = d41d8cd98f00b204e9800998ecf8427e`],
  ])('refuses %s', (_label, text) => {
    expect(code(() => parseSidecar(text, FILE))).toBe('BAD_SIDECAR');
  });
});

describe('manifest', () => {
  const good = { file: FILE, records: 3, sums: { qty: 36 }, generated_at: '2025-09-16T02:00:03Z', sha256: HEX, schema_version: 1 };
  const parse = (m: unknown) => parseManifest(JSON.stringify(m), FILE);

  it('reads the playbook example', () => {
    expect(parse(good)).toMatchObject({ file: FILE, records: 3, sums: { qty: 36 } });
    expect(parse({ file: FILE, records: 0 }).sums).toEqual({});
  });

  it.each([
    ['../', `../${FILE}`], ['a directory', `in/${FILE}`], ['a Windows directory', `in\\${FILE}`], ['..', '..'], ['.', '.'], ['another file', 'other.csv'],
  ])('refuses a file naming %s', (_label, file) => {
    expect(code(() => parse({ ...good, file }))).toBe('BAD_MANIFEST');
  });

  it.each([
    ['records missing', { ...good, records: undefined }], ['records negative', { ...good, records: -1 }], ['records fractional', { ...good, records: 1.5 }],
    ['sha256 not hex', { ...good, sha256: 'b2f0…' }], ['not an object', [good]],
  ])('refuses %s', (_label, m) => {
    expect(code(() => parse(m))).toBe('BAD_MANIFEST');
  });

  it('not JSON at all', () => {
    expect(code(() => parseManifest('{"file": ', FILE))).toBe('BAD_MANIFEST');
  });

  it('numbers a double cannot hold are read exactly, not rounded', () => {
    const m = parseManifest(`{"file": "${FILE}", "records": 3, "sums": {"qty": 9007199254740993, "neg": -92233720368547758080, "cost": 90071992547409.935, "small": 1.25, "e": 1e3}}`, FILE);
    expect(m.sums).toEqual({ qty: 9007199254740993n, neg: -92233720368547758080n, cost: '90071992547409.935', small: 1.25, e: 1000 });
    expect(parseExact('{"a": "9007199254740993", "b": [12345678901234567890, "\\"1\\"", 0.1], "__proto__": 1}')).toEqual(JSON.parse('{"a": "9007199254740993", "b": [12345678901234567890, "\\"1\\"", 0.1], "__proto__": 1}', (k, v) => (v === 12345678901234567000 ? 12345678901234567890n : v)));
    expect(stringifyExact({ a: 9007199254740993n, b: '9007199254740993n', c: [-1n, 2] }, 0)).toBe('{"a":9007199254740993,"b":"9007199254740993n","c":[-1,2]}');
  });
});

describe('control totals', () => {
  const found = { sha256: HEX, records: 3, sums: { qty: 36 } };
  const toMinor = (_c: string, v: number | string | bigint) => (typeof v !== 'string' ? v : Number.isNaN(Number(v)) ? undefined : Number(v));
  const manifest = (over: object = {}) => ({ file: FILE, records: 3, sums: { qty: 36 }, ...over });

  it('match', () => {
    expect(() => checkTotals(manifest(), found, toMinor)).not.toThrow();
    expect(() => checkTotals(manifest({ sha256: HEX.toUpperCase() }), found, toMinor)).not.toThrow();
  });

  it('each mismatch has its code', () => {
    expect(code(() => checkTotals(manifest({ sha256: 'cd'.repeat(32) }), found, toMinor))).toBe('MANIFEST_CHECKSUM_MISMATCH');
    expect(code(() => checkTotals(manifest({ records: 4 }), found, toMinor))).toBe('RECORD_COUNT_MISMATCH');
    expect(code(() => checkTotals(manifest({ sums: { qty: 35 } }), found, toMinor))).toBe('CONTROL_TOTAL_MISMATCH');
    expect(code(() => checkTotals(manifest({ sums: {} }), found, toMinor))).toBe('BAD_MANIFEST');
    expect(code(() => checkTotals(manifest({ sums: { qty: 36, other: 1 } }), found, toMinor))).toBe('BAD_MANIFEST');
    expect(code(() => checkTotals(manifest({ sums: { qty: 'many' } }), found, toMinor))).toBe('BAD_MANIFEST');
  });

  it('a sum that could not be computed (a bad value in a tolerated bad row) is not compared', () => {
    expect(() => checkTotals(manifest({ sums: { qty: 1 } }), { ...found, sums: { qty: undefined } }, toMinor)).not.toThrow();
  });
});

describe('values are typed by the mapping', () => {
  const f = (type: FieldSpec['type'], extra: Partial<FieldSpec> = {}): FieldSpec => ({ ours: 'c', partner: 'C', type, required: false, pii: false, notes: '', ...extra });
  const bad = (v: unknown) => typeof v === 'object' && v !== null;

  it('integer: decimal digits only', () => {
    expect(convert(f('integer'), '00123')).toBe(123);
    expect(convert(f('integer'), ' +7 ')).toBe(7);
    expect(convert(f('integer'), '-12')).toBe(-12);
    for (const v of ['0x10', '1e3', '1.0', '12abc', 'Infinity', '١٢']) expect(bad(convert(f('integer'), v)), v).toBe(true);
  });

  it('integer: exact beyond 2^53 (a bigint), within 64 bits', () => {
    expect(convert(f('integer'), '9007199254740991')).toBe(9007199254740991);
    expect(convert(f('integer'), '9007199254740993')).toBe(9007199254740993n);
    expect(convert(f('integer'), '+9223372036854775807')).toBe(9223372036854775807n);
    expect(convert(f('integer'), '-9223372036854775808')).toBe(-9223372036854775808n);
    for (const v of ['9223372036854775808', '-9223372036854775809', '99999999999999999999999']) {
      expect((convert(f('integer'), v) as { reason: string }).reason, v).toBe('is out of range (-9223372036854775808 to 9223372036854775807)');
    }
  });

  it('string: kept exactly, never cast', () => {
    for (const v of ['00123', '0x10', 'true', ' padded ', '1e3']) expect(convert(f('string'), v)).toBe(v);
    expect(bad(convert(f('string', { maxLength: 3 }), 'abcd'))).toBe(true);
  });

  it('empty: null, or an error when required', () => {
    expect(convert(f('integer'), '  ')).toBeNull();
    expect(convert(f('string'), '')).toBeNull();
    expect(bad(convert(f('string', { required: true }), ''))).toBe(true);
  });

  it('amount: decimal to integer minor units, never through floating point', () => {
    expect(toMinorUnits('12.50', 2)).toBe(1250);
    expect(toMinorUnits('0.45', 2)).toBe(45);
    expect(toMinorUnits('1.10', 2)).toBe(110);
    expect(toMinorUnits('-3', 2)).toBe(-300);
    expect(toMinorUnits('2.500', 2)).toBe(250);
    expect(toMinorUnits('1.005', 3)).toBe(1005);
    expect(toMinorUnits('0.29', 2)).toBe(29); // 0.29 * 100 = 28.999999999999996 in floating point
    expect(toMinorUnits('+1.5', 2)).toBe(150);
    expect(Object.is(toMinorUnits('-0.00', 2), 0)).toBe(true);
    expect(toMinorUnits('90071992547409.91', 2)).toBe(9007199254740991);
    expect(toMinorUnits('90071992547409.93', 2)).toBe(9007199254740993n);
    expect(toMinorUnits('-92233720368547758.08', 2)).toBe(-9223372036854775808n);
    expect(toMinorUnits('92233720368547758.0700', 2)).toBe(9223372036854775807n);
    expect((toMinorUnits('92233720368547758.08', 2) as { reason: string }).reason).toBe('is out of range (-92233720368547758.08 to 92233720368547758.07)');
    expect(toMinorUnits('92233720368547758.08', 2, false)).toBe(9223372036854775808n); // a sum has no bound
    for (const v of ['1.005', '1,50', '1.', '.5', '1e2', '$1', '-', '+', '1.2.3', '1 .5', '99999999999999999999', '90071992547409.925']) expect(bad(toMinorUnits(v, 2)), v).toBe(true);
    expect((toMinorUnits('1.5x5', 2) as { reason: string }).reason).toMatch(/not a decimal/);
    expect((toMinorUnits('1.555', 2) as { reason: string }).reason).toMatch(/more than 2 decimal places/);
  });

  it('datetime: ISO-8601 with Z or an offset, stored as UTC Z', () => {
    expect(toUtc('2025-09-16T03:55:00+02:00')).toBe('2025-09-16T01:55:00Z');
    expect(toUtc('2025-09-15T21:40:00-04:00')).toBe('2025-09-16T01:40:00Z');
    expect(toUtc('2025-09-16T01:55:00Z')).toBe('2025-09-16T01:55:00Z');
    expect(toUtc('2025-09-16 01:55Z')).toBe('2025-09-16T01:55:00Z');
    expect(toUtc('2025-09-16T01:55:00.5+0100')).toBe('2025-09-16T00:55:00.500Z');
    expect(toUtc('2025-01-01T00:30:00+01:00')).toBe('2024-12-31T23:30:00Z');
    for (const v of ['2025-09-16T01:55:00', '2025-02-29T00:00:00Z', '2025-09-16T24:00:00Z', '16.09.2025 01:55', '2025-09-16']) expect(bad(toUtc(v)), v).toBe(true);
  });

  it('date, boolean, currency, enum', () => {
    expect(convert(f('date'), '2024-02-29')).toBe('2024-02-29');
    expect(bad(convert(f('date'), '2025-02-29'))).toBe(true);
    expect(bad(convert(f('date'), '2025-9-1'))).toBe(true);
    expect(['true', 'YES', 'y', '1', 'false', 'No', '0'].map((v) => convert(f('boolean'), v))).toEqual([1, 1, 1, 1, 0, 0, 0]);
    expect(bad(convert(f('boolean'), 'maybe'))).toBe(true);
    expect(convert(f('currency'), 'EUR')).toBe('EUR');
    for (const v of ['eur', 'XYZ', 'EURO']) expect(bad(convert(f('currency'), v)), v).toBe(true);
    expect(convert(f('enum', { values: ['NEW', 'USED'] }), 'USED')).toBe('USED');
    expect(bad(convert(f('enum', { values: ['NEW', 'USED'] }), 'used'))).toBe(true);
    expect(bad(convert(f('enum', { values: ['NEW'] }), 'constructor'))).toBe(true);
  });
});

describe('file names', () => {
  const flows = [{ id: 'inventory', pattern: new RegExp(defaultPattern('acme', 'inventory')), manifestName: '{file}.manifest.json' }];

  it('the playbook example and the long form parse', () => {
    expect(parseName('inventory_20250916T0200Z_001.csv', flows)).toEqual({ flow: 'inventory', seq: 1, fileTime: '2025-09-16T02:00:00Z' });
    expect(parseName('acme_inventory_20250916T020012Z_000042.csv', flows)).toEqual({ flow: 'inventory', seq: 42, fileTime: '2025-09-16T02:00:12Z' });
    expect(parseName('acme_inventory_20250916T020012Z_7.csv.pgp', flows)).toMatchObject({ seq: 7 });
  });

  it('other names are not deliveries', () => {
    for (const name of ['inventory_20250230T0200Z_001.csv', 'inventory_20250916T2400Z_001.csv', 'globex_inventory_20250916T0200Z_001.csv', 'inventory_20250916T0200Z_001.csv.sha256',
      'inventory_20250916T0200Z_001.csv.manifest.json', 'inventory_20250916T0200_001.csv', 'inventory_20250916T0200Z_.csv', 'x/inventory_20250916T0200Z_001.csv']) {
      expect(parseName(name, flows), name).toBeUndefined();
    }
    expect(parseCompactTime('20241231T235960Z')).toBeUndefined();
    // 17 digits (a timestamp used as a sequence) exceed 2^53: ...123 and ...124 would become one number.
    expect(parseName('acme_inventory_20250916T020000Z_20250916020000123.csv', flows)).toBeUndefined();
    expect(parseName('acme_inventory_20250916T020000Z_9007199254740991.csv', flows)).toMatchObject({ seq: 9007199254740991 });
    const custom = [{ id: 'x', pattern: /^x-(?<seq>\w+)\.csv$/, manifestName: '{file}.m' }];
    expect(parseName('x-abc.csv', custom)).toBeUndefined();
    expect(parseName('x-0042.csv', custom)).toMatchObject({ seq: 42 });
  });

  it('invisible characters are made visible; bytes that are not UTF-8 are escaped', () => {
    expect(visible('\uFEFFa\u200Bb\tc\u202Ed\u00A0e f\u0000é😀')).toBe('<U+FEFF>a<U+200B>b<U+0009>c<U+202E>d<U+00A0>e f<U+0000>é😀');
    expect(escapeBytes(Buffer.from('café.csv'))).toBeUndefined();
    expect(escapeBytes(Buffer.concat([Buffer.from('caf'), Buffer.from([0xe9]), Buffer.from('.csv')]))).toBe('caf%E9.csv'); // Latin-1 é
    expect(escapeBytes(Buffer.from([0xc3, 0xa9, 0xff, 0xe2, 0x82, 0x61, 0xf0, 0x9f, 0x98, 0x80]))).toBe('é%FF%E2%82a😀');
  });

  it('a name that matches but whose timestamp is no real instant says what is wrong', () => {
    const problem = (ts: string) => matchName(`inventory_${ts}_001.csv`, flows)?.problem?.replace(/^.*instant: /, '');
    expect(problem('20250916T020000Z')).toBeUndefined();
    expect(matchName('inventory_20250916T020060Z_060.csv', flows)).toEqual({ flow: 'inventory', seq: 60, problem: 'the timestamp 20250916T020060Z in the file name is not a real instant: there is no second 60 (00 to 59)' });
    expect([problem('20251316T0200Z'), problem('20250000T0200Z'), problem('20250229T0200Z'), problem('20250931T0200Z'), problem('20250916T2400Z'), problem('20250916T0260Z')]).toEqual([
      'there is no month 13', 'there is no month 00', '2025-02 has no day 29', '2025-09 has no day 31', 'there is no hour 24 (00 to 23)', 'there is no minute 60 (00 to 59)',
    ]);
    expect(problem('20240229T0200Z')).toBeUndefined();
    expect(matchName('inventory_20250916T0200Z_001.csv.sha256', flows)).toBeUndefined();
  });

  it('manifest names from a template', () => {
    expect(manifestName('{file}.manifest.json', FILE)).toBe(`${FILE}.manifest.json`);
    expect(manifestName('{stem}.manifest.json', FILE)).toBe('inventory_20250916T0200Z_001.manifest.json');
  });

  it('temporary names', () => {
    const temp = ['*.tmp', '*.part', '*.filepart', '.*'].map(globToRegExp);
    for (const n of [`${FILE}.part`, `${FILE}.tmp`, `${FILE}.filepart`, `.${FILE}`, '.inboxd-x']) expect(isTempName(n, temp), n).toBe(true);
    for (const n of [FILE, `${FILE}.sha256`, 'part', 'xtmp']) expect(isTempName(n, temp), n).toBe(false);
    expect(globToRegExp('a?c.(x)').test('abc.(x)')).toBe(true);
    expect(globToRegExp('a?c.(x)').test('abcx(x)')).toBe(false);
  });

  it('durations', () => {
    expect([parseDuration('500ms'), parseDuration('30s'), parseDuration('1.5m'), parseDuration('2h'), parseDuration('1d'), parseDuration(250)]).toEqual([500, 30_000, 90_000, 7_200_000, 86_400_000, 250]);
    for (const v of ['soon', '5', '-1s', '1 week', '']) expect(parseDuration(v), v).toBeUndefined();
    expect(parseDuration(-5)).toBeUndefined();
  });
});

describe('line-error CSV is spreadsheet-safe', () => {
  it('prefixes a cell that would start a formula with an apostrophe', () => {
    expect(csvCell('=HYPERLINK("http://evil.example","x")')).toBe(`"'=HYPERLINK(""http://evil.example"",""x"")"`);
    for (const v of ['+1', '-1', '@SUM(A1)', '\tx', '%x', '|x']) expect(csvCell(v).replace(/^"/, '')).toMatch(/^'/);
    expect(csvCell('plain')).toBe('plain');
    expect(csvCell('a,b')).toBe('"a,b"');
    expect(csvCell('12')).toBe('12');
  });

  it('writes a header and CRLF rows', () => {
    expect(errorsCsv([{ line: 3, column: 'Quantity', reason: '=1+1' }])).toBe("line,column,reason\r\n3,Quantity,'=1+1\r\n");
  });
});

describe('the answer plan is decided without the disk (decide, then write)', () => {
  it('the names taken are looked up before the commit; the plan made from them reads nothing', async () => {
    const root = mkdtempSync(join(tmpdir(), 'inboxd-plan-'));
    const dirs = Object.fromEntries(['inbox', 'outbox', 'archive', 'error', 'work'].map((d) => [d, join(root, d)])) as Record<'inbox' | 'outbox' | 'archive' | 'error' | 'work', string>;
    Object.values(dirs).forEach((d) => mkdirSync(d));
    writeFileSync(join(dirs.error, FILE), 'rejected before'); // the same broken file sent twice
    const f: AnswerFacts = { id: 'D2', partner: 'acme', flow: 'inventory', file: FILE, seq: 1, sha256: HEX, files: [FILE], processedAt: '2025-09-16T02:00:00.000Z' };
    const taken = await takenNames(f, { root, ...dirs });
    expect(taken).toEqual({ archive: false, error: true });
    rmSync(root, { recursive: true }); // from here the plan has no disk to look at
    const rejected = planRejected(f, { status: 'rejected', code: 'MALFORMED_CSV', reason: 'line 2: broken', errors: [], errorCount: 0 }, taken);
    // The delivery id goes before the extension: the stored file still opens as a CSV.
    const stored = FILE.replace(/\.csv$/, '.D2.csv');
    expect(rejected.moves.map((m) => `${m.dir}/${m.to}`)).toEqual([`error/${stored}`]);
    expect(rejected.writes.map((w) => `${w.dir}/${w.name}`)).toEqual([`error/${stored}.error.json`]);
    const accepted = planAccepted(f, { records: 1, sums: {}, scales: {}, badRows: 0, errors: [], errorCount: 0 }, taken);
    expect(accepted.moves.map((m) => `${m.dir}/${m.to}`)).toEqual([`archive/${FILE}`]);
  });
});

describe('chunks of whole records (parallel parsing)', () => {
  const cut = (text: string | Buffer, chunkBytes = 8, cap = 64, pieces = 3) => {
    const bytes = Buffer.from(text);
    const c = new RecordChunker(0x22, chunkBytes, cap);
    const out: Chunk[] = [];
    for (let i = 0; i < bytes.length; i += pieces) out.push(...c.push(bytes.subarray(i, i + pieces)));
    out.push(...c.end());
    return out.map((k) => ({ text: k.bytes.toString(), line: k.firstLine, more: k.more }));
  };

  it('cuts only at a newline outside quotes, the first line on its own, and numbers the lines', () => {
    const text = 'h1,h2\na,1\n"b\nc",2\nd,"x""\ny"\ne,5\n';
    const chunks = cut(text);
    expect(chunks.map((k) => k.text).join('')).toBe(text);
    expect(chunks[0]).toEqual({ text: 'h1,h2\n', line: 1, more: false });
    for (const k of chunks) expect(k.text.endsWith('\n') && (k.text.split('"').length - 1) % 2 === 0, JSON.stringify(k)).toBe(true);
    for (const k of chunks) expect(k.line, k.text).toBe(text.slice(0, text.indexOf(k.text)).split('\n').length);
  });

  it('random files in random pieces: nothing lost, every cut between records, every first line right', () => {
    const rnd = seeded(7);
    const lineEnds = (t: string) => (t.match(/\r\n|\r|\n/g) ?? []).length;
    for (let round = 0; round < 400; round++) {
      const cells = ['a', 'bb', '"q,q"', '"x""y"', '"l1\nl2"', '"c\r\nd"', '', 'é'];
      const ends = ['\n', '\r\n', '\r\n', '\n', '\r'];
      const text = Array.from({ length: 1 + rnd(30) }, () => `${cells[rnd(cells.length)]},${cells[rnd(cells.length)]}${ends[rnd(ends.length)]}`).join('');
      // Every other round a cap so small that no newline is found within it: forced cuts, lines still counted.
      const chunks = cut(text, 1 + rnd(20), rnd(2) ? 1000 : 4 + rnd(12), 1 + rnd(9));
      expect(chunks.map((k) => k.text).join('')).toBe(text);
      let before = '';
      let forced = false;
      for (const k of chunks) {
        expect(k.line, `${JSON.stringify(text)} at ${before.length}`).toBe(1 + lineEnds(before));
        if (!forced && !k.more) expect((k.text.split('"').length - 1) % 2, k.text).toBe(0);
        forced ||= k.more;
        before += k.text;
      }
    }
  });

  it('strips a UTF-8 BOM and keeps a last line without a newline', () => {
    expect(cut('\uFEFFh\nlast')).toEqual([{ text: 'h\n', line: 1, more: false }, { text: 'last', line: 2, more: false }]);
  });

  it('a chunk marked owned can move to another thread: its memory is its own, and what the chunker keeps survives the move', () => {
    const rnd = seeded(11);
    for (const make of [() => new RecordChunker(0x22, 40, 400), () => new LineChunker(40, 400)]) {
      for (let round = 0; round < 50; round++) {
        const text = '\uFEFF' + Array.from({ length: 1 + rnd(40) }, (_, i) => `r${i},${'x'.repeat(rnd(30))}\n`).join('');
        const bytes = Buffer.from(text);
        const chunker = make();
        const seen: string[] = [];
        let owned = 0;
        const take = (chunks: Chunk[]) => {
          for (const c of chunks) {
            seen.push(c.bytes.toString());
            if (!c.owned) continue;
            owned++;
            structuredClone(c.bytes.buffer, { transfer: [c.bytes.buffer as ArrayBuffer] }); // moved away: detached here
            expect(c.bytes.byteLength).toBe(0);
          }
        };
        const pushed: Buffer[] = []; // small, so from Node's shared pool: a chunk moved with pool memory would detach them
        for (let i = 0; i < bytes.length; ) {
          const n = 1 + rnd(25);
          pushed.push(Buffer.from(bytes.subarray(i, i + n)));
          take(chunker.push(pushed[pushed.length - 1]!));
          i += n;
        }
        take(chunker.end());
        expect(seen.join('')).toBe(text.slice(1));
        expect(Buffer.concat(pushed).toString()).toBe(text);
        if (text.length > 200) expect(owned).toBeGreaterThan(0);
      }
    }
  });

  it('collectYoung frees the memory of Buffers nothing refers to any more', async () => {
    const held = () => process.memoryUsage().arrayBuffers;
    // Made in a function of its own, so nothing here refers to them once it returns.
    const allocate = () => Array.from({ length: 320 }, () => Buffer.allocUnsafeSlow(64 * 1024)).length; // 20 MB
    const drop = async () => {
      const before = held() + allocate() * 64 * 1024;
      collectYoung();
      // V8 sweeps freed ArrayBuffers on a background thread: give it a moment.
      for (let i = 0; i < 20 && before - held() < 15 * 2 ** 20; i++) await new Promise((r) => setTimeout(r, 25));
      return { freed: before - held() };
    };
    expect((await drop()).freed).toBeGreaterThan(15 * 2 ** 20);
  });

  it('collectAll frees what the old generation holds dead (a staging thread\'s promoted garbage)', () => {
    const old = () => getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')!.space_used_size;
    // Two scavenges while they are referenced promote them to the old generation; once it returns, nothing refers to them.
    const promote = () => {
      const objects = Array.from({ length: 200_000 }, (_, n) => ({ n, s: `row ${n}` }));
      collectYoung();
      collectYoung();
      return objects.length;
    };
    expect(promote()).toBe(200_000);
    const before = old();
    collectAll();
    expect(before - old()).toBeGreaterThan(5 * 2 ** 20);
  });

  it('shrinkYoung gives the young generation back its room on Node 22 and later, and is a full collection on Node 20', () => {
    const young = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.physical_space_size;
    // Objects that survive scavenges make V8 grow the young generation, as start-up does.
    let kept: object[] = [];
    for (let n = 0; n < 3_000_000; n++) {
      kept.push({ n });
      if (kept.length > 200_000) kept = [];
    }
    expect(kept.length).toBeGreaterThan(0);
    expect(young()).toBeGreaterThan(6 * 2 ** 20);
    shrinkYoung();
    if (Number(process.versions.node.split('.')[0]) >= 22) expect(young()).toBeLessThanOrEqual(2 * 2 ** 20);
  });

  it('no cut within the cap (CR line ends, an unclosed quote): one ordered run of chunks from there on', () => {
    const chunks = cut('h\n' + 'a,1\r'.repeat(40), 8, 32);
    expect(chunks[0]).toEqual({ text: 'h\n', line: 1, more: false });
    expect(chunks.slice(1, -1).every((k) => k.more)).toBe(true);
    expect(chunks[chunks.length - 1]!.more).toBe(false);
    expect(chunks.map((k) => k.text).join('')).toBe('h\n' + 'a,1\r'.repeat(40));
  });

  it('a forced cut never splits a UTF-8 character', () => {
    const chunks = cut('h\n' + 'é€😀'.repeat(30), 8, 16, 5);
    for (const k of chunks) expect(k.text, JSON.stringify(k)).not.toContain('\uFFFD');
    expect(completeUtf8(Buffer.from('ab€').subarray(0, 4))).toBe(2);
    expect(completeUtf8(Buffer.from('ab€'))).toBe(5);
    expect(completeUtf8(Buffer.from('a😀').subarray(0, 4))).toBe(1);
  });

  it('a first record cut across chunks is held until whole, then goes first, to be skipped', async () => {
    const calls: Array<{ text: string; skipFirst: boolean; more: boolean }> = [];
    const started: unknown[] = [];
    const stager = { start: (header: string[] | null, width: number) => void started.push(header, width), add: async (c: Chunk, skipFirst: boolean) => void calls.push({ text: c.bytes.toString(), skipFirst, more: c.more }) };
    const csv = { delimiter: ',', quote: '"', header: true, encoding: 'utf-8', maxRecordBytes: 16 };
    // Blank lines ended by CR, more than the cap (8 + 2 * 16 bytes): no newline to cut at, so a forced cut before the header.
    const text = `${'\r'.repeat(50)}a,b,c\r${'1,2,3\r'.repeat(5)}`;
    const fields = ['a', 'b', 'c'].map((h) => ({ ours: h, partner: h, type: 'string' as const, required: false, pii: false, notes: '' }));
    const pieces = Array.from({ length: Math.ceil(text.length / 10) }, (_, i) => Buffer.from(text.slice(i * 10, i * 10 + 10)));
    await pipeline(Readable.from(pieces), stagingSink(stager, { base: '', fields, totals: [], keys: [], maxReported: 1, csv, header: true, utf8Checked: false, chunkBytes: 8 }));
    expect(started).toEqual([['a', 'b', 'c'], 3]);
    expect(calls.map((c) => c.text).join('')).toBe(text);
    expect(calls[0]!.text).not.toContain('a,b,c');
    expect(calls.map((c) => c.skipFirst)).toEqual(calls.map((_, i) => i === 0));
    expect(calls.map((c) => c.more)).toEqual(calls.map((_, i) => i < calls.length - 1));
  });

  it('a bad byte far into a file with no cut within the cap (CR-only lines) is named at its line', async () => {
    const stager = { start: () => {}, add: async () => {} };
    const csv = { delimiter: ',', quote: '"', header: false, encoding: 'utf-8', maxRecordBytes: 50 };
    // The last: CR-only lines long enough to force cuts, then CRLF lines, which forced cuts may split.
    for (const text of ['a,b\n'.repeat(200), 'a,b\r\n'.repeat(200), 'a,b\r'.repeat(200), 'a,b\r'.repeat(100) + 'a,b\r\n'.repeat(100)]) {
      const bytes = Buffer.concat([Buffer.from(text), Buffer.from([0xff])]);
      for (const size of [100, 7, 8, 9, 10, 11, 12, 13]) {
        const pieces = Array.from({ length: Math.ceil(bytes.length / size) }, (_, i) => bytes.subarray(i * size, i * size + size));
        const sink = stagingSink(stager, { base: '', fields: [], totals: [], keys: [], maxReported: 1, csv, header: false, utf8Checked: false, chunkBytes: 64 });
        const err = await pipeline(Readable.from(pieces), sink).catch((e: unknown) => e);
        expect(err, `${JSON.stringify(text.slice(-5))} in pieces of ${size}`).toMatchObject({ code: 'BAD_ENCODING', details: { line: 201 } });
      }
    }
  });

  it('records and their lines, fields decoded in place (csv-parse patched for speed, same strings)', () => {
    expect(fieldsDecodedInPlace()).toBe(true);
    const reader = new RecordReader({ delimiter: ';', quote: '"', header: false, encoding: 'utf-8', maxRecordBytes: 1000 });
    const seen: Array<[string[], number]> = [];
    reader.read({ bytes: Buffer.from('é;😀;"a""b"\r\n\n"x\r\ny";€\rz;"";\n'), firstLine: 7, more: false }, (r, line) => seen.push([r, line]));
    expect(seen).toEqual([[['é', '😀', 'a"b'], 7], [['x\r\ny', '€'], 10], [['z', '', ''], 11]]);
  });

  it('a chunk without quotes, split at line ends and delimiters, reads exactly as csv-parse reads it (random chunks)', () => {
    const rand = seeded(11);
    const pieces = ['a', 'bc', 'é', '😀', ' ', ',', ';', '||', '|', '\t', '\r', '\n', '\r\n', '\n\n', '\r\r\n'];
    for (let n = 0; n < 500; n++) {
      const delimiter = [',', ';', '||', '\t'][rand(4)]!;
      const text = Array.from({ length: rand(40) }, () => pieces[rand(pieces.length)]).join('');
      const chunk = { bytes: Buffer.from(text), firstLine: 1 + rand(5), more: false };
      const dialect = { delimiter, quote: '"', header: false, encoding: 'utf-8', maxRecordBytes: 1000 };
      const read = (f: (onRecord: (r: string[], line: number) => void) => void) => {
        const out: Array<[string[], number]> = [];
        f((r, line) => out.push([r, line]));
        return out;
      };
      const byCsvParse = read((on) => new RecordReader(dialect, { splitQuoteFree: false }).read(chunk, on));
      expect(read((on) => splitLines(chunk, delimiter, on)), JSON.stringify({ text, delimiter })).toEqual(byCsvParse);
      expect(read((on) => new RecordReader(dialect).read(chunk, on))).toEqual(byCsvParse);
    }
  });

  it('a run of chunks that failed is over: the next chunk gets a parser of its own', () => {
    const reader = new RecordReader({ delimiter: ',', quote: '"', header: false, encoding: 'utf-8', maxRecordBytes: 1000 });
    expect(() => reader.read({ bytes: Buffer.from('a,b\rc,"d'), firstLine: 1, more: true }, () => { throw new Error('bad row'); })).toThrow('bad row');
    const seen: Array<[string[], number]> = [];
    reader.read({ bytes: Buffer.from('x,y\n'), firstLine: 10, more: false }, (r, line) => seen.push([r, line]));
    expect(seen).toEqual([[['x', 'y'], 10]]);
  });

  it('stats of the parts merge as if the file were mapped in one go', () => {
    const err = (line: number) => ({ line, column: 'Q', reason: 'x' });
    const merged = mergeStats([
      { rows: 3, badRows: 1, errorCount: 2, errors: [err(2), err(9)], sums: { qty: 5 } },
      { rows: 4, badRows: 2, errorCount: 2, errors: [err(4), err(5)], sums: { qty: undefined } },
    ], ['qty'], 3);
    expect(merged).toEqual({ rows: 7, badRows: 3, errorCount: 4, errors: [err(2), err(4), err(5)], sums: { qty: undefined } });
    expect(mergeStats([], ['qty'], 3).sums).toEqual({ qty: 0 });
  });

  it('sums are exact: a double below 2^53, a bigint beyond, back to a number when the sum comes back', () => {
    const fields: FieldSpec[] = [{ ours: 'qty', partner: '1', type: 'integer', required: true, pii: false, notes: '' }];
    const sum = (values: string[]) => {
      const mapper = new RowMapper(fields, ['qty'], 10);
      values.forEach((v, i) => mapper.map([v], i + 2, []));
      return mapper.stats.sums.qty;
    };
    expect(sum(['9007199254740991', '2', '-9007199254740991'])).toBe(2); // in doubles: 1
    expect(sum(['9007199254740991', '2'])).toBe(9007199254740993n);
    expect(sum(['9223372036854775807', '9223372036854775807'])).toBe(18446744073709551614n);
    expect(addExact(9007199254740991, 1)).toBe(9007199254740992n);
    expect(addExact(9007199254740992n, -1)).toBe(9007199254740991);
    const parts = (qty: bigint | number) => ({ rows: 1, badRows: 0, errorCount: 0, errors: [], sums: { qty } });
    expect(mergeStats([parts(9007199254740991), parts(9007199254740991), parts(-9007199254740990n)], ['qty'], 3).sums).toEqual({ qty: 9007199254740992n });
  });
});

describe('decoder', () => {
  async function decode(chunks: Buffer[], encoding = 'utf-8'): Promise<string> {
    let out = '';
    for await (const s of Readable.from(chunks, { objectMode: false }).pipe(decoder(encoding))) out += s;
    return out;
  }
  const lineOf = async (chunks: Buffer[], encoding?: string) => decode(chunks, encoding).then(() => 'decoded', (e: { code: string; details: { line: number } }) => `${e.code} ${e.details.line}`);

  it('a character split across chunks decodes', async () => {
    const bytes = Buffer.from('a\nb\ncafé\n');
    const at = bytes.indexOf(0xc3) + 1;
    expect(await decode([bytes.subarray(0, at), bytes.subarray(at)])).toBe('a\nb\ncafé\n');
  });

  it('names the line of the first undecodable byte, wherever the chunks break', async () => {
    const bytes = Buffer.concat([Buffer.from('l1\nl2\nl3 é\nl4 '), Buffer.from([0xff]), Buffer.from('\nl5\n')]);
    expect(await lineOf([bytes])).toBe('BAD_ENCODING 4');
    for (let cut = 1; cut < bytes.length; cut++) expect(await lineOf([bytes.subarray(0, cut), bytes.subarray(cut)]), `cut at ${cut}`).toBe('BAD_ENCODING 4');
  });

  it('lines end at LF, CRLF or a lone CR, as everywhere else, also where a CRLF is cut between chunks', async () => {
    const bytes = Buffer.concat([Buffer.from('l1\rl2\r\nl3\n\rl5 '), Buffer.from([0xff]), Buffer.from('\r')]);
    expect(await lineOf([bytes])).toBe('BAD_ENCODING 5');
    for (let cut = 1; cut < bytes.length; cut++) expect(await lineOf([bytes.subarray(0, cut), bytes.subarray(cut)]), `cut at ${cut}`).toBe('BAD_ENCODING 5');
  });

  it('a chunk checked as UTF-8 names the line of its bad byte, with CR-only line ends too', () => {
    const bytes = Buffer.concat([Buffer.from('a\rb\r\nc\rd '), Buffer.from([0xff])]);
    expect(utf8ErrorLine({ bytes, firstLine: 3, more: false })).toBe(6);
  });

  it('a character cut short at the end of the file', async () => {
    expect(await lineOf([Buffer.from('l1\nl2 caf'), Buffer.from([0xc3])])).toBe('BAD_ENCODING 2');
  });

  it('latin1 decodes any byte', async () => {
    expect(await decode([Buffer.from([0x63, 0x61, 0x66, 0xe9])], 'latin1')).toBe('café');
  });
});
