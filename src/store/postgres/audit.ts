/** The audit trail's read side and retention in PostgreSQL: the same questions as sqlite/audit.ts and sqlite/retention.ts. */
import type { Audit, AuditEvent, CircuitRow, DeliveryFilter, DeliveryRecord, Listed, PrunedRows, Resolution, Retention } from '../types.js';
import type { PgDb } from './db.js';

export const DELIVERY_COLUMNS = `id, partner, flow, file, seq, file_time AS "fileTime", sha256, size, outcome, code, reason, records, bad_rows AS "badRows",
  totals, received_at AS "receivedAt", decided_at AS "decidedAt", answered_at AS "answeredAt", plan, replay_of AS "replayOf"`;
const LISTED = `${DELIVERY_COLUMNS}, late`;

/** A rejected delivery still needing someone (Audit.openProblems); `S` is the schema. */
const open = (s: string) => `d.outcome = 'rejected' AND d.replay_of IS NULL
  AND NOT EXISTS (SELECT 1 FROM ${s}.resolutions r WHERE r.delivery_id = d.id)
  AND NOT EXISTS (SELECT 1 FROM ${s}.deliveries a WHERE a.partner = d.partner AND a.flow = d.flow AND a.seq = d.seq AND a.outcome = 'accepted' AND a.decided_at > d.decided_at)`;

type Brief = Pick<DeliveryRecord, 'id' | 'outcome' | 'code' | 'decidedAt'>;

export class PgAudit implements Audit {
  constructor(private readonly db: PgDb, private readonly s: string) {}

  async list(f: DeliveryFilter = {}): Promise<Listed[]> {
    const where = ['($1::text IS NULL OR d.partner = $1)', '($2::text IS NULL OR d.flow = $2)', '($3::timestamptz IS NULL OR d.received_at >= $3)', '($4::timestamptz IS NULL OR d.received_at < $4)'];
    const params: unknown[] = [f.partner ?? null, f.flow ?? null, f.since ?? null, f.until ?? null, f.limit ?? 50];
    if (f.outcome === 'open') where.push(open(this.s));
    else if (f.outcome === 'late') where.push('d.late = 1');
    else if (f.outcome === 'replay') where.push('d.replay_of IS NOT NULL');
    else if (f.outcome) where.push(`d.outcome = $${params.push(f.outcome)}`);
    return this.db.all<Listed>(`SELECT ${LISTED} FROM ${this.s}.deliveries d WHERE ${where.join(' AND ')} ORDER BY d.received_at DESC, d.id DESC LIMIT $5`, params);
  }

  async openProblems(): Promise<Listed[]> {
    return this.db.all<Listed>(`SELECT ${LISTED} FROM ${this.s}.deliveries d WHERE ${open(this.s)} ORDER BY d.decided_at`);
  }

  async get(id: string): Promise<Listed | undefined> {
    return this.db.one<Listed>(`SELECT ${LISTED} FROM ${this.s}.deliveries d WHERE id = $1`, [id]);
  }

  async timeline(id: string): Promise<AuditEvent[]> {
    return this.db.all<AuditEvent>(`SELECT at, step, detail FROM ${this.s}.events WHERE delivery_id = $1 ORDER BY id`, [id]);
  }

  async replaysOf(id: string): Promise<Brief[]> {
    return this.db.all<Brief>(`SELECT id, outcome, code, decided_at AS "decidedAt" FROM ${this.s}.deliveries WHERE replay_of = $1 ORDER BY decided_at`, [id]);
  }

  async resolutionOf(rec: DeliveryRecord): Promise<Resolution | undefined> {
    if (rec.outcome !== 'rejected') return undefined;
    const r = await this.db.one<Resolution>(`SELECT resolved_at AS at, by_delivery AS "byDelivery", note FROM ${this.s}.resolutions WHERE delivery_id = $1`, [rec.id]);
    if (r) return r;
    const later = await this.db.one<{ id: string; at: string }>(`SELECT id, decided_at AS at FROM ${this.s}.deliveries WHERE partner = $1 AND flow = $2 AND seq = $3 AND outcome = 'accepted' AND decided_at > $4 ORDER BY decided_at LIMIT 1`,
      [rec.partner, rec.flow, rec.seq, rec.decidedAt]);
    return later && { at: later.at, byDelivery: later.id, note: 'the sequence was accepted later' };
  }

