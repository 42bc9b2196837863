/**
 * The storage seam: what the rest of inboxd needs of a database, named for what it needs. Every method
 * is async (a network database is next); nothing outside store/ sees a driver or SQL. A backend lives in
 * store/<name>/ and openStore (store/open.ts) picks it from the configuration.
 *
 * A backend implements: Store (DeliveryLedger, TargetWriter, Windows, and its parts AttemptLedger,
 * RemoteLedger, ReplayQueue, Audit, Retention), Staging (the module the staging threads write rows
 * through, see pipeline/stage-worker.ts, and reading a sample back) and lockInstance (InstanceLock).
 */
import type { FieldSpec } from '../config/mapping.js';
import type { AnswerPlan } from '../pipeline/answer.js';
import type { StagedRows } from '../pipeline/stage.js';

export type Outcome = 'accepted' | 'rejected' | 'duplicate';

export interface DeliveryRecord {
  id: string;
  partner: string;
  flow: string | null;
  file: string;
  seq: number | null;
  fileTime: string | null;
  sha256: string | null;
  size: number | null;
  outcome: Outcome;
  code: string | null;
  reason: string | null;
  records: number | null;
  badRows: number | null;
  /** JSON: control totals expected and found */
  totals: string | null;
  receivedAt: string;
  decidedAt: string;
  answeredAt: string | null;
  /** JSON: what answering the partner consists of (answer.ts); replayed after a crash */
  plan: string;
  replayOf: string | null;
}

/** The dedupe row of a sequence: applied with this content by this delivery. */
export interface Applied {
  sha256: string;
  deliveryId: string;
}

export interface SeqKey {
  partner: string;
  flow: string;
  seq: number;
}

export interface TargetTable {
  table: string;
  fields: readonly FieldSpec[];
  key: readonly string[];
}

export interface Staged {
  rows: StagedRows;
  target: TargetTable;
  /**
   * A replay (replay.ts): a row last written by a later sequence of this flow keeps its newer values,
   * so replaying an old delivery never puts stale data back.
   */
  keepNewer?: SeqKey;
}

/**
 * The verdict of a delivery: a pure function of what the commit read in its transaction (the
 * sequence's dedupe row, the flow's last applied sequence). It looks at nothing else: no disk, no
 * network, while the write lock is held.
 */
export type Decide = (applied: Applied | undefined, lastSeq: number | undefined) => DeliveryRecord;

/** A remote partner's delivery was answered: its pulled originals may leave its server, its answers go up. */
export interface RemoteAnswer {
  partner: string;
  plan: AnswerPlan;
}

/** Deliveries, their dedupe and their audit trail. */
export interface DeliveryLedger {
  applied(partner: string, flow: string, seq: number): Promise<Applied | undefined>;
  /** The highest sequence applied for a flow: what a gap or an out-of-order file is measured against. */
  lastSeq(partner: string, flow: string): Promise<number | undefined>;
  /**
   * The one transaction of a delivery: reads the dedupe facts, calls `decide` on them, and when it
   * says `accepted` upserts the staged rows and writes the dedupe row; records the outcome either way.
   * `lease`: the epoch of the partner's lease when the delivery was claimed (Leases.epoch); with
   * several instances the commit is refused (LEASE_LOST) unless that very lease is still held.
   */
  commit(seqKey: SeqKey | undefined, staged: Staged | undefined, decide: Decide, lease?: number): Promise<DeliveryRecord>;
  /** One step of a delivery's audit trail. Details never hold PII values (map.ts redacts them in row errors). */
  event(deliveryId: string, step: string, detail?: string, at?: string): Promise<void>;
  delivery(id: string): Promise<DeliveryRecord | undefined>;
  /** Ids of a partner's deliveries decided and not answered yet, oldest first: what recovery finishes. */
  unanswered(partner: string): Promise<string[]>;
  /** Records the answer as done; with `remote`, in the same transaction, what the remote ledger owes for it. */
  markAnswered(id: string, detail: string, remote?: RemoteAnswer): Promise<void>;
  /** Whether a file of this name was rejected with this code before (what stays in the inbox is reported once). */
  rejectedAs(partner: string, file: string, code: string): Promise<boolean>;
  /** Marks a rejected delivery dealt with; the first resolution stands. */
  resolve(deliveryId: string, byDelivery: string | null, note: string): Promise<boolean>;
  /** When a claimed delivery arrived in the inbox: its `received` event, written at the claim. */
  receivedAt(deliveryId: string): Promise<string | undefined>;
}

/** The flows' target tables. */
export interface TargetWriter {
  /** Creates the flow's table from its mapping, or adds the columns a newer mapping brought. */
  ensureTable(t: TargetTable): Promise<void>;
  /** Throws CONFIG_INVALID when the table exists with another key; changes nothing. */
  checkTable(t: TargetTable): Promise<void>;
}

export type WindowStatus = 'open' | 'ok' | 'late' | 'resolved';

export interface WindowRecord {
  partner: string;
  flow: string;
  opensAt: string;
  closesAt: string;
  status: WindowStatus;
  atRiskAt: string | null;
  lateAt: string | null;
  resolvedAt: string | null;
  resolvedBy: string | null;
}

