// npm run bench:formats [-- --rows 1000000 --runs 3]
// The same inventory rows delivered three ways, each ingested end to end with the real CLI: plain CSV,
// CSV compressed with the gzip tool (.csv.gz), and NDJSON with nested objects (.ndjson). Prints each
// case's median time, rows per second and peak memory (VmHWM), and its time as a ratio of plain CSV.
// The cases take turns, `runs` rounds of them, since a shared machine's speed drifts.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { CSV_HEADER, csvRow, jsonRow, writeRows } from './rows.js';

const args = Object.fromEntries(process.argv.slice(2).join(' ').split('--').filter(Boolean).map((a) => a.trim().split(/\s+/)));
const ROWS = Number(args.rows ?? 1_000_000);
const RUNS = Number(args.runs ?? 3);
const CLI = new URL('../dist/cli.js', import.meta.url).pathname;
const CSV_MAPPING = new URL('../config/mappings/acme-inventory.csv', import.meta.url).pathname;
const NDJSON_MAPPING = `ours,partner,type,required
sku,item.sku,string:64,yes
warehouse,item.warehouse,string:16,yes
qty,qty,integer,yes
unit_cost,price.amount,amount:2,
currency,price.currency,currency,
condition,condition,enum:NEW|USED|REFURBISHED,
updated_at,updated,datetime,yes
`;
function config(dir, format) {
  const mapping = format === 'ndjson' ? join(dir, 'ndjson-mapping.csv') : CSV_MAPPING;
  if (format === 'ndjson') writeFileSync(mapping, NDJSON_MAPPING);
  const yaml = `root: ${dir}/partners\ndatabase: ${dir}/inboxd.db\nsettle_time: 0s\nlog_level: warn\npartners:\n  acme:\n    flows:\n      inventory:\n        format: ${format}\n        mapping: ${mapping}\n        table: inventory\n        key: [sku, warehouse]\n        totals: [qty]\n`;
  writeFileSync(join(dir, 'inboxd.yaml'), yaml);
  return join(dir, 'inboxd.yaml');
}

/** Runs a command, sampling its peak resident memory (VmHWM) from /proc. */
async function measure(cmd, argv) {
  const start = process.hrtime.bigint();
  const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
  let peakKb = 0;
  const timer = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) peakKb = Math.max(peakKb, Number(m[1]));
    } catch {}
  }, 20);
  const [code] = await once(child, 'exit');
  clearInterval(timer);
  if (code !== 0) throw new Error(`${cmd} ${argv.join(' ')} exited ${code}`);
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, peakMb: peakKb / 1024 };
}

/** A delivery of `rows` in the case's form, with sidecar and manifest, ingested once; the row count checked. */
async function runCase(rows, kind) {
  const dir = mkdtempSync(join(tmpdir(), 'inboxd-bench-formats-'));
  const inbox = join(dir, 'partners', 'acme', 'inbox');
  mkdirSync(inbox, { recursive: true });
  const format = kind === 'ndjson' ? 'ndjson' : 'csv';
  let file = `inventory_20250916T0200Z_001.${format}`;
  const qty = await writeRows(join(dir, file), rows, format === 'csv' ? csvRow : jsonRow, format === 'csv' ? CSV_HEADER : '');
  if (kind === 'gzip') {
    execFileSync('gzip', [join(dir, file)]);
    file = `${file}.gz`;
  }
  const sha256 = createHash('sha256').update(readFileSync(join(dir, file))).digest('hex');
  writeFileSync(join(inbox, `${file}.sha256`), `${sha256}  ${file}\n`);
  writeFileSync(join(inbox, `${file}.manifest.json`), JSON.stringify({ file, records: rows, sums: { qty }, sha256 }));
  const cfg = config(dir, format);
  execFileSync('mv', [join(dir, file), join(inbox, file)]);
  const r = await measure(process.execPath, [CLI, 'run', '--once', '--config', cfg]);
  const count = execFileSync('sqlite3', [join(dir, 'inboxd.db'), 'SELECT count(*) FROM inventory']).toString().trim();
  if (Number(count) !== rows) throw new Error(`${kind}: expected ${rows} rows, found ${count}`);
  rmSync(dir, { recursive: true, force: true });
  return r;
}

const fmt = (n) => Math.round(n).toLocaleString('en-US');
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

console.log(`inboxd formats bench: node ${process.version}, ${fmt(ROWS)} rows, median of ${RUNS} rounds\n`);
const cases = { csv: 'plain CSV', gzip: 'gzip CSV (.csv.gz)', ndjson: 'NDJSON (nested)' };
const runs = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (let i = 0; i < RUNS; i++) for (const kind of Object.keys(cases)) runs[kind].push(await runCase(ROWS, kind));
let base;
for (const [kind, label] of Object.entries(cases)) {
  const seconds = median(runs[kind].map((r) => r.seconds));
  base ??= seconds;
  const peak = median(runs[kind].map((r) => r.peakMb));
  console.log(`${label.padEnd(20)} ${seconds.toFixed(2).padStart(7)} s  ${fmt(ROWS / seconds).padStart(10)} rows/s  peak ${peak.toFixed(0).padStart(4)} MB  ratio to plain ${(seconds / base).toFixed(2)}  (${runs[kind].map((r) => r.seconds.toFixed(2)).join(', ')})`);
}
