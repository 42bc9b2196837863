/**
 * Notifications (issue 15): every delivery outcome told to the `notify` actions that want it (events
 * and partners filters), by HTTP POST or a command, retried with backoff like alerts, never holding
 * a delivery up; `run --once` waits for them before it exits.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AlertSink, testDaemon, until } from './helpers/daemon.js';
import { fixture, nameFor, row } from './helpers/fixture.js';

describe('notify', () => {
  it('run --once: accepted, rejected and duplicate are notified, each action only of what it wants', async (t) => {
    const sink = await AlertSink.start({ failFirst: 2 }); // retried with backoff: the third attempt gets through
    t.onTestFinished(() => sink.close());
    const fx = await fixture(t);
    const log = join(fx.dir, 'notified.jsonl');
    await fx.writeConfig({ config: { notify: [
      { http: { url: sink.url }, retry: '4,200,full', events: ['delivery.accepted', 'delivery.rejected'], partners: ['acme'] },
      { command: ['sh', '-c', `cat >> '${log}'; echo >> '${log}'`] },
    ] } });
    await fx.makeDelivery({ seq: 1 });
    await fx.makeDelivery({ seq: 2, rows: [row(4, { Quantity: 'x' })] });
    const first = await fx.runOnce();
    expect(first.code).toBe(1);
    // run --once waited for the notifications, retries included, before it exited
    expect(sink.delivered().map((n) => [n.event, n.file]).sort()).toEqual([['delivery.accepted', nameFor(1)], ['delivery.rejected', nameFor(2)]]);
    expect(sink.received.filter((r) => r.status === 500)).toHaveLength(2);
    expect(first.logs.filter((l) => l.msg === 'notification failed; retrying')).toHaveLength(2);
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    expect(sink.delivered('delivery.duplicate')).toEqual([]); // not among that action's events
    const byCommand = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
    expect(byCommand.map((n) => n.event)).toEqual(['delivery.accepted', 'delivery.rejected', 'delivery.duplicate']);
    const [accepted, rejected, duplicate] = byCommand;
    expect(accepted).toMatchObject({ partner: 'acme', flow: 'inventory', file: nameFor(1), sequence: 1, code: null, records: 3, rows_rejected: 0, message: `acme/inventory: ${nameFor(1)} accepted (3 records)` });
    expect(accepted!.delivery_id).toBe(fx.query('SELECT id FROM deliveries WHERE seq = 1 AND outcome = ?', 'accepted')[0]!.id);
    expect(rejected).toMatchObject({ file: nameFor(2), sequence: 2, code: 'ROW_ERRORS', reason: expect.stringContaining('invalid') });
    expect(duplicate).toMatchObject({ file: nameFor(1), code: 'DUPLICATE' });
  });

  it('the daemon answers the partner without waiting for a notification still being retried', async (t) => {
    const sink = await AlertSink.start({ failFirst: 3 });
    t.onTestFinished(() => sink.close());
    const fx = await fixture(t, { config: { notify: [{ http: { url: sink.url }, retry: '5,1500,none' }] } });
    const d = await testDaemon(t, fx, undefined, 60);
    await fx.makeDelivery({ seq: 1, ageMs: 0 });
    const acked = await until(() => fx.listDir('outbox').includes(`${nameFor(1)}.ack.json`) && Date.now(), 'the ACK of 001');
    // The next delivery is taken and answered while the first one's notification is still being retried (1 s, then 1.5 s twice).
    await fx.makeDelivery({ seq: 2, ageMs: 0 });
    await until(() => fx.listDir('outbox').includes(`${nameFor(2)}.ack.json`), 'the ACK of 002');
    expect(sink.delivered()).toEqual([]);
    await until(() => sink.delivered().length === 2, 'both notifications');
    expect(sink.delivered().map((n) => n.file).sort()).toEqual([nameFor(1), nameFor(2)]);
    expect(sink.received.at(-1)!.at - acked).toBeGreaterThan(2000);
    expect(d.logs.some((l) => l.msg === 'notification sent' && l.event === 'delivery.accepted')).toBe(true);
  }, 30_000);

  it('a notify filter naming no configured partner is a configuration error (78)', async (t) => {
    const fx = await fixture(t, { config: { notify: [{ command: ['true'] }, { command: ['true'], partners: ['acme', 'acmee'], events: ['delivery.accepted'] }] } });
    const r = await fx.runOnce();
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('notify[1].partners: "acmee" is not a configured partner');
    await fx.writeConfig({ config: { notify: [{ command: ['true'], events: ['delivery.late'] }] } });
    const unknownEvent = await fx.runOnce();
    expect(unknownEvent.code).toBe(78);
    expect(unknownEvent.stderr).toMatch(/notify\.0\.events\.0|notify\[0\]\.events\[0\]/);
  });
});
