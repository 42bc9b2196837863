/**
 * The parse step: bytes -> decoded text -> CSV records -> typed rows, streamed.
 * Undecodable bytes and structural CSV errors reject the whole file, naming the line.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { CsvError, parse, type Parser } from 'csv-parse';
import type { CsvDialect } from './config.js';
import { reject } from './errors.js';

/** Strict decoding: a byte sequence that is not valid in the declared encoding is an error, not U+FFFD. */
export function decoder(encoding: string): Transform {
  const dec = new TextDecoder(encoding, { fatal: true });
  let lines = 1;
  const decode = (chunk: Buffer | undefined, stream: boolean): string => {
    try {
      const text = chunk ? dec.decode(chunk, { stream }) : dec.decode();
      for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) lines++;
      return text;
    } catch {
      const line = lines + (chunk ? newlinesBeforeInvalid(encoding, chunk) : 0);
      throw reject('BAD_ENCODING', `line ${line}: bytes that are not valid ${encoding}`, { line });
    }
  };
  return new Transform({
    decodeStrings: true,
    readableObjectMode: false,
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      try {
        cb(null, decode(chunk, true));
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb) {
      try {
        cb(null, decode(undefined, false));
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}

/**
 * Error path only: the newlines in a chunk before its first undecodable byte. A prefix that decodes in
 * streaming mode holds no error and longer ones fail, so bisect with fresh decoders. UTF-8 continuation
 * bytes at the start belong to a character begun in the previous chunk and are skipped.
 */
function newlinesBeforeInvalid(encoding: string, chunk: Buffer): number {
  let start = 0;
  if (new TextDecoder(encoding).encoding === 'utf-8') while (start < 3 && ((chunk[start] ?? 0) & 0xc0) === 0x80) start++;
  let ok = start;
  let bad = chunk.length + 1;
  while (bad - ok > 1) {
    const mid = (ok + bad) >>> 1;
    try {
      new TextDecoder(encoding, { fatal: true }).decode(chunk.subarray(start, mid), { stream: true });
      ok = mid;
    } catch {
      bad = mid;
    }
  }
  // The chunk decodes on its own: the error is a character cut short at its start, begun in the previous chunk.
  if (ok === chunk.length) return 0;
  return new TextDecoder(encoding).decode(chunk.subarray(start, ok)).split('\n').length - 1;
}

/** Our words for csv-parse's errors: its own messages can quote the field's value, which may be personal data. */
const CSV_REASONS: Record<string, string> = {
  CSV_QUOTE_NOT_CLOSED: 'a quoted field is never closed',
  INVALID_OPENING_QUOTE: 'a quote inside a field that does not start with one (quote the whole field and double the quote)',
  CSV_INVALID_CLOSING_QUOTE: 'a quote inside a quoted field is not doubled',
  CSV_RECORD_INCONSISTENT_FIELDS_LENGTH: 'the row has a different number of columns than the header',
  CSV_RECORD_INCONSISTENT_COLUMNS: 'the row has a different number of columns than the header',
  CSV_NON_TRIMABLE_CHAR_AFTER_CLOSING_QUOTE: 'characters follow a closing quote',
  CSV_MAX_RECORD_SIZE: 'the row is larger than the maximum record size',
};

/** csv-parse's errors -> MALFORMED_CSV naming the line (and the column where csv-parse knows it). */
export function csvError(err: unknown, lastRecordLine = 0): unknown {
  if (!(err instanceof CsvError)) return err;
  const e = err as CsvError & { lines?: number; column?: number | string; index?: number };
  // csv-parse notices an unclosed quote only at the end of the file: name the line the field opened on.
  const line = e.code === 'CSV_QUOTE_NOT_CLOSED' ? lastRecordLine + 1 : e.lines ?? 0;
  const column = typeof e.index === 'number' ? e.index + 1 : undefined;
  const reason = CSV_REASONS[e.code] ?? `the file is not valid CSV (${e.code})`;
  return reject('MALFORMED_CSV', `line ${line}${column ? `, column ${column}` : ''}: ${reason}`, { line, column, csvCode: e.code });
}

/**
 * csv-parse with its own casting off (values stay strings) and records as arrays, never objects, so a
 * header such as `__proto__` is just a name. Consume it with `on('data')`: at that moment
 * `parser.info.lines` is the line the record ends on, which row errors name.
 */
export function rowParser(dialect: CsvDialect): Parser {
  return parse({
    delimiter: dialect.delimiter,
    quote: dialect.quote,
    bom: true,
    cast: false,
    columns: false,
    relax_column_count: false,
    skip_empty_lines: true,
    max_record_size: dialect.maxRecordBytes,
  });
}
