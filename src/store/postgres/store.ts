/**
 * The PostgreSQL backend: the flows' target tables where the configuration says, inboxd's own tables
 * in their schema (migrations.ts), one pool of connections.
 *
 * Exactly once, as with SQLite: a delivery's rows are staged while the file streams (staging.ts, into
 * unlogged tables, by the staging threads), and its commit is ONE transaction that reads the dedupe
 * facts, lets `decide` judge them, upserts the staged rows, writes the dedupe row and the outcome, and
 * commits before the partner is told. Deliveries of one flow commit one at a time (a transaction-scoped
 * advisory lock on the flow, as SQLite's single writer does), so two of them in flight can never both
 * read "sequence 7 is new"; the dedupe table's primary key stays the last line. A connection lost
 * mid-transaction rolls all of it back on the server: the delivery is retried, nothing half-applied.
 * Where several instances share the database, the commit is fenced by the partner's lease (leases.ts).
 */
import type { PostgresConfig } from '../../config/database.js';
import type { Applied, Decide, DeliveryRecord, RemoteAnswer, SeqKey, Staged, Store, TargetTable, WindowRecord } from '../types.js';
import { PgAudit, PgRetention } from './audit.js';
import { connectOptions, ident, PgDb, type Tx } from './db.js';
import { PgAttempts, PgRemoteLedger, PgReplayQueue } from './ledgers.js';
import { PgLeases } from './leases.js';
import { pgMigrate, pgSchemaVersion } from './migrations.js';
import { PgStaging } from './staging.js';
import { checkTable, ensureTable, keptSql, upsertSql } from './tables.js';

const COLUMNS = ['id', 'partner', 'flow', 'file', 'seq', 'file_time', 'sha256', 'size', 'outcome', 'code', 'reason', 'records', 'bad_rows', 'totals', 'received_at', 'decided_at', 'answered_at', 'plan', 'replay_of'];
const camel = (c: string) => c.replace(/_(\w)/g, (_, x: string) => x.toUpperCase());
const AS_CAMEL = COLUMNS.map((c) => `${c} AS "${camel(c)}"`).join(', ');
const WINDOW_COLUMNS = ['partner', 'flow', 'opens_at', 'closes_at', 'status', 'at_risk_at', 'late_at', 'resolved_at', 'resolved_by'].map((c) => `${c} AS "${camel(c)}"`).join(', ');

/** Opens the pool and brings inboxd's schema up to date (or, read-only, checks it is one we know). */
export async function openPostgres(c: PostgresConfig, opts: { readonly?: boolean; owner?: string } = {}): Promise<PostgresStore> {
  const connect = connectOptions(c);
  const db = new PgDb(c.url, c.schema, opts.readonly ? { ...connect, readOnly: true } : connect, c.poolSize);
  try {
    if (opts.readonly) await db.tx((t) => pgSchemaVersion(t, c.schema, c.url));
    else await db.tx((t) => pgMigrate(t, c.schema, c.url));
  } catch (err) {
    await db.close();
    throw err;
  }
  return new PostgresStore(db, connect, new PgLeases(db, ident(c.schema), c.leaseTtlMs, opts.owner ?? ''));
}

export class PostgresStore implements Store {
  readonly remote: PgRemoteLedger;
  readonly attempts: PgAttempts;
  readonly audit: PgAudit;
  readonly retention: PgRetention;
  readonly replays: PgReplayQueue;
  readonly staging: PgStaging;
  /** inboxd's schema, quoted */
  private readonly s: string;

  constructor(readonly db: PgDb, connect: ReturnType<typeof connectOptions>, readonly leases: PgLeases) {
    this.s = ident(db.schema);
    this.remote = new PgRemoteLedger(db, this.s);
    this.attempts = new PgAttempts(db, this.s);
    this.audit = new PgAudit(db, this.s);
    this.retention = new PgRetention(db, this.s);
    this.replays = new PgReplayQueue(db, this.s);
    this.staging = new PgStaging(db, connect);
  }

