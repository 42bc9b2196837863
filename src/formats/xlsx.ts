/**
 * Excel workbooks (.xlsx): the first sheet, or the one named, read with ExcelJS's streaming reader
 * from the file spooled to the delivery's working directory. The first row is the header (the
 * mapping's `partner` is a column name, as for CSV); values are taken as Excel stores them: numbers
 * and text as written, dates as ISO-8601 (UTC, as Excel has no zone), a formula by its cached result,
 * never evaluated. Each row goes on as one line, a JSON array in mapping order, so the staging threads
 * map and stage it like any line format; a line's number is the sheet's row number.
 */
import type yauzl from 'yauzl';
import type { DecompressionLimits, XlsxOptions } from '../config/config.js';
import type { FieldSpec } from '../config/mapping.js';
import type { Chunk } from './csv/chunk.js';
import { eachLine } from './lines.js';
import { loadYauzl, RATIO_SLACK, tooBig } from './compression.js';
import type { LineReader } from './records.js';
import { reject } from '../errors.js';
import { visible } from '../visible.js';

const BATCH = 64 * 1024;

/** An xlsx is a zip: its parts may not declare more than the decompression limits allow, checked before reading. */
export async function checkXlsxSize(path: string, limits: DecompressionLimits): Promise<void> {
  let zip: yauzl.ZipFile;
  try {
    zip = await (await loadYauzl()).openPromise(path, { lazyEntries: true, autoClose: true });
  } catch (err) {
    throw reject('BAD_COMPRESSION', `the file is not an xlsx workbook (not a zip): ${visible((err as Error).message)}`);
  }
  let packed = 0;
  let unpacked = 0;
  await new Promise<void>((resolve, fail) => {
    zip.on('entry', (e: yauzl.Entry) => {
      packed += e.compressedSize;
      unpacked += e.uncompressedSize;
      zip.readEntry();
    });
    zip.on('end', resolve);
    zip.on('error', (err: Error) => fail(reject('BAD_COMPRESSION', `the xlsx workbook is damaged: ${visible(err.message)}`)));
    zip.readEntry();
  });
  if (unpacked > limits.maxBytes) throw tooBig(`the workbook unpacks to ${unpacked} bytes, more than ${limits.maxBytes}`);
  if (unpacked > limits.maxRatio * packed + RATIO_SLACK) throw tooBig(`the workbook expands more than ${limits.maxRatio} times`);
}

/** The sheet's rows as lines of JSON arrays (mapping order), a blank line for each row skipped or empty. */
export async function* sheetLines(path: string, fields: readonly FieldSpec[], opts: XlsxOptions): AsyncGenerator<Buffer> {
  // Loaded when a workbook arrives: ExcelJS costs every start ~0.3 s and some memory otherwise.
  const { default: ExcelJS } = await import('exceljs');
  const reader = new ExcelJS.stream.xlsx.WorkbookReader(path, { sharedStrings: 'cache', styles: 'cache', hyperlinks: 'ignore', worksheets: 'emit', entries: 'ignore' });
  let columns: number[] | undefined;
  let line = 0;
  let cells = 0;
  let out = '';
  for await (const sheet of reader) {
    if (!isWanted(reader, sheet, opts.sheet)) continue;
    for await (const row of sheet) {
      if (row.number > opts.maxRows) throw reject('LIMIT_EXCEEDED', `row ${row.number}: the sheet has more than ${opts.maxRows} rows (the flow's xlsx.max_rows)`, { line: row.number });
      const values = row.values as unknown[];
      cells += values.length;
      if (cells > opts.maxCells) throw reject('LIMIT_EXCEEDED', `row ${row.number}: the sheet has more than ${opts.maxCells} cells (the flow's xlsx.max_cells)`, { line: row.number });
      out += '\n'.repeat(Math.max(0, row.number - line - 1));
      line = row.number;
      const texts = values.map(text);
      if (!columns) {
        if (texts.every((t) => t === '')) continue;
        columns = headerColumns(texts, fields, row.number);
        out += '\n';
        continue;
      }
      out += texts.some((t) => t !== '') ? `${JSON.stringify(columns.map((c) => texts[c] ?? ''))}\n` : '\n';
      if (out.length >= BATCH) {
        yield Buffer.from(out);
        out = '';
      }
    }
    if (!columns) throw reject('MISSING_COLUMN', `the sheet${opts.sheet ? ` "${visible(opts.sheet)}"` : ''} is empty; the header row is missing`, { line: 1 });
    if (out) yield Buffer.from(out);
    return;
  }
  throw reject('MISSING_COLUMN', opts.sheet ? `the workbook has no sheet named "${visible(opts.sheet)}"` : 'the workbook has no sheet');
}

interface SheetInfo { id: number | string }
interface ReaderModel { model?: { sheets?: Array<{ name: string; rId: string }> }; workbookRels?: Array<{ Id: string; Target: string }> }

/** The first sheet, or the one of that name (the workbook names sheets; its relations say which file is which). */
function isWanted(reader: unknown, sheet: unknown, name: string | undefined): boolean {
  if (!name) return true;
  const { model, workbookRels } = reader as ReaderModel;
  const rId = model?.sheets?.find((s) => s.name === name)?.rId;
  const target = workbookRels?.find((r) => r.Id === rId)?.Target;
  return !!target && new RegExp(`sheet${(sheet as SheetInfo).id}\\.xml$`).test(target);
}

function headerColumns(texts: readonly string[], fields: readonly FieldSpec[], row: number): number[] {
  const pos = new Map<string, number>();
  texts.forEach((t, i) => pos.set(t.trim(), i));
  const missing = fields.filter((f) => !pos.has(f.partner)).map((f) => `"${visible(f.partner)}"`);
  if (missing.length) throw reject('MISSING_COLUMN', `row ${row}: the header lacks ${missing.join(', ')}`, { line: row, missing });
  return fields.map((f) => pos.get(f.partner)!);
}

/** A cell as the text the map step types: as Excel stores it; a formula by its cached result. */
function text(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (v instanceof Date) {
    const iso = v.toISOString().replace('.000Z', 'Z');
    return iso.endsWith('T00:00:00Z') ? iso.slice(0, 10) : iso;
  }
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v !== 'object') return '';
  const o = v as { result?: unknown; formula?: unknown; sharedFormula?: unknown; richText?: Array<{ text: string }>; text?: unknown; error?: string };
  if ('formula' in o || 'sharedFormula' in o) return text(o.result);
  if (o.richText) return o.richText.map((r) => r.text).join('');
  if (o.text !== undefined) return text(o.text);
  if (o.error !== undefined) return o.error;
  return JSON.stringify(v);
}

/** The staging threads' side: each line a JSON array of the row's values in mapping order. */
export function rowsReader(maxLineBytes: number): LineReader {
  return {
    read(chunk: Chunk, onRecord) {
      eachLine(chunk, maxLineBytes, (line, n) => onRecord(JSON.parse(line) as string[], n));
    },
  };
}
