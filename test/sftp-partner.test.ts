/**
 * Partner accounts as production makes them: scripts/add-partner.sh builds the tree and the accounts,
 * a real sshd runs with systemd/sshd_config.d/inboxd-partners.conf, and partners talk to it with the
 * OpenSSH sftp client in batch mode. Asserts what the permission table in add-partner.sh promises:
 * uploads land readable and movable by the daemon user, answers in outbox/ reach the partner, and
 * nothing else does (archive/, the other partner, links, the chroot top level).
 *
 * Needs root (user accounts, chroot). Everything it creates carries a per-run suffix and is removed in
 * afterAll. To run the real daemon against the upload, build its config from `env` (partnerRoot,
 * daemon, partners) and run it as `env.daemon.user`.
 */
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/store/sqlite/driver.js';
import SftpClient from 'ssh2-sftp-client';
import { DaemonProcess, msg, until } from './helpers/daemon.js';
import { csvLine, HEADER, MAPPING, rowsOf, sha256 } from './helpers/fixture.js';
import { startSshd, type Sshd } from './helpers/sshd.js';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const ADD_PARTNER = join(REPO, 'scripts', 'add-partner.sh');
const SNIPPET = join(REPO, 'systemd', 'sshd_config.d', 'inboxd-partners.conf');
const isRoot = process.getuid?.() === 0;

/** The parts of ssh2's SFTP object this test drives directly, bypassing the client-side extension check. */
interface RawSftp {
  _extensions: Record<string, string>;
  ext_openssh_hardlink(from: string, to: string, cb: (err?: unknown) => void): void;
  symlink(target: string, path: string, cb: (err?: unknown) => void): void;
}

interface Run { code: number | null; stdout: string; stderr: string }

function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let stdout = '';
    let stderr = '';
    p.stdout!.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
    p.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    p.once('error', (err) => { clearTimeout(timer); reject(err); });
    p.once('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
    if (opts.input !== undefined) p.stdin!.end(opts.input);
  });
}

async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Runs a command as another user, the way the daemon (User=) or a partner would. */
const as = (user: string, cmd: string, ...args: string[]) => run('runuser', ['-u', user, '--', cmd, ...args]);

interface Partner {
  user: string;
  /** Private key for `sftp -i`. */
  key: string;
  /** The chroot: <partnerRoot>/<user>. */
  home: string;
  dirs: { inbox: string; outbox: string; error: string; archive: string; work: string };
}

interface Env {
  base: string;
  /** The daemon config's `root:`. */
  partnerRoot: string;
  keysDir: string;
  partnerGroup: string;
  daemon: { user: string; uid: number; gid: number };
  a: Partner;
  b: Partner;
  sshd: Sshd;
  knownHosts: string;
  scratch: string;
  addPartner(p: Partner): Promise<Run>;
  /** `sftp -b` as a partner; batch mode stops at the first failing command and exits 1. */
  sftp(p: Partner, batch: string[], key?: string): Promise<Run>;
}

/**
 * What the daemon user runs, copied to `dest` (under the 0755 test base): the checkout may sit in a
 * directory other users cannot enter (root's home, a `mktemp -d` directory), as the README's test
 * command allows. dist/, package.json and the packages package-lock.json installs for production.
 * Returns the copied CLI.
 */
