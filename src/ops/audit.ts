/**
 * The audit trail's read side: what the operations commands and the metrics ask of the database.
 * Writes stay in store.ts (and pruning in prune.ts); nothing here changes a row.
 */
import type { AnswerPlan } from '../pipeline/answer.js';
import type { DeliveryRecord, Outcome, Store } from '../store/sqlite/store.js';

export interface AuditEvent {
  at: string;
  step: string;
  detail: string | null;
}

export interface Resolution {
  at: string;
  /** the replay that resolved it, when one did */
  byDelivery: string | null;
  note: string | null;
}

/** Filters of `inboxd deliveries list`. `open`: rejected and not dealt with; `late`, `replay`: flags. */
export interface DeliveryFilter {
  partner?: string;
  flow?: string;
  outcome?: Outcome | 'open' | 'late' | 'replay';
  /** received at or after / before (ISO-8601) */
  since?: string;
  until?: string;
  limit?: number;
}

export const OUTCOME_FILTERS = ['accepted', 'rejected', 'duplicate', 'open', 'late', 'replay'] as const;

const COLUMNS = `id, partner, flow, file, seq, file_time AS fileTime, sha256, size, outcome, code, reason, records, bad_rows AS badRows,
  totals, received_at AS receivedAt, decided_at AS decidedAt, answered_at AS answeredAt, plan, replay_of AS replayOf, late`;

/**
 * A rejected delivery still needing someone: not resolved (a successful replay or an operator's
 * `deliveries resolve`), not superseded by a later accepted delivery of the same sequence (the partner
 * sent it again, corrected), and not itself a replay (its original stands for the problem).
 */
const OPEN = `d.outcome = 'rejected' AND d.replay_of IS NULL
  AND NOT EXISTS (SELECT 1 FROM resolutions r WHERE r.delivery_id = d.id)
  AND NOT EXISTS (SELECT 1 FROM deliveries a WHERE a.partner = d.partner AND a.flow = d.flow AND a.seq = d.seq AND a.outcome = 'accepted' AND a.decided_at > d.decided_at)`;

export type Listed = DeliveryRecord & { late: number };

export function listDeliveries(store: Store, f: DeliveryFilter = {}): Listed[] {
  const where = ['(@partner IS NULL OR d.partner = @partner)', '(@flow IS NULL OR d.flow = @flow)', '(@since IS NULL OR d.received_at >= @since)', '(@until IS NULL OR d.received_at < @until)'];
  if (f.outcome === 'open') where.push(OPEN);
  else if (f.outcome === 'late') where.push('d.late = 1');
  else if (f.outcome === 'replay') where.push('d.replay_of IS NOT NULL');
  else if (f.outcome) where.push('d.outcome = @outcome');
  return store.db.prepare(`SELECT ${COLUMNS} FROM deliveries d WHERE ${where.join(' AND ')} ORDER BY d.received_at DESC, d.id DESC LIMIT @limit`).all({
    partner: f.partner ?? null, flow: f.flow ?? null, since: f.since ?? null, until: f.until ?? null, outcome: f.outcome ?? null, limit: f.limit ?? 50,
  }) as Listed[];
}

export function openProblems(store: Store): Listed[] {
  return store.db.prepare(`SELECT ${COLUMNS} FROM deliveries d WHERE ${OPEN} ORDER BY d.decided_at`).all() as Listed[];
}

export function getDelivery(store: Store, id: string): Listed | undefined {
  return store.db.prepare(`SELECT ${COLUMNS} FROM deliveries d WHERE id = ?`).get(id) as Listed | undefined;
}

export function timeline(store: Store, id: string): AuditEvent[] {
  return store.db.prepare('SELECT at, step, detail FROM events WHERE delivery_id = ? ORDER BY id').all(id) as AuditEvent[];
}

export function replaysOf(store: Store, id: string): Pick<DeliveryRecord, 'id' | 'outcome' | 'code' | 'decidedAt'>[] {
  return store.db.prepare('SELECT id, outcome, code, decided_at AS decidedAt FROM deliveries WHERE replay_of = ? ORDER BY decided_at').all(id) as Pick<DeliveryRecord, 'id' | 'outcome' | 'code' | 'decidedAt'>[];
}