  async lastDelivery(partner: string, flow: string): Promise<Listed | undefined> {
    return this.db.one<Listed>(`SELECT ${LISTED} FROM ${this.s}.deliveries d WHERE partner = $1 AND flow = $2 ORDER BY decided_at DESC, id DESC LIMIT 1`, [partner, flow]);
  }

  async lastAccepted(): Promise<Map<string, string>> {
    const rows = await this.db.all<{ partner: string; flow: string; at: string }>(`SELECT partner, flow, max(decided_at) AS at FROM ${this.s}.deliveries WHERE outcome = 'accepted' GROUP BY partner, flow`);
    return new Map(rows.map((r) => [`${r.partner}/${r.flow}`, r.at]));
  }

  async lateCounts(): Promise<Map<string, number>> {
    const rows = await this.db.all<{ partner: string; flow: string; n: number }>(`SELECT partner, flow, count(*) AS n FROM ${this.s}.windows WHERE status = 'late' GROUP BY partner, flow`);
    return new Map(rows.map((r) => [`${r.partner}/${r.flow}`, r.n]));
  }

  async circuits(): Promise<Map<string, CircuitRow>> {
    const rows = await this.db.all<CircuitRow>(`SELECT partner, circuit, updated_at AS "updatedAt" FROM ${this.s}.remote_state`);
    return new Map(rows.map((r) => [r.partner, r]));
  }
}

export class PgRetention implements Retention {
  constructor(private readonly db: PgDb, private readonly s: string) {}

  async decisions(partner: string): Promise<Map<string, number>> {
    const rows = await this.db.all<{ dir: string; name: string; at: string }>(`
      SELECT m->>'dir' AS dir, m->>'to' AS name, d.decided_at AS at FROM ${this.s}.deliveries d, jsonb_array_elements(d.plan::jsonb->'moves') m WHERE d.partner = $1
      UNION ALL
      SELECT w->>'dir', w->>'name', d.decided_at FROM ${this.s}.deliveries d, jsonb_array_elements(d.plan::jsonb->'writes') w WHERE d.partner = $1`, [partner]);
    const out = new Map<string, number>();
    for (const r of rows) out.set(`${r.dir}/${r.name}`, Math.max(out.get(`${r.dir}/${r.name}`) ?? 0, Date.parse(r.at)));
    return out;
  }

  /** One transaction; a dry run makes the same deletions and rolls them back, so its counts are exact. */
  async prune(cutoffs: readonly { partner: string; before: string }[], orphansBefore: string, dryRun: boolean): Promise<PrunedRows> {
    const rows: PrunedRows = { dedupe: 0, deliveries: 0, events: 0, resolutions: 0, windows: 0 };
    const s = this.s;
    const old = `SELECT d.id FROM ${s}.deliveries d WHERE d.partner = $1 AND d.decided_at < $2 AND d.answered_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM ${s}.dedupe k WHERE k.delivery_id = d.id)`;
    const rollback = new Error('dry run');
    try {
      await this.db.tx(async (c) => {
        const del = async (sql: string, params: unknown[]) => (await c.query(sql, params)).rowCount ?? 0;
        for (const cut of cutoffs) {
          const params = [cut.partner, cut.before];
          rows.dedupe += await del(`DELETE FROM ${s}.dedupe WHERE partner = $1 AND applied_at < $2
            AND seq < (SELECT max(seq) FROM ${s}.dedupe last WHERE last.partner = dedupe.partner AND last.flow = dedupe.flow)`, params);
          rows.events += await del(`DELETE FROM ${s}.events WHERE delivery_id IN (${old})`, params);
          rows.resolutions += await del(`DELETE FROM ${s}.resolutions WHERE delivery_id IN (${old})`, params);
          rows.deliveries += await del(`DELETE FROM ${s}.deliveries WHERE id IN (${old})`, params);
          rows.windows += await del(`DELETE FROM ${s}.windows WHERE partner = $1 AND closes_at < $2 AND status <> 'late'`, params);
        }
        rows.events += await del(`DELETE FROM ${s}.events WHERE at < $1 AND NOT EXISTS (SELECT 1 FROM ${s}.deliveries d WHERE d.id = events.delivery_id)`, [orphansBefore]);
        if (dryRun) throw rollback;
      });
    } catch (err) {
      if (err !== rollback) throw err;
    }
    return rows;
  }
}
