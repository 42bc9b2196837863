/**
 * Configuration: raw YAML -> validated -> one frozen, typed Config with every default applied here.
 * Every error names the file, the key path and what is wrong. Relative paths are relative to the
 * configuration file's directory. Secrets are never inline: keys and passwords are file paths.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { parseDuration, parseSize } from './units.js';
import { InboxdError } from '../errors.js';
import { type CharRange, type FieldSpec, loadMapping, parseElementRef, parseRange, sameColumns } from './mapping.js';
import { parseRetryPolicy, type RetryPolicy } from '../retry.js';
import { type DatabaseConfig, DatabaseKeyError, databaseName, databaseSchema, resolveDatabase } from './database.js';

const ID = /^[a-z0-9][a-z0-9_-]{0,63}$/;
/** A table, schema-qualified or not (`sales.inventory`: PostgreSQL only). */
const TABLE = /^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$/;

const duration = z.union([z.number(), z.string()]).refine((v) => parseDuration(v) !== undefined, {
  message: 'expected a duration: milliseconds, or a number with ms, s, m, h or d (e.g. "30s")',
});
const size = z.union([z.number(), z.string()]).refine((v) => parseSize(v) !== undefined, {
  message: 'expected a size: bytes, or a number with B, KB, MB, GB, KiB, MiB or GiB (e.g. "4GiB")',
});
const badRows = z.union([z.number().int().min(0), z.string().regex(/^\d+(\.\d+)?%$/, 'expected a count or a percentage such as "2%"')]);

const range = z.string().refine((v) => parseRange(v) !== undefined, { message: 'expected a 1-based character range: start-end (1-10) or start+length (1+10)' });

const fixedSchema = z.strictObject({
  record_type: z.strictObject({
    start: z.number().int().min(1),
    length: z.number().int().min(1),
    data: z.string().min(1).default('D'),
    header: z.string().min(1).optional(),
    trailer: z.string().min(1).optional(),
  }).optional(),
  trailer: z.strictObject({
    count: range.optional(),
    sums: z.record(z.string(), range).default({}),
  }).optional(),
});

const flowSchema = z.strictObject({
  pattern: z.string().optional(),
  format: z.enum(['csv', 'ndjson', 'fixed', 'xlsx', 'x12']).default('csv'),
  compression: z.enum(['auto', 'gzip', 'zip', 'none']).default('auto'),
  max_record_bytes: z.number().int().positive().default(1024 * 1024),
  max_decompressed_size: size.default('4GiB'),
  max_compression_ratio: z.number().positive().default(100),
  fixed: fixedSchema.optional(),
  xlsx: z.strictObject({
    sheet: z.string().min(1).optional(),
    max_rows: z.number().int().positive().default(1_048_576),
    max_cells: z.number().int().positive().default(50_000_000),
  }).prefault({}),
  x12: z.strictObject({
    line: z.string().regex(/^[A-Z][A-Z0-9]{1,2}$/, 'expected the segment id that starts a line loop, such as LIN, PO1 or IT1'),
    ack: z.union([z.literal(997), z.literal(999), z.literal('none')]).default(997),
    ta1: z.enum(['requested', 'always', 'never']).default('requested'),
  }).optional(),
  totals_from: z.enum(['manifest', 'trailer']).default('manifest'),
  csv: z.strictObject({
    delimiter: z.string().min(1).max(4).default(','),
    quote: z.string().regex(/^[\x21-\x7e]$/, 'expected one ASCII character, such as \'"\'').default('"'),
    header: z.boolean().default(true),
    encoding: z.string().default('utf-8'),
    max_record_bytes: z.number().int().positive().default(1024 * 1024),
  }).prefault({}),
  mapping: z.string(),
  table: z.string().regex(TABLE, 'expected a table name (letters, digits, _), or schema.table with PostgreSQL'),
  key: z.array(z.string()).min(1),
  totals: z.array(z.string()).default([]),
  sidecar: z.enum(['required', 'optional']).default('required'),
  manifest: z.enum(['required', 'optional']).default('required'),
  manifest_name: z.string().default('{file}.manifest.json'),
  max_bad_rows: badRows.default(0),
  max_reported_errors: z.number().int().positive().default(1000),
  /** default wait; ignore for x12, whose sequence (ISA13) is known only once the file is read */
  sequence_gap: z.enum(['wait', 'warn', 'ignore']).optional(),
  gap_wait: duration.default('15m'),
  window: z.strictObject({
    cron: z.string().refine(validCron, 'expected a cron expression such as "0 2 * * *"'),
    duration: duration,
    timezone: z.string().refine(validZone, 'expected an IANA time zone such as "UTC" or "Europe/Berlin"').default('UTC'),
    at_risk: duration.optional(),
  }).optional(),
});

