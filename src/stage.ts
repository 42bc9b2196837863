/**
 * The main thread's handle on a staging writer thread. Batches are posted with backpressure: at most
 * a few are in flight, so a slow disk stalls the parser instead of filling memory.
 */
import { Worker } from 'node:worker_threads';
import type { Value } from './map.js';

const BATCH_ROWS = 2000;
const MAX_IN_FLIGHT = 4;

export class Stager {
  private readonly worker: Worker;
  private flat: Value[] = [];
  private rows = 0;
  private inFlight = 0;
  private waiters: Array<() => void> = [];
  private failure: Error | undefined;
  private closed: Promise<void>;

  constructor(readonly path: string, private readonly columns: number) {
    this.worker = new Worker(new URL('./stage-worker.js', import.meta.url), { workerData: { path, columns } });
    this.closed = new Promise((resolve, reject) => {
      this.worker.on('message', (m) => {
        if (m === 'ack') this.inFlight--;
        else if (m === 'closed') resolve();
        this.wake();
      });
      this.worker.on('error', (err) => {
        this.failure = err;
        this.wake();
        reject(err);
      });
      this.worker.on('exit', (code) => {
        if (code !== 0) this.failure ??= new Error(`staging writer exited with code ${code}`);
        this.wake();
        reject(this.failure);
      });
    });
    this.closed.catch(() => {});
  }

  /** Adds one row; resolves at once unless too many batches are in flight. */
  async add(row: Value[]): Promise<void> {
    for (const v of row) this.flat.push(v);
    if (++this.rows >= BATCH_ROWS) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.rows > 0) {
      this.inFlight++;
      this.worker.postMessage({ flat: this.flat });
      this.flat = [];
      this.rows = 0;
    }
    while (this.inFlight >= MAX_IN_FLIGHT && !this.failure) await new Promise<void>((r) => this.waiters.push(r));
    if (this.failure) throw this.failure;
  }

  /** Sends the rest, waits until every row is in the file and the file is closed. */
  async finish(): Promise<void> {
    await this.flush();
    this.worker.postMessage({ end: true });
    await this.closed;
    await this.worker.terminate();
  }

  async abort(): Promise<void> {
    await this.worker.terminate();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }
}
