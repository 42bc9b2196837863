/**
 * Several inboxd instances on one PostgreSQL and one partner root: a lease row per partner, held by
 * one instance at a time, with an expiry its holder renews (every third of `lease_ttl`). Lease rows,
 * not advisory locks: a session's advisory lock does not survive a connection pooler in transaction
 * mode, and a transaction-scoped one cannot be held across the minutes a delivery takes; a row with an
 * expiry and an epoch works through any pooler and says who holds what, and since when.
 *
 * - Taking: `FOR UPDATE SKIP LOCKED` over free or expired leases, up to a fair share (the configured
 *   partners over the live instances, rounded up), so work spreads and two instances never wait on
 *   each other. Taking bumps the epoch.
 * - Fencing: a commit locks its partner's lease row `FOR SHARE` and checks holder, epoch and expiry
 *   (fence(), in the commit's transaction). An instance that lost its lease while paused cannot commit;
 *   and while a commit holds the row, no other instance can take the lease (its SKIP LOCKED skips it),
 *   so a takeover's recovery never runs beside a commit in flight. The dedupe key stays the last line.
 * - Dying: a killed instance's leases expire after `lease_ttl`; a stopped one gives them back. One
 *   that ran on this very machine (same boot id) and whose process is gone is known dead at once:
 *   its leases are taken without waiting (a `run --once` after a crashed one, a restarted daemon).
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { InboxdError } from '../../errors.js';
import type { InstanceRow, LeaseRow, Leases } from '../types.js';
import type { PgDb, Tx } from './db.js';

/** This machine since its last boot: a pid means something only on the machine, and the boot, it ran on. */
const BOOT = (() => {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return `${hostname()}-unknown`; // never equal to another machine's: dead processes are then only found by expiry
  }
})();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class PgLeases implements Leases {
  readonly instance = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  /** partner -> epoch of the lease we hold */
  private readonly held = new Map<string, number>();
  private registered = false;

  constructor(private readonly db: PgDb, private readonly s: string, readonly ttlMs: number, private readonly config: string) {}

  /** Whether this process works by leases (it has ticked): its commits are then fenced. */
  get active(): boolean {
    return this.registered;
  }

  holds(partner: string): boolean {
    return this.held.has(partner);
  }

  epoch(partner: string): number | undefined {
    return this.held.get(partner);
  }

  async tick(partners: readonly string[], mode: 'share' | 'all', busy: (partner: string) => boolean = () => false): Promise<{ gained: string[]; lost: string[] }> {
    const ttl = `${this.ttlMs} milliseconds`;
    return this.db.tx(async (c) => {
      await this.heartbeat(c);
      await c.query(`INSERT INTO ${this.s}.leases (partner) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, [partners]);
      // A row a commit of ours holds (FOR SHARE) is skipped, not waited for: renewed at the next tick.
      await c.query(`UPDATE ${this.s}.leases SET expires_at = now() + $2::interval WHERE partner IN
        (SELECT partner FROM ${this.s}.leases WHERE holder = $1 FOR UPDATE SKIP LOCKED)`, [this.instance, ttl]);
      const mine = await c.query<{ partner: string; epoch: number }>(`SELECT partner, epoch FROM ${this.s}.leases WHERE holder = $1`, [this.instance]);
      const still = new Map(mine.rows.map((r) => [r.partner, r.epoch]));
      const lost = [...this.held.keys()].filter((p) => still.get(p) !== this.held.get(p));
      lost.forEach((p) => this.held.delete(p));
      await this.expireDead(c);
      const share = mode === 'all' ? partners.length : await this.share(c, partners.length);
      const gained: string[] = [];
      if (this.held.size < share) {
        const took = await c.query<{ partner: string; epoch: number }>(`UPDATE ${this.s}.leases SET holder = $1, epoch = epoch + 1, since = now(), expires_at = now() + $2::interval
          WHERE partner IN (SELECT partner FROM ${this.s}.leases WHERE partner = ANY($3::text[]) AND (holder IS NULL OR expires_at < now())
            ORDER BY partner FOR UPDATE SKIP LOCKED LIMIT $4) RETURNING partner, epoch`, [this.instance, ttl, partners, share - this.held.size]);
        for (const r of took.rows) {
          this.held.set(r.partner, r.epoch);
          gained.push(r.partner);
        }
      } else if (this.held.size > share) {
        // Another instance joined: give back what is above our share, not what is being worked right now.
        const extra = [...this.held.keys()].filter((p) => !busy(p)).slice(0, this.held.size - share);
        await this.giveBack(c, extra);
      }
      return { gained, lost };
    });
  }

  /** Leases of instances of this machine whose process is gone: lapsed now, not after lease_ttl. */
  private async expireDead(c: Tx): Promise<void> {
    const local = await c.query<{ id: string; pid: number }>(`SELECT id, pid FROM ${this.s}.instances WHERE boot = $1 AND id <> $2 AND heartbeat_at > now() - $3::interval`, [BOOT, this.instance, `${this.ttlMs} milliseconds`]);
    const dead = local.rows.filter((i) => !alive(i.pid)).map((i) => i.id);
    if (dead.length === 0) return;
    await c.query(`UPDATE ${this.s}.leases SET expires_at = now() - interval '1 millisecond' WHERE holder = ANY($1::text[])`, [dead]);
    await c.query(`UPDATE ${this.s}.instances SET heartbeat_at = now() - $2::interval WHERE id = ANY($1::text[])`, [dead, `${this.ttlMs * 2} milliseconds`]);
  }

  /** The configured partners over the live instances, rounded up. */
  private async share(c: Tx, partners: number): Promise<number> {
    const live = await c.query<{ n: number }>(`SELECT count(*) AS n FROM ${this.s}.instances WHERE heartbeat_at > now() - $1::interval`, [`${this.ttlMs} milliseconds`]);
    return Math.ceil(partners / Math.max(1, Number(live.rows[0]?.n ?? 1)));
  }

  private async heartbeat(c: Tx): Promise<void> {
    if (!this.registered) {
      const [host, pid] = this.instance.split(':');
      await c.query(`INSERT INTO ${this.s}.instances (id, host, boot, pid, config, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, now(), now())
        ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()`, [this.instance, host, BOOT, Number(pid), this.config]);
      // Instances silent for a day are history.
      await c.query(`DELETE FROM ${this.s}.instances WHERE heartbeat_at < now() - interval '1 day'`);
      this.registered = true;
    } else await c.query(`UPDATE ${this.s}.instances SET heartbeat_at = now() WHERE id = $1`, [this.instance]);
  }

  private async giveBack(c: Tx, partners: readonly string[]): Promise<void> {
    if (partners.length === 0) return;
    await c.query(`UPDATE ${this.s}.leases SET holder = NULL, since = NULL, expires_at = NULL WHERE holder = $1 AND partner = ANY($2::text[])`, [this.instance, partners]);
    partners.forEach((p) => this.held.delete(p));
  }

  async release(partners?: readonly string[]): Promise<void> {
    const which = partners ?? [...this.held.keys()];
    await this.db.tx(async (c) => {
      await this.giveBack(c, which);
      if (!partners) await c.query(`DELETE FROM ${this.s}.instances WHERE id = $1`, [this.instance]);
    });
  }

  /**
   * In a commit's transaction: the lease the delivery was claimed under (`epoch`) is still ours. Lost
   * and taken again since is not enough: another instance's recovery may have put the delivery's
   * files back meanwhile. LEASE_LOST if not.
   */
  async fence(c: Tx, partner: string, epoch = this.held.get(partner)): Promise<void> {
    const ok = epoch !== undefined && this.held.get(partner) === epoch
      && (await c.query(`SELECT 1 FROM ${this.s}.leases WHERE partner = $1 AND holder = $2 AND epoch = $3 AND expires_at > now() FOR SHARE`, [partner, this.instance, epoch])).rowCount === 1;
    if (!ok) throw new InboxdError('LEASE_LOST', `the lease on partner ${partner} this delivery was claimed under is no longer held by this instance (${this.instance}); another instance works it now, and nothing of this delivery was committed`);
  }

  async holderOf(partner: string): Promise<string | undefined> {
    const r = await this.db.one<{ holder: string }>(`SELECT holder FROM ${this.s}.leases WHERE partner = $1 AND holder IS NOT NULL AND expires_at > now()`, [partner]);
    return r?.holder;
  }

  async leases(): Promise<LeaseRow[]> {
    return this.db.all<LeaseRow>(`SELECT partner, holder, since, expires_at AS "expiresAt" FROM ${this.s}.leases WHERE holder IS NOT NULL AND expires_at > now() ORDER BY partner`);
  }

  async instances(): Promise<InstanceRow[]> {
    return this.db.all<InstanceRow>(`SELECT id, host, pid, started_at AS "startedAt", heartbeat_at AS "heartbeatAt", heartbeat_at > now() - $1::interval AS live FROM ${this.s}.instances ORDER BY started_at`, [`${this.ttlMs} milliseconds`]);
  }
}
