/**
 * One pass over every partner: finish interrupted work, then take every ready delivery.
 * `inboxd run --once` is exactly this; the daemon runs it on events and on a schedule.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isReplayCopy, release } from './claim.js';
import type { Config, FlowConfig, PartnerConfig } from './config.js';
import { type DeliveryContext, finish, handleReady, handleStale, type Result } from './delivery.js';
import { type ReadyDelivery, scanInbox } from './discover.js';
import { gapVerdict } from './gap.js';
import { lockInstance } from './instance.js';
import { type DirProblem, partnerDirProblem, prepareTree } from './layout.js';
import { expiringKeys, type Keyring, loadKeyring } from './keyring.js';
import type { Logger } from './log.js';
import { Releasers } from './releasers.js';
import { Store } from './store.js';

export interface Tally {
  accepted: number;
  rejected: number;
  duplicate: number;
  retry: number;
  waiting: number;
}

export function openStore(config: Config): Store {
  const store = new Store(config.database);
  try {
    for (const p of config.partners) for (const f of p.flows) store.ensureTable(f);
  } catch (err) {
    store.close();
    throw err;
  }
  return store;
}

/**
 * Startup recovery, before any new delivery is taken. A committed delivery whose answer was cut short
 * gets its stored plan carried out again; a claimed delivery that never committed goes back to the inbox.
 * Returns how many went back.
 */
export async function recover(store: Store, partner: PartnerConfig, log: Logger): Promise<number> {
  let putBack = 0;
  const ctx = { store, log, partner };
  const unanswered = store.db.prepare('SELECT id FROM deliveries WHERE partner = ? AND answered_at IS NULL ORDER BY decided_at').all(partner.id) as { id: string }[];
  for (const { id } of unanswered) {
    const rec = store.delivery(id)!;
    const dlog = log.child({ delivery_id: id, partner: partner.id, flow: rec.flow, file: rec.file, seq: rec.seq });
    await finish({ ...ctx, log: dlog }, rec, join(partner.dirs.work, id));
    dlog.info('recovered: answer completed after an interruption');
  }
  for (const entry of await fsp.readdir(partner.dirs.work, { withFileTypes: true })) {
    const id = entry.name;
    const dir = join(partner.dirs.work, id);
    // A file here is never a delivery: an answer's temporary file left by a crash in versions that wrote them here.
    if (!entry.isDirectory()) {
      await fsp.rm(dir, { force: true });
      continue;
    }
    if (store.delivery(id)) {
      await fsp.rm(dir, { recursive: true, force: true });
      continue;
    }
    // A replay's copies (replay.ts) cut short before its commit: disposable, the evidence is where it was.
    if (await isReplayCopy(dir)) {
      await fsp.rm(dir, { recursive: true, force: true });
      store.event(id, 'interrupted', 'replay cut short before its commit: nothing applied; run the replay again');
      continue;
    }
    const stuck = await release(partner.dirs.inbox, dir);
    store.event(id, 'interrupted', 'claimed but not committed: put back into the inbox');
    if (stuck.length) log.error({ delivery_id: id, partner: partner.id, stuck, dir }, 'recovered delivery could not go back to the inbox: a file of the same name is there; left in the working directory');
    else {
      log.info({ delivery_id: id, partner: partner.id }, 'recovered: uncommitted delivery put back into the inbox');
      putBack++;
    }
  }
  return putBack;
}

export interface SweepHooks {
  /** a sequence gap that is no longer waited for */
  gap?: (flow: FlowConfig, expected: number, got: number) => void;
  accepted?: (flow: FlowConfig, deliveryId: string) => void;
  /** true once the daemon is stopping: no further delivery is taken */
  stopped?: () => boolean;
  /** a partner directory is no real directory (a symbolic link, or gone): the partner was left out of this sweep */
  refused?: (problem: DirProblem) => void;
}

