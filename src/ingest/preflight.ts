/**
 * `inboxd check-config`: what `inboxd run` would refuse at start, found without starting it. Beyond the
 * configuration and its mappings (loadConfig): our OpenPGP keys and the partners' load, the directory
 * layout holds (layout.ts; nothing is created), and each flow's key matches its table in the database,
 * when the database exists (opened read-only, never created).
 */
import type { Config } from '../config/config.js';
import { loadKeyring } from '../pgp/keyring.js';
import { prepareTree } from './layout.js';
import { databaseExists, openStore } from '../store/open.js';

export async function preflight(config: Config): Promise<void> {
  await loadKeyring(config);
  await prepareTree(config, { create: false });
  if (!(await databaseExists(config))) return;
  const store = await openStore(config, { readonly: true });
  try {
    for (const p of config.partners) for (const f of p.flows) await store.checkTable(f);
  } finally {
    await store.close();
  }
}
