/**
 * One pass over every partner: finish interrupted work (startup.ts), then take every ready delivery.
 * `inboxd run --once` is exactly this; the daemon runs the sweep of one partner on events and on a schedule.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { type Alert, sendLogged } from '../notify/alert.js';
import { notifyAll } from '../notify/notify.js';
import type { DeliveryRecord } from '../store/types.js';
import { fingerprint } from '../store/fingerprint.js';
import type { Config, FlowConfig } from '../config/config.js';
import { type DeliveryContext, handleReady, handleStale, logFailure, type Result } from './delivery.js';
import { type ReadyDelivery, type RenamedIn, type Scan, scanInbox, type Waiting } from '../pipeline/discover.js';
import { gapVerdict } from '../pipeline/gap.js';
import { type DirProblem, partnerDirProblem } from './layout.js';
import type { Logger } from '../log.js';
import type { ParsedName } from '../pipeline/naming.js';
import { Releasers } from '../releasers.js';
import { deliveryRetry } from '../retry.js';
import { openAll, recover } from './startup.js';
import { LeaseKeeper } from './leases.js';

export interface Tally {
  accepted: number;
  rejected: number;
  duplicate: number;
  retry: number;
  waiting: number;
}

export interface SweepHooks {
  /** a sequence gap that is no longer waited for */
  gap?: (flow: FlowConfig, expected: number, got: number) => void;
  accepted?: (flow: FlowConfig, deliveryId: string) => unknown;
  /** true once the daemon is stopping: no further delivery is taken */
  stopped?: () => boolean;
  /** a partner directory is no real directory (a symbolic link, or gone): the partner was left out of this sweep */
  refused?: (problem: DirProblem) => void;
  /** every delivery left waiting by this sweep, with why (called again at every sweep while it waits) */
  waiting?: (w: Waiting) => void;
  /** a delivery decided and answered (accepted, rejected, duplicate): for the notify actions */
  decided?: (rec: DeliveryRecord) => void;
  /** what the inbox held: the daemon skips scheduled sweeps of a partner found empty while its tree is unchanged (daemon/quiet.ts) */
  scanned?: (scan: Scan) => void;
}

/**
 * Processes what is ready in one partner's inbox, in sequence order per flow. It never throws: a failure
 * is this partner's or one delivery's, logged and counted as a retry, and the rest goes on. Returns when
 * something left waiting can have changed (Date.now() ms: a file settled or overdue, a gap waited out, a
 * retry's backoff over), or undefined when nothing waits. `renamedIn`: files the daemon's watcher saw
 * renamed in from a temporary name, taken without their settle time (pipeline/discover.ts).
 */
