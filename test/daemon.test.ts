/**
 * The daemon of issue 3 as a real process (`inboxd run --config FILE`): pickup by the watcher and by
 * the sweep, sequence order and the gap policy, delivery windows with late / at-risk / resolved alerts
 * (HTTP and command), and shutdown on signals. Asserts what a user checks: rows in the SQLite file,
 * ACK files, error/ files, the alert payloads an endpoint received, the log lines.
 */
import { chmodSync, existsSync, promises as fsp, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { AlertSink, msg, sleep, spawnDaemon, testDaemon, FLOW, until } from './helpers/daemon.js';
import { type Fixture, fixture, type FixtureOptions, nameFor, rowsOf } from './helpers/fixture.js';
import type { Alert } from '../src/notify/alert.js';
import { loadConfig } from '../src/config/config.js';
import { DeadlineKeeper } from '../src/daemon/deadlines.js';
import { createLogger } from '../src/log.js';
import { openStore } from '../src/store/open.js';

const ack = (fx: Fixture, name: string, partner = 'acme') => fx.path('outbox', `${name}.ack.json`, partner);
const hasAck = (fx: Fixture, name: string, partner = 'acme') => existsSync(ack(fx, name, partner));


const daemon = (t: TestContext, fx: Fixture, env?: Record<string, string>) => testDaemon(t, fx, env, 60);

async function daemonFixture(t: TestContext, opts: FixtureOptions = {}): Promise<Fixture> {
  return fixture(t, { ...opts, config: { log_level: 'debug', ...opts.config } });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('pickup', () => {
  it('the watcher picks a delivery up soon after its final rename (sweep set to once a year)', async (t) => {
    // Settle time as shipped (500 ms): a file must stay unchanged that long before it is read.
    const fx = await daemonFixture(t, { settle_time: '500ms', config: { sweep: '0 0 1 1 *' } });
    const d = await daemon(t, fx);
    const latencies: number[] = [];
    for (let seq = 1; seq <= 5; seq++) {
      // ageMs 0: written just now, as an upload is; the last rename is the manifest's.
      const del = await fx.makeDelivery({ seq, ageMs: 0, rows: rowsOf(3, seq * 10) });
      const t0 = Date.now();
      await until(() => hasAck(fx, del.name), `the ACK of ${del.name}`, 10_000, 5);
      latencies.push(Date.now() - t0);
    }
    console.log(`watcher pickup, rename -> ACK (settle_time 500ms): ${latencies.join(', ')} ms; median ${median(latencies)} ms`);
    expect(Math.max(...latencies)).toBeLessThan(10_000);
    await d.waitForCount(msg('delivery accepted'), 5, 'accepted deliveries'); // the ACK comes first, then the archive
    expect(fx.query("SELECT seq FROM deliveries WHERE outcome = 'accepted' ORDER BY seq").map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(fx.rows()).toHaveLength(15);
    expect(fx.listDir('inbox')).toEqual([]);
    expect(fx.listWork()).toEqual([]);
    expect(d.other).toEqual([]);
  });

  it('a delivery renamed in from temporary names is taken at once; one written in place waits out settle_time, then is read whole', async (t) => {
    const fx = await daemonFixture(t, { settle_time: '4s', config: { sweep: '0 0 1 1 *' } });
    const d = await daemon(t, fx);
    await d.waitFor(msg('watching the inboxes'), 'the watcher ready');
    const renamed = await fx.makeDelivery({ seq: 1, ageMs: 0, rows: rowsOf(3) });
    const t0 = Date.now();
    await until(() => hasAck(fx, renamed.name), `the ACK of ${renamed.name}`, 10_000, 5);
    expect(Date.now() - t0).toBeLessThan(4000); // before its settle time: the rename said it was complete
    // In place, half of each file, a pause, the rest: never read before it has been unchanged for settle_time.
    const inPlace = await fx.makeDelivery({ seq: 2, ageMs: 0, rows: rowsOf(500, 10), inPlace: { pauseMs: 300 } });
    const written = Date.now();
    const claimed = await d.waitFor(msg('delivery claimed', { file: inPlace.name }), 'the in-place delivery claimed');
    expect(Date.parse(claimed.time) - written).toBeGreaterThanOrEqual(4000 - 50);
    await until(() => hasAck(fx, inPlace.name), `the ACK of ${inPlace.name}`);
    expect(await fx.readJson('outbox', `${inPlace.name}.ack.json`)).toMatchObject({ status: 'accepted', sequence: 2 });
    expect(fx.rows()).toHaveLength(503);
    expect(fx.listDir('error')).toEqual([]);
  });

  it('the scheduled sweep picks a delivery up with the watcher disabled', async (t) => {
    const fx = await daemonFixture(t, { config: { watch: false, sweep: '*/1 * * * * *' } });
    const d = await daemon(t, fx);
    expect(d.logs.find(msg('inboxd started'))).toMatchObject({ watch: false, sweep: '*/1 * * * * *' });
    const del = await fx.makeDelivery({ seq: 1 });
    const t0 = Date.now();
    await until(() => hasAck(fx, del.name), 'the ACK', 10_000, 5);
    console.log(`sweep pickup (every second, no watcher): ${Date.now() - t0} ms`);
    expect(fx.rows()).toHaveLength(3);
    expect(await fx.readJson('outbox', `${del.name}.ack.json`)).toMatchObject({ status: 'accepted', sequence: 1 });
  });

  it('a delivery present at start is taken at once, before the first sweep', async (t) => {
    const fx = await daemonFixture(t, { config: { sweep: '0 0 1 1 *' } });
    const del = await fx.makeDelivery({ seq: 1 });
    await daemon(t, fx);
    await until(() => hasAck(fx, del.name), 'the ACK', 10_000);
    expect(fx.rows()).toHaveLength(3);
  });

  it('partners are processed in parallel up to max_parallel', async (t) => {
    const partners = { acme: { flows: { inventory: FLOW } }, beta: { flows: { inventory: FLOW } } };
    const fx = await daemonFixture(t, { config: { max_parallel: 2, partners } });
    const [a, b] = [await fx.makeDelivery({ seq: 1, rows: rowsOf(60_000) }), await fx.makeDelivery({ seq: 1, rows: rowsOf(60_000), partner: 'beta' })];
    const d = await daemon(t, fx);
    await until(() => hasAck(fx, a.name, 'acme') && hasAck(fx, b.name, 'beta'), 'both ACKs', 60_000, 50);
    // Both were claimed before either was answered.
    const order = d.logs.filter((l) => l.msg === 'delivery claimed' || l.msg === 'delivery accepted').map((l) => `${l.msg.split(' ')[1]} ${l.partner}`);
    expect(order.slice(0, 2).sort()).toEqual(['claimed acme', 'claimed beta']);
    expect(fx.query('SELECT count(*) AS n FROM inventory')).toEqual([{ n: 60_000 }]);
  });
});

describe('sequence order and the gap policy', () => {
  it('002 and 001 present together: 001 is applied first, then 002', async (t) => {
    const fx = await daemonFixture(t);
    await fx.makeDelivery({ seq: 2, rows: rowsOf(2, 20) });
    await fx.makeDelivery({ seq: 1, rows: rowsOf(2, 10) });
    const d = await daemon(t, fx);
    await d.waitForCount(msg('delivery accepted'), 2, 'accepted deliveries');
    const applied = fx.query('SELECT d.seq FROM dedupe d JOIN deliveries x ON x.id = d.delivery_id ORDER BY x.decided_at, x.id').map((r) => r.seq);
    expect(applied).toEqual([1, 2]);
    expect(d.logs.filter(msg('delivery accepted')).map((l) => l.seq)).toEqual([1, 2]);
    expect(fx.listDir('error')).toEqual([]);
    expect(d.count((l) => l.event === 'sequence.gap')).toBe(0);
  });

  it('wait: 003 after 001 is held while 002 is missing, then applied after gap_wait with a sequence.gap alert', async (t) => {
    const sink = await AlertSink.start();
    t.onTestFinished(() => sink.close());
    const fx = await daemonFixture(t, { flow: { sequence_gap: 'wait', gap_wait: '2s' }, config: { alert: { http: { url: sink.url }, retry: '4,200,full' } } });
    const d = await daemon(t, fx);
    await fx.makeDelivery({ seq: 1, ageMs: 0 });
    await until(() => hasAck(fx, nameFor(1)), 'the ACK of 001');
    const t0 = Date.now(); // 003 arrives after this
    await fx.makeDelivery({ seq: 3, ageMs: 0, rows: rowsOf(3, 30) });
    await sleep(t0 + 1000 - Date.now()); // halfway through gap_wait, however long the upload took
    // Held: untouched in the inbox, nothing decided.
    expect(hasAck(fx, nameFor(3))).toBe(false);
    expect(fx.listDir('inbox')).toContain(nameFor(3));
    expect(fx.query('SELECT seq FROM deliveries ORDER BY seq').map((r) => r.seq)).toEqual([1]);
    expect(sink.received).toEqual([]);

    await until(() => hasAck(fx, nameFor(3)), 'the ACK of 003', 10_000);
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(1900); // gap_wait 2 s, less the coarse clock of file times
    const alert = await sink.waitFor('sequence.gap');
    expect(alert).toMatchObject({ event: 'sequence.gap', partner: 'acme', flow: 'inventory', expected: 2, got: 3 });
    expect(d.logs.find((l) => l.event === 'sequence.gap')).toMatchObject({ level: 'warn', partner: 'acme', flow: 'inventory', expected: 2, seq: 3 });
    expect(fx.query('SELECT seq FROM dedupe ORDER BY seq').map((r) => r.seq)).toEqual([1, 3]);
    expect(sink.delivered('sequence.gap')).toHaveLength(1);
  });

  it('wait: the missing 002 arriving within gap_wait is applied first, then 003, no alert', async (t) => {
    const sink = await AlertSink.start();
    t.onTestFinished(() => sink.close());
    const fx = await daemonFixture(t, { flow: { sequence_gap: 'wait', gap_wait: '5s' }, config: { alert: { http: { url: sink.url }, retry: '4,200,full' } } });
    const d = await daemon(t, fx);
    await fx.makeDelivery({ seq: 1, ageMs: 0 });
    await until(() => hasAck(fx, nameFor(1)), 'the ACK of 001');
    await fx.makeDelivery({ seq: 3, ageMs: 0, rows: rowsOf(3, 30) });
    await sleep(700);
    await fx.makeDelivery({ seq: 2, ageMs: 0, rows: rowsOf(3, 20) });
    await d.waitForCount(msg('delivery accepted'), 3, 'accepted deliveries', 10_000);
    expect(d.logs.filter(msg('delivery accepted')).map((l) => l.seq)).toEqual([1, 2, 3]);
    await sleep(300);
    expect(sink.received).toEqual([]);
    expect(fx.listDir('error')).toEqual([]);
  });

  it('wait is measured from when the file arrived on this server, not its modification time (clients such as WinSCP keep the original time)', async (t) => {
    const fx = await daemonFixture(t, { flow: { sequence_gap: 'wait', gap_wait: '2s' } });
    await daemon(t, fx);
    await fx.makeDelivery({ seq: 1 });
    await until(() => hasAck(fx, nameFor(1)), 'the ACK of 001');
    const t0 = Date.now();
    await fx.makeDelivery({ seq: 3, ageMs: 3600_000 }); // uploaded now, stamped an hour ago
    await sleep(t0 + 1000 - Date.now()); // halfway through gap_wait, however long the upload took
    expect(hasAck(fx, nameFor(3))).toBe(false);
    expect(fx.listDir('inbox')).toContain(nameFor(3));
    await until(() => hasAck(fx, nameFor(3)), 'the ACK of 003', 10_000);
  });

  it('warn: 003 after 001 is applied at once, with a warning log line', async (t) => {
    const fx = await daemonFixture(t, { flow: { sequence_gap: 'warn', gap_wait: '1h' } });
    const d = await daemon(t, fx);
    await fx.makeDelivery({ seq: 1 });
    await until(() => hasAck(fx, nameFor(1)), 'the ACK of 001');
    await fx.makeDelivery({ seq: 3, ageMs: 0 });
    await until(() => hasAck(fx, nameFor(3)), 'the ACK of 003', 5_000);
    const warning = await d.waitFor((l) => l.event === 'sequence.gap', 'the gap warning');
    expect(warning).toMatchObject({ level: 'warn', partner: 'acme', flow: 'inventory', expected: 2, seq: 3, file: nameFor(3) });
    expect(fx.query('SELECT seq FROM dedupe ORDER BY seq').map((r) => r.seq)).toEqual([1, 3]);
  });

  it('a corrected file resent under the rejected one\'s name goes before the next sequence sent just after it', async (t) => {
    const fx = await daemonFixture(t, { settle_time: '1s', flow: { sequence_gap: 'warn' } });
    const d = await daemon(t, fx);
    await fx.makeDelivery({ seq: 1, corrupt: true });
    await d.waitFor(msg('delivery rejected', { seq: 1 }), 'the rejection of the damaged 001');
    await fx.makeDelivery({ seq: 1, rows: rowsOf(3, 10) });
    await fx.makeDelivery({ seq: 2, rows: rowsOf(3, 20) });
    await d.waitForCount(msg('delivery accepted'), 2, 'accepted deliveries', 10_000);
    expect(d.logs.filter((l) => /^delivery (accepted|rejected)$/.test(l.msg)).map((l) => `${l.seq} ${l.code ?? 'accepted'}`)).toEqual(['1 CHECKSUM_MISMATCH', '1 accepted', '2 accepted']);
    expect(fx.query('SELECT seq FROM dedupe ORDER BY seq').map((r) => r.seq)).toEqual([1, 2]);
  });

  it('an older sequence arriving after a newer one was applied is rejected SEQUENCE_OUT_OF_ORDER', async (t) => {
    const fx = await daemonFixture(t, { flow: { sequence_gap: 'warn' } });
    await daemon(t, fx);
    await fx.makeDelivery({ seq: 1, rows: rowsOf(2, 10) });
    await until(() => hasAck(fx, nameFor(1)), 'the ACK of 001');
    await fx.makeDelivery({ seq: 3, rows: rowsOf(2, 30) });
    await until(() => hasAck(fx, nameFor(3)), 'the ACK of 003');
    const rowsBefore = fx.rows();
    const late = await fx.makeDelivery({ seq: 2, rows: rowsOf(2, 30).map((r) => ({ ...r, Quantity: '999' })) });
    await until(() => existsSync(fx.path('error', `${late.name}.error.json`)), 'the error report of 002');
    expect(await fx.readJson('error', `${late.name}.error.json`)).toMatchObject({ status: 'rejected', code: 'SEQUENCE_OUT_OF_ORDER', sequence: 2 });
    expect(fx.listDir('error')).toEqual([...late.files, `${late.name}.error.json`].sort());
    expect(hasAck(fx, late.name)).toBe(false);
    expect(fx.rows()).toEqual(rowsBefore);
    expect(fx.query('SELECT seq FROM dedupe ORDER BY seq').map((r) => r.seq)).toEqual([1, 3]);
  });
});

/** A window that opens `inMs` from now (whole seconds, UTC) and lasts `durationS`: one occurrence a year. */
function windowSoon(inMs: number, durationS: number): { cron: string; opens: Date; closes: Date } {
  const opens = new Date(Math.ceil((Date.now() + inMs) / 1000) * 1000);
  const cron = `${opens.getUTCSeconds()} ${opens.getUTCMinutes()} ${opens.getUTCHours()} ${opens.getUTCDate()} ${opens.getUTCMonth() + 1} *`;
  return { cron, opens, closes: new Date(opens.getTime() + durationS * 1000) };
}

describe('delivery windows', () => {
  it('a window closing with no file: late event, error log, window.late alert; the late file is accepted, marked late and resolves it', async (t) => {
    const sink = await AlertSink.start();
    t.onTestFinished(() => sink.close());
    const w = windowSoon(4000, 4);
    const window = { cron: w.cron, duration: '4s', timezone: 'UTC', at_risk: '2s' };
    const partners = { acme: { flows: { inventory: { ...FLOW, window } } }, beta: { flows: { inventory: { ...FLOW, window } } } };
    const fx = await daemonFixture(t, { config: { partners, alert: { http: { url: sink.url }, retry: '4,200,full' } } });
    const d = await daemon(t, fx);
    expect(Date.now()).toBeLessThan(w.opens.getTime()); // the test relies on starting before the window opens

    // beta delivers inside the window; acme does not.
    await sleep(w.opens.getTime() - Date.now() + 100);
    const onTime = await fx.makeDelivery({ seq: 1, partner: 'beta' });
    await until(() => hasAck(fx, onTime.name, 'beta'), 'beta\'s ACK');

    // At risk two seconds into the window (2 s before the close), for acme only.
    const atRisk = await sink.waitFor('window.at_risk', 5_000);
    expect(atRisk).toMatchObject({ severity: 'warning', partner: 'acme', flow: 'inventory', opens_at: w.opens.toISOString(), closes_at: w.closes.toISOString() });
    expect(d.logs.find((l) => l.event === 'window.at_risk')).toMatchObject({ level: 'warn', partner: 'acme', flow: 'inventory' });

    const late = await sink.waitFor('window.late', 10_000);
    expect(Date.now()).toBeGreaterThanOrEqual(w.closes.getTime());
    expect(late).toMatchObject({ severity: 'critical', partner: 'acme', flow: 'inventory', opens_at: w.opens.toISOString(), closes_at: w.closes.toISOString() });
    expect(late.message).toMatch(/acme\/inventory/);
    expect(d.logs.find((l) => l.event === 'window.late')).toMatchObject({ level: 'error', partner: 'acme', flow: 'inventory', opens_at: w.opens.toISOString() });
    await until(() => fx.query('SELECT 1 FROM windows').length === 2, 'both windows judged');
    expect(fx.query('SELECT partner, status, at_risk_at IS NOT NULL AS warned FROM windows ORDER BY partner')).toEqual([
      { partner: 'acme', status: 'late', warned: 1 },
      { partner: 'beta', status: 'ok', warned: 0 },
    ]);

    // The late delivery: processed as usual, marked late, and the alert resolved.
    const del = await fx.makeDelivery({ seq: 1 });
    await until(() => hasAck(fx, del.name), 'the late delivery\'s ACK');
    const resolved = await sink.waitFor('window.resolved');
    const [rec] = fx.query("SELECT id, outcome, late FROM deliveries WHERE partner = 'acme'");
    expect(rec).toMatchObject({ outcome: 'accepted', late: 1 });
    expect(resolved).toMatchObject({ severity: 'info', partner: 'acme', flow: 'inventory', delivery_id: rec!.id, windows: [{ opens_at: w.opens.toISOString(), closes_at: w.closes.toISOString() }] });
    expect(fx.query("SELECT status, resolved_by FROM windows WHERE partner = 'acme'")).toEqual([{ status: 'resolved', resolved_by: rec!.id }]);
    expect(fx.query("SELECT late FROM deliveries WHERE partner = 'beta'")).toEqual([{ late: 0 }]);
    expect(fx.rows().filter((r) => r._delivery_id === rec!.id)).toHaveLength(3);
    // One alert of each kind: beta was never at risk nor late.
    expect(sink.delivered().map((a) => `${a.event} ${a.partner}`)).toEqual(['window.at_risk acme', 'window.late acme', 'window.resolved acme']);
  });

  it('a delivery that arrived in time but is still settling at the close is waited for: the window is on time, no alert', async (t) => {
    const sink = await AlertSink.start();
    t.onTestFinished(() => sink.close());
    const w = windowSoon(4000, 4);
    // settle_time 5 s: a delivery uploaded just after the window opens is only read after its close,
    // and it is there, received, when the at-risk warning (2 s before the close) would go.
    const window = { cron: w.cron, duration: '4s', at_risk: '2s' };
    const fx = await daemonFixture(t, { settle_time: '5s', flow: { window }, config: { alert: { http: { url: sink.url }, retry: '4,200,full' } } });
    const d = await daemon(t, fx);
    expect(Date.now()).toBeLessThan(w.opens.getTime()); // the test relies on starting before the window opens
    await sleep(w.opens.getTime() - Date.now() + 200);
    // Written in place: a delivery renamed in from temporary names would be complete, and taken at once.
    const del = await fx.makeDelivery({ seq: 1, ageMs: 0, inPlace: {} });
    expect(Date.now()).toBeLessThan(w.closes.getTime()); // uploaded inside the window
    await until(() => hasAck(fx, del.name), 'the ACK', 20_000);
    expect(Date.now()).toBeGreaterThan(w.closes.getTime()); // and decided after its close
    await until(() => fx.query('SELECT 1 FROM windows').length === 1, 'the window judged');
    expect(fx.query('SELECT status FROM windows')).toEqual([{ status: 'ok' }]);
    const [rec] = fx.query('SELECT late, received_at, decided_at FROM deliveries');
    expect(rec).toMatchObject({ late: 0 });
    expect(rec!.received_at < w.closes.toISOString() && rec!.decided_at > w.closes.toISOString(), JSON.stringify(rec)).toBe(true);
    await sleep(300);
    expect(sink.received).toEqual([]);
    expect(d.logs.filter((l) => l.event === 'window.late' || l.event === 'window.at_risk')).toEqual([]);
    expect(d.logs.find(msg('window closed with a delivery in progress: judged once it is decided'))).toMatchObject({ partner: 'acme', flow: 'inventory', closes_at: w.closes.toISOString() });
  });

  it('a partner directory that cannot be read does not keep a window from being judged late', async (t) => {
    const fx = await fixture(t, { flow: { window: { cron: '* * * * *', duration: '10s' } } });
    const config = loadConfig(fx.configPath);
    const store = await openStore(config);
    t.onTestFinished(() => store.close());
    const alerts: Alert[] = [];
    const keeper = new DeadlineKeeper(store, config.partners, createLogger('silent'), (a) => void alerts.push(a), config.tempPatterns);
    t.onTestFinished(() => keeper.stop());
    // Nothing has created the partner's directories: no inbox, no work directory to look into.
    await keeper.start(new Date(Date.now() + 130_000)); // two minutes' windows closed by then
    await until(() => alerts.length >= 2, 'the window.late alerts');
    expect(alerts.every((a) => a.event === 'window.late')).toBe(true);
    expect((await store.lateWindows('acme', 'inventory')).length).toBe(alerts.length);
  });

  it('a restart after the window closed judges it once; a restart after that does not alert again', async (t) => {
    const sink = await AlertSink.start();
    t.onTestFinished(() => sink.close());
    // The first daemon must be up before the window opens: 6 s leaves room for a start on a loaded machine.
    const w = windowSoon(6000, 1);
    const fx = await daemonFixture(t, { flow: { window: { cron: w.cron, duration: '1s' } }, config: { alert: { http: { url: sink.url }, retry: '4,200,full' } } });
    const first = await daemon(t, fx);
    expect((await first.stop()).code).toBe(0);
    await sleep(w.closes.getTime() - Date.now() + 200);
    const second = await daemon(t, fx);
    await sink.waitFor('window.late');
    expect((await second.stop()).code).toBe(0);
    const third = await daemon(t, fx);
    await sleep(500);
    expect((await third.stop()).code).toBe(0);
    expect(sink.delivered().map((a) => a.event)).toEqual(['window.late']);
    expect(fx.query('SELECT status FROM windows')).toEqual([{ status: 'late' }]);
  });

  it('a late delivery whose answer was cut short by a crash still resolves the late window after the restart', async (t) => {
    const sink = await AlertSink.start();
    t.onTestFinished(() => sink.close());
    const w = windowSoon(3000, 1);
    const fx = await daemonFixture(t, { flow: { window: { cron: w.cron, duration: '1s' } }, config: { alert: { http: { url: sink.url }, retry: '4,200,full' } } });
    const first = spawnDaemon(fx.configPath, { cwd: fx.dir, env: { INBOXD_TEST_CRASH_AT: 'after-commit' } });
    t.onTestFinished(() => void first.kill());
    await first.waitFor(msg('inboxd started'), 'inboxd started', 30_000);
    await sink.waitFor('window.late', 10_000);
    await fx.makeDelivery({ seq: 1 });
    expect((await first.exited).signal).toBe('SIGKILL'); // committed, not answered
    expect(fx.query('SELECT outcome, answered_at FROM deliveries')).toEqual([{ outcome: 'accepted', answered_at: null }]);

    await daemon(t, fx);
    const resolved = await sink.waitFor('window.resolved');
    const [rec] = fx.query('SELECT id, late, answered_at IS NOT NULL AS answered FROM deliveries');
    expect(rec).toMatchObject({ late: 1, answered: 1 });
    expect(resolved).toMatchObject({ partner: 'acme', flow: 'inventory', delivery_id: rec!.id });
    expect(fx.query('SELECT status, resolved_by FROM windows')).toEqual([{ status: 'resolved', resolved_by: rec!.id }]);
  });

  it('an alert endpoint failing twice is retried with backoff until it takes the alert', async (t) => {
    const sink = await AlertSink.start({ failFirst: 2 });
    t.onTestFinished(() => sink.close());
    const w = windowSoon(3000, 1);
    const fx = await daemonFixture(t, { flow: { window: { cron: w.cron, duration: '1s' } }, config: { alert: { http: { url: sink.url }, retry: '4,200,full' } } });
    const d = await daemon(t, fx);
    const late = await sink.waitFor('window.late', 10_000);
    expect(late).toMatchObject({ partner: 'acme', flow: 'inventory' });
    expect(sink.received.map((r) => r.status)).toEqual([500, 500, 200]);
    // Every attempt carried the same alert.
    expect(new Set(sink.received.map((r) => JSON.stringify(r.body))).size).toBe(1);
    await d.waitFor(msg('alert sent', { event: 'window.late' }), 'alert sent');
    expect(d.logs.filter(msg('alert failed; retrying')).map((l) => l.attempt)).toEqual([0, 1]);
  });

  it('the command form: the alert JSON arrives on the command\'s standard input', async (t) => {
    const fx = await daemonFixture(t);
    const out = join(fx.dir, 'alerts.jsonl');
    const script = join(fx.dir, 'alert.sh');
    writeFileSync(script, `#!/bin/sh\n# $1: where to append; the alert comes on stdin\n{ cat; echo; } >> "$1"\n`);
    chmodSync(script, 0o755);
    const w = windowSoon(3000, 1);
    await fx.writeConfig({ flow: { window: { cron: w.cron, duration: '1s' } }, config: { log_level: 'debug', alert: { command: [script, out], retry: '4,200,full' } } });
    await daemon(t, fx);
    const text = await until(() => existsSync(out) && readFileSync(out, 'utf8').endsWith('}\n') && readFileSync(out, 'utf8'), 'the command\'s output', 10_000);
    expect(text.trim().split('\n').map((l) => JSON.parse(l))).toEqual([expect.objectContaining({ event: 'window.late', severity: 'critical', partner: 'acme', flow: 'inventory', opens_at: w.opens.toISOString() })]);
  });
});

describe('shutdown', () => {
  const big = (fx: Fixture, seq = 1, n = 300_000) => fx.makeDelivery({ seq, rows: rowsOf(n) });

  it('SIGTERM mid-file with a short shutdown_timeout: rolled back, exit 0; the next start ingests it once', async (t) => {
    const fx = await daemonFixture(t, { config: { shutdown_timeout: '200ms' } });
    const d = await daemon(t, fx);
    const del = await big(fx);
    await d.waitFor(msg('delivery claimed'), 'the claim', 10_000);
    await sleep(300);
    expect(hasAck(fx, del.name)).toBe(false);
    const exit = await d.stop('SIGTERM');
    console.log(`SIGTERM mid-file (shutdown_timeout 200ms): exited ${exit.code} after ${exit.ms} ms`);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(exit.ms).toBeLessThan(5_000);
    expect(d.logs.find(msg('deliveries still in flight: rolling them back'))).toBeDefined();
    expect(d.logs.at(-1)).toMatchObject({ msg: 'stopped' });
    // Rolled back: as if it had never been taken.
    expect(fx.listDir('inbox')).toEqual([...del.files].sort());
    expect(fx.listWork()).toEqual([]);
    expect(fx.listDir('outbox')).toEqual([]);
    expect(fx.query('SELECT count(*) AS n FROM deliveries')).toEqual([{ n: 0 }]);
    expect(fx.query('SELECT count(*) AS n FROM inventory')).toEqual([{ n: 0 }]);

    const again = await daemon(t, fx);
    await until(() => hasAck(fx, del.name), 'the ACK after the restart', 60_000, 50);
    expect(fx.query('SELECT outcome, count(*) AS n FROM deliveries GROUP BY outcome')).toEqual([{ outcome: 'accepted', n: 1 }]);
    expect(fx.query('SELECT count(*) AS n FROM inventory')).toEqual([{ n: 300_000 }]);
    expect(fx.listDir('archive')).toEqual([...del.files].sort());
    expect((await again.stop()).code).toBe(0);
    expect(fx.listWork()).toEqual([]);
  });

  it('SIGTERM mid-file with time to spare: the delivery in flight finishes, no new one is taken, exit 0', async (t) => {
    const fx = await daemonFixture(t, { config: { shutdown_timeout: '60s' } });
    const d = await daemon(t, fx);
    const first = await big(fx, 1, 120_000);
    const second = await fx.makeDelivery({ seq: 2 });
    await d.waitFor(msg('delivery claimed', { seq: 1 }), 'the claim', 10_000);
    const exit = await d.stop('SIGTERM', 60_000);
    expect(exit).toMatchObject({ code: 0, signal: null });
    expect(hasAck(fx, first.name)).toBe(true);
    expect(fx.query('SELECT count(*) AS n FROM inventory')).toEqual([{ n: 120_000 }]);
    // Intake stopped with the signal: the next delivery was left for the next start.
    expect(fx.listDir('inbox')).toEqual([...second.files].sort());
    expect(d.logs.find((l) => l.msg === 'delivery claimed' && l.seq === 2)).toBeUndefined();
    expect(fx.listWork()).toEqual([]);
  });

  it('a second signal exits at once; the next start still ingests the delivery exactly once', async (t) => {
    const fx = await daemonFixture(t, { config: { shutdown_timeout: '60s' } });
    const d = await daemon(t, fx);
    const del = await big(fx, 1, 150_000);
    await d.waitFor(msg('delivery claimed'), 'the claim', 10_000);
    d.signal('SIGTERM');
    await d.waitFor(msg('stopping: no new deliveries are taken'), 'stopping');
    const exit = await d.stop('SIGINT', 5_000);
    expect(exit.code).toBe(130);
    expect(exit.ms).toBeLessThan(1_000);
    expect(d.logs.find(msg('second signal: exiting at once'))).toBeDefined();

    await daemon(t, fx);
    await until(() => hasAck(fx, del.name), 'the ACK after the restart', 60_000, 50);
    expect(fx.query('SELECT outcome, count(*) AS n FROM deliveries GROUP BY outcome')).toEqual([{ outcome: 'accepted', n: 1 }]);
    expect(fx.query('SELECT count(*) AS n FROM inventory')).toEqual([{ n: 150_000 }]);
    await until(() => fx.listWork().length === 0, 'an empty work directory');
  });

  it('SIGTERM while an alert is being retried: exits within shutdown_timeout all the same', async (t) => {
    const sink = await AlertSink.start({ failFirst: 1000 });
    t.onTestFinished(() => sink.close());
    const w = windowSoon(3000, 1);
    const fx = await daemonFixture(t, { flow: { window: { cron: w.cron, duration: '1s' } }, config: { shutdown_timeout: '1s', alert: { http: { url: sink.url }, retry: '10,60000,none' } } });
    const d = await daemon(t, fx);
    await until(() => sink.received.length >= 1, 'a first alert attempt', 10_000);
    const exit = await d.stop('SIGTERM', 20_000);
    expect(exit.code).toBe(0);
    expect(exit.ms).toBeLessThan(3_000);
  });

  it('SIGTERM during startup recovery: stops cleanly, exit 0, and never starts taking deliveries', async (t) => {
    // Twenty partners, each with an interrupted (claimed, never committed) delivery in its work directory.
    const ids = Array.from({ length: 20 }, (_, i) => `p${String(i).padStart(2, '0')}`);
    const fx = await daemonFixture(t, { config: { partners: Object.fromEntries(ids.map((id) => [id, { flows: { inventory: FLOW } }])) } });
    for (const id of ids) {
      const del = await fx.makeDelivery({ seq: 1, partner: id, rows: rowsOf(5_000) });
      const work = join(fx.root, '.work', id, '20250101T000000Z-000000');
      await fsp.mkdir(work, { recursive: true });
      for (const f of del.files) await fsp.rename(fx.path('inbox', f, id), join(work, f));
    }
    const d = spawnDaemon(fx.configPath, { cwd: fx.dir });
    t.onTestFinished(async () => {
      if (d.running) await d.kill();
    });
    await d.waitFor(msg('recovered: uncommitted delivery put back into the inbox'), 'the first recovery', 30_000);
    const exit = await d.stop('SIGTERM', 20_000);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    expect(d.stderr).toBe('');
    expect(d.logs.find(msg('delivery claimed'))).toBeUndefined();
  });
});
