/**
 * The daemon loop: finish interrupted work, then take deliveries as the watcher reports them and as
 * the scheduled sweep finds them. Partners are swept in parallel up to `max_parallel`; one partner's
 * sweep is never run twice at once, so a flow's deliveries are applied one after another in order.
 *
 * Stopping is idempotent and ordered: intake stops first (watcher, schedule, deadlines), deliveries in
 * flight get `shutdown_timeout` to finish, then are aborted (rolled back: their files go back to the
 * inbox), and the database is closed last.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import cron from 'node-cron';
import { type Alert, sendLogged } from '../notify/alert.js';
import { notifyAll } from '../notify/notify.js';
import type { Config, PartnerConfig } from '../config/config.js';
import { classify } from '../errors.js';
import { listenWaiting, type OpsRuntime, startOps } from '../observe/runtime.js';
import type { HttpServer } from '../observe/http.js';
import { countRemoteError, setCircuitState } from '../observe/metrics.js';
import { DeadlineKeeper } from './deadlines.js';
import type { Logger } from '../log.js';
import { RemoteLink } from '../remote/pull.js';
import { replayWith } from '../ops/replay.js';
import { HostLimiter } from '../retry.js';
import type { Keyring } from '../pgp/keyring.js';
import { Releasers } from '../releasers.js';
import { logWaiting, soonest, sweepPartner, type Tally } from '../ingest/pass.js';
import { openAll, openKeyring, recover } from '../ingest/startup.js';
import { LeaseKeeper } from '../ingest/leases.js';
import type { Store } from '../store/types.js';
import { FULL_EVERY, treePrint, type TreePrint } from './quiet.js';
import { watchInboxes } from './watch.js';
import type { RenamedIn } from '../pipeline/discover.js';

interface PartnerState {
  partner: PartnerConfig;
  running?: Promise<void>;
  /** asked for again while running: sweep once more when done */
  again: boolean;
  timer?: NodeJS.Timeout;
  /** when the pending sweep is due, and past when it is not pushed back (Date.now() ms) */
  at?: number;
  latest?: number;
  /** the directory for which the partner was refused at its last sweep (alerted once, until it is fixed) */
  refused?: string;
  /** file and reason of each delivery waiting at the last sweep: logged once, until it stops waiting for that */
  waits: Set<string>;
  /** files the watcher saw renamed in from a temporary name, by name: taken without the settle time */
  renamed: Map<string, RenamedIn>;
  /** asked for by something other than the schedule since its last sweep: the next one is never skipped */
  full: boolean;
  /** the partner's tree as it was when its last sweep found nothing at all (quiet.ts) */
  quiet?: TreePrint;
  /** scheduled sweeps skipped in a row since */
  skipped: number;
  /** its working directory was recovered at the start and no sweep has run since: the first needs no second recovery */
  recovered?: boolean;
}

/** A sweep that leaves something waiting is followed by the next no sooner than this. */
const MIN_GAP_MS = 250;
const MAX_TIMER = 2 ** 31 - 1;

export class Daemon {
  private store!: Store;
  private deadlines?: DeadlineKeeper;
  private keyring?: Keyring;
  /** what the start took, given back in reverse on a failed start or a stop */
  private readonly held = new Releasers();
  /** set once releasing began: nothing new is started */
  private closed = false;
  /** when a stop began: deliveries in flight get until then plus shutdown_timeout */
  private stopAt?: number;
  private readonly links = new Map<string, RemoteLink>();
  private readonly states = new Map<string, PartnerState>();
  private readonly abort = new AbortController();
  /** alerts and notifications still being sent (retried); waited for at shutdown within its timeout, then abandoned */
  private readonly alerts = new Set<Promise<void>>();
  private readonly alertAbort = new AbortController();
  private starting?: Promise<void>;
  /** HTTP listener, metrics observer, prune schedule (daemon-ops.ts) */
  private ops?: OpsRuntime;
  private recovered = false;
  private slots: number;
  private readonly queue: Array<() => void> = [];
  private stopping?: Promise<void>;
  /** which partners this instance works (all of them, unless several instances share a PostgreSQL) */
  private leases?: LeaseKeeper;
  /** a start waiting for the database gives up when we are stopped */
  private readonly startAbort = new AbortController();
  /** totals since start */
  readonly tally: Tally = { accepted: 0, rejected: 0, duplicate: 0, retry: 0, waiting: 0 };

