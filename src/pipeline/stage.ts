/**
 * The main thread's side of staging: hands chunks of records to staging threads (stage-worker.ts), a
 * few in flight per thread so a slow disk pauses reading instead of filling memory, and keeps where
 * each chunk's rows went. Chunks finish out of order across threads; what counts is file order: the
 * rows are applied in it, and the error reported is the one earliest in the file.
 */
import { isUtf8 } from 'node:buffer';
import { Writable } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import { type Chunk, RecordChunker } from '../formats/csv/chunk.js';
import type { CsvDialect } from '../config/config.js';
import { type ErrorCode, InboxdError, reject } from '../errors.js';
import { type MapStats, mergeStats, RowMapper } from './map.js';
import type { FieldSpec } from '../config/mapping.js';
import { RecordReader, utf8ErrorLine } from '../formats/csv/parse.js';
import type { FromWorker, ToWorker, WorkerSpec } from './stage-worker.js';
import type { LineFormat } from '../formats/records.js';
import type { StagingWriter } from '../store/types.js';
import { collectGrown, collectYoung, shrinkYoung } from './collect.js';
import { THREADS, type ThreadPool, threadPool } from './threads.js';

const IN_FLIGHT = 2;
/**
 * Big enough that per-chunk costs vanish, small enough that a few in flight per thread cost little memory,
 * and that a chunk's text and its values array stay below V8's large-object size (128 KB): those are
 * freed only by a full collection, and with 256 KB chunks piled up to tens of MB per thread.
 */
export const CHUNK_BYTES = Number(process.env.INBOXD_TEST_CHUNK_BYTES) || 96 * 1024;
/** Chunks posted between two collections of the main thread's dead buffers (collect.ts): about 1.5 MB. */
const COLLECT_EVERY = 16;
/**
 * The largest delivery whose threads go back to their pool. A larger one's commit fills the target's
 * page cache (8 MB, store.ts), which is where a delivery's memory peaks: the thread kept idle would add ~10 MB
 * to it. Starting it again costs the next large delivery ~75 ms, nothing beside its seconds.
 */
const KEEP_THREADS_UP_TO = 16 * 1024 * 1024;

export interface StageSpec {
  /** where the delivery stages: each thread's scratch storage is named from it (StagingWriter.scratchName) */
  base: string;
  /** the database backend's writer the threads load (Staging.writer): the pipeline knows no driver */
  writer: StagingWriter;
  fields: readonly FieldSpec[];
  totals: readonly string[];
  /** the flow's key: shown with each row error */
  keys: readonly string[];
  maxReported: number;
  csv: CsvDialect;
  /** a line format (ndjson, fixed) instead of CSV */
  lines?: LineFormat;
}

/** Staged rows: in file order, row number ranges of the threads' scratch storage (files, or tables). */
export interface StagedRows {
  files: string[];
  runs: Array<{ file: number; from: number; to: number }>;
}

interface Thread {
  /** its scratch storage */
  path: string;
  worker: Worker;
  inFlight: number;
  stats?: MapStats;
  /** stops this delivery's listening to the thread, before it goes back to the pool */
  unlisten: () => void;
}

/**
 * The end of a delivery's byte stream (UTF-8 by now): cuts it into chunks of records, reads the header
 * from the first, checks the bytes are UTF-8 (chunks start on a character), hands the chunks on.
 * `utf8Checked`: a decoder upstream has already refused bytes that are not text.
 */
