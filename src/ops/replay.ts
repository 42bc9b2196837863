/**
 * `inboxd replay ID`: takes an answered delivery's files again through the same pipeline (after a
 * mapping fix, say, or once a rejected file's problem is understood).
 *
 * - The files are COPIED from archive/ (accepted) or error/ (rejected) into a fresh working directory;
 *   the originals stay where they are, as evidence. The data file's copy must have the SHA-256
 *   recorded when it was received, or nothing happens (EVIDENCE_CHANGED).
 * - The copy is a new delivery with `replay_of` set and a 'replayed' event on both. The dedupe verdict
 *   (duplicate, conflict, out of order) is bypassed for it; the upsert keeps rows that a later sequence
 *   of the flow wrote, so replaying an old file never puts stale values back.
 * - The partner hears of it only when that changes what it was told: a rejected delivery accepted now
 *   gets an ACK (with `replay_of`) and its files a copy in archive/ (answer.ts, replayPlan).
 * - An accepted replay resolves the rejected deliveries it replays: `status` stops listing them.
 * - Like `run --once`, it needs the database to itself (instance lock): with the daemon running, the
 *   command queues the replay for the daemon (replay-queue.ts), which carries it out between sweeps.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { evidenceOf } from './audit.js';
import { claimCopies } from '../pipeline/claim.js';
import type { Config, PartnerConfig } from '../config/config.js';
import { ingestDir, newDeliveryId, type Result } from '../ingest/delivery.js';
import { LeaseKeeper } from '../ingest/leases.js';
import type { ReadyDelivery } from '../pipeline/discover.js';
import { classify, type ErrorCode, InboxdError } from '../errors.js';
import type { Logger } from '../log.js';
import { manifestName, matchName, parseName, sidecarName } from '../pipeline/naming.js';
import { openAll, type openKeyring } from '../ingest/startup.js';
import { Releasers } from '../releasers.js';
import { openStore } from '../store/open.js';
import type { AuditEvent, DeliveryRecord, Store } from '../store/types.js';

export interface ReplayOutcome {
  original: DeliveryRecord;
  /** where the files were copied from */
  from: 'archive' | 'error';
  /** the SHA-256 recorded and found again, or null when none was recorded (rejected before reading) */
  verifiedSha256: string | null;
  result: Result;
  /** the replay's own record, when it was decided */
  record?: DeliveryRecord;
  /** rejected deliveries this replay resolved */
  resolved: string[];
  /** the replay's audit trail */
  timeline: AuditEvent[];
}

const notReplayable = (message: string) => new InboxdError('NOT_REPLAYABLE', message);

export async function replay(config: Config, log: Logger, id: string): Promise<ReplayOutcome> {
  const held = new Releasers();
  const release = () => held.releaseAll((resource, err) => log.error({ err, resource }, 'release failed'));
  let opened;
  try {
    opened = await openAll(config, log, held);
  } catch (err) {
    await release();
    // The database's lock is taken: the daemon of this configuration runs, and carries the replay out.
    if (classify(err).code !== 'DB_BUSY') throw err;
    return replayByDaemon(config, log, id);
  }
  try {
    // With instances sharing a PostgreSQL: the partner's holder carries it out, or this command takes the lease.
    const partner = (await opened.store.delivery(id))?.partner;
    if (opened.store.leases && partner) {
      const leases = new LeaseKeeper(opened.store, [partner], 'all', log);
      held.add('leases', () => leases.stop());
      await leases.start();
      if (!leases.holds(partner)) {
        await release();
        return replayByDaemon(config, log, id);
      }
    }
    return await replayWith(opened.store, config, log, id, opened.keyring);
  } finally {
    await release();
  }
}

