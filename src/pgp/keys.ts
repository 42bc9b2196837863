/**
 * OpenPGP keys: ours (private, for decryption) and partners' (public, for
 * signature verification). Loading failures are configuration errors
 * (KEY_INVALID, fatal) and always name the file, since an operator has to fix it.
 */
import { readFile } from 'node:fs/promises';
import type * as openpgp from 'openpgp';
import { InboxdError } from '../errors.js';
import { pgp } from './lib.js';

const invalid = (file: string, why: string, cause?: unknown) =>
  new InboxdError('KEY_INVALID', `${file}: ${why}`, { file }, { cause });

const causeText = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Passphrases come from a file or an environment variable, never from the command line or the config itself. */
export async function readPassphrase(src: { file?: string; env?: string }): Promise<string | undefined> {
  if (src.file !== undefined && src.env !== undefined) {
    throw new InboxdError('KEY_INVALID', 'give the passphrase as a file or an environment variable, not both');
  }
  if (src.file !== undefined) {
    let text: string;
    try {
      text = await readFile(src.file, 'utf8');
    } catch (err) {
      throw invalid(src.file, `cannot read passphrase file (${causeText(err)})`, err);
    }
    // Editors add a final newline; it is never part of the passphrase.
    return text.replace(/\r?\n$/, '');
  }
  if (src.env !== undefined) {
    const value = process.env[src.env];
    if (value === undefined) throw new InboxdError('KEY_INVALID', `environment variable ${src.env} is not set`);
    return value;
  }
  return undefined;
}

async function readKeyFile(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw invalid(file, `cannot read key file (${causeText(err)})`, err);
  }
}

/** openpgp reads only the first armored block of a text: `cat a.asc b.asc > keys.asc` must give both keys. */
function armoredBlocks(bytes: Buffer): string[] {
  return bytes.toString('utf8').match(/-----BEGIN PGP [A-Z ]+-----[\s\S]*?-----END PGP [A-Z ]+-----/g) ?? [bytes.toString('utf8')];
}

const isArmored = (bytes: Buffer) => bytes.subarray(0, 64).toString('latin1').trimStart().startsWith('-----BEGIN PGP');

export async function loadPrivateKeys(paths: string[], passphrase?: string): Promise<openpgp.PrivateKey[]> {
  const keys: openpgp.PrivateKey[] = [];
  const { lib, policy, full } = await pgp();
  for (const file of paths) {
    const bytes = await readKeyFile(file);
    let found: openpgp.PrivateKey[];
    try {
      found = [];
      if (!isArmored(bytes)) found = await lib.readPrivateKeys({ binaryKeys: bytes, config: policy });
      else for (const block of armoredBlocks(bytes)) found.push(...(await lib.readPrivateKeys({ armoredKeys: block, config: policy })));
    } catch (err) {
      throw invalid(file, `not an OpenPGP private key (${causeText(err)})`, err);
    }
    for (const key of found) {
      let ready = key;
      if (!key.isDecrypted()) {
        if (passphrase === undefined) throw invalid(file, 'private key is passphrase-protected but no passphrase was given');
        try {
          ready = await lib.decryptKey({ privateKey: key, passphrase, config: policy });
        } catch (err) {
          throw invalid(file, `cannot unlock private key (${causeText(err)})`, err);
        }
      }
      try {
        await ready.getDecryptionKeys(undefined, null, undefined, full);
      } catch (err) {
        throw invalid(file, `key ${fpr(ready)} has no usable decryption (sub)key (${causeText(err)})`, err);
      }
      keys.push(ready);
    }
  }
  return keys;
}

/** A partner's file may hold several keys (e.g. old and new during a rotation). */
export async function loadPublicKeys(paths: string[]): Promise<openpgp.PublicKey[]> {
  const keys: openpgp.PublicKey[] = [];
  for (const file of paths) keys.push(...(await readKeysFrom(file)).map((k) => (k.isPrivate() ? k.toPublic() : k)));
  return keys;
}

