// npm run bench [-- --rows 1000000 --factor 10 --runs 3 --cases c,plain,pgp]
// (--factor 0: the base size only; --cases: a subset, for a quicker look at one of them)
// Generates inventory deliveries (CSV + sidecar + manifest), ingests each end to end with the real
// CLI, and prints rows per second and peak memory; then times the plain C-tools way of loading the
// same file (sha256sum, then sqlite3 importing into a staging table and upserting into the same keyed
// WITHOUT ROWID table inboxd writes, in one transaction) and prints inboxd's time as a ratio of it.
// A shared machine's speed drifts from minute to minute, so the cases take turns, `runs` rounds of
// them at the base size (one round at the larger size), and each prints its median.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { writeRows } from './rows.js';

const args = Object.fromEntries(process.argv.slice(2).join(' ').split('--').filter(Boolean).map((a) => a.trim().split(/\s+/)));
const ROWS = Number(args.rows ?? 1_000_000);
const FACTOR = Number(args.factor ?? 10);
const RUNS = Number(args.runs ?? 3);
const CASES = new Set(String(args.cases ?? 'c,plain,pgp').split(','));
const CLI = new URL('../dist/cli.js', import.meta.url).pathname;
const MAPPING = new URL('../config/mappings/acme-inventory.csv', import.meta.url).pathname;
const GNUPGHOME = mkdtempSync(join(tmpdir(), 'inboxd-bench-gpg-'));
const gpg = (...a) => execFileSync('gpg', ['--batch', '--yes', '--quiet', '--pinentry-mode', 'loopback', '--passphrase', '', '--trust-model', 'always', ...a], { env: { ...process.env, GNUPGHOME }, maxBuffer: 1 << 26 });

/** Our key (ed25519/cv25519) and the partner's, made by gpg as a partner would. */
let keysMade = false;
function makeKeys(dir) {
  if (!keysMade) makeGpgKeys();
  keysMade = true;
  writeFileSync(join(dir, 'ours.asc'), gpg('--armor', '--export-secret-keys', '<inboxd@bench>'));
  writeFileSync(join(dir, 'partner.asc'), gpg('--armor', '--export', '<partner@bench>'));
}

function makeGpgKeys() {
  gpg('--quick-gen-key', 'inboxd@bench', 'ed25519', 'sign', 'never');
  gpg('--quick-add-key', String(gpg('--with-colons', '--list-keys', '<inboxd@bench>')).split('\n').find((l) => l.startsWith('fpr:')).split(':')[9], 'cv25519', 'encr', 'never');
  gpg('--quick-gen-key', 'partner@bench', 'ed25519', 'sign', 'never');
}

function config(dir, encrypted) {
  const pgp = encrypted ? `pgp:\n  keys: [${dir}/ours.asc]\n  max_decompressed_size: 100GiB\n` : '';
  const partnerPgp = encrypted ? `    pgp:\n      verification_keys: [${dir}/partner.asc]\n` : '';
  const yaml = `root: ${dir}/partners\ndatabase: ${dir}/inboxd.db\nsettle_time: 0s\nlog_level: warn\n${pgp}partners:\n  acme:\n${partnerPgp}    flows:\n      inventory:\n        mapping: ${MAPPING}\n        table: inventory\n        key: [sku, warehouse]\n        totals: [qty]\n`;
  writeFileSync(join(dir, 'inboxd.yaml'), yaml);
  return join(dir, 'inboxd.yaml');
}

/** Runs a command, sampling its peak resident memory (VmHWM) from /proc. */
async function measure(cmd, argv, opts = {}) {
  const start = process.hrtime.bigint();
  const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'inherit'], ...opts });
  let peakKb = 0;
  const sample = () => {
    try {
      const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) peakKb = Math.max(peakKb, Number(m[1]));
    } catch {}
  };
  const timer = setInterval(sample, 20);
  const [code] = await once(child, 'exit');
  clearInterval(timer);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (code !== 0) throw new Error(`${cmd} ${argv.join(' ')} exited ${code}`);
  return { seconds, peakMb: peakKb / 1024 };
}

