/**
 * Staging threads (stage-worker.ts), kept from one delivery to the next and started before the first:
 * a thread's start and its modules take ~75 ms on the 2-core machine, which was most of a small
 * delivery's time from upload to ACK and, on a large one, a pause before the first chunk is parsed.
 *
 * One pool per backend writer (each thread loads its writer module once). A thread goes back to its
 * pool only after a delivery ended cleanly; one that failed or was stopped is terminated. Idle
 * threads never keep the process alive.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { ThreadData } from './stage-worker.js';
import type { StagingWriter } from '../store/types.js';

/** Threads per delivery. */
export const THREADS = Math.max(1, Math.min(4, availableParallelism()));
/**
 * Threads a pool keeps idle: one, what a small delivery needs (a large one starts the others while
 * its first is busy, ~75 ms beside its seconds). Each idle thread holds ~10 MB.
 */
const IDLE = 1;
/** A thread's garbage is a chunk's records: a small young generation (V8's default grows to 48 MB) collects it as fast. */
const THREAD_LIMITS = { maxYoungGenerationSizeMb: 4 };

export class ThreadPool {
  private readonly idle: Worker[] = [];

  constructor(private readonly writer: StagingWriter) {}

  /** Starts a thread to wait idle, unless one does. */
  warm(): void {
    while (this.idle.length < IDLE) this.idle.push(this.start());
  }

  /** An idle thread, or a new one; it keeps the process alive until given back. */
  take(): Worker {
    const worker = this.idle.shift() ?? this.start();
    worker.ref();
    return worker;
  }

  /** A thread whose delivery ended cleanly (its `done` received): idle again, unless one is. */
  give(worker: Worker): void {
    if (this.idle.length >= IDLE) return void worker.terminate();
    worker.unref();
    this.idle.push(worker);
  }

  /** The idle threads' ids (Worker.threadId), the next one taken first. */
  idleIds(): number[] {
    return this.idle.map((w) => w.threadId);
  }

  /** Terminates the idle threads; later deliveries start new ones. */
  async close(): Promise<void> {
    await Promise.all(this.idle.splice(0).map((w) => w.terminate()));
  }

  private start(): Worker {
    const { module, youngGenerationMb } = this.writer;
    const worker = new Worker(new URL('./stage-worker.js', import.meta.url), {
      workerData: { writer: module } satisfies ThreadData,
      resourceLimits: youngGenerationMb ? { maxYoungGenerationSizeMb: youngGenerationMb } : THREAD_LIMITS,
    });
    worker.unref();
    // An idle thread that dies (its writer module failed to load) leaves the pool; a taken one's Stager hears of it too.
    const drop = () => {
      const i = this.idle.indexOf(worker);
      if (i >= 0) this.idle.splice(i, 1);
    };
    worker.on('error', drop);
    worker.on('exit', drop);
    return worker;
  }
}

const pools = new Map<string, ThreadPool>();

/** The pool of threads for a backend's writer: one per writer module and thread limits. */
export function threadPool(writer: StagingWriter): ThreadPool {
  const key = `${writer.module} ${writer.youngGenerationMb ?? ''}`;
  let pool = pools.get(key);
  if (!pool) pools.set(key, (pool = new ThreadPool(writer)));
  return pool;
}