export function stagingSink(stager: Pick<Stager, 'start' | 'add'>, spec: Omit<StageSpec, 'writer'> & { header: boolean; utf8Checked: boolean; chunkBytes?: number }): Writable {
  const chunkBytes = spec.chunkBytes ?? CHUNK_BYTES;
  const chunker = new RecordChunker(spec.csv.quote.charCodeAt(0), chunkBytes, chunkBytes + 2 * spec.csv.maxRecordBytes);
  const firstRecord = new RecordReader(spec.csv, { limit: 1 });
  const readFirst = (chunk: Chunk): string[] | undefined => {
    let found: string[] | undefined;
    firstRecord.read(chunk, (record) => (found ??= record));
    return found;
  };
  let first: string[] | undefined;
  let held: Chunk[] = []; // a first record cut across chunks (a run flagged `more`) waits whole
  let afterCr = false; // a forced cut can fall inside a CRLF
  const send = async (chunks: Chunk[]): Promise<void> => {
    for (const chunk of chunks) {
      if (!spec.utf8Checked && !isUtf8(chunk.bytes)) {
        const line = utf8ErrorLine(chunk, afterCr);
        throw reject('BAD_ENCODING', `line ${line}: bytes that are not valid ${spec.csv.encoding}`, { line });
      }
      afterCr = chunk.bytes[chunk.bytes.length - 1] === 0x0d;
      if (first) {
        await stager.add(chunk, false);
        continue;
      }
      held.push(chunk);
      first = readFirst(chunk);
      if (!first) {
        if (!chunk.more) held = []; // empty lines only
        continue;
      }
      if (spec.header) new RowMapper(spec.fields, spec.totals, 0).header(first, spec.csv.delimiter); // a missing column fails here, before any thread starts
      stager.start(spec.header ? first : null, first.length);
      for (const [i, c] of held.entries()) await stager.add(c, i === 0 && spec.header);
      held = [];
    }
  };
  return new Writable({
    write(buf: Buffer, _enc, cb) {
      send(chunker.push(buf)).then(() => cb(), cb);
    },
    final(cb) {
      send(chunker.end()).then(() => {
        // With no header at all (an empty file) nothing checked the columns: not a delivery of this flow.
        if (!first && spec.header) throw reject('MISSING_COLUMN', 'line 1: the file is empty; the header line is missing', { line: 1 });
      }).then(() => cb(), cb);
    },
  });
}

export class Stager {
  private readonly threads: Thread[] = [];
  private readonly pool: ThreadPool;
  private readonly ranges: Array<{ file: number; from: number; to: number } | undefined> = [];
  private readonly failed = new Map<number, Error>();
  private broken: Error | undefined;
  private next = 0;
  private bytes = 0;
  /** the thread a chunk flagged `more` went to: the rest of its record goes there too */
  private sticky: Thread | undefined;
  private waiters: Array<() => void> = [];
  private setup: { header: string[] | null; width: number } | undefined;

  constructor(private readonly spec: StageSpec) {
    this.pool = threadPool(spec.writer);
  }

  /** The file's first record is known: its header (or null without one) and how many columns rows have. */
  start(header: string[] | null, width: number): void {
    this.setup = { header, width };
  }

  /** Sends a chunk to a thread with room, waiting while all are busy. Throws once any chunk has failed. */
  async add(chunk: Chunk, skipFirst: boolean): Promise<void> {
    let thread: Thread | undefined;
    while (!(thread = this.room())) await this.changed();
    const index = this.next++;
    this.bytes += chunk.bytes.length;
    thread.inFlight++;
    this.sticky = chunk.more ? thread : undefined;
    // A chunk's own memory moves to the thread instead of being copied; the thread's small young
    // generation frees it soon after (the main thread's would hold it far longer).
    const { owned, ...message } = chunk;
    thread.worker.postMessage({ chunk: message, index, skipFirst } satisfies ToWorker, owned ? [chunk.bytes.buffer as ArrayBuffer] : []);
    if (index % COLLECT_EVERY === COLLECT_EVERY - 1) {
      collectYoung();
      collectGrown(); // openpgp's stream layers leave the old generation garbage of their own
    }
  }