/** Delivery windows and their verdicts. */
export interface Windows {
  /** When this database was created: windows before it are nobody's business. */
  createdAt(): Promise<string>;
  /** Whether a delivery of the flow was accepted with its receipt inside [from, to]. */
  acceptedBetween(partner: string, flow: string, from: string, to: string): Promise<boolean>;
  /** The first delivery of the flow accepted (decided) after `at`, if any. */
  acceptedAfter(partner: string, flow: string, at: string): Promise<string | undefined>;
  window(partner: string, flow: string, opensAt: string): Promise<WindowRecord | undefined>;
  lateWindows(partner?: string, flow?: string): Promise<WindowRecord[]>;
  /** The verdict on a closed window; the first verdict stands, so a restart never alerts twice. */
  judgeWindow(partner: string, flow: string, opensAt: string, closesAt: string, status: 'ok' | 'late'): Promise<boolean>;
  /** Records an at-risk warning once per window; false when it was recorded already. */
  markAtRisk(partner: string, flow: string, opensAt: string, closesAt: string): Promise<boolean>;
  /** A late delivery arrived: every late window of its flow is resolved by it, and it is marked late. */
  resolveLate(partner: string, flow: string, deliveryId: string): Promise<WindowRecord[]>;
}

export interface Attempts {
  fingerprint: string;
  attempts: number;
  /** not taken again before this (Date.now() ms) */
  nextAt: number;
  /** the last failure */
  code: string;
  error: string | null;
  /** each attempt's delivery id, oldest first */
  deliveryIds: string[];
}

export interface Failure {
  deliveryId: string;
  code: string;
  error: string;
}

/** Attempts at deliveries that failed for a reason of ours, and their backoff (see sqlite/attempts.ts). */
export interface AttemptLedger {
  get(partner: string, file: string): Promise<Attempts | undefined>;
  /** Counts a failed attempt; another fingerprint than the one stored is another file, counted afresh. `delayMs(n)`: the wait after the n-th. */
  failed(partner: string, file: string, fingerprint: string, failure: Failure, delayMs: (attempts: number) => number): Promise<Attempts>;
  /** The delivery was decided, or given up on: its count is done with. */
  clear(partner: string, file: string): Promise<void>;
}

export interface PendingUpload {
  dir: 'outbox' | 'error';
  name: string;
}

/** What inboxd owes each remote partner (see sqlite/remote-ledger.ts). */
export interface RemoteLedger {
  /** Pulled and not yet done with: must not be downloaded again. */
  isHeld(partner: string, name: string): Promise<boolean>;
  state(partner: string, name: string): Promise<string | undefined>;
  downloading(partner: string, name: string, size: number, mtimeMs: number): Promise<void>;
  downloaded(partner: string, name: string): Promise<void>;
  toRelease(partner: string): Promise<string[]>;
  released(partner: string, name: string): Promise<void>;
  pendingUploads(partner: string): Promise<PendingUpload[]>;
  uploaded(partner: string, u: PendingUpload): Promise<void>;
  uploadFailed(partner: string, u: PendingUpload, error: string): Promise<void>;
  uploadLost(partner: string, u: PendingUpload, error: string): Promise<void>;
  /** `lastError`: a string records it, null clears it (a round succeeded), undefined keeps what is there. */
  setCircuit(partner: string, circuit: string, failures: number, lastError?: string | null): Promise<void>;
}

export interface ReplayRequest {
  id: number;
  deliveryId: string;
  partner: string;
  state: 'queued' | 'done';
  /** JSON: { outcome } or { error: { code, message } } */
  result: string | null;
}

/** Replays asked for while the daemon runs (see sqlite/replay-queue.ts). */
export interface ReplayQueue {
  enqueue(deliveryId: string, partner: string): Promise<number>;
  queued(partner?: string): Promise<ReplayRequest[]>;
  get(id: number): Promise<ReplayRequest | undefined>;
  done(id: number, result: unknown): Promise<void>;
}

export interface AuditEvent {
  at: string;
  step: string;
  detail: string | null;
}

export interface Resolution {
  at: string;
  /** the replay that resolved it, when one did */
  byDelivery: string | null;
  note: string | null;
}

/** Filters of `inboxd deliveries list`. `open`: rejected and not dealt with; `late`, `replay`: flags. */
export interface DeliveryFilter {
  partner?: string;
  flow?: string;
  outcome?: Outcome | 'open' | 'late' | 'replay';
  /** received at or after / before (ISO-8601) */
  since?: string;
  until?: string;
  limit?: number;
}

export type Listed = DeliveryRecord & { late: number };

export interface CircuitRow {
  partner: string;
  circuit: string;
  updatedAt: string;
}