async function readKeysFrom(file: string): Promise<openpgp.Key[]> {
  const bytes = await readKeyFile(file);
  const { lib, policy } = await pgp();
  try {
    if (!isArmored(bytes)) return await lib.readKeys({ binaryKeys: bytes, config: policy });
    const found: openpgp.Key[] = [];
    for (const block of armoredBlocks(bytes)) found.push(...(await lib.readKeys({ armoredKeys: block, config: policy })));
    return found;
  } catch (err) {
    throw invalid(file, `not an OpenPGP public key (${causeText(err)})`, err);
  }
}

export const fpr = (key: openpgp.Key | openpgp.Subkey) => key.getFingerprint().toUpperCase();

/** gpg-style names: 'rsa 3072', 'ed25519', 'cv25519', 'ecdsa nistP256'. */
export function algorithmName(key: openpgp.Key | openpgp.Subkey): string {
  const { algorithm, bits, curve } = key.getAlgorithmInfo() as { algorithm: string; bits?: number; curve?: string };
  if (algorithm.startsWith('rsa')) return `rsa ${bits}`;
  if (curve === 'ed25519Legacy') return 'ed25519';
  if (curve === 'curve25519Legacy') return 'cv25519';
  return curve ? `${algorithm} ${curve}` : algorithm;
}

/** openpgp accepts null for "any revocation" but its typings do not say so. */
const subkeyRevoked = async (sub: openpgp.Subkey, date = new Date()) =>
  sub.isRevoked(null as unknown as openpgp.SignaturePacket, null as unknown as openpgp.PublicKeyPacket, date, (await pgp()).full);

const finite = (d: Date | number | null): Date | null => (d instanceof Date ? d : null);

export interface SubkeyInfo { fingerprint: string; algorithm: string; created: Date; expires: Date | null; revoked: boolean }
export interface KeyInfo {
  fingerprint: string;
  algorithm: string;
  created: Date;
  /** null = never expires */
  expires: Date | null;
  revoked: boolean;
  userIds: string[];
  subkeys: SubkeyInfo[];
}

export async function describeKey(key: openpgp.Key): Promise<KeyInfo> {
  const revoked = await key.isRevoked();
  const subkeys: SubkeyInfo[] = [];
  for (const sub of key.subkeys) {
    subkeys.push({
      fingerprint: fpr(sub),
      algorithm: algorithmName(sub),
      created: sub.getCreationTime(),
      expires: finite(await sub.getExpirationTime()),
      revoked: await subkeyRevoked(sub),
    });
  }
  return {
    fingerprint: fpr(key),
    algorithm: algorithmName(key),
    created: key.getCreationTime(),
    expires: finite(await key.getExpirationTime()),
    revoked,
    userIds: key.getUserIDs(),
    subkeys,
  };
}

export interface ExpiryWarning { fingerprint: string; userIds: string[]; expires: Date; daysLeft: number }

/**
 * Keys that stop being usable within `days` (or already have). A key is usable
 * until its primary expires or its last unrevoked subkey does: gpg's
 * `--quick-set-expire` extends only the primary unless told otherwise, a
 * common way for a partner's key to die early.
 */
export function expiryWarnings(keys: KeyInfo[], days: number, now = new Date()): ExpiryWarning[] {
  const warnings: ExpiryWarning[] = [];
  for (const key of keys) {
    if (key.revoked) continue;
    const live = key.subkeys.filter((s) => !s.revoked);
    const subEnd = live.length === 0 || live.some((s) => s.expires === null)
      ? null
      : new Date(Math.max(...live.map((s) => s.expires!.getTime())));
    const ends = [key.expires, subEnd].filter((d): d is Date => d !== null);
    if (ends.length === 0) continue;
    const expires = new Date(Math.min(...ends.map((d) => d.getTime())));
    const daysLeft = Math.floor((expires.getTime() - now.getTime()) / 86_400_000);
    if (expires.getTime() - now.getTime() <= days * 86_400_000) {
      warnings.push({ fingerprint: key.fingerprint, userIds: key.userIds, expires, daysLeft });
    }
  }
  return warnings;
}

