// npm run bench:pg [-- --rows 1000000 --factor 10 --runs 3 --two 1]   (--factor 0: no big case; --two 0: no two-instance case)
//
// inboxd on PostgreSQL end to end (hash, parse, map, COPY, totals, upsert, commit, ACK) beside the
// C tools doing the same job: sha256sum, then psql with \copy into a staging table and one
// INSERT ... ON CONFLICT upsert in one transaction. A throwaway server is started here
// (test/helpers/postgres.ts). Prints seconds, rows/s, inboxd's peak RSS and the ratio; then rows/s of
// one instance and of two instances working two partners at once.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { postgresBin, startPostgres } from '../test/helpers/postgres.js';

const args = Object.fromEntries(process.argv.slice(2).join(' ').split('--').filter(Boolean).map((a) => a.trim().split(/\s+/)));
const ROWS = Number(args.rows ?? 1_000_000);
const FACTOR = Number(args.factor ?? 10);
const RUNS = Number(args.runs ?? 3);
const TWO = Number(args.two ?? 1) > 0;
const CLI = new URL('../dist/cli.js', import.meta.url).pathname;
const MAPPING = new URL('../config/mappings/acme-inventory.csv', import.meta.url).pathname;
const HEADER = 'SKU,Warehouse,Quantity,UnitCost,Currency,Condition,LastModified\r\n';

async function generate(path: string, rows: number, offset = 0): Promise<{ qty: number }> {
  const out = createWriteStream(path);
  let qty = 0;
  const conds = ['NEW', 'USED', 'REFURBISHED'];
  out.write(HEADER);
  let buf = '';
  for (let i = offset; i < offset + rows; i++) {
    const q = i % 1000;
    qty += q;
    buf += `SKU-${i},WH${i % 7},${q},${(i % 10000) / 100},EUR,${conds[i % 3]},2025-09-16T0${i % 10}:${String(i % 60).padStart(2, '0')}:00Z\r\n`;
    if (buf.length > 1 << 16) {
      if (!out.write(buf)) await once(out, 'drain');
      buf = '';
    }
  }
  out.end(buf);
  await once(out, 'finish');
  return { qty };
}

const pg = await startPostgres();
const psql = join(postgresBin()!, 'psql');
let dbs = 0;

/** Spawns and samples peak resident memory (VmHWM) of each child. */
function spawnMeasured(argv: string[]): { done: Promise<{ peakMb: number }> } {
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
  let peakKb = 0;
  const timer = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) peakKb = Math.max(peakKb, Number(m[1]));
    } catch { /* exited */ }
  }, 20);
  return {
    done: once(child, 'exit').then(([code]) => {
      clearInterval(timer);
      if (code !== 0) throw new Error(`inboxd exited ${String(code)}`);
      return { peakMb: peakKb / 1024 };
    }),
  };
}

/** A delivery per partner, put in place; returns the configuration. `daemons`: how many instances share it. */
async function prepare(rows: number, partners: string[], held = false): Promise<{ dir: string; cfg: string; url: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'inboxd-pgbench-'));
  const url = pg.database(`bench${++dbs}`);
  for (const [i, p] of partners.entries()) {
    mkdirSync(join(dir, 'partners', p, 'inbox'), { recursive: true });
    // `held`: the files wait beside the tree, for the moment the instances are ready (deliver()).
    const inbox = held ? join(dir, 'held', p) : join(dir, 'partners', p, 'inbox');
    mkdirSync(inbox, { recursive: true });
    const file = 'inventory_20250916T0200Z_001.csv';
    const { qty } = await generate(join(dir, file), rows, i * rows);
    const sha256 = execFileSync('sha256sum', [join(dir, file)]).toString().slice(0, 64);
    writeFileSync(join(inbox, `${file}.sha256`), `${sha256}  ${file}\n`);
    writeFileSync(join(inbox, `${file}.manifest.json`), JSON.stringify({ file, records: rows, sums: { qty }, sha256 }));
    renameSync(join(dir, file), join(inbox, file));
  }
  const flows = partners.map((p) => `  ${p}:\n    flows:\n      inventory:\n        mapping: ${MAPPING}\n        table: inv_${p}\n        key: [sku, warehouse]\n        totals: [qty]\n`).join('');
  writeFileSync(join(dir, 'inboxd.yaml'), `root: ${dir}/partners\ndatabase:\n  url: ${url}\n  lease_ttl: 5s\nsettle_time: 0s\nlog_level: warn\npartners:\n${flows}`);
  return { dir, cfg: join(dir, 'inboxd.yaml'), url };
}

function count(url: string, table: string): number {
  return Number(execFileSync(psql, [url, '-X', '-A', '-t', '-c', `SELECT count(*) FROM ${table}`]).toString().trim());
}

async function inboxdCase(rows: number): Promise<{ seconds: number; peakMb: number }> {
  const { dir, cfg, url } = await prepare(rows, ['acme']);
  const t0 = process.hrtime.bigint();
  const { peakMb } = await spawnMeasured([CLI, 'run', '--once', '--config', cfg]).done;
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (count(url, 'inv_acme') !== rows) throw new Error('rows missing');
  rmSync(dir, { recursive: true, force: true });
  return { seconds, peakMb };
}

