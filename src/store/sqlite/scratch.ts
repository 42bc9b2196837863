/**
 * Staging for SQLite: each staging thread (pipeline/stage-worker.ts) loads this module and writes its
 * rows into a scratch SQLite file of its own, table `rows`, columns c0..cN, rows numbered by rowid; the
 * commit ATTACHes the files (store.ts). No durability: a crash discards them and the delivery is redone.
 */
import { openDatabase } from './driver.js';
import type { OpenScratch } from '../../pipeline/stage-worker.js';
import type { Value } from '../../pipeline/map.js';
import type { StagedRows } from '../../pipeline/stage.js';
import type { Staging } from '../types.js';

export const openScratch: OpenScratch = (path, fields) => {
  const columns = fields.length;
  const cols = Array.from({ length: columns }, (_, i) => `c${i}`);
  const db = openDatabase(path);
  db.pragma('journal_mode = MEMORY'); // OFF is refused in the defensive mode better-sqlite3 opens with
  db.pragma('synchronous = OFF');
  // Rows are only appended, each page written out once full: the driver's 16 MB page cache per thread would
  // only hold pages already written (a 2 MB one is as fast, npm run bench).
  db.pragma('cache_size = -2000');
  db.exec(`CREATE TABLE rows (${cols.join(', ')})`); // a full disk fails here
  // One statement for many rows: fewer calls across the native boundary.
  const perStmt = Math.max(1, Math.floor(999 / columns));
  const one = `(${cols.map(() => '?').join(',')})`;
  const many = db.prepare(`INSERT INTO rows VALUES ${Array(perStmt).fill(one).join(',')}`);
  const single = db.prepare(`INSERT INTO rows VALUES ${one}`);
  const insert = db.transaction((values: Value[]) => {
    const width = perStmt * columns;
    let i = 0;
    for (; i + width <= values.length; i += width) many.run(values.slice(i, i + width));
    for (; i < values.length; i += columns) single.run(values.slice(i, i + columns));
  });
  return { insert: (values) => insert(values), close: () => void db.close() };
};

/** The first `n` rows of the first run, read back (inboxd check's preview). */
async function sample(staged: StagedRows, n: number): Promise<unknown[][]> {
  const run = staged.runs[0];
  if (n <= 0 || !run) return [];
  const db = openDatabase(staged.files[run.file]!, { readonly: true });
  try {
    // Integers beyond 2^53 are read exactly, not as the nearest double.
    return db.prepare(`SELECT * FROM rows WHERE rowid BETWEEN ? AND ? ORDER BY rowid LIMIT ${Math.floor(n)}`).raw().safeIntegers().all(run.from, run.to) as unknown[][];
  } finally {
    db.close();
  }
}

export const sqliteStaging: Staging = {
  writer: { module: import.meta.url, scratchName: (base, n) => `${base}-${n}.db` },
  sample,
  discard: async () => {},
};
