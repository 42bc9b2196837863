#!/usr/bin/env node
/**
 * A remote partner end to end over loopback: a real sshd (test/helpers/sshd.ts), a delivery of
 * about `--mb` MB in its inbox, the real daemon pulling it, ingesting it and pushing the ACK back.
 * Prints the transfer throughput (first byte of the local .part file -> "pulled" log line), the
 * ingest time (claimed -> accepted), the end-to-end time, and the daemon's memory: peak RSS during
 * the transfer, during the ingest, and its high-water mark (VmHWM). For reference, the same file
 * fetched with OpenSSH's own `sftp` client.
 *
 *   npx tsc -p tsconfig.json && node bench/remote-bench.js [--mb 1024] [--mb 256 --mb 1024 ...]
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(root, 'dist', 'cli.js');
const MAPPING = join(root, 'config', 'mappings', 'acme-inventory.csv');
const argv = process.argv.slice(2);
const sizes = argv.flatMap((a, i) => (a === '--mb' ? [Number(argv[i + 1])] : []));
if (sizes.length === 0) sizes.push(1024);

// The sshd harness is TypeScript: transpile it on the fly (no type checking), as bench/sftp-bench.js does.
const scratch = mkdtempSync(join(tmpdir(), 'inboxd-remote-bench-'));
const harness = join(scratch, 'sshd.mjs');
writeFileSync(harness, ts.transpileModule(readFileSync(join(root, 'test/helpers/sshd.ts'), 'utf8'), { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } }).outputText);
const { startSshd } = await import(pathToFileURL(harness).href);

/** Wide rows (a 60-character SKU): a file of many bytes rather than many rows. */
async function generate(path, mb) {
  const out = createWriteStream(path);
  const hash = createHash('sha256');
  let qty = 0;
  let rows = 0;
  let bytes = 0;
  const write = async (s) => {
    hash.update(s);
    bytes += Buffer.byteLength(s);
    if (!out.write(s)) await once(out, 'drain');
  };
  await write('SKU,Warehouse,Quantity,UnitCost,Currency,Condition,LastModified\n');
  const conds = ['NEW', 'USED', 'REFURBISHED'];
  while (bytes < mb * 1024 * 1024) {
    let buf = '';
    for (let k = 0; k < 1000; k++, rows++) {
      const q = rows % 1000;
      qty += q;
      buf += `SKU-${String(rows).padStart(56, '0')},WH${rows % 7},${q},${(rows % 10000) / 100},EUR,${conds[rows % 3]},2025-09-16T0${rows % 10}:${String(rows % 60).padStart(2, '0')}:00Z\n`;
    }
    await write(buf);
  }
  out.end();
  await once(out, 'finish');
  return { sha256: hash.digest('hex'), qty, rows, bytes };
}

function rss(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    return { rss: Number(/VmRSS:\s+(\d+)/.exec(s)[1]) / 1024, hwm: Number(/VmHWM:\s+(\d+)/.exec(s)[1]) / 1024 };
  } catch {
    return undefined;
  }
}

