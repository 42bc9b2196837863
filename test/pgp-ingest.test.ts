/**
 * OpenPGP deliveries end to end: files produced by the real `gpg` the way partners make them, ingested
 * by the real CLI. Accepted files land in the table; rejected ones leave it unchanged, with the original
 * and a clear reason in error/.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Compression, Gpg } from './helpers/gpg.js';
import { csvLine, type Fixture, fixture, HEADER, nameFor, type Row, rowsOf, sha256 } from './helpers/fixture.js';

let gpg: Gpg;
let keys: Record<string, string>;

beforeAll(async () => {
  gpg = await Gpg.create();
  await gpg.genKey('inboxd@us', 'ed25519');
  await gpg.genKey('inboxd-rsa@us', 'rsa3072');
  await gpg.genKey('partner@acme', 'ed25519');
  await gpg.genKey('partner-rsa@acme', 'rsa3072');
  await gpg.genKey('stranger@elsewhere', 'ed25519');
  // gpg signs with a key only while it is valid, and encrypts only to keys that exist at its time:
  // the expired partner key signs in 2020, to a key of ours that existed then.
  await gpg.genKey('old@acme', 'ed25519', { expire: '1d', fakedTime: '20200101T120000' });
  await gpg.genKey('inboxd-2020@us', 'ed25519', { fakedTime: '20200101T120000' });
  keys = {
    ours: await gpg.exportSecret('inboxd@us'),
    oursRsa: await gpg.exportSecret('inboxd-rsa@us'),
    ours2020: await gpg.exportSecret('inboxd-2020@us'),
    // One file with several keys, as gpg --export writes it for several user IDs.
    partner: await gpg.run(['--armor', '--export', '<partner@acme>', '<partner-rsa@acme>', '<old@acme>']),
  };
}, 120_000);

afterAll(async () => {
  await gpg?.cleanup();
});

/** A config with our two private keys (a rotation) and acme's verification keys; signatures required. */
async function pgpFixture(t: Parameters<typeof fixture>[0], pgp: Record<string, unknown> = {}): Promise<Fixture> {
  const f = await fixture(t);
  await fsp.writeFile(join(f.dir, 'ours.asc'), keys.ours!);
  await fsp.writeFile(join(f.dir, 'ours-rsa.asc'), keys.oursRsa!);
  await fsp.writeFile(join(f.dir, 'ours-2020.asc'), keys.ours2020!);
  await fsp.writeFile(join(f.dir, 'acme.asc'), keys.partner!);
  const config = (await fsp.readFile(f.configPath, 'utf8'))
    .replace(/^partners:\n {2}acme:\n/m, `pgp:\n  keys: [ours.asc, ours-rsa.asc, ours-2020.asc]\n  max_decompressed_size: 40MB\n  max_compression_ratio: 100\npartners:\n  acme:\n    pgp:\n      verification_keys: [acme.asc]\n      require_signature: ${pgp.require_signature === false ? 'false' : 'true'}\n`);
  await fsp.writeFile(f.configPath, config);
  return f;
}

interface Encrypted {
  recipients?: string[];
  signer?: string | null;
  armor?: boolean;
  compress?: Compression;
  fakedTime?: string;
  /** change the ciphertext after encryption (the sidecar then covers the changed bytes, as an attacker would make it) */
  alter?: (cipher: Buffer) => Buffer;
  plaintext?: string;
}

