/**
 * Which database the tests run against: SQLite (the `sqlite` project, the default) or PostgreSQL (the
 * `postgres` project of vitest.config.ts, whose server helpers/postgres-setup.ts starts). The contract
 * suites (ingest, crash, operations) run on both; what they check of the database goes through
 * `queryBackend`, which reads either, synchronously: SQLite with better-sqlite3, PostgreSQL with psql.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openDatabase } from '../../src/store/sqlite/driver.js';
import { postgresBin } from './postgres.js';

export const backend: 'sqlite' | 'postgres' = process.env.INBOXD_TEST_BACKEND === 'postgres' ? 'postgres' : 'sqlite';
export const onPostgres = backend === 'postgres';

let made = 0;

/** A database of its own on the run's server, for one fixture: its URL. */
export function freshDatabase(): string {
  const server = process.env.INBOXD_TEST_PG_URL; // set by helpers/postgres-setup.ts, inherited by the test processes
  if (!server) throw new Error('no PostgreSQL server: run the postgres project (vitest --project postgres)');
  const name = `t${process.pid}_${++made}_${Date.now() % 1e6}`;
  psql(server, `CREATE DATABASE "${name}"`);
  return server.replace(/\/[^/]*$/, `/${name}`);
}

/** A statement's rows as JSON, through psql (synchronous, as the SQLite reads are). */
function psql(url: string, sql: string): string {
  const r = spawnSync(join(postgresBin()!, 'psql'), [url, '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8', maxBuffer: 1 << 30, env: { ...process.env, PGTZ: 'UTC' } });
  if (r.status !== 0) throw new Error(`psql: ${r.error?.message ?? r.stderr.trim()} (in: ${sql.slice(0, 500)})`);
  return r.stdout;
}

const literal = (v: unknown): string => (v === null || v === undefined ? 'NULL' : typeof v === 'number' || typeof v === 'bigint' ? String(v) : `'${(v as string).replaceAll("'", "''")}'`);

/** Values as the SQLite backend shows them: booleans as 1/0, times in UTC with a Z. */
function asSqlite(v: unknown): unknown {
  if (typeof v === 'boolean') return v ? 1 : 0;
  const t = typeof v === 'string' ? /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?\+00:00$/.exec(v) : null;
  if (t) return `${t[1]}${t[2] ? t[2].padEnd(4, '0') : ''}Z`; // PostgreSQL drops a fraction's trailing zeros
  return v;
}

/** Runs a statement that changes rows (a test setting the scene), on either backend. */
export function executeBackend(database: string, sql: string, params: unknown[]): void {
  if (database.startsWith('postgres')) {
    let i = 0;
    psql(database, `SET search_path = inboxd, public; ${sql.replace(/\?/g, () => literal(params[i++]))}`);
    return;
  }
  const db = openDatabase(database);
  try {
    db.prepare(sql).run(...params);
  } finally {
    db.close();
  }
}

/** Everything the database holds, as bytes: the SQLite file, or PostgreSQL's pg_dump of the database. */
export function databaseBytes(database: string): Buffer {
  if (!database.startsWith('postgres')) return readFileSync(database);
  const r = spawnSync(join(postgresBin()!, 'pg_dump'), ['--data-only', database], { maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`pg_dump: ${r.stderr.toString()}`);
  return r.stdout;
}

/**
 * Rows of a query (SQLite's `?` placeholders) against the fixture's database: [] when there is none yet.
 * On PostgreSQL inboxd's own tables are found by name (search_path: inboxd, then public).
 */
export function queryBackend(database: string, sql: string, params: unknown[]): Record<string, any>[] {
  if (database.startsWith('postgres')) {
    let i = 0;
    const text = sql.replace(/\?/g, () => literal(params[i++]));
    let out: string;
    try {
      out = psql(database, `SET search_path = inboxd, public; SELECT coalesce(json_agg(q), '[]') FROM (${text}) q`);
    } catch (err) {
      // Before inboxd's first start there are no tables, as there is no SQLite file: nothing to read.
      if (psql(database, "SELECT to_regclass('inboxd.meta') IS NULL").trim() === 't') return [];
      throw err;
    }
    const rows = JSON.parse(out.trim() || '[]') as Record<string, unknown>[];
    return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, asSqlite(v)])));
  }
  if (!existsSync(database)) return [];
  const db = openDatabase(database, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...params) as Record<string, any>[];
  } finally {
    db.close();
  }
}