  /** Every chunk staged: the rows and what mapping found. Throws the error earliest in the file. */
  async finish(): Promise<{ stats: MapStats; rows: StagedRows }> {
    const error = await this.settle();
    if (error) throw error;
    for (const t of this.threads) t.worker.postMessage({ end: true } satisfies ToWorker);
    while (this.threads.some((t) => !t.stats) && !this.broken) await this.changed();
    if (this.broken) throw this.broken;
    const stats = mergeStats(this.threads.map((t) => t.stats!), this.spec.totals, this.spec.maxReported);
    const rows = this.stagedRows();
    if (this.bytes > KEEP_THREADS_UP_TO) {
      await this.abort();
      shrinkYoung(); // what this delivery grew it to waits for the next otherwise (collect.ts)
    } else for (const t of this.threads.splice(0)) {
      t.unlisten();
      this.pool.give(t.worker);
    }
    return { stats, rows };
  }

  /** Waits for the chunks in flight; returns the error earliest in the file, if any chunk failed. */
  async settle(): Promise<Error | undefined> {
    while (this.threads.some((t) => t.inFlight > 0) && !this.broken) await this.changed();
    if (this.broken) return this.broken;
    const first = Math.min(...this.failed.keys());
    return this.failed.get(first);
  }

  /** Stops the threads where they are: a failed delivery's are not used again (nor a large one's, see KEEP_THREADS_UP_TO). */
  async abort(): Promise<void> {
    await Promise.all(this.threads.splice(0).map((t) => t.worker.terminate()));
  }

  /** A thread that can take the next chunk now, started if need be; throws once something failed. */
  private room(): Thread | undefined {
    if (this.broken) throw this.broken;
    if (this.failed.size) throw this.failed.values().next().value!;
    if (this.sticky) return this.sticky.inFlight < IN_FLIGHT ? this.sticky : undefined;
    // Another thread only once those running are full: a small file needs one.
    const idle = this.threads.reduce<Thread | undefined>((best, t) => (t.inFlight < IN_FLIGHT && (!best || t.inFlight < best.inFlight) ? t : best), undefined);
    return idle ?? (this.threads.length < THREADS ? this.spawn() : undefined);
  }

  private spawn(): Thread {
    if (!this.setup) throw new Error('Stager.start must come before the first chunk');
    const n = this.threads.length;
    const path = this.spec.writer.scratchName(this.spec.base, n);
    const worker = this.pool.take();
    const setup: WorkerSpec = { path, writerOptions: this.spec.writer.options, fields: [...this.spec.fields], totals: [...this.spec.totals], keys: [...this.spec.keys], maxReported: this.spec.maxReported, csv: this.spec.csv, lines: this.spec.lines, ...this.setup };
    const onMessage = (m: FromWorker) => {
      if ('ack' in m) this.ranges[m.ack] = { file: n, from: m.rows[0], to: m.rows[1] };
      else if ('error' in m && m.index < 0) return this.break(new InboxdError(m.error.code as ErrorCode, m.error.message, m.error.details));
      else if ('error' in m) this.failed.set(m.index, new InboxdError(m.error.code as ErrorCode, m.error.message, m.error.details));
      else thread.stats = m.done;
      if (!('done' in m)) thread.inFlight--;
      this.wake();
    };
    const onError = (err: Error) => this.break(err);
    const onExit = (code: number) => this.break(new Error(`staging thread exited with code ${code}`));
    worker.on('message', onMessage).on('error', onError).on('exit', onExit);
    const unlisten = () => void worker.off('message', onMessage).off('error', onError).off('exit', onExit);
    const thread: Thread = { path, worker, inFlight: 0, unlisten };
    worker.postMessage({ setup } satisfies ToWorker);
    this.threads.push(thread);
    return thread;
  }

  /** The ranges in file order, neighbours in the same file joined. */
  private stagedRows(): StagedRows {
    const runs: StagedRows['runs'] = [];
    for (const r of this.ranges) {
      if (!r || r.to < r.from) continue;
      const last = runs[runs.length - 1];
      if (last && last.file === r.file && last.to + 1 === r.from) last.to = r.to;
      else runs.push({ ...r });
    }
    return { files: this.threads.map((t) => t.path), runs };
  }

  private break(err: Error): void {
    this.broken ??= err;
    this.wake();
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }
}
