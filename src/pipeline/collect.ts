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
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
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

/** A full collection: a staging thread's, once its delivery is done, so an idle thread holds no garbage. */
export function collectAll(): void {
  gc ??= load();
  gc?.();
}

/** Growth of the old generation since its last full collection that makes collectGrown collect it. */
const OLD_GROWTH = 4 * 1024 * 1024;
const oldUsed = () => getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')?.space_used_size ?? 0;
let oldAfterCollection = oldUsed();

/**
 * A full collection once the old generation has grown 4 MB since the last: objects that outlive a
 * scavenge are promoted, and V8 lets the old generation fill with them, dead, long before it
 * collects it. Cheap to call: a look at the heap's statistics.
 */
export function collectGrown(): void {
  if (oldUsed() - oldAfterCollection < OLD_GROWTH) return;
  collectAll();
  oldAfterCollection = oldUsed();
}
