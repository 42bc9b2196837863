/**
 * The SIGKILL campaign of issue 3, shared by test/crash-campaign.test.ts (a short one, dozens of kills)
 * and scripts/soak.js (`npm run soak -- 500`). Plain JavaScript, so the soak script runs on the built
 * daemon without a TypeScript loader.
 *
 * One campaign: a plan of uploads (several partners and flows; small files, large ones, broken ones
 * that get rejected, identical resends, conflicting resends, sequences sent out of order) is fed to two
 * fresh trees. The clean tree has one daemon that runs throughout. The crash tree has a daemon that is
 * killed with SIGKILL at random moments (right after spawn, during startup recovery, just after a
 * delivery was claimed, or anywhere) and restarted each time. At the end both are drained and compared:
 * target tables (without _delivery_id/_updated_at), the dedupe table, the decided deliveries, and the
 * names, contents and modes of every file in outbox/, archive/ and error/ (delivery ids and processing
 * times masked) must be exactly equal; every upload must be decided exactly once, no ACK written twice,
 * and the inboxes and working directories must be empty.
 *
 * The outcome must not depend on timing, only on the order of uploads. So an upload that reuses a file
 * name or a sequence (a resend, a conflict, a correction, an older sequence after a newer one) is made
 * only once every earlier upload of its flow has been decided: "gated". Everything else is uploaded
 * while the daemon works, and its flow's sequence order decides.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, promises as fsp, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

const MAPPING = `ours,partner,type,required,pii,notes
sku,SKU,string:64,yes,,
warehouse,Warehouse,string:16,yes,,
qty,Quantity,integer,yes,,control total
unit_cost,UnitCost,amount:2,,,
updated_at,LastModified,datetime,yes,,
`;
const HEADER = 'SKU,Warehouse,Quantity,UnitCost,LastModified\n';

/** The flows fed: three partners, one with two flows. */
export const STREAMS = [
  { partner: 'acme', flow: 'inventory', table: 'acme_inventory' },
  { partner: 'acme', flow: 'prices', table: 'acme_prices' },
  { partner: 'beta', flow: 'inventory', table: 'beta_inventory' },
  { partner: 'gamma', flow: 'stock', table: 'gamma_stock' },
];
const PARTNERS = [...new Set(STREAMS.map((s) => s.partner))];
const DELIVERY_ID = /\d{8}T\d{6}Z-[0-9a-f]{6}/g;
const HAS_DELIVERY_ID = /\d{8}T\d{6}Z-[0-9a-f]{6}/;

/** mulberry32: a small seeded generator, so a failing campaign can be replayed with its seed. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The uploads, in order. Kinds: ok, large, corrupt (checksum), malformed (CSV), totals (record count),
 * rowerr (an invalid row), resend (the same bytes as an earlier upload), conflict (an earlier sequence,
 * other content), fix (a corrected resend of a rejected one), late (an older sequence sent after a newer one).
 */
export function makePlan(count, rand, opts = {}) {
  const largeShare = opts.largeShare ?? 0.06;
  const streams = STREAMS.map((s) => ({ ...s, next: 1, sent: [] }));
  const uploads = [];
  const add = (s, u) => {
    const up = { idx: uploads.length, partner: s.partner, flow: s.flow, prior: s.sent.length, gated: false, variant: 0, ...u };
    up.name = `${s.partner}_${s.flow}_20250916T020000Z_${String(up.seq).padStart(6, '0')}.csv`;
    uploads.push(up);
    s.sent.push(up);
    return up;
  };
  while (uploads.length < count) {
    const s = streams[Math.floor(rand() * streams.length)];
    const r = rand();
    const earlier = s.sent.length ? s.sent[Math.floor(rand() * s.sent.length)] : undefined;
    const rows = 1 + Math.floor(rand() * 40);
    if (r < largeShare) {
      const [lo, hi] = opts.largeRows ?? [40_000, 100_000];
      add(s, { kind: 'large', seq: s.next++, rows: lo + Math.floor(rand() * (hi - lo)) });
    } else if (r < largeShare + 0.05) {
      const bad = add(s, { kind: 'corrupt', seq: s.next++, rows });
      if (rand() < 0.6) add(s, { kind: 'fix', seq: bad.seq, rows, gated: true });
    } else if (r < largeShare + 0.09) add(s, { kind: 'malformed', seq: s.next++, rows });
    else if (r < largeShare + 0.13) add(s, { kind: 'totals', seq: s.next++, rows });
    else if (r < largeShare + 0.17) add(s, { kind: 'rowerr', seq: s.next++, rows });
    else if (r < largeShare + 0.24 && earlier) add(s, { ...pickContent(earlier), kind: 'resend', gated: true });
    else if (r < largeShare + 0.28 && earlier) add(s, { kind: 'conflict', seq: earlier.seq, rows, variant: 1 + uploads.length, gated: true });
    else if (r < largeShare + 0.32) {
      const skipped = s.next;
      s.next += 2;
      add(s, { kind: 'ok', seq: skipped + 1, rows });
      add(s, { kind: 'late', seq: skipped, rows, gated: true });
    } else add(s, { kind: 'ok', seq: s.next++, rows });
  }
  return uploads.slice(0, count);
}