  constructor(private readonly config: Config, private readonly log: Logger) {
    this.slots = config.maxParallel;
    for (const partner of config.partners) this.states.set(partner.id, { partner, again: false, waits: new Set(), renamed: new Map(), full: true, skipped: 0 });
  }

  start(): Promise<void> {
    this.starting ??= this.begin().catch(async (err) => {
      await this.releaseAll();
      throw err;
    });
    return this.starting;
  }

  /**
   * Each acquisition pushes its releaser at once (releasers.ts): a start that fails gives back what it
   * took, in reverse order, and rejects, so that the process exits with the error's code; a stop gives
   * back everything the same way. A stop requested meanwhile (a signal during startup recovery) ends the
   * start before intake begins.
   */
  private async begin(): Promise<void> {
    const held = this.held;
    // Our keys, the tree, the instance lock (database, work directory, root), the database: as `run --once`.
    const { keyring, store } = await this.openWaiting(held);
    this.keyring = keyring;
    this.store = store;
    this.ops = await startOps(this.config, this.store, this.log, () => this.recovered && !this.stopping);
    held.add('operations', () => this.ops?.stop());
    // Given back once the deliveries in flight are done (releasers run newest first).
    const leases = new LeaseKeeper(store, this.config.partners.map((p) => p.id), 'share', this.log, {
      gained: (p) => this.took(p),
      busy: (p) => !!this.states.get(p)?.running,
    });
    this.leases = leases;
    held.add('leases', () => leases.stop());
    await leases.start();
    held.add('deliveries in flight', () => this.drain());
    held.add('timers', () => this.states.forEach((st) => clearTimeout(st.timer)));
    // Interrupted work first: nothing new is taken before it is finished or put back.
    for (const partner of this.config.partners) {
      if (this.stopping) return;
      if (!leases.holds(partner.id)) continue;
      await recover(this.store, partner, this.log);
      this.states.get(partner.id)!.recovered = true;
    }
    if (this.stopping) return;
    this.recovered = true;
    const deadlines = new DeadlineKeeper(this.store, this.config.partners, this.log, (a) => this.alert(a), this.config.tempPatterns);
    this.deadlines = deadlines;
    held.add('deadlines', () => deadlines.stop());
    await deadlines.start();
    if (this.config.watch) {
      const inboxes = new Map(this.config.partners.map((p) => [p.dirs.inbox, p.id]));
      const watcher = watchInboxes(inboxes, this.config.tempPatterns, {
        activity: (id) => this.kick(id, this.config.settleMs),
        renamed: (id, name, file) => {
          this.states.get(id)?.renamed.set(name, file);
          this.kick(id, 0);
        },
        error: (err) => this.log.error({ err }, 'watcher error; the scheduled sweep still runs'),
        ready: () => this.log.debug({ inboxes: inboxes.size }, 'watching the inboxes'),
      });
      held.add('watcher', () => watcher.close());
    }
    const schedule = cron.schedule(this.config.sweep, () => this.kickAll(true), { name: 'inboxd-sweep', noOverlap: true });
    held.add('schedule', () => schedule.stop());
    this.startRemoteLinks();
    const replays = this.store.replays;
    const replayPoll = setInterval(() => void replays.queued().then((rs) => rs.forEach((r) => this.kick(r.partner, 0)), (err: unknown) => this.log.error({ err }, 'replay queue could not be read; polled again in a second')), 1000);
    held.add('replay poll', () => clearInterval(replayPoll));
    const keyCheck = cron.schedule('17 3 * * *', () => void openKeyring(this.config, this.log).catch((err) => this.log.error({ err: String(err) }, 'key check failed')), { name: 'inboxd-keys' });
    held.add('key check', () => keyCheck.stop());
    this.log.info({ partners: this.config.partners.length, max_parallel: this.config.maxParallel, watch: this.config.watch, sweep: this.config.sweep }, 'inboxd started');
    this.kickAll();
  }

