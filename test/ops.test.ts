/**
 * Issue 6, operations: every command driven on a database made by real ingestion runs (the CLI as a
 * process: `run --once`, and the daemon for late windows and metrics), asserting its --json output and
 * the key words of its terminal form; replay after a mapping fix; prune; the check dry run.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { databaseBytes } from './helpers/backend.js';
import { describe, expect, it } from 'vitest';
import { CLI, csvLine, type Fixture, fixture, HEADER, MAPPING, nameFor, row, rowsOf, runCli, sha256, SLOW } from './helpers/fixture.js';
import { Gpg } from './helpers/gpg.js';

const ops = (fx: Fixture, ...args: string[]) => runCli([...args, '--config', fx.configPath], { cwd: fx.dir });
const json = (r: { stdout: string }) => JSON.parse(r.stdout);
const DAY = 86_400_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The daemon as a child process, its JSON log lines collected. */
class DaemonRun {
  readonly logs: Record<string, any>[] = [];
  private buffered = '';
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      const lines = (this.buffered + d).split('\n');
      this.buffered = lines.pop()!;
      for (const l of lines) if (l.trim()) this.logs.push(JSON.parse(l));
    });
    child.stderr!.resume();
    this.exited = new Promise((r) => child.on('close', (code) => r(code)));
  }

  static start(fx: Fixture): DaemonRun {
    return new DaemonRun(spawn(process.execPath, [CLI, 'run', '--config', fx.configPath], { cwd: fx.dir, stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  async waitFor(match: (l: Record<string, any>) => boolean, what: string, timeoutMs = 30_000): Promise<Record<string, any>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.logs.find(match);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last lines:\n${this.logs.slice(-10).map((l) => JSON.stringify(l)).join('\n')}`);
      await sleep(50);
    }
  }

  async stop(): Promise<number | null> {
    this.child.kill('SIGTERM');
    return this.exited;
  }
}

/** A window opening `inMs` from now (whole seconds, UTC), once a year: the daemon judges it at its close. */
function windowSoon(inMs: number, durationS: number): { cron: string; duration: string; timezone: string } {
  const opens = new Date(Math.ceil((Date.now() + inMs) / 1000) * 1000);
  return { cron: `${opens.getUTCSeconds()} ${opens.getUTCMinutes()} ${opens.getUTCHours()} ${opens.getUTCDate()} ${opens.getUTCMonth() + 1} *`, duration: `${durationS}s`, timezone: 'UTC' };
}

/** Prometheus text -> the value of one series. */
function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',').filter(Boolean);
    if (want.every((w) => have.includes(w)) && have.length === want.length) return Number(m[3]);
  }
  return undefined;
}

/**
 * Every file under a directory with its time and content hash: to prove that nothing changed. SQLite's
 * -wal and -shm files are left out: the test's own read-only queries create them.
 */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (!/-(wal|shm)$/.test(e.name)) out[relative(dir, p)] = `${statSync(p).mtimeMs}:${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
    }
  };
  walk(dir);
  return out;
}

function write(fx: Fixture, sql: string, ...params: unknown[]): void {
  fx.execute(sql, ...params);
}

const PII_VALUE = 'very.long.secret.person.name@private-example.com';

describe.concurrent('status of a flow held by the gap policy', SLOW, () => {
  it('says which sequence it waits for and until when, not only the backlog', async (t) => {
    const fx = await fixture(t, { flow: { sequence_gap: 'wait', gap_wait: '1h' } });
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    const before = Date.now();
    const third = await fx.makeDelivery({ seq: 3, ageMs: 0 });
    expect((await fx.runOnce()).code).toBe(0); // held: nothing taken
    expect(fx.listDir('inbox')).toContain(third.name);
    const s = json(await ops(fx, 'status', '--json'));
    const flow = s.flows[0];
    expect(flow).toMatchObject({ lastSeqApplied: 1, backlog: 1, held: { waitingFor: 2, next: 3 } });
    const until = Date.parse(flow.held.until);
    expect(until).toBeGreaterThanOrEqual(before + 3_600_000 - 2000); // arrival + gap_wait (file times are coarse)
    expect(until).toBeLessThanOrEqual(Date.now() + 3_600_000);
    expect((await ops(fx, 'status')).stdout).toMatch(/acme\s+inventory\s+.*1 \(waits for 2 until \d{4}-\d\d-\d\d[ T]\d\d:\d\d/);
  });
});

describe.concurrent('status and deliveries on a database made by real runs', { timeout: 300_000 }, () => {
  it('accepted, rejected, duplicate and late: status, deliveries list and show tell each story', async (t) => {
    const fx = await fixture(t);
    const first = await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    await fx.makeDelivery({ seq: 2, rows: [row(4), row(5, { Quantity: 'x', ContactEmail: PII_VALUE })] });
    expect((await fx.runOnce()).code).toBe(1);
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);

    // A window with no delivery in it, judged late by the daemon at its close.
    await fx.writeConfig({ flow: { window: windowSoon(1500, 1) } });
    const d = DaemonRun.start(fx);
    await d.waitFor((l) => l.event === 'window.late', 'the window.late log line');
    expect(await d.stop()).toBe(0);

    // Waiting in the inbox: one delivery (its manifest not there yet) and an upload in progress.
    await fx.makeDelivery({ seq: 3, manifest: false, ageMs: 0 });
    await fsp.writeFile(fx.path('inbox', `${nameFor(4)}.part`), 'uploading');

    const idOf = (outcome: string) => fx.query('SELECT id FROM deliveries WHERE outcome = ?', outcome)[0]!.id as string;
    const [accepted, rejected, duplicate] = [idOf('accepted'), idOf('rejected'), idOf('duplicate')] as const;

    // status --json
    const st = await ops(fx, 'status', '--json');
    expect(st.code).toBe(1); // something needs attention
    const s = json(st);
    expect(s.flows).toEqual([{
      partner: 'acme', flow: 'inventory', lastSeqApplied: 1, backlog: 1, held: null, circuit: null,
      lastDelivery: { id: duplicate, file: first.name, seq: 1, outcome: 'duplicate', code: 'DUPLICATE', receivedAt: expect.any(String), late: false },
      lateWindows: [{ opensAt: expect.any(String), closesAt: expect.any(String), lateAt: expect.any(String) }],
    }]);
    expect(s.openErrors).toEqual([expect.objectContaining({ id: rejected, partner: 'acme', flow: 'inventory', seq: 2, code: 'ROW_ERRORS' })]);
    expect(s.attention).toBe(true);
    // the terminal form
    const text = (await ops(fx, 'status')).stdout;
    expect(text).toMatch(/acme\s+inventory\s+.*duplicate DUPLICATE/);
    expect(text).toContain('Open late windows (1)');
    expect(text).toContain('Rejected deliveries in error/ not yet dealt with (1)');
    expect(text).toContain(rejected);

    // deliveries list, with its filters
    const all = json(await ops(fx, 'deliveries', 'list', '--json'));
    expect(all.map((x: any) => [x.id, x.outcome, x.seq])).toEqual([[duplicate, 'duplicate', 1], [rejected, 'rejected', 2], [accepted, 'accepted', 1]]);
    expect(json(await ops(fx, 'deliveries', 'list', '--json', '--outcome', 'open')).map((x: any) => x.id)).toEqual([rejected]);
    expect(json(await ops(fx, 'deliveries', 'list', '--json', '--outcome', 'accepted', '--partner', 'acme', '--flow', 'inventory')).map((x: any) => x.id)).toEqual([accepted]);
    expect(json(await ops(fx, 'deliveries', 'list', '--json', '--since', '1h', '--until', new Date(Date.now() + DAY).toISOString(), '--limit', '2')).map((x: any) => x.id)).toEqual([duplicate, rejected]);
    expect(json(await ops(fx, 'deliveries', 'list', '--json', '--since', new Date(Date.now() + DAY).toISOString(), '--partner', 'acme'))).toEqual([]);
    expect((await ops(fx, 'deliveries', 'list', '--outcome', 'lost')).code).toBe(64);
    const listText = (await ops(fx, 'deliveries', 'list')).stdout;
    expect(listText).toMatch(new RegExp(`${rejected}.*rejected\\s+ROW_ERRORS`));

    // deliveries show: the accepted one, its whole timeline and totals
    const a = json(await ops(fx, 'deliveries', 'show', accepted, '--json'));
    expect(a.timeline.map((e: any) => e.step)).toEqual(['received', 'ready', 'verified', 'parsed', 'committed', 'answered']);
    expect(a.timeline.find((e: any) => e.step === 'committed').detail).toBe('3 rows written to inventory');
    expect(a.timeline.find((e: any) => e.step === 'answered').detail).toBe(`sent outbox/${first.name}.ack.json; originals in archive/`);
    expect(a.delivery).toMatchObject({ id: accepted, outcome: 'accepted', sha256: first.sha256, records: 3 });
    expect(a.totals).toEqual({ expected: { records: 3, sums: { qty: 36 } }, found: { records: 3, sums: { qty: 36 } } });
    expect(a.files.map((f: any) => [f.name, f.present])).toEqual(first.files.map((n) => [n, true]));
    expect(a.report).toMatchObject({ status: 'accepted', delivery_id: accepted });
    // the rejected one: reason, report with row errors, PII hidden
    const r = json(await ops(fx, 'deliveries', 'show', rejected, '--json'));
    expect(r.timeline.map((e: any) => e.step)).toEqual(['received', 'ready', 'verified', 'rejected', 'answered']);
    expect(r.timeline.find((e: any) => e.step === 'rejected').detail).toMatch(/^ROW_ERRORS: 1 of 2 rows are invalid/);
    const key = { SKU: 'A-105', Warehouse: 'BER1' }; // the row's key columns, so the partner finds the record
    expect(r.report.errors).toEqual([
      { line: 3, column: 'Quantity', reason: '"x" is not an integer', key },
      { line: 3, column: 'ContactEmail', reason: 'The value (hidden: personal data) is longer than 40 characters', key },
    ]);
    expect(r.resolution).toBeNull();
    expect(r.files.every((f: any) => f.present && f.path.includes(`${'/'}error${'/'}`))).toBe(true);
    // the duplicate, and the late window's trace
    const dup = json(await ops(fx, 'deliveries', 'show', duplicate, '--json'));
    expect(dup.timeline.find((e: any) => e.step === 'duplicate').detail).toMatch(new RegExp(`^DUPLICATE: sequence 1 was already applied \\(delivery ${accepted}\\)`));
    const showText = (await ops(fx, 'deliveries', 'show', rejected)).stdout;
    for (const words of ['Timeline', 'ROW_ERRORS', 'Control totals', '"x" is not an integer', 'resolved    no']) expect(showText).toContain(words);
    expect((await ops(fx, 'deliveries', 'show', '20990101T000000Z-000000')).code).toBe(64);

    // The audit trail never holds a PII value, in any column of any row.
    const db = databaseBytes(fx.database);
    expect(db.includes(PII_VALUE)).toBe(false);
    expect(JSON.stringify(fx.query('SELECT * FROM events'))).not.toContain('private-example');

    // A remote partner's breaker as the remote link records it (remote_state), shown by status.
    write(fx, "INSERT INTO remote_state (partner, circuit, failures, updated_at) VALUES ('acme', 'open', 5, ?)", new Date().toISOString());
    expect(json(await ops(fx, 'status', '--json')).flows[0].circuit).toBe('open');

    // An operator closes the rejected delivery: status stops listing it.
    expect((await ops(fx, 'deliveries', 'resolve', rejected, '--note', 'partner resends as sequence 3')).code).toBe(0);
    expect(json(await ops(fx, 'status', '--json')).openErrors).toEqual([]);
    expect(json(await ops(fx, 'deliveries', 'show', rejected, '--json')).resolution).toMatchObject({ byDelivery: null, note: 'resolved by an operator: partner resends as sequence 3' });
    expect((await ops(fx, 'deliveries', 'resolve', accepted, '--note', 'x')).code).toBe(64);
  }, 180_000); // a dozen real runs, each a process start: slow on a loaded machine
});

describe.concurrent('metrics and health from a running daemon', SLOW, () => {
  it('/metrics counts what happened; /healthz and /readyz tell the truth; prune runs on its schedule', async (t) => {
    const fx = await fixture(t);
    expect((await fx.runOnce()).code).toBe(0); // the database exists from now: windows after this are judged
    await fx.writeConfig({ flow: { window: windowSoon(1000, 1) }, config: { http: { listen: '127.0.0.1:0' }, prune_schedule: '*/2 * * * * *' } });
    // An old file in error/ for the scheduled prune to remove (default error_days 30): a duplicate's
    // notice, decided 100 days ago.
    await fsp.writeFile(fx.path('error', 'old.csv'), 'old');
    const old = new Date(Date.now() - 100 * DAY).toISOString();
    const plan = JSON.stringify({ writes: [], moves: [{ from: 'old.csv', dir: 'error', to: 'old.csv', readOnly: false }] });
    write(fx, "INSERT INTO deliveries (id, partner, flow, file, outcome, received_at, decided_at, answered_at, plan) VALUES ('old', 'acme', 'inventory', 'old.csv', 'duplicate', ?, ?, ?, ?)", old, old, old, plan);

    const d = DaemonRun.start(fx);
    t.onTestFinished(async () => void (d.child.exitCode === null && (await d.stop())));
    const { port } = await d.waitFor((l) => typeof l.port === 'number', 'the http listening line');
    const get = (path: string, init?: RequestInit) => fetch(`http://127.0.0.1:${port}${path}`, init);
    await d.waitFor((l) => l.msg === 'inboxd started', 'inboxd started');
    const acme = { partner: 'acme', flow: 'inventory' };

    // The window closes with nothing in it: late.
    await d.waitFor((l) => l.event === 'window.late', 'window.late');
    const late = await (await get('/metrics')).text();
    expect(metric(late, 'inboxd_late_windows', acme)).toBe(1);
    expect(metric(late, 'inboxd_deliveries_total', { ...acme, outcome: 'accepted' })).toBe(0); // at zero from the start
    expect(metric(late, 'inboxd_seconds_since_last_accepted', acme)).toBeUndefined();

    // Then: accepted (3 rows, late: it resolves the window), rejected, duplicate.
    await fx.makeDelivery({ seq: 1 });
    await d.waitFor((l) => l.msg === 'delivery accepted', 'delivery accepted');
    await fx.makeDelivery({ seq: 2, rows: [row(4, { Quantity: 'x' })] });
    await d.waitFor((l) => l.msg === 'delivery rejected', 'delivery rejected');
    await fx.makeDelivery({ seq: 1 });
    await d.waitFor((l) => l.msg === 'delivery duplicate', 'delivery duplicate');
    // waiting: a delivery whose manifest has not arrived
    await fx.makeDelivery({ seq: 3, manifest: false });

    const body = await (await get('/metrics')).text();
    expect(metric(body, 'inboxd_deliveries_total', { ...acme, outcome: 'accepted' })).toBe(1);
    expect(metric(body, 'inboxd_deliveries_total', { ...acme, outcome: 'rejected' })).toBe(1);
    expect(metric(body, 'inboxd_deliveries_total', { ...acme, outcome: 'duplicate' })).toBe(1);
    expect(metric(body, 'inboxd_rows_upserted_total', acme)).toBe(3);
    expect(metric(body, 'inboxd_delivery_processing_seconds_count', { ...acme, outcome: 'accepted' })).toBe(1);
    expect(metric(body, 'inboxd_delivery_processing_seconds_count', { ...acme, outcome: 'rejected' })).toBe(1);
    expect(metric(body, 'inboxd_backlog_files', acme)).toBe(1);
    expect(metric(body, 'inboxd_late_windows', acme)).toBe(0);
    expect(fx.query("SELECT late FROM deliveries WHERE outcome = 'accepted'")).toEqual([{ late: 1 }]);
    expect(metric(body, 'inboxd_open_errors', { partner: 'acme' })).toBe(1);
    const since = metric(body, 'inboxd_seconds_since_last_accepted', acme)!;
    expect(since).toBeGreaterThanOrEqual(0);
    expect(since).toBeLessThan(60);
    expect(body).toContain('inboxd_process_resident_memory_bytes');
    // The dashboard and the alert rules use only metric names the daemon exports.
    const exported = new Set([...body.matchAll(/^# TYPE (\w+) /gm)].map((m) => m[1]));
    for (const file of ['grafana-dashboard.json', 'prometheus-alerts.yml']) {
      const used = new Set([...readFileSync(new URL(`../config/${file}`, import.meta.url), 'utf8').matchAll(/\binboxd_\w+/g)].map((m) => m[0].replace(/_(bucket|count|sum)$/, '')));
      expect([...used].filter((n) => !exported.has(n)), file).toEqual([]);
      expect(used.size).toBeGreaterThan(5);
    }

    // The circuit state the remote link keeps in remote_state is exported, one series per state.
    write(fx, "INSERT INTO remote_state (partner, circuit, failures, updated_at) VALUES ('acme', 'open', 5, ?)", new Date().toISOString());
    const again = await (await get('/metrics')).text();
    expect(metric(again, 'inboxd_circuit_state', { partner: 'acme', state: 'open' })).toBe(1);
    expect(metric(again, 'inboxd_circuit_state', { partner: 'acme', state: 'closed' })).toBe(0);

    const health = await get('/healthz');
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok' });
    const ready = await get('/readyz');
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', checks: { startup: 'ok', database: 'ok', 'partner acme': 'ok' } });
    // A partner directory that cannot be written: not ready, and it says which.
    await fsp.rename(fx.path('outbox'), `${fx.path('outbox')}.away`);
    const notReady = await get('/readyz');
    expect(notReady.status).toBe(503);
    expect((await notReady.json()).checks['partner acme']).toContain(`${fx.path('outbox')}: ENOENT`);
    await fsp.rename(`${fx.path('outbox')}.away`, fx.path('outbox'));
    expect((await get('/readyz')).status).toBe(200);
    expect((await get('/metrics', { method: 'POST' })).status).toBe(405);
    expect((await get('/nothing')).status).toBe(404);

    // The scheduled prune removed the old file, and only it.
    await d.waitFor((l) => l.event === 'prune' && l.msg === 'prune done', 'a scheduled prune');
    expect(fx.listDir('archive')).toEqual([nameFor(1), `${nameFor(1)}.manifest.json`, `${nameFor(1)}.sha256`]);
    expect(fx.listDir('error')).not.toContain('old.csv');
    expect(await d.stop()).toBe(0);
  });

  it('refuses a non-loopback listen address unless allowed (exit 78 naming the key)', async (t) => {
    const fx = await fixture(t, { config: { http: { listen: '0.0.0.0:9464' } } });
    const r = await runCli(['check-config', '--config', fx.configPath]);
    expect(r.code).toBe(78);
    expect(r.stderr).toMatch(/http\.listen: 0\.0\.0\.0 is not a loopback address/);
    await fx.writeConfig({ config: { http: { listen: '0.0.0.0:9464', allow_remote: true }, retention: { archive_days: 10 }, prune_schedule: false } });
    expect((await runCli(['check-config', '--config', fx.configPath])).code).toBe(0);
    await fx.writeConfig({ config: { retention: { archive_days: 0 } } });
    expect((await runCli(['check-config', '--config', fx.configPath])).stderr).toMatch(/retention\.archive_days/);
  });
});

describe.concurrent('replay at a terminal', SLOW, () => {
  it('shows the summary without log lines; redirected, stderr gets the JSON log lines', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, rows: [row(1, { UnitCost: '2.125' })] });
    expect((await fx.runOnce()).code).toBe(1);
    const id = fx.query('SELECT id FROM deliveries WHERE seq = 1')[0]!.id as string;
    // script(1) gives the command a terminal for standard output and standard error alike.
    const atTerminal = (...extra: string[]) => new Promise<{ code: number | null; out: string }>((resolve) => {
      const cmd = [process.execPath, CLI, 'replay', id, '--config', fx.configPath, ...extra].map((a) => `'${a}'`).join(' ');
      const p = spawn('script', ['-qec', cmd, '/dev/null'], { cwd: fx.dir });
      let out = '';
      p.stdout.on('data', (b) => { out += String(b); });
      p.on('close', (code) => resolve({ code, out }));
    });
    const tty = await atTerminal();
    expect(tty.code).toBe(1); // rejected again
    expect(tty.out).toContain(`replay of ${id}`);
    expect(tty.out).toContain('ROW_ERRORS');
    expect(tty.out).not.toMatch(/"level"/);
    expect(tty.out).not.toContain('delivery rejected');
    // --log-level wins over "errors only at a terminal"; the lines are readable, not JSON.
    const told = await atTerminal('--log-level', 'info');
    expect(told.out).toMatch(/WARN.*delivery rejected/);
    expect(told.out).not.toMatch(/"level"/);
    const piped = await ops(fx, 'replay', id);
    expect(piped.stdout).toContain(`replay of ${id}`);
    expect(piped.stdout).not.toMatch(/"level"/);
    expect(piped.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l).msg)).toContain('delivery rejected');
  });
});

