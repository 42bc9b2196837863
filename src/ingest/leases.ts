/**
 * The partners this process works: all of them on a database of its own (SQLite), or those whose lease
 * it holds where several instances share one (PostgreSQL, Store.leases). The keeper ticks every third
 * of the lease time: heartbeat, renewal, taking free or lapsed leases up to a fair share (the daemon)
 * or all it can get (run --once, replay), giving back what is above the share.
 */
import type { Logger } from '../log.js';
import type { Store } from '../store/types.js';
import { classify } from '../errors.js';

export interface LeaseHooks {
  /** a lease was taken: recover the partner's work directory and sweep it */
  gained?: (partner: string) => void;
  lost?: (partner: string) => void;
  /** a partner being swept right now is not given back */
  busy?: (partner: string) => boolean;
}

export class LeaseKeeper {
  private timer?: NodeJS.Timeout;
  private ticking?: Promise<void>;

  constructor(private readonly store: Store, private readonly partners: readonly string[], private readonly mode: 'share' | 'all', private readonly log: Logger, private readonly hooks: LeaseHooks = {}) {}

  holds(partner: string): boolean {
    return this.store.leases ? this.store.leases.holds(partner) : true;
  }

  /** The first tick, then one every third of the lease time. */
  async start(): Promise<void> {
    const leases = this.store.leases;
    if (!leases) return;
    await this.tick();
    this.timer = setInterval(() => void (this.ticking ??= this.tick().finally(() => (this.ticking = undefined))), Math.max(250, Math.floor(leases.ttlMs / 3)));
    this.timer.unref();
  }

  /** Never throws: a tick that fails (the database away) is tried at the next; leases then may lapse. */
  private async tick(): Promise<void> {
    try {
      const { gained, lost } = await this.store.leases!.tick(this.partners, this.mode, this.hooks.busy);
      for (const p of lost) {
        this.log.warn({ partner: p, instance: this.store.leases!.instance }, `lease on partner ${p} lost: another instance works it now`);
        this.hooks.lost?.(p);
      }
      for (const p of gained) {
        this.log.info({ partner: p, instance: this.store.leases!.instance }, `lease on partner ${p} taken`);
        this.hooks.gained?.(p);
      }
    } catch (err) {
      const e = classify(err);
      this.log.warn({ code: e.code, err: e.message }, 'leases could not be renewed; tried again shortly');
    }
  }

  /** Stops ticking and gives every lease back, so another instance takes the partners over at once. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.ticking;
    await this.store.leases?.release().catch((err: unknown) => this.log.warn({ err: classify(err).message }, 'leases could not be given back; they lapse after lease_ttl'));
  }
}
