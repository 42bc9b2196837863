/**
 * Pull from / push to a partner's own SFTP server. A pure step: callers pass
 * the endpoint, timeouts and hooks; retries, breakers and limits wrap it from
 * outside (see retry.ts). Transfers are streamed, never buffered whole.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { once } from 'node:events';
import SftpClient from 'ssh2-sftp-client';
import type { Client, CipherAlgorithm, KexAlgorithm, MacAlgorithm, ServerHostKeyAlgorithm } from 'ssh2';
import { InboxdError, classify } from '../errors.js';
import { withTimeout } from '../retry.js';

export interface RemoteEndpoint {
  host: string;
  port: number;
  username: string;
  privateKey: Buffer | string;
  passphrase?: string;
  /** 'SHA256:base64' as `ssh-keygen -l` prints it. Required: we never trust on first use. */
  hostKeyFingerprint: string;
  /** Also offer SHA-1 kex/MACs, ssh-rsa/ssh-dss host keys and CBC ciphers, for partners stuck on old servers. */
  legacyAlgorithms?: boolean;
  timeouts: { connectMs: number; opMs: number; transferIdleMs: number };
}

export interface RemoteEntry { name: string; size: number; mtimeMs: number }

export interface SessionHooks {
  /** Awaited before every remote operation, e.g. a per-host rate limit (HostLimiter.request). */
  beforeOp?: (what: string) => Promise<void>;
}

interface AlgorithmLists {
  kex: KexAlgorithm[];
  serverHostKey: ServerHostKeyAlgorithm[];
  cipher: CipherAlgorithm[];
  hmac: MacAlgorithm[];
}
const MODERN: AlgorithmLists = {
  kex: ['curve25519-sha256', 'curve25519-sha256@libssh.org', 'ecdh-sha2-nistp256', 'ecdh-sha2-nistp384', 'ecdh-sha2-nistp521',
    'diffie-hellman-group-exchange-sha256', 'diffie-hellman-group16-sha512', 'diffie-hellman-group18-sha512', 'diffie-hellman-group14-sha256'],
  serverHostKey: ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'rsa-sha2-512', 'rsa-sha2-256'],
  cipher: ['aes128-gcm@openssh.com', 'aes256-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes256-ctr', 'aes192-ctr', 'aes128-ctr'],
  hmac: ['hmac-sha2-256-etm@openssh.com', 'hmac-sha2-512-etm@openssh.com'],
};
// Appended after the modern ones, so they are only chosen when the server offers nothing better.
const LEGACY: AlgorithmLists = {
  kex: ['diffie-hellman-group14-sha1', 'diffie-hellman-group-exchange-sha1', 'diffie-hellman-group1-sha1'],
  serverHostKey: ['ssh-rsa', 'ssh-dss'],
  cipher: ['aes256-cbc', 'aes192-cbc', 'aes128-cbc', '3des-cbc'],
  hmac: ['hmac-sha2-256', 'hmac-sha2-512', 'hmac-sha1'],
};

/** Explicit lists: ssh2's defaults still include ssh-rsa (SHA-1) host keys and hmac-sha1. */
export function algorithmsFor(legacy = false): AlgorithmLists {
  if (!legacy) return MODERN;
  return {
    kex: [...MODERN.kex, ...LEGACY.kex],
    serverHostKey: [...MODERN.serverHostKey, ...LEGACY.serverHostKey],
    cipher: [...MODERN.cipher, ...LEGACY.cipher],
    hmac: [...MODERN.hmac, ...LEGACY.hmac],
  };
}

/** 'SHA256:…' of a raw SSH public key blob, unpadded base64 like OpenSSH. */
export function fingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** Bigger reads/writes per round trip: measured ~2x loopback throughput over the 64 KiB default. */
const CHUNK = 1024 * 1024;

export class RemoteSession {
  private constructor(
    private readonly c: SftpClient,
    private readonly ep: RemoteEndpoint,
    private readonly hooks: SessionHooks,
    private readonly conn: { dead: boolean },
  ) {}