async function run(mb) {
  const dir = mkdtempSync(join(scratch, `run-${mb}-`));
  const sshd = await startSshd({ dir: join(dir, 'sshd-home') });
  const srv = join(dir, 'srv');
  for (const d of ['inbox', 'outbox', 'archive']) mkdirSync(join(srv, d), { recursive: true });
  try {
    const file = 'inventory_20250916T0200Z_001.csv';
    const staged = join(srv, `${file}.filepart`);
    const g = await generate(staged, mb);

    // Reference: OpenSSH's sftp client fetching the same file, less its session setup (an empty batch).
    const refTarget = join(dir, 'ref.csv');
    const sftp = (batch) => {
      const t0 = process.hrtime.bigint();
      execFileSync('sftp', ['-q', '-i', sshd.clientKeyPath, '-P', String(sshd.port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-b', '-', `${sshd.user}@127.0.0.1`],
        { input: batch, stdio: ['pipe', 'ignore', 'inherit'] });
      return Number(process.hrtime.bigint() - t0) / 1e9;
    };
    const setup = sftp('pwd\n');
    const refSeconds = sftp(`get ${staged} ${refTarget}\n`) - setup;
    rmSync(refTarget);

    const cfg = join(dir, 'inboxd.yaml');
    writeFileSync(cfg, `root: ${dir}/partners
database: ${dir}/inboxd.db
settle_time: 0s
sweep: '0 0 1 1 *'
log_level: info
partners:
  acme:
    remote:
      host: 127.0.0.1
      port: ${sshd.port}
      user: ${sshd.user}
      private_key: ${sshd.clientKeyPath}
      host_key: '${sshd.hostKeyFingerprint}'
      inbox: ${srv}/inbox
      outbox: ${srv}/outbox
      archive: ${srv}/archive
      schedule: '*/1 * * * * *'
      stable_for: 1s
    flows:
      inventory:
        mapping: ${MAPPING}
        table: inventory
        key: [sku, warehouse]
        totals: [qty]
`);
    const daemon = spawn(process.execPath, [CLI, 'run', '--config', cfg], { stdio: ['ignore', 'pipe', 'inherit'] });
    const logs = [];
    let buffered = '';
    daemon.stdout.setEncoding('utf8').on('data', (d) => {
      const lines = (buffered + d).split('\n');
      buffered = lines.pop();
      for (const l of lines) if (l.trim()) logs.push(JSON.parse(l));
    });
    const find = (m, fields = {}) => logs.find((l) => l.msg === m && Object.entries(fields).every(([k, v]) => l[k] === v));
    while (!find('inboxd started')) await new Promise((r) => setTimeout(r, 20));

    // The partner's upload completes: companions first, then the data file renamed into place.
    writeFileSync(join(srv, 'inbox', `${file}.sha256`), `${g.sha256}  ${file}\n`);
    writeFileSync(join(srv, 'inbox', `${file}.manifest.json`), JSON.stringify({ file, records: g.rows, sums: { qty: g.qty }, sha256: g.sha256 }));
    renameSync(staged, join(srv, 'inbox', file));

    const part = join(dir, 'partners', 'acme', 'inbox', `${file}.part`);
    let transferStart;
    const peak = { transfer: 0, ingest: 0, idle: 0, hwm: 0 };
    for (;;) {
      const m = rss(daemon.pid);
      if (!transferStart && existsSync(part)) transferStart = Date.now();
      if (m) {
        const phase = find('pulled from the partner server', { file }) ? 'ingest' : transferStart ? 'transfer' : 'idle';
        peak[phase] = Math.max(peak[phase], m.rss);
        peak.hwm = Math.max(peak.hwm, m.hwm);
      }
      if (find('answer uploaded to the partner', { file: `${file}.ack.json` })) break;
      if (daemon.exitCode !== null) throw new Error(`the daemon exited: ${JSON.stringify(logs.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const time = (m, f) => Date.parse(find(m, f).time);
    const pulledAt = time('pulled from the partner server', { file });
    const transferSeconds = (pulledAt - transferStart) / 1000;
    const ingestSeconds = (time('delivery accepted', { file }) - time('delivery claimed', { file })) / 1000;
    const total = (time('answer uploaded to the partner', { file: `${file}.ack.json` }) - transferStart) / 1000;
    daemon.kill('SIGTERM');
    await once(daemon, 'exit');
    const count = Number(execFileSync('sqlite3', [join(dir, 'inboxd.db'), 'SELECT count(*) FROM inventory']).toString().trim());
    if (count !== g.rows) throw new Error(`expected ${g.rows} rows, found ${count}`);
    const MB = g.bytes / 1024 / 1024;
    console.log(`${MB.toFixed(0).padStart(6)} MB ${g.rows.toLocaleString('en-US').padStart(11)} rows | OpenSSH sftp get ${(MB / refSeconds).toFixed(0).padStart(4)} MB/s | inboxd pull ${(MB / transferSeconds).toFixed(0).padStart(4)} MB/s (${transferSeconds.toFixed(1)} s), ingest ${ingestSeconds.toFixed(1)} s (${Math.round(g.rows / ingestSeconds).toLocaleString('en-US')} rows/s), pull -> ACK pushed ${total.toFixed(1)} s | daemon RSS: idle ${peak.idle.toFixed(0)} MB, transfer peak ${peak.transfer.toFixed(0)} MB, ingest peak ${peak.ingest.toFixed(0)} MB, VmHWM ${peak.hwm.toFixed(0)} MB`);
  } finally {
    await sshd.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`inboxd remote bench: node ${process.version}, loopback sshd, sizes ${sizes.join(', ')} MB`);
try {
  for (const mb of sizes) await run(mb);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
