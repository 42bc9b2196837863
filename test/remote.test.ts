/**
 * RemoteSession against a real OpenSSH sshd (test/helpers/sshd.ts): listing and
 * stability, streamed downloads and uploads, host key pinning, algorithms, and
 * what happens when the server goes down, hangs or dies mid-transfer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RemoteSession, StabilityTracker, fingerprint, type RemoteEndpoint } from '../src/remote/session.js';
import { CircuitBreaker, withRetry } from '../src/retry.js';
import { startSshd, type Sshd } from './helpers/sshd.js';

const BIG_MB = 200;
let sshd: Sshd;
let local: string;
let bigPath: string;
let bigSha: string;

const endpoint = (over: Partial<RemoteEndpoint> = {}): RemoteEndpoint => ({
  host: sshd.host, port: sshd.port, username: sshd.user, privateKey: readFileSync(sshd.clientKeyPath),
  hostKeyFingerprint: sshd.hostKeyFingerprint, timeouts: { connectMs: 5000, opMs: 5000, transferIdleMs: 5000 }, ...over,
});
const remoteDir = () => mkdtempSync(join(sshd.dir, 'remote-'));
const localDir = () => mkdtempSync(join(local, 'l-'));
const sha256 = async (path: string) => {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withSession<T>(fn: (s: RemoteSession) => Promise<T>, ep = endpoint()): Promise<T> {
  const s = await RemoteSession.open(ep);
  try { return await fn(s); } finally { await s.close(); }
}

beforeAll(async () => {
  sshd = await startSshd();
  local = mkdtempSync(join(tmpdir(), 'inboxd-remote-test-'));
  bigPath = join(remoteDir(), 'big.bin');
  execFileSync('dd', ['if=/dev/urandom', `of=${bigPath}`, 'bs=1M', `count=${BIG_MB}`], { stdio: 'ignore' });
  bigSha = await sha256(bigPath);
}, 60_000);

afterAll(async () => {
  await sshd?.destroy();
  if (local) rmSync(local, { recursive: true, force: true });
});

describe('listing and stability', () => {
  it('lists regular files with size and mtime; a file is stable only after two equal listings minAgeMs apart on our clock', async () => {
    const dir = remoteDir();
    const f = join(dir, 'orders_20250101.csv');
    const tracker = new StabilityTracker({ minAgeMs: 1000 });
    await withSession(async (s) => {
      expect(tracker.observe(await s.list(dir), 0)).toEqual([]);

      writeFileSync(f, 'id,amount\n');
      writeFileSync(join(dir, '.orders_20250102.csv.tmp'), 'x'); // an upload in progress under a temp name
      writeFileSync(join(dir, 'orders_20250103.csv.part'), 'x');
      execFileSync('mkdir', [join(dir, 'subdir')]);
      const first = await s.list(dir);
      expect(first.map((e) => e.name).sort()).toEqual(['.orders_20250102.csv.tmp', 'orders_20250101.csv', 'orders_20250103.csv.part']);
      expect(first.find((e) => e.name === 'orders_20250101.csv')).toMatchObject({ size: 10, mtimeMs: Math.floor(statSync(f).mtimeMs / 1000) * 1000 });
      expect(tracker.observe(first, 100)).toEqual([]); // first sighting

      appendFileSync(f, '1,2\n'); // still growing (same second: only the size tells)
      expect(tracker.observe(await s.list(dir), 1500)).toEqual([]); // changed: the clock restarts at 1500
      expect(tracker.observe(await s.list(dir), 2000)).toEqual([]); // same, but only 500 ms
      const stable = tracker.observe(await s.list(dir), 2500);
      expect(stable).toEqual([{ name: 'orders_20250101.csv', size: 14, mtimeMs: expect.any(Number) }]); // temp names never

      utimesSync(f, new Date(), new Date(Date.now() + 5000)); // rewritten with the same size: mtime tells
      expect(tracker.observe(await s.list(dir), 4000)).toEqual([]);
    });
  });

  it('forgets files that vanish, so a re-upload must prove itself again', () => {
    const t = new StabilityTracker({ minAgeMs: 10, isFinalName: (n) => n.endsWith('.csv') });
    const e = { name: 'a.csv', size: 1, mtimeMs: 1000 };
    t.observe([e, { name: 'b.tmp', size: 1, mtimeMs: 1 }], 0);
    expect(t.observe([e, { name: 'b.tmp', size: 1, mtimeMs: 1 }], 10)).toEqual([e]);
    t.observe([], 20);
    expect(t.observe([e], 30)).toEqual([]);
    expect(t.observe([e], 40)).toEqual([e]);
  });
});

describe('transfers', () => {
  it('downloads a file with the right content via .part, leaving no temp file', async () => {
    const dir = remoteDir();
    const body = 'id,amount\n1,10.00\n2,20.50\n';
    writeFileSync(join(dir, 'orders.csv'), body);
    const out = localDir();
    await withSession((s) => s.download(join(dir, 'orders.csv'), join(out, 'orders.csv'), body.length));
    expect(readFileSync(join(out, 'orders.csv'), 'utf8')).toBe(body);
    expect(readdirSync(out)).toEqual(['orders.csv']);
  });

  it('a missing remote file is a retryable error and leaves nothing behind', async () => {
    const out = localDir();
    await expect(withSession((s) => s.download(join(remoteDir(), 'nope.csv'), join(out, 'nope.csv'), 1)))
      .rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE', kind: 'retry' });
    expect(readdirSync(out)).toEqual([]);
  });

  it(`streams a ${BIG_MB} MB file: correct hash, RSS grows < 100 MB`, async () => {
    const out = localDir();
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 5);
    try {
      await withSession((s) => s.download(bigPath, join(out, 'big.bin'), BIG_MB * 1024 * 1024));
    } finally {
      clearInterval(sampler);
    }
    expect(await sha256(join(out, 'big.bin'))).toBe(bigSha);
    expect(peak - rss0).toBeLessThan(100 * 1024 * 1024);
  }, 60_000);

  it('a file that shrinks mid-download (the stream ends early, "successfully") fails the size check', async () => {
    const dir = remoteDir();
    const f = join(dir, 'shrinks.bin');
    execFileSync('cp', [bigPath, f]);
    const out = localDir();
    const part = join(out, 'shrinks.bin.part');
    await expect(withSession(async (s) => {
      const p = s.download(f, join(out, 'shrinks.bin'), BIG_MB * 1024 * 1024);
      while (!existsSync(part) || statSync(part).size < 8 * 1024 * 1024) await sleep(2);
      truncateSync(f, 10 * 1024 * 1024); // the partner rewrote it under our feet
      await p;
    })).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE', message: expect.stringContaining(`of ${BIG_MB * 1024 * 1024} bytes`) });
    expect(readdirSync(out)).toEqual([]);
  }, 60_000);

  it('uploads to .name.tmp then renames over an existing file; the final name appears only complete', async () => {
    const dir = remoteDir();
    writeFileSync(join(dir, 'ack.csv'), 'old ack');
    const src = join(localDir(), 'ack.csv');
    const body = 'delivery,status\norders_20250101.csv,OK\n';
    writeFileSync(src, body);
    const ops: string[] = [];
    let atRename: string[] = [];
    const s = await RemoteSession.open(endpoint(), {
      beforeOp: async (what) => {
        ops.push(what.split(' ')[0]!);
        if (what.startsWith('rename')) atRename = readdirSync(dir).sort();
      },
    });
    try {
      await s.upload(src, dir, 'ack.csv');
    } finally {
      await s.close();
    }
    expect(atRename).toEqual(['.ack.csv.tmp', 'ack.csv']);
    expect(readFileSync(join(dir, 'ack.csv'), 'utf8')).toBe(body);
    expect(readdirSync(dir)).toEqual(['ack.csv']);
    expect(ops).toEqual(['upload', 'rename']); // every remote operation passes the caller's hook (rate limits)
  });

  it('a failed upload says whose fault it is and leaves no temp file on the server', async () => {
    const dir = remoteDir();
    const src = join(localDir(), 'ack.csv');
    writeFileSync(src, 'x');
    await withSession(async (s) => {
      await expect(s.upload(join(local, 'missing.csv'), dir, 'ack.csv')).rejects.toMatchObject({ code: 'IO_ERROR' }); // ours
      await expect(s.upload(src, join(dir, 'no-such-dir'), 'ack.csv')).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
      await s.upload(src, dir, 'ack.csv'); // the session survives both
    });
    expect(readdirSync(dir)).toEqual(['ack.csv']);
  });

  it('rename and remove: remove is idempotent', async () => {
    const dir = remoteDir();
    writeFileSync(join(dir, 'a.csv'), 'a');
    await withSession(async (s) => {
      await s.rename(join(dir, 'a.csv'), join(dir, 'b.csv'));
      await s.remove(join(dir, 'b.csv'));
      await s.remove(join(dir, 'b.csv'));
    });
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('trust and algorithms', () => {
  it('pins the host key: a wrong fingerprint is refused with HOST_KEY_MISMATCH naming host and both prints', async () => {
    const wrong = fingerprint(Buffer.from('not the host key'));
    const err = await RemoteSession.open(endpoint({ hostKeyFingerprint: wrong })).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'HOST_KEY_MISMATCH', kind: 'fatal',
      details: { host: '127.0.0.1', port: sshd.port, expected: wrong, presented: sshd.hostKeyFingerprint },
    });
    expect((err as Error).message).toContain(sshd.hostKeyFingerprint);
    expect((err as Error).message).toContain(wrong);
    // the ssh-keygen form with '=' padding is accepted; a malformed pin is a configuration error
    await withSession(async () => {}, endpoint({ hostKeyFingerprint: `${sshd.hostKeyFingerprint}=` }));
    await expect(RemoteSession.open(endpoint({ hostKeyFingerprint: 'ab:cd:ef' }))).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
  });

  it('a key the server does not accept is REMOTE_AUTH_FAILED (fatal: retrying risks a lockout)', async () => {
    await expect(RemoteSession.open(endpoint({ privateKey: readFileSync(sshd.hostKeyPath) })))
      .rejects.toMatchObject({ code: 'REMOTE_AUTH_FAILED', kind: 'fatal' });
  });

  it('offers only modern algorithms unless legacyAlgorithms is set', async () => {
    const old = await startSshd({ extraConfig: 'Ciphers aes256-cbc\nMACs hmac-sha1' });
    try {
      const ep = endpoint({ port: old.port, hostKeyFingerprint: old.hostKeyFingerprint, privateKey: readFileSync(old.clientKeyPath) });
      await expect(RemoteSession.open(ep)).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE', message: expect.stringMatching(/cipher/i) });
      await withSession(async (s) => { expect(await s.list(old.dir)).toEqual([]); }, { ...ep, legacyAlgorithms: true });
    } finally {
      await old.destroy();
    }
  }, 30_000);
});

describe('failures', () => {
  it('server down: jittered retries, then the breaker opens; after restart one probe succeeds and closes it', async () => {
    const dir = remoteDir();
    const changes: string[] = [];
    const breaker = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 1000, onStateChange: (f, t) => changes.push(`${f}->${t}`) });
    const listOnce = () => breaker.call(() => withSession((s) => s.list(dir)));
    const retries: Array<{ code: string; attempt: number; delay: number }> = [];
    await sshd.stop();
    try {
      const err = await withRetry(listOnce, { maxAttempts: 5, baseMs: 20, capMs: 200, jitter: 'full' }, {
        onRetry: (e, attempt, delay) => retries.push({ code: (e as { code: string }).code, attempt, delay }),
      }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'CIRCUIT_OPEN', kind: 'retry' });
      expect(retries.map((r) => r.code)).toEqual(['REMOTE_UNAVAILABLE', 'REMOTE_UNAVAILABLE', 'REMOTE_UNAVAILABLE', 'CIRCUIT_OPEN']);
      for (const r of retries) expect(r.delay).toBeLessThanOrEqual(Math.min(200, 20 * 2 ** r.attempt));
      expect(new Set(retries.map((r) => r.delay)).size).toBeGreaterThan(1); // jittered, not lock-step
      expect(breaker.state).toBe('open');
    } finally {
      await sshd.start();
    }
    await expect(listOnce()).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' }); // still cooling down, server untouched
    await sleep(1000);
    await expect(listOnce()).resolves.toEqual([]);
    expect(breaker.state).toBe('closed');
    expect(changes).toEqual(['closed->open', 'open->half-open', 'half-open->closed']);
  }, 30_000);

  it('server SIGKILLed mid-download: the call fails, no final or .part file; a retry after restart gets it all', async () => {
    const out = localDir();
    const final = join(out, 'big.bin');
    const s = await RemoteSession.open(endpoint());
    const p = s.download(bigPath, final, BIG_MB * 1024 * 1024);
    const caught = p.catch((e: unknown) => e);
    while (!existsSync(`${final}.part`) || statSync(`${final}.part`).size < 16 * 1024 * 1024) await sleep(2);
    sshd.kill();
    try {
      const err = await caught;
      // The connection's end, or (when the end waits behind data the client has not taken yet, on a
      // loaded machine) the transfer's idle timeout: either way a failure to retry.
      expect(err).toMatchObject({ code: expect.stringMatching(/^REMOTE_(UNAVAILABLE|TIMEOUT)$/), kind: 'retry' });
      expect(readdirSync(out)).toEqual([]);
      await expect(s.list(sshd.dir)).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' }); // the session knows it is dead
      await s.close();
    } finally {
      await sshd.start(); // the next tests need the server, whatever happened here
    }
    await withRetry(() => withSession((s2) => s2.download(bigPath, final, BIG_MB * 1024 * 1024)), { maxAttempts: 3, baseMs: 100, capMs: 1000, jitter: 'full' });
    expect(await sha256(final)).toBe(bigSha);
    expect(readdirSync(out)).toEqual(['big.bin']);
  }, 60_000);

  it('a hung server (SIGSTOP): idle transfer, operation and connect timeouts fire as REMOTE_TIMEOUT and drop the connection', async () => {
    const out = localDir();
    const final = join(out, 'big.bin');
    // A connect under load can take longer than 500 ms: the sessions are opened with room to spare.
    const ep = endpoint({ timeouts: { connectMs: 10_000, opMs: 500, transferIdleMs: 500 } });
    const s1 = await RemoteSession.open(ep);
    const s2 = await RemoteSession.open(ep);
    try {
      const p = s1.download(bigPath, final, BIG_MB * 1024 * 1024).catch((e: unknown) => e);
      while (!existsSync(`${final}.part`) || statSync(`${final}.part`).size < 4 * 1024 * 1024) await sleep(2);
      sshd.signal('SIGSTOP');
      const t0 = Date.now();
      expect(await p).toMatchObject({ code: 'REMOTE_TIMEOUT', message: expect.stringContaining('no data for 500 ms') });
      expect(Date.now() - t0).toBeLessThan(3000);
      expect(readdirSync(out)).toEqual([]);
      await expect(s1.list(sshd.dir)).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE', message: expect.stringContaining('closed') });

      await expect(s2.list(sshd.dir)).rejects.toMatchObject({ code: 'REMOTE_TIMEOUT', message: expect.stringContaining(`list ${sshd.dir}`) });
      await expect(s2.list(sshd.dir)).rejects.toMatchObject({ message: expect.stringContaining('closed') });

      const hung = endpoint({ timeouts: { connectMs: 500, opMs: 500, transferIdleMs: 500 } });
      await expect(RemoteSession.open(hung)).rejects.toMatchObject({ code: 'REMOTE_TIMEOUT', message: expect.stringContaining('connect to') });
    } finally {
      sshd.signal('SIGCONT');
      await s1.close();
      await s2.close();
    }
    await withSession(async (s) => { await s.list(sshd.dir); }); // the server itself is fine again
  }, 30_000);
});
