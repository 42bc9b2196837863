/**
 * The staging writer, in its own thread: CSV records arrive in flat batches, are typed by the mapping
 * (map.ts) and go into a per-delivery scratch SQLite file. Parsing (main thread) and mapping plus
 * inserting (here) so run on both cores. The scratch file needs no durability: a crash discards it
 * and the delivery is redone.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { InboxdError } from './errors.js';
import { RowMapper, type Value } from './map.js';
import type { FieldSpec } from './mapping.js';

const { path, fields, totals, maxReported } = workerData as { path: string; fields: FieldSpec[]; totals: string[]; maxReported: number };
const columns = fields.length;
const mapper = new RowMapper(fields, totals, maxReported);
const db = new Database(path);
db.pragma('journal_mode = OFF');
db.pragma('synchronous = OFF');
const cols = Array.from({ length: columns }, (_, i) => `c${i}`);
db.exec(`CREATE TABLE rows (${cols.join(', ')})`);

// One statement for many rows: fewer calls across the native boundary.
const PER_STMT = Math.max(1, Math.floor(999 / columns));
const one = `(${cols.map(() => '?').join(',')})`;
const many = db.prepare(`INSERT INTO rows VALUES ${Array(PER_STMT).fill(one).join(',')}`);
const single = db.prepare(`INSERT INTO rows VALUES ${one}`);
const pending: Value[] = [];

const insert = db.transaction((values: Value[]) => {
  const width = PER_STMT * columns;
  let i = 0;
  for (; i + width <= values.length; i += width) many.run(values.slice(i, i + width));
  for (; i < values.length; i += columns) single.run(values.slice(i, i + columns));
});

function mapBatch(cells: string[], lines: number[], width: number): void {
  for (let r = 0, off = 0; r < lines.length; r++, off += width) {
    const row = mapper.map(cells, off, width, lines[r]!);
    if (row) for (let i = 0; i < columns; i++) pending.push(row[i]!);
  }
  insert(pending);
  pending.length = 0;
}

type Message = { header: string[] } | { cells: string[]; lines: number[]; width: number } | { end: true };

parentPort!.on('message', (msg: Message) => {
  try {
    if ('header' in msg) mapper.header(msg.header);
    else if ('cells' in msg) {
      mapBatch(msg.cells, msg.lines, msg.width);
      parentPort!.postMessage({ ack: true });
    } else {
      db.close();
      parentPort!.postMessage({ done: mapper.stats });
    }
  } catch (err) {
    const e = err instanceof InboxdError ? { code: err.code, message: err.message, details: err.details } : { code: 'IO_ERROR', message: (err as Error).message, details: {} };
    parentPort!.postMessage({ error: e });
  }
});
