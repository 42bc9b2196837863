/**
 * The database: target tables, the dedupe table, delivery outcomes and their audit trail.
 *
 * Exactly-once design. better-sqlite3 is synchronous: its transactions cannot span an `await`, and one
 * connection shared by deliveries in flight would mix their statements into one transaction. So rows
 * are never written to this database while a file streams. Each delivery streams into scratch SQLite
 * files of its own (staging threads, see stage.ts); once every check has passed, `commit` ATTACHes
 * them and, in ONE short synchronous IMMEDIATE transaction, re-checks the dedupe table, upserts
 * the staged rows, and records the dedupe row and the outcome. Nothing can interleave with a
 * synchronous call, so deliveries in flight never share a transaction, and a rejected file never
 * touches a target table. `synchronous = FULL` makes each commit durable before the partner is told.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { type Db, openDatabase } from './driver.js';
import { SqliteAttempts } from './attempts.js';
import { SqliteAudit } from './audit.js';
import { InboxdError } from '../../errors.js';
import { assertWritable, guard, naming } from './db-errors.js';
import { migrate, schemaVersion } from './migrations.js';
import { type FieldSpec, sameColumns } from '../../config/mapping.js';
import { SqliteRemoteLedger } from './remote-ledger.js';
import { SqliteReplayQueue } from './replay-queue.js';
import { SqliteRetention } from './retention.js';
import { sqliteStaging } from './scratch.js';
import type { Applied, Decide, DeliveryRecord, RemoteAnswer, SeqKey, Staged, Store, TargetTable, WindowRecord } from '../types.js';


const SQL_TYPES: Record<FieldSpec['type'], string> = {
  string: 'TEXT', integer: 'INTEGER', amount: 'INTEGER', datetime: 'TEXT', date: 'TEXT', boolean: 'INTEGER', currency: 'TEXT', enum: 'TEXT',
};

const q = (ident: string) => `"${ident.replaceAll('"', '""')}"`;
const COLUMNS = ['id', 'partner', 'flow', 'file', 'seq', 'file_time', 'sha256', 'size', 'outcome', 'code', 'reason', 'records', 'bad_rows', 'totals', 'received_at', 'decided_at', 'answered_at', 'plan', 'replay_of'];
const camel = (c: string) => c.replace(/_(\w)/g, (_, x: string) => x.toUpperCase());
const WINDOW_COLUMNS = ['partner', 'flow', 'opens_at', 'closes_at', 'status', 'at_risk_at', 'late_at', 'resolved_at', 'resolved_by'].map((c) => `${c} AS ${camel(c)}`).join(', ');

export class SqliteStore implements Store {
  readonly db: Db;
  /** bookkeeping for partners we pull from and push to */
  readonly remote: SqliteRemoteLedger;
  /** deliveries that failed for a reason of ours: attempts and backoff */
  readonly attempts: SqliteAttempts;
  readonly audit: SqliteAudit;
  readonly retention: SqliteRetention;
  readonly staging = sqliteStaging;
  private replayQueue?: SqliteReplayQueue;
  /** asked at every sweep of every partner (startup.ts recover): prepared once */
  private unansweredStmt?: ReturnType<Db['prepare']>;

  /**
   * `readonly`: for commands that promise to change nothing (inboxd check); the database must exist.
   * SQLite's query_only forbids every write, and unlike a read-only open it leaves no -wal or -shm
   * file behind when it is the only connection.
   */
  constructor(readonly path: string, opts: { readonly?: boolean } = {}) {
    this.db = opts.readonly ? openReadonly(path) : openWritable(path);
    this.remote = new SqliteRemoteLedger(this.db);
    this.attempts = new SqliteAttempts(this.db);
    this.audit = new SqliteAudit(this.db);
    this.retention = new SqliteRetention(this.db);
  }

  /** The replay queue (its table is made by the migrations). */
  get replays(): SqliteReplayQueue {
    return (this.replayQueue ??= new SqliteReplayQueue(this.db));
  }

  get isOpen(): boolean {
    return this.db.open;
  }

  async ping(): Promise<void> {
    this.db.prepare('SELECT 1').get();
  }

  /**
   * Creates the flow's target table from its mapping, or adds columns a newer mapping brought.
   * WITHOUT ROWID: rows live in the key's B-tree, so an upsert writes one B-tree, not two.
   */
  async ensureTable(t: TargetTable): Promise<void> {
    const cols = t.fields.map((f) => `${q(f.ours)} ${SQL_TYPES[f.type]}${t.key.includes(f.ours) ? ' NOT NULL' : ''}`);
    this.db.exec(`CREATE TABLE IF NOT EXISTS ${q(t.table)} (${cols.join(', ')}, _delivery_id TEXT NOT NULL, _updated_at TEXT NOT NULL, PRIMARY KEY (${t.key.map(q).join(', ')})) WITHOUT ROWID`);
    const info = this.tableInfo(t);
    const have = new Set(info.map((c) => c.name));
    for (const f of t.fields) {
      if (!have.has(f.ours)) this.db.exec(`ALTER TABLE ${q(t.table)} ADD COLUMN ${q(f.ours)} ${SQL_TYPES[f.type]}`);
    }
  }

  async checkTable(t: TargetTable): Promise<void> {
    this.tableInfo(t);
  }

  /**
   * Upserts target the table's primary key: a key changed in the configuration would fail every delivery.
   * Throws CONFIG_INVALID when an existing table has another key; changes nothing. Returns the table's columns.
   */
  private tableInfo(t: TargetTable): { name: string; pk: number }[] {
    const info = this.db.prepare(`PRAGMA table_info(${q(t.table)})`).all() as { name: string; pk: number }[];
    const pk = info.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk).map((c) => c.name);
    if (info.length > 0 && !sameColumns(pk, t.key)) {
      throw new InboxdError('CONFIG_INVALID', `table "${t.table}" exists with the key (${pk.join(', ')}), but the configuration says (${t.key.join(', ')}); change the key back, or migrate the table (database ${this.path})`);
    }
    return info;
  }

  async applied(partner: string, flow: string, seq: number): Promise<Applied | undefined> {
    return this.appliedNow(partner, flow, seq);
  }

  private appliedNow(partner: string, flow: string, seq: number): Applied | undefined {
    return this.db.prepare('SELECT sha256, delivery_id AS deliveryId FROM dedupe WHERE partner = ? AND flow = ? AND seq = ?').get(partner, flow, seq) as Applied | undefined;
  }

  /**
   * The one transaction of a delivery, synchronous from BEGIN to COMMIT (see the top of this file).
   * `decide` sees the dedupe row and the flow's last applied sequence as they are now and returns the
   * outcome; when that is `accepted` the staged rows are upserted and the dedupe row written.
   */
  async commit(seqKey: SeqKey | undefined, staged: Staged | undefined, decide: Decide): Promise<DeliveryRecord> {
    const files = staged?.rows.files ?? [];
    let attached = 0;
    try {
      for (const f of files) {
        const name = `stg${attached}`;
        this.db.prepare(`ATTACH DATABASE ? AS ${name}`).run(f);
        attached++;
        // BEGIN IMMEDIATE takes a write transaction on every attached file; with a rollback journal on two
        // or more of them, SQLite writes a super-journal beside the database at each commit (and a failed
        // commit leaves it there). They are only read: an in-memory journal needs no super-journal.
        this.db.pragma(`${name}.journal_mode = MEMORY`);
        // Read once, in rowid order: a small page cache for each (the driver's default is 16 MB per file).
        this.db.pragma(`${name}.cache_size = -2000`);
      }
      return this.db.transaction(() => {
        const rec = seqKey ? decide(this.appliedNow(seqKey.partner, seqKey.flow, seqKey.seq), this.lastSeqNow(seqKey.partner, seqKey.flow)) : decide(undefined, undefined);
        let written = '';
        if (rec.outcome === 'accepted') {
          if (!staged) throw new Error('an accepted delivery needs its staged rows');
          written = this.upsertStaged(staged, rec.id, rec.decidedAt);
          this.db.prepare('INSERT INTO dedupe (partner, flow, seq, sha256, delivery_id, applied_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET sha256 = excluded.sha256, delivery_id = excluded.delivery_id, applied_at = excluded.applied_at')
            .run(rec.partner, rec.flow, rec.seq, rec.sha256, rec.id, rec.decidedAt);
        }
        this.db.prepare(`INSERT INTO deliveries (${COLUMNS.join(', ')}) VALUES (${COLUMNS.map((c) => `@${camel(c)}`).join(', ')})`).run(rec);
        this.eventNow(rec.id, rec.outcome === 'accepted' ? 'committed' : rec.outcome, rec.outcome === 'accepted' ? written : `${rec.code}: ${rec.reason}`);
        return rec;
      }).immediate();
    } finally {
      for (let n = 0; n < attached; n++) this.db.exec(`DETACH DATABASE stg${n}`);
    }
  }

  /** Returns what was written, in words for the audit trail. */
  private upsertStaged(staged: Staged, deliveryId: string, at: string): string {
    const t = staged.target;
    const cols = t.fields.map((f) => q(f.ours));
    const values = t.fields.map((_, i) => `c${i}`);
    const updates = [...t.fields.filter((f) => !t.key.includes(f.ours)).map((f) => q(f.ours)), '_delivery_id', '_updated_at'].map((c) => `${c} = excluded.${c}`);
    const k = staged.keepNewer;
    const keep = k ? ` WHERE NOT EXISTS (SELECT 1 FROM deliveries w WHERE w.id = ${q(t.table)}._delivery_id AND w.partner = @partner AND w.flow = @flow AND w.seq > @seq)` : '';
    // Run by run, in file order, each in rowid order: the last row of a key wins, as in the file.
    const upsert = staged.rows.files.map((_, n) => this.db.prepare(`INSERT INTO ${q(t.table)} (${cols.join(', ')}, _delivery_id, _updated_at) SELECT ${values.join(', ')}, @id, @at FROM stg${n}.rows WHERE rowid BETWEEN @from AND @to ORDER BY rowid ON CONFLICT (${t.key.map(q).join(', ')}) DO UPDATE SET ${updates.join(', ')}${keep}`));
    let changes = 0;
    let rows = 0;
    for (const run of staged.rows.runs) {
      changes += upsert[run.file]!.run({ id: deliveryId, at, from: run.from, to: run.to, ...(k ? { partner: k.partner, flow: k.flow, seq: k.seq } : {}) }).changes;
      rows += run.to - run.from + 1;
    }
    const kept = rows - changes;
    return `${changes} rows written to ${t.table}${k && kept > 0 ? `; ${kept} kept as they were: a later sequence wrote them` : ''}`;
  }

  async createdAt(): Promise<string> {
    return (this.db.prepare("SELECT value FROM meta WHERE key = 'created_at'").get() as { value: string }).value;
  }

  async lastSeq(partner: string, flow: string): Promise<number | undefined> {
    return this.lastSeqNow(partner, flow);
  }

  private lastSeqNow(partner: string, flow: string): number | undefined {
    const row = this.db.prepare('SELECT max(seq) AS seq FROM dedupe WHERE partner = ? AND flow = ?').get(partner, flow) as { seq: number | null };
    return row.seq ?? undefined;
  }

  async acceptedBetween(partner: string, flow: string, from: string, to: string): Promise<boolean> {
    return !!this.db.prepare("SELECT 1 FROM deliveries WHERE partner = ? AND flow = ? AND outcome = 'accepted' AND received_at BETWEEN ? AND ? LIMIT 1").get(partner, flow, from, to);
  }

  async acceptedAfter(partner: string, flow: string, at: string): Promise<string | undefined> {
    const later = this.db.prepare("SELECT id FROM deliveries WHERE partner = ? AND flow = ? AND outcome = 'accepted' AND decided_at > ? ORDER BY decided_at LIMIT 1").get(partner, flow, at) as { id: string } | undefined;
    return later?.id;
  }

  async receivedAt(deliveryId: string): Promise<string | undefined> {
    return (this.db.prepare("SELECT at FROM events WHERE delivery_id = ? AND step = 'received' ORDER BY at LIMIT 1").get(deliveryId) as { at: string } | undefined)?.at;
  }

  async window(partner: string, flow: string, opensAt: string): Promise<WindowRecord | undefined> {
    return this.db.prepare(`SELECT ${WINDOW_COLUMNS} FROM windows WHERE partner = ? AND flow = ? AND opens_at = ?`).get(partner, flow, opensAt) as WindowRecord | undefined;
  }

  async lateWindows(partner?: string, flow?: string): Promise<WindowRecord[]> {
    return this.lateWindowsNow(partner, flow);
  }

  private lateWindowsNow(partner?: string, flow?: string): WindowRecord[] {
    return this.db.prepare(`SELECT ${WINDOW_COLUMNS} FROM windows WHERE status = 'late' AND (@partner IS NULL OR partner = @partner) AND (@flow IS NULL OR flow = @flow) ORDER BY opens_at`)
      .all({ partner: partner ?? null, flow: flow ?? null }) as WindowRecord[];
  }

  async judgeWindow(partner: string, flow: string, opensAt: string, closesAt: string, status: 'ok' | 'late'): Promise<boolean> {
    const r = this.db.prepare("INSERT INTO windows (partner, flow, opens_at, closes_at, status, late_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET status = excluded.status, late_at = excluded.late_at WHERE status = 'open'")
      .run(partner, flow, opensAt, closesAt, status, status === 'late' ? new Date().toISOString() : null);
    return r.changes === 1;
  }

  async markAtRisk(partner: string, flow: string, opensAt: string, closesAt: string): Promise<boolean> {
    const now = new Date().toISOString();
    const r = this.db.prepare("INSERT INTO windows (partner, flow, opens_at, closes_at, status, at_risk_at) VALUES (?, ?, ?, ?, 'open', ?) ON CONFLICT DO UPDATE SET at_risk_at = excluded.at_risk_at WHERE at_risk_at IS NULL")
      .run(partner, flow, opensAt, closesAt, now);
    return r.changes === 1;
  }

  async resolveLate(partner: string, flow: string, deliveryId: string): Promise<WindowRecord[]> {
    return this.db.transaction(() => {
      const late = this.lateWindowsNow(partner, flow);
      if (late.length === 0) return late;
      this.db.prepare("UPDATE windows SET status = 'resolved', resolved_at = ?, resolved_by = ? WHERE partner = ? AND flow = ? AND status = 'late'").run(new Date().toISOString(), deliveryId, partner, flow);
      this.db.prepare('UPDATE deliveries SET late = 1 WHERE id = ?').run(deliveryId);
      this.eventNow(deliveryId, 'late', `resolves the window${late.length > 1 ? 's' : ''} opened ${late.map((w) => w.opensAt).join(', ')}`);
      return late;
    })();
  }

  async event(deliveryId: string, step: string, detail?: string, at?: string): Promise<void> {
    this.eventNow(deliveryId, step, detail, at);
  }

  private eventNow(deliveryId: string, step: string, detail?: string, at = new Date().toISOString()): void {
    this.db.prepare('INSERT INTO events (delivery_id, at, step, detail) VALUES (?, ?, ?, ?)').run(deliveryId, at, step, detail ?? null);
  }

  async resolve(deliveryId: string, byDelivery: string | null, note: string): Promise<boolean> {
    return this.db.transaction(() => {
      const r = this.db.prepare('INSERT OR IGNORE INTO resolutions (delivery_id, resolved_at, by_delivery, note) VALUES (?, ?, ?, ?)').run(deliveryId, new Date().toISOString(), byDelivery, note);
      if (r.changes === 1) this.eventNow(deliveryId, 'resolved', note);
      return r.changes === 1;
    })();
  }

  async rejectedAs(partner: string, file: string, code: string): Promise<boolean> {
    return !!this.db.prepare("SELECT 1 FROM deliveries WHERE partner = ? AND file = ? AND code = ? AND outcome = 'rejected' LIMIT 1").get(partner, file, code);
  }

  async delivery(id: string): Promise<DeliveryRecord | undefined> {
    const row = this.db.prepare(`SELECT ${COLUMNS.map((c) => `${c} AS ${camel(c)}`).join(', ')} FROM deliveries WHERE id = ?`).get(id);
    return row as DeliveryRecord | undefined;
  }

  async unanswered(partner: string): Promise<string[]> {
    this.unansweredStmt ??= this.db.prepare('SELECT id FROM deliveries WHERE partner = ? AND answered_at IS NULL ORDER BY decided_at');
    return (this.unansweredStmt.all(partner) as { id: string }[]).map((r) => r.id);
  }

  async markAnswered(id: string, detail: string, remote?: RemoteAnswer): Promise<void> {
    this.db.transaction(() => {
      this.db.prepare('UPDATE deliveries SET answered_at = ? WHERE id = ? AND answered_at IS NULL').run(new Date().toISOString(), id);
      this.eventNow(id, 'answered', detail);
      if (remote) this.remote.answeredNow(remote.partner, id, remote.plan);
    })();
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

/** The database must exist and be of a schema we know; it is only read. */
function openReadonly(path: string): Db {
  const db = naming(guard(path, () => openDatabase(path, { fileMustExist: true })), path);
  db.pragma('query_only = ON');
  db.pragma('busy_timeout = 10000');
  schemaVersion(db, path);
  return db;
}

/** Made if missing, brought to the current schema (migrations.ts). */
function openWritable(path: string): Db {
  mkdirSync(dirname(path), { recursive: true });
  assertWritable(path);
  const db = naming(guard(path, () => openDatabase(path)), path);
  // Set before the first table exists (a new database only): big pages make the B-trees of wide keyed
  // rows shallower, and a large delivery's upsert measurably faster (npm run bench).
  db.pragma('page_size = 16384');
  db.pragma('journal_mode = WAL');
  // WAL with synchronous=NORMAL can lose the last commits on power loss; an ACK must never name those.
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 10000');
  // 8 MB of page cache, not the driver's 16: a large delivery's commit fills it, and that is where its
  // memory peaks; random upserts into a 4M-row table ran as fast with 8 (npm run bench).
  db.pragma('cache_size = -8000');
  migrate(db, path);
  return db;
}
