/**
 * A real OpenSSH sshd on 127.0.0.1 for tests: its own host key, client key,
 * config, port and temp dir. Linux only (finds session processes via /proc).
 *
 * sshd forks every connection into a new session (setsid), so signalling the
 * listener or its process group leaves live SFTP sessions behind. stop() and
 * kill() therefore signal the listener *and all its descendants*, which is what
 * "the server went away" means for a client.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync, readFileSync, readdirSync, chmodSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from './net.js';

export interface SshdOptions {
  dir?: string;
  /** Appended verbatim after the base config, e.g. Match blocks. */
  extraConfig?: string;
  /** Extra public key lines; the generated client key is always authorised. */
  authorizedKeys?: string[];
  /** Default 'sftp internal-sftp'. */
  subsystem?: string;
}

export interface Sshd {
  port: number;
  host: '127.0.0.1';
  dir: string;
  hostKeyPath: string;
  /** 'SHA256:...' as `ssh-keygen -l` prints it. */
  hostKeyFingerprint: string;
  user: string;
  clientKeyPath: string;
  stop(): Promise<void>;
  /** (Re)start on the same port. */
  start(): Promise<void>;
  /** SIGKILL the listener and every session, without waiting. */
  kill(): void;
  /** Send any signal to the listener and every session, e.g. SIGSTOP/SIGCONT to simulate a hung server. */
  signal(sig: NodeJS.Signals): void;
  /** stop() and remove the temp dir if the harness created it. */
  destroy(): Promise<void>;
  /** Recent sshd stderr (-e), for failure messages. */
  logs(): string;
}

const live = new Set<number>();
process.once('exit', () => { for (const pid of live) killTree(pid, 'SIGKILL'); });

export async function startSshd(opts: SshdOptions = {}): Promise<Sshd> {
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'inboxd-sshd-'));
  mkdirSync(dir, { recursive: true });
  // sshd reads AuthorizedKeysFile as the login user; a non-root user must be able to reach it.
  chmodSync(dir, 0o755);
  const etc = join(dir, 'sshd');
  mkdirSync(etc, { recursive: true, mode: 0o755 });
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // privilege-separation dir

  const hostKeyPath = join(etc, 'ssh_host_ed25519_key');
  const clientKeyPath = join(etc, 'client_ed25519');
  for (const key of [hostKeyPath, clientKeyPath]) {
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'inboxd-test', '-f', key]);
  }
  const hostKeyFingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${hostKeyPath}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
  const authorizedKeys = join(etc, 'authorized_keys');
  writeFileSync(authorizedKeys, [readFileSync(`${clientKeyPath}.pub`, 'utf8').trim(), ...(opts.authorizedKeys ?? [])].join('\n') + '\n', { mode: 0o644 });

  const port = await freePort();
  const config = join(etc, 'sshd_config');
  writeFileSync(config, [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${hostKeyPath}`,
    `PidFile ${join(etc, 'sshd.pid')}`,
    'UsePAM no',
    'StrictModes no',
    `AuthorizedKeysFile ${authorizedKeys}`,
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password',
    'LogLevel VERBOSE',
    `Subsystem ${opts.subsystem ?? 'sftp internal-sftp'}`,
    // Match blocks must come last: they apply to everything after them.
    opts.extraConfig ?? '',
  ].join('\n') + '\n');

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stderr = '';

  const start = async (): Promise<void> => {
    await exited;
    const proc = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    live.add(proc.pid!);
    proc.stderr.setEncoding('utf8').on('data', (s: string) => { stderr = (stderr + s).slice(-16_384); });
    exited = new Promise((resolve) => proc.once('exit', () => { live.delete(proc.pid!); resolve(); }));
    await waitForBanner(port, proc, () => stderr);
  };

  const signalAll = (sig: NodeJS.Signals) => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) killTree(child.pid, sig);
  };

  const stop = async (): Promise<void> => {
    const sessions = child?.pid === undefined ? [] : descendants(child.pid);
    signalAll('SIGTERM');
    await exited;
    // Sessions whose listener is gone are reparented; finish them off so no SFTP server lingers.
    for (const pid of sessions) trySignal(pid, 'SIGKILL');
  };

  await start();
  return {
    port, host: '127.0.0.1', dir, hostKeyPath, hostKeyFingerprint, user: userInfo().username, clientKeyPath,
    start, stop,
    kill: () => signalAll('SIGKILL'),
    signal: signalAll,
    destroy: async () => { await stop(); if (ownDir) rmSync(dir, { recursive: true, force: true }); },
    logs: () => stderr,
  };
}

/** Signal the descendants first: once the parent dies they are reparented and can no longer be found. */
function killTree(pid: number, sig: NodeJS.Signals): void {
  for (const d of descendants(pid).reverse()) trySignal(d, sig);
  trySignal(pid, sig);
}

function trySignal(pid: number, sig: NodeJS.Signals): void {
  try { process.kill(pid, sig); } catch { /* already gone */ }
}

function descendants(root: number): number[] {
  const parentOf = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // Fields after the parenthesised comm (which may itself contain spaces): state ppid ...
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parentOf.set(Number(name), ppid);
    } catch { /* exited while we looked */ }
  }
  const out: number[] = [];
  const frontier = [root];
  while (frontier.length > 0) {
    const p = frontier.shift()!;
    for (const [pid, ppid] of parentOf) if (ppid === p) { out.push(pid); frontier.push(pid); }
  }
  return out;
}

/** Ready means the port answers with an SSH banner, not merely accepts: a stale listener would also accept. */
async function waitForBanner(port: number, proc: ChildProcess, logs: () => string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`sshd exited (${proc.exitCode ?? proc.signalCode}) during start:\n${logs()}`);
    }
    if (await banner(port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd did not answer on 127.0.0.1:${port} within ${timeoutMs} ms:\n${logs()}`);
}

function banner(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    const done = (ok: boolean) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(1000, () => done(false));
    sock.once('error', () => done(false));
    sock.once('data', (b) => done(b.toString('latin1').startsWith('SSH-')));
  });
}