const remoteSchema = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(22),
  user: z.string().min(1),
  private_key: z.string(),
  passphrase_file: z.string().optional(),
  host_key: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}=?$/, "expected the server's host key fingerprint as ssh-keygen -l prints it: SHA256:<43 characters>"),
  legacy_algorithms: z.boolean().default(false),
  inbox: z.string().default('outbox'),
  outbox: z.string().default('inbox'),
  archive: z.string().default('archive'),
  after_pull: z.enum(['archive', 'delete']).default('archive'),
  schedule: z.string().refine(validCron, 'expected a cron expression (5 or 6 fields)').default('*/1 * * * *'),
  stable_for: duration.default('2s'),
  retry: z.string().default('5,600000,full'),
  connect_timeout: duration.default('20s'),
  op_timeout: duration.default('60s'),
  idle_timeout: duration.default('60s'),
  breaker_failures: z.number().int().min(1).default(5),
  breaker_cooldown: duration.default('5m'),
  max_connections: z.number().int().min(1).default(2),
  rate_per_sec: z.number().positive().default(10),
  burst: z.number().int().min(1).default(20),
});

/**
 * Retention (inboxd prune, and the daemon's prune_schedule), in whole days; a partner's values override
 * the global ones key by key. Defaults: archive_days 90 (archive/ files, by modification time),
 * error_days 30 (error/ files), records_days 365 (dedupe, delivery, audit and window rows; the last
 * sequence of each flow is always kept, so an old file sent again is still recognised).
 */
const days = z.number().int().min(1);
const retentionSchema = z.strictObject({ archive_days: days.optional(), error_days: days.optional(), records_days: days.optional() });
const RETENTION_DEFAULTS = { archiveDays: 90, errorDays: 30, recordsDays: 365 } as const;

const partnerSchema = z.strictObject({
  retention: retentionSchema.optional(),
  remote: remoteSchema.optional(),
  pgp: z.strictObject({
    verification_keys: z.array(z.string()).default([]),
    require_signature: z.boolean().optional(),
    require_encryption: z.boolean().default(false),
  }).optional(),
  flows: z.record(z.string().regex(ID, 'flow ids are lower-case letters, digits, _ and -'), flowSchema),
});

/** An alert or notify action: a command given the JSON on its standard input, or an HTTP POST of it; retried. */
const actionFields = {
  command: z.array(z.string()).min(1).optional(),
  http: z.strictObject({ url: z.url(), timeout: duration.default('10s') }).optional(),
  retry: z.string().default('5,600000,full'),
};
const oneAction = (a: { command?: unknown; http?: unknown }) => !!a.command !== !!a.http;
const ONE_ACTION = 'give exactly one of command or http';
export const NOTIFY_EVENTS = ['delivery.accepted', 'delivery.rejected', 'delivery.duplicate'] as const;

const configSchema = z.strictObject({
  root: z.string(),
  database: databaseSchema,
  work_dir: z.string().optional(),
  settle_time: duration.default('500ms'),
  incomplete_after: duration.default('15m'),
  temp_patterns: z.array(z.string()).default(['*.tmp', '*.part', '*.filepart', '.*']),
  log_level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
  max_parallel: z.number().int().min(1).max(64).default(2),
  watch: z.boolean().default(true),
  sweep: z.string().refine(validCron, 'expected a cron expression (5 or 6 fields)').default('*/30 * * * * *'),
  shutdown_timeout: duration.default('30s'),
  /** a delivery failing for a reason of ours: tried this many times, waiting retry_backoff, doubling, in between */
  max_attempts: z.number().int().min(1).max(100).default(5),
  retry_backoff: duration.default('1m'),
  pgp: z.strictObject({
    keys: z.array(z.string()).min(1),
    passphrase_file: z.string().optional(),
    passphrase_env: z.string().optional(),
    expiry_warning_days: z.number().int().min(0).default(30),
    max_decompressed_size: size.default('4GiB'),
    max_compression_ratio: z.number().positive().default(100),
  }).refine((p) => !(p.passphrase_file && p.passphrase_env), 'give passphrase_file or passphrase_env, not both').optional(),
  retention: retentionSchema.optional(),
  /** when the daemon prunes (cron, local time); false: only `inboxd prune` does. Default '30 3 * * *' */
  prune_schedule: z.union([z.string().refine(validCron, 'expected a cron expression (5 or 6 fields), or false'), z.literal(false)]).default('30 3 * * *'),
  /**
   * The daemon's HTTP listener (/metrics, /healthz, /readyz). Off unless given. listen: "host:port"
   * (port 0: any free port, logged); a non-loopback host needs allow_remote: true (default false).
   */
  http: z.strictObject({
    listen: z.string(), allow_remote: z.boolean().default(false),
    /** the operations page under / (web/); users: the file of users and password hashes it needs */
    ui: z.boolean().default(false), users: z.string().optional(),
    /** serve HTTPS (metrics and page alike): PEM certificate chain and key files */
    tls: z.strictObject({ cert: z.string(), key: z.string() }).optional(),
  }).refine((h) => !h.ui || h.users !== undefined, { message: 'ui: true needs users: the file of users and password hashes (inboxd web adduser)', path: ['users'] }).optional(),
  alert: z.strictObject(actionFields).refine(oneAction, ONE_ACTION).optional(),
  /** actions run on each delivery's outcome; each may keep to some events and some partners */
  notify: z.array(z.strictObject({
    ...actionFields,
    events: z.array(z.enum(NOTIFY_EVENTS)).min(1).optional(),
    partners: z.array(z.string()).min(1).optional(),
  }).refine(oneAction, ONE_ACTION)).default([]),
  partners: z.record(z.string().regex(ID, 'partner ids are lower-case letters, digits, _ and -'), partnerSchema),
});

