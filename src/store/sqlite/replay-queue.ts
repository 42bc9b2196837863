/**
 * Replays asked for while the daemon runs. The daemon holds the database to itself (instance lock),
 * so `inboxd replay` leaves a request here and the daemon carries it out between its sweeps of that
 * partner; the command waits for the result and prints it as if it had run the replay itself.
 */
import type Database from 'better-sqlite3';
import type { ReplayQueue, ReplayRequest } from '../types.js';

const COLUMNS = 'id, delivery_id AS deliveryId, partner, state, result';

export class SqliteReplayQueue implements ReplayQueue {
  /** asked at every sweep of every partner: prepared once */
  private queuedStmt?: Database.Statement;

  constructor(private readonly db: Database.Database) {}

  async enqueue(deliveryId: string, partner: string): Promise<number> {
    return Number(this.db.prepare("INSERT INTO replay_requests (delivery_id, partner, requested_at, state) VALUES (?, ?, ?, 'queued')").run(deliveryId, partner, new Date().toISOString()).lastInsertRowid);
  }

  async queued(partner?: string): Promise<ReplayRequest[]> {
    this.queuedStmt ??= this.db.prepare(`SELECT ${COLUMNS} FROM replay_requests WHERE state = 'queued' AND (@partner IS NULL OR partner = @partner) ORDER BY id`);
    return this.queuedStmt.all({ partner: partner ?? null }) as ReplayRequest[];
  }

  async get(id: number): Promise<ReplayRequest | undefined> {
    return this.db.prepare(`SELECT ${COLUMNS} FROM replay_requests WHERE id = ?`).get(id) as ReplayRequest | undefined;
  }

  async done(id: number, result: unknown): Promise<void> {
    this.db.prepare("UPDATE replay_requests SET state = 'done', result = ?, done_at = ? WHERE id = ?").run(JSON.stringify(result), new Date().toISOString(), id);
  }
}