describe.concurrent('replay', { timeout: 300_000 }, () => {
  it('after a mapping fix: a rejected delivery is applied and resolved, an archived one rewrites only its own rows', async (t) => {
    const fx = await fixture(t);
    const one = await fx.makeDelivery({ seq: 1, rows: [row(1, { UnitCost: '1.50' }), row(2, { UnitCost: '2.50' }), row(3, { UnitCost: '3.50' })] });
    expect((await fx.runOnce()).code).toBe(0);
    // Three decimals: rejected while unit_cost is amount:2.
    const two = await fx.makeDelivery({ seq: 2, rows: [row(2, { Quantity: '99', UnitCost: '2.125' }), row(4, { UnitCost: '4.25' })] });
    expect((await fx.runOnce()).code).toBe(1);
    const id1 = fx.query('SELECT id FROM deliveries WHERE seq = 1')[0]!.id as string;
    const id2 = fx.query('SELECT id FROM deliveries WHERE seq = 2')[0]!.id as string;
    expect(fx.rows().map((r) => [r.sku, r.qty, r.unit_cost])).toEqual([['A-101', 11, 150], ['A-102', 12, 250], ['A-103', 13, 350]]);
    const errorBefore = fx.listDir('error');

    // Not fixed yet: the replay is rejected again, nothing changes, the partner is not told again.
    const still = await ops(fx, 'replay', id2, '--json');
    expect(still.code).toBe(1);
    expect(json(still)).toMatchObject({ status: 'rejected', partnerTold: false, replay: { outcome: 'rejected', code: 'ROW_ERRORS' }, resolved: [] });
    expect(fx.listDir('error')).toEqual(errorBefore);
    expect(fx.listDir('outbox')).toEqual([`${one.name}.ack.json`]);

    // The mapping fix: unit_cost gets three decimal places.
    await fx.writeConfig({ mapping: MAPPING.replace('unit_cost,UnitCost,amount:2', 'unit_cost,UnitCost,amount:3') });
    const fixed = await ops(fx, 'replay', id2, '--json');
    expect(fixed.code).toBe(0);
    const f = json(fixed);
    expect(f).toMatchObject({ status: 'accepted', from: 'error', verifiedSha256: two.sha256, partnerTold: true, resolved: [id2] });
    const r2 = f.replay.id as string;
    // Rows of sequence 2, at the new scale; the others untouched.
    expect(fx.rows().map((r) => [r.sku, r.qty, r.unit_cost, r._delivery_id])).toEqual([['A-101', 11, 150, id1], ['A-102', 99, 2125, r2], ['A-103', 13, 350, id1], ['A-104', 14, 4250, r2]]);
    // The partner, told before that its file was rejected, gets an ACK naming the replay; the file is archived.
    expect(await fx.readJson('outbox', `${two.name}.ack.json`)).toMatchObject({ status: 'accepted', sequence: 2, delivery_id: r2, replay_of: id2 });
    expect(fx.listDir('archive')).toEqual([...one.files, ...two.files].sort());
    expect(fx.listDir('error')).toEqual(errorBefore); // the original rejection stays, as evidence
    // Resolved: status no longer lists it; the audit trail shows both sides.
    expect(json(await ops(fx, 'status', '--json')).openErrors).toEqual([]);
    const orig = json(await ops(fx, 'deliveries', 'show', id2, '--json'));
    expect(orig.replays.map((x: any) => [x.outcome])).toEqual([['rejected'], ['accepted']]);
    expect(orig.resolution).toMatchObject({ byDelivery: r2 });
    expect(orig.timeline.map((e: any) => e.step)).toEqual(['received', 'ready', 'verified', 'rejected', 'answered', 'replayed', 'replayed', 'resolved']);
    const shown = json(await ops(fx, 'deliveries', 'show', r2, '--json'));
    expect(shown.delivery).toMatchObject({ replayOf: id2, outcome: 'accepted', seq: 2 });
    expect(shown.timeline.map((e: any) => e.step)).toEqual(['replayed', 'verified', 'parsed', 'committed', 'answered']);

    // The archived sequence 1 after the same fix: its rows at the new scale, except A-102, which the
    // later sequence 2 wrote and keeps. No second ACK; the archive keeps its one copy.
    const outboxBefore = await fx.readText('outbox', `${one.name}.ack.json`);
    const re1 = await ops(fx, 'replay', id1);
    expect(re1.code).toBe(0);
    expect(re1.stdout).toContain('2 rows written to inventory; 1 kept as they were: a later sequence wrote them');
    expect(re1.stdout).toContain('not told again');
    const r1 = fx.query('SELECT id FROM deliveries WHERE replay_of = ?', id1)[0]!.id as string;
    expect(fx.rows().map((r) => [r.sku, r.qty, r.unit_cost, r._delivery_id])).toEqual([['A-101', 11, 1500, r1], ['A-102', 99, 2125, r2], ['A-103', 13, 3500, r1], ['A-104', 14, 4250, r2]]);
    expect(await fx.readText('outbox', `${one.name}.ack.json`)).toBe(outboxBefore);
    expect(fx.listDir('archive')).toEqual([...one.files, ...two.files].sort());
    expect(fx.listWork()).toEqual([]);
    const s1 = json(await ops(fx, 'deliveries', 'show', id1, '--json'));
    expect(s1.replays.map((x: any) => x.id)).toEqual([r1]);
    expect(s1.timeline.at(-1)).toMatchObject({ step: 'replayed', detail: `replayed as ${r1}` });

    // A resend of sequence 1 is still a duplicate (the replay took over its dedupe row).
    await fx.makeDelivery({ seq: 1, rows: [row(1, { UnitCost: '1.50' }), row(2, { UnitCost: '2.50' }), row(3, { UnitCost: '3.50' })] });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.query("SELECT count(*) AS n FROM deliveries WHERE outcome = 'duplicate'")[0]!.n).toBe(1);
  }, 180_000); // a dozen real runs, each a process start: slow on a loaded machine

  it('refuses what it cannot replay faithfully: an archived file that changed, a duplicate, an unknown id', async (t) => {
    const fx = await fixture(t);
    const one = await fx.makeDelivery({ seq: 1, rows: rowsOf(2) });
    expect((await fx.runOnce()).code).toBe(0);
    await fx.makeDelivery({ seq: 1, rows: rowsOf(2) });
    expect((await fx.runOnce()).code).toBe(0);
    const idOf = (outcome: string) => fx.query('SELECT id FROM deliveries WHERE outcome = ?', outcome)[0]!.id as string;
    const [id1, dup] = [idOf('accepted'), idOf('duplicate')] as const;

    expect((await ops(fx, 'replay', dup)).code).toBe(64);
    expect((await ops(fx, 'replay', '20990101T000000Z-000000')).code).toBe(64);
    // The daemon holds the database: the replay is queued for it, carried out between sweeps, and reported.
    const d = DaemonRun.start(fx);
    await d.waitFor((l) => l.msg === 'inboxd started', 'inboxd started');
    const viaDaemon = await ops(fx, 'replay', id1, '--json');
    expect(viaDaemon.code, viaDaemon.stderr).toBe(0);
    expect(JSON.parse(viaDaemon.stdout).replay).toMatchObject({ outcome: 'accepted' });
    expect(fx.query("SELECT state FROM replay_requests")).toEqual([{ state: 'done' }]);
    expect(await d.stop()).toBe(0);
    const rows = fx.rows();
    await fsp.chmod(fx.path('archive', one.name), 0o640);
    await fsp.appendFile(fx.path('archive', one.name), 'A-999,BER1,1,1.00,EUR,NEW,yes,,2025-09-16T00:00:00Z\n');
    const changed = await ops(fx, 'replay', id1);
    expect(changed.code).toBe(1);
    expect(changed.stderr).toMatch(/EVIDENCE_CHANGED: .* has SHA-256 [0-9a-f]{64}, but [0-9a-f]{64} was recorded/);
    expect(fx.rows()).toEqual(rows);
    expect(fx.query('SELECT count(*) AS n FROM deliveries')[0]!.n).toBe(3);
    expect(fx.query("SELECT step FROM events WHERE delivery_id = ? ORDER BY id DESC LIMIT 1", id1)[0]!.step).toBe('replay refused');
    expect(fx.listWork()).toEqual([]);
  });
});

