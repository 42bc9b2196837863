/**
 * A staging thread: parses chunks of CSV records (parse.ts), types them by the mapping (map.ts) and
 * writes them to scratch storage of its own through the database backend's writer (`spec.writer`, e.g.
 * store/sqlite/scratch.ts: a scratch SQLite file). Several run at once, one chunk each, so parsing uses
 * every core. Each chunk's rows get consecutive row numbers here; the main thread keeps the ranges in
 * file order, and the commit applies them in that order. Scratch storage needs no durability: a crash
 * discards it and the delivery is redone.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Chunk } from '../formats/csv/chunk.js';
import type { CsvDialect } from '../config/config.js';
import { classify, reject } from '../errors.js';
import { RowMapper, type Value } from './map.js';
import type { FieldSpec } from '../config/mapping.js';
import { RecordReader } from '../formats/csv/parse.js';
import { type LineFormat, lineReader } from '../formats/records.js';

/**
 * What a backend's writer module exports as `openScratch`: `columns` values a row, rows numbered from 1
 * in the order inserted. Synchronous: a thread's chunks are staged one after the other, in order.
 */
export type OpenScratch = (path: string, columns: number) => ScratchWriter;

export interface ScratchWriter {
  /** Rows, `columns` values each, one after the other; all or none. */
  insert(values: Value[]): void;
  close(): void;
}

export interface WorkerSpec {
  /** the scratch storage of this thread (a file, for SQLite) */
  path: string;
  /** the URL of the backend's writer module (Staging.writer) */
  writer: string;
  fields: FieldSpec[];
  totals: string[];
  keys: string[];
  maxReported: number;
  csv: CsvDialect;
  /** a line format (ndjson, fixed) instead of CSV: its records come in mapping order */
  lines?: LineFormat;
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
const mapper = new RowMapper(spec.fields, spec.totals, spec.maxReported, spec.keys);
if (spec.header) mapper.header(spec.header);
const reader = new RecordReader(spec.csv);
const lines = spec.lines && lineReader(spec.lines, spec.fields);
const { openScratch } = (await import(spec.writer)) as { openScratch: OpenScratch };
const scratch = outOfThread(() => openScratch(spec.path, columns));
let staged = 0;
let skipping = false; // the header line is still to come, perhaps in a later chunk of a `more` run

/** Parses, maps and stores one chunk; returns the rowids its good rows got. */
function stageChunk(chunk: Chunk, skipFirst: boolean): [number, number] {
  const values: Value[] = [];
  // Buffers arrive as plain Uint8Arrays: the readers want a Buffer.
  chunk = { ...chunk, bytes: Buffer.from(chunk.bytes.buffer, chunk.bytes.byteOffset, chunk.bytes.byteLength) };
  if (lines) lines.read(chunk, (record, line) => mapper.map(record, line, values), (line, reason) => mapper.unreadable(line, reason));
  else readCsv(chunk, skipFirst, values);
  scratch.insert(values);
  const from = staged + 1;
  staged += values.length / columns;
  return [from, staged];
}

function readCsv(chunk: Chunk, skipFirst: boolean, values: Value[]): void {
  if (skipFirst) skipping = true;
  reader.read(chunk, (record, line) => {
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
}

parentPort!.on('message', (msg: ToWorker) => {
  if ('end' in msg) {
    outOfThread(() => scratch.close());
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
 * What this thread throws uncaught reaches the main thread cloned, and a driver's error (a SqliteError)
 * arrives as a bare `{ code }`, its message lost: thrown as a plain Error with the same message and code instead.
 */
function outOfThread<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const e = err as { message?: string; code?: unknown };
    throw Object.assign(new Error(e.message ?? String(err)), { code: e.code });
  }
}
