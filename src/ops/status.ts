/**
 * `inboxd status`: per partner and flow, the last delivery and its outcome, the last sequence applied,
 * the backlog waiting in the inbox, open late windows and the circuit breaker of remote partners; then
 * every rejected delivery in error/ that nobody has dealt with yet.
 */
import { backlog } from './backlog.js';
import type { Config, PartnerConfig } from '../config/config.js';
import { scanInbox } from '../pipeline/discover.js';
import { gapVerdict } from '../pipeline/gap.js';
import type { Listed, Store } from '../store/types.js';
import { ago, table, when } from './table.js';

export interface FlowStatus {
  partner: string;
  flow: string;
  lastDelivery: { id: string; file: string; seq: number | null; outcome: string; code: string | null; receivedAt: string; late: boolean } | null;
  lastSeqApplied: number | null;
  /** X12 flows: the last interchange control number applied (ISA13, nine digits) */
  lastInterchange?: string | null;
  backlog: number;
  /** held by the gap policy (`sequence_gap: wait`): the sequence it waits for, and until when at most */
  held: { waitingFor: number; next: number; until: string } | null;
  lateWindows: { opensAt: string; closesAt: string; lateAt: string | null }[];
  /** the remote partner's circuit breaker ('closed', 'open', 'half-open'); null when not a remote partner or unknown */
  circuit: string | null;
}

export interface Status {
  generatedAt: string;
  flows: FlowStatus[];
  openErrors: { id: string; partner: string; flow: string | null; file: string; seq: number | null; code: string | null; reason: string | null; decidedAt: string }[];
  /** something needs a person: an open error, an open late window, or an open circuit */
  attention: boolean;
  /** where several instances share a PostgreSQL: each one, the partners it holds and since when */
  instances?: { id: string; host: string; pid: number; startedAt: string; heartbeatAt: string; live: boolean; partners: { partner: string; since: string | null }[] }[];
}

export async function status(store: Store, config: Config): Promise<Status> {
  const breaker = await store.audit.circuits();
  const flows: FlowStatus[] = [];
  for (const partner of config.partners) {
    const waiting = await backlog(partner, config.tempPatterns);
    const held = await heldFlows(store, config, partner);
    for (const flow of partner.flows) {
      const last = await store.audit.lastDelivery(partner.id, flow.id);
      const lastSeq = (await store.lastSeq(partner.id, flow.id)) ?? null;
      flows.push({
        partner: partner.id,
        flow: flow.id,
        lastDelivery: last ? { id: last.id, file: last.file, seq: last.seq, outcome: last.outcome, code: last.code, receivedAt: last.receivedAt, late: last.late === 1 } : null,
        lastSeqApplied: lastSeq,
        ...(flow.sequenceFrom === 'interchange' ? { lastInterchange: lastSeq === null ? null : String(lastSeq).padStart(9, '0') } : {}),
        backlog: waiting.get(flow.id) ?? 0,
        held: held.get(flow.id) ?? null,
        lateWindows: (await store.lateWindows(partner.id, flow.id)).map((w) => ({ opensAt: w.opensAt, closesAt: w.closesAt, lateAt: w.lateAt })),
        circuit: breaker.get(partner.id)?.circuit ?? null,
      });
    }
  }
  const openErrors = (await store.audit.openProblems()).map((d: Listed) => ({ id: d.id, partner: d.partner, flow: d.flow, file: d.file, seq: d.seq, code: d.code, reason: d.reason, decidedAt: d.decidedAt }));
  const attention = openErrors.length > 0 || flows.some((f) => f.lateWindows.length > 0 || (f.circuit !== null && f.circuit !== 'closed'));
  return { generatedAt: new Date().toISOString(), flows, openErrors, attention, ...(store.leases ? { instances: await instances(store) } : {}) };
}