/** Two daemons on one database, two partners: once each holds the lease of one, both deliveries arrive. */
async function twoInstances(rows: number): Promise<{ seconds: number; peakMb: number }> {
  const { dir, cfg, url } = await prepare(rows, ['p1', 'p2'], true);
  const runs = [0, 1].map(() => spawnMeasured([CLI, 'run', '--config', cfg]));
  const split = "SELECT count(DISTINCT holder) FROM inboxd.leases WHERE holder IS NOT NULL AND expires_at > now()";
  for (const until = Date.now() + 60_000; Date.now() < until; await new Promise((r) => setTimeout(r, 200))) {
    const r = spawnSync(psql, [url, '-X', '-A', '-t', '-c', split], { encoding: 'utf8' }); // fails until the schema is made
    if (Number(r.stdout.trim() || 0) === 2) break;
  }
  const t0 = process.hrtime.bigint();
  for (const p of ['p1', 'p2']) for (const f of readdirSync(join(dir, 'held', p)).sort().reverse()) renameSync(join(dir, 'held', p, f), join(dir, 'partners', p, 'inbox', f));
  const deadline = Date.now() + 600_000;
  while ((count(url, 'inboxd.deliveries') < 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  execFileSync('pkill', ['-TERM', '-f', cfg]);
  const peaks = await Promise.all(runs.map((r) => r.done.catch(() => ({ peakMb: 0 }))));
  if (count(url, 'inv_p1') + count(url, 'inv_p2') !== 2 * rows) throw new Error('rows missing');
  rmSync(dir, { recursive: true, force: true });
  return { seconds, peakMb: Math.max(...peaks.map((p) => p.peakMb)) };
}

async function cToolsCase(rows: number): Promise<{ seconds: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'inboxd-pgbench-c-'));
  const data = join(dir, 'data.csv');
  await generate(data, rows);
  const url = pg.database(`ctools${++dbs}`);
  const sql = `
CREATE TABLE inventory (sku text NOT NULL, warehouse text NOT NULL, qty bigint, unit_cost bigint, currency text, condition text, updated_at timestamptz, PRIMARY KEY (sku, warehouse));
CREATE UNLOGGED TABLE staging (sku text, warehouse text, qty bigint, unit_cost numeric, currency text, condition text, updated_at timestamptz);
\\copy staging FROM '${data}' WITH (FORMAT csv, HEADER true)
BEGIN;
INSERT INTO inventory SELECT sku, warehouse, qty, (unit_cost * 100)::bigint, currency, condition, updated_at FROM staging ON CONFLICT (sku, warehouse) DO UPDATE SET qty = excluded.qty, unit_cost = excluded.unit_cost, currency = excluded.currency, condition = excluded.condition, updated_at = excluded.updated_at;
COMMIT;
`;
  writeFileSync(join(dir, 'load.sql'), sql);
  const t0 = process.hrtime.bigint();
  execFileSync('sha256sum', [data], { stdio: 'ignore' });
  const r = spawnSync(psql, [url, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', join(dir, 'load.sql')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error('psql failed');
  rmSync(dir, { recursive: true, force: true });
  return { seconds };
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
function report(label: string, rows: number, runs: { seconds: number; peakMb?: number }[], base?: number): number {
  const seconds = median(runs.map((r) => r.seconds));
  const peak = runs.some((r) => r.peakMb) ? `  peak ${median(runs.map((r) => r.peakMb ?? 0)).toFixed(0).padStart(5)} MB` : '';
  const ratio = base ? `  ratio to C tools ${(seconds / base).toFixed(2)}` : '';
  const each = runs.length > 1 ? `  (${runs.map((r) => r.seconds.toFixed(2)).join(', ')})` : '';
  console.log(`${label.padEnd(34)} ${fmt(rows).padStart(11)} rows  ${seconds.toFixed(2).padStart(7)} s  ${fmt(rows / seconds).padStart(10)} rows/s${peak}${ratio}${each}`);
  return seconds;
}

try {
  console.log(`inboxd PostgreSQL bench: node ${process.version}, ${ROWS} rows (median of ${RUNS} rounds)${FACTOR > 0 ? ` and ${ROWS * FACTOR} rows` : ''}\n`);
  for (const [rows, rounds] of [[ROWS, RUNS], ...(FACTOR > 0 ? [[ROWS * FACTOR, 1]] : [])] as const) {
    const c: { seconds: number }[] = [];
    const one: { seconds: number; peakMb: number }[] = [];
    for (let i = 0; i < rounds; i++) {
      c.push(await cToolsCase(rows));
      one.push(await inboxdCase(rows));
    }
    const base = report('C tools (sha256sum+psql \\copy)', rows, c);
    report('inboxd, one instance', rows, one, base);
    if (rows === ROWS && TWO) {
      const two = await twoInstances(rows);
      report('inboxd, two instances, two partners', rows * 2, [two]);
    }
    console.log('');
  }
} finally {
  pg.destroy();
}
