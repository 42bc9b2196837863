/**
 * What inboxd owes each remote partner, kept in the database so it survives a restart:
 * the files pulled from its server (downloading -> downloaded -> answered -> done: moved to its
 * archive or deleted there), the answers still to upload to its outbox (pending -> done, or lost
 * when the local answer file is gone), and its circuit state (closed, open, half-open, or halted:
 * a host key mismatch or a refused key, not contacted again until restarted).
 */
import type Database from 'better-sqlite3';
import type { AnswerPlan } from '../../pipeline/answer.js';
import type { PendingUpload, RemoteLedger } from '../types.js';

const now = () => new Date().toISOString();

export class SqliteRemoteLedger implements RemoteLedger {
  constructor(private readonly db: Database.Database) {}

  /** Pulled and not yet done with: must not be downloaded again. */
  async isHeld(partner: string, name: string): Promise<boolean> {
    return !!this.db.prepare("SELECT 1 FROM remote_files WHERE partner = ? AND name = ? AND state IN ('downloaded', 'answered')").get(partner, name);
  }

  async state(partner: string, name: string): Promise<string | undefined> {
    return (this.db.prepare('SELECT state FROM remote_files WHERE partner = ? AND name = ?').get(partner, name) as { state: string } | undefined)?.state;
  }

  /** Before the download: a crash during it leaves 'downloading', which is simply downloaded again. */
  async downloading(partner: string, name: string, size: number, mtimeMs: number): Promise<void> {
    this.db.prepare("INSERT INTO remote_files (partner, name, size, mtime_ms, state, pulled_at) VALUES (?, ?, ?, ?, 'downloading', ?) ON CONFLICT DO UPDATE SET size = excluded.size, mtime_ms = excluded.mtime_ms, state = 'downloading', delivery_id = NULL, pulled_at = excluded.pulled_at, done_at = NULL")
      .run(partner, name, size, Math.round(mtimeMs), now());
  }

  /** Only from 'downloading': the local pipeline may already have taken and answered the file (answered()). */
  async downloaded(partner: string, name: string): Promise<void> {
    this.db.prepare("UPDATE remote_files SET state = 'downloaded' WHERE partner = ? AND name = ? AND state = 'downloading'").run(partner, name);
  }

  /**
   * A delivery of this partner was answered locally: its pulled originals may now leave the partner's
   * inbox, and its answer files are queued for upload. Runs inside the transaction that records the answer
   * (markAnswered, store.ts).
   * A file still 'downloading' counts too: the download renames into the inbox before it is recorded as
   * done, and a delivery naming the file proves it arrived whole.
   */
  async answered(partner: string, deliveryId: string, plan: AnswerPlan): Promise<void> {
    this.answeredNow(partner, deliveryId, plan);
  }

  /** answered(), inside the caller's transaction (markAnswered). */
  answeredNow(partner: string, deliveryId: string, plan: AnswerPlan): void {
    const mark = this.db.prepare("UPDATE remote_files SET state = 'answered', delivery_id = ? WHERE partner = ? AND name = ? AND state IN ('downloading', 'downloaded')");
    for (const m of plan.moves) mark.run(deliveryId, partner, m.from);
    const queue = this.db.prepare("INSERT INTO remote_uploads (partner, dir, name, state, queued_at) VALUES (?, ?, ?, 'pending', ?) ON CONFLICT DO UPDATE SET state = 'pending', attempts = 0, last_error = NULL, done_at = NULL");
    for (const w of plan.writes) queue.run(partner, w.dir, w.name, now());
  }

  async toRelease(partner: string): Promise<string[]> {
    return (this.db.prepare("SELECT name FROM remote_files WHERE partner = ? AND state = 'answered' ORDER BY pulled_at").all(partner) as { name: string }[]).map((r) => r.name);
  }

  async released(partner: string, name: string): Promise<void> {
    this.db.prepare("UPDATE remote_files SET state = 'done', done_at = ? WHERE partner = ? AND name = ?").run(now(), partner, name);
  }

  async pendingUploads(partner: string): Promise<PendingUpload[]> {
    return this.db.prepare("SELECT dir, name FROM remote_uploads WHERE partner = ? AND state = 'pending' ORDER BY queued_at").all(partner) as PendingUpload[];
  }

  async uploaded(partner: string, u: PendingUpload): Promise<void> {
    this.db.prepare("UPDATE remote_uploads SET state = 'done', done_at = ?, attempts = attempts + 1, last_error = NULL WHERE partner = ? AND dir = ? AND name = ?").run(now(), partner, u.dir, u.name);
  }

  async uploadFailed(partner: string, u: PendingUpload, error: string): Promise<void> {
    this.db.prepare('UPDATE remote_uploads SET attempts = attempts + 1, last_error = ? WHERE partner = ? AND dir = ? AND name = ?').run(error, partner, u.dir, u.name);
  }

  /** Never to be uploaded: the local answer file is gone. Kept, with the reason, for the record. */
  async uploadLost(partner: string, u: PendingUpload, error: string): Promise<void> {
    this.db.prepare("UPDATE remote_uploads SET state = 'lost', last_error = ?, done_at = ? WHERE partner = ? AND dir = ? AND name = ?").run(error, now(), partner, u.dir, u.name);
  }

  /** `lastError`: a string records it, null clears it (a round succeeded), undefined keeps what is there. */
  async setCircuit(partner: string, circuit: string, failures: number, lastError?: string | null): Promise<void> {
    this.db.prepare('INSERT INTO remote_state (partner, circuit, failures, last_error, updated_at) VALUES (@partner, @circuit, @failures, @error, @at) ON CONFLICT DO UPDATE SET circuit = excluded.circuit, failures = excluded.failures, last_error = CASE WHEN @keep THEN last_error ELSE excluded.last_error END, updated_at = excluded.updated_at')
      .run({ partner, circuit, failures, error: lastError ?? null, keep: lastError === undefined ? 1 : 0, at: now() });
  }
}
