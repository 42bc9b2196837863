/**
 * The connection to PostgreSQL: a node-postgres pool, its settings read from the configuration (the
 * password from its file or environment variable, at each new connection, so a rotated one is picked
 * up), values read back the way the SQLite backend returns them (times as ISO-8601 strings, bigint as a
 * number while it is exact), and every error named by its SQLSTATE, never by its words.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { PostgresConfig } from '../../config/database.js';
import { InboxdError } from '../../errors.js';

/** node-postgres client settings without the pool: the staging threads open their own connections with them. */
export interface ConnectOptions {
  connectionString: string;
  password?: string;
  ssl?: boolean | { ca: string; rejectUnauthorized: boolean };
  statementTimeoutMs: number;
  /** who we are in pg_stat_activity */
  applicationName: string;
  /** every transaction read-only: for commands that promise to change nothing */
  readOnly?: boolean;
}

export function connectOptions(c: PostgresConfig): ConnectOptions {
  return {
    connectionString: c.url,
    password: readPassword(c),
    ssl: c.ssl === false ? undefined : c.ssl === true ? true : { ca: readFileSync(c.ssl.caFile, 'utf8'), rejectUnauthorized: c.ssl.rejectUnauthorized },
    statementTimeoutMs: c.statementTimeoutMs,
    applicationName: 'inboxd',
  };
}

function readPassword(c: PostgresConfig): string | undefined {
  if (c.passwordEnv) {
    const v = process.env[c.passwordEnv];
    if (v === undefined) throw new InboxdError('CONFIG_INVALID', `database: the environment variable ${c.passwordEnv} (password_env) is not set`);
    return v;
  }
  if (!c.passwordFile) return undefined;
  try {
    return readFileSync(c.passwordFile, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new InboxdError('CONFIG_INVALID', `database: cannot read password_file ${c.passwordFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

const TIMESTAMPTZ = 1184;
const INT8 = 20;
const DATE = 1082;
const NUMERIC = 1700;

/** Values as the rest of inboxd knows them from SQLite: ISO-8601 times, dates as text, exact integers. */
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === TIMESTAMPTZ) return (v: string) => new Date(v).toISOString();
    if (oid === DATE) return (v: string) => v;
    if (oid === INT8 || oid === NUMERIC) return (v: string) => (Number.isSafeInteger(Number(v)) ? Number(v) : /^-?\d+$/.test(v) ? BigInt(v) : Number(v));
    return pg.types.getTypeParser(oid, format) as (v: string) => unknown;
  },
};

export function clientConfig(o: ConnectOptions): pg.ClientConfig {
  return {
    connectionString: o.connectionString,
    password: o.password,
    ssl: o.ssl,
    application_name: o.applicationName,
    statement_timeout: o.statementTimeoutMs,
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
    options: o.readOnly ? '-c default_transaction_read_only=on' : undefined,
    types,
  };
}

/** SQLSTATEs that name a problem an operator fixes in the configuration or the server's grants: exit 78 at start. */
const CONFIG_STATES: Record<string, string> = {
  '28P01': 'the password was refused',
  '28000': 'the server refused the connection (pg_hba.conf, or the role may not log in)',
  '3D000': 'the database does not exist',
  '3F000': 'the schema does not exist',
};

/**
 * SQLSTATEs of a server that is there and will be right again soon (serialization failures and
 * deadlocks, timeouts, lock waits, a server starting or shutting down, too many connections): retried.
 * Class 08 (connection exception) and errors without a SQLSTATE (refused, reset, terminated) are a
 * server out of reach: DB_UNAVAILABLE.
 */
const BUSY_STATES = new Set(['40001', '40P01', '55P03', '57014', '53300', '25P02']);
const GONE_STATES = new Set(['57P01', '57P02', '57P03', '53100', '53200', '58000', '58030', 'XX000']);

/** A node-postgres error as one of ours: the database named, the SQLSTATE kept as the cause. */
export function pgError(where: string, err: unknown): unknown {
  if (err instanceof InboxdError) return err;
  const e = err as { code?: unknown; message?: string };
  const state = err instanceof pg.DatabaseError ? err.code : undefined;
  const message = `database ${where}: ${e?.message ?? String(err)}`;
  if (state && CONFIG_STATES[state]) return new InboxdError('CONFIG_INVALID', `${message} (${CONFIG_STATES[state]})`, { cause: state }, { cause: err });
  if (state && BUSY_STATES.has(state)) return new InboxdError('DB_BUSY', message, { cause: state }, { cause: err });
  if (state && (state.startsWith('08') || GONE_STATES.has(state))) return new InboxdError('DB_UNAVAILABLE', message, { cause: state }, { cause: err });
  if (state) return err; // a statement of ours is wrong: a bug (UNEXPECTED_ERROR), with its SQLSTATE
  return new InboxdError('DB_UNAVAILABLE', message, { cause: typeof e?.code === 'string' ? e.code : 'connection' }, { cause: err });
}

export type Row = Record<string, unknown>;

/** A transaction's client as its statements see it: each error named (pgError), as the pool's are. */
export interface Tx {
  query<T extends pg.QueryResultRow = Row>(sql: string, params?: unknown[]): Promise<pg.QueryResult<T>>;
}

/** The pool with its errors named; itself a Tx whose statements each run on their own. */
export class PgDb implements Tx {
  readonly pool: pg.Pool;
  private closed = false;

  constructor(readonly name: string, readonly schema: string, options: ConnectOptions, poolSize: number) {
    this.pool = new pg.Pool({ ...clientConfig(options), max: poolSize, idleTimeoutMillis: 30_000 });
    // An idle client losing its connection (a server restart) is dropped by the pool; the next query connects afresh.
    this.pool.on('error', () => {});
  }

  query<T extends pg.QueryResultRow = Row>(sql: string, params?: unknown[]): Promise<pg.QueryResult<T>> {
    return this.named(() => this.pool.query<T>(sql, params));
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  async all<T = Row>(sql: string, params: unknown[] = []): Promise<T[]> {
    return this.named(async () => (await this.pool.query(sql, params)).rows as T[]);
  }

  async one<T = Row>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0];
  }

  async run(sql: string, params: unknown[] = []): Promise<number> {
    return this.named(async () => (await this.pool.query(sql, params)).rowCount ?? 0);
  }

  /**
   * One transaction on one client; rolled back when `fn` throws, which throws on as it is (the
   * statements' own errors are named already). A client whose connection broke is not reused.
   */
  async tx<T>(fn: (c: Tx) => Promise<T>): Promise<T> {
    const client = await this.named(() => this.pool.connect());
    const tx: Tx = { query: (sql, params) => this.named(() => client.query(sql, params)) };
    let broken: Error | undefined;
    // A connection lost between two statements is emitted, not thrown: unheard, it would end the
    // process. Heard, the next statement fails (and says so), and the client is not reused.
    const lost = (err: Error) => (broken = err);
    client.on('error', lost);
    try {
      await tx.query('BEGIN');
      const result = await fn(tx);
      await tx.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch((e: Error) => (broken = e));
      throw err;
    } finally {
      client.off('error', lost);
      client.release(broken);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }

  async named<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw pgError(this.name, err);
    }
  }
}

/** A quoted identifier; `a.b` is a schema and a table. */
export function ident(name: string): string {
  return name.split('.').map((p) => pg.escapeIdentifier(p)).join('.');
}
