/**
 * The link to a remote partner: on its schedule, one SFTP session that (1) uploads the answers still
 * owed, (2) moves pulled originals out of the partner's inbox once their delivery was answered here,
 * and (3) downloads every complete new file into the local inbox, where the same pipeline as for
 * uploads to us takes over. Nothing about verification, dedupe or upsert lives here.
 *
 * Resilience: every operation has its own timeout (remote.ts); a failed round is retried with backoff
 * and full jitter; a circuit breaker stops calls after repeated failures, then lets one probe through;
 * a per-host limiter caps connections and request rate. What is owed is in the database (remote-ledger.ts),
 * so a restart loses nothing: a crash between the local commit and the remote move just moves it later.
 *
 * A problem with one file (the server answers "no such file" or "permission denied": a missing outbox,
 * an archive directory gone) is logged and tried again next round; it does not fail the round, so it
 * neither opens the circuit nor holds up every other file. A host key mismatch or a refused key halts
 * the link until restart: retrying cannot fix them, and may lock our key out.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { PartnerConfig, RemoteConfig } from '../config/config.js';
import { classify, type InboxdError } from '../errors.js';
import { exists } from '../pipeline/fsx.js';
import type { Logger } from '../log.js';
import { isTempName, parseName } from '../pipeline/naming.js';
import type { RemoteLedger } from '../store/types.js';
import { type RemoteEndpoint, RemoteSession, StabilityTracker } from './session.js';
import { CircuitBreaker, type CircuitState, type HostLimiter, withRetry } from '../retry.js';

/** SFTP status codes about one file (no such file, permission denied, failure): the session itself is fine. */
const FILE_STATUS = new Set<unknown>([2, 3, 4]);
const aboutOneFile = (e: InboxdError) => FILE_STATUS.has(e.details.cause);

export interface LinkHooks {
  /** new files are in the local inbox */
  pulled: () => void;
  circuit?: (state: CircuitState | 'halted') => void;
  transferError?: (operation: string) => void;
}

export class RemoteLink {
  readonly breaker: CircuitBreaker;
  private readonly tracker: StabilityTracker;
  private readonly remote: RemoteConfig;
  private running?: Promise<void>;
  private again = false;
  private timer?: NodeJS.Timeout;
  /** stop(): no new round, no more retries; a session in flight finishes */
  private readonly stopped = new AbortController();
  /** set by an error no retry can fix; only a restart (with the configuration fixed) clears it */
  private halted = false;
  /** consecutive failed sessions, as the breaker counts them */
  private failures = 0;
  /** the daemon's abort (shutdown timeout), kept for the rounds the link starts itself */
  private signal?: AbortSignal;

  constructor(
    private readonly partner: PartnerConfig,
    private readonly ledger: RemoteLedger,
    private readonly limiter: HostLimiter,
    private readonly tempPatterns: readonly RegExp[],
    private readonly log: Logger,
    private readonly hooks: LinkHooks,
  ) {
    this.remote = partner.remote!;
    this.tracker = new StabilityTracker({ minAgeMs: this.remote.stableForMs, isFinalName: (n) => !isTempName(n, tempPatterns) });
    this.breaker = new CircuitBreaker({
      failureThreshold: this.remote.breaker.failures,
      cooldownMs: this.remote.breaker.cooldownMs,
      isFailure: (e) => classify(e).code !== 'CIRCUIT_OPEN',
      onStateChange: (from, to) => {
        this.log[to === 'open' ? 'error' : 'warn']({ partner: partner.id, host: this.remote.host, from, to }, `circuit ${to} for ${this.remote.host}`);
        this.recordCircuit(to, this.failures);
        this.hooks.circuit?.(to);
      },
    });
    this.recordCircuit('closed', 0);
  }

  /** From the breaker's callbacks, which cannot wait: a failure to record it is logged, never thrown. */
  private recordCircuit(circuit: string, failures: number): void {
    this.ledger.setCircuit(this.partner.id, circuit, failures).catch((err: unknown) => this.log.error({ err, partner: this.partner.id }, 'circuit state could not be recorded'));
  }

  /** Runs a round now, or once more after the one running. */
  kick(signal: AbortSignal | undefined = this.signal): Promise<void> {
    this.signal = signal;
    if (this.halted || this.stopped.signal.aborted) return this.running ?? Promise.resolve();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.round(signal).finally(() => {
      this.running = undefined;
      if (this.again && !signal?.aborted) {
        this.again = false;
        void this.kick(signal);
      }
    });
    return this.running;
  }

  /** No new round and no more retries; resolves when the session in flight is done (or aborted by the kick's signal). */
  async stop(): Promise<void> {
    this.stopped.abort();
    clearTimeout(this.timer);
    await this.running;
  }