describe.concurrent('replay and crashes', { timeout: 300_000 }, () => {
  it('a replay killed before its commit leaves nothing behind; one killed after it is finished by recovery', async (t) => {
    const fx = await fixture(t);
    // Large enough to be read in several chunks: the mid-stream crash point is at the second.
    const d = await fx.makeDelivery({ seq: 1, rows: [row(1, { UnitCost: '1.505' }), ...rowsOf(5000, 2)] });
    expect((await fx.runOnce()).code).toBe(1);
    const id = fx.query('SELECT id FROM deliveries')[0]!.id as string;
    await fx.writeConfig({ mapping: MAPPING.replace('unit_cost,UnitCost,amount:2', 'unit_cost,UnitCost,amount:3') });

    // Killed mid-stream: the copies are dropped at the next start, never released into the inbox.
    const killed = await runCli(['replay', id, '--config', fx.configPath], { cwd: fx.dir, env: { INBOXD_TEST_CRASH_AT: 'mid-stream' } });
    expect(killed.signal).toBe('SIGKILL');
    expect(fx.listWork()).toHaveLength(1);
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.listWork()).toEqual([]);
    expect(fx.listDir('inbox')).toEqual([]);
    expect(fx.rows()).toEqual([]);
    expect(fx.query("SELECT detail FROM events WHERE step = 'interrupted'")).toEqual([{ detail: 'replay cut short before its commit: nothing applied; run the replay again' }]);

    // Killed after its commit: recovery carries out the stored answer (ACK, archive copy) exactly once.
    const committed = await runCli(['replay', id, '--config', fx.configPath], { cwd: fx.dir, env: { INBOXD_TEST_CRASH_AT: 'after-commit' } });
    expect(committed.signal).toBe('SIGKILL');
    expect(fx.query("SELECT unit_cost FROM inventory WHERE sku = 'A-101'")).toEqual([{ unit_cost: 1505 }]);
    expect(fx.listDir('outbox')).toEqual([]);
    expect((await fx.runOnce()).code).toBe(0);
    const replayId = fx.query('SELECT id FROM deliveries WHERE replay_of = ?', id)[0]!.id as string;
    expect(await fx.readJson('outbox', `${d.name}.ack.json`)).toMatchObject({ status: 'accepted', delivery_id: replayId, replay_of: id });
    expect(fx.listDir('archive')).toEqual([...d.files].sort());
    expect(fx.listWork()).toEqual([]);
    expect(fx.listDir('inbox')).toEqual([]);
    expect(json(await ops(fx, 'status', '--json')).openErrors).toEqual([]);
  });
});

