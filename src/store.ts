/**
 * The database: target tables, the dedupe table, delivery outcomes and their audit trail.
 *
 * Exactly-once design. better-sqlite3 is synchronous: its transactions cannot span an `await`, and one
 * connection shared by deliveries in flight would mix their statements into one transaction. So rows
 * are never written to this database while a file streams. Each delivery streams into its own scratch
 * SQLite file (a staging writer thread, see stage.ts); once every check has passed, `commit` ATTACHes
 * that file and, in ONE short synchronous IMMEDIATE transaction, re-checks the dedupe table, upserts
 * the staged rows, and records the dedupe row and the outcome. Nothing can interleave with a
 * synchronous call, so deliveries in flight never share a transaction, and a rejected file never
 * touches a target table. `synchronous = FULL` makes each commit durable before the partner is told.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { FieldSpec } from './mapping.js';

export type Outcome = 'accepted' | 'rejected' | 'duplicate';

export interface DeliveryRecord {
  id: string;
  partner: string;
  flow: string | null;
  file: string;
  seq: number | null;
  fileTime: string | null;
  sha256: string | null;
  size: number | null;
  outcome: Outcome;
  code: string | null;
  reason: string | null;
  records: number | null;
  badRows: number | null;
  /** JSON: control totals expected and found */
  totals: string | null;
  receivedAt: string;
  decidedAt: string;
  answeredAt: string | null;
  /** JSON: what answering the partner consists of (answer.ts); replayed after a crash */
  plan: string;
  replayOf: string | null;
}

export interface Applied {
  sha256: string;
  deliveryId: string;
}

export interface SeqKey {
  partner: string;
  flow: string;
  seq: number;
}

export interface Staged {
  path: string;
  target: TargetTable;
}

