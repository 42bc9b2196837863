/**
 * `inboxd deliveries list` and `inboxd deliveries show ID`: what arrived and what became of it. The
 * detail view answers "what happened to this file": its timeline from the audit trail, its checksum,
 * where its files are now, the control totals expected and found, and the report the partner got.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { evidenceOf, reportOf } from './audit.js';
import type { Config } from '../config/config.js';
import { InboxdError } from '../errors.js';
import { parseExact } from '../json.js';
import type { AuditEvent, DeliveryRecord, Listed, Resolution, Store } from '../store/types.js';
import { table, when } from './table.js';

export type Summary = Omit<DeliveryRecord, 'plan' | 'totals'> & { late: boolean };

export function summary(d: Listed): Summary {
  const { plan: _plan, totals: _totals, ...rest } = d;
  return { ...rest, late: d.late === 1 };
}

export function formatList(rows: readonly Listed[]): string {
  if (rows.length === 0) return 'No deliveries match.\n';
  const body = rows.map((d) => [d.id, when(d.receivedAt), d.partner, d.flow, d.seq, d.file, `${d.outcome}${d.late ? ' (late)' : ''}${d.replayOf ? ' (replay)' : ''}`, d.code, d.records]);
  return `${table(['DELIVERY ID', 'RECEIVED', 'PARTNER', 'FLOW', 'SEQ', 'FILE', 'OUTCOME', 'CODE', 'ROWS'], body)}\n`;
}

export interface Detail {
  delivery: Summary;
  timeline: AuditEvent[];
  files: { name: string; path: string; present: boolean; size: number | null }[];
  totals: { expected: Totals | null; found: Totals } | null;
  report: Record<string, unknown> | null;
  replays: Pick<DeliveryRecord, 'id' | 'outcome' | 'code' | 'decidedAt'>[];
  resolution: Resolution | null;
  /** amount columns' scales: found sums are in minor units */
  scales: Record<string, number>;
}

interface Totals {
  records: number;
  sums: Record<string, number | bigint | string | null>;
}

export async function detail(store: Store, config: Config, id: string): Promise<Detail> {
  const d = await store.audit.get(id);
  if (!d) throw new InboxdError('UNKNOWN_DELIVERY', `no delivery ${id} (see inboxd deliveries list)`);
  const partner = config.partners.find((p) => p.id === d.partner);
  const dirs = partner?.dirs;
  const fields = partner?.flows.find((f) => f.id === d.flow)?.fields ?? [];
  const files = await Promise.all(evidenceOf(d).map(async (f) => {
    const path = dirs ? join(dirs[f.dir], f.stored) : `${f.dir}/${f.stored}`;
    const st = await fsp.lstat(path).catch(() => undefined);
    return { name: f.name, path, present: !!st, size: st?.size ?? null };
  }));
  return {
    delivery: summary(d),
    timeline: await store.audit.timeline(id),
    files,
    totals: d.totals ? (parseExact(d.totals) as Detail['totals']) : null,
    report: reportOf(d) ?? null,
    replays: await store.audit.replaysOf(id),
    resolution: (await store.audit.resolutionOf(d)) ?? null,
    scales: Object.fromEntries(fields.filter((f) => f.type === 'amount').map((f) => [f.ours, f.scale ?? 2])),
  };
}

/** Minor units as the decimal amount, exactly: 1250 at scale 2 is 12.50. */
export function decimal(minor: bigint, scale: number): string {
  const digits = `${minor < 0n ? -minor : minor}`.padStart(scale + 1, '0');
  return `${minor < 0n ? '-' : ''}${scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits}`;
}