  static async open(ep: RemoteEndpoint, hooks: SessionHooks = {}): Promise<RemoteSession> {
    const pinned = ep.hostKeyFingerprint.replace(/=+$/, '');
    if (!/^SHA256:[A-Za-z0-9+/]{43}$/.test(pinned)) {
      throw new InboxdError('CONFIG_INVALID', `host key fingerprint for ${ep.host} must look like 'SHA256:<43 base64 chars>'`, { host: ep.host });
    }
    let presented: string | undefined;
    let raw: { level?: string } | undefined;
    const conn = { dead: false };
    // No-op global callbacks: the library's defaults print to the console. Our own listeners see every event.
    const c = new SftpClient(`inboxd:${ep.host}`, { error: () => {}, end: () => {}, close: () => {} });
    c.on('close', () => { conn.dead = true; });
    c.on('error', (e: { level?: string }) => { raw ??= e; }); // keeps ssh2's `level`, which the library's wrapper drops
    try {
      await withTimeout(c.connect({
        host: ep.host, port: ep.port, username: ep.username, privateKey: ep.privateKey, passphrase: ep.passphrase,
        readyTimeout: ep.timeouts.connectMs,
        algorithms: algorithmsFor(ep.legacyAlgorithms),
        // Without hostVerifier ssh2 accepts any host key. It gets the raw key blob (no hostHash set).
        hostVerifier: (key: Buffer) => (presented = fingerprint(key)) === pinned,
      }), ep.timeouts.connectMs, `connect to ${ep.host}:${ep.port}`, () => ssh(c).destroy());
    } catch (err) {
      ssh(c).destroy();
      if (presented !== undefined && presented !== pinned) {
        throw new InboxdError('HOST_KEY_MISMATCH', `host key of ${ep.host}:${ep.port} is ${presented}, expected ${pinned}: refusing to connect`,
          { host: ep.host, port: ep.port, expected: pinned, presented });
      }
      if (raw?.level === 'client-authentication') {
        throw new InboxdError('REMOTE_AUTH_FAILED', `${ep.username}@${ep.host}:${ep.port} refused our key`, { host: ep.host, user: ep.username }, { cause: err });
      }
      if (raw?.level === 'client-timeout') { // ssh2's own readyTimeout won the race against ours
        throw new InboxdError('REMOTE_TIMEOUT', `connect to ${ep.host}:${ep.port} timed out after ${ep.timeouts.connectMs} ms`,
          { operation: 'connect', host: ep.host, timeoutMs: ep.timeouts.connectMs }, { cause: err });
      }
      throw remoteError(`connect to ${ep.host}:${ep.port}`, err);
    }
    // ssh2 leaves Nagle on: each SFTP request then waits for a delayed ACK (measured 2 MB/s uploads on loopback).
    ssh(c).setNoDelay(true);
    return new RemoteSession(c, ep, hooks, conn);
  }

  /** Regular files only; sizes and mtimes as the server reports them (mtime has 1 s resolution). */
  async list(dir: string): Promise<RemoteEntry[]> {
    const items = await this.#op(`list ${dir}`, () => this.c.list(dir));
    return items.filter((i) => i.type === '-').map((i) => ({ name: i.name, size: i.size, mtimeMs: i.modifyTime }));
  }

