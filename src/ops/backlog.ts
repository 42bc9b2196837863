/**
 * The backlog: data files of a configured flow waiting in a partner's inbox (temporary names and
 * companions not counted). Read by `inboxd status` and the backlog gauge; it never opens a file.
 */
import { promises as fsp } from 'node:fs';
import type { PartnerConfig } from '../config/config.js';
import { isTempName, parseName } from '../pipeline/naming.js';

/** flow id -> files waiting; every flow of the partner is present. */
export async function backlog(partner: PartnerConfig, tempPatterns: readonly RegExp[]): Promise<Map<string, number>> {
  const counts = new Map(partner.flows.map((f) => [f.id, 0]));
  let names: string[];
  try {
    names = await fsp.readdir(partner.dirs.inbox);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return counts;
    throw err;
  }
  for (const name of names) {
    if (isTempName(name, tempPatterns)) continue;
    const parsed = parseName(name, partner.flows);
    if (parsed) counts.set(parsed.flow, (counts.get(parsed.flow) ?? 0) + 1);
  }
  return counts;
}
