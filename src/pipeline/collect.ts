/**
 * A young-generation collection on demand, for the main thread while it moves a file's bytes.
 *
 * V8 returns a Buffer's memory only when a collection finds the Buffer dead. Moving bytes (read,
 * decrypt, cut into chunks, post to a staging thread) allocates few JS objects per megabyte, so the
 * young generation fills slowly and some 30 MB of dead read and chunk buffers wait for it: a third
 * of a large delivery's peak memory (npm run bench: 1M rows plain 147 → 118 MB, OpenPGP 166 → 140).
 * A scavenge of a young generation this small takes a fraction of a millisecond.
 *
 * Node has no public call for it, so `gc` is exposed at run time the way Jest's leak detector does
 * (the flag applies to contexts made after it). If that ever stops working, this does nothing.
 */
import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** With no options: a full, synchronous collection (on Node 20, `{ type: 'major' }` frees nothing). */
type Gc = (options?: { type: 'minor' }) => void;

let gc: Gc | null | undefined;

function load(): Gc | null {
  try {
    setFlagsFromString('--expose-gc');
    const fn: unknown = runInNewContext('gc');
    return typeof fn === 'function' ? (fn as Gc) : null;
  } catch {
    return null;
  }
}

/** Collects the young generation now; frees the memory of Buffers nothing refers to any more. */
export function collectYoung(): void {
  gc ??= load();
  gc?.({ type: 'minor' });
}

/** A full collection: frees what the old generation holds dead (a staging thread calls it when its delivery is done). */
export function collectAll(): void {
  gc ??= load();
  gc?.();
}

/** Growth since the last full collection (old generation and ArrayBuffers' memory) that makes collectGrown collect. */
const GROWTH = 4 * 1024 * 1024;
/** What a full collection would free from: the old generation, and the memory of ArrayBuffers (whose objects may be old). */
function retained(): number {
  const old = getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')?.space_used_size ?? 0;
  return old + getHeapStatistics().external_memory;
}
let afterCollection = retained();

/**
 * A full collection once the old generation, or the memory of ArrayBuffers, has grown 4 MB since the
 * last: objects that outlive a scavenge are promoted, and V8 lets them pile up dead long before it
 * collects them (a Buffer's object is small, its memory is not). Cheap to call: a look at the heap's statistics.
 */
export function collectGrown(): void {
  if (retained() - afterCollection < GROWTH) return;
  collectAll();
  afterCollection = retained();
}