  get isOpen(): boolean {
    return this.db.isOpen;
  }

  /** Whether inboxd's schema has been made here (by a start that migrated it). */
  async initialized(): Promise<boolean> {
    return !!(await this.db.one<{ t: string | null }>('SELECT to_regclass($1) AS t', [`${this.s}.meta`]))?.t;
  }

  async ping(): Promise<void> {
    await this.db.query('SELECT 1');
  }

  async ensureTable(t: TargetTable): Promise<void> {
    await this.db.tx((c) => ensureTable(c, t, this.db.name));
  }

  async checkTable(t: TargetTable): Promise<void> {
    await checkTable(this.db, t, this.db.name);
  }

  async applied(partner: string, flow: string, seq: number): Promise<Applied | undefined> {
    return this.appliedIn(this.db, partner, flow, seq);
  }

  private async appliedIn(c: Tx, partner: string, flow: string, seq: number): Promise<Applied | undefined> {
    return (await c.query<Applied>(`SELECT sha256, delivery_id AS "deliveryId" FROM ${this.s}.dedupe WHERE partner = $1 AND flow = $2 AND seq = $3`, [partner, flow, seq])).rows[0];
  }

  async lastSeq(partner: string, flow: string): Promise<number | undefined> {
    return this.lastSeqIn(this.db, partner, flow);
  }

  private async lastSeqIn(c: Tx, partner: string, flow: string): Promise<number | undefined> {
    const r = await c.query<{ seq: number | null }>(`SELECT max(seq) AS seq FROM ${this.s}.dedupe WHERE partner = $1 AND flow = $2`, [partner, flow]);
    return r.rows[0]?.seq ?? undefined;
  }

