/**
 * Delivery windows as time arithmetic: a window opens on its cron expression (in its time zone) and
 * lasts its duration. Pure: the daemon's deadline keeper decides what to do at these instants.
 */
import { CronExpressionParser } from 'cron-parser';
import type { WindowSpec } from '../config/config.js';

export interface Window {
  opensAt: Date;
  closesAt: Date;
}

function windowAt(spec: WindowSpec, opensAt: Date): Window {
  return { opensAt, closesAt: new Date(opensAt.getTime() + spec.durationMs) };
}

/** The most recent window that opened at or before `now` (it may be open still, or closed). */
export function latestWindow(spec: WindowSpec, now: Date): Window {
  // cron-parser's prev() is strictly before currentDate: step one millisecond past now.
  const it = CronExpressionParser.parse(spec.cron, { currentDate: new Date(now.getTime() + 1), tz: spec.timezone });
  return windowAt(spec, it.prev().toDate());
}

export function nextWindow(spec: WindowSpec, now: Date): Window {
  const it = CronExpressionParser.parse(spec.cron, { currentDate: now, tz: spec.timezone });
  return windowAt(spec, it.next().toDate());
}

/** Windows whose close lies in (since, now]: the ones to judge after a restart, oldest first. */
export function closedBetween(spec: WindowSpec, since: Date, now: Date, max = 10): Window[] {
  const out: Window[] = [];
  const it = CronExpressionParser.parse(spec.cron, { currentDate: new Date(now.getTime() - spec.durationMs + 1), tz: spec.timezone });
  while (out.length < max) {
    let w: Window;
    try {
      w = windowAt(spec, it.prev().toDate());
    } catch {
      break;
    }
    if (w.closesAt.getTime() <= since.getTime()) break;
    out.push(w);
  }
  return out.reverse();
}
