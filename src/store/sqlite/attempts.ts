/**
 * Attempts at deliveries that failed for a reason of ours (a full disk, a busy database, a bug), kept in
 * the database so that neither the count nor the backoff is forgotten by a restart or between runs of
 * `run --once`. After max_attempts the delivery is given up on (delivery.ts) and its row goes.
 *
 * A delivery is known by its partner, its data file's name and a fingerprint of its files as they sit
 * on disk (name, inode, size, modification time of each). Its SHA-256 would need the file read, which
 * is what the backoff is there to spare; the fingerprint costs one lstat per file. Inode and modification
 * time survive our own renames (claim, put back); the change time does not, a put-back changes it. A new
 * upload under the same name is a new file (another inode): it starts afresh.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';

export interface Attempts {
  fingerprint: string;
  attempts: number;
  /** not taken again before this (Date.now() ms) */
  nextAt: number;
  /** the last failure */
  code: string;
  error: string | null;
  /** each attempt's delivery id, oldest first */
  deliveryIds: string[];
}

export interface Failure {
  deliveryId: string;
  code: string;
  error: string;
}

interface Row {
  fingerprint: string;
  attempts: number;
  nextAt: string;
  code: string;
  error: string | null;
  deliveryIds: string;
}

export class AttemptLedger {
  constructor(private readonly db: Database.Database) {}

  get(partner: string, file: string): Attempts | undefined {
    const row = this.db.prepare('SELECT fingerprint, attempts, next_at AS nextAt, code, error, delivery_ids AS deliveryIds FROM attempts WHERE partner = ? AND file = ?')
      .get(partner, file) as Row | undefined;
    return row && { ...row, nextAt: Date.parse(row.nextAt), deliveryIds: row.deliveryIds.split(' ') };
  }

  /** Counts a failed attempt; another fingerprint than the one stored is another file, counted afresh. `delayMs(n)`: the wait after the n-th. */
  failed(partner: string, file: string, fingerprint: string, failure: Failure, delayMs: (attempts: number) => number): Attempts {
    return this.db.transaction(() => {
      const before = this.get(partner, file);
      const same = before?.fingerprint === fingerprint;
      const now = new Date();
      const after: Attempts = {
        fingerprint, attempts: same ? before.attempts + 1 : 1, nextAt: 0, code: failure.code, error: failure.error,
        deliveryIds: [...(same ? before.deliveryIds : []), failure.deliveryId],
      };
      after.nextAt = now.getTime() + delayMs(after.attempts);
      this.db.prepare(`INSERT INTO attempts (partner, file, fingerprint, attempts, first_at, last_at, next_at, code, error, delivery_ids)
        VALUES (@partner, @file, @fingerprint, @attempts, @now, @now, @next, @code, @error, @ids)
        ON CONFLICT (partner, file) DO UPDATE SET fingerprint = excluded.fingerprint, attempts = excluded.attempts, last_at = excluded.last_at,
          first_at = CASE WHEN excluded.attempts = 1 THEN excluded.first_at ELSE first_at END, next_at = excluded.next_at,
          code = excluded.code, error = excluded.error, delivery_ids = excluded.delivery_ids`)
        .run({ partner, file, fingerprint, attempts: after.attempts, now: now.toISOString(), next: new Date(after.nextAt).toISOString(), code: failure.code, error: failure.error, ids: after.deliveryIds.join(' ') });
      return after;
    })();
  }

  /** The delivery was decided, or given up on: its count is done with. */
  clear(partner: string, file: string): void {
    this.db.prepare('DELETE FROM attempts WHERE partner = ? AND file = ?').run(partner, file);
  }
}

/** The fingerprint of a delivery's files in `dir` (the inbox, or its working directory: the same inodes). */
export async function fingerprint(dir: string, files: readonly string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const name of files) {
    const st = await fsp.lstat(join(dir, name), { bigint: true });
    hash.update(`${name}\0${st.ino}\0${st.size}\0${st.mtimeNs}\n`);
  }
  return hash.digest('hex');
}
