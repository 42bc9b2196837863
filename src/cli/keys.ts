/**
 * `inboxd keys ...`: generate our key pair, list keys with their expiry, vet a
 * partner's public key. Each command is a plain async function (tested
 * directly); the commander wiring below only parses options and prints.
 */
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { EXIT, InboxdError } from '../errors.js';
import {
  checkPartnerKey, describeKey, expiryWarnings, generateKeyPair, loadPublicKeys, readPassphrase,
  type KeyInfo, type PartnerKeyCheck,
} from '../pgp/keys.js';

export interface KeySource { label: string; paths: string[] }
/** Maps a config file to the key files it names (ours and each partner's); supplied by the CLI once the config loader exists. */
export type LoadKeySources = (configFile: string) => KeySource[] | Promise<KeySource[]>;

export const PRIVATE_KEY_FILE = 'inboxd-private.asc';
export const PUBLIC_KEY_FILE = 'inboxd-public.asc';

export interface GenerateOptions {
  outDir: string;
  name?: string;
  email?: string;
  passphraseFile?: string;
  passphraseEnv?: string;
  algo?: 'curve25519' | 'rsa4096';
  expiresInDays?: number;
}

/** Writes our key pair: private 0600, public 0644 (exactly, whatever the umask). Never overwrites. */
export async function generateKeys(opts: GenerateOptions) {
  const passphrase = await readPassphrase({ file: opts.passphraseFile, env: opts.passphraseEnv });
  const pair = await generateKeyPair({
    name: opts.name ?? 'inboxd', email: opts.email, passphrase, algo: opts.algo, expiresInDays: opts.expiresInDays,
  });
  await mkdir(opts.outDir, { recursive: true, mode: 0o700 });
  const privateKeyFile = join(opts.outDir, PRIVATE_KEY_FILE);
  const publicKeyFile = join(opts.outDir, PUBLIC_KEY_FILE);
  await writeNew(privateKeyFile, pair.privateKey, 0o600);
  try {
    await writeNew(publicKeyFile, pair.publicKey, 0o644);
  } catch (err) {
    await rm(privateKeyFile, { force: true }); // a private key without its public half would only confuse
    throw err;
  }
  return { privateKeyFile, publicKeyFile, fingerprint: pair.fingerprint, encrypted: passphrase !== undefined };
}

async function writeNew(file: string, data: string, mode: number): Promise<void> {
  try {
    await writeFile(file, data, { flag: 'wx', mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new InboxdError('CONFIG_INVALID', `${file} already exists; refusing to overwrite a key`, { file });
    }
    throw err;
  }
  await chmod(file, mode);
}

export interface ListedKey extends KeyInfo { label: string; file: string; status: string }

/** One row per key: `status` is 'ok', 'expires in Nd', 'expired' or 'revoked'. */
export async function listKeys(sources: KeySource[], warnDays = 30, now = new Date()): Promise<ListedKey[]> {
  const rows: ListedKey[] = [];
  for (const { label, paths } of sources) {
    for (const file of paths) {
      for (const key of await loadPublicKeys([file])) {
        const info = await describeKey(key);
        const warning = expiryWarnings([info], warnDays, now)[0];
        const status = info.revoked ? 'revoked'
          : !warning ? 'ok'
            : warning.expires <= now ? 'expired' : `expires in ${warning.daysLeft}d`;
        rows.push({ label, file, status, ...info });
      }
    }
  }
  return rows;
}

export async function checkKeys(paths: string[], now = new Date()): Promise<PartnerKeyCheck[]> {
  const results: PartnerKeyCheck[] = [];
  for (const file of paths) results.push(await checkPartnerKey(file, now));
  return results;
}

const day = (d: Date | null) => (d ? d.toISOString().slice(0, 10) : 'never');
const print = (line: string) => process.stdout.write(`${line}\n`);

/** Errors become a message on stderr and an exit code; nothing is thrown back into commander. */
function action<A extends unknown[]>(fn: (...args: A) => Promise<void>) {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      process.stderr.write(`inboxd keys: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = err instanceof InboxdError && err.kind !== 'fatal' ? EXIT.SOFTWARE : EXIT.CONFIG;
    }
  };
}

export function registerKeysCommands(program: Command, loadConfig?: LoadKeySources): Command {
  const keys = program.command('keys').description('manage OpenPGP keys: ours and partners\'');

  keys.command('generate')
    .description(`write our key pair to DIR/${PRIVATE_KEY_FILE} (0600) and DIR/${PUBLIC_KEY_FILE} (0644)`)
    .requiredOption('--out-dir <dir>', 'directory for the key files (must not hold keys yet)')
    .option('--name <name>', 'user ID name', 'inboxd')
    .option('--email <email>', 'user ID email')
    .option('--passphrase-file <file>', 'protect the private key with the passphrase in this file')
    .option('--passphrase-env <var>', 'protect the private key with the passphrase in this environment variable')
    .option('--algo <algo>', 'curve25519 (ed25519 + cv25519) or rsa4096', 'curve25519')
    .option('--expires-in-days <n>', 'key lifetime in days (default: never expires)', (v) => Number.parseInt(v, 10))
    .action(action(async (o: GenerateOptions) => {
      if (o.algo !== 'curve25519' && o.algo !== 'rsa4096') throw new InboxdError('CONFIG_INVALID', `--algo must be curve25519 or rsa4096, not ${o.algo}`);
      const r = await generateKeys(o);
      print(`fingerprint ${r.fingerprint}`);
      print(`private key ${r.privateKeyFile}${r.encrypted ? '' : ' (not passphrase-protected: keep its file mode 0600)'}`);
      print(`public key  ${r.publicKeyFile} (send this to partners)`);
    }));

  keys.command('list')
    .description('fingerprint, algorithm, creation and expiry of our keys and each partner\'s')
    .option('--config <file>', 'take key files from this config')
    .option('--key <file...>', 'key files to list (instead of --config)')
    .option('--warn-days <n>', 'flag keys expiring within this many days', (v) => Number.parseInt(v, 10), 30)
    .option('--json', 'print JSON')
    .action(action(async (o: { config?: string; key?: string[]; warnDays: number; json?: boolean }) => {
      let sources: KeySource[];
      if (o.key) sources = o.key.map((file) => ({ label: 'file', paths: [file] }));
      else if (o.config && loadConfig) sources = await loadConfig(o.config);
      else if (o.config) throw new InboxdError('CONFIG_INVALID', '--config is not supported by this build; pass --key FILE...');
      else throw new InboxdError('CONFIG_INVALID', 'give --config FILE or --key FILE...');
      const rows = await listKeys(sources, o.warnDays);
      if (o.json) {
        print(JSON.stringify(rows, null, 2));
        return;
      }
      for (const r of rows) {
        print([r.label, r.fingerprint, r.algorithm, `created ${day(r.created)}`, `expires ${day(r.expires)}`, r.status, r.userIds.join(', ')].join('  '));
      }
    }));

  keys.command('check')
    .description('validate partner public key files: exit 0 if usable, 78 with the reason if not')
    .argument('<file...>')
    .action(action(async (files: string[]) => {
      const results = await checkKeys(files);
      for (const r of results) {
        if (r.ok) print(`${r.file}: ok (${r.keys.map((k) => `${k.fingerprint} ${k.algorithm}, expires ${day(k.expires)}`).join('; ')})`);
        else for (const p of r.problems) print(`${r.file}: ${p}`);
      }
      if (results.some((r) => !r.ok)) process.exitCode = EXIT.CONFIG;
    }));

  return keys;
}