export interface CsvDialect {
  delimiter: string;
  quote: string;
  header: boolean;
  encoding: string;
  maxRecordBytes: number;
}

export type RecordFormatName = 'csv' | 'ndjson' | 'fixed' | 'xlsx' | 'x12';

/**
 * EDI X12: the segment that starts a line loop (each loop one row), the acknowledgment we answer
 * with, and when a TA1 goes with it (`requested`: when the partner's ISA14 asks for one).
 */
export interface X12Options {
  line: string;
  ack: 997 | 999 | 'none';
  ta1: 'requested' | 'always' | 'never';
}

/** A workbook's sheet (the first unless named) and the limits on what it may hold. */
export interface XlsxOptions {
  sheet?: string;
  maxRows: number;
  maxCells: number;
}
export type Compression = 'auto' | 'gzip' | 'zip' | 'none';

/** A fixed-width file's record-type column: which records are data, and which the header and trailer. */
export interface FixedLayout {
  recordType?: { start: number; length: number; data: string; header?: string; trailer?: string };
  /** where the trailer record holds the record count and the control totals (our column -> range) */
  trailer?: { count?: CharRange; sums: Record<string, CharRange> };
}

/** Limits on what a compressed data file may expand to (bombs), as for OpenPGP. */
export interface DecompressionLimits {
  maxBytes: number;
  maxRatio: number;
}

export interface FlowConfig {
  partner: string;
  id: string;
  pattern: RegExp;
  /** how the data file's bytes become records (formats/) */
  format: RecordFormatName;
  compression: Compression;
  /** the longest record of a line format (ndjson, fixed) */
  maxRecordBytes: number;
  decompression: DecompressionLimits;
  fixed: FixedLayout;
  xlsx: XlsxOptions;
  /** with format x12 only */
  x12?: X12Options;
  /** where a delivery's sequence comes from: its file name, or (x12) the interchange control number ISA13 */
  sequenceFrom: 'name' | 'interchange';
  /** where the control totals come from: the manifest, or a fixed-width file's trailer record */
  totalsFrom: 'manifest' | 'trailer';
  csv: CsvDialect;
  mappingPath: string;
  fields: readonly FieldSpec[];
  table: string;
  key: readonly string[];
  totals: readonly string[];
  sidecarRequired: boolean;
  manifestRequired: boolean;
  manifestName: string;
  /** bad rows tolerated: an absolute count or a fraction of rows read */
  maxBadRows: { count: number } | { fraction: number };
  maxReportedErrors: number;
  /** a sequence number skipped: wait for it (up to gapWaitMs, then alert and go on), warn and go on, or ignore */
  sequenceGap: 'wait' | 'warn' | 'ignore';
  gapWaitMs: number;
  window?: WindowSpec;
}

export interface WindowSpec {
  cron: string;
  durationMs: number;
  timezone: string;
  atRiskMs?: number;
}

export interface AlertAction {
  command?: readonly string[];
  http?: { url: string; timeoutMs: number };
  retry: RetryPolicy;
}

/** The outcomes a `notify` action is told of. */
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];

/** An action run on delivery outcomes: all of them, or those of `events` and `partners` only. */
export interface NotifyAction extends AlertAction {
  events?: readonly NotifyEvent[];
  partners?: readonly string[];
}

