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
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PartnerConfig, RemoteConfig } from './config.js';
import { classify, type ErrorCode } from './errors.js';
import { exists } from './fsx.js';
import type { Logger } from './log.js';
import { isTempName } from './naming.js';
import type { RemoteLedger } from './remote-ledger.js';
import { type RemoteEndpoint, RemoteSession, StabilityTracker } from './remote.js';
import { CircuitBreaker, type CircuitState, type HostLimiter, withRetry } from './retry.js';

/** Errors a retry cannot fix: the pinned host key differs, our key is refused, the circuit is open. */
const NOT_RETRIED = new Set<ErrorCode>(['HOST_KEY_MISMATCH', 'REMOTE_AUTH_FAILED', 'CIRCUIT_OPEN', 'CONFIG_INVALID']);

export interface LinkHooks {
  /** new files are in the local inbox */
  pulled: () => void;
  circuit?: (state: CircuitState) => void;
  transferError?: (operation: string) => void;
}

export class RemoteLink {
  readonly breaker: CircuitBreaker;
  private readonly tracker: StabilityTracker;
  private readonly remote: RemoteConfig;
  private running?: Promise<void>;
  private again = false;
  private timer?: NodeJS.Timeout;

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
        this.ledger.setCircuit(partner.id, to, to === 'closed' ? 0 : this.remote.breaker.failures);
        this.hooks.circuit?.(to);
      },
    });
    this.ledger.setCircuit(partner.id, 'closed', 0);
  }

  /** Runs a round now, or once more after the one running. */
  kick(signal?: AbortSignal): Promise<void> {
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

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await this.running;
  }

  /** One round with retries; never throws. */
  private async round(signal?: AbortSignal): Promise<void> {
    try {
      await withRetry(() => this.breaker.call(() => this.session()), this.remote.retry, {
        signal,
        isRetryable: (e) => !NOT_RETRIED.has(classify(e).code) && classify(e).kind === 'retry',
        onRetry: (err, attempt, ms) => this.log.warn({ partner: this.partner.id, host: this.remote.host, attempt: attempt + 1, retry_in_ms: Math.round(ms), err: classify(err).message }, 'remote round failed; retrying'),
      });
    } catch (err) {
      const e = classify(err);
      this.ledger.setCircuit(this.partner.id, this.breaker.state, 0, `${e.code}: ${e.message}`);
      const level = e.code === 'CIRCUIT_OPEN' ? 'warn' : 'error';
      this.log[level]({ partner: this.partner.id, host: this.remote.host, code: e.code, err: e.message }, 'remote round failed');
    }
  }

  private async session(): Promise<void> {
    const ep = await this.endpoint();
    await this.limiter.withConnection(ep.host, async () => {
      const s = await RemoteSession.open(ep, { beforeOp: () => this.limiter.request(ep.host) });
      try {
        await this.pushAnswers(s);
        await this.releaseOriginals(s);
        await this.pullNew(s);
      } finally {
        await s.close();
      }
    });
  }

  private async pushAnswers(s: RemoteSession): Promise<void> {
    for (const u of this.ledger.pendingUploads(this.partner.id)) {
      const local = join(this.partner.dirs[u.dir], u.name);
      if (!(await exists(local))) {
        this.ledger.uploadFailed(this.partner.id, u, 'the local answer file is gone (pruned?)');
        this.ledger.uploaded(this.partner.id, u);
        continue;
      }
      try {
        await s.upload(local, this.remote.dirs.outbox, u.name);
      } catch (err) {
        this.ledger.uploadFailed(this.partner.id, u, classify(err).message);
        this.hooks.transferError?.('upload');
        throw err;
      }
      this.ledger.uploaded(this.partner.id, u);
      this.log.info({ partner: this.partner.id, file: u.name, remote_dir: this.remote.dirs.outbox }, 'answer uploaded to the partner');
    }
  }

  private async releaseOriginals(s: RemoteSession): Promise<void> {
    const inbox = this.remote.dirs.inbox;
    for (const name of this.ledger.toRelease(this.partner.id)) {
      if (this.remote.afterPull === 'delete') await s.remove(`${inbox}/${name}`);
      else await s.rename(`${inbox}/${name}`, `${this.remote.dirs.archive}/${name}`).catch((err) => this.ignoreGone(err, name));
      this.ledger.released(this.partner.id, name);
    }
  }

  /** The partner removed its original itself: nothing left to move. */
  private ignoreGone(err: unknown, name: string): void {
    if (!/no such file/i.test(classify(err).message)) throw err;
    this.log.warn({ partner: this.partner.id, file: name }, 'pulled original no longer on the partner server');
  }

  private async pullNew(s: RemoteSession): Promise<void> {
    const entries = await s.list(this.remote.dirs.inbox);
    const stable = this.tracker.observe(entries, Date.now());
    let pulled = 0;
    for (const e of stable) {
      if (this.ledger.isHeld(this.partner.id, e.name)) continue;
      this.ledger.downloading(this.partner.id, e.name, e.size, e.mtimeMs);
      try {
        await s.download(`${this.remote.dirs.inbox}/${e.name}`, join(this.partner.dirs.inbox, e.name), e.size);
      } catch (err) {
        this.hooks.transferError?.('download');
        throw err;
      }
      this.ledger.downloaded(this.partner.id, e.name);
      this.log.info({ partner: this.partner.id, file: e.name, bytes: e.size }, 'pulled from the partner server');
      pulled++;
    }
    if (pulled > 0) this.hooks.pulled();
    // Files seen but not proven stable yet: list again once they can be, not at the next schedule.
    const pending = entries.some((e) => !isTempName(e.name, this.tempPatterns) && !stable.includes(e) && !this.ledger.isHeld(this.partner.id, e.name));
    if (pending) this.later(this.remote.stableForMs + 100);
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
