/**
 * The per-delivery orchestrator: the one place that knows the order of the steps.
 * claim -> verify companions -> stream (hash, parse, map, stage) -> check totals -> commit -> answer.
 * It owns the transaction and turns every error into an outcome: reject (answered in error/), or
 * retry (the delivery goes back to the inbox untouched and is taken again later, after a backoff, up
 * to max_attempts times; then it is given up on: answered INTERNAL_ERROR in error/, and alerted).
 */
import { createHash, type Hash, randomBytes } from 'node:crypto';
import { createWriteStream, promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import { Duplex, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Alert } from '../notify/alert.js';
import { type AnswerFacts, type AnswerPlan, carryOut, planAccepted, planRejected, replayPlan, type Taken, takenNames } from '../pipeline/answer.js';
import { fingerprint } from '../store/fingerprint.js';
import { claim, INTERNAL_PREFIX, release } from '../pipeline/claim.js';
import type { FlowConfig, PartnerConfig } from '../config/config.js';
import { crashPoint } from '../crashpoint.js';
import type { ReadyDelivery, Stale } from '../pipeline/discover.js';
import { classify, InboxdError, reject } from '../errors.js';
import { openRegular, readSmall } from '../pipeline/fsx.js';
import { stringifyExact } from '../json.js';
import type { Keyring } from '../pgp/keyring.js';
import type { Logger } from '../log.js';
import { type Exact, type MapStats, toMinorUnits } from '../pipeline/map.js';
import { type DeliveryObserver, safeEmit } from '../observers.js';
import { decoder } from '../formats/csv/parse.js';
import { compressionError, gunzip, soleEntry, unpackOf } from '../formats/compression.js';
import { readTrailer } from '../formats/fixed.js';
import type { LineFormat } from '../formats/records.js';
import { checkXlsxSize, sheetLines } from '../formats/xlsx.js';
import { type InterchangeReader, x12Lines } from '../formats/x12.js';
import { checkEnvelopes, interchangeSeq, withX12Answer, x12Reader } from './x12.js';
import { lineStagingSink } from '../pipeline/stage-lines.js';
import { decryptFailed, type DecryptOptions, decryptStream, isEncryptedName, signerText, type Verdict } from '../pgp/decrypt.js';
import { backoffDelay, type RetryPolicy } from '../retry.js';
import { type StagedRows, Stager, stagingSink } from '../pipeline/stage.js';
import type { Applied, Attempts, DeliveryRecord, StagingWriter, Store } from '../store/types.js';
import { checkTotals, type Manifest, parseManifest, parseSidecar, sumsByOurName } from '../pipeline/verify.js';

export interface DeliveryContext {
  store: Store;
  log: Logger;
  partner: PartnerConfig;
  /** aborts a delivery in flight (shutdown): it is rolled back and goes back to the inbox */
  signal?: AbortSignal;
  keyring?: Keyring;
  /** metrics and the like, called through safeEmit */
  observer?: DeliveryObserver;
  /** failures of ours: attempts and backoff (retry.ts, deliveryRetry); without it, none is counted */
  retry?: RetryPolicy;
  /** the alert action (the daemon's): a delivery given up on is reported through it */
  alert?: (alert: Alert) => void;
  /** the epoch of the partner's lease the delivery was claimed under (several instances: Store.commit) */
  lease?: number;
}

/** A replay (replay.ts): the delivery replayed, and where its files were copied from. */
export interface ReplayMarker {
  of: string;
  from: 'archive' | 'error';
}

/**
 * `retry`: taken again no earlier than `retryAt`; with `record`, it was committed and only its answer
 * is still owed (recovery writes it).
 */
export type Result = { status: 'accepted' | 'rejected' | 'duplicate'; record: DeliveryRecord }
  | { status: 'retry' | 'skipped'; error?: InboxdError; retryAt?: number; record?: DeliveryRecord };

/** Sortable and short enough to type: 20250916T020012Z-3fa9c1 */
export function newDeliveryId(now = new Date()): string {
  return `${now.toISOString().replace(/[-:]|\.\d+/g, '')}-${randomBytes(3).toString('hex')}`;
}

export async function handleReady(ctx: DeliveryContext, ready: ReadyDelivery): Promise<Result> {
  const flow = ctx.partner.flows.find((f) => f.id === ready.name.flow)!;
  const id = newDeliveryId();
  const log = ctx.log.child({ delivery_id: id, partner: ctx.partner.id, flow: flow.id, file: ready.file, seq: ready.name.seq });
  // Read before the claim: the commit must find this very lease still held (Store.commit).
  const lease = ctx.store.leases?.epoch(ctx.partner.id);
  const dir = await claim(ctx.partner.dirs.inbox, ctx.partner.dirs.work, id, ready.files, { soleLinks: true });
  if (!dir) return { status: 'skipped' };
  log.info({ files: ready.files }, 'delivery claimed');
  return takeClaimed({ ...ctx, log, lease }, flow, ready, id, dir);
}

/**
 * The pipeline for files already in a working directory, with a replay marker (replay.ts): the
 * dedupe verdict (duplicate, conflict, out of order) is bypassed for this one replay, and the upsert
 * keeps rows a later sequence wrote. The same steps and the same transaction as any delivery.
 */
export async function ingestDir(ctx: DeliveryContext, ready: ReadyDelivery, id: string, dir: string, replay: ReplayMarker): Promise<Result> {
  const flow = ctx.partner.flows.find((f) => f.id === ready.name.flow)!;
  const log = ctx.log.child({ delivery_id: id, partner: ctx.partner.id, flow: flow.id, file: ready.file, seq: ready.name.seq, replay_of: replay.of });
  return takeClaimed({ ...ctx, log, lease: ctx.lease ?? ctx.store.leases?.epoch(ctx.partner.id) }, flow, ready, id, dir, replay);
}

async function takeClaimed(ctx: DeliveryContext, flow: FlowConfig, ready: ReadyDelivery, id: string, dir: string, replay?: ReplayMarker): Promise<Result> {
  const started = performance.now();
  const processedAt = new Date().toISOString();
  // Received when it arrived in the inbox, not when its turn came: what a delivery window is judged by.
  const receivedAt = new Date(ready.arrivedMs).toISOString();
  const facts: AnswerFacts = { id, partner: ctx.partner.id, flow: flow.id, file: ready.file, seq: ready.name.seq, sha256: null, files: ready.files, processedAt, replayOf: replay?.of, replayFrom: replay?.from };
  let record: DeliveryRecord;
  try {
    if (!replay) {
      // Audit: the upload's own time (on our clock), then the moment it was complete, settled and claimed.
      await ctx.store.event(id, 'received', ready.files.join(', '), receivedAt);
      await ctx.store.event(id, 'ready', 'complete and settled; claimed');
    }
    record = await ingest(ctx, flow, ready, dir, facts, receivedAt, replay);
  } catch (err) {
    return failed(ctx, facts, receivedAt, dir, err, started, replay);
  }
  if (!replay) await ctx.store.attempts.clear(ctx.partner.id, ready.file);
  crashPoint('after-commit');
  return answer(ctx, record, dir, started);
}

/** Committed: from here a failure leaves the work directory for recovery to finish, never the inbox. */
async function answer(ctx: DeliveryContext, record: DeliveryRecord, dir: string, started: number): Promise<Result> {
  let result: Result;
  try {
    result = await finish(ctx, record, dir);
  } catch (err) {
    const e = logFailure(ctx.log, err, `delivery ${record.outcome}, but its answer could not be written; recovery writes it`);
    return { status: 'retry', error: e, record, retryAt: Date.now() + (ctx.retry?.baseMs ?? 0) };
  }
  observe(ctx, record, started);
  return result;
}

/**
 * A failure before the commit. A replay's copies are dropped (the evidence is where it was); a
 * delivery goes back to the inbox to be taken again after a backoff, unless this was its last
 * attempt: then it is given up on. A file still being written, or a delivery rolled back because we
 * are stopping, is no failed attempt.
 */
async function failed(ctx: DeliveryContext, facts: AnswerFacts, receivedAt: string, dir: string, err: unknown, started: number, replay?: ReplayMarker): Promise<Result> {
  const e = classify(err);
  if (e.kind !== 'retry' || !(await fsp.stat(dir).catch(() => undefined))) throw err;
  // Not a failed attempt: a file still being written, a roll back because we stop, a partner another instance took over.
  const counts = !replay && !ctx.signal?.aborted && e.code !== 'FILE_CHANGING' && e.code !== 'LEASE_LOST';
  const attempts = counts ? await countAttempt(ctx, facts, dir, e) : undefined;
  const last = attempts && ctx.retry && attempts.attempts >= ctx.retry.maxAttempts;
  if (last) {
    try {
      return await giveUp(ctx, facts, receivedAt, dir, e, attempts, started);
    } catch (failure) {
      logFailure(ctx.log, failure, 'the delivery could not be given up on; put back to be tried again');
    }
  }
  // A replay's copies never go to the inbox: they are dropped, the evidence is where it was.
  const stuck = replay ? await fsp.rm(dir, { recursive: true, force: true }).then(() => []) : await release(ctx.partner.dirs.inbox, dir);
  // Best effort: with the database out of reach (the cause, often) the delivery is back in the inbox all the same.
  await ctx.store.event(facts.id, 'retry', `${e.code}: ${e.message}`).catch((failure: unknown) => logFailure(ctx.log, failure, 'the retry could not be recorded in the audit trail', {}, 'warn'));
  // Not counted though it should be (the database is away): still not taken again at once, but after the first backoff.
  const retryAt = attempts?.nextAt ?? Date.now() + (counts ? (ctx.retry?.baseMs ?? 0) : 0);
  const what = replay ? 'replay rolled back; run it again' : 'delivery put back to be tried again';
  logFailure(ctx.log, err, what, { stuck, attempt: attempts?.attempts, max_attempts: ctx.retry?.maxAttempts, retry_in_ms: retryAt - Date.now() }, counts ? 'warn' : 'info');
  return { status: 'retry', error: e, retryAt };
}

/**
 * Logs a failure of ours: an error nobody recognised (a bug, most likely) at error level with its
 * stack, a known one with its code and words. Returns it classified.
 */
export function logFailure(log: Logger, err: unknown, what: string, extra: Record<string, unknown> = {}, level: 'info' | 'warn' | 'error' = 'error'): InboxdError {
  const e = classify(err);
  if (e.code === 'UNEXPECTED_ERROR') log.error({ ...extra, code: e.code, err: e.cause ?? err }, `${what} (unexpected error: a bug?)`);
  else log[level]({ ...extra, code: e.code, err: e.message, cause: e.details.cause }, what);
  return e;
}

/** Counts the failed attempt (attempts.ts); undefined when it cannot be, which only means it is not counted. */
async function countAttempt(ctx: DeliveryContext, facts: AnswerFacts, dir: string, e: InboxdError): Promise<Attempts | undefined> {
  const policy = ctx.retry;
  if (!policy) return undefined;
  try {
    const print = await fingerprint(dir, facts.files);
    return await ctx.store.attempts.failed(ctx.partner.id, facts.file, print, { deliveryId: facts.id, code: e.code, error: e.message }, (n) => backoffDelay(n - 1, policy));
  } catch (err) {
    logFailure(ctx.log, err, 'the failed attempt could not be counted');
    return undefined;
  }
}

/**
 * The last attempt failed: the delivery is answered INTERNAL_ERROR in error/ (the partner is told the
 * fault is ours and that we know), alerted, and left for `inboxd replay` once the cause is fixed.
 */
async function giveUp(ctx: DeliveryContext, facts: AnswerFacts, receivedAt: string, dir: string, e: InboxdError, attempts: Attempts, started: number): Promise<Result> {
  const reason = `${facts.file} could not be processed: ${attempts.attempts} attempts failed for a reason on our side, not in the file. Our operations team has been alerted and will process it once that is fixed; there is no need to send it again`;
  const taken = await takenNames(facts, ctx.partner.dirs);
  const record = await ctx.store.commit(undefined, undefined, () => rejectedRecord(facts, receivedAt, reject('INTERNAL_ERROR', reason), undefined, taken), ctx.lease);
  await ctx.store.event(facts.id, 'given up', `after ${attempts.attempts} attempts (deliveries ${attempts.deliveryIds.join(', ')}); the last failed with ${e.code}: ${e.message}`);
  await ctx.store.attempts.clear(ctx.partner.id, facts.file);
  const message = `${ctx.partner.id}/${facts.flow}: ${facts.file} given up after ${attempts.attempts} attempts (${e.code}: ${e.message}); answered INTERNAL_ERROR in error/; inboxd replay ${facts.id} once the cause is fixed`;
  ctx.log.error({ event: 'delivery.failed', code: e.code, err: e.message, attempts: attempts.attempts }, message);
  ctx.alert?.({ event: 'delivery.failed', severity: 'critical', partner: ctx.partner.id, flow: facts.flow ?? '', file: facts.file, delivery_id: facts.id, attempts: attempts.attempts, code: e.code, message, at: new Date().toISOString() });
  return answer(ctx, record, dir, started);
}

/** A file that can never become a delivery (incomplete too long, unknown, not a regular file). */
export async function handleStale(ctx: DeliveryContext, stale: Stale): Promise<Result> {
  // What stays in the inbox (a directory) is reported once, not at every sweep or start.
  if (stale.inPlace && (await ctx.store.rejectedAs(ctx.partner.id, stale.file, stale.code))) return { status: 'skipped' };
  const id = newDeliveryId();
  const [flow, seq] = [stale.name?.flow ?? null, stale.name?.seq ?? null];
  const log = ctx.log.child({ delivery_id: id, partner: ctx.partner.id, flow, file: stale.file, seq });
  const dir = await claim(ctx.partner.dirs.inbox, ctx.partner.dirs.work, id, stale.files, { bytes: stale.bytes });
  if (!dir) return { status: 'skipped' };
  const facts: AnswerFacts = { id, partner: ctx.partner.id, flow, file: stale.file, seq, sha256: null, files: stale.files, processedAt: new Date().toISOString() };
  const receivedAt = new Date(stale.arrivedMs).toISOString();
  await ctx.store.event(id, 'received', stale.files.join(', '), receivedAt);
  const started = performance.now();
  const taken = await takenNames(facts, ctx.partner.dirs);
  const record = await ctx.store.commit(undefined, undefined, () => rejectedRecord(facts, receivedAt, reject(stale.code, stale.reason), undefined, taken), ctx.lease);
  return answer({ ...ctx, log }, record, dir, started);
}

function observe(ctx: DeliveryContext, rec: DeliveryRecord, started: number): void {
  const { observer } = ctx;
  if (observer) safeEmit(ctx.log, 'delivered', () => observer.delivered(rec, (performance.now() - started) / 1000));
}

/** Where a delivery's rows are staged: named for its working directory (the delivery id). */
export const stagingBase = (dir: string) => join(dir, `${INTERNAL_PREFIX}staging`);

/** The delivery's staged rows go once it is decided, whatever the decision (with PostgreSQL: its staging tables). */
async function ingest(ctx: DeliveryContext, flow: FlowConfig, ready: ReadyDelivery, dir: string, facts: AnswerFacts, receivedAt: string, replay?: ReplayMarker): Promise<DeliveryRecord> {
  try {
    return await stageAndCommit(ctx, flow, ready, dir, facts, receivedAt, replay);
  } finally {
    await ctx.store.staging.discard(stagingBase(dir)).catch((err: unknown) => ctx.log.warn({ err }, 'staged rows could not be removed; the next start of recovery removes them'));
  }
}

async function stageAndCommit(ctx: DeliveryContext, flow: FlowConfig, ready: ReadyDelivery, dir: string, facts: AnswerFacts, receivedAt: string, replay?: ReplayMarker): Promise<DeliveryRecord> {
  const { store, partner } = ctx;
  let seq = ready.name.seq;
  let found: DataFound | undefined;
  const staging = stagingBase(dir);
  let manifest: Manifest | undefined;
  // An interchange carries its own sequence (ISA13), and is answered with a 997 beside our report.
  const x12 = flow.format === 'x12' ? x12Reader(flow) : undefined;
  if (x12) facts.answer = (plan, outcome, error) => withX12Answer(flow, x12, plan, outcome, error);
  try {
    const sidecarHex = ready.sidecar ? parseSidecar(await readSmall(join(dir, ready.sidecar), 4096), ready.file) : undefined;
    manifest = ready.manifest ? parseManifest(await readSmall(join(dir, ready.manifest), 1 << 20), ready.file) : undefined;
    const decrypt = decryptOptions(ctx, ready.file);
    // A sequence already applied needs only its hash to tell a resend from a conflict: no parsing.
    const already = replay || x12 ? undefined : await store.applied(partner.id, flow.id, seq);
    found = await readData(join(dir, ready.file), already ? undefined : { flow, staging, writer: store.staging.writer, x12 }, sidecarHex, ctx.signal, decrypt);
    facts.sha256 = found.sha256;
    if (x12?.done) seq = facts.seq = interchangeSeq(x12.done);
    if (decrypt && found.stats) await store.event(facts.id, 'decrypted', signerText(found));
    if (found.unknownSigner) ctx.log.warn({ fingerprint: found.unknownSigner }, `the file is signed by an unknown key ${found.unknownSigner}; accepted because this partner does not require signatures`);
    if (sidecarHex && sidecarHex !== found.sha256) throw await checksumMismatch(join(dir, ready.file), found, sidecarHex);
    await store.event(facts.id, 'verified', `sha256 ${found.sha256}${sidecarHex ? ' matches the .sha256 file' : ' (no .sha256 file)'}`);
    if (x12?.done) checkEnvelopes(x12.done);
    if (found.stats) {
      const foundTotals = { sha256: found.sha256, records: found.stats.rows, sums: found.stats.sums };
      const trailer = flow.totalsFrom === 'trailer' ? readTrailer(found.lastLine, flow.fixed) : undefined;
      if (trailer) checkTotals(trailer, foundTotals, (c, v) => manifestSum(flow, c, v), `the trailer (line ${trailer.line})`);
      else if (manifest) checkTotals({ ...manifest, sums: sumsByOurName(manifest.sums, partnerNames(flow)) }, foundTotals, (c, v) => manifestSum(flow, c, v));
      checkBadRows(flow, found.stats);
      await store.event(facts.id, 'parsed', `${found.stats.rows} rows read, ${found.stats.badRows} invalid${flow.totalsFrom === 'trailer' ? '; control totals match the trailer' : manifest ? '; control totals match the manifest' : ''}`);
    }
  } catch (err) {
    const e = classify(err);
    if (e.kind !== 'reject') throw e;
    // The partner reads only the message; a cause (e.g. why decryption failed) is for our logs alone.
    if (e.details.cause) ctx.log.warn({ code: e.code, cause: e.details.cause }, 'rejection cause (not shown to the partner)');
    const totals = found?.stats ? totalsJson(manifest, found.stats) : null;
    const taken = await takenNames(facts, partner.dirs);
    return store.commit(undefined, undefined, () => ({ ...rejectedRecord(facts, receivedAt, e, found?.stats, taken), totals }), ctx.lease);
  }
  const { stats, staged } = found;
  const seqKey = { partner: partner.id, flow: flow.id, seq };
  // Decide, then write: what the decision needs of the disk is read now, outside the transaction.
  const taken = await takenNames(facts, partner.dirs);
  crashPoint('before-commit');
  return store.commit(seqKey, staged ? { rows: staged, target: flow, keepNewer: replay ? seqKey : undefined } : undefined, (applied, lastSeq) => {
    if (applied && !replay) return duplicateRecord(facts, receivedAt, applied, taken);
    if (!replay && flow.sequenceGap !== 'ignore' && lastSeq !== undefined && seq < lastSeq) {
      // Applying an older file after a newer one would put stale data back: kept in error/ for a deliberate replay.
      const e = reject('SEQUENCE_OUT_OF_ORDER', `sequence ${seq} arrived after sequence ${lastSeq} was applied; it was not applied, so newer data is not overwritten`);
      return rejectedRecord(facts, receivedAt, e, undefined, taken);
    }
    if (!stats) throw new InboxdError('IO_ERROR', 'the sequence was applied a moment ago and is no longer; taking the delivery again');
    const totals = totalsJson(manifest, stats);
    const plan = planAccepted(facts, { records: stats.rows, sums: stats.sums, scales: Object.fromEntries(flow.totals.map((t) => [t, scaleOf(flow, t)])), badRows: stats.badRows, errors: stats.errors, errorCount: stats.errorCount }, taken);
    return record(facts, receivedAt, 'accepted', plan, { records: stats.rows, badRows: stats.badRows, totals });
  }, ctx.lease);
}

/** Control totals expected (the manifest) and found, for the record (inboxd deliveries show). */
function totalsJson(manifest: Manifest | undefined, stats: MapStats): string {
  return stringifyExact({ expected: manifest ? { records: manifest.records, sums: manifest.sums } : null, found: { records: stats.rows, sums: stats.sums } });
}

/**
 * One pass over the data file: hashing, decoding, parsing, mapping and staging. The file is opened
 * without following symlinks, and a file that changed while being read is retried, not rejected.
 * Exported for inboxd check, which runs the same pass over a sample without committing anything.
 */
export async function readData(path: string, parse: { flow: FlowConfig; staging: string; writer: StagingWriter; x12?: InterchangeReader } | undefined, sidecarHex: string | undefined, signal?: AbortSignal, decrypt?: DecryptOptions): Promise<DataFound> {
  const fh = await openRegular(path);
  const hash = createHash('sha256');
  let stats: MapStats | undefined;
  let staged: StagedRows | undefined;
  let verdict: Verdict = {};
  let lastLine: { text: string; line: number } | undefined;
  let after: { size: number; mtimeMs: number };
  try {
    const before = await fh.stat();
    const source = fh.createReadStream({ autoClose: false, highWaterMark: 256 * 1024 });
    if (!parse) await pipeline(source, tap(hash), async (chunks: AsyncIterable<Buffer>) => { for await (const _ of chunks); }, { signal });
    else {
      const { flow } = parse;
      const unpack = unpackOf(flow.compression, basename(path));
      const spec = { base: parse.staging, writer: parse.writer, fields: flow.fields, totals: flow.totals, keys: flow.key, maxReported: flow.maxReportedErrors, csv: flow.csv, lines: lineFormat(flow) };
      const stager = new Stager(spec);
      // UTF-8 goes to the parsers as it is (checked chunk by chunk); other encodings are decoded to it first.
      const utf8 = new TextDecoder(flow.csv.encoding).encoding === 'utf-8';
      const text = () => (utf8 ? [] : [decoder(flow.csv.encoding)]);
      const sink = spec.lines
        ? lineStagingSink(stager, { fields: flow.fields, maxRecordBytes: flow.maxRecordBytes, encoding: flow.csv.encoding, utf8Checked: !utf8, onLastLine: flow.totalsFrom === 'trailer' ? (l) => (lastLine = l) : undefined })
        : stagingSink(stager, { ...spec, header: flow.csv.header, utf8Checked: !utf8 });
      // After decryption, before parsing: the bytes unpacked (a zip spooled beside the staging files first).
      // A workbook is spooled too (it is a zip), then read sheet row by sheet row.
      const workbook = `${parse.staging}.xlsx`;
      const x12 = flow.format === 'x12' ? (parse.x12 ?? x12Reader(flow)) : undefined;
      const parseFrom = async (head: NodeJS.ReadableStream[]): Promise<void> => {
        const tail = flow.format === 'xlsx' ? [createWriteStream(workbook)]
          : x12 ? [Duplex.from((source: AsyncIterable<Buffer>) => x12Lines(source, x12, flow.maxRecordBytes)), sink] : [...text(), sink];
        if (unpack === 'gzip') await pipeline([...head, ...gunzip(flow.decompression), ...tail], { signal });
        else if (unpack !== 'zip') await pipeline([...head, ...tail], { signal });
        else {
          await pipeline([...head, createWriteStream(`${parse.staging}.zip`)], { signal });
          await pipeline([await soleEntry(`${parse.staging}.zip`, flow.decompression), ...tail], { signal });
        }
        if (flow.format !== 'xlsx') return;
        await checkXlsxSize(workbook, flow.decompression);
        await pipeline([Readable.from(sheetLines(workbook, flow.fields, flow.xlsx), { objectMode: false }), sink], { signal });
      };
      try {
        if (!decrypt) await parseFrom([source, tap(hash)]);
        else {
          // The sidecar covers the bytes delivered (ciphertext); the manifest's totals the records inside.
          const hashed = tap(hash);
          const feeding = pipeline(source, hashed, { signal });
          feeding.catch(() => {});
          const { plaintext, done } = await decryptStream(hashed, decrypt);
          await Promise.all([parseFrom([plaintext]), feeding]);
          // Integrity (MDC/AEAD) and signature are known only now, at the end: nothing was committed before.
          verdict = await done;
        }
        ({ stats, rows: staged } = await stager.finish());
      } catch (failure) {
        // Chunks still in flight may hold an error earlier in the file: that one is the file's error.
        const err = (signal?.aborted ? undefined : await stager.settle()) ?? compressionError(failure) ?? failure;
        await stager.abort();
        if (signal?.aborted) throw failure;
        // Tampered ciphertext decrypts to garbage that may break the CSV before the integrity check at
        // the end can speak: an encrypted file is judged on its integrity first.
        if (decrypt && classify(err).code !== 'DECRYPT_FAILED' && classify(err).code !== 'LIMIT_EXCEEDED') await checkIntegrity(path, decrypt);
        // A damaged transfer shows up as broken CSV; the checksum names the real cause.
        const seen = await fsp.lstat(path); // the handle is closed once the stream failed
        const sha = await hashFile(path);
        if (sidecarHex && sha !== sidecarHex) throw await checksumMismatch(path, { sha256: sha, size: seen.size, mtimeMs: seen.mtimeMs }, sidecarHex);
        throw err;
      }
    }
    after = await fh.stat();
    if (after.size !== before.size || after.mtimeMs !== before.mtimeMs) throw new InboxdError('FILE_CHANGING', 'the file changed while it was read; it will be read again');
  } finally {
    await fh.close();
  }
  return { sha256: hash.digest('hex'), stats, staged, lastLine, ...verdict, size: after.size, mtimeMs: after.mtimeMs };
}

/** How the staging threads read a line format; undefined for CSV. */
function lineFormat(flow: FlowConfig): LineFormat | undefined {
  const maxLineBytes = flow.maxRecordBytes;
  switch (flow.format) {
    case 'csv':
      return undefined;
    case 'ndjson':
      return { kind: 'ndjson', maxLineBytes };
    case 'fixed':
      return { kind: 'fixed', maxLineBytes, layout: flow.fixed };
    case 'xlsx':
    case 'x12':
      return { kind: 'rows', maxLineBytes };
  }
}

export interface DataFound extends Verdict {
  sha256: string;
  stats?: MapStats;
  /** where the rows are, in file order */
  staged?: StagedRows;
  /** the last line that is not blank, when the flow's control totals come from a fixed-width trailer */
  lastLine?: { text: string; line: number };
  size: number;
  mtimeMs: number;
}

/** How long a client that writes in place (WinSCP) may pause between writes and still count as writing. */
const STILL_WRITING_MS = 1000;

/**
 * A checksum mismatch may only mean the partner's client is still writing through the handle it
 * holds (the file settled during a pause): look again a moment later before blaming the file.
 */
async function checksumMismatch(path: string, seen: { sha256: string; size: number; mtimeMs: number }, sidecarHex: string): Promise<InboxdError> {
  await new Promise((r) => setTimeout(r, STILL_WRITING_MS));
  const now = await fsp.lstat(path);
  if (now.size !== seen.size || now.mtimeMs !== seen.mtimeMs) return new InboxdError('FILE_CHANGING', 'the checksum does not match yet and the file is still being written; it will be read again');
  return reject('CHECKSUM_MISMATCH', `the file's SHA-256 is ${seen.sha256}, the .sha256 file says ${sidecarHex}`);
}

/** What an encrypted delivery needs, or a rejection when the partner's contract asks for what the file lacks. */
export function decryptOptions(ctx: Pick<DeliveryContext, 'partner' | 'keyring'>, file: string): DecryptOptions | undefined {
  const { pgp } = ctx.partner;
  if (!isEncryptedName(file)) {
    if (pgp.requireEncryption) throw reject('ENCRYPTION_REQUIRED', 'the file is not OpenPGP-encrypted (.pgp, .gpg or .asc), and this partner must encrypt files');
    if (pgp.requireSignature) throw reject('SIGNATURE_REQUIRED', 'the file is not signed, and this partner must sign files');
    return undefined;
  }
  const ring = ctx.keyring;
  if (!ring || ring.decryptionKeys.length === 0) throw decryptFailed(new Error('no decryption key configured (pgp.keys)'));
  return {
    decryptionKeys: ring.decryptionKeys,
    verificationKeys: ring.partnerKeys.get(ctx.partner.id) ?? [],
    requireSignature: pgp.requireSignature,
    maxDecompressedBytes: ring.maxDecompressedBytes,
    maxCompressionRatio: ring.maxCompressionRatio,
  };
}

function tap(hash: Hash): Transform {
  let chunks = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      if (++chunks === 2) crashPoint('mid-stream');
      cb(null, chunk);
    },
  });
}

