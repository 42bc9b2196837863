/**
 * inboxd's own tables in PostgreSQL, in their own schema (`database.schema`, default `inboxd`), as
 * numbered migrations applied at open. The same tables as SQLite's (sqlite/migrations.ts), in
 * PostgreSQL's types: times as timestamptz, counts as bigint, the answer plan as text (it is written
 * and read whole; retention reads it as jsonb).
 *
 * Several instances may start at once on one database: the migrations run in one transaction under a
 * transaction-scoped advisory lock, so one applies them and the others then find them applied. The
 * version is a row of `schema_version`, written by the same transaction.
 */
import { InboxdError } from '../../errors.js';
import { ident, type Tx } from './db.js';

/** MIGRATIONS[n - 1] brings a schema from version n - 1 to n; `{S}` stands for the schema. */
const MIGRATIONS: readonly string[] = [
  `
CREATE TABLE {S}.deliveries (
  id text PRIMARY KEY, partner text NOT NULL, flow text, file text NOT NULL, seq bigint, file_time text,
  sha256 text, size bigint, outcome text NOT NULL, code text, reason text, records bigint, bad_rows bigint,
  totals text, received_at timestamptz NOT NULL, decided_at timestamptz NOT NULL, answered_at timestamptz, plan text NOT NULL,
  replay_of text, late integer NOT NULL DEFAULT 0
);
CREATE INDEX deliveries_by_flow ON {S}.deliveries (partner, flow, decided_at);
CREATE INDEX deliveries_by_seq ON {S}.deliveries (partner, flow, seq);
CREATE INDEX deliveries_by_received ON {S}.deliveries (received_at);
CREATE INDEX deliveries_unanswered ON {S}.deliveries (partner, decided_at) WHERE answered_at IS NULL;
CREATE INDEX deliveries_replays ON {S}.deliveries (replay_of) WHERE replay_of IS NOT NULL;
CREATE TABLE {S}.dedupe (
  partner text NOT NULL, flow text NOT NULL, seq bigint NOT NULL, sha256 text NOT NULL,
  delivery_id text NOT NULL, applied_at timestamptz NOT NULL, PRIMARY KEY (partner, flow, seq)
);
CREATE INDEX dedupe_by_delivery ON {S}.dedupe (delivery_id);
CREATE TABLE {S}.events (
  id bigserial PRIMARY KEY, delivery_id text NOT NULL, at timestamptz NOT NULL, step text NOT NULL, detail text
);
CREATE INDEX events_by_delivery ON {S}.events (delivery_id, id);
CREATE TABLE {S}.windows (
  partner text NOT NULL, flow text NOT NULL, opens_at text NOT NULL, closes_at text NOT NULL,
  status text NOT NULL, at_risk_at timestamptz, late_at timestamptz, resolved_at timestamptz, resolved_by text,
  PRIMARY KEY (partner, flow, opens_at)
);
CREATE TABLE {S}.resolutions (
  delivery_id text PRIMARY KEY, resolved_at timestamptz NOT NULL, by_delivery text, note text
);
CREATE TABLE {S}.meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO {S}.meta (key, value) VALUES ('created_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));
CREATE TABLE {S}.remote_files (
  partner text NOT NULL, name text NOT NULL, size bigint NOT NULL, mtime_ms bigint NOT NULL, state text NOT NULL,
  delivery_id text, pulled_at timestamptz NOT NULL, done_at timestamptz, PRIMARY KEY (partner, name)
);
CREATE TABLE {S}.remote_uploads (
  partner text NOT NULL, dir text NOT NULL, name text NOT NULL, state text NOT NULL, attempts integer NOT NULL DEFAULT 0,
  last_error text, queued_at timestamptz NOT NULL, done_at timestamptz, PRIMARY KEY (partner, dir, name)
);
CREATE TABLE {S}.remote_state (
  partner text PRIMARY KEY, circuit text NOT NULL, failures integer NOT NULL DEFAULT 0, last_error text, updated_at timestamptz NOT NULL
);
CREATE TABLE {S}.replay_requests (
  id bigserial PRIMARY KEY, delivery_id text NOT NULL, partner text NOT NULL, requested_at timestamptz NOT NULL,
  state text NOT NULL, result text, done_at timestamptz
);
CREATE TABLE {S}.attempts (
  partner text NOT NULL, file text NOT NULL, fingerprint text NOT NULL, attempts integer NOT NULL,
  first_at timestamptz NOT NULL, last_at timestamptz NOT NULL, next_at timestamptz NOT NULL, code text NOT NULL, error text,
  delivery_ids text NOT NULL, PRIMARY KEY (partner, file)
);`,
  // 2: several instances on one database (leases.ts): who runs, and which partner each works.
  `
CREATE TABLE {S}.instances (
  id text PRIMARY KEY, host text NOT NULL, boot text NOT NULL, pid integer NOT NULL, config text NOT NULL,
  started_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL
);
CREATE TABLE {S}.leases (
  partner text PRIMARY KEY, holder text, epoch bigint NOT NULL DEFAULT 0, since timestamptz, expires_at timestamptz
);`,
];

export const PG_SCHEMA_VERSION = MIGRATIONS.length;

/** The schema's version; refuses one a newer inboxd migrated (DB_TOO_NEW, exit 78). 0: nothing there yet. */
export async function pgSchemaVersion(c: Tx, schema: string, name: string): Promise<number> {
  const exists = await c.query('SELECT to_regclass($1) AS t', [`${ident(schema)}.schema_version`]);
  if (!exists.rows[0]?.t) return 0;
  const version = Number((await c.query(`SELECT version FROM ${ident(schema)}.schema_version`)).rows[0]?.version ?? 0);
  if (version > PG_SCHEMA_VERSION) {
    throw new InboxdError('DB_TOO_NEW', `database ${name} schema ${schema} has schema version ${version}, and this inboxd knows versions up to ${PG_SCHEMA_VERSION}: a newer inboxd upgraded it. Run that version again, or restore the database's backup from before the upgrade`, { version, known: PG_SCHEMA_VERSION });
  }
  return version;
}

/** Applies the migrations the schema lacks, in the caller's transaction; returns the versions applied. */
export async function pgMigrate(c: Tx, schema: string, name: string): Promise<number[]> {
  await c.query("SELECT pg_advisory_xact_lock(hashtextextended('inboxd migrations ' || $1, 0))", [schema]);
  const s = ident(schema);
  await c.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
  const applied: number[] = [];
  for (let v = (await pgSchemaVersion(c, schema, name)) + 1; v <= PG_SCHEMA_VERSION; v++) {
    await c.query(MIGRATIONS[v - 1]!.replaceAll('{S}', s));
    applied.push(v);
  }
  if (applied.length > 0) {
    await c.query(`CREATE TABLE IF NOT EXISTS ${s}.schema_version (version integer NOT NULL)`);
    await c.query(`DELETE FROM ${s}.schema_version`);
    await c.query(`INSERT INTO ${s}.schema_version (version) VALUES ($1)`, [PG_SCHEMA_VERSION]);
  }
  return applied;
}