/** The replay itself, on an open store: the daemon runs queued replays through this (replay-queue.ts). */
export async function replayWith(store: Store, config: Config, log: Logger, id: string, keyring: Awaited<ReturnType<typeof openKeyring>>): Promise<ReplayOutcome> {
  const original = await store.delivery(id);
  if (!original) throw new InboxdError('UNKNOWN_DELIVERY', `no delivery ${id} (see inboxd deliveries list)`);
  const partner = config.partners.find((p) => p.id === original.partner);
  if (!partner) throw notReplayable(`partner ${original.partner} is no longer configured`);
  if (original.outcome === 'duplicate') throw notReplayable(`${id} is a duplicate and changed nothing; replay the delivery it repeated instead (its reason names it)`);
  if (!original.answeredAt) throw notReplayable(`${id} is not answered yet; the next start of inboxd finishes it first`);
  const flow = partner.flows.find((f) => f.id === original.flow);
  if (!flow) throw notReplayable(original.flow ? `flow ${original.flow} is no longer configured for ${partner.id}` : `${original.file} matched no flow; there is nothing to replay it into`);
  const name = parseName(original.file, [flow]);
  if (!name) throw notReplayable(matchName(original.file, [flow])?.problem ?? `${original.file} no longer matches the file-name pattern of ${partner.id}/${flow.id}`);

  const { from, files } = await evidence(store, original, partner);
  const sidecar = sidecarName(original.file);
  const manifest = manifestName(flow.manifestName, original.file);
  const have = new Set(files.map((f) => f.name));
  if (!have.has(original.file)) throw notReplayable(`the data file of ${id} is not among its stored files`);
  if (flow.sidecarRequired && !have.has(sidecar)) throw notReplayable(`${sidecar} never arrived; the partner must send the delivery again`);
  if (flow.manifestRequired && !have.has(manifest)) throw notReplayable(`${manifest} never arrived; the partner must send the delivery again`);
  for (const f of files) {
    if (!(await fsp.lstat(f.path).catch(() => undefined))) throw notReplayable(`${f.path} is gone (removed by hand, or pruned after its retention days)`);
  }

  const replayId = newDeliveryId();
  const { dir, sha256 } = await claimCopies(partner.dirs.work, replayId, files, { replay_of: id });
  const found = sha256.get(original.file)!;
  if (original.sha256 && found !== original.sha256) {
    await fsp.rm(dir, { recursive: true, force: true });
    await store.event(id, 'replay refused', `the stored file's SHA-256 is ${found}, not ${original.sha256} as received`);
    throw new InboxdError('EVIDENCE_CHANGED', `${files.find((f) => f.name === original.file)!.path} has SHA-256 ${found}, but ${original.sha256} was recorded when it was received; it was not replayed`);
  }
  await store.event(replayId, 'replayed', `replay of ${id}: copies of its files from ${from}/${original.sha256 ? ', SHA-256 as recorded' : ' (no SHA-256 was recorded)'}`);
  await store.event(id, 'replayed', `replayed as ${replayId}`);
  log.info({ delivery_id: replayId, replay_of: id, partner: partner.id, flow: flow.id, file: original.file, seq: name.seq, from }, 'replay started');

  const ready: ReadyDelivery = {
    file: original.file, name, arrivedMs: Date.now(),
    sidecar: have.has(sidecar) ? sidecar : undefined, manifest: have.has(manifest) ? manifest : undefined,
    files: [original.file, ...[sidecar, manifest].filter((n) => have.has(n))],
  };
  const result = await ingestDir({ store, log, partner, keyring }, ready, replayId, dir, { of: id, from });
  const resolved: string[] = [];
  if (result.status === 'accepted') {
    for (let r: DeliveryRecord | undefined = original; r; r = r.replayOf ? await store.delivery(r.replayOf) : undefined) {
      if (r.outcome === 'rejected' && (await store.resolve(r.id, replayId, `replayed successfully as ${replayId}`))) resolved.push(r.id);
    }
  }
  const record = 'record' in result ? result.record : undefined;
  return { original, from, verifiedSha256: original.sha256 ? found : null, result, record, resolved, timeline: await store.audit.timeline(replayId) };
}

/**
 * The files to replay: where the delivery's committed plan put them, or, for a replay that kept none
 * (answer.ts, replayPlan), where the delivery it replayed put them.
 */
async function evidence(store: Store, rec: DeliveryRecord, partner: PartnerConfig): Promise<{ from: 'archive' | 'error'; files: { name: string; path: string }[] }> {
  for (let r: DeliveryRecord | undefined = rec, hops = 0; r && hops < 1000; r = r.replayOf ? await store.delivery(r.replayOf) : undefined, hops++) {
    const stored = evidenceOf(r);
    if (stored.length) return { from: stored[0]!.dir, files: stored.map((f) => ({ name: f.name, path: join(partner.dirs[f.dir], f.stored) })) };
  }
  throw notReplayable(`no stored files are recorded for ${rec.id}`);
}

const WAIT_MS = 600_000;

/** The daemon holds the database: leave the request to it and wait for its result. */
async function replayByDaemon(config: Config, log: Logger, id: string): Promise<ReplayOutcome> {
  const store = await openStore(config);
  try {
    const { request, original } = await queueReplay(store, id);
    log.info({ request, delivery_id: id }, 'the daemon is running: replay queued for it');
    for (const until = Date.now() + WAIT_MS; Date.now() < until; await new Promise((r) => setTimeout(r, 250))) {
      const outcome = await queuedOutcome(store, request);
      if (outcome) return outcome;
    }
    throw new InboxdError('DB_BUSY', `replay request ${request} is still queued: the daemon carries it out at its next sweep of ${original.partner}; see inboxd deliveries show ${id}`);
  } finally {
    await store.close();
  }
}

/** Asks the running daemon for a replay (the command, and the operations page inside the daemon). `actor`: who asked, for the audit trail. */
export async function queueReplay(store: Store, id: string, actor?: string): Promise<{ request: number; original: DeliveryRecord }> {
  const original = await store.delivery(id);
  if (!original) throw new InboxdError('UNKNOWN_DELIVERY', `no delivery ${id} (see inboxd deliveries list)`);
  const request = await store.replays.enqueue(id, original.partner);
  if (actor) await store.event(id, 'replay asked', `by ${actor} (request ${request})`);
  return { request, original };
}

/** A queued replay's outcome once the daemon carried it out (its refusal thrown); undefined while queued. */
export async function queuedOutcome(store: Store, request: number): Promise<ReplayOutcome | undefined> {
  const r = await store.replays.get(request);
  if (r?.state !== 'done' || !r.result) return undefined;
  const result = JSON.parse(r.result) as { outcome?: ReplayOutcome; error?: { code: ErrorCode; message: string } };
  if (result.error) throw new InboxdError(result.error.code, result.error.message);
  return result.outcome!;
}