/** Encrypts rows with gpg and uploads data (.pgp), sidecar (of the ciphertext) and manifest (of the rows). */
async function upload(f: Fixture, seq: number, rows: Row[], o: Encrypted = {}): Promise<string> {
  const plain = o.plaintext ?? [HEADER, ...rows.map((r) => HEADER.map((h) => r[h] ?? ''))].map((c) => `${csvLine(c)}\r\n`).join('');
  const name = `${nameFor(seq)}.${o.armor ? 'asc' : 'pgp'}`;
  const src = join(f.dir, `plain-${seq}.csv`);
  const out = join(f.dir, `cipher-${seq}`);
  await fsp.writeFile(src, plain);
  await gpg.encrypt(src, out, { recipients: o.recipients ?? ['inboxd@us'], signer: o.signer === null ? undefined : (o.signer ?? 'partner@acme'), armor: o.armor, compress: o.compress, fakedTime: o.fakedTime });
  let cipher: Buffer = await fsp.readFile(out);
  if (o.alter) cipher = o.alter(cipher);
  const qty = rows.reduce((s, r) => s + Number(r.Quantity ?? 0), 0);
  const files: Array<[string, Buffer | string]> = [
    [name, cipher],
    [`${name}.sha256`, `${sha256(cipher)}  ${name}\n`],
    [`${name}.manifest.json`, JSON.stringify({ file: name, records: rows.length, sums: { qty } })],
  ];
  const past = new Date(Date.now() - 60_000);
  await fsp.mkdir(f.path('inbox'), { recursive: true });
  for (const [file, content] of files) {
    const tmp = f.path('inbox', `${file}.part`);
    await fsp.writeFile(tmp, content);
    await fsp.utimes(tmp, past, past);
    await fsp.rename(tmp, f.path('inbox', file));
  }
  return name;
}

const flip = (at: (len: number) => number) => (b: Buffer) => {
  const c = Buffer.from(b);
  const i = at(c.length);
  c[i] = c[i]! ^ 0x55;
  return c;
};

async function expectRejected(f: Fixture, name: string, code: string): Promise<Record<string, any>> {
  const r = await f.runOnce();
  expect(r.code, r.stderr).toBe(1);
  expect(f.rows()).toEqual([]);
  expect(f.listDir('error')).toContain(name);
  expect(f.listDir('archive')).toEqual([]);
  expect(f.listDir('outbox')).toEqual([]);
  expect(f.listWork()).toEqual([]);
  const report = await f.readJson('error', `${name}.error.json`);
  expect(report.code).toBe(code);
  return report;
}

describe('OpenPGP deliveries produced by gpg', () => {
  const cases: Array<[string, Encrypted]> = [
    ['encrypted only (signature not required)', { signer: null }],
    ['signed and encrypted, binary', {}],
    ['signed and encrypted, ASCII-armored', { armor: true }],
    ['zlib', { compress: 'zlib' }],
    ['zip', { compress: 'zip' }],
    ['bzip2', { compress: 'bzip2' }],
    ['no compression', { compress: 'none' }],
    ['two recipients, ours second', { recipients: ['stranger@elsewhere', 'inboxd@us'] }],
    ['RSA keys on both sides', { recipients: ['inboxd-rsa@us'], signer: 'partner-rsa@acme' }],
  ];
  for (const [label, o] of cases) {
    it(`accepts: ${label}`, async (t) => {
      const f = await pgpFixture(t, { require_signature: o.signer !== null });
      const rows = rowsOf(5);
      const name = await upload(f, 1, rows, o);
      const r = await f.runOnce();
      expect(r.code, r.stderr).toBe(0);
      expect(f.rows().map((x) => x.sku)).toEqual(rows.map((x) => x.SKU).sort());
      const ack = await f.readJson('outbox', `${name}.ack.json`);
      expect(ack).toMatchObject({ status: 'accepted', file: name, records: 5 });
      expect(f.listDir('archive')).toContain(name);
      const events = f.query("SELECT detail FROM events WHERE step = 'decrypted'");
      expect(events[0]?.detail).toMatch(o.signer === null ? /not signed/ : /signed by [0-9A-F]{40}/);
    });
  }
});

