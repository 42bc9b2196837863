/**
 * The `database` key: a path (the embedded SQLite file) or PostgreSQL, as a URL or as an object with
 * the URL and its settings. Secrets are never inline: a password in the URL is refused, it comes from
 * `password_file` or `password_env` (or libpq's ~/.pgpass and PGPASSWORD, which node-postgres reads).
 */
import { resolve } from 'node:path';
import { z } from 'zod';
import { parseDuration } from './units.js';

const IDENT = /^[a-z_][a-z0-9_]*$/;
const PG_URL = /^postgres(ql)?:\/\//;

const postgresSchema = z.strictObject({
  url: z.string().regex(PG_URL, 'expected a postgres:// URL'),
  /** inboxd's own tables live in this schema; the flows' tables where their `table` says */
  schema: z.string().regex(IDENT, 'expected a schema name (lower-case letters, digits, _)').default('inboxd'),
  pool_size: z.number().int().min(2).max(100).default(10),
  password_file: z.string().optional(),
  password_env: z.string().optional(),
  /** true: TLS, the server's certificate checked against the system's CAs; or a CA file for a private CA */
  ssl: z.union([z.boolean(), z.strictObject({ ca_file: z.string(), reject_unauthorized: z.boolean().default(true) })]).default(false),
  /** several instances: a partner's lease lapses this long after its holder's last heartbeat */
  lease_ttl: z.union([z.number(), z.string()]).refine((v) => (parseDuration(v) ?? 0) >= 1000, 'expected a duration of at least 1s, such as "15s"').default('15s'),
  statement_timeout: z.union([z.number(), z.string()]).refine((v) => parseDuration(v) !== undefined, 'expected a duration such as "60s"').default('15m'),
}).refine((p) => !(p.password_file && p.password_env), 'give password_file or password_env, not both');

export const databaseSchema = z.union([z.string().min(1), postgresSchema]);

export interface PostgresConfig {
  /** the URL as configured, with no password in it */
  url: string;
  schema: string;
  poolSize: number;
  passwordFile?: string;
  passwordEnv?: string;
  ssl: false | true | { caFile: string; rejectUnauthorized: boolean };
  statementTimeoutMs: number;
  leaseTtlMs: number;
}

/** What `database` resolves to: the SQLite file's path, or PostgreSQL's settings. */
export type DatabaseConfig = { kind: 'sqlite'; path: string } | ({ kind: 'postgres' } & PostgresConfig);

/** A problem with the key, in words (config.ts names the file and key path). */
export class DatabaseKeyError extends Error {}

export function resolveDatabase(base: string, raw: z.infer<typeof databaseSchema>): DatabaseConfig {
  if (typeof raw === 'string' && !PG_URL.test(raw)) return { kind: 'sqlite', path: resolve(base, raw) };
  const p = typeof raw === 'string' ? postgresSchema.parse({ url: raw }) : raw;
  let url: URL;
  try {
    url = new URL(p.url);
  } catch {
    throw new DatabaseKeyError(`${p.url} is not a valid URL`);
  }
  if (url.password) throw new DatabaseKeyError('the URL holds a password: secrets are never inline; give password_file or password_env (or use ~/.pgpass)');
  if (!url.pathname.replace(/^\//, '')) throw new DatabaseKeyError(`${p.url} names no database (postgres://user@host:5432/dbname)`);
  return {
    kind: 'postgres',
    url: p.url,
    schema: p.schema,
    poolSize: p.pool_size,
    passwordFile: p.password_file && resolve(base, p.password_file),
    passwordEnv: p.password_env,
    ssl: typeof p.ssl === 'boolean' ? p.ssl : { caFile: resolve(base, p.ssl.ca_file), rejectUnauthorized: p.ssl.reject_unauthorized },
    statementTimeoutMs: parseDuration(p.statement_timeout)!,
    leaseTtlMs: parseDuration(p.lease_ttl)!,
  };
}

/** How the database is named in messages and status: the path, or the URL (never with a password). */
export function databaseName(db: DatabaseConfig): string {
  return db.kind === 'sqlite' ? db.path : db.url;
}
