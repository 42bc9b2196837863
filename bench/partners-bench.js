// npm run bench:partners [-- --partners 3000 --seconds 60 --watch true --log debug]
// (--log info: the idle figures as deployed; the sweep times need the debug lines, and are not shown)
// Many partners, mostly idle: the real daemon (`inboxd run`, default sweep schedule, every 30 s) with
// one flow per partner and empty inboxes. Prints how long a sweep of every partner takes (from the
// daemon's `sweep done` lines): the first at start, the scheduled ones (which skip partners found quiet,
// daemon/quiet.ts), and one in full at steady state (every inbox touched after the idle period); the
// daemon's CPU use over the idle period, and its resident memory and open file descriptors at its start
// and end (no growth expected). Then one delivery to one partner, to show the daemon still answers.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const args = Object.fromEntries(process.argv.slice(2).join(' ').split('--').filter(Boolean).map((a) => a.trim().split(/\s+/)));
const PARTNERS = Number(args.partners ?? 3000);
const SECONDS = Number(args.seconds ?? 60);
const WATCH = String(args.watch ?? 'true') === 'true';
const LOG = String(args.log ?? 'debug');
const CLI = new URL('../dist/cli.js', import.meta.url).pathname;
const MAPPING = new URL('../config/mappings/acme-inventory.csv', import.meta.url).pathname;
const TICK = Number(execFileSync('getconf', ['CLK_TCK'])) || 100;

const dir = mkdtempSync(join(tmpdir(), 'inboxd-partners-'));
const ids = Array.from({ length: PARTNERS }, (_, i) => `p${String(i + 1).padStart(4, '0')}`);
for (const id of ids) mkdirSync(join(dir, 'partners', id, 'inbox'), { recursive: true });
const flow = `    flows:\n      inventory:\n        mapping: ${MAPPING}\n        table: inventory\n        key: [sku, warehouse]\n        totals: [qty]\n`;
writeFileSync(join(dir, 'inboxd.yaml'), `root: ${dir}/partners\ndatabase: ${dir}/inboxd.db\nlog_level: ${LOG}\nwatch: ${WATCH}\npartners:\n${ids.map((id) => `  ${id}:\n${flow}`).join('')}`);

/** CPU seconds (user + system), resident MB and open descriptors of a process, from /proc. */
function sample(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const stat = text.slice(text.lastIndexOf(')') + 2).split(' '); // utime and stime are fields 14 and 15
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
  return { cpu: (Number(stat[11]) + Number(stat[12])) / TICK, rss, fds: readdirSync(`/proc/${pid}/fd`).length, at: performance.now() };
}

const daemon = spawn(process.execPath, [CLI, 'run', '--config', join(dir, 'inboxd.yaml')], { stdio: ['ignore', 'pipe', 'inherit'] });
const exited = new Promise((resolve) => daemon.on('exit', resolve));
// Sweeps: a run of `sweep done` lines, one per partner, the run ending with a pause of more than a second.
const sweeps = [];
let current;
let started;
createInterface({ input: daemon.stdout }).on('line', (line) => {
  let l;
  try {
    l = JSON.parse(line);
  } catch {
    return;
  }
  const t = Date.parse(l.time);
  if (l.msg === 'inboxd started') started = t;
  if (l.msg !== 'sweep done') return;
  if (!current || t - current.last > 1000) sweeps.push((current = { first: t, last: t, partners: new Set(), full: new Set() }));
  current.last = t;
  current.partners.add(l.partner);
  if (!l.unchanged) current.full.add(l.partner);
});

try {
  const t0 = performance.now();
  while (LOG === 'debug' ? !sweeps[0] || sweeps[0].partners.size < PARTNERS : !started) {
    if (performance.now() - t0 > 300_000) throw new Error('the first sweep did not end within 5 minutes');
    await sleep(100);
  }
  await sleep(LOG === 'debug' ? 2000 : 10_000);
  const from = sample(daemon.pid);
  await sleep(SECONDS * 1000);
  const to = sample(daemon.pid);
  const cpu = (to.cpu - from.cpu) / ((to.at - from.at) / 1000);

  // A full sweep at steady state: every inbox touched, so that no partner's sweep is skipped as quiet.
  const before = sweeps.length;
  const now = new Date();
  for (const id of ids) utimesSync(join(dir, 'partners', id, 'inbox'), now, now);
  const t1 = performance.now();
  while (!sweeps.slice(before).some((s) => s.full.size >= PARTNERS) && performance.now() - t1 < 90_000) await sleep(100);

  // Still answering: one small delivery to the last partner.
  const inbox = join(dir, 'partners', ids.at(-1), 'inbox');
  const file = 'inventory_20250916T0200Z_001.csv';
  const data = 'SKU,Warehouse,Quantity,UnitCost,Currency,Condition,LastModified\r\nA-1,WH1,5,1.50,EUR,NEW,2025-09-16T02:00:00Z\r\n';
  const sha256 = createHash('sha256').update(data).digest('hex');
  for (const [f, content] of [[file, data], [`${file}.sha256`, `${sha256}  ${file}\n`], [`${file}.manifest.json`, JSON.stringify({ file, records: 1, sums: { qty: 5 }, sha256 })]]) {
    writeFileSync(join(inbox, `${f}.part`), content);
    renameSync(join(inbox, `${f}.part`), join(inbox, f));
  }
  const sent = performance.now();
  const ack = join(dir, 'partners', ids.at(-1), 'outbox', `${file}.ack.json`);
  while (!existsSync(ack) && performance.now() - sent < 30_000) await sleep(5);
  const answered = existsSync(ack) ? `${(performance.now() - sent).toFixed(0)} ms` : 'no ACK within 30 s';

  const span = (s) => `${((s.last - s.first) / 1000).toFixed(2)} s`;
  const whole = sweeps.filter((s) => s.partners.size >= PARTNERS);
  console.log(`${PARTNERS} partners, idle, watcher ${WATCH ? 'on' : 'off'}, sweep every 30 s, log_level ${LOG} (node ${process.version})`);
  if (sweeps[0]) console.log(`  start to first sweep done  ${((sweeps[0].last - started) / 1000).toFixed(2)} s (the first sweep ${span(sweeps[0])}, beside the watcher's start)`);
  if (sweeps[0]) console.log(`  full sweeps               ${whole.filter((s) => s.full.size >= PARTNERS).map(span).join(', ')}`);
  if (sweeps[0]) console.log(`  scheduled, quiet skipped  ${whole.filter((s) => s.full.size < PARTNERS).map(span).join(', ')}`);
  console.log(`  idle CPU over ${SECONDS} s       ${(cpu * 100).toFixed(2)} % of one core (${(to.cpu - from.cpu).toFixed(2)} s)`);
  console.log(`  resident memory           ${from.rss.toFixed(0)} MB -> ${to.rss.toFixed(0)} MB`);
  console.log(`  open file descriptors     ${from.fds} -> ${to.fds}`);
  console.log(`  a delivery to one partner answered in ${answered}`);
} finally {
  daemon.kill('SIGTERM');
  await exited;
  rmSync(dir, { recursive: true, force: true });
}
