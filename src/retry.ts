/**
 * Retry primitives for talking to partner servers: backoff with jitter, a
 * per-operation timeout, a circuit breaker and per-host rate/concurrency
 * limits. Pure: time comes from injectable `now`/`sleep`, no I/O.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { InboxdError, classify } from './errors.js';

export interface RetryPolicy {
  maxAttempts: number;
  capMs: number;
  baseMs: number;
  /** full: anywhere up to the delay; equal: between half of it and all of it; none: the delay itself */
  jitter: 'full' | 'equal' | 'none';
}

/** Playbook `file.transfer,5,600000,full`. */
export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({ maxAttempts: 5, capMs: 600_000, baseMs: 1_000, jitter: 'full' });

export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;
const realSleep: Sleep = (ms, signal) => delay(ms, undefined, { signal });

/** Parses the playbook's `maxAttempts,capMs,jitter` triple. */
export function parseRetryPolicy(spec: string, baseMs = DEFAULT_RETRY_POLICY.baseMs): RetryPolicy {
  const [attempts, cap, jitter, ...rest] = spec.split(',').map((s) => s.trim());
  const maxAttempts = Number(attempts);
  const capMs = Number(cap);
  if (rest.length > 0 || !Number.isInteger(maxAttempts) || maxAttempts < 1 || !Number.isFinite(capMs) || capMs < 0
      || (jitter !== 'full' && jitter !== 'none')) {
    throw new InboxdError('CONFIG_INVALID', `retry policy '${spec}' is not 'maxAttempts,capMs,full|none' (e.g. '5,600000,full')`, { spec });
  }
  return { maxAttempts, capMs, baseMs, jitter };
}

/**
 * Delay before retry number `attempt` (0 = after the first failure). Jitter spreads clients (or
 * deliveries) that failed together so they do not return together; equal jitter keeps at least half
 * of the delay, so a failure is never retried at once.
 */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** attempt);
  if (policy.jitter === 'full') return random() * ceiling;
  return policy.jitter === 'equal' ? ceiling / 2 + (random() * ceiling) / 2 : ceiling;
}

/**
 * Deliveries that fail for a reason of ours: `max_attempts` tries, waiting `retry_backoff` after the
 * first failure, doubling after each further one up to an hour (or retry_backoff, if longer), with equal jitter.
 */
export function deliveryRetry(maxAttempts: number, baseMs: number): RetryPolicy {
  return { maxAttempts, baseMs, capMs: Math.max(baseMs, 3_600_000), jitter: 'equal' };
}

export interface RetryOptions {
  signal?: AbortSignal;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Default: the error catalogue says kind 'retry' (unknown errors count as ours, so retryable). */
  isRetryable?: (err: unknown) => boolean;
  sleep?: Sleep;
  random?: () => number;
}

export async function withRetry<T>(fn: (attempt: number) => Promise<T>, policy: RetryPolicy, opts: RetryOptions = {}): Promise<T> {
  const { signal, onRetry, isRetryable = (e) => classify(e).kind === 'retry', sleep = realSleep, random } = opts;
  for (let attempt = 0; ; attempt++) {
    signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt + 1 >= policy.maxAttempts || !isRetryable(err) || signal?.aborted) throw err;
      const ms = backoffDelay(attempt, policy, random);
      safeCall(() => onRetry?.(err, attempt, ms));
      await sleep(ms, signal);
    }
  }
}

/**
 * Rejects with REMOTE_TIMEOUT if `promise` has not settled within `ms`. It
 * cannot cancel the work: ssh2 has no per-operation timeout, so `onTimeout`
 * (or the caller) must tear the connection down.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string, onTimeout?: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      safeCall(() => onTimeout?.());
      reject(new InboxdError('REMOTE_TIMEOUT', `${what} timed out after ${ms} ms`, { operation: what, timeoutMs: ms }));
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  failureThreshold: number;
  cooldownMs: number;
  now?: () => number;
  onStateChange?: (from: CircuitState, to: CircuitState) => void;
  /** Which errors count against the server. Default: all. */
  isFailure?: (err: unknown) => boolean;
}

/**
 * Stops hammering a server that is down: after `failureThreshold` consecutive
 * failures calls fail fast with CIRCUIT_OPEN for `cooldownMs`, then exactly one
 * probe is let through; its outcome closes or re-opens the circuit.
 */
export class CircuitBreaker {
  #state: CircuitState = 'closed';
  #failures = 0;
  #openedAt = 0;
  readonly #o: Required<Omit<CircuitBreakerOptions, 'onStateChange'>> & Pick<CircuitBreakerOptions, 'onStateChange'>;

