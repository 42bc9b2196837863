/** The audit trail's read side in SQL (types.ts, Audit): nothing here changes a row. */
import type Database from 'better-sqlite3';
import type { Audit, AuditEvent, CircuitRow, DeliveryFilter, DeliveryRecord, Listed, Resolution } from '../types.js';

const COLUMNS = `id, partner, flow, file, seq, file_time AS fileTime, sha256, size, outcome, code, reason, records, bad_rows AS badRows,
  totals, received_at AS receivedAt, decided_at AS decidedAt, answered_at AS answeredAt, plan, replay_of AS replayOf, late`;

/** A rejected delivery still needing someone (Audit.openProblems). */
const OPEN = `d.outcome = 'rejected' AND d.replay_of IS NULL
  AND NOT EXISTS (SELECT 1 FROM resolutions r WHERE r.delivery_id = d.id)
  AND NOT EXISTS (SELECT 1 FROM deliveries a WHERE a.partner = d.partner AND a.flow = d.flow AND a.seq = d.seq AND a.outcome = 'accepted' AND a.decided_at > d.decided_at)`;

export class SqliteAudit implements Audit {
  constructor(private readonly db: Database.Database) {}

  async list(f: DeliveryFilter = {}): Promise<Listed[]> {
    const where = ['(@partner IS NULL OR d.partner = @partner)', '(@flow IS NULL OR d.flow = @flow)', '(@since IS NULL OR d.received_at >= @since)', '(@until IS NULL OR d.received_at < @until)'];
    if (f.outcome === 'open') where.push(OPEN);
    else if (f.outcome === 'late') where.push('d.late = 1');
    else if (f.outcome === 'replay') where.push('d.replay_of IS NOT NULL');
    else if (f.outcome) where.push('d.outcome = @outcome');
    return this.db.prepare(`SELECT ${COLUMNS} FROM deliveries d WHERE ${where.join(' AND ')} ORDER BY d.received_at DESC, d.id DESC LIMIT @limit`).all({
      partner: f.partner ?? null, flow: f.flow ?? null, since: f.since ?? null, until: f.until ?? null, outcome: f.outcome ?? null, limit: f.limit ?? 50,
    }) as Listed[];
  }

  async openProblems(): Promise<Listed[]> {
    return this.db.prepare(`SELECT ${COLUMNS} FROM deliveries d WHERE ${OPEN} ORDER BY d.decided_at`).all() as Listed[];
  }

  async get(id: string): Promise<Listed | undefined> {
    return this.db.prepare(`SELECT ${COLUMNS} FROM deliveries d WHERE id = ?`).get(id) as Listed | undefined;
  }

  async timeline(id: string): Promise<AuditEvent[]> {
    return this.db.prepare('SELECT at, step, detail FROM events WHERE delivery_id = ? ORDER BY id').all(id) as AuditEvent[];
  }

  async replaysOf(id: string): Promise<Pick<DeliveryRecord, 'id' | 'outcome' | 'code' | 'decidedAt'>[]> {
    return this.db.prepare('SELECT id, outcome, code, decided_at AS decidedAt FROM deliveries WHERE replay_of = ? ORDER BY decided_at').all(id) as Pick<DeliveryRecord, 'id' | 'outcome' | 'code' | 'decidedAt'>[];
  }

  async resolutionOf(rec: DeliveryRecord): Promise<Resolution | undefined> {
    if (rec.outcome !== 'rejected') return undefined;
    const r = this.db.prepare('SELECT resolved_at AS at, by_delivery AS byDelivery, note FROM resolutions WHERE delivery_id = ?').get(rec.id) as Resolution | undefined;
    if (r) return r;
    const later = this.db.prepare("SELECT id, decided_at AS at FROM deliveries WHERE partner = ? AND flow = ? AND seq = ? AND outcome = 'accepted' AND decided_at > ? ORDER BY decided_at LIMIT 1")
      .get(rec.partner, rec.flow, rec.seq, rec.decidedAt) as { id: string; at: string } | undefined;
    return later && { at: later.at, byDelivery: later.id, note: 'the sequence was accepted later' };
  }

  async lastDelivery(partner: string, flow: string): Promise<Listed | undefined> {
    return this.db.prepare(`SELECT ${COLUMNS} FROM deliveries d WHERE partner = ? AND flow = ? ORDER BY decided_at DESC, id DESC LIMIT 1`).get(partner, flow) as Listed | undefined;
  }

  async lastAccepted(): Promise<Map<string, string>> {
    const rows = this.db.prepare("SELECT partner, flow, max(decided_at) AS at FROM deliveries WHERE outcome = 'accepted' GROUP BY partner, flow").all() as { partner: string; flow: string; at: string }[];
    return new Map(rows.map((r) => [`${r.partner}/${r.flow}`, r.at]));
  }

  async lateCounts(): Promise<Map<string, number>> {
    const rows = this.db.prepare("SELECT partner, flow, count(*) AS n FROM windows WHERE status = 'late' GROUP BY partner, flow").all() as { partner: string; flow: string; n: number }[];
    return new Map(rows.map((r) => [`${r.partner}/${r.flow}`, r.n]));
  }

  async circuits(): Promise<Map<string, CircuitRow>> {
    if (!this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'remote_state'").get()) return new Map();
    const rows = this.db.prepare('SELECT partner, circuit, updated_at AS updatedAt FROM remote_state').all() as CircuitRow[];
    return new Map(rows.map((r) => [r.partner, r]));
  }
}
