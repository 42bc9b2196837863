/**
 * What every run does before it takes a delivery, in this order: our keys, the partner tree, the
 * instance lock, the database (with the flows' tables); then startup recovery, which finishes or puts
 * back what an earlier run left in flight.
 */
import { type Dirent, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { isReplayCopy, release } from '../pipeline/claim.js';
import { shrinkYoung } from '../pipeline/collect.js';
import { threadPool } from '../pipeline/threads.js';
import type { Config, PartnerConfig } from '../config/config.js';
import { finish, logFailure, stagingBase } from './delivery.js';
import { lockInstance, openStore } from '../store/open.js';
import { prepareTree } from './layout.js';
import { expiringKeys, type Keyring, loadKeyring } from '../pgp/keyring.js';
import type { Logger } from '../log.js';
import type { Releasers } from '../releasers.js';
import type { Store } from '../store/types.js';
import type { Tally } from './pass.js';

/** The database, with every flow's table made or brought up to its mapping. */
async function openWithTables(config: Config): Promise<Store> {
  const store = await openStore(config);
  try {
    for (const p of config.partners) for (const f of p.flows) await store.ensureTable(f);
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}

/**
 * Startup recovery, before any new delivery is taken. A committed delivery whose answer was cut short
 * gets its stored plan carried out again; a claimed delivery that never committed goes back to the inbox.
 * One delivery that cannot be recovered is logged and counted as a retry in `tally`, and recovery goes on
 * with the others: it never throws. Returns how many went back.
 */
export async function recover(store: Store, partner: PartnerConfig, log: Logger, tally?: Tally): Promise<number> {
  const failedOne = (plog: Logger, err: unknown, what: string) => {
    logFailure(plog, err, what);
    if (tally) tally.retry++;
  };
  for (const id of await store.unanswered(partner.id)) {
    const rec = (await store.delivery(id))!;
    const dlog = log.child({ delivery_id: id, partner: partner.id, flow: rec.flow, file: rec.file, seq: rec.seq });
    try {
      await finish({ store, log: dlog, partner }, rec, join(partner.dirs.work, id));
      dlog.info('recovered: answer completed after an interruption');
    } catch (err) {
      failedOne(dlog, err, 'the answer of a committed delivery could not be written; tried again at the next pass');
    }
  }
  let entries: Dirent[];
  try {
    entries = await fsp.readdir(partner.dirs.work, { withFileTypes: true });
  } catch (err) {
    failedOne(log.child({ partner: partner.id }), err, 'the working directory could not be read; tried again at the next pass');
    return 0;
  }
  let putBack = 0;
  for (const entry of entries) {
    try {
      if (await recoverDir(store, partner, log, entry)) putBack++;
    } catch (err) {
      failedOne(log.child({ delivery_id: entry.name, partner: partner.id }), err, 'an interrupted delivery could not be recovered; tried again at the next pass');
    }
  }
  return putBack;
}

/** One entry of the working directory; true when a delivery went back to the inbox. */
async function recoverDir(store: Store, partner: PartnerConfig, log: Logger, entry: Dirent): Promise<boolean> {
  const id = entry.name;
  const dir = join(partner.dirs.work, id);
  // A file here is never a delivery: an answer's temporary file left by a crash in versions that wrote them here.
  if (!entry.isDirectory()) {
    await fsp.rm(dir, { force: true });
    return false;
  }
  await store.staging.discard(stagingBase(dir)); // rows a crash left staged (PostgreSQL's staging tables)
  const rec = await store.delivery(id);
  if (rec) {
    // Answered: what is left is ours. Not answered yet (its answer failed just now): its files are still to go out.
    if (rec.answeredAt) await fsp.rm(dir, { recursive: true, force: true });
    return false;
  }
  // A replay's copies (replay.ts) cut short before its commit: disposable, the evidence is where it was.
  if (await isReplayCopy(dir)) {
    await fsp.rm(dir, { recursive: true, force: true });
    await store.event(id, 'interrupted', 'replay cut short before its commit: nothing applied; run the replay again');
    return false;
  }
  const stuck = await release(partner.dirs.inbox, dir);
  await store.event(id, 'interrupted', 'claimed but not committed: put back into the inbox');
  if (stuck.length) {
    log.error({ delivery_id: id, partner: partner.id, stuck, dir }, 'recovered delivery could not go back to the inbox: a file of the same name is there; left in the working directory');
    return false;
  }
  log.info({ delivery_id: id, partner: partner.id }, 'recovered: uncommitted delivery put back into the inbox');
  return true;
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
  const store = await openWithTables(config);
  held.add('database', () => store.close());
  // Started now, while the rest of the start goes on: the first delivery finds them ready.
  const threads = threadPool(store.staging.writer);
  threads.warm();
  held.add('staging threads', () => threads.close());
  shrinkYoung(); // start-up (modules, configuration, keys) grew the young generation, deliveries need less
  return { keyring, store };
}