/** A resend carries the same bytes as the upload it repeats. */
function pickContent(u) {
  return { seq: u.seq, rows: u.rows, variant: u.variant, contentOf: u.contentOf ?? u.kind, sameAs: u.sameAs ?? u.idx };
}

function config(dir) {
  const flows = (partner) => Object.fromEntries(STREAMS.filter((s) => s.partner === partner).map((s) => [s.flow, {
    mapping: 'mapping.csv', table: s.table, key: ['sku', 'warehouse'], totals: ['qty'], sequence_gap: 'warn',
  }]));
  const cfg = {
    root: 'partners', database: 'var/inboxd.db', settle_time: '0s', incomplete_after: '1h', log_level: 'info',
    max_parallel: 2, watch: true, sweep: '*/2 * * * * *', shutdown_timeout: '10s',
    partners: Object.fromEntries(PARTNERS.map((p) => [p, { flows: flows(p) }])),
  };
  // YAML is a superset of JSON.
  return fsp.writeFile(join(dir, 'inboxd.yaml'), `${JSON.stringify(cfg, null, 2)}\n`);
}

/** Writes an upload's files once into `srcDir`; both trees get copies. */
async function build(srcDir, u) {
  const dir = join(srcDir, String(u.idx));
  await fsp.mkdir(dir, { recursive: true });
  const data = join(dir, u.name);
  const kind = u.contentOf ?? u.kind;
  const out = createWriteStream(data);
  const hash = createHash('sha256');
  let qty = 0;
  let buf = HEADER;
  const flush = async () => {
    hash.update(buf);
    if (!out.write(buf)) await once(out, 'drain');
    buf = '';
  };
  const large = kind === 'large';
  for (let i = 0; i < u.rows; i++) {
    // Small deliveries share a pool of keys, so later ones update earlier rows and order matters.
    const sku = large ? `L${u.seq}-${i}` : `K${(u.seq * 7 + i * 13) % 150}`;
    const q = (u.seq * 31 + i * 17 + (u.variant ?? 0) * 7) % 1000;
    qty += q;
    const quantity = kind === 'rowerr' && i === u.rows - 1 ? 'many' : String(q);
    buf += `${sku},W${i % 3},${quantity},${q}.${String(i % 100).padStart(2, '0')},2025-09-16T0${i % 10}:00:00Z\n`;
    if (kind === 'malformed' && i === Math.floor(u.rows / 2)) buf += `"${sku}-broken,W1,1,1.00,2025-09-16T00:00:00Z\n`;
    if (buf.length > 1 << 16) await flush();
  }
  await flush();
  out.end();
  await once(out, 'finish');
  const hex = hash.digest('hex');
  if (kind === 'corrupt') {
    // A damaged transfer: one byte differs from what the sidecar and the manifest were made of.
    const bytes = await fsp.readFile(data);
    const at = bytes.length - 30;
    bytes[at] = bytes[at] === 0x31 ? 0x32 : 0x31;
    await fsp.writeFile(data, bytes);
  }
  const records = u.rows + (kind === 'totals' ? 1 : 0) + (kind === 'malformed' ? 1 : 0);
  await fsp.writeFile(join(dir, `${u.name}.sha256`), `${hex}  ${u.name}\n`);
  await fsp.writeFile(join(dir, `${u.name}.manifest.json`), `${JSON.stringify({ file: u.name, records, sums: { qty }, generated_at: '2025-09-16T02:00:00Z', sha256: hex, schema_version: 1 })}\n`);
  return [u.name, `${u.name}.sha256`, `${u.name}.manifest.json`].map((f) => join(dir, f));
}

