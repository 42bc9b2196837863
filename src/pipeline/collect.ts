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
type Gc = (options?: { type: 'minor' } | { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

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
  fullCollection();
}

/** Room in the young generation that is enough for moving a file's bytes (4 MB by the time it is used). */
const YOUNG_ROOM = 6 * 1024 * 1024;

/**
 * Gives back the young generation's room beyond YOUNG_ROOM, after start-up and after a large delivery:
 * V8 grows it while many objects survive (at start-up: modules, the configuration) and never shrinks
 * it on its own. On Node 24 the main thread's stayed at 11-13 MB through a delivery, and the
 * memory-reducing collection V8 keeps for its last resort brings it to 2-4 MB (npm run bench, 1M rows
 * signed and encrypted: -3 to -9 MB); it takes ~45 ms. Node 20 runs it as a plain full collection (~8 ms).
 */
export function shrinkYoung(): void {
  if ((space('new_space')?.physical_space_size ?? 0) <= YOUNG_ROOM) return;
  fullCollection({ type: 'major', execution: 'sync', flavor: 'last-resort' });
}

/** Growth since the last full collection (old generation and ArrayBuffers' memory) that makes collectGrown collect. */
const GROWTH = 4 * 1024 * 1024;
const space = (name: string) => getHeapSpaceStatistics().find((s) => s.space_name === name);
/** What a full collection would free from: the old generation, and the memory of ArrayBuffers (whose objects may be old). */
function retained(): number {
  return (space('old_space')?.space_used_size ?? 0) + getHeapStatistics().external_memory;
}
let afterCollection = retained();

/** Every full collection, so that collectGrown measures growth from the last one, whoever asked for it. */
function fullCollection(options?: Parameters<Gc>[0]): void {
  gc ??= load();
  if (options) gc?.(options);
  else gc?.(); // not gc(undefined): on Node 24 that left the old generation uncollected (test/unit.test.ts)
  afterCollection = retained();
}

/**
 * A full collection once the old generation, or the memory of ArrayBuffers, has grown 4 MB since the
 * last: objects that outlive a scavenge are promoted, and V8 lets them pile up dead long before it
 * collects them (a Buffer's object is small, its memory is not). Cheap to call: a look at the heap's statistics.
 */
export function collectGrown(): void {
  if (retained() - afterCollection >= GROWTH) fullCollection();
}