  /**
   * openAll, waiting for a database server that cannot be reached (DB_UNAVAILABLE: PostgreSQL down or
   * restarting): tried again with a growing pause (1 s doubling to 30 s), logged each time, until it
   * answers or we are stopped. Meanwhile /readyz answers 503 with the reason (listenWaiting). Anything else ends the start.
   */
  private async openWaiting(held: Releasers): Promise<Awaited<ReturnType<typeof openAll>>> {
    let waiting: { http?: HttpServer; reason: string } | undefined;
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          return await openAll(this.config, this.log, held);
        } catch (err) {
          const e = classify(err);
          if (e.code !== 'DB_UNAVAILABLE' || this.stopping) throw err;
          await held.releaseAll((resource, failure) => this.log.error({ err: failure, resource }, 'release failed'));
          waiting ??= { reason: e.message };
          waiting.reason = e.message;
          waiting.http ??= await listenWaiting(this.config, () => waiting!.reason);
          const waitMs = Math.min(30_000, 1000 * 2 ** (attempt - 1));
          this.log.warn({ code: e.code, attempt, retry_in_ms: waitMs }, `${e.message}; waiting for the database, trying again in ${Math.round(waitMs / 1000)} s`);
          const stopped = await sleep(waitMs, false, { signal: this.startAbort.signal }).catch(() => true);
          if (stopped) throw err;
        }
      }
    } finally {
      await waiting?.http?.close(); // the real listener (startOps) takes the port next
    }
  }

  /** Runs every releaser once, newest first; nothing new is started meanwhile. */
  private releaseAll(): Promise<void> {
    this.closed = true;
    return this.held.releaseAll((resource, err) => this.log.error({ err, resource }, 'release failed'));
  }

  /** Partners we pull from: each on its own schedule, and right after its deliveries were answered. */
  private startRemoteLinks(): void {
    const limiters = new Map<string, HostLimiter>(); // per host, shared by partners on the same server
    for (const partner of this.config.partners) {
      if (!partner.remote) continue;
      const { host, limits } = partner.remote;
      const limiter = limiters.get(host) ?? new HostLimiter(limits);
      limiters.set(host, limiter);
      const link = new RemoteLink(partner, this.store.remote, limiter, this.config.tempPatterns, this.log, {
        pulled: () => this.kick(partner.id, 0),
        // observers (metrics.ts): they never throw into the link
        circuit: (state) => setCircuitState(partner.id, state),
        transferError: (operation) => countRemoteError(partner.id, operation),
      });
      this.links.set(partner.id, link);
      // Pulled by the instance that holds the partner's lease only.
      const pull = () => void (this.holds(partner.id) && link.kick(this.abort.signal));
      const task = cron.schedule(partner.remote.schedule, pull, { name: `inboxd-remote-${partner.id}` });
      this.held.add(`remote schedule ${partner.id}`, () => task.stop());
      pull();
    }
  }

  /** `scheduled`: the schedule's sweep, skipped for a partner found quiet and unchanged since (quiet.ts) */
  kickAll(scheduled = false): void {
    for (const id of this.states.keys()) this.kick(id, 0, scheduled);
  }

  /**
   * Asks for a sweep of one partner after `delayMs`; requests while one is pending or running coalesce.
   * A sweep finding something still waiting asks for the next at the moment that can have changed, so
   * waiting files (not settled, incomplete, behind a gap, backing off) are not looked at in between.
   */
  kick(id: string, delayMs: number, scheduled = false): void {
    const st = this.states.get(id);
    if (!st || this.stopping || this.closed) return;
    if (!scheduled) st.full = true;
    if (st.running) {
      st.again = true;
      return;
    }
    const at = Date.now() + Math.min(delayMs, MAX_TIMER);
    if (st.timer) {
      // More activity while a sweep is pending (the companions of a data file, renamed just after it)
      // pushes the sweep back, so it comes once the newest file has settled instead of finding it
      // unsettled and looking again a whole settle time later; never past twice the first delay.
      // A request for sooner (an event while the sweep waits for something due much later) comes sooner.
      const sooner = at < st.at!;
      if (!sooner && (delayMs === 0 || at > st.latest!)) return;
      clearTimeout(st.timer);
      if (sooner) st.latest = at + delayMs;
    } else st.latest = at + delayMs;
    st.at = at;
    st.timer = setTimeout(() => {
      st.timer = undefined;
      st.running = this.sweep(st).then((due) => {
        st.running = undefined;
        if (st.again) this.kick(id, 0);
        else if (due !== undefined) this.kick(id, Math.max(due - Date.now(), MIN_GAP_MS));
        st.again = false;
      });
    }, at - Date.now());
  }

  /** A partner's lease was taken (another instance died, or gave it back): its sweep recovers its work directory first. */
  private took(partner: string): void {
    if (!this.recovered) return; // the start's own recovery and first sweep follow
    this.states.get(partner)!.recovered = false;
    this.kick(partner, 0);
    void this.links.get(partner)?.kick(this.abort.signal);
  }

  private holds(partner: string): boolean {
    return this.leases?.holds(partner) ?? false;
  }

  /** One sweep of one partner; returns when to sweep it again at the latest (see sweepPartner). Never throws. */
  private async sweep(st: PartnerState): Promise<number | undefined> {
    if (!this.holds(st.partner.id)) return undefined; // another instance works it
    const print = treePrint(st.partner);
    if (this.unchanged(st, print)) {
      this.log.debug({ partner: st.partner.id, unchanged: true, next_sweep_in_ms: null }, 'sweep done');
      return undefined;
    }
    let empty = false;
    await this.acquire();
    const tally: Tally = { accepted: 0, rejected: 0, duplicate: 0, retry: 0, waiting: 0 };
    let due: number | undefined;
    try {
      if (this.stopping) return undefined;
      const ctx = { store: this.store, log: this.log, partner: st.partner, signal: this.abort.signal, keyring: this.keyring, observer: this.ops?.observer, alert: (a: Alert) => this.alert(a) };
      // Each sweep finishes what an earlier one left (an answer not written, a delivery cut short), but
      // the first after the start's own recovery: a tenth of a full sweep of many idle partners.
      if (!st.recovered) await recover(this.store, st.partner, this.log, tally);
      st.recovered = false;
      // An answer recovery could not write is tried again after the backoff.
      if (tally.retry > 0) due = Date.now() + this.config.retryBackoffMs;
      await this.runReplays(st.partner.id);
      const refusedBefore = st.refused;
      st.refused = undefined;
      const waitedBefore = st.waits;
      st.waits = new Set();
      // Past its settle time a file is settled anyway: what the watcher saw is needed no longer.
      for (const [name, file] of st.renamed) if (file.ctimeMs + this.config.settleMs < Date.now()) st.renamed.delete(name);
      const next = await sweepPartner(ctx, this.config, tally, {
        waiting: (w) => {
          const key = `${w.file}\0${w.reason}`;
          st.waits.add(key);
          if (!waitedBefore.has(key)) logWaiting(this.log, { ...w, partner: st.partner.id });
        },
        stopped: () => this.stopping !== undefined,
        refused: ({ dir, reason }) => {
          st.refused = dir;
          if (refusedBefore !== dir) this.alert({ event: 'partner.refused', severity: 'critical', partner: st.partner.id, dir, message: `partner ${st.partner.id} is not swept: ${reason}`, at: new Date().toISOString() });
        },
        accepted: (flow, id) => this.deadlines?.accepted(flow.partner, flow.id, id),
        decided: (rec) => notifyAll(this.config.notify, rec, this.log, this.alertAbort.signal).forEach((p) => this.background(p)),
        scanned: (scan) => (empty = scan.ready.length + scan.stale.length + scan.waiting === 0),
        gap: (flow, expected, got) => this.alert({ event: 'sequence.gap', severity: 'warning', partner: flow.partner, flow: flow.id, expected, got, message: `sequence gap for ${flow.partner}/${flow.id}: ${expected} never arrived, going on with ${got}`, at: new Date().toISOString() }),
      }, st.renamed);
      due = soonest(due, next);
    } catch (err) {
      this.log.error({ err, partner: st.partner.id }, 'sweep failed; it will be tried again');
      due = Date.now() + this.config.retryBackoffMs;
    } finally {
      this.release();
    }
    const quiet = empty && due === undefined && !st.refused && Object.values(tally).every((n) => n === 0);
    st.quiet = quiet ? print : undefined;
    this.log.debug({ partner: st.partner.id, ...tally, next_sweep_in_ms: due === undefined ? null : Math.max(0, due - Date.now()) }, 'sweep done');
    for (const k of ['accepted', 'rejected', 'duplicate', 'retry'] as const) this.tally[k] += tally[k];
    // Answers to push and originals to release on a remote partner's server: do it now.
    if (tally.accepted + tally.rejected + tally.duplicate > 0) void this.links.get(st.partner.id)?.kick(this.abort.signal);
    return due;
  }

  /**
   * Whether this sweep can be skipped: asked for by the schedule only, the partner found quiet by its last
   * sweep and its tree unchanged since, and fewer than FULL_EVERY skipped in a row. Otherwise it is a full
   * sweep, and the count starts again.
   */
  private unchanged(st: PartnerState, print: TreePrint | undefined): boolean {
    const skip = !st.full && print !== undefined && print === st.quiet && st.skipped < FULL_EVERY - 1;
    st.skipped = skip ? st.skipped + 1 : 0;
    st.full = false;
    return skip;
  }

  /** Replays an operator asked for while we run (replay-queue.ts), in this partner's turn. */
  private async runReplays(partner: string): Promise<void> {
    for (const r of await this.store.replays.queued(partner)) {
      try {
        const outcome = await replayWith(this.store, this.config, this.log, r.deliveryId, this.keyring!);
        await this.store.replays.done(r.id, { outcome });
      } catch (err) {
        const e = classify(err);
        this.log.warn({ request: r.id, delivery_id: r.deliveryId, code: e.code, err: e.message }, 'queued replay refused');
        await this.store.replays.done(r.id, { error: { code: e.code, message: e.message } });
      }
    }
  }

  private acquire(): Promise<void> {
    if (this.slots > 0) {
      this.slots--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.queue.push(resolve));
  }

  private release(): void {
    const next = this.queue.shift();
    if (next) next();
    else this.slots++;
  }

  /** Alerts are observers: they run in the background and their failures are only logged. */
  private alert(a: Alert): void {
    const action = this.config.alert;
    if (action) this.background(sendLogged(action, a, this.log, this.alertAbort.signal));
  }

  /** An alert or notification being sent: kept until done, so that a stop waits for it (drain). */
  private background(sending: Promise<void>): void {
    const kept = sending.finally(() => this.alerts.delete(kept));
    this.alerts.add(kept);
  }

  stop(): Promise<void> {
    this.startAbort.abort();
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    this.log.info('stopping: no new deliveries are taken');
    this.stopAt = Date.now() + this.config.shutdownTimeoutMs;
    await this.starting?.catch(() => {});
    await this.releaseAll();
    this.log.info('stopped');
  }

  /**
   * Once intake has stopped: deliveries in flight get what is left of `shutdown_timeout`, then are
   * rolled back; alerts still being retried get what is left after them, then are abandoned (logged).
   */
  private async drain(): Promise<void> {
    const deadline = this.stopAt ?? Date.now();
    const inFlight = () => Promise.allSettled([...[...this.states.values()].map((st) => st.running), ...[...this.links.values()].map((l) => l.stop())]);
    const timeout = () => new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), Math.max(0, deadline - Date.now())).unref());
    if ((await Promise.race([inFlight(), timeout()])) === 'timeout') {
      this.log.warn({ timeout_ms: this.config.shutdownTimeoutMs }, 'deliveries still in flight: rolling them back');
      this.abort.abort();
      await inFlight();
    }
    if (this.alerts.size > 0 && (await Promise.race([Promise.allSettled(this.alerts), timeout()])) === 'timeout') this.alertAbort.abort();
    await Promise.allSettled(this.alerts);
  }
}