/** Decrypts to nowhere: throws what decryption throws (DECRYPT_FAILED, signature, limits), or returns. */
async function checkIntegrity(path: string, decrypt: DecryptOptions): Promise<void> {
  const fh = await openRegular(path);
  try {
    const { plaintext, done } = await decryptStream(fh.createReadStream({ autoClose: false }), decrypt);
    for await (const _ of plaintext);
    await done;
  } finally {
    await fh.close();
  }
}

export async function hashFile(path: string): Promise<string> {
  const fh = await openRegular(path);
  const hash = createHash('sha256');
  try {
    for await (const chunk of fh.createReadStream({ autoClose: false })) hash.update(chunk as Buffer);
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}

export function checkBadRows(flow: FlowConfig, stats: MapStats): void {
  if (stats.badRows === 0) return;
  const allowed = 'count' in flow.maxBadRows ? flow.maxBadRows.count : Math.floor(flow.maxBadRows.fraction * stats.rows);
  if (stats.badRows > allowed) {
    throw reject('ROW_ERRORS', `${stats.badRows} of ${stats.rows} rows are invalid (${allowed} allowed); nothing was applied`, { badRows: stats.badRows });
  }
}

/** A manifest sum in the units we store, exactly and of any size: amounts in minor units, by the column's scale. */
/** Each control total's partner column name (our name -> theirs): a manifest may name a sum either way. */
const partnerNames = (flow: FlowConfig) => new Map(flow.totals.map((t) => [t, flow.fields.find((f) => f.ours === t)!.partner]));

/** Decimal places of a control-total column: an amount's scale, 0 for an integer. */
function scaleOf(flow: FlowConfig, column: string): number {
  const field = flow.fields.find((f) => f.ours === column)!;
  return field.type === 'amount' ? (field.scale ?? 2) : 0;
}

export function manifestSum(flow: FlowConfig, column: string, v: number | bigint | string): Exact | undefined {
  const out = toMinorUnits(String(v).trim(), scaleOf(flow, column), false);
  return typeof out === 'number' || typeof out === 'bigint' ? out : undefined;
}

function record(f: AnswerFacts, receivedAt: string, outcome: DeliveryRecord['outcome'], made: AnswerPlan, extra: Partial<DeliveryRecord>, error?: InboxdError): DeliveryRecord {
  const plan = f.answer ? f.answer(made, { outcome, code: extra.code ?? null, decidedAt: f.processedAt }, error) : made;
  return {
    id: f.id, partner: f.partner, flow: f.flow, file: f.file, seq: f.seq, fileTime: null, sha256: f.sha256, size: null, outcome,
    code: null, reason: null, records: null, badRows: null, totals: null, receivedAt, decidedAt: f.processedAt, answeredAt: null,
    plan: JSON.stringify(f.replayOf ? replayPlan(plan, outcome === 'accepted', f.replayFrom ?? 'archive') : plan), replayOf: f.replayOf ?? null, ...extra,
  };
}

function rejectedRecord(f: AnswerFacts, receivedAt: string, e: InboxdError, stats: MapStats | undefined, taken: Taken): DeliveryRecord {
  const errors = e.code === 'ROW_ERRORS' && stats ? stats.errors : [];
  const plan = planRejected(f, { status: 'rejected', code: e.code, reason: e.message, errors, errorCount: errors.length ? stats!.errorCount : 0 }, taken);
  return record(f, receivedAt, 'rejected', plan, { code: e.code, reason: e.message, records: stats?.rows ?? null, badRows: stats?.badRows ?? null }, e);
}

function duplicateRecord(f: AnswerFacts, receivedAt: string, applied: Applied, taken: Taken): DeliveryRecord {
  const same = applied.sha256 === f.sha256;
  const code = same ? 'DUPLICATE' : 'SEQUENCE_CONFLICT';
  const reason = same
    ? `sequence ${f.seq} was already applied (delivery ${applied.deliveryId}); this copy is identical and changed nothing`
    : `sequence ${f.seq} was already applied (delivery ${applied.deliveryId}) with different content; this file was not applied. Send new data under a new sequence number`;
  const plan = planRejected(f, { status: same ? 'duplicate' : 'rejected', code, reason, errors: [], errorCount: 0 }, taken);
  return record(f, receivedAt, same ? 'duplicate' : 'rejected', plan, { code, reason });
}

/** Answers the partner as the committed plan says, then records that it was done. */
export async function finish(ctx: DeliveryContext, rec: DeliveryRecord, dir: string): Promise<Result> {
  const plan = JSON.parse(rec.plan) as AnswerPlan;
  await carryOut(plan, ctx.partner.dirs, dir);
  // A remote partner's originals may now leave its server, and the answer is queued for upload there.
  await ctx.store.markAnswered(rec.id, answeredDetail(plan), ctx.partner.remote ? { partner: ctx.partner.id, plan } : undefined);
  const level = rec.outcome === 'accepted' ? 'info' : 'warn';
  ctx.log[level]({ outcome: rec.outcome, code: rec.code, reason: rec.reason, records: rec.records, bad_rows: rec.badRows }, `delivery ${rec.outcome}`);
  return { status: rec.outcome, record: rec };
}

/** The answer in words for the audit trail: what the partner was sent. */
function answeredDetail(plan: AnswerPlan): string {
  const sent = plan.writes.map((w) => `${w.dir}/${w.name}`);
  const placed = [...new Set(plan.moves.map((m) => `${m.dir}/`))];
  if (sent.length === 0 && placed.length === 0) return 'nothing sent to the partner (a replay: see its report)';
  return [sent.length ? `sent ${sent.join(', ')}` : '', placed.length ? `originals in ${placed.join(', ')}` : ''].filter(Boolean).join('; ');
}
