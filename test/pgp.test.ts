/**
 * The decrypt step against files made by the real gpg, as partners make them.
 * One GNUPGHOME for the whole file: key generation is the slow part.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, stat, truncate, writeFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { deflateSync } from 'node:zlib';
import { Command } from 'commander';
import * as openpgp from 'openpgp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { InboxdError } from '../src/errors.js';
import { decryptStream, isEncryptedName, type DecryptOptions } from '../src/pgp/decrypt.js';
import {
  checkPartnerKey, describeKey, expiryWarnings, generateKeyPair, loadPrivateKeys, loadPublicKeys, readPassphrase,
} from '../src/pgp/keys.js';
import { checkKeys, generateKeys, listKeys, registerKeysCommands } from '../src/cli/keys.js';
import { Gpg, type EncryptOptions } from './helpers/gpg.js';

const MiB = 1024 * 1024;
const OLD = '20200101T000000'; // keys made "in 2020" with gpg --faked-system-time

let gpg: Gpg;
let dir: string;
let csv: string; // small CSV with CRLF and UTF-8
let bigCsv: string; // ~20 MB
const priv: Record<string, openpgp.PrivateKey> = {};
const pub: Record<string, openpgp.PublicKey> = {};
const file = (name: string) => join(dir, name);

async function exportKeys(uid: string, name: string) {
  await writeFile(file(`${name}.sec.asc`), await gpg.exportSecret(uid));
  await writeFile(file(`${name}.pub.asc`), await gpg.exportPublic(uid));
  const [secret, ...moreSecret] = await loadPrivateKeys([file(`${name}.sec.asc`)]);
  const [key, ...more] = await loadPublicKeys([file(`${name}.pub.asc`)]);
  if (moreSecret.length || more.length) throw new Error(`${uid} matched more than one key`);
  priv[name] = secret!;
  pub[name] = key!;
}

/** Rows of varied text so compression stays realistic (about 3:1). */
async function writeCsv(path: string, bytes: number) {
  const out = createWriteStream(path);
  out.write('id,name,amount,note\r\n');
  for (let i = 1, n = 0; n < bytes; i++) {
    const row = `${i},Zoë Ünal ${i % 97},${(i * 3.17).toFixed(2)},${randomBytes(12).toString('base64')}\r\n`;
    n += Buffer.byteLength(row);
    if (!out.write(row)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

const options = (o: Partial<DecryptOptions> = {}): DecryptOptions => ({
  decryptionKeys: [priv.usRsa!, priv.usEd!],
  verificationKeys: [pub.partnerRsa!, pub.partnerEd!],
  requireSignature: false,
  maxDecompressedBytes: 1024 * MiB,
  maxCompressionRatio: 100,
  ...o,
});

/** Reads the plaintext the way the ingest pipeline would, remembering how far it got before an error. */
async function consume(path: string, opts: DecryptOptions, keep = true) {
  let bytesRead = 0;
  const chunks: Buffer[] = [];
  const source = createReadStream(path);
  try {
    const { plaintext, done } = await decryptStream(source, opts);
    try {
      for await (const chunk of plaintext) {
        bytesRead += chunk.length;
        if (keep) chunks.push(chunk);
      }
    } catch (streamErr) {
      // `done` must carry the same verdict as the stream
      await expect(done).rejects.toBe(streamErr);
      throw streamErr;
    }
    const verdict = await done;
    return { bytes: Buffer.concat(chunks), verdict, bytesRead };
  } catch (err) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    return { error: err as InboxdError, bytesRead, fileClosed: source.destroyed };
  }
}

async function encrypted(name: string, input: string, opts: EncryptOptions) {
  await gpg.encrypt(input, file(name), opts);
  return file(name);
}

beforeAll(async () => {
  gpg = await Gpg.create();
  dir = await mkdtemp(join(tmpdir(), 'inboxd-pgp-'));
  csv = file('orders.csv');
  await writeFile(csv, 'id,name,amount\r\n1,Zoë,3.50\r\n2,"O\'Brien, Ann",12.00\r\n3,Łukasz,0.99\r\n');
  bigCsv = file('big.csv');
  await writeCsv(bigCsv, 20 * MiB);
  await gpg.genKey('Us RSA <us-rsa@inboxd.test>', 'rsa3072');
  await gpg.genKey('Us Ed <us-ed@inboxd.test>', 'ed25519');
  await gpg.genKey('Partner RSA <rsa@partner.test>', 'rsa3072');
  await gpg.genKey('Partner Ed <ed@partner.test>', 'ed25519');
  await gpg.genKey('Someone Else <else@elsewhere.test>', 'ed25519');
  await gpg.genKey('Stranger <stranger@elsewhere.test>', 'ed25519');
  await gpg.genKey('Revoked Partner <revoked@partner.test>', 'ed25519');
  // Expired: made and used in 2020, expired a day later. gpg refuses to sign
  // with an expired key, so the signature is made while it was still valid.
  await gpg.genKey('Us 2020 <us-2020@inboxd.test>', 'ed25519', { fakedTime: OLD });
  await gpg.genKey('Expired Partner <expired@partner.test>', 'ed25519', { fakedTime: OLD, expire: '1d' });
  await exportKeys('us-rsa@inboxd.test', 'usRsa');
  await exportKeys('us-ed@inboxd.test', 'usEd');
  await exportKeys('us-2020@inboxd.test', 'us2020');
  await exportKeys('rsa@partner.test', 'partnerRsa');
  await exportKeys('ed@partner.test', 'partnerEd');
  await exportKeys('expired@partner.test', 'expired');
  // Signed while valid, revoked afterwards (with the certificate gpg made at generation).
  await encrypted('revoked.gpg', csv, { recipients: ['us-ed@inboxd.test'], signer: 'revoked@partner.test' });
  await gpg.revoke(await gpg.fingerprint('revoked@partner.test'));
  await writeFile(file('revoked.pub.asc'), await gpg.exportPublic('revoked@partner.test'));
}, 120_000);

afterAll(async () => {
  await gpg?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('ingested byte for byte', () => {
  const original = () => readFile(csv);

  it.each([
    ['binary, zlib, RSA recipient', { recipients: ['us-rsa@inboxd.test'], compress: 'zlib' }],
    ['armored, zip, cv25519 recipient', { recipients: ['us-ed@inboxd.test'], compress: 'zip', armor: true }],
    ['bzip2', { recipients: ['us-ed@inboxd.test'], compress: 'bzip2' }],
    ['uncompressed, armored', { recipients: ['us-rsa@inboxd.test'], compress: 'none', armor: true }],
    ['two recipients, ours second', { recipients: ['else@elsewhere.test', 'us-ed@inboxd.test'] }],
  ] as [string, EncryptOptions][])('encrypted only: %s', async (name, enc) => {
    const path = await encrypted(`plain-${name.replace(/\W+/g, '-')}.pgp`, csv, enc);
    const r = await consume(path, options());
    expect(r.error).toBeUndefined();
    expect(r.bytes!.equals(await original())).toBe(true);
    expect(r.verdict).toEqual({});
  });

  it.each([
    ['RSA partner to RSA us', 'rsa@partner.test', 'us-rsa@inboxd.test', 'partnerRsa'],
    ['RSA partner to cv25519 us', 'rsa@partner.test', 'us-ed@inboxd.test', 'partnerRsa'],
    ['ed25519 partner to RSA us', 'ed@partner.test', 'us-rsa@inboxd.test', 'partnerEd'],
    ['ed25519 partner to cv25519 us, armored', 'ed@partner.test', 'us-ed@inboxd.test', 'partnerEd'],
  ] as const)('signed and encrypted: %s', async (name, signer, recipient, partner) => {
    const path = await encrypted(`signed-${signer}-${recipient}.asc`, csv, { recipients: [recipient], signer, armor: name.includes('armored') });
    const r = await consume(path, options({ requireSignature: true }));
    expect(r.error).toBeUndefined();
    expect(r.bytes!.equals(await original())).toBe(true);
    expect(r.verdict).toEqual({ signedBy: pub[partner]!.getFingerprint().toUpperCase() });
  });

  it('a 20 MB file, signed, decrypts intact', async () => {
    const path = await encrypted('big-signed.gpg', bigCsv, { recipients: ['us-ed@inboxd.test'], signer: 'ed@partner.test' });
    const r = await consume(path, options({ requireSignature: true }));
    expect(r.error).toBeUndefined();
    expect(r.bytes!.equals(await readFile(bigCsv))).toBe(true);
  }, 60_000);

  it('reads ciphertext only as the plaintext is consumed, so memory stays flat (see bench/pgp-bench.js)', async () => {
    // Regression guard: openpgp's own zip/zlib path (Node's DecompressionStream) swallows the whole file ahead of the reader.
    const path = await encrypted('big-zlib.gpg', bigCsv, { recipients: ['us-ed@inboxd.test'], compress: 'zlib' });
    expect((await stat(path)).size).toBeGreaterThan(8 * MiB);
    let cipherRead = 0;
    const file = createReadStream(path);
    const counted = Readable.from((async function* () {
      for await (const chunk of file) {
        cipherRead += chunk.length;
        yield chunk;
      }
    })());
    const { plaintext, done } = await decryptStream(counted, options());
    const rows = plaintext[Symbol.asyncIterator]();
    await rows.next();
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(cipherRead).toBeLessThan(4 * MiB);
    // A consumer that stops early gets no verdict, and the file is closed.
    await rows.return!();
    await expect(done).rejects.toMatchObject({ code: 'IO_ERROR' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(file.destroyed).toBe(true);
  }, 60_000);

  it('a key made by generateKeyPair (passphrase-protected) works with gpg', async () => {
    const pair = await generateKeyPair({ name: 'inboxd test', email: 'inboxd@inboxd.test', passphrase: 'correct horse' });
    await writeFile(file('gen.sec.asc'), pair.privateKey);
    await writeFile(file('gen.pass'), 'correct horse\n');
    await gpg.importKey(pair.publicKey);
    const path = await encrypted('to-generated.gpg', csv, { recipients: [pair.fingerprint], signer: 'ed@partner.test' });
    const keys = await loadPrivateKeys([file('gen.sec.asc')], await readPassphrase({ file: file('gen.pass') }));
    const r = await consume(path, options({ decryptionKeys: keys, requireSignature: true }));
    expect(r.error).toBeUndefined();
    expect(r.bytes!.equals(await original())).toBe(true);
  });
});

describe('rejected', () => {
  const expectDecryptFailed = (r: { error?: InboxdError; fileClosed?: boolean }) => {
    expect(r.error).toBeInstanceOf(InboxdError);
    expect(r.error!.code).toBe('DECRYPT_FAILED');
    // One message for every decryption failure: no oracle for the partner (or an attacker).
    expect(r.error!.message).toBe('the file could not be decrypted');
    expect(typeof r.error!.details.cause).toBe('string');
    expect(r.fileClosed).toBe(true);
  };

  it.each([['middle', 0.5], ['near the end', 0.999]])('tampered ciphertext (%s) fails at the end, after plaintext was read', async (_, where) => {
    const path = await encrypted(`tamper-${where}.gpg`, bigCsv, { recipients: ['us-rsa@inboxd.test'], compress: 'none' });
    const size = (await stat(path)).size;
    const fh = await open(path, 'r+');
    const at = Math.floor(size * where);
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0x01;
    await fh.write(byte, 0, 1, at);
    await fh.close();
    const r = await consume(path, options());
    expectDecryptFailed(r);
    expect(r.error!.details.cause).toMatch(/modification detected/i); // the MDC check, not a parse error
    expect(r.bytesRead).toBeGreaterThan(10 * MiB);
  }, 60_000);

  it('a truncated file', async () => {
    const path = await encrypted('truncated.gpg', bigCsv, { recipients: ['us-ed@inboxd.test'] });
    await truncate(path, Math.floor((await stat(path)).size / 2));
    const r = await consume(path, options());
    expectDecryptFailed(r);
    expect(r.bytesRead).toBeGreaterThan(0);
  }, 60_000);

  it('encrypted to another key', async () => {
    const r = await consume(await encrypted('to-else.gpg', csv, { recipients: ['else@elsewhere.test'] }), options());
    expectDecryptFailed(r);
    expect(r.bytesRead).toBe(0);
  });

  it('not OpenPGP at all', async () => {
    expectDecryptFailed(await consume(csv, options()));
  });

  it('a weak cipher (3DES) chosen by the sender', async () => {
    const path = file('3des.gpg');
    await gpg.run(['--cipher-algo', '3DES', '--recipient', '<us-ed@inboxd.test>', '--output', path, '--encrypt', csv]);
    const r = await consume(path, options());
    expectDecryptFailed(r);
    expect(r.error!.details.cause).toMatch(/weak cipher/);
  });

  it('unsigned when a signature is required', async () => {
    const r = await consume(await encrypted('unsigned.gpg', csv, { recipients: ['us-ed@inboxd.test'] }), options({ requireSignature: true }));
    expect(r.error?.code).toBe('SIGNATURE_REQUIRED');
  });

  it('signed by an unknown key', async () => {
    const path = await encrypted('stranger.gpg', csv, { recipients: ['us-ed@inboxd.test'], signer: 'stranger@elsewhere.test' });
    const r = await consume(path, options({ requireSignature: true }));
    expect(r.error?.code).toBe('SIGNATURE_UNKNOWN_KEY');
    // not required: accepted, and who signed it is told (the audit trail says so)
    expect((await consume(path, options())).verdict).toEqual({ unknownSigner: await gpg.fingerprint('stranger@elsewhere.test') });
  });

  it('signed by a key that has expired since', async () => {
    const path = await encrypted('expired.gpg', csv, {
      recipients: ['us-2020@inboxd.test'], signer: 'expired@partner.test', fakedTime: '20200101T120000',
    });
    const r = await consume(path, options({ decryptionKeys: [priv.us2020!], verificationKeys: [pub.expired!], requireSignature: true }));
    expect(r.error?.code).toBe('SIGNATURE_KEY_EXPIRED');
  });

  it('signed by a key revoked since', async () => {
    const keys = await loadPublicKeys([file('revoked.pub.asc')]);
    const r = await consume(file('revoked.gpg'), options({ verificationKeys: keys, requireSignature: true }));
    expect(r.error?.code).toBe('SIGNATURE_KEY_REVOKED');
  });

  it('a signature that does not match the content (crafted with openpgp: gpg will not make one)', async () => {
    const message = await openpgp.createMessage({ binary: new Uint8Array(await readFile(csv)) });
    const signed = await openpgp.sign({ message, signingKeys: priv.partnerEd!, format: 'object' });
    // setBytes is private in openpgp's typings
    const literal = signed.packets.findPacket(openpgp.enums.packet.literalData) as unknown as {
      setBytes(bytes: Uint8Array, format: openpgp.enums.literal): void;
    };
    literal.setBytes(new TextEncoder().encode('id,name,amount\r\n1,Mallory,1000000.00\r\n'), openpgp.enums.literal.binary);
    await writeFile(file('bad-signature.gpg'), await openpgp.encrypt({ message: signed, encryptionKeys: pub.usEd!, format: 'binary' }));
    const r = await consume(file('bad-signature.gpg'), options());
    expect(r.error?.code).toBe('SIGNATURE_BAD');
    expect(r.bytesRead).toBeGreaterThan(0); // the rows were read; only the verdict stops the commit
  });

  it('nested compression (crafted with openpgp; a bomb multiplier)', async () => {
    const literal = new openpgp.LiteralDataPacket();
    (literal as unknown as { setBytes(b: Uint8Array, f: openpgp.enums.literal): void }).setBytes(await readFile(csv), openpgp.enums.literal.binary);
    const compress = (packets: openpgp.AnyPacket[]) => {
      const list = new openpgp.PacketList<openpgp.AnyPacket>();
      list.push(...packets);
      const packet = new openpgp.CompressedDataPacket() as unknown as { algorithm: number; compressed: Uint8Array };
      packet.algorithm = openpgp.enums.compression.zlib;
      packet.compressed = deflateSync(list.write());
      return packet as unknown as openpgp.AnyPacket;
    };
    const list = new openpgp.PacketList<openpgp.AnyPacket>();
    list.push(compress([compress([literal])]));
    const message = new openpgp.Message(list);
    const bytes = await openpgp.encrypt({ message, encryptionKeys: pub.usEd!, format: 'binary', config: { preferredCompressionAlgorithm: 0 } });
    await writeFile(file('nested.gpg'), bytes);
    expectDecryptFailed(await consume(file('nested.gpg'), options()));
  });

  describe('a compression bomb (500 MB of zeros, zlib)', () => {
    let bomb: string;
    beforeAll(async () => {
      const zeros = file('zeros.bin');
      await writeFile(zeros, '');
      await truncate(zeros, 500 * MiB); // sparse: costs no disk
      bomb = await encrypted('bomb.gpg', zeros, { recipients: ['us-ed@inboxd.test'], compress: 'zlib' });
      await rm(zeros);
    }, 120_000);

    it.each([
      ['by the ratio guard', { maxCompressionRatio: 100 }],
      ['by maxDecompressedBytes', { maxCompressionRatio: 1e9, maxDecompressedBytes: 100 * MiB }],
    ])('is refused %s, quickly and without holding the plaintext', async (_, limits) => {
      expect((await stat(bomb)).size).toBeLessThan(2 * MiB);
      const rss = process.memoryUsage().rss;
      const started = Date.now();
      const r = await consume(bomb, options(limits), false);
      expect(r.error?.code).toBe('LIMIT_EXCEEDED');
      expect(r.fileClosed).toBe(true);
      expect(r.bytesRead).toBeLessThanOrEqual(100 * MiB);
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(process.memoryUsage().rss - rss).toBeLessThan(150 * MiB);
    }, 30_000);
  });
});

describe('keys', () => {
  it('isEncryptedName', () => {
    expect(['a.csv.pgp', 'a.CSV.GPG', 'a.asc'].map(isEncryptedName)).toEqual([true, true, true]);
    expect(['a.csv', 'a.pgp.csv'].map(isEncryptedName)).toEqual([false, false]);
  });

  it('reads a passphrase from a file (final newline dropped) or an environment variable, never both', async () => {
    await writeFile(file('pass.txt'), 'p@ss word\r\n');
    expect(await readPassphrase({ file: file('pass.txt') })).toBe('p@ss word');
    vi.stubEnv('INBOXD_TEST_PASSPHRASE', 's3cret');
    expect(await readPassphrase({ env: 'INBOXD_TEST_PASSPHRASE' })).toBe('s3cret');
    vi.unstubAllEnvs();
    await expect(readPassphrase({ env: 'INBOXD_TEST_UNSET' })).rejects.toMatchObject({ code: 'KEY_INVALID' });
    await expect(readPassphrase({ file: 'x', env: 'y' })).rejects.toMatchObject({ code: 'KEY_INVALID' });
    expect(await readPassphrase({})).toBeUndefined();
  });

  it('loading errors name the file', async () => {
    const pair = await generateKeyPair({ name: 'locked', passphrase: 'right' });
    await writeFile(file('locked.asc'), pair.privateKey);
    await expect(loadPrivateKeys([file('locked.asc')])).rejects.toMatchObject({ code: 'KEY_INVALID', message: expect.stringContaining('locked.asc') });
    await expect(loadPrivateKeys([file('locked.asc')], 'wrong')).rejects.toMatchObject({ code: 'KEY_INVALID', message: expect.stringContaining('locked.asc') });
    await expect(loadPrivateKeys([file('partnerEd.pub.asc')])).rejects.toMatchObject({ code: 'KEY_INVALID', message: expect.stringContaining('partnerEd.pub.asc') });
    await expect(loadPublicKeys([csv])).rejects.toMatchObject({ code: 'KEY_INVALID', message: expect.stringContaining('orders.csv') });
  });

  it('describeKey', async () => {
    const rsa = await describeKey(pub.partnerRsa!);
    expect(rsa).toMatchObject({ algorithm: 'rsa 3072', expires: null, revoked: false, userIds: ['Partner RSA <rsa@partner.test>'] });
    expect(rsa.fingerprint).toMatch(/^[0-9A-F]{40}$/);
    expect(rsa.subkeys).toMatchObject([{ algorithm: 'rsa 3072', revoked: false }]);
    const ed = await describeKey(pub.expired!);
    expect(ed).toMatchObject({ algorithm: 'ed25519', created: new Date('2020-01-01T00:00:00Z'), expires: new Date('2020-01-02T00:00:00Z') });
    expect(ed.subkeys.map((s) => s.algorithm)).toEqual(['cv25519']);
  });

  it('expiryWarnings', async () => {
    const pair = await generateKeyPair({ name: 'short-lived', expiresInDays: 10 });
    const infos = await Promise.all([pub.partnerEd!, (await loadPublicKeysFrom(pair.publicKey))].map(describeKey));
    const now = new Date();
    expect(expiryWarnings(infos, 5, now)).toEqual([]);
    expect(expiryWarnings(infos, 30, now)).toMatchObject([{ fingerprint: pair.fingerprint, daysLeft: 9 }]);
    const expired = expiryWarnings([await describeKey(pub.expired!)], 30, now);
    expect(expired[0]!.daysLeft).toBeLessThan(0);
  });

  it('checkPartnerKey', async () => {
    expect(await checkPartnerKey(file('partnerEd.pub.asc'))).toMatchObject({ ok: true, problems: [] });
    expect((await checkPartnerKey(file('expired.pub.asc'))).problems).toEqual([expect.stringContaining('expired')]);
    expect((await checkPartnerKey(file('revoked.pub.asc'))).problems).toEqual([expect.stringContaining('revoked')]);
    expect((await checkPartnerKey(file('partnerEd.sec.asc'))).problems).toEqual([expect.stringContaining('private key')]);
    expect((await checkPartnerKey(csv)).ok).toBe(false);
  });
});

async function loadPublicKeysFrom(armored: string) {
  const path = file(`k-${Date.now()}-${Math.random()}.asc`);
  await writeFile(path, armored);
  return (await loadPublicKeys([path]))[0]!;
}

describe('inboxd keys', () => {
  it('generate writes 0600/0644 files and refuses to overwrite', async () => {
    const out = join(dir, 'generated');
    const r = await generateKeys({ outDir: out, name: 'inboxd', email: 'ops@inboxd.test', algo: 'curve25519' });
    expect((await stat(r.privateKeyFile)).mode & 0o777).toBe(0o600);
    expect((await stat(r.publicKeyFile)).mode & 0o777).toBe(0o644);
    expect(r.encrypted).toBe(false);
    const [key] = await loadPrivateKeys([r.privateKeyFile]);
    expect(key!.getFingerprint().toUpperCase()).toBe(r.fingerprint);
    const before = await readFile(r.privateKeyFile, 'utf8');
    await expect(generateKeys({ outDir: out })).rejects.toMatchObject({ message: expect.stringContaining('refusing to overwrite') });
    expect(await readFile(r.privateKeyFile, 'utf8')).toBe(before);
  });

  it('list and check, also through the commander wiring', async () => {
    const rows = await listKeys([{ label: 'ours', paths: [file('usEd.sec.asc')] }, { label: 'acme', paths: [file('expired.pub.asc')] }]);
    expect(rows.map((r) => [r.label, r.algorithm, r.status])).toEqual([['ours', 'ed25519', 'ok'], ['acme', 'ed25519', 'expired']]);
    expect((await checkKeys([file('partnerRsa.pub.asc'), file('expired.pub.asc')])).map((r) => r.ok)).toEqual([true, false]);

    const output: string[] = [];
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((s) => { output.push(String(s)); return true; });
    const run = async (...args: string[]) => {
      process.exitCode = undefined;
      const program = new Command().exitOverride();
      registerKeysCommands(program, (config) => [{ label: `partner from ${config}`, paths: [file('partnerRsa.pub.asc')] }]);
      await program.parseAsync(['node', 'inboxd', 'keys', ...args]);
      return process.exitCode;
    };
    try {
      expect(await run('check', file('partnerRsa.pub.asc'))).toBeUndefined();
      expect(await run('check', file('partnerRsa.pub.asc'), file('expired.pub.asc'))).toBe(78);
      expect(await run('list', '--key', file('usRsa.pub.asc'), file('partnerEd.pub.asc'))).toBeUndefined();
      expect(await run('list', '--config', 'inboxd.yaml', '--json')).toBeUndefined();
    } finally {
      write.mockRestore();
      process.exitCode = undefined;
    }
    expect(output.join('')).toMatch(/expired\.pub\.asc: .*has expired/);
    expect(output.join('')).toMatch(/rsa 3072/);
    expect(output.join('')).toContain('"label": "partner from inboxd.yaml"');
  });
});