/** Generates a delivery, ingests it with the real CLI, checks the row count. Encrypted: gpg --sign --encrypt. */
async function inboxdCase(rows, encrypted = false) {
  const dir = mkdtempSync(join(tmpdir(), 'inboxd-bench-'));
  const inbox = join(dir, 'partners', 'acme', 'inbox');
  mkdirSync(inbox, { recursive: true });
  let file = 'inventory_20250916T0200Z_001.csv';
  const qty = await writeRows(join(dir, file), rows);
  if (encrypted) {
    makeKeys(dir);
    gpg('--compress-algo', 'zlib', '-u', '<partner@bench>', '-r', '<inboxd@bench>', '--sign', '--encrypt', '-o', join(dir, `${file}.pgp`), join(dir, file));
    rmSync(join(dir, file));
    file = `${file}.pgp`;
  }
  const sha256 = execFileSync('sha256sum', [join(dir, file)]).toString().slice(0, 64);
  writeFileSync(join(inbox, `${file}.sha256`), `${sha256}  ${file}\n`);
  writeFileSync(join(inbox, `${file}.manifest.json`), JSON.stringify({ file, records: rows, sums: { qty }, sha256 }));
  const cfg = config(dir, encrypted);
  execFileSync('mv', [join(dir, file), join(inbox, file)]);
  const r = await measure(process.execPath, [CLI, 'run', '--once', '--config', cfg]);
  const count = execFileSync('sqlite3', [join(dir, 'inboxd.db'), 'SELECT count(*) FROM inventory']).toString().trim();
  if (Number(count) !== rows) throw new Error(`expected ${rows} rows, found ${count}`);
  return { ...r, dir };
}

async function cToolsCase(rows) {
  const dir = mkdtempSync(join(tmpdir(), 'inboxd-bench-c-'));
  const data = join(dir, 'data.csv');
  await writeRows(data, rows);
  // The target table as inboxd makes it (16 KB pages, WITHOUT ROWID, its two bookkeeping columns), so the
  // ratio compares like with like.
  const sql = `
PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
CREATE TABLE inventory (sku TEXT NOT NULL, warehouse TEXT NOT NULL, qty INTEGER, unit_cost INTEGER, currency TEXT, condition TEXT, updated_at TEXT, _delivery_id TEXT NOT NULL, _updated_at TEXT NOT NULL, PRIMARY KEY (sku, warehouse)) WITHOUT ROWID;
CREATE TEMP TABLE staging (sku, warehouse, qty, unit_cost, currency, condition, updated_at);
.mode csv
.import --skip 1 ${data} staging
BEGIN;
INSERT INTO inventory SELECT *, 'd1', '2025-09-16T02:00:00Z' FROM staging WHERE true ON CONFLICT (sku, warehouse) DO UPDATE SET qty = excluded.qty, unit_cost = excluded.unit_cost, currency = excluded.currency, condition = excluded.condition, updated_at = excluded.updated_at, _delivery_id = excluded._delivery_id, _updated_at = excluded._updated_at;
COMMIT;
`;
  writeFileSync(join(dir, 'load.sql'), sql);
  const start = process.hrtime.bigint();
  execFileSync('sha256sum', [data], { stdio: 'ignore' });
  execFileSync('sh', ['-c', `sqlite3 ${dir}/c.db < ${dir}/load.sql`], { stdio: ['ignore', 'ignore', 'inherit'] });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  rmSync(dir, { recursive: true, force: true });
  return { seconds };
}

const fmt = (n) => Math.round(n).toLocaleString('en-US');
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
function report(label, rows, runs, base) {
  const seconds = median(runs.map((r) => r.seconds));
  const peak = runs.some((r) => r.peakMb) ? `  peak ${median(runs.map((r) => r.peakMb)).toFixed(0).padStart(5)} MB` : '';
  const ratio = base ? `  ratio to C tools ${(seconds / base).toFixed(2)}` : '';
  const each = runs.length > 1 ? `  (${runs.map((r) => r.seconds.toFixed(2)).join(', ')})` : '';
  console.log(`${label.padEnd(28)} ${fmt(rows).padStart(11)} rows  ${seconds.toFixed(2).padStart(7)} s  ${fmt(rows / seconds).padStart(10)} rows/s${peak}${ratio}${each}`);
  return seconds;
}

console.log(`inboxd bench: node ${process.version}, ${ROWS} rows (median of ${RUNS} rounds)${FACTOR > 0 ? ` and ${ROWS * FACTOR} rows` : ''}\n`);
for (const [rows, rounds] of FACTOR > 0 ? [[ROWS, RUNS], [ROWS * FACTOR, 1]] : [[ROWS, RUNS]]) {
  const c = [];
  const plain = [];
  const enc = [];
  for (let i = 0; i < rounds; i++) {
    if (CASES.has('c')) c.push(await cToolsCase(rows));
    for (const [list, encrypted] of [[plain, false], [enc, true]]) {
      if (!CASES.has(encrypted ? 'pgp' : 'plain')) continue;
      const r = await inboxdCase(rows, encrypted);
      rmSync(r.dir, { recursive: true, force: true });
      list.push(r);
    }
  }
  const base = c.length ? report('C tools (sha256sum+sqlite3)', rows, c) : undefined;
  if (plain.length) report('inboxd plain CSV', rows, plain, base);
  if (enc.length) report('inboxd signed+encrypted', rows, enc, base);
  console.log('');
}
// gpg starts an agent per home directory: stop it before removing its home.
try { execFileSync('gpgconf', ['--kill', 'gpg-agent'], { env: { ...process.env, GNUPGHOME } }); } catch {}
rmSync(GNUPGHOME, { recursive: true, force: true });
