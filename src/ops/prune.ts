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
import type { Store } from '../store/sqlite/store.js';
import { when } from './table.js';

const DAY = 86_400_000;

export interface PruneReport {
  dryRun: boolean;
  /** files removed (or that would be), with what their age counts from: the decision, or the file's change */
  files: { partner: string; dir: 'archive' | 'error'; name: string; since: string; by: 'decided' | 'changed' }[];
  /** table -> rows removed (or that would be) */
  rows: Record<'dedupe' | 'deliveries' | 'events' | 'resolutions' | 'windows', number>;
}

export async function prune(store: Store, config: Config, opts: { now?: Date; dryRun?: boolean } = {}): Promise<PruneReport> {
  const now = (opts.now ?? new Date()).getTime();
  const dryRun = !!opts.dryRun;
  const report: PruneReport = { dryRun, files: [], rows: { dedupe: 0, deliveries: 0, events: 0, resolutions: 0, windows: 0 } };
  for (const partner of config.partners) {
    const decided = decisions(store, partner.id);
    for (const [dir, days] of [['archive', partner.retention.archiveDays], ['error', partner.retention.errorDays]] as const) {
      report.files.push(...(await pruneDir(partner, dir, now - days * DAY, dryRun, decided)));
    }
  }
  report.rows = pruneRows(store, config, now, dryRun);
  return report;
}

/**
 * `dir/name` -> when the delivery whose answer plan put that file there was decided: its originals'
 * moves and its reports. The latest, should two name the same file.
 */
function decisions(store: Store, partner: string): Map<string, number> {
  const rows = store.db.prepare(`
    SELECT json_extract(m.value, '$.dir') AS dir, json_extract(m.value, '$.to') AS name, d.decided_at AS at FROM deliveries d, json_each(d.plan, '$.moves') m WHERE d.partner = @partner
    UNION ALL
    SELECT json_extract(w.value, '$.dir'), json_extract(w.value, '$.name'), d.decided_at FROM deliveries d, json_each(d.plan, '$.writes') w WHERE d.partner = @partner`).all({ partner }) as { dir: string; name: string; at: string }[];
  const out = new Map<string, number>();
  for (const r of rows) out.set(`${r.dir}/${r.name}`, Math.max(out.get(`${r.dir}/${r.name}`) ?? 0, Date.parse(r.at)));
  return out;
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

/** One transaction; a dry run makes the same deletions and rolls them back, so its counts are exact. */
function pruneRows(store: Store, config: Config, now: number, dryRun: boolean): PruneReport['rows'] {
  const db = store.db;
  const iso = (days: number) => new Date(now - days * DAY).toISOString();
  const del = (sql: string, params: Record<string, unknown>) => db.prepare(sql).run(params).changes;
  const rows: PruneReport['rows'] = { dedupe: 0, deliveries: 0, events: 0, resolutions: 0, windows: 0 };
  // Deliveries a remaining dedupe row names stay (the flow's last sequence), as do unanswered ones (recovery needs them).
  const old = `SELECT d.id FROM deliveries d WHERE d.partner = @partner AND d.decided_at < @cutoff AND d.answered_at IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM dedupe k WHERE k.delivery_id = d.id)`;
  const rollback = new Error('dry run');
  try {
    db.transaction(() => {
      for (const partner of config.partners) {
        const params = { partner: partner.id, cutoff: iso(partner.retention.recordsDays) };
        rows.dedupe += del(`DELETE FROM dedupe WHERE partner = @partner AND applied_at < @cutoff
          AND seq < (SELECT max(seq) FROM dedupe last WHERE last.partner = dedupe.partner AND last.flow = dedupe.flow)`, params);
        rows.events += del(`DELETE FROM events WHERE delivery_id IN (${old})`, params);
        rows.resolutions += del(`DELETE FROM resolutions WHERE delivery_id IN (${old})`, params);
        rows.deliveries += del(`DELETE FROM deliveries WHERE id IN (${old})`, params);
        rows.windows += del("DELETE FROM windows WHERE partner = @partner AND closes_at < @cutoff AND status <> 'late'", params);
      }
      rows.events += del('DELETE FROM events WHERE at < @cutoff AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = events.delivery_id)', { cutoff: iso(config.retention.recordsDays) });
      if (dryRun) throw rollback;
    }).immediate();
  } catch (err) {
    if (err !== rollback) throw err;
  }
  return rows;
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