/** Our OpenPGP keys: private key files (several during a rotation) and where the passphrase is. */
export interface PgpConfig {
  keyFiles: readonly string[];
  passphraseFile?: string;
  passphraseEnv?: string;
  expiryWarningDays: number;
  maxDecompressedBytes: number;
  maxCompressionRatio: number;
}

export interface PartnerPgp {
  verificationKeyFiles: readonly string[];
  /** defaults to true when the partner has verification keys */
  requireSignature: boolean;
  requireEncryption: boolean;
}

/** A partner whose files we pull from its own SFTP server, and whose answers we push back there. */
export interface RemoteConfig {
  host: string;
  port: number;
  user: string;
  privateKeyFile: string;
  passphraseFile?: string;
  /** pinned: a server presenting another key is refused, never trusted on first use */
  hostKey: string;
  legacyAlgorithms: boolean;
  /** directories on the partner's server: where its files wait, where our answers go, where pulled originals go */
  dirs: { inbox: string; outbox: string; archive: string };
  afterPull: 'archive' | 'delete';
  schedule: string;
  stableForMs: number;
  retry: RetryPolicy;
  timeouts: { connectMs: number; opMs: number; transferIdleMs: number };
  breaker: { failures: number; cooldownMs: number };
  limits: { maxConnections: number; ratePerSec: number; burst: number };
}

export interface PartnerDirs {
  root: string;
  inbox: string;
  outbox: string;
  archive: string;
  error: string;
  /** private: outside the partner's tree, on the same filesystem so claiming is a rename */
  work: string;
}

export interface Retention {
  archiveDays: number;
  errorDays: number;
  recordsDays: number;
}

export interface HttpConfig {
  host: string;
  port: number;
  /** the operations page: on with its users file */
  ui?: { usersFile: string };
  tls?: { certFile: string; keyFile: string };
}

export interface PartnerConfig {
  id: string;
  dirs: PartnerDirs;
  retention: Retention;
  pgp: PartnerPgp;
  remote?: RemoteConfig;
  flows: readonly FlowConfig[];
}

export interface Config {
  file: string;
  root: string;
  /** the SQLite file's path, or the PostgreSQL URL: for messages (never with a password) */
  database: string;
  /** what `database` resolved to (config/database.ts) */
  db: DatabaseConfig;
  /** the partners' working directories are below it (`<work_dir>/<partner>`) */
  workDir: string;
  settleMs: number;
  incompleteAfterMs: number;
  tempPatterns: readonly RegExp[];
  logLevel: string;
  maxParallel: number;
  watch: boolean;
  sweep: string;
  shutdownTimeoutMs: number;
  /** deliveries that fail for a reason of ours (retry.ts, deliveryRetry) */
  maxAttempts: number;
  retryBackoffMs: number;
  alert?: AlertAction;
  notify: readonly NotifyAction[];
  pgp?: PgpConfig;
  /** the global retention; each partner's own is in PartnerConfig */
  retention: Retention;
  /** undefined: the daemon never prunes on its own */
  pruneSchedule?: string;
  http?: HttpConfig;
  partners: readonly PartnerConfig[];
}

export function configError(file: string, path: string, message: string): InboxdError {
  return new InboxdError('CONFIG_INVALID', `${file}: ${path ? `${path}: ` : ''}${message}`, { file, path, problem: message });
}

/** Every problem found, in one error: a person fixes them in one go, not one per start. */
function configErrors(file: string, errors: readonly InboxdError[]): InboxdError {
  if (errors.length === 1) return errors[0]!;
  const lines = errors.map((e) => `  ${e.details.path ? `${e.details.path as string}: ` : ''}${e.details.problem as string}`);
  return new InboxdError('CONFIG_INVALID', `${file}: ${errors.length} problems:\n${lines.join('\n')}`, { file, path: errors[0]!.details.path, problems: errors.length });
}

/** Runs one part of resolving, keeping a configuration error to report with the others. */
function gather<T>(errors: InboxdError[], fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof InboxdError) || err.code !== 'CONFIG_INVALID') throw err;
    errors.push(err);
    return undefined;
  }
}

/** zod's words where they do not say what a person needs: a key left out is "missing"; a bad id, the rule. */
function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_key') return `"${String(issue.path.at(-1))}" is not a valid id: ${issue.issues[0]?.message ?? issue.message}`;
  return issue.message;
}
const missing = (issue: { code: string; input?: unknown }) => (issue.code === 'invalid_type' && issue.input === undefined ? 'missing' : undefined);

export function loadConfig(file: string): Config {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    throw configError(abs, '', `cannot read: ${(err as Error).message}`);
  }
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) throw configError(abs, '', `not valid YAML: ${doc.errors[0]!.message}`);
  const parsed = configSchema.safeParse(toJS(abs, doc), { error: missing });
  if (!parsed.success) throw configErrors(abs, parsed.error.issues.map((i) => configError(abs, formatPath(i.path), issueMessage(i))));
  return deepFreeze(resolveConfig(abs, parsed.data));
}

