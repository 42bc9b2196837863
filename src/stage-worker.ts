/**
 * The staging writer, in its own thread: rows arrive in flat batches and go into a per-delivery
 * scratch SQLite file, so parsing (main thread) and inserting (here) use both cores.
 * The scratch file needs no durability: a crash discards it and the delivery is redone.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const { path, columns } = workerData as { path: string; columns: number };
const db = new Database(path);
db.pragma('journal_mode = OFF');
db.pragma('synchronous = OFF');
db.pragma('cache_size = -65536');
const cols = Array.from({ length: columns }, (_, i) => `c${i}`);
db.exec(`CREATE TABLE rows (${cols.join(', ')})`);

// One statement for many rows: fewer calls across the native boundary.
const PER_STMT = Math.max(1, Math.floor(999 / columns));
const one = `(${cols.map(() => '?').join(',')})`;
const many = db.prepare(`INSERT INTO rows VALUES ${Array(PER_STMT).fill(one).join(',')}`);
const single = db.prepare(`INSERT INTO rows VALUES ${one}`);
const width = PER_STMT * columns;

const insert = db.transaction((flat: unknown[]) => {
  let i = 0;
  for (; i + width <= flat.length; i += width) many.run(flat.slice(i, i + width));
  for (; i < flat.length; i += columns) single.run(flat.slice(i, i + columns));
});

parentPort!.on('message', (msg: { flat?: unknown[]; end?: boolean }) => {
  if (msg.flat) {
    insert(msg.flat);
    parentPort!.postMessage('ack');
  } else if (msg.end) {
    db.close();
    parentPort!.postMessage('closed');
  }
});