  /**
   * Streams to `<local>.part`, fsyncs, checks the size (a transfer can end
   * early and still look successful), then renames into place: the final path
   * exists only with complete content.
   */
  async download(remotePath: string, localFinalPath: string, expectedSize: number): Promise<void> {
    const what = `download ${this.ep.host}:${remotePath}`;
    const part = `${localFinalPath}.part`;
    await this.#before(what);
    try {
      try {
        // A path, not fh.createWriteStream({ autoClose: false }): on Node 20 a later fh.close() never settles.
        await pipeline(this.c.createReadStream(remotePath, { highWaterMark: CHUNK }), this.#watchdog(what), createWriteStream(part, { mode: 0o600 }));
      } catch (err) {
        throw remoteError(what, err);
      }
      const size = await fsyncAndSize(part);
      if (size !== expectedSize) {
        throw new InboxdError('REMOTE_UNAVAILABLE', `${what} ended with ${size} of ${expectedSize} bytes`, { path: remotePath, size, expectedSize });
      }
      await rename(part, localFinalPath);
      await fsyncAndSize(dirname(localFinalPath)); // make the rename itself durable
    } catch (err) {
      await rm(part, { force: true });
      throw err;
    }
  }

  /** Writes `.<name>.tmp` then renames: the partner never sees a half-written file under its final name. */
  async upload(localPath: string, remoteDir: string, name: string): Promise<void> {
    const what = `upload ${this.ep.host}:${remoteDir}/${name}`;
    const tmp = `${remoteDir}/.${name}.tmp`;
    await this.#before(what);
    try {
      const ws = this.c.createWriteStream(tmp, { flags: 'w', mode: 0o640 });
      const closed = once(ws, 'close');
      closed.catch(() => {}); // pipeline reports the same error
      await pipeline(createReadStream(localPath, { highWaterMark: CHUNK }), this.#watchdog(what), ws);
      // ssh2's WriteStream finishes before its handle is closed; some servers will not rename an open file.
      await withTimeout(closed, this.ep.timeouts.opMs, `${what}: close`, () => this.#kill());
    } catch (err) {
      // Best effort: a leftover temp file is harmless (the next attempt truncates it) but untidy on the partner's side.
      if (!this.conn.dead) await this.remove(tmp).catch(() => {});
      throw remoteError(what, err);
    }
    await this.rename(tmp, `${remoteDir}/${name}`);
  }

  /** Replaces an existing target. posix-rename is atomic; servers without it get remove + rename. */
  async rename(from: string, to: string): Promise<void> {
    try {
      await this.#op(`rename ${from} -> ${to}`, () => this.c.posixRename(from, to));
    } catch (err) {
      if (!/does not support/.test(String((err as InboxdError).message))) throw err;
      await this.remove(to);
      await this.#op(`rename ${from} -> ${to}`, () => this.c.rename(from, to));
    }
  }

  /** Idempotent: removing what is already gone succeeds, so a retried cleanup does not fail. */
  async remove(path: string): Promise<void> {
    await this.#op(`remove ${path}`, () => this.c.delete(path, true));
  }

  async close(): Promise<void> {
    if (this.conn.dead) return;
    this.conn.dead = true;
    await withTimeout(this.c.end(), this.ep.timeouts.opMs, `close ${this.ep.host}`).catch(() => ssh(this.c).destroy());
  }

  async #before(what: string): Promise<void> {
    if (this.conn.dead) throw new InboxdError('REMOTE_UNAVAILABLE', `${what}: connection to ${this.ep.host} is closed`, { host: this.ep.host });
    await this.hooks.beforeOp?.(what);
  }

  async #op<T>(what: string, fn: () => Promise<T>): Promise<T> {
    await this.#before(what);
    try {
      return await withTimeout(fn(), this.ep.timeouts.opMs, `${what} on ${this.ep.host}`, () => this.#kill());
    } catch (err) {
      throw remoteError(what, err);
    }
  }

  /** After a timeout the protocol state is unknown (late replies, open handles): drop the connection. */
  #kill(): void {
    this.conn.dead = true;
    ssh(this.c).destroy();
  }

  /** Fails the transfer if no bytes pass for transferIdleMs; a slow but moving transfer may take as long as it needs. */
  #watchdog(what: string): Transform {
    const ms = this.ep.timeouts.transferIdleMs;
    const timer = setTimeout(() => {
      this.#kill();
      t.destroy(new InboxdError('REMOTE_TIMEOUT', `${what}: no data for ${ms} ms`, { operation: what, timeoutMs: ms }));
    }, ms);
    const t = new Transform({
      transform(chunk, _enc, cb) { timer.refresh(); cb(null, chunk); },
      flush(cb) { clearTimeout(timer); cb(); },
      destroy(err, cb) { clearTimeout(timer); cb(err); },
    });
    return t;
  }
}

/**
 * A remote file is complete when it has its final name and its size and mtime
 * were identical in two listings at least `minAgeMs` apart on OUR clock, so
 * partner clock skew and 1-second mtimes do not matter. Keep one per directory;
 * a stable file is reported on every later listing until it disappears.
 */
export class StabilityTracker {
  #seen = new Map<string, { size: number; mtimeMs: number; since: number }>();

  constructor(private readonly opts: { minAgeMs: number; isFinalName?: (name: string) => boolean }) {}

  observe(entries: RemoteEntry[], now: number): RemoteEntry[] {
    const isFinal = this.opts.isFinalName ?? defaultFinalName;
    const next = new Map<string, { size: number; mtimeMs: number; since: number }>();
    const stable: RemoteEntry[] = [];
    for (const e of entries) {
      if (!isFinal(e.name)) continue;
      const prev = this.#seen.get(e.name);
      const same = prev !== undefined && prev.size === e.size && prev.mtimeMs === e.mtimeMs;
      const since = same ? prev.since : now;
      next.set(e.name, { size: e.size, mtimeMs: e.mtimeMs, since });
      if (same && now - since >= this.opts.minAgeMs) stable.push(e);
    }
    this.#seen = next; // forget vanished files: a re-upload must prove itself stable again
    return stable;
  }
}

/** Upload conventions of common clients: dot files, .part/.tmp (ours too), WinSCP's .filepart. */
export const defaultFinalName = (name: string): boolean => !name.startsWith('.') && !/\.(part|tmp|filepart|partial|uploading)$/i.test(name);

function remoteError(what: string, err: unknown): InboxdError {
  if (err instanceof InboxdError) return err;
  const e = err as { path?: unknown; code?: unknown; message?: string };
  if (typeof e?.path === 'string') return classify(err); // local fs error: ours, not the remote's
  return new InboxdError('REMOTE_UNAVAILABLE', `${what}: ${e?.message ?? String(err)}`, { operation: what, cause: e?.code }, { cause: err });
}

/** ssh2-sftp-client keeps the ssh2 Client on an untyped `client` field; we need destroy() (drop without a goodbye) and setNoDelay(). */
function ssh(c: SftpClient): Client {
  return (c as unknown as { client: Client }).client;
}

async function fsyncAndSize(path: string): Promise<number> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
    return (await fh.stat()).size;
  } finally {
    await fh.close();
  }
}
