/**
 * The main thread's handle on a staging writer thread (stage-worker.ts). Records are posted in flat
 * batches with backpressure: at most a few batches are in flight, so a slow disk pauses the parser
 * instead of filling memory.
 */
import { Worker } from 'node:worker_threads';
import { type ErrorCode, InboxdError } from './errors.js';
import type { MapStats } from './map.js';
import type { FieldSpec } from './mapping.js';

const BATCH_ROWS = 4000;
const MAX_IN_FLIGHT = 3;

export interface StageSpec {
  path: string;
  fields: readonly FieldSpec[];
  totals: readonly string[];
  maxReported: number;
}

export class Stager {
  private readonly worker: Worker;
  private cells: string[] = [];
  private lines: number[] = [];
  private width = 0;
  private inFlight = 0;
  private waiters: Array<() => void> = [];
  private failure: Error | undefined;
  private readonly done: Promise<MapStats>;

  constructor(spec: StageSpec) {
    this.worker = new Worker(new URL('./stage-worker.js', import.meta.url), { workerData: { ...spec } });
    this.done = new Promise<MapStats>((resolve, reject) => {
      this.worker.on('message', (m: { ack?: true; done?: MapStats; error?: { code: ErrorCode; message: string; details: Record<string, unknown> } }) => {
        if (m.ack) this.inFlight--;
        else if (m.done) resolve(m.done);
        else if (m.error) this.fail(new InboxdError(m.error.code, m.error.message, m.error.details), reject);
        this.wake();
      });
      this.worker.on('error', (err) => this.fail(err, reject));
      this.worker.on('exit', (code) => this.fail(new Error(`staging writer exited with code ${code}`), reject));
    });
    this.done.catch(() => {});
  }

  header(record: string[]): void {
    this.worker.postMessage({ header: record });
  }

  /**
   * Adds one record; returns true when the caller should wait for `drained()` before adding more.
   * A failed writer also answers true: `drained()` then rejects with its error.
   */
  add(record: string[], line: number): boolean {
    if (this.failure) return true;
    this.width = record.length;
    for (let i = 0; i < record.length; i++) this.cells.push(record[i]!);
    this.lines.push(line);
    if (this.lines.length >= BATCH_ROWS) this.post();
    return this.inFlight >= MAX_IN_FLIGHT || this.failure !== undefined;
  }

  async drained(): Promise<void> {
    while (this.inFlight >= MAX_IN_FLIGHT && !this.failure) await new Promise<void>((r) => this.waiters.push(r));
    if (this.failure) throw this.failure;
  }

  /** Sends the rest and waits until every row is in the file; returns what mapping found. */
  async finish(): Promise<MapStats> {
    this.post();
    this.worker.postMessage({ end: true });
    try {
      return await this.done;
    } finally {
      await this.worker.terminate();
    }
  }

  async abort(): Promise<void> {
    await this.worker.terminate();
  }

  private post(): void {
    if (this.lines.length === 0) return;
    this.inFlight++;
    this.worker.postMessage({ cells: this.cells, lines: this.lines, width: this.width });
    this.cells = [];
    this.lines = [];
  }

  private fail(err: Error, reject: (e: Error) => void): void {
    this.failure ??= err;
    reject(this.failure);
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }
}