  /** The one transaction of a delivery (see the top of this file). */
  async commit(seqKey: SeqKey | undefined, staged: Staged | undefined, decide: Decide, lease?: number): Promise<DeliveryRecord> {
    return this.db.tx(async (c) => {
      if (seqKey) await c.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`inboxd flow ${seqKey.partner}/${seqKey.flow}`]);
      const rec = seqKey ? decide(await this.appliedIn(c, seqKey.partner, seqKey.flow, seqKey.seq), await this.lastSeqIn(c, seqKey.partner, seqKey.flow)) : decide(undefined, undefined);
      if (this.leases.active) await this.leases.fence(c, rec.partner, lease);
      let written = '';
      if (rec.outcome === 'accepted') {
        if (!staged) throw new Error('an accepted delivery needs its staged rows');
        written = await this.upsertStaged(c, staged, rec.id, rec.decidedAt);
        await c.query(`INSERT INTO ${this.s}.dedupe (partner, flow, seq, sha256, delivery_id, applied_at) VALUES ($1, $2, $3, $4, $5, $6)
          ON CONFLICT (partner, flow, seq) DO UPDATE SET sha256 = excluded.sha256, delivery_id = excluded.delivery_id, applied_at = excluded.applied_at`,
        [rec.partner, rec.flow, rec.seq, rec.sha256, rec.id, rec.decidedAt]);
      }
      const values = COLUMNS.map((col) => (rec as unknown as Record<string, unknown>)[camel(col)] ?? null);
      await c.query(`INSERT INTO ${this.s}.deliveries (${COLUMNS.join(', ')}) VALUES (${COLUMNS.map((_, i) => `$${i + 1}`).join(', ')})`, values);
      await this.eventIn(c, rec.id, rec.outcome === 'accepted' ? 'committed' : rec.outcome, rec.outcome === 'accepted' ? written : `${rec.code}: ${rec.reason}`);
      return rec;
    });
  }

  /** Returns what was written, in words for the audit trail. */
  private async upsertStaged(c: Tx, staged: Staged, deliveryId: string, at: string): Promise<string> {
    const t = staged.target;
    const tables = staged.rows.files;
    if (staged.rows.runs.length === 0) return `0 rows written to ${t.table}`;
    const k = staged.keepNewer;
    const kept = k ? Number((await c.query<{ n: number }>(keptSql(t, this.db.schema, tables), [k.partner, k.flow, k.seq])).rows[0]!.n) : 0;
    const params = k ? [deliveryId, at, k.partner, k.flow, k.seq] : [deliveryId, at];
    // Most files name each key once: upserted with no DISTINCT ON. A key twice makes PostgreSQL
    // refuse the statement (21000, an upsert touching a row twice); then the last row of each key is kept.
    await c.query('SAVEPOINT upsert');
    const r = await c.query(upsertSql(t, this.db.schema, tables, k, false), params).catch(async (err: unknown) => {
      if ((err as { code?: unknown }).code !== '21000') throw err; // cardinality_violation
      await c.query('ROLLBACK TO SAVEPOINT upsert');
      return c.query(upsertSql(t, this.db.schema, tables, k, true), params);
    });
    const written = r.rowCount ?? 0;
    const rows = staged.rows.runs.reduce((n, run) => n + run.to - run.from + 1, 0);
    const same = rows - written - kept;
    return `${written} rows written to ${t.table}${kept > 0 ? `; ${kept} kept as they were: a later sequence wrote them` : ''}${same > 0 ? `; ${same} unchanged or repeated in the file` : ''}`;
  }

  async createdAt(): Promise<string> {
    return (await this.db.one<{ value: string }>(`SELECT value FROM ${this.s}.meta WHERE key = 'created_at'`))!.value;
  }

  async acceptedBetween(partner: string, flow: string, from: string, to: string): Promise<boolean> {
    return !!(await this.db.one(`SELECT 1 FROM ${this.s}.deliveries WHERE partner = $1 AND flow = $2 AND outcome = 'accepted' AND received_at BETWEEN $3 AND $4 LIMIT 1`, [partner, flow, from, to]));
  }

  async acceptedAfter(partner: string, flow: string, at: string): Promise<string | undefined> {
    return (await this.db.one<{ id: string }>(`SELECT id FROM ${this.s}.deliveries WHERE partner = $1 AND flow = $2 AND outcome = 'accepted' AND decided_at > $3 ORDER BY decided_at LIMIT 1`, [partner, flow, at]))?.id;
  }

  async receivedAt(deliveryId: string): Promise<string | undefined> {
    return (await this.db.one<{ at: string }>(`SELECT at FROM ${this.s}.events WHERE delivery_id = $1 AND step = 'received' ORDER BY at LIMIT 1`, [deliveryId]))?.at;
  }

  async window(partner: string, flow: string, opensAt: string): Promise<WindowRecord | undefined> {
    return this.db.one<WindowRecord>(`SELECT ${WINDOW_COLUMNS} FROM ${this.s}.windows WHERE partner = $1 AND flow = $2 AND opens_at = $3`, [partner, flow, opensAt]);
  }

  async lateWindows(partner?: string, flow?: string): Promise<WindowRecord[]> {
    return this.lateWindowsIn(this.db, partner, flow);
  }

  private async lateWindowsIn(c: Tx, partner?: string, flow?: string): Promise<WindowRecord[]> {
    return (await c.query<WindowRecord>(`SELECT ${WINDOW_COLUMNS} FROM ${this.s}.windows WHERE status = 'late' AND ($1::text IS NULL OR partner = $1) AND ($2::text IS NULL OR flow = $2) ORDER BY opens_at`, [partner ?? null, flow ?? null])).rows;
  }

  async judgeWindow(partner: string, flow: string, opensAt: string, closesAt: string, status: 'ok' | 'late'): Promise<boolean> {
    return (await this.db.run(`INSERT INTO ${this.s}.windows (partner, flow, opens_at, closes_at, status, late_at) VALUES ($1, $2, $3, $4, $5, $6)
      ON CONFLICT (partner, flow, opens_at) DO UPDATE SET status = excluded.status, late_at = excluded.late_at WHERE windows.status = 'open'`,
    [partner, flow, opensAt, closesAt, status, status === 'late' ? new Date().toISOString() : null])) === 1;
  }

  async markAtRisk(partner: string, flow: string, opensAt: string, closesAt: string): Promise<boolean> {
    return (await this.db.run(`INSERT INTO ${this.s}.windows (partner, flow, opens_at, closes_at, status, at_risk_at) VALUES ($1, $2, $3, $4, 'open', $5)
      ON CONFLICT (partner, flow, opens_at) DO UPDATE SET at_risk_at = excluded.at_risk_at WHERE windows.at_risk_at IS NULL`,
    [partner, flow, opensAt, closesAt, new Date().toISOString()])) === 1;
  }

  /** The UPDATE's own rows say what this call resolved: two instances resolving at once never both report it. */
  async resolveLate(partner: string, flow: string, deliveryId: string): Promise<WindowRecord[]> {
    return this.db.tx(async (c) => {
      const late = (await c.query<WindowRecord>(`UPDATE ${this.s}.windows SET status = 'resolved', resolved_at = $1, resolved_by = $2 WHERE partner = $3 AND flow = $4 AND status = 'late' RETURNING ${WINDOW_COLUMNS}`,
        [new Date().toISOString(), deliveryId, partner, flow])).rows.sort((a, b) => a.opensAt.localeCompare(b.opensAt));
      if (late.length === 0) return late;
      await c.query(`UPDATE ${this.s}.deliveries SET late = 1 WHERE id = $1`, [deliveryId]);
      await this.eventIn(c, deliveryId, 'late', `resolves the window${late.length > 1 ? 's' : ''} opened ${late.map((w) => w.opensAt).join(', ')}`);
      return late;
    });
  }

  async event(deliveryId: string, step: string, detail?: string, at?: string): Promise<void> {
    await this.eventIn(this.db, deliveryId, step, detail, at);
  }

  private async eventIn(c: Tx, deliveryId: string, step: string, detail?: string, at = new Date().toISOString()): Promise<void> {
    await c.query(`INSERT INTO ${this.s}.events (delivery_id, at, step, detail) VALUES ($1, $2, $3, $4)`, [deliveryId, at, step, detail ?? null]);
  }

  async resolve(deliveryId: string, byDelivery: string | null, note: string): Promise<boolean> {
    return this.db.tx(async (c) => {
      const r = await c.query(`INSERT INTO ${this.s}.resolutions (delivery_id, resolved_at, by_delivery, note) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, [deliveryId, new Date().toISOString(), byDelivery, note]);
      if (r.rowCount === 1) await this.eventIn(c, deliveryId, 'resolved', note);
      return r.rowCount === 1;
    });
  }

  async rejectedAs(partner: string, file: string, code: string): Promise<boolean> {
    return !!(await this.db.one(`SELECT 1 FROM ${this.s}.deliveries WHERE partner = $1 AND file = $2 AND code = $3 AND outcome = 'rejected' LIMIT 1`, [partner, file, code]));
  }

  async delivery(id: string): Promise<DeliveryRecord | undefined> {
    return this.db.one<DeliveryRecord>(`SELECT ${AS_CAMEL} FROM ${this.s}.deliveries WHERE id = $1`, [id]);
  }

  async unanswered(partner: string): Promise<string[]> {
    return (await this.db.all<{ id: string }>(`SELECT id FROM ${this.s}.deliveries WHERE partner = $1 AND answered_at IS NULL ORDER BY decided_at`, [partner])).map((r) => r.id);
  }

  async markAnswered(id: string, detail: string, remote?: RemoteAnswer): Promise<void> {
    await this.db.tx(async (c) => {
      await c.query(`UPDATE ${this.s}.deliveries SET answered_at = $1 WHERE id = $2 AND answered_at IS NULL`, [new Date().toISOString(), id]);
      await this.eventIn(c, id, 'answered', detail);
      if (remote) await this.remote.answeredIn(c, remote.partner, id, remote.plan);
    });
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
