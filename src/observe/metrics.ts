/**
 * Prometheus metrics (prom-client, on a Registry of our own). Counters and the histogram are fed by the
 * delivery observer (safeEmit: a failing metric never hurts a delivery); gauges that describe the
 * present (backlog, time since the last good delivery, late windows, open errors, circuits) are read
 * from the inbox and the database at scrape time, so they are right even after a restart.
 *
 * The remote link reports through `countRemoteError` and `setCircuitState`; circuit states kept in the
 * database (remote_state) are read at scrape time as well.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { backlog } from '../ops/backlog.js';
import type { Config } from '../config/config.js';
import type { DeliveryObserver } from '../observers.js';
import type { DeliveryRecord, Store } from '../store/types.js';

/** The breaker's states, and 'halted': an error no retry can fix (host key mismatch, key refused) stopped the link. */
export type CircuitState = 'closed' | 'open' | 'half-open' | 'halted';
const CIRCUIT_STATES: readonly CircuitState[] = ['closed', 'half-open', 'open', 'halted'];

/** The outcomes a delivery is counted under: each starts at zero for every configured flow. */
const OUTCOMES = ['accepted', 'rejected', 'duplicate'] as const;

/**
 * Seconds, up to an hour. prom-client keeps each series' counts in an object keyed by the bounds, and
 * V8 stores integer keys as array slots: with 1800 the last bound, an array of 1,801 slots, 21 KB per
 * series, 187 MB for 3,000 partners (every partner, flow and outcome is zeroed at start). With 3600 too
 * the keys are too sparse for an array and V8 keeps a small dictionary instead (npm run bench:partners).
 */
const PROCESSING_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

export class Metrics {
  readonly registry = new Registry();
  private source?: { store: Store; config: Config; ready?: () => Promise<boolean> };
  private readonly circuitSet = new Map<string, CircuitState>();
  private defaults = false;

  private readonly deliveries = new Counter({
    name: 'inboxd_deliveries_total', help: 'Deliveries decided, by partner, flow and outcome (accepted, rejected, duplicate)',
    labelNames: ['partner', 'flow', 'outcome'] as const, registers: [this.registry],
  });
  private readonly rows = new Counter({
    name: 'inboxd_rows_upserted_total', help: 'Rows upserted into target tables by accepted deliveries',
    labelNames: ['partner', 'flow'] as const, registers: [this.registry],
  });
  private readonly duration = new Histogram({
    name: 'inboxd_delivery_processing_seconds', help: 'Time from claiming a delivery to answering it',
    labelNames: ['partner', 'flow', 'outcome'] as const, buckets: PROCESSING_BUCKETS, registers: [this.registry],
  });
  private readonly remoteErrors = new Counter({
    name: 'inboxd_remote_transfer_errors_total', help: "Failed operations against remote partners' SFTP servers",
    labelNames: ['partner', 'operation'] as const, registers: [this.registry],
  });