/**
 * Why `key` (or its subkey `keyID`) cannot sign at `date`, or null if it can.
 * openpgp only says "could not find valid signing key"; partners need to hear
 * "revoked" or "expired", so we look ourselves.
 */
export async function signingKeyProblem(
  key: openpgp.PublicKey, keyID?: openpgp.KeyID, date = new Date(),
): Promise<'revoked' | 'expired' | 'unusable' | null> {
  const config = (await pgp()).full;
  try {
    await key.getSigningKey(keyID, date, undefined, config);
    return null;
  } catch {
    // fall through to find out why
  }
  const subs = keyID ? key.getSubkeys(keyID) : key.subkeys;
  if (await key.isRevoked(undefined, undefined, date, config)) return 'revoked';
  for (const sub of subs) if (await subkeyRevoked(sub, date)) return 'revoked';
  const expired = (d: Date | number | null) => d instanceof Date && d.getTime() <= date.getTime();
  if (expired(await key.getExpirationTime(undefined, config))) return 'expired';
  for (const sub of subs) if (expired(await sub.getExpirationTime(date, config))) return 'expired';
  return 'unusable';
}

export interface PartnerKeyCheck { file: string; ok: boolean; problems: string[]; keys: KeyInfo[] }

/** Validates a partner public key file before it goes into the config. */
export async function checkPartnerKey(file: string, now = new Date()): Promise<PartnerKeyCheck> {
  let keys: openpgp.Key[];
  try {
    keys = await readKeysFrom(file);
  } catch (err) {
    return { file, ok: false, problems: [causeText(err)], keys: [] };
  }
  const problems: string[] = [];
  const infos: KeyInfo[] = [];
  for (const key of keys) {
    infos.push(await describeKey(key));
    if (key.isPrivate()) problems.push(`${fpr(key)}: this is a private key; ask the partner for the public key only`);
    const problem = await signingKeyProblem(key, undefined, now);
    if (problem === 'revoked') problems.push(`${fpr(key)}: key is revoked`);
    else if (problem === 'expired') problems.push(`${fpr(key)}: key has expired`);
    else if (problem) problems.push(`${fpr(key)}: no signing (sub)key that is valid and strong enough (RSA >= 2048 bits, no DSA/ElGamal)`);
  }
  if (keys.length === 0) problems.push('file holds no keys');
  return { file, ok: problems.length === 0, problems, keys: infos };
}

export interface GeneratedKeyPair { privateKey: string; publicKey: string; fingerprint: string }

/**
 * Our key pair, in the v4 format gpg 2.2 partners can use: 'curve25519' is
 * ed25519 signing + cv25519 encryption (openpgp's "legacy" curves, which are
 * what gpg 2.2 implements).
 */
export async function generateKeyPair(opts: {
  name: string; email?: string; passphrase?: string; algo?: 'curve25519' | 'rsa4096'; expiresInDays?: number;
}): Promise<GeneratedKeyPair> {
  const algo = opts.algo ?? 'curve25519';
  const { lib } = await pgp();
  const { privateKey, publicKey } = await lib.generateKey({
    userIDs: [{ name: opts.name, ...(opts.email ? { email: opts.email } : {}) }],
    ...(algo === 'rsa4096' ? { type: 'rsa' as const, rsaBits: 4096 } : { type: 'ecc' as const, curve: 'ed25519Legacy' as const }),
    ...(opts.passphrase ? { passphrase: opts.passphrase } : {}),
    keyExpirationTime: (opts.expiresInDays ?? 0) * 86_400,
    format: 'armored',
  });
  const key = await lib.readKey({ armoredKey: publicKey });
  return { privateKey, publicKey, fingerprint: fpr(key) };
}