/** How a rejected delivery was dealt with: recorded, or implied by a later accepted copy of its sequence. */
export function resolutionOf(store: Store, rec: DeliveryRecord): Resolution | undefined {
  if (rec.outcome !== 'rejected') return undefined;
  const r = store.db.prepare('SELECT resolved_at AS at, by_delivery AS byDelivery, note FROM resolutions WHERE delivery_id = ?').get(rec.id) as Resolution | undefined;
  if (r) return r;
  const later = store.db.prepare("SELECT id, decided_at AS at FROM deliveries WHERE partner = ? AND flow = ? AND seq = ? AND outcome = 'accepted' AND decided_at > ? ORDER BY decided_at LIMIT 1")
    .get(rec.partner, rec.flow, rec.seq, rec.decidedAt) as { id: string; at: string } | undefined;
  return later && { at: later.at, byDelivery: later.id, note: 'the sequence was accepted later' };
}

export function lastDelivery(store: Store, partner: string, flow: string): Listed | undefined {
  return store.db.prepare(`SELECT ${COLUMNS} FROM deliveries d WHERE partner = ? AND flow = ? ORDER BY decided_at DESC, id DESC LIMIT 1`).get(partner, flow) as Listed | undefined;
}

/** partner/flow -> when its last accepted delivery was decided. */
export function lastAccepted(store: Store): Map<string, string> {
  const rows = store.db.prepare("SELECT partner, flow, max(decided_at) AS at FROM deliveries WHERE outcome = 'accepted' GROUP BY partner, flow").all() as { partner: string; flow: string; at: string }[];
  return new Map(rows.map((r) => [`${r.partner}/${r.flow}`, r.at]));
}

/** partner/flow -> open late windows (closed with no delivery, none arrived since). */
export function lateCounts(store: Store): Map<string, number> {
  const rows = store.db.prepare("SELECT partner, flow, count(*) AS n FROM windows WHERE status = 'late' GROUP BY partner, flow").all() as { partner: string; flow: string; n: number }[];
  return new Map(rows.map((r) => [`${r.partner}/${r.flow}`, r.n]));
}

export interface CircuitRow {
  partner: string;
  circuit: string;
  updatedAt: string;
}

/** Circuit breaker states of remote partners, when the remote link keeps them (remote_state). */
export function circuits(store: Store): Map<string, CircuitRow> {
  if (!store.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'remote_state'").get()) return new Map();
  const rows = store.db.prepare('SELECT partner, circuit, updated_at AS updatedAt FROM remote_state').all() as CircuitRow[];
  return new Map(rows.map((r) => [r.partner, r]));
}

export interface EvidenceFile {
  /** the name it was delivered under */
  name: string;
  dir: 'archive' | 'error';
  /** the name it has there (suffixed with the delivery id when the name was taken) */
  stored: string;
}

/** Where a delivery's files were put, as its committed plan says; [] for a replay that kept none. */
export function evidenceOf(rec: DeliveryRecord): EvidenceFile[] {
  return (JSON.parse(rec.plan) as AnswerPlan).moves.map((m) => ({ name: m.from, dir: m.dir, stored: m.to }));
}

/** The report the partner got (error report or ACK), or the one kept for a replay. */
export function reportOf(rec: DeliveryRecord): Record<string, unknown> | undefined {
  const plan = JSON.parse(rec.plan) as AnswerPlan;
  const text = plan.writes.find((w) => w.name.endsWith('.error.json'))?.content ?? plan.report ?? plan.writes.find((w) => w.name.endsWith('.ack.json'))?.content;
  return text === undefined ? undefined : (JSON.parse(text) as Record<string, unknown>);
}

/** The line errors' CSV the partner got (`<file>.errors.csv` in error/ or outbox/), when there was one. */
export function errorsCsvOf(rec: DeliveryRecord): { name: string; content: string } | undefined {
  return (JSON.parse(rec.plan) as AnswerPlan).writes.find((w) => w.name.endsWith('.errors.csv'));
}