class Tree {
  constructor(dir) {
    this.dir = dir;
    this.root = join(dir, 'partners');
    this.database = join(dir, 'var', 'inboxd.db');
    this.configPath = join(dir, 'inboxd.yaml');
    this.logFile = join(dir, 'daemon.log');
  }

  async init() {
    await fsp.mkdir(this.dir, { recursive: true });
    await fsp.writeFile(join(this.dir, 'mapping.csv'), MAPPING);
    await config(this.dir);
    this.log = createWriteStream(this.logFile, { flags: 'a' });
  }

  inbox(partner) {
    return join(this.root, partner, 'inbox');
  }

  /** As a partner uploads: each file under a temporary name, then renamed. */
  async upload(u, files) {
    const inbox = this.inbox(u.partner);
    await fsp.mkdir(inbox, { recursive: true });
    for (const f of files) {
      const name = f.slice(f.lastIndexOf('/') + 1);
      await fsp.copyFile(f, join(inbox, `${name}.part`));
      await fsp.rename(join(inbox, `${name}.part`), join(inbox, name));
    }
  }

  query(sql, ...params) {
    if (!existsSync(this.database)) return undefined;
    let db;
    try {
      db = new Database(this.database, { readonly: true, fileMustExist: true });
      return db.prepare(sql).all(...params);
    } catch {
      return undefined; // being created, or recovering after a kill: ask again
    } finally {
      db?.close();
    }
  }

  decided(partner, flow) {
    return this.query('SELECT count(*) AS n FROM deliveries WHERE partner = ? AND flow = ?', partner, flow)?.[0]?.n ?? 0;
  }

  /** Everything uploaded decided and answered, nothing left in an inbox or a working directory. */
  converged(uploads) {
    const r = this.query('SELECT count(*) AS n, sum(answered_at IS NULL) AS open FROM deliveries')?.[0];
    if (!r || r.n !== uploads || r.open) return false;
    return PARTNERS.every((p) => ls(this.inbox(p)).length === 0 && ls(join(this.root, '.work', p)).length === 0);
  }

  spawn() {
    return new Daemon(this);
  }
}

const ls = (dir) => (existsSync(dir) ? readdirSync(dir) : []);

