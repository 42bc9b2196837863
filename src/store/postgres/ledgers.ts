/**
 * The smaller ledgers in PostgreSQL, statement for statement those of SQLite (see sqlite/attempts.ts,
 * sqlite/remote-ledger.ts, sqlite/replay-queue.ts for what each state means).
 */
import type { AnswerPlan } from '../../pipeline/answer.js';
import type { AttemptLedger, Attempts, Failure, PendingUpload, RemoteLedger, ReplayQueue, ReplayRequest } from '../types.js';
import type { PgDb, Tx } from './db.js';
import { nextAttempts } from '../fingerprint.js';

const now = () => new Date().toISOString();

export class PgAttempts implements AttemptLedger {
  constructor(private readonly db: PgDb, private readonly s: string) {}

  async get(partner: string, file: string): Promise<Attempts | undefined> {
    return this.read(this.db, partner, file);
  }

  private async read(c: Tx, partner: string, file: string, lock = ''): Promise<Attempts | undefined> {
    const r = await c.query(`SELECT fingerprint, attempts, next_at AS "nextAt", code, error, delivery_ids AS "deliveryIds" FROM ${this.s}.attempts WHERE partner = $1 AND file = $2${lock}`, [partner, file]);
    const row = r.rows[0] as { fingerprint: string; attempts: number; nextAt: string; code: string; error: string | null; deliveryIds: string } | undefined;
    return row && { ...row, nextAt: Date.parse(row.nextAt), deliveryIds: row.deliveryIds.split(' ') };
  }

  async failed(partner: string, file: string, fingerprint: string, failure: Failure, delayMs: (attempts: number) => number): Promise<Attempts> {
    return this.db.tx(async (c) => {
      const at = new Date();
      const after = nextAttempts(await this.read(c, partner, file, ' FOR UPDATE'), fingerprint, failure, delayMs, at);
      await c.query(`INSERT INTO ${this.s}.attempts (partner, file, fingerprint, attempts, first_at, last_at, next_at, code, error, delivery_ids)
        VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)
        ON CONFLICT (partner, file) DO UPDATE SET fingerprint = excluded.fingerprint, attempts = excluded.attempts, last_at = excluded.last_at,
          first_at = CASE WHEN excluded.attempts = 1 THEN excluded.first_at ELSE attempts.first_at END, next_at = excluded.next_at,
          code = excluded.code, error = excluded.error, delivery_ids = excluded.delivery_ids`,
      [partner, file, fingerprint, after.attempts, at.toISOString(), new Date(after.nextAt).toISOString(), failure.code, failure.error, after.deliveryIds.join(' ')]);
      return after;
    });
  }

  async clear(partner: string, file: string): Promise<void> {
    await this.db.run(`DELETE FROM ${this.s}.attempts WHERE partner = $1 AND file = $2`, [partner, file]);
  }
}

export class PgRemoteLedger implements RemoteLedger {
  constructor(private readonly db: PgDb, private readonly s: string) {}

  async isHeld(partner: string, name: string): Promise<boolean> {
    return !!(await this.db.one(`SELECT 1 FROM ${this.s}.remote_files WHERE partner = $1 AND name = $2 AND state IN ('downloaded', 'answered')`, [partner, name]));
  }

  async state(partner: string, name: string): Promise<string | undefined> {
    return (await this.db.one<{ state: string }>(`SELECT state FROM ${this.s}.remote_files WHERE partner = $1 AND name = $2`, [partner, name]))?.state;
  }

  async downloading(partner: string, name: string, size: number, mtimeMs: number): Promise<void> {
    await this.db.run(`INSERT INTO ${this.s}.remote_files (partner, name, size, mtime_ms, state, pulled_at) VALUES ($1, $2, $3, $4, 'downloading', $5)
      ON CONFLICT (partner, name) DO UPDATE SET size = excluded.size, mtime_ms = excluded.mtime_ms, state = 'downloading', delivery_id = NULL, pulled_at = excluded.pulled_at, done_at = NULL`,
    [partner, name, size, Math.round(mtimeMs), now()]);
  }

  async downloaded(partner: string, name: string): Promise<void> {
    await this.db.run(`UPDATE ${this.s}.remote_files SET state = 'downloaded' WHERE partner = $1 AND name = $2 AND state = 'downloading'`, [partner, name]);
  }

