// Shows what the example run produced: the partners' answers and the rows in the database.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

const root = new URL('../var/partners/', import.meta.url).pathname;
for (const partner of readdirSync(root).filter((p) => !p.startsWith('.'))) {
  for (const dir of ['outbox', 'error', 'archive']) {
    const files = existsSync(join(root, partner, dir)) ? readdirSync(join(root, partner, dir)) : [];
    for (const f of files) {
      console.log(`\n== ${partner}/${dir}/${f}`);
      if (f.endsWith('.json') && dir !== 'archive') console.log(readFileSync(join(root, partner, dir, f), 'utf8').trimEnd());
    }
  }
}
const db = new Database(new URL('../var/inboxd.db', import.meta.url).pathname, { readonly: true });
for (const table of ['inventory', 'orders']) {
  console.log(`\n== table ${table}`);
  console.table(db.prepare(`SELECT * FROM ${table}`).all());
}
