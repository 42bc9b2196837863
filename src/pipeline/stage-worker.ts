/**
 * A staging thread: parses chunks of CSV records (parse.ts), types them by the mapping (map.ts) and
 * writes them to scratch storage of its own through the database backend's writer (`writer` in its
 * ThreadData, e.g. store/sqlite/scratch.ts: a scratch SQLite file). Several run at once, one chunk each,
 * so parsing uses every core. A thread stages one delivery after another (threads.ts keeps it between
 * them): a `setup` message starts one, `end` closes it. Each chunk's rows get consecutive row numbers
 * here; the main thread keeps the ranges in file order, and the commit applies them in that order.
 * Scratch storage needs no durability: a crash discards it and the delivery is redone.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Chunk } from '../formats/csv/chunk.js';
import type { CsvDialect } from '../config/config.js';
import { classify, InboxdError, reject } from '../errors.js';
import { collectAll, collectGrown } from './collect.js';
import { RowMapper, type Value } from './map.js';
import type { FieldSpec } from '../config/mapping.js';
import { RecordReader } from '../formats/csv/parse.js';
import { type LineFormat, type LineReader, lineReader } from '../formats/records.js';

/**
 * What a backend's writer module exports as `openScratch`: `name` is the thread's scratch storage (a
 * file for SQLite, a table for PostgreSQL), `options` the backend's (Staging.writer.options). A thread's
 * chunks are staged one after the other, in order; `chunk` is the chunk's index in the file, and rows
 * are numbered from 1 in the order inserted.
 */
export type OpenScratch = (name: string, fields: readonly FieldSpec[], options: unknown) => ScratchWriter | Promise<ScratchWriter>;

export interface ScratchWriter {
  /** Rows, one value per field each, one after the other; all or none. */
  insert(values: Value[], chunk: number): void | Promise<void>;
  close(): void | Promise<void>;
}

/** What a thread is started with: the URL of the backend's writer module, loaded before any delivery. */
export interface ThreadData {
  writer: string;
}

/** One delivery's staging, a thread's first message for it. */
export interface WorkerSpec {
  /** the scratch storage of this thread (a file for SQLite, a table for PostgreSQL) */
  path: string;
  /** the backend's options for its writer (Staging.writer.options) */
  writerOptions?: unknown;
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
export type ToWorker = { setup: WorkerSpec } | { chunk: Chunk; index: number; skipFirst: boolean } | { end: true };
export type FromWorker =
  | { ack: number; rows: [from: number, to: number] }
  /** a chunk's error; index -1: the thread's own (its setup, its end) */
  | { index: number; error: { code: string; message: string; details: Record<string, unknown> } }
  | { done: RowMapper['stats'] };

/** Chunks (~3 MB) between two looks at the thread's old generation (collect.ts, collectGrown). */
const COLLECT_EVERY = 32;
let chunks = 0;

const { openScratch } = (await import((workerData as ThreadData).writer)) as { openScratch: OpenScratch };

/** A delivery being staged by this thread: its parser and mapper, and its scratch storage once opened. */
class DeliveryStaging {
  readonly mapper: RowMapper;
  private readonly reader: RecordReader;
  private readonly lines: LineReader | undefined;
  private readonly columns: number;
  private scratch: ScratchWriter | undefined; // opened with the first chunk, so an opening error is that chunk's
  private staged = 0;
  private skipping = false; // the header line is still to come, perhaps in a later chunk of a `more` run

  constructor(private readonly spec: WorkerSpec) {
    this.columns = spec.fields.length;
    this.mapper = new RowMapper(spec.fields, spec.totals, spec.maxReported, spec.keys);
    if (spec.header) this.mapper.header(spec.header);
    this.reader = new RecordReader(spec.csv);
    this.lines = spec.lines && lineReader(spec.lines, spec.fields);
  }