describe.concurrent('prune', SLOW, () => {
  it('counts from our decision, not from the modification time a partner kept (sftp put -p): accepted today, kept; replay still works', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, ageMs: 200 * DAY }); // `touch -d '-200 days'`
    expect((await fx.runOnce()).code).toBe(0);
    const pruned = await ops(fx, 'prune', '--json');
    expect(pruned.code).toBe(0);
    expect(json(pruned).files).toEqual([]);
    expect(fx.listDir('archive')).toEqual([...d.files].sort());
    const id = fx.query('SELECT id FROM deliveries')[0]!.id as string;
    const replay = await ops(fx, 'replay', id, '--json');
    expect(replay.code, replay.stderr).toBe(0);
    expect(json(replay).replay).toMatchObject({ outcome: 'accepted' });

    // Decided 91 days ago (archive_days 90): now it goes, and the text form says from when it counted.
    write(fx, 'UPDATE deliveries SET decided_at = ? WHERE id = ?', new Date(Date.now() - 91 * DAY).toISOString(), id);
    const text = await ops(fx, 'prune');
    expect(text.stdout).toContain(`acme/archive/${d.name}  (decided `);
    expect(fx.listDir('archive')).toEqual([]);
  });

  it('removes only what is past its retention, keeps the last sequence, and an old resend stays out', async (t) => {
    const fx = await fixture(t, { config: { retention: { archive_days: 30, error_days: 7, records_days: 60 } } });
    const one = await fx.makeDelivery({ seq: 1, rows: rowsOf(2) });
    expect((await fx.runOnce()).code).toBe(0);
    const two = await fx.makeDelivery({ seq: 2, rows: rowsOf(2, 3) });
    expect((await fx.runOnce()).code).toBe(0);
    const three = await fx.makeDelivery({ seq: 3, rows: [row(9, { Quantity: 'x' })] });
    expect((await fx.runOnce()).code).toBe(1);
    const id = (seq: number) => fx.query('SELECT id FROM deliveries WHERE seq = ?', seq)[0]!.id as string;
    const [id1, id2, id3] = [id(1), id(2), id(3)];

    // Files age from the decision: sequences 1 and 3 decided 70 days ago (past 30 for archive/, 7 for
    // error/ and 60 for rows), sequence 2 10 days ago (its files kept; its rows kept anyway, the last
    // sequence). Modification times, which the partner controls, count for nothing: sequence 2's files
    // claim 400 days, and so does a file in error/ that no delivery names (it ages from its change: now).
    const past = (days: number) => new Date(Date.now() - days * DAY).toISOString();
    write(fx, 'UPDATE deliveries SET decided_at = ?, received_at = ?', past(70), past(70));
    write(fx, 'UPDATE deliveries SET decided_at = ?, received_at = ? WHERE id = ?', past(10), past(10), id2);
    const ancient = new Date(Date.now() - 400 * DAY);
    for (const n of two.files) await fsp.utimes(fx.path('archive', n), ancient, ancient);
    await fsp.writeFile(fx.path('error', 'notes.txt'), 'put here by hand');
    await fsp.utimes(fx.path('error', 'notes.txt'), ancient, ancient);
    // Rows: two windows, an old closed one and an old late one.
    write(fx, 'UPDATE dedupe SET applied_at = ?', past(70));
    write(fx, 'UPDATE events SET at = ?', past(70));
    write(fx, "INSERT INTO windows (partner, flow, opens_at, closes_at, status) VALUES ('acme', 'inventory', ?, ?, 'ok')", past(80), past(80));
    write(fx, "INSERT INTO windows (partner, flow, opens_at, closes_at, status, late_at) VALUES ('acme', 'inventory', ?, ?, 'late', ?)", past(75), past(75), past(75));
    const rowsBefore = fx.rows();

    // A dry run counts exactly and changes nothing.
    const before = snapshot(fx.dir);
    const dry = await ops(fx, 'prune', '--dry-run', '--json');
    expect(dry.code).toBe(0);
    const expectedRows = { dedupe: 1, deliveries: 2, events: 6 + 5, resolutions: 0, windows: 1 };
    expect(json(dry).rows).toEqual(expectedRows);
    expect(json(dry).files).toHaveLength(8);
    expect(json(dry).files.every((f: any) => f.by === 'decided' && Date.parse(f.since) < Date.now() - 69 * DAY)).toBe(true);
    expect(snapshot(fx.dir)).toEqual(before);

    const real = await ops(fx, 'prune', '--json');
    expect(real.code).toBe(0);
    const r = json(real);
    const threeInError = [...three.files, `${three.name}.error.json`, `${three.name}.errors.csv`];
    expect(r.files.map((f: any) => `${f.dir}/${f.name}`).sort()).toEqual([...one.files.map((n) => `archive/${n}`), ...threeInError.map((n) => `error/${n}`)].sort());
    expect(r.rows).toEqual(expectedRows);
    expect(fx.listDir('archive')).toEqual([...two.files].sort());
    expect(fx.listDir('error')).toEqual(['notes.txt']);
    // Kept: the last sequence's dedupe row and its delivery with its audit trail; the late window; the data.
    expect(fx.query('SELECT seq, delivery_id FROM dedupe')).toEqual([{ seq: 2, delivery_id: id2 }]);
    expect(fx.query('SELECT id FROM deliveries').map((x) => x.id)).toEqual([id2]);
    expect(new Set(fx.query('SELECT DISTINCT delivery_id FROM events').map((x) => x.delivery_id))).toEqual(new Set([id2]));
    expect(fx.query('SELECT status FROM windows')).toEqual([{ status: 'late' }]);
    expect(fx.rows()).toEqual(rowsBefore);
    expect(json(await ops(fx, 'deliveries', 'show', id2, '--json')).timeline.map((e: any) => e.step)).toContain('committed');
    expect((await ops(fx, 'deliveries', 'show', id1)).code).toBe(64);
    expect(id3).not.toBe(id2);

    // Sequence 1 sent again: its dedupe row is gone, but sequence 2 is the last applied, so it is
    // rejected as out of order and nothing is applied twice.
    await fx.makeDelivery({ seq: 1, rows: rowsOf(2) });
    const resend = await fx.runOnce();
    expect(resend.code).toBe(1);
    expect(fx.query('SELECT outcome, code FROM deliveries WHERE seq = 1')).toEqual([{ outcome: 'rejected', code: 'SEQUENCE_OUT_OF_ORDER' }]);
    expect(fx.rows()).toEqual(rowsBefore);
    // The text form
    expect((await ops(fx, 'prune', '--dry-run')).stdout).toMatch(/Files to remove \(dry run: nothing removed\): 0\nRows to remove/);
  }, 180_000); // a dozen real runs, each a process start: slow on a loaded machine
});

