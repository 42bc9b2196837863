// npm run soak -- --postgres [KILLS=30] [--instances 3] [--partners 8]
//
// The kill campaign for several instances on one PostgreSQL (started here, helpers/postgres.ts) and
// one partner root: batches of deliveries for every partner while, every few seconds, one instance is
// killed (SIGKILL, or now and then SIGTERM) and started again. At the end every delivery must be
// applied exactly once, answered once, in sequence order per partner. Prints kills, deliveries, lost,
// doubled and how long takeovers took; exits 1 when something was found.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FLOW, type DaemonProcess, msg, spawnDaemon, until } from '../test/helpers/daemon.js';
import { Fixture, nameFor, rowsOf } from '../test/helpers/fixture.js';
import { startPostgres } from '../test/helpers/postgres.js';

const args = process.argv.slice(2).filter((a) => a !== '--postgres');
const option = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const positional = args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
const kills = Number(positional[0] ?? 30);
const instances = option('instances', 3);
const partners = Array.from({ length: option('partners', 8) }, (_, i) => `p${String(i).padStart(2, '0')}`);
const ROWS = 400;

const pg = await startPostgres();
const dir = mkdtempSync(join(tmpdir(), 'inboxd-soak-pg-'));
const fx = new Fixture(dir);
fx.database = pg.url;
await fx.writeConfig({
  config: {
    database: { url: pg.url, lease_ttl: '3s', pool_size: 6 },
    partners: Object.fromEntries(partners.map((p) => [p, { flows: { inventory: { ...FLOW, table: `inv_${p}` } } }])),
    retry_backoff: '1s', sweep: '*/2 * * * * *',
  },
});

const start = () => spawnDaemon(fx.configPath, { cwd: dir });
const running: DaemonProcess[] = Array.from({ length: instances }, start);
const seqs = new Map(partners.map((p) => [p, 0]));
const upload = async () => {
  for (const [i, p] of partners.entries()) {
    const seq = seqs.get(p)! + 1;
    seqs.set(p, seq);
    await fx.makeDelivery({ partner: p, seq, rows: rowsOf(ROWS, i * 100_000 + seq * 1000) });
  }
};
const takeovers: number[] = [];
let sigterms = 0;
const t0 = Date.now();
try {
  for (const d of running) await d.waitFor(msg('inboxd started'), 'started', 60_000);
  for (let k = 0; k < kills; k++) {
    await upload();
    await new Promise((r) => setTimeout(r, 500 + Math.random() * 2500));
    const victim = Math.floor(Math.random() * running.length);
    const old = running[victim]!;
    const held = new Set(old.logs.filter((l) => /lease on partner \S+ taken/.test(String(l.msg))).map((l) => String(l.partner)));
    const term = Math.random() < 0.2;
    const killedAt = Date.now();
    if (term) {
      sigterms++;
      await old.stop('SIGTERM', 60_000);
    } else await old.kill();
    // How long until another instance took one of its partners.
    const others = running.filter((d) => d !== old);
    const taken = await until(() => others.flatMap((d) => d.logs).find((l) => held.has(String(l.partner)) && /lease on partner \S+ taken/.test(String(l.msg)) && Date.parse(String(l.time)) >= killedAt), 'a takeover', 30_000, 50).catch(() => undefined);
    if (taken) takeovers.push(Date.parse(String(taken.time)) - killedAt);
    running[victim] = start();
    await running[victim]!.waitFor(msg('inboxd started'), 'restarted', 60_000);
    process.stdout.write(`kill ${k + 1}/${kills} (${term ? 'SIGTERM' : 'SIGKILL'})\r`);
  }
  const total = [...seqs.values()].reduce((a, b) => a + b, 0);
  const acks = () => partners.reduce((n, p) => n + fx.listDir('outbox', p).filter((f) => f.endsWith('.ack.json')).length, 0);
  await until(() => acks() >= total, `${total} ACKs`, 300_000, 500).catch(() => undefined);
  const problems: string[] = [];
  const accepted = fx.query("SELECT partner, seq, count(*)::int AS n FROM deliveries WHERE outcome = 'accepted' GROUP BY partner, seq");
  const doubled = accepted.filter((r) => Number(r.n) > 1).length + fx.query("SELECT count(*)::int AS n FROM deliveries WHERE outcome = 'duplicate'")[0]!.n;
  let lost = 0;
  for (const p of partners) {
    const n = seqs.get(p)!;
    const applied = fx.query('SELECT seq FROM dedupe WHERE partner = ? ORDER BY seq', p).map((r) => Number(r.seq));
    lost += n - applied.length;
    const order = fx.query("SELECT seq FROM deliveries WHERE partner = ? AND outcome = 'accepted' ORDER BY decided_at", p).map((r) => Number(r.seq));
    if (order.join() !== Array.from({ length: n }, (_, i) => i + 1).join()) problems.push(`${p}: applied in the order ${order.join(',')}`);
    const rows = Number(fx.query(`SELECT count(*)::int AS n FROM inv_${p}`)[0]!.n);
    if (rows !== n * ROWS) problems.push(`${p}: ${rows} rows, expected ${n * ROWS}`);
    const answers = fx.listDir('outbox', p).filter((f) => f.endsWith('.ack.json'));
    if (answers.length !== n || answers.some((f, i) => f !== `${nameFor(i + 1)}.ack.json`)) problems.push(`${p}: ACKs ${answers.join(', ')}`);
    if (fx.listDir('error', p).length) problems.push(`${p}: error/ holds ${fx.listDir('error', p).join(', ')}`);
  }
  takeovers.sort((a, b) => a - b);
  const median = takeovers.length ? takeovers[Math.floor(takeovers.length / 2)] : undefined;
  console.log(`\nsoak on PostgreSQL: ${instances} instances, ${partners.length} partners, ${kills} kills (${kills - sigterms} SIGKILL, ${sigterms} SIGTERM), ${total} deliveries of ${ROWS} rows in ${Math.round((Date.now() - t0) / 1000)} s`);
  console.log(`lost ${lost}, doubled ${doubled}; takeover after a kill: median ${median ?? '-'} ms, max ${takeovers.at(-1) ?? '-'} ms (lease_ttl 3 s)`);
  for (const p of problems) console.log(`PROBLEM ${p}`);
  process.exitCode = lost || doubled || problems.length ? 1 : 0;
} finally {
  await Promise.all(running.map((d) => (d.running ? d.kill() : undefined)));
  pg.destroy();
  if (!process.exitCode) rmSync(dir, { recursive: true, force: true });
  else console.log(`kept for inspection: ${dir}`);
}
