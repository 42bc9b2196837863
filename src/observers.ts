/**
 * Observers (metrics, listeners) see what the core did and can never hurt it: they are called through
 * `safeEmit`, which logs their failures and swallows them (graphile-worker's safeEmit).
 */
import type { Logger } from './log.js';
import type { DeliveryRecord } from './store/types.js';

export interface DeliveryObserver {
  /** a delivery was decided and answered; `seconds` from claim to answer */
  delivered(rec: DeliveryRecord, seconds: number): void;
}

export function safeEmit(log: Logger, what: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    try {
      log.warn({ err: String(err), observer: what }, 'observer failed; ignored');
    } catch {
      // the logger itself failed: nothing more to do
    }
  }
}