/** The audit trail's read side: what the operations commands and the metrics ask. Changes nothing. */
export interface Audit {
  list(filter?: DeliveryFilter): Promise<Listed[]>;
  /**
   * Rejected deliveries still needing someone: not resolved (a successful replay or an operator's
   * `deliveries resolve`), not superseded by a later accepted delivery of the same sequence, and not
   * themselves replays (the original stands for the problem).
   */
  openProblems(): Promise<Listed[]>;
  get(id: string): Promise<Listed | undefined>;
  timeline(id: string): Promise<AuditEvent[]>;
  replaysOf(id: string): Promise<Pick<DeliveryRecord, 'id' | 'outcome' | 'code' | 'decidedAt'>[]>;
  /** How a rejected delivery was dealt with: recorded, or implied by a later accepted copy of its sequence. */
  resolutionOf(rec: DeliveryRecord): Promise<Resolution | undefined>;
  lastDelivery(partner: string, flow: string): Promise<Listed | undefined>;
  /** partner/flow -> when its last accepted delivery was decided. */
  lastAccepted(): Promise<Map<string, string>>;
  /** partner/flow -> open late windows (closed with no delivery, none arrived since). */
  lateCounts(): Promise<Map<string, number>>;
  /** Circuit breaker states of remote partners, when the remote link keeps them. */
  circuits(): Promise<Map<string, CircuitRow>>;
}

export type PrunedRows = Record<'dedupe' | 'deliveries' | 'events' | 'resolutions' | 'windows', number>;

/** Retention's side of the database (ops/prune.ts holds the rules). */
export interface Retention {
  /** `dir/name` -> when the delivery whose answer plan put that file there was decided (ms); the latest. */
  decisions(partner: string): Promise<Map<string, number>>;
  /**
   * Removes, in one transaction, per partner the records decided before its cutoff (ISO-8601), and
   * events of no delivery before `orphansBefore`. A dry run counts the same and removes nothing.
   */
  prune(cutoffs: readonly { partner: string; before: string }[], orphansBefore: string, dryRun: boolean): Promise<PrunedRows>;
}

/** A partner's lease as `inboxd status` shows it. */
export interface LeaseRow {
  partner: string;
  holder: string | null;
  since: string | null;
  expiresAt: string | null;
}

export interface InstanceRow {
  id: string;
  host: string;
  pid: number;
  startedAt: string;
  heartbeatAt: string;
  /** whether its heartbeat is recent (within the lease time) */
  live: boolean;
}

/**
 * Several instances on one database (PostgreSQL, postgres/leases.ts): each partner is worked by one
 * instance at a time, the holder of its lease. A commit checks the lease in its own transaction (a
 * fence), so an instance that lost it cannot commit for that partner.
 */
export interface Leases {
  /** this process's instance id */
  readonly instance: string;
  readonly ttlMs: number;
  /**
   * Heartbeat; renews the leases held; takes free or expired ones up to a fair share of `partners`
   * (`all`: as many as it can); gives back held ones above the share that are not `busy`.
   */
  tick(partners: readonly string[], mode: 'share' | 'all', busy?: (partner: string) => boolean): Promise<{ gained: string[]; lost: string[] }>;
  holds(partner: string): boolean;
  /** The epoch of the lease held on a partner now: what a delivery claimed now must still hold at its commit. */
  epoch(partner: string): number | undefined;
  /** Gives the leases back (all of them, or these): another instance may take them at once. */
  release(partners?: readonly string[]): Promise<void>;
  /** Who holds a partner now, if a live instance does. */
  holderOf(partner: string): Promise<string | undefined>;
  leases(): Promise<LeaseRow[]>;
  instances(): Promise<InstanceRow[]>;
}

export interface Store extends DeliveryLedger, TargetWriter, Windows {
  readonly attempts: AttemptLedger;
  readonly remote: RemoteLedger;
  readonly replays: ReplayQueue;
  readonly audit: Audit;
  readonly retention: Retention;
  readonly staging: Staging;
  /** Present where several instances share the database (PostgreSQL); absent, this process works every partner. */
  readonly leases?: Leases;
  /** Throws when the database cannot be used now (readiness). */
  ping(): Promise<void>;
  /** false once closed: scrape-time metrics then read nothing */
  readonly isOpen: boolean;
  close(): Promise<void>;
}

/**
 * Staging: the rows of a delivery in flight are written by staging threads into scratch storage of
 * the backend's (SQLite: one scratch file per thread), which the commit then applies.
 */
export interface Staging {
  readonly writer: StagingWriter;
  /** The first `n` rows staged, in file order, as stored (integers beyond 2^53 as bigint). */
  sample(rows: StagedRows, n: number): Promise<unknown[][]>;
  /** Removes what a delivery staged under `base`, committed or not (SQLite: nothing, the files go with the work directory). */
  discard(base: string): Promise<void>;
}

/** How staging threads write: what each loads, with what, into what. */
export interface StagingWriter {
  /** The module (file URL) a staging thread loads: it exports `openScratch` (pipeline/stage-worker.ts). */
  readonly module: string;
  /** Handed to openScratch as they are (copied into the thread). */
  readonly options?: unknown;
  /** Thread n's scratch storage for a delivery staging under `base` (a file, a table). */
  scratchName(base: string, n: number): string;
  /** The threads' young generation, if the writer allocates more than the default suits (MB). */
  readonly youngGenerationMb?: number;
}

export interface InstanceLock {
  release(): void;
}