export async function sweepPartner(base: DeliveryContext, config: Config, tally: Tally, hooks: SweepHooks = {}, renamedIn?: ReadonlyMap<string, RenamedIn>): Promise<number | undefined> {
  const ctx: DeliveryContext = { ...base, retry: deliveryRetry(config.maxAttempts, config.retryBackoffMs) };
  const { partner } = ctx;
  let scan: Scan;
  try {
    // A directory replaced by a link would have us take, answer and archive files wherever it points.
    const wrong = partnerDirProblem(partner);
    if (wrong) {
      ctx.log.error({ partner: partner.id, dir: wrong.dir, event: 'partner.refused' }, `partner ${partner.id} left out of this sweep: ${wrong.reason}`);
      hooks.refused?.(wrong);
      return undefined;
    }
    scan = await scanInbox(partner.dirs.inbox, {
      flows: partner.flows, tempPatterns: config.tempPatterns, settleMs: config.settleMs, incompleteAfterMs: config.incompleteAfterMs, now: Date.now(), renamedIn,
    });
  } catch (err) {
    logFailure(ctx.log.child({ partner: partner.id }), err, 'the inbox could not be listed; tried again later');
    tally.retry++;
    return Date.now() + config.retryBackoffMs;
  }
  hooks.scanned?.(scan);
  tally.waiting += scan.waiting;
  scan.waits.forEach((w) => hooks.waiting?.(w));
  let due = scan.dueMs;
  for (const stale of scan.stale) {
    if (hooks.stopped?.()) return due;
    const r = await guarded(ctx, stale, () => handleStale(ctx, stale));
    count(tally, r, hooks);
    if (r.status === 'retry') due = soonest(due, r.retryAt);
  }
  const held = new Set<string>();
  for (const ready of scan.ready) {
    if (hooks.stopped?.()) return due;
    const flow = partner.flows.find((f) => f.id === ready.name.flow)!;
    const wait = held.has(flow.id) ? behind(ready) : await notYet(ctx, flow, ready, hooks);
    let r: Result | undefined;
    if (wait) {
      tally[wait.as]++;
      hooks.waiting?.(wait);
      due = soonest(due, wait.untilMs);
    } else {
      r = await guarded(ctx, ready, () => handleReady(ctx, ready));
      count(tally, r, hooks);
      if (r.status === 'accepted') await hooks.accepted?.(flow, r.record.id);
      if (r.status === 'retry') due = soonest(due, r.retryAt);
    }
    // Later sequences of a flow wait behind one not applied: taken first, they would put it out of order.
    // One committed, only its answer owed, is applied.
    if ((wait || (r?.status === 'retry' && !r.record)) && flow.sequenceGap !== 'ignore') held.add(flow.id);
  }
  return due;
}

/** The earlier of two times, either of which may be unknown. */
export const soonest = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined ? b : b === undefined ? a : Math.min(a, b));

type NotYet = Waiting & { as: 'retry' | 'waiting' };

const behind = (ready: ReadyDelivery): NotYet => ({ as: 'waiting', file: ready.file, reason: 'behind', waitsFor: `an earlier delivery of flow ${ready.name.flow}` });

/** Why a ready delivery is not taken now, and until when: its backoff after a failure of ours, or a sequence gap. */
async function notYet(ctx: DeliveryContext, flow: FlowConfig, ready: ReadyDelivery, hooks: SweepHooks): Promise<NotYet | undefined> {
  const backoff = await backoffUntil(ctx, ready);
  if (backoff !== undefined) return { as: 'retry', file: ready.file, reason: 'backoff', waitsFor: 'its retry after a failure of ours (retry_backoff)', untilMs: backoff };
  const gap = await gapUntil(ctx, flow, ready, hooks);
  return gap && { as: 'waiting', file: ready.file, reason: 'gap', waitsFor: `sequence ${gap.expected} of flow ${flow.id} (gap_wait)`, untilMs: gap.untilMs };
}

/** A delivery's failure that escaped it (its claim, say): logged naming it, to be tried again. */
async function guarded(ctx: DeliveryContext, item: { file: string; name?: ParsedName }, handle: () => Promise<Result>): Promise<Result> {
  try {
    return await handle();
  } catch (err) {
    const log = ctx.log.child({ partner: ctx.partner.id, flow: item.name?.flow ?? null, file: item.file, seq: item.name?.seq ?? null });
    return { status: 'retry', error: logFailure(log, err, 'delivery failed; tried again later'), retryAt: Date.now() + (ctx.retry?.baseMs ?? 0) };
  }
}

/**
 * A delivery that failed for a reason of ours waits out its backoff (store/sqlite/attempts.ts): returns until when,
 * or undefined when it may be taken now. Another file under its name (a new upload) is not held back.
 */
async function backoffUntil(ctx: DeliveryContext, ready: ReadyDelivery): Promise<number | undefined> {
  const failed = await ctx.store.attempts.get(ctx.partner.id, ready.file);
  if (!failed || failed.nextAt <= Date.now()) return undefined;
  const print = await fingerprint(ctx.partner.dirs.inbox, ready.files).catch(() => undefined);
  return print === failed.fingerprint ? failed.nextAt : undefined;
}

