#!/usr/bin/env node
/**
 * SFTP throughput and peak memory over loopback against a real sshd.
 *
 *   npx tsc -p tsconfig.json && node bench/sftp-bench.js [sizeMB=1024]
 *
 * INBOXD_DIST points at another build of remote.js (default ../dist), for when
 * the full build is broken by unrelated files. The sshd harness is TypeScript
 * (test/helpers/sshd.ts); it is transpiled on the fly, without type checking.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = resolve(process.env.INBOXD_DIST ?? join(root, 'dist'));
const sizeMB = Number(process.argv[2] ?? 1024);

const { RemoteSession } = await import(pathToFileURL(join(dist, 'remote.js')).href);
const harness = join(mkdtempSync(join(tmpdir(), 'inboxd-bench-')), 'sshd.mjs');
const source = readFileSync(join(root, 'test/helpers/sshd.ts'), 'utf8');
writeFileSync(harness, ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } }).outputText);
const { startSshd } = await import(pathToFileURL(harness).href);

const sshd = await startSshd();
const work = mkdtempSync(join(tmpdir(), 'inboxd-bench-data-'));
try {
  const remote = join(sshd.dir, 'big.bin');
  execFileSync('dd', ['if=/dev/urandom', `of=${remote}`, 'bs=1M', `count=${sizeMB}`], { stdio: 'ignore' });
  const size = statSync(remote).size;
  const ep = {
    host: sshd.host, port: sshd.port, username: sshd.user, privateKey: readFileSync(sshd.clientKeyPath),
    hostKeyFingerprint: sshd.hostKeyFingerprint, timeouts: { connectMs: 10_000, opMs: 30_000, transferIdleMs: 30_000 },
  };
  const rss0 = process.memoryUsage().rss;
  let peak = rss0;
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 10);

  const timed = async (label, fn) => {
    peak = process.memoryUsage().rss;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await fn();
    const s = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    console.log(`${label.padEnd(9)} ${(size / 2 ** 20).toFixed(0)} MiB in ${s.toFixed(2)} s = ${(size / 2 ** 20 / s).toFixed(1)} MiB/s,`
      + ` node CPU ${(((cpu.user + cpu.system) / 1e6 / s) * 100).toFixed(0)}%, peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB (+${((peak - rss0) / 2 ** 20).toFixed(0)})`);
  };

  const session = await RemoteSession.open(ep);
  try {
    await timed('download', () => session.download(remote, join(work, 'big.bin'), size));
    await timed('upload', () => session.upload(join(work, 'big.bin'), sshd.dir, 'up.bin'));
  } finally {
    await session.close();
    clearInterval(sampler);
  }
  if (statSync(join(sshd.dir, 'up.bin')).size !== size) throw new Error('upload size mismatch');

  // Reference under the same machine load: OpenSSH's own client (pipelined requests, C crypto).
  const knownHosts = join(work, 'known_hosts');
  writeFileSync(knownHosts, `[127.0.0.1]:${sshd.port} ${readFileSync(`${sshd.hostKeyPath}.pub`, 'utf8')}`);
  await timed('openssh', async () => {
    execFileSync('sftp', ['-q', '-b', '-', '-i', sshd.clientKeyPath, '-P', String(sshd.port), '-o', `UserKnownHostsFile=${knownHosts}`,
      `${sshd.user}@127.0.0.1`], { input: `get ${remote} ${join(work, 'ref.bin')}\n`, stdio: ['pipe', 'ignore', 'inherit'] });
    execFileSync('sync', ['-f', join(work, 'ref.bin')]);
  });
  console.log(`baseline RSS ${(rss0 / 2 ** 20).toFixed(0)} MiB; process max RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`);
} finally {
  await sshd.destroy();
  rmSync(work, { recursive: true, force: true });
  rmSync(dirname(harness), { recursive: true, force: true });
}
