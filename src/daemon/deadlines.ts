/**
 * The deadline keeper: delivery windows per flow ("file@02:00Z daily"). When a window closes without
 * an accepted delivery, a late event is recorded, logged at error level and alerted; an at-risk warning
 * can come a set time before the close. A delivery accepted later is marked late and resolves the alert.
 * A delivery that arrived in time but is not decided yet at the close (settling, or being read) is
 * waited for: the window is judged once it is. Verdicts are stored, so a restart judges windows it
 * missed and never alerts twice.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { FlowConfig, PartnerConfig } from '../config/config.js';
import type { Alert } from '../notify/alert.js';
import { scanInbox } from '../pipeline/discover.js';
import type { Logger } from '../log.js';
import { parseName } from '../pipeline/naming.js';
import type { Store } from '../store/types.js';
import { closedBetween, latestWindow, nextWindow, type Window } from './windows.js';

const MAX_TIMER = 2 ** 31 - 1;
const DAY = 86_400_000;
/** how often a window waiting for a delivery in progress looks again, and for how long at most */
const RECHECK_MS = 1000;
const MAX_WAIT_MS = 30 * 60_000; // then judged all the same: a delivery stuck in the work directory must not silence the alert

export class DeadlineKeeper {
  private timers = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly partners: readonly PartnerConfig[],
    private readonly log: Logger,
    private readonly notify: (alert: Alert) => void,
    private readonly tempPatterns: readonly RegExp[] = [],
  ) {}

  async start(now = new Date()): Promise<void> {
    const since = new Date(Math.max(now.getTime() - DAY, Date.parse(await this.store.createdAt())));
    for (const { flow } of this.windowed()) {
      for (const w of closedBetween(flow.window!, since, now)) this.guard(() => this.judge(flow, w));
      await this.resolveMissed(flow);
      this.plan(flow, now);
    }
  }

  /**
   * A late delivery accepted while no keeper heard of it (committed just before a crash and answered by
   * startup recovery, or accepted while the daemon was down by run --once) resolves its windows now.
   */
  private async resolveMissed(flow: FlowConfig): Promise<void> {
    const [first] = await this.store.lateWindows(flow.partner, flow.id);
    if (!first) return;
    // Accepted after the verdict, whenever it arrived (one that arrived in time may have been waited for too long).
    const later = await this.store.acceptedAfter(flow.partner, flow.id, first.lateAt ?? first.closesAt);
    if (later) await this.accepted(flow.partner, flow.id, later);
  }

  stop(): void {
    this.stopped = true;
    this.timers.forEach(clearTimeout);
    this.timers.clear();
  }

  /** Called for every accepted delivery: a late one resolves its flow's open late windows. */
  async accepted(partner: string, flow: string, deliveryId: string): Promise<void> {
    const resolved = await this.store.resolveLate(partner, flow, deliveryId);
    if (resolved.length === 0) return;
    const windows = resolved.map((w) => ({ opens_at: w.opensAt, closes_at: w.closesAt }));
    this.log.warn({ partner, flow, delivery_id: deliveryId, windows }, 'late delivery arrived: window alert resolved');
    this.notify({ event: 'window.resolved', severity: 'info', partner, flow, delivery_id: deliveryId, windows, message: `the late delivery for ${partner}/${flow} arrived`, at: new Date().toISOString() });
  }

  private *windowed(): Generator<{ partner: PartnerConfig; flow: FlowConfig }> {
    for (const partner of this.partners) for (const flow of partner.flows) if (flow.window) yield { partner, flow };
  }

  /** Timers for the window open now (at-risk, close), or else for the next one to open. */
  private plan(flow: FlowConfig, now: Date): void {
    if (this.stopped) return;
    const spec = flow.window!;
    const current = latestWindow(spec, now);
    const w = current.closesAt > now ? current : nextWindow(spec, now);
    if (spec.atRiskMs !== undefined) {
      const atRisk = new Date(w.closesAt.getTime() - spec.atRiskMs);
      if (atRisk > now) this.at(atRisk, () => this.warnAtRisk(flow, w));
    }
    this.at(w.closesAt, () => {
      this.plan(flow, new Date(Math.max(Date.now(), w.closesAt.getTime() + 1)));
      return this.judge(flow, w);
    });
  }

  private at(when: Date, fn: () => unknown): void {
    const ms = when.getTime() - Date.now();
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.stopped) return;
      if (Date.now() < when.getTime()) this.at(when, fn); // a long wait is done in steps
      else this.guard(fn);
    }, Math.max(0, Math.min(ms, MAX_TIMER)));
    t.unref();
    this.timers.add(t);
  }

  /** `waitingSince`: when the judgment began waiting for a delivery in progress. */
  private async judge(flow: FlowConfig, w: Window, waitingSince?: number): Promise<void> {
    const [opens, closes] = [w.opensAt.toISOString(), w.closesAt.toISOString()];
    const since = waitingSince ?? Date.now();
    let ok = await this.store.acceptedBetween(flow.partner, flow.id, opens, closes);
    if (!ok && !this.stopped && Date.now() - since < MAX_WAIT_MS && (await this.inProgress(flow, w.opensAt, w.closesAt))) {
      if (this.stopped) return;
      if (waitingSince === undefined) this.log.info({ partner: flow.partner, flow: flow.id, opens_at: opens, closes_at: closes }, 'window closed with a delivery in progress: judged once it is decided');
      this.at(new Date(Date.now() + RECHECK_MS), () => this.judge(flow, w, since));
      return;
    }
    if (this.stopped) return; // the store may be closed: the next start judges it
    ok ||= await this.store.acceptedBetween(flow.partner, flow.id, opens, closes); // decided while we looked
    if ((await this.store.judgeWindow(flow.partner, flow.id, opens, closes, ok ? 'ok' : 'late')) && !ok) await this.alertLate(flow, opens, closes);
  }

  private async alertLate(flow: FlowConfig, opens: string, closes: string): Promise<void> {
    const message = `no complete delivery for ${flow.partner}/${flow.id} in its window ${opens} - ${closes}`;
    this.log.error({ partner: flow.partner, flow: flow.id, opens_at: opens, closes_at: closes, event: 'window.late' }, message);
    this.notify({ event: 'window.late', severity: 'critical', partner: flow.partner, flow: flow.id, opens_at: opens, closes_at: closes, message, at: new Date().toISOString() });
    await this.resolveMissed(flow); // one that arrived after the close may have been accepted while we waited
  }

  /**
   * A delivery of the flow that arrived within [from, to] and is not decided yet: complete in the inbox
   * (settling, or waiting its turn), or taken and being read now. A directory that cannot be read
   * counts as nothing in progress: the window is judged rather than left waiting.
   */
  private async inProgress(flow: FlowConfig, from: Date, to: Date): Promise<boolean> {
    const partner = this.partners.find((p) => p.id === flow.partner);
    if (!partner) return false;
    const within = (ms: number) => ms >= from.getTime() && ms <= to.getTime();
    try {
      const scan = await scanInbox(partner.dirs.inbox, { flows: partner.flows, tempPatterns: this.tempPatterns, settleMs: 0, incompleteAfterMs: Infinity, now: Date.now() });
      if (scan.ready.some((r) => r.name.flow === flow.id && within(r.arrivedMs))) return true;
      for (const claimed of await fsp.readdir(partner.dirs.work, { withFileTypes: true })) {
        const id = claimed.name;
        if (!claimed.isDirectory() || (await this.store.delivery(id))) continue;
        const files = await fsp.readdir(join(partner.dirs.work, id)).catch(() => []);
        if (!files.some((f) => parseName(f, partner.flows)?.flow === flow.id)) continue;
        const arrived = await this.store.receivedAt(id); // recorded at the claim; none for a replay's copies
        if (arrived && within(Date.parse(arrived))) return true;
      }
    } catch (err) {
      this.log.warn({ err, partner: flow.partner, flow: flow.id }, 'could not look for a delivery in progress; judging the window as it is');
    }
    return false;
  }

  private async warnAtRisk(flow: FlowConfig, w: Window): Promise<void> {
    const [opens, closes] = [w.opensAt.toISOString(), w.closesAt.toISOString()];
    const now = new Date();
    if ((await this.store.acceptedBetween(flow.partner, flow.id, opens, now.toISOString())) || (await this.inProgress(flow, w.opensAt, now)) || this.stopped) return;
    if (!(await this.store.markAtRisk(flow.partner, flow.id, opens, closes))) return;
    const message = `nothing received yet for ${flow.partner}/${flow.id}; its window closes at ${closes}`;
    this.log.warn({ partner: flow.partner, flow: flow.id, opens_at: opens, closes_at: closes, event: 'window.at_risk' }, message);
    this.notify({ event: 'window.at_risk', severity: 'warning', partner: flow.partner, flow: flow.id, opens_at: opens, closes_at: closes, message, at: new Date().toISOString() });
  }

  private guard(fn: () => unknown): void {
    const failed = (err: unknown) => this.log.error({ err }, 'deadline keeper failed; it goes on');
    try {
      Promise.resolve(fn()).catch(failed);
    } catch (err) {
      failed(err);
    }
  }
}