/** Aliases are expanded with a bound: a few lines of nested aliases (a "billion laughs") would expand into gigabytes. */
const MAX_ALIASES = 100;

function toJS(file: string, doc: ReturnType<typeof parseDocument>): unknown {
  try {
    return doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (err) {
    throw configError(file, '', `not accepted: ${(err as Error).message} (aliases expand to at most ${MAX_ALIASES} nodes)`);
  }
}

function resolveConfig(file: string, raw: z.infer<typeof configSchema>): Config {
  const base = dirname(file);
  const root = resolve(base, raw.root);
  const workRoot = resolve(base, raw.work_dir ?? join(raw.root, '.work'));
  const errors: InboxdError[] = [];
  const partners = Object.entries(raw.partners).map(([id, p]): PartnerConfig => ({
    id,
    dirs: {
      root: join(root, id),
      inbox: join(root, id, 'inbox'),
      outbox: join(root, id, 'outbox'),
      archive: join(root, id, 'archive'),
      error: join(root, id, 'error'),
      work: join(workRoot, id),
    },
    pgp: {
      verificationKeyFiles: (p.pgp?.verification_keys ?? []).map((k) => resolve(base, k)),
      requireSignature: p.pgp?.require_signature ?? (p.pgp?.verification_keys ?? []).length > 0,
      requireEncryption: p.pgp?.require_encryption ?? false,
    },
    retention: resolveRetention(raw.retention, p.retention),
    remote: p.remote && gather(errors, () => resolveRemote(file, base, id, p.remote!)),
    flows: Object.entries(p.flows).flatMap(([flowId, f]) => gather(errors, () => resolveFlow(file, base, id, flowId, f)) ?? []),
  }));
  partners.forEach((p) => gather(errors, () => {
    if (p.pgp.requireSignature && p.pgp.verificationKeyFiles.length === 0) throw configError(file, `partners.${p.id}.pgp.verification_keys`, 'require_signature needs at least one key');
    if ((p.pgp.requireEncryption || p.pgp.requireSignature) && !raw.pgp) throw configError(file, 'pgp.keys', `partner ${p.id} sends encrypted files: our private key is needed`);
  }));
  if (partners.length === 0) errors.push(configError(file, 'partners', 'no partners configured'));
  if (errors.length === 0) checkSharedTables(file, partners);
  const alert = raw.alert && gather(errors, () => resolveAction(file, 'alert', raw.alert!));
  const notify = raw.notify.map((n, i) => gather(errors, () => {
    const unknown = n.partners?.find((p) => !partners.some((c) => c.id === p));
    if (unknown !== undefined) throw configError(file, `notify[${i}].partners`, `"${unknown}" is not a configured partner`);
    return { ...resolveAction(file, `notify[${i}]`, n), events: n.events, partners: n.partners };
  }));
  const http = raw.http && gather(errors, () => resolveListen(file, raw.http!.listen, raw.http!.allow_remote));
  const db = gather(errors, () => {
    try {
      return resolveDatabase(base, raw.database);
    } catch (err) {
      if (err instanceof DatabaseKeyError) throw configError(file, 'database', err.message);
      throw err;
    }
  });
  if (db?.kind === 'sqlite') {
    for (const p of partners) for (const f of p.flows) if (f.table.includes('.')) errors.push(configError(file, `partners.${p.id}.flows.${f.id}.table`, `"${f.table}": a schema-qualified table needs PostgreSQL; with SQLite, name the table alone`));
  }
  if (errors.length > 0 || !db) throw configErrors(file, errors);
  return {
    file,
    root,
    database: databaseName(db),
    db,
    workDir: workRoot,
    settleMs: parseDuration(raw.settle_time)!,
    incompleteAfterMs: parseDuration(raw.incomplete_after)!,
    tempPatterns: raw.temp_patterns.map(globToRegExp),
    logLevel: raw.log_level,
    maxParallel: raw.max_parallel,
    watch: raw.watch,
    sweep: raw.sweep,
    shutdownTimeoutMs: parseDuration(raw.shutdown_timeout)!,
    maxAttempts: raw.max_attempts,
    retryBackoffMs: parseDuration(raw.retry_backoff)!,
    alert,
    notify: notify.filter((n) => n !== undefined),
    pgp: raw.pgp && {
      keyFiles: raw.pgp.keys.map((k) => resolve(base, k)),
      passphraseFile: raw.pgp.passphrase_file && resolve(base, raw.pgp.passphrase_file),
      passphraseEnv: raw.pgp.passphrase_env,
      expiryWarningDays: raw.pgp.expiry_warning_days,
      maxDecompressedBytes: parseSize(raw.pgp.max_decompressed_size)!,
      maxCompressionRatio: raw.pgp.max_compression_ratio,
    },
    retention: resolveRetention(raw.retention, undefined),
    pruneSchedule: raw.prune_schedule === false ? undefined : raw.prune_schedule,
    http: http && {
      ...http,
      ui: raw.http!.ui ? { usersFile: resolve(base, raw.http!.users!) } : undefined,
      tls: raw.http!.tls && { certFile: resolve(base, raw.http!.tls.cert), keyFile: resolve(base, raw.http!.tls.key) },
    },
    partners,
  };
}

/** Flows may write one table, but with the same key: a table has one primary key, which every upsert targets. */
function checkSharedTables(file: string, partners: readonly PartnerConfig[]): void {
  const first = new Map<string, FlowConfig>();
  for (const f of partners.flatMap((p) => p.flows)) {
    const other = first.get(f.table);
    if (!other) first.set(f.table, f);
    else if (!sameColumns(other.key, f.key)) {
      throw configError(file, `partners.${f.partner}.flows.${f.id}.key`, `table "${f.table}" is also written by partners.${other.partner}.flows.${other.id} with the key (${other.key.join(', ')}), this flow says (${f.key.join(', ')}); flows sharing a table need the same key`);
    }
  }
}

type RawRetention = z.infer<typeof retentionSchema> | undefined;

function resolveRetention(global: RawRetention, own: RawRetention): Retention {
  return {
    archiveDays: own?.archive_days ?? global?.archive_days ?? RETENTION_DEFAULTS.archiveDays,
    errorDays: own?.error_days ?? global?.error_days ?? RETENTION_DEFAULTS.errorDays,
    recordsDays: own?.records_days ?? global?.records_days ?? RETENTION_DEFAULTS.recordsDays,
  };
}

/** "127.0.0.1:9464", "[::1]:9464", "localhost:9464". Metrics name partners and flows: loopback unless allowed. */
function resolveListen(file: string, listen: string, allowRemote: boolean): HttpConfig {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw configError(file, 'http.listen', `expected "host:port" such as "127.0.0.1:9464", got "${listen}"`);
  const host = m[1] ?? m[2]!;
  const loopback = host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  if (!loopback && !allowRemote) throw configError(file, 'http.listen', `${host} is not a loopback address; metrics name partners and flows: set http.allow_remote: true to listen there anyway`);
  return { host, port };
}

function resolveRemote(file: string, base: string, partner: string, r: z.infer<typeof remoteSchema>): RemoteConfig {
  return {
    host: r.host,
    port: r.port,
    user: r.user,
    privateKeyFile: resolve(base, r.private_key),
    passphraseFile: r.passphrase_file && resolve(base, r.passphrase_file),
    hostKey: r.host_key.replace(/=$/, ''),
    legacyAlgorithms: r.legacy_algorithms,
    dirs: { inbox: r.inbox, outbox: r.outbox, archive: r.archive },
    afterPull: r.after_pull,
    schedule: r.schedule,
    stableForMs: parseDuration(r.stable_for)!,
    retry: retryPolicy(file, `partners.${partner}.remote.retry`, r.retry),
    timeouts: { connectMs: parseDuration(r.connect_timeout)!, opMs: parseDuration(r.op_timeout)!, transferIdleMs: parseDuration(r.idle_timeout)! },
    breaker: { failures: r.breaker_failures, cooldownMs: parseDuration(r.breaker_cooldown)! },
    limits: { maxConnections: r.max_connections, ratePerSec: r.rate_per_sec, burst: r.burst },
  };
}

function resolveFlow(file: string, base: string, partner: string, id: string, f: z.infer<typeof flowSchema>): FlowConfig {
  const at = `partners.${partner}.flows.${id}`;
  const mappingPath = resolve(base, f.mapping);
  let fields: FieldSpec[];
  try {
    fields = loadMapping(mappingPath);
  } catch (err) {
    throw configError(file, `${at}.mapping`, `${mappingPath}: ${(err as Error).message}`);
  }
  const ours = new Set(fields.map((x) => x.ours));
  f.key.forEach((k, i) => {
    if (!ours.has(k)) throw configError(file, `${at}.key[${i}]`, `"${k}" is not a column of the mapping`);
  });
  f.totals.forEach((t, i) => {
    const field = fields.find((x) => x.ours === t);
    if (!field) throw configError(file, `${at}.totals[${i}]`, `"${t}" is not a column of the mapping`);
    if (field.type !== 'integer' && field.type !== 'amount') throw configError(file, `${at}.totals[${i}]`, `"${t}" is ${field.type}; only integer and amount columns can be summed`);
  });
  checkFormat(file, at, f, fields);
  if (f.format === 'csv' && !f.csv.header) {
    fields.forEach((x) => {
      if (!/^[1-9]\d*$/.test(x.partner)) throw configError(file, `${at}.mapping`, `with csv.header false, partner column "${x.partner}" must be a column number`);
    });
  }
  // Key columns identify rows: a row without one can never be upserted.
  fields = fields.map((x) => (f.key.includes(x.ours) ? { ...x, required: true } : x));
  return {
    partner,
    id,
    pattern: compilePattern(file, `${at}.pattern`, f.pattern ?? defaultPattern(partner, id, f.format), f.format !== 'x12'),
    format: f.format,
    compression: f.compression,
    maxRecordBytes: f.max_record_bytes,
    decompression: { maxBytes: parseSize(f.max_decompressed_size)!, maxRatio: f.max_compression_ratio },
    fixed: fixedLayout(f.fixed),
    xlsx: { sheet: f.xlsx.sheet, maxRows: f.xlsx.max_rows, maxCells: f.xlsx.max_cells },
    x12: f.x12,
    sequenceFrom: f.format === 'x12' ? 'interchange' : 'name',
    totalsFrom: f.totals_from,
    csv: { delimiter: f.csv.delimiter, quote: f.csv.quote, header: f.csv.header, encoding: checkEncoding(file, `${at}.csv.encoding`, f.csv.encoding), maxRecordBytes: f.csv.max_record_bytes },
    mappingPath,
    fields,
    table: f.table,
    key: f.key,
    totals: f.totals,
    sidecarRequired: f.sidecar === 'required',
    // Totals from the trailer: the manifest is needed for nothing.
    manifestRequired: f.manifest === 'required' && f.totals_from !== 'trailer',
    manifestName: f.manifest_name,
    maxBadRows: typeof f.max_bad_rows === 'number' ? { count: f.max_bad_rows } : { fraction: Number(f.max_bad_rows.slice(0, -1)) / 100 },
    maxReportedErrors: f.max_reported_errors,
    sequenceGap: f.sequence_gap ?? (f.format === 'x12' ? 'ignore' : 'wait'),
    gapWaitMs: parseDuration(f.gap_wait)!,
    window: f.window && {
      cron: f.window.cron,
      durationMs: parseDuration(f.window.duration)!,
      timezone: f.window.timezone,
      atRiskMs: f.window.at_risk === undefined ? undefined : parseDuration(f.window.at_risk),
    },
  };
}

/**
 * The playbook's `partner_flow_YYYYMMDDThhmmssZ_seq.ext`; the partner prefix and the seconds are optional
 * so that its own example `inventory_20250916T0200Z_001.csv` parses too.
 */
export function defaultPattern(partner: string, flow: string, format: RecordFormatName = 'csv'): string {
  const lit = (s: string) => s.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
  // An interchange carries its own sequence (ISA13): in its name, a number is optional.
  const seq = format === 'x12' ? '(?:_(?<seq>\\d{1,18}))?' : '_(?<seq>\\d{1,18})';
  return `^(?:${lit(partner)}_)?${lit(flow)}_(?<ts>\\d{8}T\\d{4}(?:\\d{2})?Z)${seq}\\.(?:${EXTENSIONS[format]})(?:\\.(?:gz|zip))?(?:\\.(?:pgp|gpg|asc))?$`;
}

/** The data file's extensions each format accepts in the default pattern. */
const EXTENSIONS: Record<RecordFormatName, string> = { csv: 'csv|txt', ndjson: 'ndjson|jsonl|json', fixed: 'txt|dat|fix', xlsx: 'xlsx', x12: 'x12|edi' };

/** What the mapping's `partner` means for the flow's format, and the keys only some formats take. */
function checkFormat(file: string, at: string, f: z.infer<typeof flowSchema>, fields: readonly FieldSpec[]): void {
  if (f.format === 'fixed') {
    fields.forEach((x) => {
      if (!parseRange(x.partner)) throw configError(file, `${at}.mapping`, `with format fixed, partner "${x.partner}" of "${x.ours}" must be a character range: start-end (1-10) or start+length (1+10)`);
    });
  } else if (f.fixed) throw configError(file, `${at}.fixed`, 'only a flow with format fixed takes a fixed layout');
  checkX12(file, at, f, fields);
  if (f.totals_from === 'trailer') {
    if (f.format !== 'fixed' || !f.fixed?.trailer || !f.fixed.record_type?.trailer) throw configError(file, `${at}.totals_from`, 'totals from the trailer need format fixed with fixed.record_type.trailer and fixed.trailer');
    if (!f.fixed.trailer.count) throw configError(file, `${at}.fixed.trailer.count`, 'totals from the trailer need where the trailer holds the record count');
    const missing = f.totals.filter((t) => !Object.hasOwn(f.fixed!.trailer!.sums, t));
    if (missing.length) throw configError(file, `${at}.fixed.trailer.sums`, `the trailer needs a range for each control total: ${missing.join(', ')} missing`);
  }
  for (const t of Object.keys(f.fixed?.trailer?.sums ?? {})) {
    if (!f.totals.includes(t)) throw configError(file, `${at}.fixed.trailer.sums.${t}`, `"${t}" is not a control total of this flow (totals)`);
  }
}

function checkX12(file: string, at: string, f: z.infer<typeof flowSchema>, fields: readonly FieldSpec[]): void {
  if (f.format !== 'x12') {
    if (f.x12) throw configError(file, `${at}.x12`, 'only a flow with format x12 takes x12 settings');
    return;
  }
  if (!f.x12) throw configError(file, `${at}.x12`, 'format x12 needs x12.line: the segment that starts each line loop (LIN for an 846, PO1 for an 850, IT1 for an 810)');
  fields.forEach((x) => {
    if (!parseElementRef(x.partner)) throw configError(file, `${at}.mapping`, `with format x12, partner "${x.partner}" of "${x.ours}" must be an element reference: a segment id and two digits (LIN03, QTY02)`);
  });
  if (f.sequence_gap === 'wait') throw configError(file, `${at}.sequence_gap`, 'an interchange\'s sequence (ISA13) is known only once it is read, so a gap cannot be waited for: use warn or ignore');
}

function fixedLayout(raw: z.infer<typeof fixedSchema> | undefined): FixedLayout {
  if (!raw) return {};
  const trailer = raw.trailer && { count: raw.trailer.count === undefined ? undefined : parseRange(raw.trailer.count), sums: Object.fromEntries(Object.entries(raw.trailer.sums).map(([k, v]) => [k, parseRange(v)!])) };
  return { recordType: raw.record_type, trailer };
}

/** `needsSeq`: the sequence comes from the name (every format but x12, whose interchange carries it). */
function compilePattern(file: string, path: string, source: string, needsSeq: boolean): RegExp {
  let re: RegExp;
  try {
    re = new RegExp(source);
  } catch (err) {
    throw configError(file, path, `not a valid regular expression: ${(err as Error).message}`);
  }
  if (needsSeq && !source.includes('(?<seq>')) throw configError(file, path, 'the pattern needs a named group (?<seq>...) for the sequence number');
  return re;
}

const require = createRequire(import.meta.url);

/**
 * Valid for both the scheduler (node-cron) and the window arithmetic (cron-parser). Both are loaded
 * here only for a configuration that has a cron expression: loading them took ~30 ms of every start.
 */
function validCron(expr: string): boolean {
  try {
    (require('cron-parser') as typeof import('cron-parser')).CronExpressionParser.parse(expr);
    return (require('node-cron') as typeof import('node-cron')).validate(expr);
  } catch {
    return false;
  }
}

function validZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

function resolveAction(file: string, path: string, raw: { command?: string[]; http?: { url: string; timeout: string | number }; retry: string }): AlertAction {
  return {
    command: raw.command,
    http: raw.http && { url: raw.http.url, timeoutMs: parseDuration(raw.http.timeout)! },
    retry: retryPolicy(file, `${path}.retry`, raw.retry),
  };
}

function retryPolicy(file: string, path: string, spec: string): RetryPolicy {
  try {
    return parseRetryPolicy(spec);
  } catch (err) {
    throw configError(file, path, (err as Error).message);
  }
}

function checkEncoding(file: string, path: string, encoding: string): string {
  try {
    new TextDecoder(encoding);
  } catch {
    throw configError(file, path, `unknown encoding "${encoding}"`);
  }
  return encoding;
}

/** `*` and `?` wildcards; everything else literal. */
export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 's');
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`)).join('');
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !(value instanceof RegExp) && !Object.isFrozen(value)) {
    Object.values(value).forEach(deepFreeze);
    Object.freeze(value);
  }
  return value;
}

/** The YAML file's JSON Schema, for editors (yaml-language-server): keys, types, defaults, enums. */
export function configJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(configSchema, { io: 'input', target: 'draft-7', unrepresentable: 'any' });
  return { ...schema, title: 'inboxd configuration', description: 'inboxd.yaml: see README.md, Configuration' };
}