  /**
   * One round with retries; never throws. `abort` (the daemon's shutdown timeout) also drops a session
   * in flight; stop() only ends the waiting between attempts.
   */
  private async round(abort?: AbortSignal): Promise<void> {
    const id = this.partner.id;
    let last: InboxdError | undefined; // the last failure of this round's own attempts
    const attempt = async () => {
      try {
        await this.breaker.call(() => this.counted(abort));
      } catch (err) {
        if (classify(err).code !== 'CIRCUIT_OPEN') last = classify(err);
        throw err;
      }
    };
    try {
      await withRetry(attempt, this.remote.retry, {
        signal: abort ? AbortSignal.any([abort, this.stopped.signal]) : this.stopped.signal,
        isRetryable: (e) => classify(e).kind === 'retry' && classify(e).code !== 'CIRCUIT_OPEN',
        onRetry: (err, attempt, ms) => this.log.warn({ partner: id, host: this.remote.host, attempt: attempt + 1, retry_in_ms: Math.round(ms), code: classify(err).code, err: classify(err).message }, 'remote round failed; retrying'),
      });
      await this.ledger.setCircuit(id, this.breaker.state, 0, null);
    } catch (err) {
      const e = classify(err);
      if (e.kind === 'fatal') return this.halt(e);
      if (this.stopped.signal.aborted || abort?.aborted) return void this.log.info({ partner: id, host: this.remote.host, code: last?.code }, 'remote round abandoned: inboxd is stopping');
      // Refused by the open circuit without trying: its opening was logged (error) and recorded with the cause.
      if (!last) return void this.log.debug({ partner: id, host: this.remote.host, code: e.code, err: e.message }, 'remote round skipped: circuit open');
      this.log.error({ partner: id, host: this.remote.host, code: last.code, err: last.message, circuit: this.breaker.state }, 'remote round failed');
    }
  }

  /** A session, counted as the breaker counts it (consecutive failures, reset by a success), its failure recorded. */
  private async counted(abort?: AbortSignal): Promise<void> {
    try {
      await this.session(abort);
      this.failures = 0;
    } catch (err) {
      this.failures++;
      const e = classify(err);
      await this.ledger.setCircuit(this.partner.id, this.breaker.state, this.failures, `${e.code}: ${e.message}`);
      throw err;
    }
  }

  /** Host key mismatch, key refused, bad configuration: reported once, and the partner's server is left alone. */
  private async halt(e: InboxdError): Promise<void> {
    this.halted = true;
    clearTimeout(this.timer);
    await this.ledger.setCircuit(this.partner.id, 'halted', this.failures, `${e.code}: ${e.message}`);
    this.log.error({ partner: this.partner.id, host: this.remote.host, code: e.code, err: e.message },
      `remote partner ${this.partner.id} halted: ${e.code}; its server is not contacted again until the configuration is fixed and inboxd restarted`);
    this.hooks.circuit?.('halted');
  }

  private async session(abort?: AbortSignal): Promise<void> {
    const ep = await this.endpoint();
    await this.limiter.withConnection(ep.host, async () => {
      abort?.throwIfAborted();
      const s = await RemoteSession.open(ep, { beforeOp: () => this.limiter.request(ep.host) });
      const drop = () => void s.close();
      abort?.addEventListener('abort', drop, { once: true });
      try {
        await this.pushAnswers(s);
        await this.releaseOriginals(s);
        await this.pullNew(s);
      } finally {
        abort?.removeEventListener('abort', drop);
        await s.close();
      }
    });
  }

  /** A problem with one file is logged and left for the next round; anything else (the connection) fails the round. */
  private oneFile(err: unknown, what: string, file: string): void {
    const e = classify(err);
    if (!aboutOneFile(e)) throw err;
    this.log.warn({ partner: this.partner.id, host: this.remote.host, file, code: e.code, err: e.message }, what);
  }

  private async pushAnswers(s: RemoteSession): Promise<void> {
    for (const u of await this.ledger.pendingUploads(this.partner.id)) {
      const local = join(this.partner.dirs[u.dir], u.name);
      if (!(await exists(local))) {
        await this.ledger.uploadLost(this.partner.id, u, `the local answer file ${local} is gone (pruned?)`);
        this.log.error({ partner: this.partner.id, file: u.name, dir: u.dir }, 'answer file gone before it was uploaded to the partner');
        continue;
      }
      try {
        await s.upload(local, this.remote.dirs.outbox, u.name);
      } catch (err) {
        await this.ledger.uploadFailed(this.partner.id, u, classify(err).message);
        this.hooks.transferError?.('upload');
        this.oneFile(err, 'answer upload failed; kept pending', u.name);
        continue;
      }
      await this.ledger.uploaded(this.partner.id, u);
      this.log.info({ partner: this.partner.id, file: u.name, remote_dir: this.remote.dirs.outbox }, 'answer uploaded to the partner');
    }
  }