  /** Inside the transaction that records the answer (markAnswered, store.ts). */
  async answeredIn(c: Tx, partner: string, deliveryId: string, plan: AnswerPlan): Promise<void> {
    for (const m of plan.moves) {
      await c.query(`UPDATE ${this.s}.remote_files SET state = 'answered', delivery_id = $1 WHERE partner = $2 AND name = $3 AND state IN ('downloading', 'downloaded')`, [deliveryId, partner, m.from]);
    }
    for (const w of plan.writes) {
      await c.query(`INSERT INTO ${this.s}.remote_uploads (partner, dir, name, state, queued_at) VALUES ($1, $2, $3, 'pending', $4)
        ON CONFLICT (partner, dir, name) DO UPDATE SET state = 'pending', attempts = 0, last_error = NULL, done_at = NULL`, [partner, w.dir, w.name, now()]);
    }
  }

  async toRelease(partner: string): Promise<string[]> {
    return (await this.db.all<{ name: string }>(`SELECT name FROM ${this.s}.remote_files WHERE partner = $1 AND state = 'answered' ORDER BY pulled_at`, [partner])).map((r) => r.name);
  }

  async released(partner: string, name: string): Promise<void> {
    await this.db.run(`UPDATE ${this.s}.remote_files SET state = 'done', done_at = $1 WHERE partner = $2 AND name = $3`, [now(), partner, name]);
  }

  async pendingUploads(partner: string): Promise<PendingUpload[]> {
    return this.db.all<PendingUpload>(`SELECT dir, name FROM ${this.s}.remote_uploads WHERE partner = $1 AND state = 'pending' ORDER BY queued_at`, [partner]);
  }

  async uploaded(partner: string, u: PendingUpload): Promise<void> {
    await this.db.run(`UPDATE ${this.s}.remote_uploads SET state = 'done', done_at = $1, attempts = attempts + 1, last_error = NULL WHERE partner = $2 AND dir = $3 AND name = $4`, [now(), partner, u.dir, u.name]);
  }

  async uploadFailed(partner: string, u: PendingUpload, error: string): Promise<void> {
    await this.db.run(`UPDATE ${this.s}.remote_uploads SET attempts = attempts + 1, last_error = $1 WHERE partner = $2 AND dir = $3 AND name = $4`, [error, partner, u.dir, u.name]);
  }

  async uploadLost(partner: string, u: PendingUpload, error: string): Promise<void> {
    await this.db.run(`UPDATE ${this.s}.remote_uploads SET state = 'lost', last_error = $1, done_at = $2 WHERE partner = $3 AND dir = $4 AND name = $5`, [error, now(), partner, u.dir, u.name]);
  }

  async setCircuit(partner: string, circuit: string, failures: number, lastError?: string | null): Promise<void> {
    await this.db.run(`INSERT INTO ${this.s}.remote_state (partner, circuit, failures, last_error, updated_at) VALUES ($1, $2, $3, $4, $5)
      ON CONFLICT (partner) DO UPDATE SET circuit = excluded.circuit, failures = excluded.failures,
        last_error = CASE WHEN $6 THEN remote_state.last_error ELSE excluded.last_error END, updated_at = excluded.updated_at`,
    [partner, circuit, failures, lastError ?? null, now(), lastError === undefined]);
  }
}

const REPLAY_COLUMNS = 'id, delivery_id AS "deliveryId", partner, state, result';

export class PgReplayQueue implements ReplayQueue {
  constructor(private readonly db: PgDb, private readonly s: string) {}

  async enqueue(deliveryId: string, partner: string): Promise<number> {
    const r = await this.db.one<{ id: number }>(`INSERT INTO ${this.s}.replay_requests (delivery_id, partner, requested_at, state) VALUES ($1, $2, $3, 'queued') RETURNING id`, [deliveryId, partner, now()]);
    return r!.id;
  }

  async queued(partner?: string): Promise<ReplayRequest[]> {
    return this.db.all<ReplayRequest>(`SELECT ${REPLAY_COLUMNS} FROM ${this.s}.replay_requests WHERE state = 'queued' AND ($1::text IS NULL OR partner = $1) ORDER BY id`, [partner ?? null]);
  }

  async get(id: number): Promise<ReplayRequest | undefined> {
    return this.db.one<ReplayRequest>(`SELECT ${REPLAY_COLUMNS} FROM ${this.s}.replay_requests WHERE id = $1`, [id]);
  }

  async done(id: number, result: unknown): Promise<void> {
    await this.db.run(`UPDATE ${this.s}.replay_requests SET state = 'done', result = $1, done_at = $2 WHERE id = $3`, [JSON.stringify(result), now(), id]);
  }
}