describe.concurrent('check: an onboarding dry run', SLOW, () => {
  it('prints what would be upserted and every problem in words a partner can act on, and applies nothing', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, rows: rowsOf(2) });
    expect((await fx.runOnce()).code).toBe(0);
    // Samples prepared outside any inbox (a directory of no configured partner).
    const samples = fx.path('inbox', '', 'samples');
    const good = await fx.makeDelivery({ partner: 'samples', seq: 2, rows: rowsOf(3, 5) });
    const bad = await fx.makeDelivery({ partner: 'samples', name: 'inventory-2025-09-16.csv', rows: [row(7), row(8, { Quantity: 'many', ContactEmail: PII_VALUE })], manifest: { records: 5 }, corrupt: true });
    const again = await fx.makeDelivery({ partner: 'samples', name: 'acme_inventory_20250916T020000Z_000001.csv', rows: rowsOf(2) });
    const before = snapshot(fx.dir);

    const ok = await ops(fx, 'check', '--partner', 'acme', '--flow', 'inventory', join(samples, good.name), '--json');
    expect(ok.code).toBe(0);
    const g = json(ok);
    expect(g.accepted).toBe(true);
    expect(g.deliveries[0].checks.map((c: any) => `${c.check}:${c.status}`)).toEqual([
      'name:ok', 'sidecar:ok', 'manifest:ok', 'decryption:skip', 'csv:ok', 'checksum:ok', 'mapping:ok', 'control totals:ok', 'sequence:ok',
    ]);
    expect(g.deliveries[0].preview).toMatchObject({ table: 'inventory', key: ['sku', 'warehouse'], rows: 3 });
    expect(g.deliveries[0].preview.sample[0]).toMatchObject({ sku: 'A-105', warehouse: 'BER1', qty: 15, unit_cost: 150, contact: '(hidden: personal data)' });
    const okText = (await ops(fx, 'check', '--partner', 'acme', '--flow', 'inventory', join(samples, good.name))).stdout;
    expect(okText).toContain('Would upsert 3 rows into inventory (key sku, warehouse)');
    expect(okText).toContain('=> would be ACCEPTED');

    const no = await ops(fx, 'check', '--partner', 'acme', '--flow', 'inventory', ...bad.files.map((n) => join(samples, n)), '--json');
    expect(no.code).toBe(1);
    const b = json(no).deliveries[0];
    expect(b.accepted).toBe(false);
    const failed = Object.fromEntries(b.checks.filter((c: any) => c.status === 'fail').map((c: any) => [c.check, c.code]));
    expect(failed).toEqual({ name: 'BAD_FILE_NAME', checksum: 'CHECKSUM_MISMATCH', mapping: 'ROW_ERRORS', 'control totals': 'MANIFEST_CHECKSUM_MISMATCH' });
    expect(b.checks.find((c: any) => c.check === 'name').message).toContain('Name files like acme_inventory_20250916T020000Z_000001.csv');
    expect(b.rowErrors).toMatchObject([
      { line: 3, column: 'Quantity', reason: '"many" is not an integer' },
      { line: 3, column: 'ContactEmail', reason: 'The value (hidden: personal data) is longer than 40 characters' },
    ]);
    const noText = (await ops(fx, 'check', '--partner', 'acme', '--flow', 'inventory', join(samples, bad.name))).stdout;
    expect(noText).toContain('FAIL  name');
    expect(noText).toContain('"many" is not an integer');
    expect(noText).toContain('would be REJECTED (4 problems)');
    expect(noText).not.toContain(PII_VALUE);

    // Sequence 1 is applied already with this content: a duplicate, said so.
    const dupe = json(await ops(fx, 'check', '--partner', 'acme', '--flow', 'inventory', join(samples, again.name), '--json'));
    expect(dupe.deliveries[0].checks.find((c: any) => c.check === 'sequence')).toMatchObject({ status: 'fail', code: 'DUPLICATE' });
    // A missing .sha256 file and manifest, named with the command that makes one.
    const sidecar = join(samples, `${good.name}.sha256`);
    const [text, st] = [await fsp.readFile(sidecar), statSync(sidecar)];
    await fsp.rm(sidecar);
    const incomplete = json(await ops(fx, 'check', '--partner', 'acme', '--flow', 'inventory', join(samples, good.name), '--json')).deliveries[0];
    expect(incomplete.checks.find((c: any) => c.check === 'sidecar')).toMatchObject({ status: 'fail', code: 'INCOMPLETE', message: expect.stringContaining(`sha256sum ${good.name} > ${good.name}.sha256`) });
    await fsp.writeFile(sidecar, text);
    await fsp.utimes(sidecar, st.atime, st.mtime);

    expect((await ops(fx, 'check', '--partner', 'acme', '--flow', 'nope', join(samples, good.name))).code).toBe(64);
    // Nothing applied, nothing moved, the database untouched (byte for byte).
    expect(snapshot(fx.dir)).toEqual(before);
  });

  it('an encrypted sample is decrypted and its signature checked with our keys; one for another key fails in words', async (t) => {
    const gpg = await Gpg.create();
    t.onTestFinished(() => gpg.cleanup());
    await gpg.genKey('inboxd@us', 'ed25519');
    await gpg.genKey('partner@acme', 'ed25519');
    await gpg.genKey('stranger@elsewhere', 'ed25519');
    const fx = await fixture(t);
    await fsp.writeFile(join(fx.dir, 'ours.asc'), await gpg.exportSecret('inboxd@us'));
    await fsp.writeFile(join(fx.dir, 'acme.asc'), await gpg.exportPublic('partner@acme'));
    const config = (await fsp.readFile(fx.configPath, 'utf8'))
      .replace(/^partners:\n {2}acme:\n/m, 'pgp:\n  keys: [ours.asc]\npartners:\n  acme:\n    pgp:\n      verification_keys: [acme.asc]\n');
    await fsp.writeFile(fx.configPath, config);
    const plain = join(fx.dir, 'plain.csv');
    const rows = rowsOf(2);
    await fsp.writeFile(plain, [HEADER, ...rows.map((r) => HEADER.map((h) => r[h] ?? ''))].map((c) => `${csvLine(c)}\n`).join(''));
    const sample = async (name: string, recipient: string) => {
      const path = join(fx.dir, name);
      await gpg.encrypt(plain, path, { recipients: [recipient], signer: 'partner@acme' });
      const cipher = await fsp.readFile(path);
      await fsp.writeFile(`${path}.sha256`, `${sha256(cipher)}  ${name}\n`);
      await fsp.writeFile(`${path}.manifest.json`, JSON.stringify({ file: name, records: 2, sums: { qty: 23 } }));
      return path;
    };
    const good = await sample(`${nameFor(1)}.pgp`, 'inboxd@us');
    const wrong = await sample(`${nameFor(2)}.pgp`, 'stranger@elsewhere');

    const ok = await ops(fx, 'check', '--partner', 'acme', '--flow', 'inventory', good, '--json');
    expect(ok.code).toBe(0);
    const checks = json(ok).deliveries[0].checks;
    expect(checks.find((c: any) => c.check === 'decryption')).toMatchObject({ status: 'ok' });
    expect(checks.find((c: any) => c.check === 'signature')).toMatchObject({ status: 'ok', message: expect.stringMatching(/^signed by [0-9A-Fa-f]{16,}/) });
    expect(json(ok).deliveries[0].preview).toMatchObject({ rows: 2 });

    const no = await ops(fx, 'check', '--partner', 'acme', '--flow', 'inventory', wrong, '--json');
    expect(no.code).toBe(1);
    expect(json(no).deliveries[0].checks.find((c: any) => c.status === 'fail')).toMatchObject({ check: 'decryption', code: 'DECRYPT_FAILED' });
    expect(fx.query('SELECT count(*) AS n FROM deliveries')).toEqual([]); // no database was ever made
  });
});