function copyApp(dest: string): string {
  const lock = JSON.parse(readFileSync(join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
  const production = Object.entries(lock.packages).filter(([path, p]) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(path) && !p.dev).map(([path]) => path);
  for (const path of ['package.json', 'dist', ...production]) cpSync(join(REPO, path), join(dest, path), { recursive: true });
  return join(dest, 'dist', 'cli.js');
}

/** Cleanups in reverse order of creation, every one attempted (graphile-worker's releasers). */
const releasers: Array<() => unknown> = [];

async function setup(): Promise<Env> {
  const sfx = Math.random().toString(36).slice(2, 8).replace(/[^a-z0-9]/g, 'x');
  // ChrootDirectory wants every path component root-owned and not group/world-writable: not /tmp, not /var/tmp.
  mkdirSync('/srv', { recursive: true, mode: 0o755 });
  const base = mkdtempSync('/srv/inboxd-test-');
  releasers.push(() => rmSync(base, { recursive: true, force: true }));
  chmodSync(base, 0o755); // sshd reads the keys below as the partner
  const partnerRoot = join(base, 'srv');
  const keysDir = join(base, 'authorized_keys');
  const scratch = mkdtempSync(join(tmpdir(), 'inboxd-sftp-'));
  releasers.push(() => rmSync(scratch, { recursive: true, force: true }));

  const daemonUser = `inboxdt${sfx}`;
  const partnerGroup = `sftpt${sfx}`;
  await ok('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/', '--shell', '/usr/sbin/nologin', daemonUser]);
  releasers.push(() => run('userdel', [daemonUser]));
  releasers.push(() => run('groupdel', [partnerGroup])); // made by add-partner.sh; runs after the partners' userdel
  const daemon = { user: daemonUser, uid: Number(await ok('id', ['-u', daemonUser])), gid: Number(await ok('id', ['-g', daemonUser])) };

  const partner = (user: string): Partner => {
    const home = join(partnerRoot, user);
    return {
      user, key: join(scratch, `${user}_ed25519`), home,
      dirs: { inbox: join(home, 'inbox'), outbox: join(home, 'outbox'), error: join(home, 'error'), archive: join(home, 'archive'), work: join(partnerRoot, '.work', user) },
    };
  };
  const a = partner(`partnera${sfx}`);
  const b = partner(`partnerb${sfx}`);
  const addPartner = (p: Partner) => run(ADD_PARTNER, ['--root', partnerRoot, '--daemon-user', daemonUser, '--keys-dir', keysDir, '--partner-group', partnerGroup, p.user, `${p.key}.pub`]);
  for (const p of [a, b]) {
    await ok('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', p.user, '-f', p.key]);
    releasers.push(() => run('userdel', [p.user]));
    const r = await addPartner(p);
    if (r.code !== 0) throw new Error(`add-partner.sh ${p.user} exited ${r.code}:\n${r.stderr}`);
  }

  const snippet = readFileSync(SNIPPET, 'utf8');
  const extraConfig = [
    ['Match Group sftp-partners', `Match Group ${partnerGroup}`],
    ['ChrootDirectory /srv/inboxd/%u', `ChrootDirectory ${partnerRoot}/%u`],
    ['AuthorizedKeysFile /etc/inboxd/authorized_keys/%u', `AuthorizedKeysFile ${keysDir}/%u`],
  ].reduce((text, [from, to]) => {
    if (!text.includes(from!)) throw new Error(`${SNIPPET} no longer contains '${from}': update this test`);
    return text.replace(from!, to!);
  }, snippet);
  const sshd = await startSshd({ extraConfig });
  releasers.push(() => sshd.destroy());

  const knownHosts = join(scratch, 'known_hosts');
  writeFileSync(knownHosts, `[127.0.0.1]:${sshd.port} ${readFileSync(`${sshd.hostKeyPath}.pub`, 'utf8')}`);
  let n = 0;
  const sftp = async (p: Partner, batch: string[], key = p.key): Promise<Run> => {
    const file = join(scratch, `batch-${n++}`);
    writeFileSync(file, batch.join('\n') + '\n');
    return run('sftp', [
      '-F', '/dev/null', '-b', file, '-i', key, '-P', String(sshd.port),
      '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none',
      '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}`,
      `${p.user}@127.0.0.1`,
    ]);
  };
  return { base, partnerRoot, keysDir, partnerGroup, daemon, a, b, sshd, knownHosts, scratch, addPartner, sftp };
}

function mode(path: string): string {
  return (statSync(path).mode & 0o7777).toString(8).padStart(4, '0');
}

/** owner:group mode, by id, for comparing against the table in add-partner.sh. */
function perms(path: string): { uid: number; gid: number; mode: string } {
  const st = statSync(path);
  return { uid: st.uid, gid: st.gid, mode: mode(path) };
}

const ids = async (user: string) => ({ uid: Number(await ok('id', ['-u', user])), gid: Number(await ok('id', ['-g', user])) });

