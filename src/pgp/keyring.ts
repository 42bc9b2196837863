/**
 * The keys a running inboxd holds: our private keys (several during a rotation) and each partner's
 * verification keys, loaded and checked once at start. A key that cannot be used is a configuration
 * error (exit 78), found before any delivery is taken.
 */
import type * as openpgp from 'openpgp';
import type { Config } from '../config/config.js';
import { describeKey, expiryWarnings, type ExpiryWarning, loadPrivateKeys, loadPublicKeys, readPassphrase } from './keys.js';

export interface Keyring {
  decryptionKeys: openpgp.PrivateKey[];
  partnerKeys: ReadonlyMap<string, openpgp.PublicKey[]>;
  maxDecompressedBytes: number;
  maxCompressionRatio: number;
}

export async function loadKeyring(config: Config): Promise<Keyring> {
  const decryptionKeys = config.pgp
    ? await loadPrivateKeys([...config.pgp.keyFiles], await readPassphrase({ file: config.pgp.passphraseFile, env: config.pgp.passphraseEnv }))
    : [];
  const partnerKeys = new Map<string, openpgp.PublicKey[]>();
  for (const p of config.partners) partnerKeys.set(p.id, await loadPublicKeys([...p.pgp.verificationKeyFiles]));
  return { decryptionKeys, partnerKeys, maxDecompressedBytes: config.pgp?.maxDecompressedBytes ?? 4 * 1024 ** 3, maxCompressionRatio: config.pgp?.maxCompressionRatio ?? 100 };
}

/** Our key files and each partner's, labelled, for `inboxd keys list --config`. */
export function keySources(config: Config): Array<{ label: string; paths: string[] }> {
  return [{ label: 'ours', paths: [...(config.pgp?.keyFiles ?? [])] }, ...config.partners.map((p) => ({ label: `partner ${p.id}`, paths: [...p.pgp.verificationKeyFiles] }))];
}

/** Keys that expire within `days` (or have), with whose they are: warned about at start and daily. */
export async function expiringKeys(keyring: Keyring, days: number, now = new Date()): Promise<Array<ExpiryWarning & { owner: string }>> {
  const owned: Array<[string, openpgp.Key[]]> = [['ours', keyring.decryptionKeys], ...[...keyring.partnerKeys].map(([p, keys]): [string, openpgp.Key[]] => [`partner ${p}`, keys])];
  const out: Array<ExpiryWarning & { owner: string }> = [];
  for (const [owner, keys] of owned) {
    const infos = await Promise.all(keys.map((k) => describeKey(k)));
    out.push(...expiryWarnings(infos, days, now).map((w) => ({ ...w, owner })));
  }
  return out;
}
