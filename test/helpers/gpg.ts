/**
 * Drives the real `gpg` (GnuPG 2.2) the way a partner would, in a throw-away
 * GNUPGHOME, so tests exercise interop with the tool partners actually use.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export type KeyAlgo = 'rsa3072' | 'ed25519';
export type Compression = 'zlib' | 'zip' | 'bzip2' | 'none';

export interface EncryptOptions {
  recipients: string[];
  signer?: string;
  armor?: boolean;
  compress?: Compression;
  /** gpg --faked-system-time, e.g. '20200101T120000' */
  fakedTime?: string;
}

/** gpg matches a bare user ID as a substring ('ed@x' would also pick 'expired@x'); '<email>' matches exactly. */
const exact = (who: string) => (/^[^<>\s]+@[^<>\s]+$/.test(who) ? `<${who}>` : who);

export class Gpg {
  private constructor(readonly home: string) {}

  static async create(): Promise<Gpg> {
    return new Gpg(await mkdtemp(join(tmpdir(), 'inboxd-gnupg-')));
  }

  async run(args: string[], fakedTime?: string): Promise<string> {
    const time = fakedTime ? ['--faked-system-time', fakedTime] : [];
    const { stdout } = await run(
      'gpg',
      ['--batch', '--yes', '--quiet', '--pinentry-mode', 'loopback', '--passphrase', '', '--trust-model', 'always', ...time, ...args],
      { env: { ...process.env, GNUPGHOME: this.home }, maxBuffer: 64 * 1024 * 1024 },
    );
    return stdout;
  }

  /** A primary signing key plus an encryption subkey (cv25519 for ed25519), like `gpg --full-gen-key` makes. Returns the fingerprint. */
  async genKey(uid: string, algo: KeyAlgo, opts: { expire?: string; fakedTime?: string } = {}): Promise<string> {
    const expire = opts.expire ?? 'never';
    await this.run(['--quick-gen-key', uid, algo, 'sign', expire], opts.fakedTime);
    const fpr = await this.fingerprint(uid);
    await this.run(['--quick-add-key', fpr, algo === 'ed25519' ? 'cv25519' : 'rsa3072', 'encr', expire], opts.fakedTime);
    return fpr;
  }

  async fingerprint(uid: string): Promise<string> {
    const out = await this.run(['--with-colons', '--list-keys', exact(uid)]);
    const line = out.split('\n').find((l) => l.startsWith('fpr:'));
    if (!line) throw new Error(`no key for ${uid}`);
    return line.split(':')[9]!;
  }

  exportPublic(uid: string): Promise<string> {
    return this.run(['--armor', '--export', exact(uid)]);
  }

  exportSecret(uid: string): Promise<string> {
    return this.run(['--armor', '--export-secret-keys', exact(uid)]);
  }

  async importKey(armored: string): Promise<void> {
    const file = join(this.home, `import-${Date.now()}-${Math.random()}.asc`);
    await writeFile(file, armored);
    await this.run(['--import', file]);
  }

  /** Applies the revocation certificate gpg made at key generation (openpgp-revocs.d/FPR.rev). */
  async revoke(fpr: string): Promise<void> {
    const dir = join(this.home, 'openpgp-revocs.d');
    const name = (await readdir(dir)).find((f) => f.startsWith(fpr));
    if (!name) throw new Error(`no revocation certificate for ${fpr}`);
    // gpg prefixes the armor line with ':' so the certificate cannot be imported by accident.
    const cert = (await readFile(join(dir, name), 'utf8')).replace(/^:-----BEGIN/m, '-----BEGIN');
    await this.importKey(cert);
  }

  async encrypt(input: string, output: string, opts: EncryptOptions): Promise<void> {
    const args = ['--output', output];
    if (opts.armor) args.push('--armor');
    if (opts.compress) args.push('--compress-algo', opts.compress);
    for (const r of opts.recipients) args.push('--recipient', exact(r));
    if (opts.signer) args.push('--local-user', exact(opts.signer), '--sign');
    args.push('--encrypt', input);
    await this.run(args, opts.fakedTime);
  }

  async cleanup(): Promise<void> {
    await run('gpgconf', ['--kill', 'gpg-agent'], { env: { ...process.env, GNUPGHOME: this.home } }).catch(() => {});
    await rm(this.home, { recursive: true, force: true });
  }
}

/** A keyring with our key (`inboxd@us`) and the partner's (`partner@acme`), for a describe block; cleaned up after it. */
export function partnerKeys(hooks: { beforeAll: (fn: () => Promise<void>, timeout?: number) => void; afterAll: (fn: () => Promise<void>) => void }): { gpg: () => Gpg } {
  let gpg: Gpg | undefined;
  hooks.beforeAll(async () => {
    gpg = await Gpg.create();
    await gpg.genKey('inboxd@us', 'ed25519');
    await gpg.genKey('partner@acme', 'ed25519');
  }, 120_000);
  hooks.afterAll(async () => {
    await gpg?.cleanup();
  });
  return { gpg: () => gpg! };
}

/** A fixture's configuration given our secret key and partner acme's public key (`ours.asc`, `acme.asc` beside it). */
export async function useKeys(gpg: Gpg, fx: { dir: string; configPath: string }): Promise<void> {
  await writeFile(join(fx.dir, 'ours.asc'), await gpg.exportSecret('inboxd@us'));
  await writeFile(join(fx.dir, 'acme.asc'), await gpg.exportPublic('partner@acme'));
  const config = (await readFile(fx.configPath, 'utf8')).replace(/^partners:\n {2}acme:\n/m, 'pgp:\n  keys: [ours.asc]\npartners:\n  acme:\n    pgp:\n      verification_keys: [acme.asc]\n');
  await writeFile(fx.configPath, config);
}
