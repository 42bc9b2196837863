/**
 * Attempts at deliveries that failed for a reason of ours (a full disk, a busy database, a bug), kept in
 * the database so that neither the count nor the backoff is forgotten by a restart or between runs of
 * `run --once`. After max_attempts the delivery is given up on (delivery.ts) and its row goes.
 *
 * A delivery is known by its partner, its data file's name and a fingerprint of its files as they sit
 * on disk (store/fingerprint.ts).
 */
import type Database from 'better-sqlite3';
import type { AttemptLedger, Attempts, Failure } from '../types.js';
import { nextAttempts } from '../fingerprint.js';


interface Row {
  fingerprint: string;
  attempts: number;
  nextAt: string;
  code: string;
  error: string | null;
  deliveryIds: string;
}

export class SqliteAttempts implements AttemptLedger {
  constructor(private readonly db: Database.Database) {}

  async get(partner: string, file: string): Promise<Attempts | undefined> {
    return this.getNow(partner, file);
  }

  private getNow(partner: string, file: string): Attempts | undefined {
    const row = this.db.prepare('SELECT fingerprint, attempts, next_at AS nextAt, code, error, delivery_ids AS deliveryIds FROM attempts WHERE partner = ? AND file = ?')
      .get(partner, file) as Row | undefined;
    return row && { ...row, nextAt: Date.parse(row.nextAt), deliveryIds: row.deliveryIds.split(' ') };
  }

  async failed(partner: string, file: string, fingerprint: string, failure: Failure, delayMs: (attempts: number) => number): Promise<Attempts> {
    return this.db.transaction(() => {
      const now = new Date();
      const after = nextAttempts(this.getNow(partner, file), fingerprint, failure, delayMs, now);
      this.db.prepare(`INSERT INTO attempts (partner, file, fingerprint, attempts, first_at, last_at, next_at, code, error, delivery_ids)
        VALUES (@partner, @file, @fingerprint, @attempts, @now, @now, @next, @code, @error, @ids)
        ON CONFLICT (partner, file) DO UPDATE SET fingerprint = excluded.fingerprint, attempts = excluded.attempts, last_at = excluded.last_at,
          first_at = CASE WHEN excluded.attempts = 1 THEN excluded.first_at ELSE first_at END, next_at = excluded.next_at,
          code = excluded.code, error = excluded.error, delivery_ids = excluded.delivery_ids`)
        .run({ partner, file, fingerprint, attempts: after.attempts, now: now.toISOString(), next: new Date(after.nextAt).toISOString(), code: failure.code, error: failure.error, ids: after.deliveryIds.join(' ') });
      return after;
    })();
  }

  async clear(partner: string, file: string): Promise<void> {
    this.db.prepare('DELETE FROM attempts WHERE partner = ? AND file = ?').run(partner, file);
  }
}
