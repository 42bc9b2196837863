/**
 * Retention: `inboxd prune`, and the daemon's prune_schedule. Per partner:
 * - files in archive/ older than archive_days and in error/ older than error_days are removed. Age
 *   counts from when the delivery that put the file there was decided (the database), never from a
 *   time stamp the partner controls: the modification time is the upload's own (`sftp put -p` and
 *   WinSCP keep it), and the file keeps it when moved there. A file no delivery names (its records
 *   pruned, or put there by hand) ages from its inode change time: our clock, set by the move into the
 *   directory, and never set back by anyone but root;
 * - rows older than records_days are removed: dedupe rows (except the flow's last sequence, so an old
 *   file sent again is still recognised: its sequence is below the last one, SEQUENCE_OUT_OF_ORDER),
 *   deliveries (except the ones a kept dedupe row names, and any not yet answered) with their events
 *   and resolutions, and closed delivery windows (open late ones stay until a delivery resolves them).
 * Events of no delivery (a retry, an interrupted claim) go after the global records_days.
 * Target-table rows are data, never pruned; their _delivery_id may then name a pruned delivery.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Config, PartnerConfig } from '../config/config.js';
import type { PrunedRows, Store } from '../store/types.js';
import { when } from './table.js';

const DAY = 86_400_000;

export interface PruneReport {
  dryRun: boolean;
  /** files removed (or that would be), with what their age counts from: the decision, or the file's change */
  files: { partner: string; dir: 'archive' | 'error'; name: string; since: string; by: 'decided' | 'changed' }[];
  /** table -> rows removed (or that would be) */
  rows: PrunedRows;
}

export async function prune(store: Store, config: Config, opts: { now?: Date; dryRun?: boolean } = {}): Promise<PruneReport> {
  const now = (opts.now ?? new Date()).getTime();
  const dryRun = !!opts.dryRun;
  const report: PruneReport = { dryRun, files: [], rows: { dedupe: 0, deliveries: 0, events: 0, resolutions: 0, windows: 0 } };
  for (const partner of config.partners) {
    const decided = await store.retention.decisions(partner.id);
    for (const [dir, days] of [['archive', partner.retention.archiveDays], ['error', partner.retention.errorDays]] as const) {
      report.files.push(...(await pruneDir(partner, dir, now - days * DAY, dryRun, decided)));
    }
  }
  const iso = (days: number) => new Date(now - days * DAY).toISOString();
  const cutoffs = config.partners.map((p) => ({ partner: p.id, before: iso(p.retention.recordsDays) }));
  report.rows = await store.retention.prune(cutoffs, iso(config.retention.recordsDays), dryRun);
  return report;
}

async function pruneDir(partner: PartnerConfig, dir: 'archive' | 'error', cutoff: number, dryRun: boolean, decided: Map<string, number>): Promise<PruneReport['files']> {
  const path = partner.dirs[dir];
  const removed: PruneReport['files'] = [];
  let entries;
  try {
    entries = await fsp.readdir(path, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return removed;
    throw err;
  }
  for (const e of entries) {
    if (e.isDirectory()) continue;
    const file = join(path, e.name);
    const st = await fsp.lstat(file).catch(() => undefined);
    if (!st) continue;
    const at = decided.get(`${dir}/${e.name}`);
    const since = at ?? st.ctimeMs;
    if (since >= cutoff) continue;
    if (!dryRun) {
      try {
        await fsp.unlink(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // the partner removed it meanwhile
        continue;
      }
    }
    removed.push({ partner: partner.id, dir, name: e.name, since: new Date(since).toISOString(), by: at === undefined ? 'changed' : 'decided' });
  }
  return removed;
}

export function formatPrune(r: PruneReport): string {
  const verb = r.dryRun ? 'to remove (dry run: nothing removed)' : 'removed';
  const byDir = new Map<string, number>();
  for (const f of r.files) byDir.set(`${f.partner}/${f.dir}`, (byDir.get(`${f.partner}/${f.dir}`) ?? 0) + 1);
  const lines = [`Files ${verb}: ${r.files.length}${byDir.size ? ` (${[...byDir].map(([k, n]) => `${k}: ${n}`).join(', ')})` : ''}`];
  for (const f of r.files) lines.push(`  ${f.partner}/${f.dir}/${f.name}  (${f.by === 'decided' ? 'decided' : 'no delivery names it; changed'} ${when(f.since)})`);
  lines.push(`Rows ${verb}: ${Object.entries(r.rows).map(([t, n]) => `${t} ${n}`).join(', ')}`);
  return `${lines.join('\n')}\n`;
}