/**
 * A sequence gap (002 ready, 001 never came): `wait` holds the flow until the missing file arrives or
 * gap_wait has passed since the later file arrived, then reports the gap and goes on; `warn` reports
 * and goes on at once; `ignore` does neither. Returns which sequence the flow is held for and until when, or undefined: go.
 */
async function gapUntil(ctx: DeliveryContext, flow: FlowConfig, ready: ReadyDelivery, hooks: SweepHooks): Promise<{ expected: number; untilMs: number } | undefined> {
  const verdict = gapVerdict(flow, await ctx.store.lastSeq(flow.partner, flow.id), ready.name.seq, ready.arrivedMs, Date.now());
  if (verdict.kind === 'go') return undefined;
  if (verdict.kind === 'hold') return verdict;
  const { expected } = verdict;
  ctx.log.warn({ partner: flow.partner, flow: flow.id, expected, seq: ready.name.seq, file: ready.file, event: 'sequence.gap' }, `sequence gap: expected ${expected}, got ${ready.name.seq}; going on`);
  hooks.gap?.(flow, expected, ready.name.seq);
  return undefined;
}

function count(tally: Tally, r: Result, hooks: SweepHooks): void {
  if (r.status !== 'skipped') tally[r.status]++;
  if (r.status === 'accepted' || r.status === 'rejected' || r.status === 'duplicate') hooks.decided?.(r.record);
}

/** A delivery left waiting, for the log and `run --once`'s summary. */
export type Wait = Waiting & { partner: string };

/** A wait as log fields. */
export function waitFields(w: Wait): { partner: string; file: string; reason: Wait['reason']; waits_for: string; until: string | null } {
  return { partner: w.partner, file: w.file, reason: w.reason, waits_for: w.waitsFor, until: w.untilMs === undefined ? null : new Date(w.untilMs).toISOString() };
}

/** A wait in words: `acme/orders_001.csv waits for ... until ...`. */
export function waitLine(w: Wait): string {
  const { until } = waitFields(w);
  return `${w.partner}/${w.file} waits for ${w.waitsFor}${until ? ` until ${until}` : ''}`;
}

/** Logs that a delivery waits: the daemon once per partner, file and reason; `run --once` once. */
export function logWaiting(log: Logger, w: Wait): void {
  log.info({ ...waitFields(w), event: 'delivery.waiting' }, waitLine(w));
}

export async function runOnce(config: Config, log: Logger, waits: Wait[] = []): Promise<Tally> {
  const held = new Releasers();
  const tally: Tally = { accepted: 0, rejected: 0, duplicate: 0, retry: 0, waiting: 0 };
  // A delivery given up on is alerted (delivery.failed), each outcome notified; the run waits for both before it ends.
  const alerts: Promise<void>[] = [];
  const alert = config.alert && ((a: Alert) => void alerts.push(sendLogged(config.alert!, a, log)));
  const decided = (rec: DeliveryRecord) => void alerts.push(...notifyAll(config.notify, rec, log));
  try {
    const { keyring, store } = await openAll(config, log, held);
    // With instances sharing a PostgreSQL, this run works the partners no live instance holds.
    const leases = new LeaseKeeper(store, config.partners.map((p) => p.id), 'all', log);
    held.add('leases', () => leases.stop());
    await leases.start();
    const mine = config.partners.filter((p) => leases.holds(p.id));
    for (const p of config.partners) if (!mine.includes(p)) log.info({ partner: p.id }, `partner ${p.id} is worked by another instance: not swept by this run`);
    let putBack = 0;
    for (const partner of mine) putBack += await recover(store, partner, log, tally);
    // A delivery put back has just changed in the inbox, as if just uploaded: this run still takes it.
    if (putBack > 0) await sleep(config.settleMs);
    for (const partner of mine) await sweepPartner({ store, log, partner, keyring, alert }, config, tally, { decided, waiting: (w) => waits.push({ ...w, partner: partner.id }) });
    waits.forEach((w) => logWaiting(log, w));
  } finally {
    await Promise.all(alerts);
    await held.releaseAll((resource, err) => log.error({ err, resource }, 'release failed'));
  }
  return tally;
}