  private async releaseOriginals(s: RemoteSession): Promise<void> {
    const names = await this.ledger.toRelease(this.partner.id);
    if (names.length === 0) return;
    const inbox = this.remote.dirs.inbox;
    // "No such file" from a rename can mean the original or the archive directory: ask the listing which.
    const present = new Set((await s.list(inbox)).map((e) => e.name));
    for (const name of names) {
      try {
        if (!present.has(name)) this.log.warn({ partner: this.partner.id, file: name }, 'pulled original no longer on the partner server');
        else if (this.remote.afterPull === 'delete') await s.remove(`${inbox}/${name}`);
        else await s.rename(`${inbox}/${name}`, `${this.remote.dirs.archive}/${name}`);
      } catch (err) {
        // Still 'answered': held (not pulled again) and tried again next round.
        this.oneFile(err, `pulled original could not be ${this.remote.afterPull === 'delete' ? 'deleted' : 'archived'} on the partner server; tried again next round`, name);
        continue;
      }
      await this.ledger.released(this.partner.id, name);
    }
  }

  private async pullNew(s: RemoteSession): Promise<void> {
    const entries = await s.list(this.remote.dirs.inbox);
    const stable = inSequence(this.tracker.observe(entries, Date.now()), this.partner);
    let pulled = 0;
    try {
      for (const e of stable) {
        if (await this.ledger.isHeld(this.partner.id, e.name)) continue;
        const local = join(this.partner.dirs.inbox, e.name);
        // A crash after the download's rename and before it was recorded: the file is here already.
        if ((await this.ledger.state(this.partner.id, e.name)) === 'downloading' && (await sizeOf(local)) === e.size) {
          await this.ledger.downloaded(this.partner.id, e.name);
          continue;
        }
        await this.ledger.downloading(this.partner.id, e.name, e.size, e.mtimeMs);
        try {
          await s.download(`${this.remote.dirs.inbox}/${e.name}`, local, e.size);
        } catch (err) {
          this.hooks.transferError?.('download');
          this.oneFile(err, 'download failed; tried again next round', e.name);
          continue;
        }
        await this.ledger.downloaded(this.partner.id, e.name);
        this.log.info({ partner: this.partner.id, file: e.name, bytes: e.size }, 'pulled from the partner server');
        pulled++;
      }
    } finally {
      // Files pulled before a failure are complete: the local pipeline takes them now.
      if (pulled > 0) this.hooks.pulled();
    }
    // Files seen but not proven stable yet: list again once they can be, not at the next schedule.
    for (const e of entries) {
      if (isTempName(e.name, this.tempPatterns) || stable.includes(e) || (await this.ledger.isHeld(this.partner.id, e.name))) continue;
      this.later(this.remote.stableForMs + 100);
      break;
    }
  }

  private later(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.kick(), ms);
    this.timer.unref();
  }

  private async endpoint(): Promise<RemoteEndpoint> {
    const r = this.remote;
    return {
      host: r.host,
      port: r.port,
      username: r.user,
      privateKey: await readFile(r.privateKeyFile),
      passphrase: r.passphraseFile ? (await readFile(r.passphraseFile, 'utf8')).replace(/\r?\n$/, '') : undefined,
      hostKeyFingerprint: r.hostKey,
      legacyAlgorithms: r.legacyAlgorithms,
      timeouts: r.timeouts,
    };
  }
}

/**
 * Entries in the order the deliveries are to be applied: by each file's sequence (a companion's is its
 * data file's, a name of it cut at a dot), then by name. A round that pulls 001 to 004 completes 001
 * first: the local pipeline, taking what is complete as it lands, would otherwise apply 004 first and
 * refuse 001 to 003 as out of order.
 */
function inSequence<T extends { name: string }>(entries: T[], partner: PartnerConfig): T[] {
  const seqOf = (name: string) => {
    for (let n = name; n.length > 0; n = n.slice(0, Math.max(0, n.lastIndexOf('.')))) {
      const parsed = parseName(n, partner.flows);
      if (parsed) return parsed.seq;
    }
    return Number.POSITIVE_INFINITY;
  };
  const keyed = entries.map((e) => ({ e, seq: seqOf(e.name) }));
  keyed.sort((a, b) => a.seq - b.seq || (a.e.name < b.e.name ? -1 : a.e.name > b.e.name ? 1 : 0));
  return keyed.map((k) => k.e);
}

async function sizeOf(path: string): Promise<number | undefined> {
  return (await stat(path).catch(() => undefined))?.size;
}
