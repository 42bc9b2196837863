import { afterEach, describe, expect, it, vi } from 'vitest';
import { InboxdError } from '../src/errors.js';
import {
  CircuitBreaker, DEFAULT_RETRY_POLICY, HostLimiter, TokenBucket, backoffDelay, parseRetryPolicy, withRetry, withTimeout,
  type RetryPolicy,
} from '../src/retry.js';

/** A fake clock whose sleep() advances time instantly and records what was asked. */
function fakeClock(start = 1_000_000) {
  let t = start;
  const sleeps: number[] = [];
  return {
    now: () => t,
    advance: (ms: number) => { t += ms; },
    sleeps,
    sleep: async (ms: number, signal?: AbortSignal) => { signal?.throwIfAborted(); sleeps.push(ms); t += ms; },
  };
}

const retryable = () => new InboxdError('REMOTE_UNAVAILABLE', 'connection refused');

describe('retry policy', () => {
  it('parses the playbook triple and rejects nonsense naming the spec', () => {
    expect(parseRetryPolicy('5,600000,full')).toEqual({ maxAttempts: 5, capMs: 600_000, baseMs: 1000, jitter: 'full' });
    expect(parseRetryPolicy(' 3 , 1000 , none ', 50)).toEqual({ maxAttempts: 3, capMs: 1000, baseMs: 50, jitter: 'none' });
    expect(DEFAULT_RETRY_POLICY).toEqual(parseRetryPolicy('5,600000,full'));
    for (const bad of ['', '5', '0,1000,full', '5,x,full', '5,1000,half', '5,1000,full,9']) {
      expect(() => parseRetryPolicy(bad)).toThrowError(expect.objectContaining({ code: 'CONFIG_INVALID', kind: 'fatal' }));
    }
  });

  it('backs off exponentially up to the cap, full jitter scaling by random', () => {
    const p: RetryPolicy = { maxAttempts: 10, capMs: 10_000, baseMs: 1000, jitter: 'none' };
    expect([0, 1, 2, 3, 4, 5, 60].map((a) => backoffDelay(a, p))).toEqual([1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
    const full = { ...p, jitter: 'full' as const };
    expect(backoffDelay(2, full, () => 0.5)).toBe(2000);
    expect(backoffDelay(2, full, () => 0)).toBe(0);
    expect(backoffDelay(1000, full, () => 0.999)).toBeLessThanOrEqual(10_000); // 2**1000 overflows to Infinity; the cap holds
  });
});

describe('withRetry', () => {
  const policy: RetryPolicy = { maxAttempts: 4, capMs: 5000, baseMs: 1000, jitter: 'full' };

  it('retries retryable errors with jittered delays, then succeeds', async () => {
    const clock = fakeClock();
    const seen: Array<[number, number]> = [];
    let calls = 0;
    const result = await withRetry(async (attempt) => {
      calls++;
      if (attempt < 2) throw retryable();
      return 'ok';
    }, policy, { sleep: clock.sleep, random: () => 0.25, onRetry: (_e, a, ms) => seen.push([a, ms]) });
    expect(result).toBe('ok');
    expect(calls).toBe(3);
    expect(seen).toEqual([[0, 250], [1, 500]]);
    expect(clock.sleeps).toEqual([250, 500]);
  });

  it('gives up after maxAttempts with the last error', async () => {
    const clock = fakeClock();
    let calls = 0;
    await expect(withRetry(async () => { calls++; throw retryable(); }, policy, { sleep: clock.sleep }))
      .rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
    expect(calls).toBe(4);
    expect(clock.sleeps).toHaveLength(3);
  });

  it('does not retry reject or fatal errors, but retries unknown errors (ours)', async () => {
    const clock = fakeClock();
    let calls = 0;
    await expect(withRetry(async () => { calls++; throw new InboxdError('HOST_KEY_MISMATCH', 'no'); }, policy, { sleep: clock.sleep }))
      .rejects.toMatchObject({ code: 'HOST_KEY_MISMATCH' });
    expect(calls).toBe(1);
    calls = 0;
    await expect(withRetry(async () => { calls++; throw new Error('EIO'); }, policy, { sleep: clock.sleep })).rejects.toThrow('EIO');
    expect(calls).toBe(4);
  });

  it('a throwing onRetry observer does not stop retries; an abort does', async () => {
    const clock = fakeClock();
    let calls = 0;
    await withRetry(async () => { if (calls++ === 0) throw retryable(); }, policy, { sleep: clock.sleep, onRetry: () => { throw new Error('observer bug'); } });
    expect(calls).toBe(2);

    const ac = new AbortController();
    calls = 0;
    await expect(withRetry(async () => { calls++; ac.abort(new Error('stopping')); throw retryable(); }, policy, { sleep: clock.sleep, signal: ac.signal }))
      .rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
    expect(calls).toBe(1);
  });

  it('real sleep is abortable', async () => {
    const ac = new AbortController();
    const p = withRetry(async () => { throw retryable(); }, { ...policy, baseMs: 60_000, jitter: 'none' }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 10);
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
  });
});

describe('withTimeout', () => {
  afterEach(() => { vi.useRealTimers(); });

  it('rejects with REMOTE_TIMEOUT naming the operation and calls onTimeout', async () => {
    vi.useFakeTimers();
    const onTimeout = vi.fn();
    const p = withTimeout(new Promise(() => {}), 5000, 'list /outbox on sftp.partner', onTimeout);
    const check = expect(p).rejects.toMatchObject({ code: 'REMOTE_TIMEOUT', kind: 'retry', message: 'list /outbox on sftp.partner timed out after 5000 ms' });
    await vi.advanceTimersByTimeAsync(4999);
    expect(onTimeout).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    await check;
    expect(onTimeout).toHaveBeenCalledOnce();
  });

  it('passes results and errors through and clears its timer', async () => {
    vi.useFakeTimers();
    await expect(withTimeout(Promise.resolve(42), 1000, 'x')).resolves.toBe(42);
    await expect(withTimeout(Promise.reject(new Error('boom')), 1000, 'x')).rejects.toThrow('boom');
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('CircuitBreaker', () => {
  const failing = async () => { throw retryable(); };
  const ok = async () => 'ok';

  it('opens after N consecutive failures, fails fast during cool-down, probes once, closes on success', async () => {
    const clock = fakeClock();
    const changes: string[] = [];
    const b = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 10_000, now: clock.now, onStateChange: (f, t) => changes.push(`${f}->${t}`) });
    await expect(b.call(failing)).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
    await expect(b.call(ok)).resolves.toBe('ok'); // success resets the count: failures must be consecutive
    for (let i = 0; i < 3; i++) await expect(b.call(failing)).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
    expect(b.state).toBe('open');

    const fn = vi.fn(ok);
    clock.advance(9_999);
    await expect(b.call(fn)).rejects.toMatchObject({ code: 'CIRCUIT_OPEN', kind: 'retry', details: { retryInMs: 1 } });
    expect(fn).not.toHaveBeenCalled();

    clock.advance(1);
    let release!: () => void;
    const probe = b.call(() => new Promise<string>((r) => { release = () => r('probed'); }));
    expect(b.state).toBe('half-open');
    await expect(b.call(fn)).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' }); // only ONE probe
    release();
    await expect(probe).resolves.toBe('probed');
    expect(b.state).toBe('closed');
    expect(changes).toEqual(['closed->open', 'open->half-open', 'half-open->closed']);
  });

  it('re-opens for a full cool-down when the probe fails', async () => {
    const clock = fakeClock();
    const b = new CircuitBreaker({ failureThreshold: 1, cooldownMs: 1000, now: clock.now });
    await expect(b.call(failing)).rejects.toBeDefined();
    clock.advance(1000);
    await expect(b.call(failing)).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
    expect(b.state).toBe('open');
    clock.advance(999);
    await expect(b.call(ok)).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' });
    clock.advance(1);
    await expect(b.call(ok)).resolves.toBe('ok');
  });

  it('survives a throwing observer and ignores errors that are not the server\'s fault', async () => {
    const clock = fakeClock();
    const b = new CircuitBreaker({
      failureThreshold: 1, cooldownMs: 1000, now: clock.now,
      onStateChange: () => { throw new Error('metrics down'); },
      isFailure: (e) => (e as InboxdError).code !== 'CHECKSUM_MISMATCH',
    });
    await expect(b.call(async () => { throw new InboxdError('CHECKSUM_MISMATCH', 'partner'); })).rejects.toMatchObject({ code: 'CHECKSUM_MISMATCH' });
    expect(b.state).toBe('closed');
    await expect(b.call(failing)).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
    expect(b.state).toBe('open');
  });
});

describe('TokenBucket and HostLimiter', () => {
  it('allows a burst, then paces requests at the rate, serving waiters in order', async () => {
    const clock = fakeClock();
    const bucket = new TokenBucket({ ratePerSec: 2, burst: 3, now: clock.now, sleep: clock.sleep });
    for (let i = 0; i < 3; i++) await bucket.take();
    expect(clock.sleeps).toEqual([]);
    await bucket.take();
    await bucket.take();
    expect(clock.sleeps).toEqual([500, 500]);
    clock.advance(10_000); // idle refills only up to the burst
    for (let i = 0; i < 3; i++) await bucket.take();
    expect(clock.sleeps).toHaveLength(2);
  });

  it('concurrent takers reserve successive slots (no thundering herd)', async () => {
    const clock = fakeClock();
    const asked: number[] = [];
    const bucket = new TokenBucket({ ratePerSec: 10, burst: 1, now: clock.now, sleep: async (ms) => { asked.push(ms); } });
    await Promise.all([bucket.take(), bucket.take(), bucket.take()]);
    expect(asked.map(Math.round)).toEqual([100, 200]);
  });

  it('an aborted wait gives its token back', async () => {
    const clock = fakeClock();
    const ac = new AbortController();
    ac.abort();
    const bucket = new TokenBucket({ ratePerSec: 1, burst: 1, now: clock.now, sleep: clock.sleep });
    await bucket.take();
    await expect(bucket.take(ac.signal)).rejects.toBeDefined();
    await bucket.take();
    expect(clock.sleeps).toEqual([1000]); // not 2000: the aborted reservation was returned
  });

  it('rejects a nonsensical configuration', () => {
    expect(() => new TokenBucket({ ratePerSec: 0, burst: 1 })).toThrowError(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });

  it('limits concurrent connections per host, FIFO, independently per host', async () => {
    const clock = fakeClock();
    const limiter = new HostLimiter({ maxConnections: 2, ratePerSec: 100, burst: 10, now: clock.now, sleep: clock.sleep });
    let active = 0;
    let peak = 0;
    const order: string[] = [];
    const gates: Array<() => void> = [];
    const job = (host: string, id: string) => limiter.withConnection(host, async () => {
      active++; peak = Math.max(peak, active); order.push(id);
      await new Promise<void>((r) => gates.push(r));
      active--;
    });
    const jobs = [job('a', 'a1'), job('a', 'a2'), job('a', 'a3'), job('b', 'b1')];
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual(['a1', 'a2', 'b1']); // a3 waits; b has its own slots
    gates.shift()!();
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual(['a1', 'a2', 'b1', 'a3']);
    while (gates.length) gates.shift()!();
    await Promise.all(jobs);
    expect(peak).toBe(3); // 2 on a + 1 on b
    await expect(limiter.withConnection('a', async () => { throw new Error('x'); })).rejects.toThrow('x');
    await limiter.withConnection('a', async () => {}); // the failed job released its slot
  });

  it('rate-limits requests per host', async () => {
    const clock = fakeClock();
    const limiter = new HostLimiter({ maxConnections: 1, ratePerSec: 1, burst: 1, now: clock.now, sleep: clock.sleep });
    await limiter.request('a');
    await limiter.request('b');
    expect(clock.sleeps).toEqual([]);
    await limiter.request('a');
    expect(clock.sleeps).toEqual([1000]);
  });
});