export interface TargetTable {
  table: string;
  fields: readonly FieldSpec[];
  key: readonly string[];
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS deliveries (
  id TEXT PRIMARY KEY, partner TEXT NOT NULL, flow TEXT, file TEXT NOT NULL, seq INTEGER, file_time TEXT,
  sha256 TEXT, size INTEGER, outcome TEXT NOT NULL, code TEXT, reason TEXT, records INTEGER, bad_rows INTEGER,
  totals TEXT, received_at TEXT NOT NULL, decided_at TEXT NOT NULL, answered_at TEXT, plan TEXT NOT NULL, replay_of TEXT
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
`;

const SQL_TYPES: Record<FieldSpec['type'], string> = {
  string: 'TEXT', integer: 'INTEGER', amount: 'INTEGER', datetime: 'TEXT', date: 'TEXT', boolean: 'INTEGER', currency: 'TEXT', enum: 'TEXT',
};

const q = (ident: string) => `"${ident.replaceAll('"', '""')}"`;
const COLUMNS = ['id', 'partner', 'flow', 'file', 'seq', 'file_time', 'sha256', 'size', 'outcome', 'code', 'reason', 'records', 'bad_rows', 'totals', 'received_at', 'decided_at', 'answered_at', 'plan', 'replay_of'];
const camel = (c: string) => c.replace(/_(\w)/g, (_, x: string) => x.toUpperCase());

export class Store {
  readonly db: Database.Database;

  constructor(path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    // WAL with synchronous=NORMAL can lose the last commits on power loss; an ACK must never name those.
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 10000');
    this.db.exec(SCHEMA);
  }

  /**
   * Creates the flow's target table from its mapping, or adds columns a newer mapping brought.
   * WITHOUT ROWID: rows live in the key's B-tree, so an upsert writes one B-tree, not two.
   */
  ensureTable(t: TargetTable): void {
    const cols = t.fields.map((f) => `${q(f.ours)} ${SQL_TYPES[f.type]}${t.key.includes(f.ours) ? ' NOT NULL' : ''}`);
    this.db.exec(`CREATE TABLE IF NOT EXISTS ${q(t.table)} (${cols.join(', ')}, _delivery_id TEXT NOT NULL, _updated_at TEXT NOT NULL, PRIMARY KEY (${t.key.map(q).join(', ')})) WITHOUT ROWID`);
    const have = new Set((this.db.prepare(`PRAGMA table_info(${q(t.table)})`).all() as { name: string }[]).map((c) => c.name));
    for (const f of t.fields) {
      if (!have.has(f.ours)) this.db.exec(`ALTER TABLE ${q(t.table)} ADD COLUMN ${q(f.ours)} ${SQL_TYPES[f.type]}`);
    }
  }

  applied(partner: string, flow: string, seq: number): Applied | undefined {
    return this.db.prepare('SELECT sha256, delivery_id AS deliveryId FROM dedupe WHERE partner = ? AND flow = ? AND seq = ?').get(partner, flow, seq) as Applied | undefined;
  }

  /**
   * The one transaction of a delivery. `decide` runs inside it, sees the dedupe row as it is now, and
   * returns the outcome; when that is `accepted` the staged rows are upserted and the dedupe row written.
   */
  commit(seqKey: SeqKey | undefined, staged: Staged | undefined, decide: (applied: Applied | undefined) => DeliveryRecord): DeliveryRecord {
    const stagingPath = staged?.path;
    if (stagingPath) this.db.prepare('ATTACH DATABASE ? AS stg').run(stagingPath);
    try {
      return this.db.transaction(() => {
        const rec = decide(seqKey && this.applied(seqKey.partner, seqKey.flow, seqKey.seq));
        if (rec.outcome === 'accepted') {
          if (!staged) throw new Error('an accepted delivery needs its staged rows');
          this.upsertStaged(staged.target, rec.id, rec.decidedAt);
          this.db.prepare('INSERT INTO dedupe (partner, flow, seq, sha256, delivery_id, applied_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET sha256 = excluded.sha256, delivery_id = excluded.delivery_id, applied_at = excluded.applied_at')
            .run(rec.partner, rec.flow, rec.seq, rec.sha256, rec.id, rec.decidedAt);
        }
        this.db.prepare(`INSERT INTO deliveries (${COLUMNS.join(', ')}) VALUES (${COLUMNS.map((c) => `@${camel(c)}`).join(', ')})`).run(rec);
        this.event(rec.id, rec.outcome === 'accepted' ? 'committed' : rec.outcome, rec.reason ?? undefined);
        return rec;
      }).immediate();
    } finally {
      if (stagingPath) this.db.exec('DETACH DATABASE stg');
    }
  }

  private upsertStaged(t: TargetTable, deliveryId: string, at: string): void {
    const cols = t.fields.map((f) => q(f.ours));
    const staged = t.fields.map((_, i) => `c${i}`);
    const updates = [...t.fields.filter((f) => !t.key.includes(f.ours)).map((f) => q(f.ours)), '_delivery_id', '_updated_at'].map((c) => `${c} = excluded.${c}`);
    // WHERE true: SQLite's parser needs it between SELECT ... and ON CONFLICT. ORDER BY rowid: the last row of a key wins.
    this.db.prepare(`INSERT INTO ${q(t.table)} (${cols.join(', ')}, _delivery_id, _updated_at) SELECT ${staged.join(', ')}, ?, ? FROM stg.rows WHERE true ORDER BY rowid ON CONFLICT (${t.key.map(q).join(', ')}) DO UPDATE SET ${updates.join(', ')}`).run(deliveryId, at);
  }

  event(deliveryId: string, step: string, detail?: string): void {
    this.db.prepare('INSERT INTO events (delivery_id, at, step, detail) VALUES (?, ?, ?, ?)').run(deliveryId, new Date().toISOString(), step, detail ?? null);
  }

  delivery(id: string): DeliveryRecord | undefined {
    const row = this.db.prepare(`SELECT ${COLUMNS.map((c) => `${c} AS ${camel(c)}`).join(', ')} FROM deliveries WHERE id = ?`).get(id);
    return row as DeliveryRecord | undefined;
  }

  markAnswered(id: string): void {
    this.db.transaction(() => {
      this.db.prepare('UPDATE deliveries SET answered_at = ? WHERE id = ? AND answered_at IS NULL').run(new Date().toISOString(), id);
      this.event(id, 'answered');
    })();
  }

  close(): void {
    this.db.close();
  }
}
