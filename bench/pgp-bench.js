#!/usr/bin/env node
/**
 * Decrypt throughput and peak memory on a big gpg-made file:
 *   npx tsc -p tsconfig.json && node bench/pgp-bench.js [MB=200] [--compress zlib|zip|bzip2|none] [--unsigned]
 * The point is that memory stays flat whatever the file size: the plaintext is
 * streamed, never held (see the comment at the top of src/pgp/decrypt.ts).
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decryptStream } from '../dist/pgp/decrypt.js';
import { loadPrivateKeys, loadPublicKeys } from '../dist/pgp/keys.js';

const MB = 1024 * 1024;
const sizeMB = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 200);
const compressAt = process.argv.indexOf('--compress');
const compress = compressAt > 0 ? process.argv[compressAt + 1] : undefined;
const signed = !process.argv.includes('--unsigned');

const work = await mkdtemp(join(tmpdir(), 'inboxd-pgp-bench-'));
const home = join(work, 'gnupg');
execFileSync('mkdir', ['-m', '700', home]);
const gpg = (...args) => execFileSync('gpg', ['--batch', '--yes', '--quiet', '--pinentry-mode', 'loopback', '--passphrase', '',
  '--trust-model', 'always', ...args], { env: { ...process.env, GNUPGHOME: home }, maxBuffer: 16 * MB });

try {
  for (const [uid, sub] of [['Us <us@bench.test>', 'cv25519'], ['Partner <p@bench.test>', 'cv25519']]) {
    gpg('--quick-gen-key', uid, 'ed25519', 'sign', 'never');
    const fpr = gpg('--with-colons', '--list-keys', uid).toString().split('\n').find((l) => l.startsWith('fpr:')).split(':')[9];
    gpg('--quick-add-key', fpr, sub, 'encr', 'never');
  }
  await writeFile(join(work, 'us.asc'), gpg('--armor', '--export-secret-keys', '<us@bench.test>'));
  await writeFile(join(work, 'partner.asc'), gpg('--armor', '--export', '<p@bench.test>'));

  // A CSV with random-ish fields (compresses about 3:1, like real exports), hashed as it is written.
  const csv = join(work, 'big.csv');
  const expected = createHash('sha256');
  const out = createWriteStream(csv);
  for (let i = 0, n = 0; n < sizeMB * MB; i++) {
    const row = `${i},customer ${i % 1000},${(i * 1.37).toFixed(2)},${randomBytes(18).toString('base64')}\r\n`;
    n += row.length;
    expected.update(row);
    if (!out.write(row)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');

  const pgp = join(work, 'big.csv.pgp');
  let t = Date.now();
  gpg(...(signed ? ['--local-user', '<p@bench.test>', '--sign'] : []), '--recipient', '<us@bench.test>',
    ...(compress ? ['--compress-algo', compress] : []), '--output', pgp, '--encrypt', csv);
  const gpgSeconds = (Date.now() - t) / 1000;
  await rm(csv);

  const opts = {
    decryptionKeys: await loadPrivateKeys([join(work, 'us.asc')]),
    verificationKeys: await loadPublicKeys([join(work, 'partner.asc')]),
    requireSignature: signed,
    maxDecompressedBytes: 4096 * MB,
    maxCompressionRatio: 100,
  };
  global.gc?.();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  let peakHeap = 0;
  let peakBuffers = 0;
  let samples = 0;
  const sampler = setInterval(() => {
    if (process.env.BENCH_GC && ++samples % 50 === 0) global.gc?.(); // tells lazy GC apart from retention
    const m = process.memoryUsage();
    peak = Math.max(peak, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
    peakBuffers = Math.max(peakBuffers, m.arrayBuffers);
  }, 20);

  t = Date.now();
  const cpu0 = process.cpuUsage();
  const { plaintext, done } = await decryptStream(createReadStream(pgp), opts);
  const actual = createHash('sha256');
  let bytes = 0;
  for await (const chunk of plaintext) {
    bytes += chunk.length;
    actual.update(chunk);
  }
  const { signedBy } = await done;
  const seconds = (Date.now() - t) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6; // all threads (zlib runs on the pool); steadier than wall time on a busy host
  clearInterval(sampler);

  const ok = actual.digest('hex') === expected.digest('hex');
  console.log(JSON.stringify({
    plaintextMB: +(bytes / MB).toFixed(1),
    ciphertextMB: +((await stat(pgp)).size / MB).toFixed(1),
    compress: compress ?? 'gpg default',
    gpgEncryptSeconds: gpgSeconds,
    decryptSeconds: seconds,
    throughputMBps: +(bytes / MB / seconds).toFixed(1),
    cpuSeconds: +cpuSeconds.toFixed(2),
    MBperCpuSecond: +(bytes / MB / cpuSeconds).toFixed(1),
    baselineRssMB: Math.round(baseline / MB),
    peakRssMB: Math.round(peak / MB),
    rssGrowthMB: Math.round((peak - baseline) / MB),
    peakHeapUsedMB: Math.round(peakHeap / MB),
    peakArrayBuffersMB: Math.round(peakBuffers / MB),
    signedBy,
    intact: ok,
  }, null, 2));
  if (!ok) process.exitCode = 1;
} finally {
  execFileSync('gpgconf', ['--kill', 'gpg-agent'], { env: { ...process.env, GNUPGHOME: home } });
  await rm(work, { recursive: true, force: true });
}