class Daemon {
  constructor(tree) {
    this.tree = tree;
    this.errors = [];
    this.waiters = [];
    this.lines = 0;
    this.child = spawn(process.execPath, [CLI, 'run', '--config', tree.configPath], { cwd: tree.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    tree.log.write(`--- spawned pid ${this.child.pid} at ${new Date().toISOString()}\n`);
    let rest = '';
    this.stderr = '';
    this.child.stdout.setEncoding('utf8').on('data', (d) => {
      const parts = (rest + d).split('\n');
      rest = parts.pop();
      for (const line of parts) this.onLine(line);
    });
    this.child.stderr.setEncoding('utf8').on('data', (d) => {
      this.stderr += d;
      tree.log.write(`[stderr] ${d}`);
    });
    this.exited = new Promise((resolve) => this.child.on('close', (code, signal) => {
      this.exit = { code, signal };
      tree.log.write(`--- pid ${this.child.pid} exited ${code ?? signal}\n`);
      this.wake(undefined);
      resolve(this.exit);
    }));
  }

  get running() {
    return this.exit === undefined;
  }

  onLine(line) {
    if (!line) return;
    this.tree.log.write(`${line}\n`);
    this.lines++;
    let l;
    try {
      l = JSON.parse(line);
    } catch {
      this.errors.push({ msg: `not JSON: ${line.slice(0, 200)}` });
      return;
    }
    if (l.level === 'error' || l.level === 'fatal') this.errors.push(l);
    this.wake(l);
  }

  wake(l) {
    this.waiters = this.waiters.filter((w) => !w(l));
  }

  /** Resolves with the first matching line to come, or undefined after `ms` or at exit. */
  next(match, ms) {
    return new Promise((resolve) => {
      const t = setTimeout(() => done(undefined), ms);
      const done = (v) => {
        clearTimeout(t);
        resolve(v);
        return true;
      };
      if (!this.running) return done(undefined);
      this.waiters.push((l) => (l === undefined ? done(undefined) : match(l) ? done(l) : false));
    });
  }

  kill(signal = 'SIGKILL') {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }
}

async function until(fn, what, timeoutMs, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * Feeds the plan to a tree. With `progress` (the crash tree) the uploads are spread over the first 70%
 * of the kills: upload i waits until that share of them is done. So crashes land among deliveries from
 * the first to the last, and there is mostly a backlog for each short-lived daemon to work on.
 */
async function feed(tree, plan, sources, { rand, progress, stop }) {
  for (const u of plan) {
    if (stop.reason) return;
    if (progress) await until(() => stop.reason || progress() >= (0.7 * u.idx) / plan.length, 'the kills to catch up', 3_600_000, 50);
    if (u.gated) await until(() => stop.reason || tree.decided(u.partner, u.flow) >= u.prior, `the flow ${u.partner}/${u.flow} to decide ${u.prior} uploads before ${u.kind} #${u.idx}`, 600_000);
    if (stop.reason) return;
    await tree.upload(u, sources[u.sameAs ?? u.idx]);
    if (rand) await sleep(rand() * 150);
  }
}

/**
 * How long the crash tree's daemon lives before the next SIGKILL, and which moment it aims at: right
 * after spawn (startup recovery), just after a delivery was claimed (mid-stream, commit, answer), any
 * time while running, or now and then a longer life, so that large files can finish between kills.
 */
async function aim(d, rand) {
  const r = rand();
  if (r < 0.1) {
    await sleep(rand() * 400);
    return 'startup';
  }
  if (r < 0.45) {
    const hit = await d.next((l) => l.msg === 'delivery claimed' || /^recovered/.test(String(l.msg)), 3_000);
    await sleep(rand() * (hit ? 300 : 0));
    return hit ? 'after-claim' : 'idle';
  }
  const started = await d.next((l) => l.msg === 'inboxd started', 30_000);
  await sleep(r < 0.85 ? 100 + rand() * 2_000 : 3_000 + rand() * 6_000);
  return !started ? 'slow-start' : r < 0.85 ? 'running' : 'long';
}

export async function runCampaign(opts) {
  const t0 = Date.now();
  const kills = opts.kills ?? 40;
  const count = opts.uploads ?? Math.ceil(kills * 1.25);
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
  const say = opts.log ?? (() => {});
  const plan = makePlan(count, rng(seed), opts);
  // decidedUnderFire: decisions made by daemons that were later killed (the rest by the final, clean start).
  const result = { seed, dir: opts.dir, kills: 0, uploads: plan.length, decidedUnderFire: 0, kinds: {}, aims: {}, outcomes: {}, errors: [], problems: [], ms: 0 };
  for (const u of plan) result.kinds[u.kind] = (result.kinds[u.kind] ?? 0) + 1;
  const sources = {};
  for (const u of plan) if (u.sameAs === undefined) sources[u.idx] = await build(join(opts.dir, 'src'), u);
  const clean = new Tree(join(opts.dir, 'clean'));
  const crash = new Tree(join(opts.dir, 'crash'));
  await clean.init();
  await crash.init();
  say(`seed ${seed}: ${plan.length} uploads (${Object.entries(result.kinds).map(([k, n]) => `${n} ${k}`).join(', ')}), ${kills} kills`);

  const stop = {};
  const drainMs = opts.drainMs ?? 600_000;
  const cleanRun = (async () => {
    const d = clean.spawn();
    try {
      await feed(clean, plan, sources, { stop });
      await until(() => clean.converged(plan.length) || !d.running, 'the clean run to finish', drainMs, 100);
      if (d.lines === 0) await d.next((l) => l.msg === 'inboxd started', 30_000);
      if (!d.running) result.problems.push(`clean run: the daemon exited on its own (${d.exit.code ?? d.exit.signal}): ${d.stderr.slice(-500)}`);
      const exit = await d.kill('SIGTERM');
      if (exit.code !== 0) result.problems.push(`clean run: SIGTERM ended the daemon with ${exit.code ?? exit.signal}, not 0`);
      result.errors.push(...d.errors.map((e) => ({ run: 'clean', ...e })));
    } finally {
      await d.kill();
    }
  })();

  const rand = rng(seed ^ 0x5eed);
  const crashRun = (async () => {
    let current;
    const feeding = feed(crash, plan, sources, { rand, progress: () => result.kills / kills, stop }).catch((err) => {
      stop.reason = err;
    });
    try {
      while (result.kills < kills && !stop.reason) {
        const d = (current = crash.spawn());
        const at = await aim(d, rand);
        if (!d.running) {
          result.problems.push(`crash run: the daemon exited on its own (${d.exit.code ?? d.exit.signal}) after ${result.kills} kills: ${d.stderr.slice(-800)}`);
          stop.reason ??= new Error('daemon died');
        }
        await d.kill('SIGKILL');
        result.errors.push(...d.errors.map((e) => ({ run: 'crash', kill: result.kills, ...e })));
        result.kills++;
        result.aims[at] = (result.aims[at] ?? 0) + 1;
        if (result.kills % 25 === 0) say(`  ${result.kills} kills, ${crash.query('SELECT count(*) AS n FROM deliveries')?.[0]?.n ?? '?'}/${plan.length} decided`);
      }
      result.decidedUnderFire = crash.query('SELECT count(*) AS n FROM deliveries')?.[0]?.n ?? 0;
      // The rest without kills: the last start must finish everything and stop cleanly.
      const d = (current = crash.spawn());
      await feeding;
      if (!stop.reason) await until(() => crash.converged(plan.length) || !d.running, 'the crash run to converge', drainMs, 100);
      if (!d.running) result.problems.push(`crash run: the final daemon exited on its own (${d.exit.code ?? d.exit.signal}): ${d.stderr.slice(-500)}`);
      // A SIGTERM before Node has even loaded the daemon ends it by the default action: wait for the start.
      if (d.lines === 0) await d.next((l) => l.msg === 'inboxd started', 30_000);
      const exit = await d.kill('SIGTERM');
      if (exit.code !== 0) result.problems.push(`crash run: SIGTERM ended the final daemon with ${exit.code ?? exit.signal}, not 0`);
      result.errors.push(...d.errors.map((e) => ({ run: 'crash-final', ...e })));
    } finally {
      await current?.kill();
    }
  })();

  const settled = await Promise.allSettled([cleanRun, crashRun]);
  for (const s of settled) if (s.status === 'rejected') result.problems.push(String(s.reason?.message ?? s.reason));
  if (stop.reason) result.problems.push(`stopped early: ${stop.reason.message ?? stop.reason}`);
  clean.log.end();
  crash.log.end();
  // Compared even after a failure above: the differences say what went wrong.
  if (existsSync(clean.database) && existsSync(crash.database)) result.problems.push(...(await compare(clean, crash, plan.length)));
  for (const r of crash.query('SELECT outcome, count(*) AS n FROM deliveries GROUP BY outcome') ?? []) result.outcomes[r.outcome] = r.n;
  result.ms = Date.now() - t0;
  return result;
}

/** Every difference between the crash tree and the clean tree, and every leftover, as sentences. */
export async function compare(clean, crash, uploads) {
  const problems = [];
  const a = new Database(crash.database, { readonly: true, fileMustExist: true });
  try {
    a.prepare('ATTACH DATABASE ? AS clean').run(clean.database);
    for (const { table } of STREAMS) {
      const cols = a.prepare(`PRAGMA main.table_info("${table}")`).all().map((c) => `"${c.name}"`).filter((c) => c !== '"_delivery_id"' && c !== '"_updated_at"').join(', ');
      const n = (db) => a.prepare(`SELECT count(*) AS n FROM ${db}."${table}"`).get().n;
      const only = (x, y) => a.prepare(`SELECT count(*) AS n FROM (SELECT ${cols} FROM ${x}."${table}" EXCEPT SELECT ${cols} FROM ${y}."${table}")`).get().n;
      const [rows, cleanRows, extra, missing] = [n('main'), n('clean'), only('main', 'clean'), only('clean', 'main')];
      if (rows !== cleanRows || extra || missing) problems.push(`table ${table}: ${rows} rows, clean run ${cleanRows}; ${extra} rows only after the crashes, ${missing} only in the clean run`);
    }
    const setDiff = (what, sql) => {
      const x = a.prepare(sql.replaceAll('$db', 'main')).all().map((r) => JSON.stringify(r));
      const y = a.prepare(sql.replaceAll('$db', 'clean')).all().map((r) => JSON.stringify(r));
      const d = diff(x, y);
      if (d) problems.push(`${what} differ: ${d}`);
    };
    setDiff('dedupe rows', 'SELECT partner, flow, seq, sha256 FROM $db.dedupe ORDER BY 1, 2, 3, 4');
    setDiff('decided deliveries', 'SELECT partner, flow, file, seq, sha256, outcome, code FROM $db.deliveries ORDER BY 1, 2, 3, 4, 5, 6, 7');
    const counts = a.prepare('SELECT count(*) AS n, sum(answered_at IS NULL) AS open FROM main.deliveries').get();
    if (counts.n !== uploads) problems.push(`${uploads} uploads but ${counts.n} decisions after the crashes`);
    if (counts.open) problems.push(`${counts.open} deliveries decided but never answered`);
    const twice = a.prepare("SELECT partner, flow, seq, count(*) AS n FROM main.deliveries WHERE outcome = 'accepted' GROUP BY 1, 2, 3 HAVING n > 1").all();
    if (twice.length) problems.push(`applied twice: ${JSON.stringify(twice)}`);
  } finally {
    a.close();
  }
  const [x, y] = [await files(crash), await files(clean)];
  const d = diff(x, y);
  if (d) problems.push(`partner files differ: ${d}`);
  for (const p of PARTNERS) {
    const suffixed = ls(join(crash.root, p, 'outbox')).filter((n) => HAS_DELIVERY_ID.test(n));
    if (suffixed.length) problems.push(`${p}/outbox has suffixed answers (an ACK written twice?): ${suffixed.join(', ')}`);
    for (const [what, dir] of [['inbox', crash.inbox(p)], ['working directory', join(crash.root, '.work', p)]]) {
      const left = ls(dir);
      if (left.length) problems.push(`${p}: left in the ${what}: ${left.join(', ')}`);
    }
  }
  return problems;
}

/** `partner/dir/name mode sha256` for every answer and original, with delivery ids and times masked. */
async function files(tree) {
  const out = [];
  for (const p of PARTNERS) {
    for (const dir of ['outbox', 'archive', 'error']) {
      const base = join(tree.root, p, dir);
      for (const name of ls(base)) {
        const path = join(base, name);
        const st = await fsp.lstat(path);
        let content = await fsp.readFile(path);
        if (name.endsWith('.json')) {
          const j = JSON.parse(content.toString('utf8'));
          delete j.delivery_id;
          delete j.processed_at;
          content = Buffer.from(JSON.stringify(j).replace(DELIVERY_ID, '<id>'));
        }
        out.push(`${p}/${dir}/${name.replace(DELIVERY_ID, '<id>')} ${(st.mode & 0o777).toString(8)} ${createHash('sha256').update(content).digest('hex').slice(0, 16)}`);
      }
    }
  }
  return out.sort();
}

/** Multiset difference of two sorted string lists, for a message; '' when equal. */
function diff(x, y) {
  const count = (l) => l.reduce((m, s) => m.set(s, (m.get(s) ?? 0) + 1), new Map());
  const [cx, cy] = [count(x), count(y)];
  const only = (c1, c2) => [...c1].flatMap(([s, n]) => Array(Math.max(0, n - (c2.get(s) ?? 0))).fill(s));
  const [ox, oy] = [only(cx, cy), only(cy, cx)];
  if (!ox.length && !oy.length) return '';
  const show = (l) => `${l.slice(0, 8).join('; ')}${l.length > 8 ? `; … ${l.length - 8} more` : ''}`;
  return `only after the crashes (${ox.length}): ${show(ox)} | only in the clean run (${oy.length}): ${show(oy)}`;
}
