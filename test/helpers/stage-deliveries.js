// Stages deliveries one after another through the built pipeline (dist/), as the daemon does, in a
// process of its own, and prints as JSON what each left staged and which threads waited idle after it.
// Run by test/threads.test.ts: `node test/helpers/stage-deliveries.js DIR`. It does not close the
// thread pool at the end: idle threads must not keep a process alive.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { Stager, stagingSink } from '../../dist/pipeline/stage.js';
import { threadPool } from '../../dist/pipeline/threads.js';
import { sqliteStaging } from '../../dist/store/sqlite/scratch.js';
import { openDatabase } from '../../dist/store/sqlite/driver.js';

const dir = process.argv[2];
const writer = sqliteStaging.writer;
const pool = threadPool(writer);
const field = (ours, partner, type = 'string') => ({ ours, partner, type, required: true, pii: false, notes: '' });
const csv = (header) => ({ delimiter: ',', quote: '"', header, encoding: 'utf-8', maxRecordBytes: 1024 });

/** One delivery's text through stagingSink and a Stager: its rows read back from the scratch files, in file order. */
async function stage(name, text, fields, header) {
  const spec = { base: join(dir, name), writer, fields, totals: [], keys: [fields[0].ours], maxReported: 10, csv: csv(header) };
  const stager = new Stager(spec);
  try {
    const pieces = Array.from({ length: Math.ceil(text.length / 65536) }, (_, i) => Buffer.from(text.slice(i * 65536, (i + 1) * 65536)));
    await pipeline(Readable.from(pieces), stagingSink(stager, { ...spec, header, utf8Checked: false }));
    const { stats, rows } = await stager.finish();
    const staged = rows.runs.flatMap((r) => {
      const db = openDatabase(rows.files[r.file], { readonly: true });
      try {
        return db.prepare('SELECT * FROM rows WHERE rowid BETWEEN ? AND ? ORDER BY rowid').raw().all(r.from, r.to);
      } finally {
        db.close();
      }
    });
    return { rows: staged.length, first: staged[0], last: staged.at(-1), bad: stats.badRows, threads: rows.files.length, idle: pool.idleIds() };
  } catch (err) {
    await stager.settle();
    await stager.abort();
    return { error: err.message, idle: pool.idleIds() };
  }
}

const lines = (n, row) => Array.from({ length: n }, (_, i) => row(i)).join('\n') + '\n';
pool.warm();
const out = { warm: pool.idleIds() };
// Many chunks (INBOXD_TEST_CHUNK_BYTES is small), so both threads stage each delivery.
out.first = await stage('a', 'sku,qty,note\n' + lines(2000, (i) => `A-${i},${i},first`), [field('sku', 'sku'), field('qty', 'qty', 'integer'), field('note', 'note')], true);
// Another flow's shape: no header, two columns, another mapping; nothing of the first may be left in a thread.
out.second = await stage('b', lines(4000, (i) => `B-${i},${i * 2}`), [field('code', '1'), field('amount', '2', 'integer')], false);
// A row with a column too many: rejected, and its threads are not used again.
out.broken = await stage('c', 'sku,qty\n' + lines(4000, (i) => (i === 700 ? `C-${i},1,extra` : `C-${i},1`)), [field('sku', 'sku'), field('qty', 'qty', 'integer')], true);
out.after = await stage('d', 'sku\n' + lines(100, (i) => `D-${i}`), [field('sku', 'sku')], true);
// Larger than a pool keeps threads for (16 MB): its threads go.
out.large = await stage('e', 'sku,note\n' + lines(300_000, (i) => `E-${i},${'x'.repeat(50)}`), [field('sku', 'sku'), field('note', 'note')], true);
console.log(JSON.stringify(out));
