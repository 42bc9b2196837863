/**
 * Staging for PostgreSQL: each staging thread (pipeline/stage-worker.ts) loads this module, opens a
 * connection of its own and COPYs its rows, as they are mapped, into an UNLOGGED table of its own in
 * inboxd's schema: `chunk` (the chunk's index in the file) and `row` (its number in the thread) give
 * file order, c0..cN the values in the target's types, so the server converts them while the file
 * streams, on as many backends as there are threads. The commit then upserts from these tables in one
 * statement (store.ts). Unlogged: no WAL; a crash of the server empties them and the delivery is redone.
 *
 * The tables are named for the delivery (its id is its working directory's name), so its tables are
 * dropped when it is done, and those of a crashed one when recovery finds its working directory.
 */
import { basename, dirname } from 'node:path';
import pg from 'pg';
import { clientConfig, type ConnectOptions, ident, type PgDb, pgError } from './db.js';
import type { FieldSpec } from '../../config/mapping.js';
import type { OpenScratch } from '../../pipeline/stage-worker.js';
import type { Value } from '../../pipeline/map.js';
import type { StagedRows } from '../../pipeline/stage.js';
import type { Staging } from '../types.js';
import { from as copyFrom } from 'pg-copy-streams';

export const PG_TYPES: Record<FieldSpec['type'], string> = {
  string: 'text', integer: 'bigint', amount: 'bigint', datetime: 'timestamptz', date: 'date', boolean: 'boolean', currency: 'text', enum: 'text',
};

export interface PgStagingOptions {
  connect: ConnectOptions;
  schema: string;
}

/** COPY's text format: backslash, tab, newline and carriage return escaped; \N is NULL. */
function copyText(v: Value): string {
  if (v === null) return '\\N';
  if (typeof v !== 'string') return String(v);
  return /[\\\t\n\r]/.test(v) ? v.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')) : v;
}

export const openScratch: OpenScratch = async (name, fields, options) => {
  const { connect, schema } = options as PgStagingOptions;
  const table = `${ident(schema)}.${ident(name)}`;
  const client = new pg.Client(clientConfig({ ...connect, applicationName: 'inboxd staging' }));
  const where = connect.connectionString;
  try {
    await client.connect();
    client.on('error', () => {}); // a lost connection fails the next COPY, which says so
    const cols = fields.map((f, i) => `c${i} ${PG_TYPES[f.type]}`);
    await client.query(`CREATE UNLOGGED TABLE ${table} (chunk integer NOT NULL, "row" integer NOT NULL, ${cols.join(', ')})`);
  } catch (err) {
    await client.end().catch(() => {});
    throw pgError(where, err);
  }
  const width = fields.length;
  // One COPY for the thread's whole life: each chunk's rows are written to it as they are mapped, and
  // closing it commits them. A COPY per chunk cost a round trip and a statement each.
  const stream = client.query(copyFrom(`COPY ${table} FROM STDIN`));
  let failed: Error | undefined;
  const finished = new Promise<void>((resolve, reject) => stream.on('finish', resolve).on('error', (err) => reject((failed = pgError(where, err) as Error))));
  finished.catch(() => {}); // heard at the next insert or at close
  const heard = () => {
    if (failed) throw failed;
  };
  let rows = 0;
  return {
    async insert(values, chunk) {
      heard();
      let text = '';
      for (let i = 0; i < values.length; i += width) {
        text += `${chunk}\t${++rows}`;
        for (let j = 0; j < width; j++) text += `\t${copyText(values[i + j]!)}`;
        text += '\n';
      }
      if (text && !stream.write(text)) await new Promise<void>((resolve) => { stream.once('drain', resolve); stream.once('error', () => resolve()); });
      heard();
    },
    async close() {
      stream.end();
      try {
        await finished;
      } finally {
        await client.end().catch(() => {});
      }
    },
  };
};

/** Thread n's table of a delivery staging under `<work>/<partner>/<delivery id>/…`: stg_<delivery id>_<n>. */
function scratchName(base: string, n: number): string {
  return `${prefixOf(base)}${n}`;
}

const prefixOf = (base: string) => `stg_${basename(dirname(base)).toLowerCase().replace(/[^a-z0-9]/g, '_')}_`;

export class PgStaging implements Staging {
  readonly writer: Staging['writer'];

  constructor(private readonly db: PgDb, connect: ConnectOptions) {
    // The COPY text is built in the thread, on top of the parse's strings: with the default 4 MB young
    // generation its collections took ~40% of a thread's time (1M rows: COPY ~6-7 s -> ~4 s at 16 MB).
    this.writer = { module: import.meta.url, options: { connect, schema: db.schema } satisfies PgStagingOptions, scratchName, youngGenerationMb: 16 };
  }

  /** The first `n` rows, in file order, as stored. */
  async sample(staged: StagedRows, n: number): Promise<unknown[][]> {
    if (n <= 0 || staged.files.length === 0) return [];
    const union = staged.files.map((f) => `SELECT * FROM ${ident(this.db.schema)}.${ident(f)}`).join(' UNION ALL ');
    const rows = await this.db.all(`SELECT * FROM (${union}) s ORDER BY chunk, "row" LIMIT ${Math.floor(n)}`);
    return rows.map((r) => Object.values(r).slice(2));
  }

  async discard(base: string): Promise<void> {
    const like = prefixOf(base).replaceAll('_', '\\_') + '%';
    const found = await this.db.all<{ relname: string }>("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname LIKE $2", [this.db.schema, like]);
    for (const t of found) await this.db.run(`DROP TABLE IF EXISTS ${ident(this.db.schema)}.${ident(t.relname)}`);
  }
}
