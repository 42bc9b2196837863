/**
 * openpgp, loaded on first use: it is about 16 MB resident (npm run bench: a plain delivery peaks that
 * much lower without it), and a daemon whose partners send no OpenPGP file never needs it. With our
 * policy, built from its enums once it is loaded.
 */
import type * as openpgp from 'openpgp';

export type OpenPGP = typeof openpgp;

let loading: Promise<OpenPGP> | undefined;
export const loadOpenpgp = (): Promise<OpenPGP> => (loading ??= import('openpgp'));

/**
 * What we accept from partners, pinned here rather than inherited from
 * openpgp's mutable global defaults. sha1 stays allowed in key self-signatures
 * (rejectHashAlgorithms) because many long-lived gpg keys carry them; message
 * signatures must use a modern hash.
 */
function policyOf({ enums }: OpenPGP) {
  return {
    minRSABits: 2047,
    rejectHashAlgorithms: new Set([enums.hash.md5, enums.hash.ripemd]),
    rejectMessageHashAlgorithms: new Set([enums.hash.md5, enums.hash.ripemd, enums.hash.sha1]),
    rejectPublicKeyAlgorithms: new Set([enums.publicKey.elgamal, enums.publicKey.dsa]),
    rejectCurves: new Set([enums.curve.secp256k1]),
    allowUnauthenticatedMessages: false,
    allowInsecureDecryptionWithSigningKeys: false,
    allowInsecureVerificationWithReformattedKeys: false,
    ignoreMalformedPackets: false,
    enforceGrammar: true,
  } satisfies openpgp.PartialConfig;
}

export type PgpPolicy = ReturnType<typeof policyOf>;

let policy: PgpPolicy | undefined;

/** openpgp and our policy; `full`: openpgp's whole configuration with the policy over it (for calls that take no partial one). */
export async function pgp(): Promise<{ lib: OpenPGP; policy: PgpPolicy; full: openpgp.Config & PgpPolicy }> {
  const lib = await loadOpenpgp();
  policy ??= policyOf(lib);
  return { lib, policy, full: { ...lib.config, ...policy } };
}
