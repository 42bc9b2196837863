/** Retention's statements (types.ts, Retention; the rules are in ops/prune.ts). */
import type Database from 'better-sqlite3';
import type { PrunedRows, Retention } from '../types.js';

export class SqliteRetention implements Retention {
  constructor(private readonly db: Database.Database) {}

  /** From the plans: the originals' moves and the reports written. */
  async decisions(partner: string): Promise<Map<string, number>> {
    const rows = this.db.prepare(`
      SELECT json_extract(m.value, '$.dir') AS dir, json_extract(m.value, '$.to') AS name, d.decided_at AS at FROM deliveries d, json_each(d.plan, '$.moves') m WHERE d.partner = @partner
      UNION ALL
      SELECT json_extract(w.value, '$.dir'), json_extract(w.value, '$.name'), d.decided_at FROM deliveries d, json_each(d.plan, '$.writes') w WHERE d.partner = @partner`).all({ partner }) as { dir: string; name: string; at: string }[];
    const out = new Map<string, number>();
    for (const r of rows) out.set(`${r.dir}/${r.name}`, Math.max(out.get(`${r.dir}/${r.name}`) ?? 0, Date.parse(r.at)));
    return out;
  }

  /** One transaction; a dry run makes the same deletions and rolls them back, so its counts are exact. */
  async prune(cutoffs: readonly { partner: string; before: string }[], orphansBefore: string, dryRun: boolean): Promise<PrunedRows> {
    const del = (sql: string, params: Record<string, unknown>) => this.db.prepare(sql).run(params).changes;
    const rows: PrunedRows = { dedupe: 0, deliveries: 0, events: 0, resolutions: 0, windows: 0 };
    // Deliveries a remaining dedupe row names stay (the flow's last sequence), as do unanswered ones (recovery needs them).
    const old = `SELECT d.id FROM deliveries d WHERE d.partner = @partner AND d.decided_at < @cutoff AND d.answered_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM dedupe k WHERE k.delivery_id = d.id)`;
    const rollback = new Error('dry run');
    try {
      this.db.transaction(() => {
        for (const c of cutoffs) {
          const params = { partner: c.partner, cutoff: c.before };
          rows.dedupe += del(`DELETE FROM dedupe WHERE partner = @partner AND applied_at < @cutoff
            AND seq < (SELECT max(seq) FROM dedupe last WHERE last.partner = dedupe.partner AND last.flow = dedupe.flow)`, params);
          rows.events += del(`DELETE FROM events WHERE delivery_id IN (${old})`, params);
          rows.resolutions += del(`DELETE FROM resolutions WHERE delivery_id IN (${old})`, params);
          rows.deliveries += del(`DELETE FROM deliveries WHERE id IN (${old})`, params);
          rows.windows += del("DELETE FROM windows WHERE partner = @partner AND closes_at < @cutoff AND status <> 'late'", params);
        }
        rows.events += del('DELETE FROM events WHERE at < @cutoff AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = events.delivery_id)', { cutoff: orphansBefore });
        if (dryRun) throw rollback;
      }).immediate();
    } catch (err) {
      if (err !== rollback) throw err;
    }
    return rows;
  }
}