async function instances(store: Store): Promise<NonNullable<Status['instances']>> {
  const leases = await store.leases!.leases();
  return (await store.leases!.instances()).map((i) => ({ ...i, partners: leases.filter((l) => l.holder === i.id).map((l) => ({ partner: l.partner, since: l.since })) }));
}

/** Flows whose first ready delivery waits for a missing sequence: what the sweep would do now. */
async function heldFlows(store: Store, config: Config, partner: PartnerConfig): Promise<Map<string, NonNullable<FlowStatus['held']>>> {
  const now = Date.now();
  const scan = await scanInbox(partner.dirs.inbox, { flows: partner.flows, tempPatterns: config.tempPatterns, settleMs: config.settleMs, incompleteAfterMs: config.incompleteAfterMs, now })
    .catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? { ready: [] } : Promise.reject(err)));
  const held = new Map<string, NonNullable<FlowStatus['held']>>();
  for (const flow of partner.flows) {
    const first = scan.ready.find((r) => r.name.flow === flow.id); // ready deliveries come in sequence order
    if (!first) continue;
    const v = gapVerdict(flow, await store.lastSeq(partner.id, flow.id), first.name.seq, first.arrivedMs, now);
    if (v.kind === 'hold') held.set(flow.id, { waitingFor: v.expected, next: first.name.seq, until: new Date(v.untilMs).toISOString() });
  }
  return held;
}

export function formatStatus(s: Status): string {
  const rows = s.flows.map((f) => {
    const d = f.lastDelivery;
    return [
      f.partner, f.flow,
      d ? `${when(d.receivedAt)} (${ago(d.receivedAt)})` : 'none yet',
      d ? `${d.outcome}${d.code ? ` ${d.code}` : ''}${d.late ? ' late' : ''}` : '-',
      d ? d.seq : null,
      f.lastInterchange ? `ISA13 ${f.lastInterchange}` : f.lastSeqApplied,
      f.held ? `${f.backlog} (waits for ${f.held.waitingFor} until ${when(f.held.until)})` : f.backlog,
      f.lateWindows.length,
      f.circuit,
      d?.id,
    ];
  });
  const out = [table(['PARTNER', 'FLOW', 'LAST DELIVERY', 'OUTCOME', 'SEQ', 'LAST SEQ APPLIED', 'BACKLOG', 'LATE WINDOWS', 'CIRCUIT', 'DELIVERY ID'], rows)];
  const late = s.flows.flatMap((f) => f.lateWindows.map((w) => [f.partner, f.flow, when(w.opensAt), when(w.closesAt), when(w.lateAt)]));
  if (late.length) out.push('', `Open late windows (${late.length}): no delivery arrived in them, and none since`, table(['PARTNER', 'FLOW', 'OPENED', 'CLOSED', 'LATE SINCE'], late));
  if (s.openErrors.length) {
    out.push('', `Rejected deliveries in error/ not yet dealt with (${s.openErrors.length}):`);
    out.push(table(['DELIVERY ID', 'PARTNER', 'FLOW', 'SEQ', 'FILE', 'CODE', 'DECIDED'], s.openErrors.map((e) => [e.id, e.partner, e.flow, e.seq, e.file, e.code, when(e.decidedAt)])));
    out.push('Next: inboxd deliveries show ID; after a fix, inboxd replay ID; or inboxd deliveries resolve ID --note "why"');
  } else out.push('', 'No rejected delivery waiting to be dealt with.');
  if (s.instances) {
    out.push('', `Instances (${s.instances.filter((i) => i.live).length} live):`);
    out.push(table(['INSTANCE', 'STARTED', 'HEARTBEAT', 'PARTNERS HELD (SINCE)'], s.instances.map((i) => [
      `${i.id}${i.live ? '' : ' (silent)'}`, when(i.startedAt), ago(i.heartbeatAt), i.partners.map((p) => `${p.partner} (${p.since ? when(p.since) : '?'})`).join(', ') || '-',
    ])));
  }
  return `${out.join('\n')}\n`;
}
