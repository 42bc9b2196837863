/**
 * The parse step: bytes -> decoded text -> CSV records, in chunks of whole records (chunk.ts) that
 * several threads parse at once. Undecodable bytes and structural CSV errors reject the whole file,
 * naming the line.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { CsvError, parse, type Parser } from 'csv-parse';
import type { Chunk } from './chunk.js';
import type { CsvDialect } from '../../config/config.js';
import { reject } from '../../errors.js';

/** Strict decoding: a byte sequence that is not valid in the declared encoding is an error, not U+FFFD. */
export function decoder(encoding: string): Transform {
  const dec = new TextDecoder(encoding, { fatal: true });
  let lines = 1;
  let endsInCr = false;
  const decode = (chunk: Buffer | undefined, stream: boolean): string => {
    try {
      const text = chunk ? dec.decode(chunk, { stream }) : dec.decode();
      // A CRLF cut between two pieces is one line end.
      lines += lineEnds(text) - (endsInCr && text.startsWith('\n') ? 1 : 0);
      if (text.length > 0) endsInCr = text.endsWith('\r');
      return text;
    } catch {
      const line = lines + (chunk ? newlinesBeforeInvalid(encoding, chunk, false, endsInCr) : 0);
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
 * UTF-8 input is checked chunk by chunk (chunks start on a character): the line of its first bad byte.
 * `afterCr`: the chunk before ended in CR (a forced cut inside a CRLF).
 */
export function utf8ErrorLine(chunk: Chunk, afterCr = false): number {
  return chunk.firstLine + newlinesBeforeInvalid('utf-8', chunk.bytes, !chunk.more, afterCr);
}

/**
 * Error path only: the newlines in a chunk before its first undecodable byte. A prefix that decodes in
 * streaming mode holds no error and longer ones fail, so bisect with fresh decoders. UTF-8 continuation
 * bytes at the start belong to a character begun in the previous chunk and are skipped. A chunk that
 * decodes but for its end has a character cut short there: in the `final` chunk that is the error.
 * `crBefore`: the text before the chunk ended in CR, so a LF first is the end of that line, not another.
 */
function newlinesBeforeInvalid(encoding: string, chunk: Buffer, final: boolean, crBefore = false): number {
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
  if (ok === chunk.length && !final) return 0;
  const text = new TextDecoder(encoding).decode(chunk.subarray(start, ok));
  return lineEnds(text) - (crBefore && text.startsWith('\n') ? 1 : 0);
}

/** Line ends in text: LF, CRLF or a lone CR, as chunk.ts counts them in bytes. */
function lineEnds(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++;
  for (let i = text.indexOf('\r'); i !== -1; i = text.indexOf('\r', i + 1)) if (text.charCodeAt(i + 1) !== 0x0a) n++;
  return n;
}

/** Our words for csv-parse's errors: its own messages can quote the field's value, which may be personal data. */
const CSV_REASONS: Record<string, string> = {
  CSV_QUOTE_NOT_CLOSED: 'a quoted field is never closed',
  INVALID_OPENING_QUOTE: 'a quote inside a field that does not start with one (quote the whole field and double the quote)',
  CSV_INVALID_CLOSING_QUOTE: 'a quote inside a quoted field is not doubled',
  CSV_NON_TRIMABLE_CHAR_AFTER_CLOSING_QUOTE: 'characters follow a closing quote',
  CSV_MAX_RECORD_SIZE: 'the row is larger than the maximum record size',
};

/**
 * csv-parse's errors -> MALFORMED_CSV naming the line (and the column where csv-parse knows it).
 * `lineOf` turns csv-parse's line count into the file's line.
 */
export function csvError(err: unknown, lastRecordLine: number, lineOf: (csvParseLine: number) => number): unknown {
  if (!(err instanceof CsvError)) return err;
  const e = err as CsvError & { lines?: number; column?: number | string; index?: number };
  // csv-parse notices an unclosed quote only at the end of the file, or when the row grows too large
  // over several lines: name the line the row began on.
  const at = lineOf(e.lines ?? 1);
  const runaway = e.code === 'CSV_QUOTE_NOT_CLOSED' || (e.code === 'CSV_MAX_RECORD_SIZE' && at > lastRecordLine + 1);
  const line = runaway ? lastRecordLine + 1 : at;
  const column = typeof e.index === 'number' ? e.index + 1 : undefined;
  const reason = e.code === 'CSV_MAX_RECORD_SIZE' && runaway ? `the row grows past the maximum record size by line ${at}: is a quote never closed?` : CSV_REASONS[e.code] ?? `the file is not valid CSV (${e.code})`;
  return reject('MALFORMED_CSV', `line ${line}${column ? `, column ${column}` : ''}: ${reason}`, { line, column, csvCode: e.code });
}

/** The part of csv-parse's Parser that takes a buffer and calls back per record, synchronously. */
interface ParserApi {
  parse(buf: Buffer | undefined, end: boolean, push: (record: string[]) => void, close: () => void): Error | undefined;
}

const LF = 0x0a;
const CR = 0x0d;

/** Line ends (LF, CRLF, lone CR) in bytes[from, to). */
function lineBreaks(bytes: Buffer, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    const b = bytes[i];
    if (b === LF || (b === CR && bytes[i + 1] !== LF)) n++;
  }
  return n;
}

/**
 * Reads the records of chunks. A chunk of whole records gets a parser of its own, and each record's
 * line is counted from the bytes (csv-parse counts a CRLF inside a quoted field as two lines). A run of
 * chunks flagged `more` shares one parser, as one sequential parser would, and csv-parse's count.
 */
export class RecordReader {
  private parser: (Parser & { api: ParserApi }) | undefined;
  private exact = true;
  /** a line of the file and csv-parse's count at that point: what csv-parse's counts are measured from */
  private anchor = { line: 1, counted: 1 };
  /** where the last record ended: an unclosed quote opened after it */
  private lastLine = 0;

  private readonly limit: number | undefined;
  private readonly splitQuoteFree: boolean;

  /** `limit`: records to read at most. `splitQuoteFree: false` sends every chunk through csv-parse (tests). */
  constructor(private readonly dialect: CsvDialect, opts: { limit?: number; splitQuoteFree?: boolean } = {}) {
    this.limit = opts.limit;
    const d = dialect.delimiter;
    this.splitQuoteFree = (opts.splitQuoteFree ?? true) && !this.limit && !d.includes('\n') && !d.includes('\r') && !d.includes(dialect.quote);
  }

  /** Calls `onRecord` for each record in the chunk with the line it ends on; throws MALFORMED_CSV naming the line. */
  read(chunk: Chunk, onRecord: (record: string[], line: number) => void): void {
    if (!this.parser && this.quoteFree(chunk)) return splitLines(chunk, this.dialect.delimiter, onRecord);
    if (!this.parser) {
      this.parser = rowParser(this.dialect, this.limit);
      this.exact = !chunk.more;
      this.anchor = { line: chunk.firstLine, counted: 1 };
      this.lastLine = chunk.firstLine - 1;
    }
    const p = this.parser;
    if (!chunk.more) this.parser = undefined; // the run ends here: the next chunk starts afresh
    const { bytes } = chunk;
    let counted = 0;
    let next = chunk.firstLine; // the line bytes[counted] is on
    // The Parser's own engine, called directly: records arrive synchronously, with `info` for each.
    const push = (record: string[]) => {
      let line: number;
      if (this.exact) {
        const end = p.info.bytes; // just past the record and its line end, if it has one
        next += lineBreaks(bytes, counted, end);
        counted = end;
        line = bytes[end - 1] === LF || bytes[end - 1] === CR ? next - 1 : next;
        this.anchor = { line, counted: p.info.lines };
      } else line = this.anchor.line + p.info.lines - this.anchor.counted;
      this.lastLine = line;
      onRecord(record, line);
    };
    try {
      const err = p.api.parse(bytes, !chunk.more, push, () => {});
      if (err) throw csvError(err, this.lastLine, (n) => this.anchor.line + n - this.anchor.counted);
    } catch (err) {
      this.parser = undefined; // a failed run is over
      throw err;
    }
  }

  /**
   * A chunk of whole records with no quote character in it, and too short to hold a record over the
   * size limit: csv-parse could find no error in it, and its records are its lines split at the delimiter.
   */
  private quoteFree(chunk: Chunk): boolean {
    return this.splitQuoteFree && !chunk.more && chunk.bytes.length < this.dialect.maxRecordBytes && !chunk.bytes.includes(this.dialect.quote.charCodeAt(0));
  }
}

/**
 * Without quotes CSV has no syntax but line ends and delimiters: a quote-free chunk's records are its
 * non-empty lines split at the delimiter, exactly what csv-parse returns for them (a unit test holds
 * the two to the same records and lines on random input), in a fraction of the time: most files hold
 * no quote at all, and csv-parse, reading byte by byte, was half the cost of a delivery (npm run bench).
 */
export function splitLines(chunk: Chunk, delimiter: string, onRecord: (record: string[], line: number) => void): void {
  const text = chunk.bytes.toString('utf8');
  let lf = text.indexOf('\n');
  let cr = text.indexOf('\r');
  for (let start = 0, line = chunk.firstLine; start < text.length; line++) {
    if (lf !== -1 && lf < start) lf = text.indexOf('\n', start);
    if (cr !== -1 && cr < start) cr = text.indexOf('\r', start);
    const end = Math.min(lf === -1 ? text.length : lf, cr === -1 ? text.length : cr);
    if (end > start) onRecord(text.slice(start, end).split(delimiter), line);
    start = end + (end === cr && lf === end + 1 ? 2 : 1); // CRLF is one line end
  }
}

/**
 * csv-parse with its own casting off (values stay strings) and records as arrays, never objects, so a
 * header such as `__proto__` is just a name. The BOM is gone already (chunk.ts). CRLF, LF and CR all end
 * a record, so a newline outside quotes always does, which is what lets chunk.ts cut the file. Column
 * counts are checked by the caller against the header: each chunk's parser sees only part of the file.
 */
function rowParser(dialect: CsvDialect, limit?: number): Parser & { api: ParserApi } {
  const parser = parse({
    delimiter: dialect.delimiter,
    quote: dialect.quote,
    record_delimiter: ['\r\n', '\n', '\r'],
    bom: false,
    cast: false,
    columns: false,
    relax_column_count: true,
    skip_empty_lines: true,
    max_record_size: dialect.maxRecordBytes,
    ...(limit ? { to: limit } : {}),
  }) as Parser & { api?: ParserApi };
  if (typeof parser.api?.parse !== 'function') throw new Error('csv-parse: Parser.api.parse is missing (an incompatible csv-parse version)');
  decodeFieldsInPlace(parser);
  return parser as Parser & { api: ParserApi };
}

/** Whether csv-parse's field decoding runs in place (see below): a csv-parse upgrade that changes its shape shows here. */
export function fieldsDecodedInPlace(): boolean {
  const field = (rowParser({ delimiter: ',', quote: '"', header: false, encoding: 'utf-8', maxRecordBytes: 1 }) as Parser & { state?: { field?: object } }).state?.field;
  return !!field && (Object.getPrototypeOf(field) as { [PATCHED]?: true })[PATCHED] === true;
}

interface FieldBuffer {
  buf: Buffer & { utf8Slice?: (start: number, end: number) => string };
  length: number;
}
const PATCHED = Symbol('inboxd.decodeInPlace');

/**
 * csv-parse (6.2) turns every field into a string by `buf.slice(0, length).toString(encoding)`: a new
 * Buffer object per field before decoding. Decoding the range in place gives the same string and cuts
 * parsing time by about a quarter (npm run bench). Applied once to csv-parse's field buffer class when
 * it has the shape this was written for; anything else leaves csv-parse as it is.
 */
function decodeFieldsInPlace(parser: Parser): void {
  const field = (parser as Parser & { state?: { field?: FieldBuffer } }).state?.field;
  const proto = field && (Object.getPrototypeOf(field) as { toString: unknown; [PATCHED]?: true });
  if (!field || !proto || proto[PATCHED] || !Buffer.isBuffer(field.buf) || typeof field.length !== 'number' || typeof proto.toString !== 'function') return;
  const original = proto.toString as (this: FieldBuffer, encoding?: BufferEncoding | null) => unknown;
  // Buffer's own UTF-8 decoder, what toString('utf8') ends in, without the argument checks on the way.
  const direct = typeof field.buf.utf8Slice === 'function';
  proto.toString = function (this: FieldBuffer, encoding?: BufferEncoding | null) {
    if (encoding === 'utf8' && direct) return this.buf.utf8Slice!(0, this.length);
    return encoding ? this.buf.toString(encoding, 0, this.length) : original.call(this, encoding);
  };
  proto[PATCHED] = true;
}
