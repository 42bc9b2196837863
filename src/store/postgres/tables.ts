/**
 * The flows' target tables in PostgreSQL: made from the mapping (integers and minor units as bigint,
 * datetimes as timestamptz, dates as date, booleans as boolean), new mapping columns added, and an
 * existing table whose key or column types disagree with the mapping refused (CONFIG_INVALID, exit 78,
 * naming the column). A table may be schema-qualified (`sales.inventory`); unqualified, it is in
 * `public`, whatever the role's search_path says (a role named like inboxd's schema would otherwise
 * put it there).
 *
 * And the upsert that applies a delivery's staged rows in its commit transaction (upsertSql).
 */
import { InboxdError } from '../../errors.js';
import { sameColumns } from '../../config/mapping.js';
import type { SeqKey, TargetTable } from '../types.js';
import { ident, type Tx } from './db.js';
import { PG_TYPES } from './staging.js';

/** The target table, quoted and always schema-qualified. */
export const targetName = (table: string) => ident(table.includes('.') ? table : `public.${table}`);

/** format_type()'s words for the types we make. */
const FORMATTED: Record<string, string> = { text: 'text', bigint: 'bigint', timestamptz: 'timestamp with time zone', date: 'date', boolean: 'boolean' };

interface Column {
  name: string;
  type: string;
}

async function describe(c: Tx, table: string): Promise<{ columns: Column[]; key: string[] } | undefined> {
  const oid = (await c.query('SELECT to_regclass($1)::oid AS oid', [targetName(table)])).rows[0]?.oid as number | null;
  if (!oid) return undefined;
  const columns = (await c.query<Column>('SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum', [oid])).rows;
  const key = (await c.query<{ name: string }>('SELECT a.attname AS name FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.n', [oid])).rows.map((r) => r.name);
  return { columns, key };
}

/** Throws CONFIG_INVALID naming what disagrees; returns the mapping's columns the table lacks. */
function disagreement(t: TargetTable, found: { columns: Column[]; key: string[] }, where: string): string[] {
  if (!sameColumns(found.key, t.key)) {
    throw new InboxdError('CONFIG_INVALID', `table "${t.table}" exists with the key (${found.key.join(', ')}), but the configuration says (${t.key.join(', ')}); change the key back, or migrate the table (database ${where})`);
  }
  const have = new Map(found.columns.map((c) => [c.name, c.type]));
  const missing: string[] = [];
  for (const f of t.fields) {
    const type = have.get(f.ours);
    const want = FORMATTED[PG_TYPES[f.type]]!;
    if (type === undefined) missing.push(f.ours);
    else if (type !== want) throw new InboxdError('CONFIG_INVALID', `table "${t.table}" column "${f.ours}" is ${type}, but the mapping makes it ${f.type} (${want}); change the mapping, or alter the column (database ${where})`);
  }
  return missing;
}

/** Creates the table, or adds the columns a newer mapping brought; serialized across instances by an advisory lock. */
export async function ensureTable(c: Tx, t: TargetTable, where: string): Promise<void> {
  await c.query("SELECT pg_advisory_xact_lock(hashtextextended('inboxd table ' || $1, 0))", [t.table]);
  const cols = t.fields.map((f) => `${ident(f.ours)} ${PG_TYPES[f.type]}${t.key.includes(f.ours) ? ' NOT NULL' : ''}`);
  await c.query(`CREATE TABLE IF NOT EXISTS ${targetName(t.table)} (${cols.join(', ')}, _delivery_id text NOT NULL, _updated_at timestamptz NOT NULL, PRIMARY KEY (${t.key.map((k) => ident(k)).join(', ')}))`);
  const found = (await describe(c, t.table))!;
  for (const name of disagreement(t, found, where)) {
    const f = t.fields.find((x) => x.ours === name)!;
    await c.query(`ALTER TABLE ${targetName(t.table)} ADD COLUMN ${ident(name)} ${PG_TYPES[f.type]}`);
  }
}

export async function checkTable(c: Tx, t: TargetTable, where: string): Promise<void> {
  const found = await describe(c, t.table);
  if (found) disagreement(t, found, where);
}

/**
 * One INSERT … SELECT … ON CONFLICT from the staging tables, in key order: the primary key's index is
 * then filled page after page instead of at random, which costs less than the sort (1M rows: ~20%
 * faster). The last row of a key in file order wins (`distinct`: DISTINCT ON, ordered by chunk and row
 * after the key: an upsert may touch a row once per statement); a row whose
 * values did not change is not rewritten (IS DISTINCT FROM), so a resent snapshot writes little; and a
 * replay (keepNewer) leaves rows a later sequence of the flow wrote.
 * Parameters: $1 delivery id, $2 decided at; with keepNewer $3 partner, $4 flow, $5 seq.
 */
export function upsertSql(t: TargetTable, schema: string, staging: readonly string[], keepNewer?: SeqKey, distinct = true): string {
  const cols = t.fields.map((f) => ident(f.ours));
  const keys = t.key.map((k) => ident(k));
  const vals = t.fields.map((f, i) => `c${i} AS ${ident(f.ours)}`);
  const union = staging.map((s) => `SELECT * FROM ${ident(schema)}.${ident(s)}`).join(' UNION ALL ');
  const target = targetName(t.table);
  const values = t.fields.filter((f) => !t.key.includes(f.ours)).map((f) => ident(f.ours));
  const set = [...values, '_delivery_id', '_updated_at'].map((c) => `${c} = excluded.${c}`);
  const changed = values.length ? [`(${values.map((v) => `${target}.${v}`).join(', ')}) IS DISTINCT FROM (${values.map((v) => `excluded.${v}`).join(', ')})`] : ['false'];
  const keep = keepNewer ? [`NOT EXISTS (SELECT 1 FROM ${ident(schema)}.deliveries w WHERE w.id = ${target}._delivery_id AND w.partner = $3 AND w.flow = $4 AND w.seq > $5)`] : [];
  return `INSERT INTO ${target} (${cols.join(', ')}, _delivery_id, _updated_at)
    SELECT ${distinct ? `DISTINCT ON (${keys.join(', ')}) ` : ''}${cols.join(', ')}, $1, $2::timestamptz FROM (SELECT chunk, "row", ${vals.join(', ')} FROM (${union}) u) s
    ORDER BY ${keys.join(', ')}${distinct ? ', chunk DESC, "row" DESC' : ''}
    ON CONFLICT (${keys.join(', ')}) DO UPDATE SET ${set.join(', ')} WHERE ${[...changed, ...keep].join(' AND ')}`;
}

/** Rows of the staging tables a replay leaves as they are: a later sequence wrote their key. */
export function keptSql(t: TargetTable, schema: string, staging: readonly string[]): string {
  const keys = t.key.map((k) => `s.c${t.fields.findIndex((f) => f.ours === k)} = t.${ident(k)}`);
  const union = staging.map((s) => `SELECT * FROM ${ident(schema)}.${ident(s)}`).join(' UNION ALL ');
  return `SELECT count(DISTINCT (${t.key.map((k) => `t.${ident(k)}`).join(', ')})) AS n FROM (${union}) s JOIN ${targetName(t.table)} t ON ${keys.join(' AND ')}
    JOIN ${ident(schema)}.deliveries w ON w.id = t._delivery_id WHERE w.partner = $1 AND w.flow = $2 AND w.seq > $3`;
}