/** Processes what is ready in one partner's inbox, in sequence order per flow. */
export async function sweepPartner(ctx: DeliveryContext, config: Config, tally: Tally, hooks: SweepHooks = {}): Promise<void> {
  const { partner } = ctx;
  // A directory replaced by a link would have us take, answer and archive files wherever it points.
  const wrong = await partnerDirProblem(partner);
  if (wrong) {
    ctx.log.error({ partner: partner.id, dir: wrong.dir, event: 'partner.refused' }, `partner ${partner.id} left out of this sweep: ${wrong.reason}`);
    return hooks.refused?.(wrong);
  }
  const scan = await scanInbox(partner.dirs.inbox, {
    flows: partner.flows, tempPatterns: config.tempPatterns, settleMs: config.settleMs, incompleteAfterMs: config.incompleteAfterMs, now: Date.now(),
  });
  tally.waiting += scan.waiting;
  for (const stale of scan.stale) {
    if (hooks.stopped?.()) return;
    count(tally, await handleStale(ctx, stale));
  }
  const held = new Set<string>();
  for (const ready of scan.ready) {
    if (hooks.stopped?.()) return;
    const flow = partner.flows.find((f) => f.id === ready.name.flow)!;
    if (held.has(flow.id) || gapGate(ctx, flow, ready, hooks) === 'hold') {
      held.add(flow.id); // later sequences of the flow wait behind the missing one
      tally.waiting++;
      continue;
    }
    const r = await handleReady(ctx, ready);
    count(tally, r);
    if (r.status === 'accepted') hooks.accepted?.(flow, r.record.id);
  }
}

/**
 * A sequence gap (002 ready, 001 never came): `wait` holds the flow until the missing file arrives or
 * gap_wait has passed since the later file arrived, then reports the gap and goes on; `warn` reports
 * and goes on at once; `ignore` does neither.
 */
function gapGate(ctx: DeliveryContext, flow: FlowConfig, ready: ReadyDelivery, hooks: SweepHooks): 'go' | 'hold' {
  const verdict = gapVerdict(flow, ctx.store.lastSeq(flow.partner, flow.id), ready.name.seq, ready.arrivedMs, Date.now());
  if (verdict.kind !== 'gap') return verdict.kind;
  const { expected } = verdict;
  ctx.log.warn({ partner: flow.partner, flow: flow.id, expected, seq: ready.name.seq, file: ready.file, event: 'sequence.gap' }, `sequence gap: expected ${expected}, got ${ready.name.seq}; going on`);
  hooks.gap?.(flow, expected, ready.name.seq);
  return 'go';
}

function count(tally: Tally, r: Result): void {
  if (r.status !== 'skipped') tally[r.status]++;
}

/** Our keys and the partners', checked before any delivery is taken; expiring ones are warned about. */
export async function openKeyring(config: Config, log: Logger): Promise<Keyring> {
  const keyring = await loadKeyring(config);
  for (const w of await expiringKeys(keyring, config.pgp?.expiryWarningDays ?? 30)) {
    log.warn({ owner: w.owner, fingerprint: w.fingerprint, expires: w.expires.toISOString(), days_left: w.daysLeft }, `OpenPGP key of ${w.owner} ${w.daysLeft < 0 ? 'has expired' : `expires in ${w.daysLeft} days`}`);
  }
  return keyring;
}

/** What every run takes, in this order: our keys, the tree, the instance lock, the database (released by the caller). */
export async function openAll(config: Config, log: Logger, held: Releasers): Promise<{ keyring: Keyring; store: Store }> {
  const keyring = await openKeyring(config, log);
  await prepareTree(config, { create: true });
  const lock = await lockInstance(config);
  held.add('instance lock', () => lock.release());
  const store = openStore(config);
  held.add('database', () => store.close());
  return { keyring, store };
}

export async function runOnce(config: Config, log: Logger): Promise<Tally> {
  const held = new Releasers();
  const tally: Tally = { accepted: 0, rejected: 0, duplicate: 0, retry: 0, waiting: 0 };
  try {
    const { keyring, store } = await openAll(config, log, held);
    let putBack = 0;
    for (const partner of config.partners) putBack += await recover(store, partner, log);
    // A delivery put back has just changed in the inbox, as if just uploaded: this run still takes it.
    if (putBack > 0) await sleep(config.settleMs);
    for (const partner of config.partners) await sweepPartner({ store, log, partner, keyring }, config, tally);
  } finally {
    await held.releaseAll((resource, err) => log.error({ err, resource }, 'release failed'));
  }
  return tally;
}