  /** Parses, maps and stores one chunk; returns the row numbers its good rows got. */
  async chunk(chunk: Chunk, index: number, skipFirst: boolean): Promise<[number, number]> {
    const { spec, mapper } = this;
    const values: Value[] = [];
    if (skipFirst) this.skipping = true;
    // Buffers arrive as plain Uint8Arrays: the readers want a Buffer.
    const bytes = Buffer.from(chunk.bytes.buffer, chunk.bytes.byteOffset, chunk.bytes.byteLength);
    if (this.lines) this.lines.read({ ...chunk, bytes }, (record, line) => mapper.map(record, line, values), (line, reason) => mapper.unreadable(line, reason));
    else this.reader.read({ ...chunk, bytes }, (record, line) => {
      if (record.length !== spec.width) {
        const what = spec.header ? 'the header has' : 'the first row has';
        throw reject('MALFORMED_CSV', `line ${line}: the row has ${record.length} columns, ${what} ${spec.width}`, { line, csvCode: 'CSV_RECORD_INCONSISTENT_FIELDS_LENGTH' });
      }
      if (this.skipping) {
        this.skipping = false;
        return;
      }
      mapper.map(record, line, values);
    });
    const scratch = (this.scratch ??= await outOfThread(() => openScratch(spec.path, spec.fields, spec.writerOptions)));
    await outOfThread(() => scratch.insert(values, index));
    const from = this.staged + 1;
    this.staged += values.length / this.columns;
    // What outlives a scavenge while a chunk is parsed is promoted: NDJSON's parsed objects grew each
    // thread by ~25 MB before V8 collected them. CSV's seldom grow this much, so seldom pay (~10 ms).
    if (++chunks % COLLECT_EVERY === 0) collectGrown();
    return [from, this.staged];
  }

  async end(): Promise<void> {
    const { scratch } = this;
    if (scratch) await outOfThread(() => scratch.close());
  }
}

let current: DeliveryStaging | undefined;

const errorOf = (err: unknown): { code: string; message: string; details: Record<string, unknown> } => {
  const e = classify(err);
  return { code: e.code, message: e.message, details: e.details };
};

/** One message after the other: a chunk's rows are stored before the next chunk's. */
async function handle(msg: ToWorker): Promise<void> {
  if ('setup' in msg) {
    try {
      current = new DeliveryStaging(msg.setup);
    } catch (err) {
      parentPort!.postMessage({ index: -1, error: errorOf(err) } satisfies FromWorker);
    }
    return;
  }
  const delivery = current;
  if (!delivery) return; // its setup failed, and said so
  if ('end' in msg) {
    current = undefined;
    try {
      await delivery.end();
    } catch (err) {
      // Storing the rows failed as they were closed (PostgreSQL: the COPY): the thread's rows are not all there.
      parentPort!.postMessage({ index: -1, error: errorOf(err) } satisfies FromWorker);
      return;
    }
    parentPort!.postMessage({ done: delivery.mapper.stats } satisfies FromWorker);
    collectAll(); // the thread may wait idle a long time now: what the delivery left is freed first
    return;
  }
  try {
    parentPort!.postMessage({ ack: msg.index, rows: await delivery.chunk(msg.chunk, msg.index, msg.skipFirst) } satisfies FromWorker);
  } catch (err) {
    parentPort!.postMessage({ index: msg.index, error: errorOf(err) } satisfies FromWorker);
  }
}

let queue = Promise.resolve();
parentPort!.on('message', (msg: ToWorker) => {
  queue = queue.then(() => handle(msg));
});

/**
 * What this thread throws uncaught reaches the main thread cloned, and a driver's error (a SqliteError)
 * arrives as a bare `{ code }`, its message lost: thrown as a plain Error with the same message and code instead.
 */
async function outOfThread<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof InboxdError) throw err; // ours already: its code and details go across as they are
    const e = err as { message?: string; code?: unknown };
    throw Object.assign(new Error(e.message ?? String(err)), { code: e.code });
  }
}
