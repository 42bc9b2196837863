// npm run bench:latency [-- --deliveries 100 --settle 500ms]
// How soon a small delivery is answered: the real daemon (`inboxd run`, default settings but the ones
// named here), and deliveries uploaded the usual way, each file under a temporary name, then renamed
// (CSV, then .sha256, then manifest, as the test fixture does). Times the last rename to the ACK
// appearing in outbox/, one delivery after another, and prints p50, p99 and the worst.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, promises as fsp, rmSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const args = Object.fromEntries(process.argv.slice(2).join(' ').split('--').filter(Boolean).map((a) => a.trim().split(/\s+/)));
const DELIVERIES = Number(args.deliveries ?? 100);
const CLI = new URL('../dist/cli.js', import.meta.url).pathname;
const MAPPING = new URL('../config/mappings/acme-inventory.csv', import.meta.url).pathname;

const dir = mkdtempSync(join(tmpdir(), 'inboxd-latency-'));
const inbox = join(dir, 'partners', 'acme', 'inbox');
const outbox = join(dir, 'partners', 'acme', 'outbox');
mkdirSync(inbox, { recursive: true });
mkdirSync(outbox, { recursive: true });
const settle = args.settle ? `settle_time: ${args.settle}\n` : '';
writeFileSync(join(dir, 'inboxd.yaml'), `root: ${dir}/partners\ndatabase: ${dir}/inboxd.db\nlog_level: warn\n${settle}partners:\n  acme:\n    flows:\n      inventory:\n        mapping: ${MAPPING}\n        table: inventory\n        key: [sku, warehouse]\n        totals: [qty]\n`);

const name = (seq) => `inventory_20250916T0200Z_${String(seq).padStart(3, '0')}.csv`;

/** A small delivery: a few rows, its .sha256 and manifest, each written under .part and renamed. */
async function upload(seq) {
  const file = name(seq);
  const rows = [0, 1, 2].map((i) => `SKU-${seq}-${i},WH1,${i + 1},1.50,EUR,NEW,2025-09-16T02:00:00Z\r\n`);
  const data = `SKU,Warehouse,Quantity,UnitCost,Currency,Condition,LastModified\r\n${rows.join('')}`;
  const sha256 = createHash('sha256').update(data).digest('hex');
  const files = [[file, data], [`${file}.sha256`, `${sha256}  ${file}\n`], [`${file}.manifest.json`, JSON.stringify({ file, records: 3, sums: { qty: 6 }, sha256 })]];
  for (const [f, content] of files) {
    await fsp.writeFile(join(inbox, `${f}.part`), content);
    await fsp.rename(join(inbox, `${f}.part`), join(inbox, f));
  }
}

/** Resolves when outbox/ holds `ack`: on the directory's events, and every 20 ms in case one is missed. */
function ackSeen(ack, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    const done = (err) => {
      w.close();
      clearInterval(poll);
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(performance.now());
    };
    const check = () => existsSync(join(outbox, ack)) && done();
    const w = watch(outbox, check);
    const poll = setInterval(check, 20);
    const timer = setTimeout(() => done(new Error(`no ${ack} within ${timeoutMs} ms`)), timeoutMs);
    check();
  });
}

const daemon = spawn(process.execPath, [CLI, 'run', '--config', join(dir, 'inboxd.yaml')], { stdio: ['ignore', 'ignore', 'inherit'] });
const exited = new Promise((resolve) => daemon.on('exit', resolve));
try {
  // Warm up (the first delivery opens the database and starts the staging worker), then measure.
  await sleep(1500);
  const latencies = [];
  for (let seq = 1; seq <= DELIVERIES + 1; seq++) {
    const seen = ackSeen(`${name(seq)}.ack.json`);
    await upload(seq);
    const t0 = performance.now();
    const t1 = await seen;
    if (seq > 1) latencies.push(t1 - t0);
    await sleep(20 + Math.random() * 30); // partners do not upload back to back
  }
  const sorted = [...latencies].sort((a, b) => a - b);
  const pct = (p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
  if (process.env.LATENCY_ALL) console.log(latencies.map((l) => l.toFixed(0)).join(" "));
  console.log(`rename -> ACK, ${latencies.length} small deliveries (temporary name, then rename)${settle ? `, ${settle.trim()}` : ', default settings'}: p50 ${pct(50).toFixed(0)} ms, p99 ${pct(99).toFixed(0)} ms, max ${sorted.at(-1).toFixed(0)} ms`);
} finally {
  daemon.kill('SIGTERM');
  await exited;
  rmSync(dir, { recursive: true, force: true });
}
