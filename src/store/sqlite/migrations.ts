/**
 * The schema of inboxd's own tables, as numbered migrations applied at open (flows' target tables are
 * made from their mappings instead: Store.ensureTable).
 *
 * The version is SQLite's `PRAGMA user_version`, not a table: an integer in the database header,
 * written by the same transaction as the migrations it counts (a crash keeps both or neither),
 * readable before any table exists, and 0 in every database made before migrations existed, which is
 * exactly what such a database is. A `schema_migrations` table would add when each was applied, which
 * nothing reads.
 *
 * Rules: a released migration is never edited, the next change is a new one appended. Each is written so
 * that it also accepts what an older inboxd made without recording it (IF NOT EXISTS): databases of
 * version 0 come from the last release (migration 1) or from a build between it and migrations (with
 * migration 2's table already there).
 */
import type Database from 'better-sqlite3';
import { InboxdError } from '../../errors.js';

type Migration = string | ((db: Database.Database) => void);

/** MIGRATIONS[n - 1] brings a database from version n - 1 to n. */
const MIGRATIONS: readonly Migration[] = [
  // 1: the schema of the last release without migrations (5c32aa5): deliveries, dedupe, audit trail,
  // windows, resolutions, meta, the remote ledger, the replay queue.
  `
CREATE TABLE IF NOT EXISTS deliveries (
  id TEXT PRIMARY KEY, partner TEXT NOT NULL, flow TEXT, file TEXT NOT NULL, seq INTEGER, file_time TEXT,
  sha256 TEXT, size INTEGER, outcome TEXT NOT NULL, code TEXT, reason TEXT, records INTEGER, bad_rows INTEGER,
  totals TEXT, received_at TEXT NOT NULL, decided_at TEXT NOT NULL, answered_at TEXT, plan TEXT NOT NULL, replay_of TEXT,
  late INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_by_flow ON deliveries (partner, flow, decided_at);
CREATE INDEX IF NOT EXISTS deliveries_unanswered ON deliveries (answered_at) WHERE answered_at IS NULL;
CREATE TABLE IF NOT EXISTS dedupe (
  partner TEXT NOT NULL, flow TEXT NOT NULL, seq INTEGER NOT NULL, sha256 TEXT NOT NULL,
  delivery_id TEXT NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (partner, flow, seq)
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY, delivery_id TEXT NOT NULL, at TEXT NOT NULL, step TEXT NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS events_by_delivery ON events (delivery_id, id);
CREATE TABLE IF NOT EXISTS windows (
  partner TEXT NOT NULL, flow TEXT NOT NULL, opens_at TEXT NOT NULL, closes_at TEXT NOT NULL,
  status TEXT NOT NULL, at_risk_at TEXT, late_at TEXT, resolved_at TEXT, resolved_by TEXT,
  PRIMARY KEY (partner, flow, opens_at)
);
-- A rejected delivery dealt with: replayed successfully (by_delivery), or closed by an operator (note).
CREATE TABLE IF NOT EXISTS resolutions (
  delivery_id TEXT PRIMARY KEY, resolved_at TEXT NOT NULL, by_delivery TEXT, note TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
CREATE TABLE IF NOT EXISTS remote_files (
  partner TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL, mtime_ms INTEGER NOT NULL, state TEXT NOT NULL,
  delivery_id TEXT, pulled_at TEXT NOT NULL, done_at TEXT, PRIMARY KEY (partner, name)
);
CREATE TABLE IF NOT EXISTS remote_uploads (
  partner TEXT NOT NULL, dir TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT, queued_at TEXT NOT NULL, done_at TEXT, PRIMARY KEY (partner, dir, name)
);
CREATE TABLE IF NOT EXISTS remote_state (
  partner TEXT PRIMARY KEY, circuit TEXT NOT NULL, failures INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replay_requests (
  id INTEGER PRIMARY KEY, delivery_id TEXT NOT NULL, partner TEXT NOT NULL, requested_at TEXT NOT NULL,
  state TEXT NOT NULL, result TEXT, done_at TEXT
);`,
  // 2: attempts at deliveries that failed for a reason of ours (attempts.ts).
  `
CREATE TABLE IF NOT EXISTS attempts (
  partner TEXT NOT NULL, file TEXT NOT NULL, fingerprint TEXT NOT NULL, attempts INTEGER NOT NULL,
  first_at TEXT NOT NULL, last_at TEXT NOT NULL, next_at TEXT NOT NULL, code TEXT NOT NULL, error TEXT,
  delivery_ids TEXT NOT NULL, PRIMARY KEY (partner, file)
);`,
];

/** The schema version this inboxd makes and reads. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * The database's schema version; refuses one a newer inboxd migrated (DB_TOO_NEW, exit 78): its
 * tables may hold what this version would misread or lose. Changes nothing.
 */
export function schemaVersion(db: Database.Database, path: string): number {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new InboxdError('DB_TOO_NEW', `database ${path} has schema version ${version}, and this inboxd knows versions up to ${SCHEMA_VERSION}: a newer inboxd upgraded it. Run that version again, or restore the database's backup from before the upgrade`, { version, known: SCHEMA_VERSION });
  }
  return version;
}

/**
 * Applies the migrations the database lacks, all in one IMMEDIATE transaction with the new version: a
 * failure or a crash leaves it as it was. Returns the versions applied (none when it is up to date).
 * The version is written even then: that write is what finds, at start, a database that cannot be
 * written (DB_READONLY, exit 78), before any delivery is taken.
 */
export function migrate(db: Database.Database, path: string): number[] {
  return db.transaction(() => {
    // Read under the write lock: another process may have migrated it a moment ago.
    const applied: number[] = [];
    for (let v = schemaVersion(db, path) + 1; v <= SCHEMA_VERSION; v++) {
      const m = MIGRATIONS[v - 1]!;
      if (typeof m === 'string') db.exec(m);
      else m(db);
      applied.push(v);
    }
    // Nothing to apply, nothing written: a command that changes nothing (prune --dry-run) leaves the file as it was.
    if (applied.length > 0) db.pragma(`user_version = ${SCHEMA_VERSION}`);
    return applied;
  }).immediate();
}
