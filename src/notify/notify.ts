/**
 * Notifications: each delivery's outcome (`delivery.accepted`, `delivery.rejected`, `delivery.duplicate`)
 * told to the `notify` actions that want it (their `events` and `partners`), through the same command
 * or HTTP POST as alerts, retried the same way. Sent in the background: never blocking a delivery.
 */
import type { NotifyAction, NotifyEvent } from '../config/config.js';
import type { Logger } from '../log.js';
import type { DeliveryRecord } from '../store/types.js';
import { sendLogged } from './alert.js';

export interface Notification {
  event: NotifyEvent;
  partner: string;
  flow: string | null;
  file: string;
  sequence: number | null;
  delivery_id: string;
  /** the error code of a rejection or duplicate; null when accepted */
  code: string | null;
  reason: string | null;
  records: number | null;
  rows_rejected: number | null;
  message: string;
  at: string;
  [key: string]: unknown;
}

export function notification(rec: DeliveryRecord): Notification {
  const what = rec.outcome === 'accepted' ? `accepted (${rec.records ?? 0} records)` : `${rec.outcome}: ${rec.reason ?? rec.code}`;
  return {
    event: `delivery.${rec.outcome}`, partner: rec.partner, flow: rec.flow, file: rec.file, sequence: rec.seq, delivery_id: rec.id,
    code: rec.code, reason: rec.reason, records: rec.records, rows_rejected: rec.badRows,
    message: `${rec.partner}/${rec.flow ?? '-'}: ${rec.file} ${what}`, at: rec.decidedAt,
  };
}

const wants = (a: NotifyAction, n: Notification) => (!a.events || a.events.includes(n.event)) && (!a.partners || a.partners.includes(n.partner));

/** Starts sending `rec`'s outcome to every action that wants it; the promises never reject. */
export function notifyAll(actions: readonly NotifyAction[], rec: DeliveryRecord, log: Logger, signal?: AbortSignal): Promise<void>[] {
  const n = notification(rec);
  return actions.filter((a) => wants(a, n)).map((a) => sendLogged(a, n, log, signal, 'notification'));
}