describe('a signature by a key we do not know, signatures not required', () => {
  it('is accepted, recorded as signed by an unknown key with its fingerprint, and warned about', async (t) => {
    const f = await pgpFixture(t, { require_signature: false });
    const name = await upload(f, 1, rowsOf(2), { signer: 'stranger@elsewhere' });
    const r = await f.runOnce();
    expect(r.code, r.stderr).toBe(0);
    expect(f.rows()).toHaveLength(2);
    const stranger = await gpg.fingerprint('stranger@elsewhere');
    const [event] = f.query("SELECT detail FROM events WHERE step = 'decrypted'");
    expect(event?.detail).toBe(`signed by an unknown key ${stranger}`);
    const warned = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((l) => l.fingerprint === stranger);
    expect(warned).toMatchObject({ level: 'warn', partner: 'acme', file: name });
    expect(warned.msg).toMatch(/unknown key/);
  });
});

describe('OpenPGP deliveries rejected, database unchanged', () => {
  const big = rowsOf(60_000); // several MB: rows are streamed before a late failure shows

  it('tampered ciphertext in the middle of a large file', async (t) => {
    const f = await pgpFixture(t);
    const name = await upload(f, 1, big, { compress: 'none', alter: flip((n) => Math.floor(n / 2)) });
    const report = await expectRejected(f, name, 'DECRYPT_FAILED');
    expect(report.reason).toBe('the file could not be decrypted');
  });

  it('tampered ciphertext near the end of a large file', async (t) => {
    const f = await pgpFixture(t);
    const name = await upload(f, 1, big, { compress: 'none', alter: flip((n) => n - 30) });
    const report = await expectRejected(f, name, 'DECRYPT_FAILED');
    expect(report.reason).toBe('the file could not be decrypted');
  });

  it('truncated file', async (t) => {
    const f = await pgpFixture(t);
    const name = await upload(f, 1, big, { compress: 'none', alter: (b) => b.subarray(0, Math.floor(b.length * 0.8)) });
    const report = await expectRejected(f, name, 'DECRYPT_FAILED');
    expect(report.reason).toBe('the file could not be decrypted');
  });

  it('encrypted to another key: the same words as any decryption failure', async (t) => {
    const f = await pgpFixture(t);
    const name = await upload(f, 1, rowsOf(3), { recipients: ['stranger@elsewhere'] });
    const report = await expectRejected(f, name, 'DECRYPT_FAILED');
    expect(report.reason).toBe('the file could not be decrypted');
    expect(JSON.stringify(report)).not.toMatch(/session key|private key|cause/i);
  });

  it('unsigned when a signature is required', async (t) => {
    const f = await pgpFixture(t);
    const name = await upload(f, 1, rowsOf(3), { signer: null });
    await expectRejected(f, name, 'SIGNATURE_REQUIRED');
  });

  it('a plain file when a signature is required', async (t) => {
    const f = await pgpFixture(t);
    const d = await f.makeDelivery({ seq: 1 });
    await expectRejected(f, d.name, 'SIGNATURE_REQUIRED');
  });

  it('signed by an unknown key', async (t) => {
    const f = await pgpFixture(t);
    const name = await upload(f, 1, rowsOf(3), { signer: 'stranger@elsewhere' });
    const report = await expectRejected(f, name, 'SIGNATURE_UNKNOWN_KEY');
    expect(report.reason).toMatch(/not a key we hold/);
  });

  it('signed by an expired key', async (t) => {
    const f = await pgpFixture(t);
    const name = await upload(f, 1, rowsOf(3), { recipients: ['inboxd-2020@us'], signer: 'old@acme', fakedTime: '20200101T130000' });
    await expectRejected(f, name, 'SIGNATURE_KEY_EXPIRED');
  });

  it('a compression bomb is refused without expanding it', async (t) => {
    const f = await pgpFixture(t);
    const line = `${csvLine(HEADER.map((h) => rowsOf(1)[0]![h] ?? ''))}\r\n`;
    const plaintext = `${csvLine(HEADER)}\r\n${line.repeat(Math.ceil(300e6 / line.length))}`;
    const name = await upload(f, 1, rowsOf(1), { compress: 'zlib', plaintext });
    expect((await fsp.stat(f.path('inbox', name))).size).toBeLessThan(3e6);
    const report = await expectRejected(f, name, 'LIMIT_EXCEEDED');
    expect(report.reason).toMatch(/too large/);
  }, 120_000);
});
