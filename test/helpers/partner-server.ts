/**
 * A partner's own SFTP server for the tests: a real OpenSSH sshd on 127.0.0.1 (helpers/sshd.ts) whose
 * SFTP server logs every operation, its inbox, outbox and archive, and deliveries put there the way a
 * partner's client puts them (a temporary name, then a rename).
 */
import { existsSync, mkdirSync, mkdtempSync, promises as fsp, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'vitest';
import { csvLine, HEADER, nameFor, type Row, rowsOf, sha256 } from './fixture.js';
import { startSshd, type Sshd } from './sshd.js';

const SFTP_SERVER = '/usr/lib/openssh/sftp-server';

/** The partner's server: an sshd whose SFTP server logs every operation, and its three directories. */
export interface PartnerServer {
  sshd: Sshd;
  inbox: string;
  outbox: string;
  archive: string;
  /** the SFTP operations the server saw (open, close, rename, remove...), one per line */
  ops: () => string[];
}

export async function partnerServer(t: TestContext): Promise<PartnerServer> {
  const dir = mkdtempSync(join(tmpdir(), 'inboxd-partner-'));
  const opsLog = join(dir, 'sftp-ops.log');
  // A subsystem command runs through the user's shell, so its stderr (the operation log) can go to a file.
  const sshd = await startSshd({ dir, subsystem: `sftp ${SFTP_SERVER} -e -l INFO 2>>${opsLog}` });
  const srv = join(dir, 'srv');
  const p: PartnerServer = {
    sshd, inbox: join(srv, 'inbox'), outbox: join(srv, 'outbox'), archive: join(srv, 'archive'),
    ops: () => (existsSync(opsLog) ? readFileSync(opsLog, 'utf8').split(/\r?\n/).filter(Boolean) : []),
  };
  for (const d of [p.inbox, p.outbox, p.archive]) mkdirSync(d, { recursive: true });
  t.onTestFailed(() => console.error(`sshd log tail:\n${sshd.logs().slice(-3000)}\nSFTP operations:\n${p.ops().slice(-40).join('\n')}`));
  t.onTestFinished(async (ctx) => {
    await sshd.stop();
    if (ctx.task.result?.state !== 'fail') rmSync(dir, { recursive: true, force: true });
  });
  return p;
}

/** `partners.acme.remote` for the server, with test-sized timings; `over` replaces keys. */
export function remoteConfig(p: PartnerServer, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    host: p.sshd.host, port: p.sshd.port, user: p.sshd.user, private_key: p.sshd.clientKeyPath, host_key: p.sshd.hostKeyFingerprint,
    inbox: p.inbox, outbox: p.outbox, archive: p.archive,
    schedule: '*/1 * * * * *', stable_for: '300ms', retry: '3,500,full',
    connect_timeout: '10s', op_timeout: '10s', idle_timeout: '10s', breaker_failures: 5, breaker_cooldown: '2s',
    ...over,
  };
}

export interface RemoteDelivery {
  name: string;
  sha256: string;
  rows: number;
  data: Buffer;
  /** data file, sidecar, manifest */
  files: string[];
}

/** A delivery as the partner builds it: CSV, `.sha256` sidecar and manifest. */
export function buildDelivery(seq: number, rows: Row[] = rowsOf(3)): { d: RemoteDelivery; contents: [string, Buffer][] } {
  const name = nameFor(seq);
  const data = Buffer.from([HEADER, ...rows.map((r) => HEADER.map((h) => r[h] ?? ''))].map((c) => `${csvLine(c)}\n`).join(''));
  const hex = sha256(data);
  const qty = rows.reduce((s, r) => s + Number(r.Quantity), 0);
  const manifest = { file: name, records: rows.length, sums: { qty }, generated_at: '2025-09-16T02:00:03Z', sha256: hex, schema_version: 1 };
  const contents: [string, Buffer][] = [[name, data], [`${name}.sha256`, Buffer.from(`${hex}  ${name}\n`)], [`${name}.manifest.json`, Buffer.from(`${JSON.stringify(manifest)}\n`)]];
  return { d: { name, sha256: hex, rows: rows.length, data, files: contents.map(([f]) => f) }, contents };
}

/** Puts a delivery into the partner's inbox as its own client would: each file as `.filepart`, then renamed. */
export async function partnerUploads(dir: string, seq: number, rows?: Row[]): Promise<RemoteDelivery> {
  const { d, contents } = buildDelivery(seq, rows);
  for (const [file, content] of contents) {
    await fsp.writeFile(join(dir, `${file}.filepart`), content);
    await fsp.rename(join(dir, `${file}.filepart`), join(dir, file));
  }
  return d;
}

export const ls = (dir: string) => (existsSync(dir) ? readdirSync(dir).sort() : []);
