/**
 * A staging thread: parses chunks of CSV records (parse.ts), types them by the mapping (map.ts) and
 * writes them to its own scratch SQLite file. Several run at once, one chunk each, so parsing uses
 * every core. Each chunk's rows get consecutive rowids here; the main thread keeps the ranges in file
 * order, and the commit applies them in that order. The scratch file needs no durability: a crash
 * discards it and the delivery is redone.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { Chunk } from '../formats/csv/chunk.js';
import type { CsvDialect } from '../config/config.js';
import { classify, reject } from '../errors.js';
import { RowMapper, type Value } from './map.js';
import type { FieldSpec } from '../config/mapping.js';
import { RecordReader } from '../formats/csv/parse.js';

export interface WorkerSpec {
  path: string;
  fields: FieldSpec[];
  totals: string[];
  maxReported: number;
  csv: CsvDialect;
  /** the partner's column names, or null for a file without a header line */
  header: string[] | null;
  /** the number of columns every record must have */
  width: number;
}

/** `skipFirst`: the chunk's first record is the header line, not a row. */
export type ToWorker = { chunk: Chunk; index: number; skipFirst: boolean } | { end: true };
export type FromWorker =
  | { ack: number; rows: [from: number, to: number] }
  | { index: number; error: { code: string; message: string; details: Record<string, unknown> } }
  | { done: RowMapper['stats'] };

const spec = workerData as WorkerSpec;
const columns = spec.fields.length;
const mapper = new RowMapper(spec.fields, spec.totals, spec.maxReported);
if (spec.header) mapper.header(spec.header);
const reader = new RecordReader(spec.csv);
const cols = Array.from({ length: columns }, (_, i) => `c${i}`);
const db = outOfThread(() => {
  const scratch = new Database(spec.path);
  scratch.pragma('journal_mode = MEMORY'); // OFF is refused in the defensive mode better-sqlite3 opens with
  scratch.pragma('synchronous = OFF');
  scratch.exec(`CREATE TABLE rows (${cols.join(', ')})`); // a full disk fails here
  return scratch;
});

// One statement for many rows: fewer calls across the native boundary.
const PER_STMT = Math.max(1, Math.floor(999 / columns));
const one = `(${cols.map(() => '?').join(',')})`;
const many = db.prepare(`INSERT INTO rows VALUES ${Array(PER_STMT).fill(one).join(',')}`);
const single = db.prepare(`INSERT INTO rows VALUES ${one}`);
const insert = db.transaction((values: Value[]) => {
  const width = PER_STMT * columns;
  let i = 0;
  for (; i + width <= values.length; i += width) many.run(values.slice(i, i + width));
  for (; i < values.length; i += columns) single.run(values.slice(i, i + columns));
});
let staged = 0;
let skipping = false; // the header line is still to come, perhaps in a later chunk of a `more` run

/** Parses, maps and stores one chunk; returns the rowids its good rows got. */
function stageChunk(chunk: Chunk, skipFirst: boolean): [number, number] {
  const values: Value[] = [];
  if (skipFirst) skipping = true;
  // Buffers arrive as plain Uint8Arrays: csv-parse wants a Buffer.
  const bytes = Buffer.from(chunk.bytes.buffer, chunk.bytes.byteOffset, chunk.bytes.byteLength);
  reader.read({ ...chunk, bytes }, (record, line) => {
    if (record.length !== spec.width) {
      const what = spec.header ? 'the header has' : 'the first row has';
      throw reject('MALFORMED_CSV', `line ${line}: the row has ${record.length} columns, ${what} ${spec.width}`, { line, csvCode: 'CSV_RECORD_INCONSISTENT_FIELDS_LENGTH' });
    }
    if (skipping) {
      skipping = false;
      return;
    }
    mapper.map(record, line, values);
  });
  insert(values);
  const from = staged + 1;
  staged += values.length / columns;
  return [from, staged];
}

parentPort!.on('message', (msg: ToWorker) => {
  if ('end' in msg) {
    outOfThread(() => db.close());
    parentPort!.postMessage({ done: mapper.stats } satisfies FromWorker);
    return;
  }
  try {
    parentPort!.postMessage({ ack: msg.index, rows: stageChunk(msg.chunk, msg.skipFirst) } satisfies FromWorker);
  } catch (err) {
    const e = classify(err);
    parentPort!.postMessage({ index: msg.index, error: { code: e.code, message: e.message, details: e.details } } satisfies FromWorker);
  }
});

/**
 * What this thread throws uncaught reaches the main thread cloned, and a SqliteError arrives as a bare
 * `{ code }`, its message lost: thrown as a plain Error with the same message and code instead.
 */
function outOfThread<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const e = err as { message?: string; code?: unknown };
    throw Object.assign(new Error(e.message ?? String(err)), { code: e.code });
  }
}