  constructor(opts: CircuitBreakerOptions) {
    this.#o = { now: Date.now, isFailure: () => true, ...opts };
  }

  get state(): CircuitState { return this.#state; }

  async call<T>(fn: () => Promise<T>): Promise<T> {
    const probe = this.#admit();
    try {
      const result = await fn();
      this.#failures = 0;
      this.#set('closed');
      return result;
    } catch (err) {
      if (!this.#o.isFailure(err)) {
        if (probe) this.#set('closed'); // the server answered
        throw err;
      }
      this.#failures++;
      if (probe || this.#failures >= this.#o.failureThreshold) {
        this.#openedAt = this.#o.now();
        this.#set('open');
      }
      throw err;
    }
  }

  /** Throws CIRCUIT_OPEN or admits the call; true when it is the single half-open probe. */
  #admit(): boolean {
    if (this.#state === 'closed') return false;
    if (this.#state === 'half-open') throw this.#rejection(0); // the probe is still in flight
    const left = this.#openedAt + this.#o.cooldownMs - this.#o.now();
    if (left > 0) throw this.#rejection(left);
    this.#set('half-open');
    return true;
  }

  #rejection(retryInMs: number): InboxdError {
    return new InboxdError('CIRCUIT_OPEN', `circuit open after ${this.#failures} consecutive failures; retry in ${Math.ceil(retryInMs)} ms`,
      { failures: this.#failures, retryInMs });
  }

  #set(to: CircuitState): void {
    const from = this.#state;
    if (from === to) return;
    this.#state = to;
    safeCall(() => this.#o.onStateChange?.(from, to));
  }
}

export interface TokenBucketOptions { ratePerSec: number; burst: number; now?: () => number; sleep?: Sleep }

/**
 * Rate limit with bursts. Each take() reserves a token, possibly driving the
 * balance negative, and sleeps until its token exists: waiters are served in
 * call order without polling.
 */
export class TokenBucket {
  #tokens: number;
  #at: number;
  readonly #o: Required<TokenBucketOptions>;

  constructor(opts: TokenBucketOptions) {
    if (!(opts.ratePerSec > 0) || !(opts.burst >= 1)) throw new InboxdError('CONFIG_INVALID', 'token bucket needs ratePerSec > 0 and burst >= 1', { ...opts });
    this.#o = { now: Date.now, sleep: realSleep, ...opts };
    this.#tokens = opts.burst;
    this.#at = this.#o.now();
  }

  async take(signal?: AbortSignal): Promise<void> {
    const now = this.#o.now();
    this.#tokens = Math.min(this.#o.burst, this.#tokens + ((now - this.#at) * this.#o.ratePerSec) / 1000);
    this.#at = now;
    this.#tokens -= 1;
    if (this.#tokens >= 0) return;
    try {
      await this.#o.sleep((-this.#tokens * 1000) / this.#o.ratePerSec, signal);
    } catch (err) {
      this.#tokens += 1; // give back the reservation we will not use
      throw err;
    }
  }
}

export interface HostLimiterOptions { maxConnections: number; ratePerSec: number; burst: number; now?: () => number; sleep?: Sleep }

/** Per partner host: at most `maxConnections` open sessions, and a request rate. */
export class HostLimiter {
  readonly #hosts = new Map<string, { active: number; queue: Array<() => void>; bucket: TokenBucket }>();
  constructor(private readonly opts: HostLimiterOptions) {}

  /** Holds one of the host's connection slots while `fn` runs. */
  async withConnection<T>(host: string, fn: () => Promise<T>): Promise<T> {
    const h = this.#host(host);
    if (h.active >= this.opts.maxConnections) await new Promise<void>((resolve) => h.queue.push(resolve));
    else h.active++;
    try {
      return await fn();
    } finally {
      const next = h.queue.shift();
      if (next) next(); // hand the slot over directly so a newcomer cannot jump the queue
      else h.active--;
    }
  }

  /** Waits for the host's request-rate budget; call before each remote operation. */
  request(host: string, signal?: AbortSignal): Promise<void> {
    return this.#host(host).bucket.take(signal);
  }

  #host(host: string) {
    let h = this.#hosts.get(host);
    if (!h) {
      const { ratePerSec, burst, now, sleep } = this.opts;
      h = { active: 0, queue: [], bucket: new TokenBucket({ ratePerSec, burst, ...(now && { now }), ...(sleep && { sleep }) }) };
      this.#hosts.set(host, h);
    }
    return h;
  }
}

/** Observers (callbacks) must not be able to break the primitive calling them. */
function safeCall(f: () => void): void {
  try { f(); } catch { /* observer's problem, not ours */ }
}