export function formatDetail(x: Detail): string {
  const d = x.delivery;
  const out: string[] = [];
  const line = (k: string, v: string | number | bigint | boolean | null | undefined) => out.push(`${k.padEnd(12)}${v === null || v === undefined || v === '' ? '-' : String(v)}`);
  line('delivery', d.id);
  line('partner', `${d.partner}${d.flow ? ` / ${d.flow}` : ''}`);
  line('file', `${d.file}${d.seq !== null ? `  (sequence ${d.seq})` : ''}`);
  line('outcome', `${d.outcome}${d.code ? ` ${d.code}` : ''}${d.late ? ' (late)' : ''}`);
  if (d.reason) line('reason', d.reason);
  line('received', when(d.receivedAt));
  line('decided', when(d.decidedAt));
  line('answered', d.answeredAt ? when(d.answeredAt) : 'not yet: recovery finishes it at the next start');
  line('sha256', d.sha256 ?? 'not computed (rejected before the file was read)');
  if (d.records !== null) line('rows', `${d.records} read${d.badRows ? `, ${d.badRows} invalid` : ''}`);
  if (d.replayOf) line('replay of', `${d.replayOf}  (inboxd deliveries show ${d.replayOf})`);
  for (const r of x.replays) line('replayed as', `${r.id}: ${r.outcome}${r.code ? ` ${r.code}` : ''} at ${when(r.decidedAt)}`);
  if (x.resolution) line('resolved', `${when(x.resolution.at)}${x.resolution.byDelivery ? ` by ${x.resolution.byDelivery}` : ''}${x.resolution.note ? `: ${x.resolution.note}` : ''}`);
  else if (d.outcome === 'rejected' && !d.replayOf) line('resolved', 'no: inboxd replay ID after a fix, or inboxd deliveries resolve ID --note "why"');
  if (x.files.length) {
    out.push('', 'Files');
    out.push(table(['NAME', 'WHERE', 'BYTES', 'PRESENT'], x.files.map((f) => [f.name, f.path, f.size, f.present ? 'yes' : 'no (removed or pruned)']), 120));
  }
  if (x.totals) {
    const t = x.totals;
    const columns = [...new Set([...Object.keys(t.expected?.sums ?? {}), ...Object.keys(t.found.sums)])];
    out.push('', 'Control totals');
    const found = (c: string) => {
      const v = t.found.sums[c];
      const scale = x.scales[c];
      return v === null || v === undefined ? 'unreadable' : scale === undefined ? v : decimal(BigInt(v), scale);
    };
    out.push(table(['TOTALS', 'RECORDS', ...columns.map((c) => `SUM ${c}`)], [
      ['expected (manifest)', t.expected?.records ?? 'no manifest', ...columns.map((c) => t.expected?.sums[c])],
      ['found', t.found.records, ...columns.map(found)],
    ]));
  }
  out.push('', 'Timeline');
  out.push(table(['AT', 'STEP', 'DETAIL'], x.timeline.map((e) => [when(e.at), e.step, e.detail]), 160));
  if (x.report) {
    const r = x.report as { status?: string; code?: string; reason?: string; errors?: { line: number; column: string; reason: string }[]; error_count?: number };
    out.push('', `Report (${r.status ?? '-'})`);
    if (r.code) out.push(`${r.code}: ${r.reason ?? ''}`);
    if (r.errors?.length) {
      out.push(table(['LINE', 'COLUMN', 'PROBLEM'], r.errors.slice(0, 50).map((e) => [e.line, e.column, e.reason]), 120));
      if ((r.error_count ?? r.errors.length) > 50) out.push(`… ${(r.error_count ?? r.errors.length) - 50} more (--json shows those stored)`);
    }
  }
  return `${out.join('\n')}\n`;
}

/** `deliveries resolve`: a rejected delivery marked dealt with; false when it already was. `actor`: who, for the audit trail. */
export async function resolveDelivery(store: Store, id: string, note: string, actor = 'an operator'): Promise<boolean> {
  const rec = await store.delivery(id);
  if (!rec) throw new InboxdError('UNKNOWN_DELIVERY', `no delivery ${id} (see inboxd deliveries list)`);
  if (rec.outcome !== 'rejected') throw new InboxdError('USAGE', `${id} was ${rec.outcome}; only a rejected delivery needs resolving`);
  return await store.resolve(id, null, `resolved by ${actor}: ${note}`);
}