describe.skipIf(!isRoot)('SFTP partner accounts: add-partner.sh + sshd snippet + chroot', () => {
  let env: Env;
  beforeAll(async () => {
    env = await setup();
  }, 120_000);
  afterAll(async () => {
    for (const release of releasers.splice(0).reverse()) {
      try { await release(); } catch (err) { console.error('cleanup failed:', err); }
    }
  });

  it('add-partner.sh lays out the tree and the account as its permission table says', async () => {
    const { a, daemon, partnerRoot, keysDir } = env;
    const p = await ids(a.user);
    expect(perms(partnerRoot)).toEqual({ uid: 0, gid: 0, mode: '0755' });
    expect(perms(a.home)).toEqual({ uid: 0, gid: 0, mode: '0755' });
    expect(perms(a.dirs.inbox)).toEqual({ uid: p.uid, gid: daemon.gid, mode: '2770' });
    expect(perms(a.dirs.outbox)).toEqual({ uid: daemon.uid, gid: p.gid, mode: '2770' });
    expect(perms(a.dirs.error)).toEqual({ uid: daemon.uid, gid: p.gid, mode: '2770' });
    expect(perms(a.dirs.archive)).toEqual({ uid: daemon.uid, gid: daemon.gid, mode: '0750' });
    expect(perms(join(partnerRoot, '.work'))).toEqual({ uid: daemon.uid, gid: daemon.gid, mode: '0700' });
    expect(perms(a.dirs.work)).toEqual({ uid: daemon.uid, gid: daemon.gid, mode: '0700' });
    expect(perms(keysDir)).toEqual({ uid: 0, gid: 0, mode: '0755' });
    expect(perms(join(keysDir, a.user))).toEqual({ uid: 0, gid: 0, mode: '0644' });
    expect(readFileSync(join(keysDir, a.user), 'utf8')).toBe(readFileSync(`${a.key}.pub`, 'utf8'));

    expect((await ok('getent', ['passwd', a.user])).trim().split(':').slice(5)).toEqual(['/', '/usr/sbin/nologin']);
    expect((await ok('getent', ['shadow', a.user])).split(':')[1]).toBe('*');
    expect((await ok('id', ['-nG', a.user])).trim().split(' ')).toContain(env.partnerGroup);
    expect(readdirSync(a.home).sort()).toEqual(['archive', 'error', 'inbox', 'outbox']);
  });

  it('add-partner.sh is idempotent: a second run repairs modes and leaves files alone', async () => {
    const { a } = env;
    const file = join(a.dirs.inbox, 'pending.csv');
    writeFileSync(file, 'pending\n', { mode: 0o600 });
    chmodSync(a.dirs.inbox, 0o700); // drift, e.g. a partner's client chmod-ing its directory
    const before = perms(file);
    const r = await env.addPartner(a);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(mode(a.dirs.inbox)).toBe('2770');
    expect(perms(file)).toEqual(before);
    rmSync(file);
  });

  it('add-partner.sh refuses a root sshd would refuse as a chroot, and existing non-partner accounts', async () => {
    const key = `${env.a.key}.pub`;
    const bad = await run(ADD_PARTNER, ['--root', '/var/tmp/inboxd-nope', '--daemon-user', env.daemon.user, '--keys-dir', env.keysDir, '--partner-group', env.partnerGroup, 'nobodyx', key]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/\/var\/tmp must not be group- or world-writable/);
    const hijack = await run(ADD_PARTNER, ['--root', env.partnerRoot, '--daemon-user', env.daemon.user, '--keys-dir', env.keysDir, '--partner-group', env.partnerGroup, 'daemon', key]);
    expect(hijack.code).toBe(1);
    expect(hijack.stderr).toMatch(/exists and is not in group/);
    expect(existsSync('/var/tmp/inboxd-nope')).toBe(false);
  });

  it('the snippet applies to partners only (sshd -T), and its Match ends with the included file', async () => {
    const cfg = join(env.scratch, 'sshd_T_config');
    const snippet = readFileSync(SNIPPET, 'utf8').replace('Match Group sftp-partners', `Match Group ${env.partnerGroup}`);
    writeFileSync(join(env.scratch, 'snippet.conf'), snippet);
    // Debian's layout: the Include comes first, the main config after it.
    writeFileSync(cfg, `Include ${join(env.scratch, 'snippet.conf')}\nHostKey ${env.sshd.hostKeyPath}\nX11Forwarding yes\nAllowTcpForwarding yes\n`);
    const effective = async (user: string) => {
      const out = await ok('/usr/sbin/sshd', ['-T', '-f', cfg, '-C', `user=${user},host=localhost,addr=127.0.0.1`]);
      return Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)]));
    };
    const partner = await effective(env.a.user);
    expect(partner).toMatchObject({
      chrootdirectory: '/srv/inboxd/%u',
      forcecommand: 'internal-sftp -u 0027 -P symlink,hardlink',
      authorizedkeysfile: '/etc/inboxd/authorized_keys/%u',
      authenticationmethods: 'publickey',
      passwordauthentication: 'no',
      disableforwarding: 'yes',
      allowtcpforwarding: 'no',
      allowagentforwarding: 'no',
      x11forwarding: 'no',
      permittunnel: 'no',
      permittty: 'no',
    });
    const other = await effective(env.daemon.user);
    expect(other).toMatchObject({ chrootdirectory: 'none', forcecommand: 'none', x11forwarding: 'yes', allowtcpforwarding: 'yes' });
    // The names given to -P must be requests this sftp-server knows, or the deny list is a no-op.
    const requests = (await ok('/usr/lib/openssh/sftp-server', ['-Q', 'requests'])).split('\n');
    expect(requests).toEqual(expect.arrayContaining(['symlink', 'hardlink', 'rename', 'posix-rename']));
  });

  it('an upload-then-rename lands 0640 partner:daemon-group, readable and movable by the daemon user', async () => {
    const { a, daemon } = env;
    const local = join(env.scratch, 'x.csv');
    writeFileSync(local, 'SKU,Quantity\nA-1,3\n', { mode: 0o644 });
    const r = await env.sftp(a, [`put ${local} inbox/x.csv.part`, 'rename inbox/x.csv.part inbox/x.csv', 'ls -1 inbox']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^inbox\/x\.csv$/m);

    const upload = join(a.dirs.inbox, 'x.csv');
    expect(readdirSync(a.dirs.inbox)).toEqual(['x.csv']);
    expect(perms(upload)).toEqual({ uid: (await ids(a.user)).uid, gid: daemon.gid, mode: '0640' });

    const read = await as(daemon.user, 'cat', upload);
    expect(read.code).toBe(0);
    expect(read.stdout).toBe('SKU,Quantity\nA-1,3\n');
    // Claiming a delivery is a rename into the daemon's working dir, and back again on recovery.
    const claimed = join(a.dirs.work, 'x.csv');
    expect((await as(daemon.user, 'mv', upload, claimed)).code).toBe(0);
    expect((await as(daemon.user, 'mv', claimed, upload)).code).toBe(0);
    // The daemon does not own what it moves: no chmod (an archive copy made read-only must be its own copy).
    const chmod = await as(daemon.user, 'chmod', '0440', upload);
    expect(chmod.code).not.toBe(0);
    expect(chmod.stderr).toMatch(/Operation not permitted/);
    // Nobody else reads it: the other partner is neither owner nor in the group.
    expect((await as(env.b.user, 'cat', upload)).code).not.toBe(0);
  });

  it('group access still works under PrivateUsers= (only root and the daemon mapped, the rest nobody)', async (t) => {
    const { a, daemon } = env;
    if ((await run('unshare', ['-U', 'true'])).code !== 0) t.skip('user namespaces are not available here');
    const upload = join(a.dirs.inbox, 'y.csv');
    const local = join(env.scratch, 'y.csv');
    writeFileSync(local, 'y\n');
    expect((await env.sftp(a, [`put ${local} inbox/y.csv`])).code).toBe(0);
    // unshare as the daemon user maps only its own uid and gid, as PrivateUsers=yes does (plus root).
    const script = `stat -c '%u:%g' "$1"; cat "$1" && mv "$1" "$2" && umask 027 && echo ack > "$3" && stat -c '%u:%g %a' "$3"`;
    const ack = join(a.dirs.outbox, 'y.csv.ack.json');
    const r = await as(daemon.user, 'unshare', '-U', `--map-user=${daemon.uid}`, `--map-group=${daemon.gid}`, 'sh', '-c', script, 'sh', upload, join(a.dirs.work, 'y.csv'), ack);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // Inside, the partner's uid and group show as nobody (65534), yet the kernel grants access by the real ids.
    expect(r.stdout.trim().split('\n')).toEqual([`65534:${daemon.gid}`, 'y', `${daemon.uid}:65534 640`]);
    expect(statSync(ack).gid).toBe((await ids(a.user)).gid);
    rmSync(ack);
    rmSync(join(a.dirs.work, 'y.csv'));
  });

  it('an answer the daemon writes to outbox/ can be downloaded and deleted by the partner', async () => {
    const { a, daemon } = env;
    const ack = join(a.dirs.outbox, 'x.csv.ack.json');
    const w = await as(daemon.user, 'sh', '-c', 'umask 027 && printf "%s\\n" "{\\"status\\":\\"accepted\\"}" > "$1"', 'sh', ack);
    expect(w.code).toBe(0);
    expect(perms(ack)).toEqual({ uid: daemon.uid, gid: (await ids(a.user)).gid, mode: '0640' });

    const local = join(env.scratch, 'ack-downloaded.json');
    const r = await env.sftp(a, [`get outbox/x.csv.ack.json ${local}`, 'rm outbox/x.csv.ack.json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readFileSync(local, 'utf8')).toBe('{"status":"accepted"}\n');
    expect(existsSync(ack)).toBe(false);
    // Deleting needs write on the directory, which lets the partner create files there too (documented;
    // the daemon never reads outbox/ or error/).
    const own = await env.sftp(a, [`put ${local} error/mine.txt`, 'rm error/mine.txt']);
    expect(own.code).toBe(0);
  });

  it('the partner sees only its own tree: / is the chroot, archive/ and the other partner are out of reach', async () => {
    const { a, b, daemon } = env;
    const evidence = join(a.dirs.archive, 'evidence.csv');
    await as(daemon.user, 'sh', '-c', 'umask 027 && echo evidence > "$1"', 'sh', evidence);
    writeFileSync(join(b.dirs.inbox, 'b.csv'), 'b\n');

    const top = await env.sftp(a, ['pwd', 'ls -1a /', 'ls -1a ..']);
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/Remote working directory: \/\n/);
    const listed = top.stdout.split('\n').filter((l) => !l.startsWith('sftp>') && !l.startsWith('Remote') && l.trim() !== '');
    const names = new Set(listed.map((l) => l.trim().replace(/^.*\//, '')).filter((n) => n !== '.' && n !== '..'));
    expect([...names].sort()).toEqual(['archive', 'error', 'inbox', 'outbox']);

    const cases: Array<[string, RegExp]> = [
      ['ls archive', /Permission denied/],
      // sftp stats before it opens; the refused stat is reported as "not found".
      [`get archive/evidence.csv ${join(env.scratch, 'stolen')}`, /not found|Permission denied/],
      [`ls /${b.user}`, /not found/],
      [`get ../${b.user}/inbox/b.csv ${join(env.scratch, 'stolen')}`, /not found/],
      [`get ../../${b.user}/inbox/b.csv ${join(env.scratch, 'stolen')}`, /not found/],
      ['ls /.work', /not found/],
      [`get /etc/passwd ${join(env.scratch, 'stolen')}`, /not found/],
    ];
    for (const [cmd, err] of cases) {
      const r = await env.sftp(a, [cmd]);
      expect({ cmd, code: r.code }).toEqual({ cmd, code: 1 });
      expect(r.stderr).toMatch(err);
    }
    expect(existsSync(join(env.scratch, 'stolen'))).toBe(false);
    rmSync(evidence);
    rmSync(join(b.dirs.inbox, 'b.csv'));
  });

  it('symlink and hardlink requests are refused; rename still works', async () => {
    const { a } = env;
    const local = join(env.scratch, 'z.csv');
    writeFileSync(local, 'z\n');
    expect((await env.sftp(a, [`put ${local} inbox/z.csv`])).code).toBe(0);
    const cases: Array<[string, RegExp]> = [
      ['symlink inbox/z.csv inbox/soft', /symlink .*Permission denied/],
      ['ln -s inbox/z.csv inbox/soft', /symlink .*Permission denied/],
      ['symlink /archive inbox/soft', /symlink .*Permission denied/],
      // A denied extension is not even advertised, so the OpenSSH client gives up before asking.
      ['ln inbox/z.csv inbox/hard', /Server does not support hardlink@openssh\.com extension/],
    ];
    for (const [cmd, err] of cases) {
      const r = await env.sftp(a, [cmd]);
      expect({ cmd, code: r.code }).toEqual({ cmd, code: 1 });
      expect(r.stderr).toMatch(err);
    }
    expect(existsSync(join(a.dirs.inbox, 'soft'))).toBe(false);
    expect(existsSync(join(a.dirs.inbox, 'hard'))).toBe(false);
    const renamed = await env.sftp(a, ['rename inbox/z.csv inbox/z2.csv', 'rm inbox/z2.csv']);
    expect(renamed.stderr).toBe('');
    expect(renamed.code).toBe(0);
  });

  it('a client that sends hardlink@openssh.com anyway is refused by the server', async () => {
    const { a } = env;
    const c = new SftpClient('partner-raw');
    await c.connect({ host: '127.0.0.1', port: env.sshd.port, username: a.user, privateKey: readFileSync(a.key), hostVerifier: () => true });
    try {
      const sftp = (c as unknown as { sftp: RawSftp }).sftp;
      expect(sftp._extensions['hardlink@openssh.com']).toBeUndefined();
      expect(sftp._extensions['posix-rename@openssh.com']).toBeDefined();
      sftp._extensions['hardlink@openssh.com'] = '1'; // pretend it was advertised
      const err = await new Promise<unknown>((resolve) => sftp.ext_openssh_hardlink('/inbox/x.csv', '/inbox/hard', resolve));
      expect(err).toMatchObject({ code: 3 }); // SSH_FX_PERMISSION_DENIED
      const symlinkErr = await new Promise<unknown>((resolve) => sftp.symlink('/inbox/x.csv', '/inbox/soft', resolve));
      expect(symlinkErr).toMatchObject({ code: 3 });
    } finally {
      await c.end();
    }
    expect(existsSync(join(a.dirs.inbox, 'soft'))).toBe(false);
    expect(existsSync(join(a.dirs.inbox, 'hard'))).toBe(false);
  });

  it('the partner cannot write at the chroot top level nor into archive/', async () => {
    const { a } = env;
    const local = join(env.scratch, 'w.csv');
    writeFileSync(local, 'w\n');
    for (const cmd of [`put ${local} /w.csv`, 'mkdir /newdir', `put ${local} archive/w.csv`, 'rename inbox /inbox2', 'rmdir /outbox', 'chmod 777 /']) {
      const r = await env.sftp(a, [cmd]);
      expect({ cmd, code: r.code }).toEqual({ cmd, code: 1 });
      expect(r.stderr).toMatch(/Permission denied|Couldn't|[Ff]ailure/);
    }
    expect(readdirSync(a.home).sort()).toEqual(['archive', 'error', 'inbox', 'outbox']);
    expect(existsSync(join(a.dirs.archive, 'w.csv'))).toBe(false);
    expect(existsSync(join(env.partnerRoot, 'w.csv'))).toBe(false);
  });

  it('only the partner\'s own key logs in, and a shell command gets SFTP, not a shell', async () => {
    const { a, b } = env;
    const wrongKey = await env.sftp(a, ['pwd'], b.key);
    expect(wrongKey.code).not.toBe(0);
    expect(wrongKey.stderr).toMatch(/Permission denied \(publickey\)/);

    const shell = await run('ssh', [
      '-F', '/dev/null', '-n', '-T', '-i', a.key, '-p', String(env.sshd.port),
      '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none',
      '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${env.knownHosts}`,
      `${a.user}@127.0.0.1`, 'id; echo pwned > /inbox/pwned',
    ]);
    expect(shell.stdout).not.toMatch(/uid=/);
    expect(existsSync(join(a.dirs.inbox, 'pwned'))).toBe(false);
  });
  it('the daemon, as its own user, ingests a delivery a partner uploaded over sftp; the partner downloads its ACK', async () => {
    const { a, daemon } = env;
    // The daemon's state directory: its own, like systemd's StateDirectory=.
    const state = join(env.base, 'state');
    mkdirSync(state, { mode: 0o750 });
    writeFileSync(join(state, 'mapping.csv'), MAPPING);
    const config = join(state, 'inboxd.yaml');
    const flow = { mapping: 'mapping.csv', table: 'inventory', key: ['sku', 'warehouse'], totals: ['qty'] };
    writeFileSync(config, JSON.stringify({ root: env.partnerRoot, database: join(state, 'inboxd.db'), partners: { [a.user]: { flows: { inventory: flow } } } }));
    for (const f of readdirSync(state)) chownSync(join(state, f), daemon.uid, daemon.gid);
    chownSync(state, daemon.uid, daemon.gid);
    const cli = copyApp(join(env.base, 'app'));
    const d = new DaemonProcess(spawn(process.execPath, [cli, 'run', '--config', config], { cwd: state, uid: daemon.uid, gid: daemon.gid, stdio: ['ignore', 'pipe', 'pipe'] }));
    releasers.push(() => d.kill());
    await d.waitFor(msg('inboxd started'), 'inboxd started', 30_000);

    // The delivery, built locally, then put under temporary names and renamed, as a partner does.
    const name = 'inventory_20250916T0200Z_001.csv';
    const rows = rowsOf(3);
    const data = [HEADER, ...rows.map((r) => HEADER.map((h) => r[h] ?? ''))].map((cells) => `${csvLine(cells)}\n`).join('');
    const manifest = { file: name, records: 3, sums: { qty: rows.reduce((s, r) => s + Number(r.Quantity), 0) }, sha256: sha256(data), schema_version: 1 };
    const files: Array<[string, string]> = [[name, data], [`${name}.sha256`, `${sha256(data)}  ${name}\n`], [`${name}.manifest.json`, JSON.stringify(manifest)]];
    for (const [f, content] of files) writeFileSync(join(env.scratch, f), content);
    const up = await env.sftp(a, files.flatMap(([f]) => [`put ${join(env.scratch, f)} inbox/${f}.part`, `rename inbox/${f}.part inbox/${f}`]));
    expect(up.stderr).toBe('');
    expect(up.code).toBe(0);
    const renamed = Date.now();

    const ack = join(a.dirs.outbox, `${name}.ack.json`);
    await until(() => existsSync(ack), 'the ACK', 15_000, 10);
    console.log(`sftp upload, last rename -> ACK: ${Date.now() - renamed} ms`);
    await d.waitFor(msg('delivery accepted', { file: name }), 'delivery accepted');
    const db = openDatabase(join(state, 'inboxd.db'), { readonly: true });
    try {
      expect(db.prepare('SELECT partner, seq, outcome FROM deliveries').all()).toEqual([{ partner: a.user, seq: 1, outcome: 'accepted' }]);
      expect(db.prepare('SELECT sku FROM inventory ORDER BY sku').all()).toEqual([{ sku: 'A-101' }, { sku: 'A-102' }, { sku: 'A-103' }]);
    } finally {
      db.close();
    }
    expect(readdirSync(a.dirs.inbox).filter((f) => f.startsWith('inventory_'))).toEqual([]);
    expect(readdirSync(a.dirs.work)).toEqual([]);
    expect(readdirSync(a.dirs.archive).sort()).toEqual(files.map(([f]) => f).sort());

    const local = join(env.scratch, 'ack-of-001.json');
    const got = await env.sftp(a, [`get outbox/${name}.ack.json ${local}`]);
    expect(got.stderr).toBe('');
    expect(got.code).toBe(0);
    expect(JSON.parse(readFileSync(local, 'utf8'))).toMatchObject({ status: 'accepted', file: name, sequence: 1, sha256: sha256(data), records: 3 });
    // The originals are archived out of the partner's reach; the other partner cannot read the ACK.
    expect((await env.sftp(a, [`get archive/${name} ${join(env.scratch, 'stolen')}`])).code).toBe(1);
    expect((await as(env.b.user, 'cat', ack)).code).not.toBe(0);

    // A rejected delivery: its error report reaches the partner the same way.
    const bad = 'inventory_20250916T0200Z_002.csv';
    writeFileSync(join(env.scratch, bad), data);
    writeFileSync(join(env.scratch, `${bad}.sha256`), `${'0'.repeat(64)}  ${bad}\n`);
    writeFileSync(join(env.scratch, `${bad}.manifest.json`), JSON.stringify({ ...manifest, file: bad }));
    const badUp = await env.sftp(a, [bad, `${bad}.sha256`, `${bad}.manifest.json`].flatMap((f) => [`put ${join(env.scratch, f)} inbox/${f}.part`, `rename inbox/${f}.part inbox/${f}`]));
    expect(badUp.code).toBe(0);
    await d.waitFor(msg('delivery rejected', { file: bad }), 'delivery rejected', 15_000);
    const report = join(env.scratch, 'report.json');
    const gotReport = await env.sftp(a, [`get error/${bad}.error.json ${report}`, `get error/${bad} ${join(env.scratch, 'returned.csv')}`]);
    expect(gotReport.stderr).toBe('');
    expect(gotReport.code).toBe(0);
    expect(JSON.parse(readFileSync(report, 'utf8'))).toMatchObject({ status: 'rejected', code: 'CHECKSUM_MISMATCH', file: bad, sequence: 2 });

    const exit = await d.stop('SIGTERM');
    expect(exit.code).toBe(0);
    expect(d.stderr).toBe('');
  });
});

if (!isRoot) {
  describe('SFTP partner accounts', () => {
    it.skip('skipped: chroot and partner accounts need root (process.getuid() !== 0)', () => {});
  });
}