  constructor() {
    // prom-client calls collect() with the gauge as `this`: the metrics object is reached through these.
    const attached = () => this.source;
    const opened = () => this.open();
    const circuitStates = () => this.circuitSet;
    const isReady = () => this.source?.ready?.();
    new Gauge({
      name: 'inboxd_ready', help: 'Whether the daemon is ready (1) or not (0): what /readyz answers', registers: [this.registry],
      async collect() {
        const ready = await isReady();
        if (ready === undefined) this.reset();
        else this.set(ready ? 1 : 0);
      },
    });
    new Gauge({
      name: 'inboxd_backlog_files', help: 'Data files of a flow waiting in the inbox', labelNames: ['partner', 'flow'] as const, registers: [this.registry],
      async collect() {
        this.reset();
        const src = attached();
        if (!src) return;
        for (const p of src.config.partners) for (const [flow, n] of await backlog(p, src.config.tempPatterns)) this.set({ partner: p.id, flow }, n);
      },
    });
    /** A gauge filled at scrape time from the open database; empty while there is none. */
    const fromDatabase = <L extends string>(name: string, help: string, labelNames: readonly L[], fill: (gauge: Gauge<L>, db: { store: Store; config: Config }) => Promise<void>) =>
      new Gauge({
        name, help, labelNames, registers: [this.registry],
        async collect() {
          this.reset();
          const db = opened();
          if (db) await fill(this, db);
        },
      });
    fromDatabase('inboxd_seconds_since_last_accepted', 'Seconds since the last accepted delivery of a flow (absent: none yet)', ['partner', 'flow'], async (gauge, db) => {
      for (const [key, at] of await db.store.audit.lastAccepted()) {
        const [partner, flow] = key.split('/') as [string, string];
        gauge.set({ partner, flow }, Math.max(0, (Date.now() - Date.parse(at)) / 1000));
      }
    });
    fromDatabase('inboxd_late_windows', 'Delivery windows that closed with no delivery and are not resolved yet', ['partner', 'flow'], async (gauge, db) => {
      const late = await db.store.audit.lateCounts();
      for (const p of db.config.partners) for (const f of p.flows) gauge.set({ partner: p.id, flow: f.id }, late.get(`${p.id}/${f.id}`) ?? 0);
    });
    fromDatabase('inboxd_open_errors', 'Rejected deliveries not dealt with yet (replayed, resolved or sent again)', ['partner'], async (gauge, db) => {
      const open = await db.store.audit.openProblems();
      for (const p of db.config.partners) gauge.set({ partner: p.id }, open.filter((d) => d.partner === p.id).length);
    });
    new Gauge({
      name: 'inboxd_circuit_state', help: "A remote partner's circuit breaker: 1 for its current state", labelNames: ['partner', 'state'] as const, registers: [this.registry],
      async collect() {
        this.reset();
        const states = new Map(circuitStates());
        const db = opened();
        if (db) for (const [partner, row] of await db.store.audit.circuits()) if ((CIRCUIT_STATES as readonly string[]).includes(row.circuit)) states.set(partner, row.circuit as CircuitState);
        for (const [partner, current] of states) for (const state of CIRCUIT_STATES) this.set({ partner, state }, state === current ? 1 : 0);
      },
    });
  }

  /**
   * Where scrape-time gauges read from (the daemon's store and config, and its readiness). Every
   * configured partner and flow gets its counters at zero, so a rate sees the first delivery after a start.
   */
  attach(store: Store, config: Config, ready?: () => Promise<boolean>): void {
    this.source = { store, config, ready };
    for (const p of config.partners) {
      for (const f of p.flows) {
        const labels = { partner: p.id, flow: f.id };
        this.rows.inc(labels, 0);
        for (const outcome of OUTCOMES) {
          this.deliveries.inc({ ...labels, outcome }, 0);
          this.duration.zero({ ...labels, outcome });
        }
      }
    }
  }

  /** Process metrics (CPU, memory, event loop lag), once the HTTP listener runs. */
  enableDefaults(): void {
    if (this.defaults) return;
    this.defaults = true;
    collectDefaultMetrics({ register: this.registry, prefix: 'inboxd_' });
    // Gauges named `_total` (active handles, requests, resources) break Prometheus's naming rule
    // (`promtool check metrics`); the same gauges without it, by type, sum to them.
    for (const m of this.registry.getMetricsAsArray()) if (m instanceof Gauge && m.name.endsWith('_total')) this.registry.removeSingleMetric(m.name);
  }

  delivered(rec: DeliveryRecord, seconds: number): void {
    const labels = { partner: rec.partner, flow: rec.flow ?? 'unknown' };
    this.deliveries.inc({ ...labels, outcome: rec.outcome });
    this.duration.observe({ ...labels, outcome: rec.outcome }, seconds);
    if (rec.outcome === 'accepted') this.rows.inc(labels, (rec.records ?? 0) - (rec.badRows ?? 0));
  }

  observer(): DeliveryObserver {
    return { delivered: (rec, seconds) => this.delivered(rec, seconds) };
  }

  remoteError(partner: string, operation: string): void {
    this.remoteErrors.inc({ partner, operation });
  }

  circuit(partner: string, state: CircuitState): void {
    this.circuitSet.set(partner, state);
  }

  private open(): { store: Store; config: Config } | undefined {
    return this.source?.store.isOpen ? this.source : undefined;
  }
}

/** The process's metrics: one daemon per process. */
export const metrics = new Metrics();

/** For the remote link: a failed transfer operation (list, download, upload, rename...). Never throws. */
export function countRemoteError(partner: string, operation: string): void {
  try {
    metrics.remoteError(partner, operation);
  } catch {
    // observers never hurt the core
  }
}

/** For the remote link: its circuit breaker changed state. Never throws. */
export function setCircuitState(partner: string, state: CircuitState): void {
  try {
    metrics.circuit(partner, state);
  } catch {
    // observers never hurt the core
  }
}
