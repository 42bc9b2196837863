/**
 * Several inboxd instances on one PostgreSQL and one partner root (store/postgres/leases.ts): the
 * partners spread over them, a killed one's partners are taken over within the lease time, a stopped
 * one gives its leases back at once, and every delivery is applied exactly once, answered once, in
 * sequence order per flow.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FLOW, type DaemonProcess, msg, testDaemon, until } from './helpers/daemon.js';
import { type Fixture, fixture, nameFor, rowsOf, SLOW } from './helpers/fixture.js';
import { ls, partnerServer, partnerUploads, remoteConfig } from './helpers/partner-server.js';

const PARTNERS = Array.from({ length: 10 }, (_, i) => `p${String(i).padStart(2, '0')}`);
const SEQS = 6;
const ROWS = 300;

async function instancesFixture(t: Parameters<typeof fixture>[0]): Promise<Fixture> {
  const fx = await fixture(t);
  const partners = Object.fromEntries(PARTNERS.map((p) => [p, { flows: { inventory: { ...FLOW, table: `inv_${p}` } } }]));
  await fx.writeConfig({ config: { database: { url: fx.database, lease_ttl: '3s', pool_size: 6 }, partners, max_parallel: 2, retry_backoff: '1s' } });
  return fx;
}

const acks = (fx: Fixture) => PARTNERS.reduce((n, p) => n + fx.listDir('outbox', p).filter((f) => f.endsWith('.ack.json')).length, 0);
const held = (fx: Fixture) => fx.query('SELECT holder, count(*)::int AS n FROM leases WHERE holder IS NOT NULL AND expires_at > now() GROUP BY holder ORDER BY holder');

describe('several instances on one database and one root', () => {
  it('three instances, ten partners, one SIGKILLed and one stopped mid-run: every delivery applied once, answered once, in order', SLOW, async (t) => {
    const fx = await instancesFixture(t);
    const daemons: DaemonProcess[] = [];
    for (let i = 0; i < 3; i++) daemons.push(await testDaemon(t, fx));
    // The partners spread: the first to start takes them all, and gives back what is above its share
    // as the others join, until each of the three holds its fair share, four at most.
    const spread = await until(() => {
      const h = held(fx);
      return h.length === 3 && h.reduce((n, r) => n + Number(r.n), 0) === PARTNERS.length && Math.max(...h.map((r) => Number(r.n))) <= 4 && h;
    }, 'ten leases spread over three instances, four at most each', 30_000, 100);
    expect(Math.min(...spread.map((r) => Number(r.n)))).toBeGreaterThanOrEqual(2); // [4, 4, 2] or [4, 3, 3]: every one works
    const status = await fx.runOnce({ args: ['status', '--config', fx.configPath] });
    expect(status.stdout).toMatch(/Instances \(3 live\):/);

    const upload = async (seqs: number[]) => {
      for (const seq of seqs) for (const [i, p] of PARTNERS.entries()) await fx.makeDelivery({ partner: p, seq, rows: rowsOf(ROWS, i * 10_000 + seq * 1000) });
    };
    await upload([1, 2]);
    await until(() => acks(fx) >= 8, 'the first answers', 60_000, 100);
    const [killed, stopped, survivor] = daemons as [DaemonProcess, DaemonProcess, DaemonProcess];
    const killedId = String(killed.logs.find((l) => l.instance)?.instance ?? '');
    await upload([3, 4]);
    await killed.kill(); // SIGKILL, possibly mid-delivery: its leases lapse after lease_ttl
    await upload([5]);
    const stop = await stopped.stop('SIGTERM');
    expect(stop.code).toBe(0);
    await upload([6]);
    await until(() => acks(fx) === PARTNERS.length * SEQS, `${PARTNERS.length * SEQS} ACKs`, 150_000, 200);

    // Exactly once: one dedupe row and one accepted delivery per sequence, all rows there.
    expect(fx.query('SELECT count(*)::int AS n FROM dedupe')).toEqual([{ n: PARTNERS.length * SEQS }]);
    const accepted = fx.query("SELECT partner, seq FROM deliveries WHERE outcome = 'accepted' ORDER BY partner, decided_at");
    expect(accepted.length).toBe(PARTNERS.length * SEQS);
    for (const p of PARTNERS) {
      expect(accepted.filter((r) => r.partner === p).map((r) => r.seq), `sequence order of ${p}`).toEqual([1, 2, 3, 4, 5, 6]);
      expect(fx.query(`SELECT count(*)::int AS n FROM inv_${p}`)).toEqual([{ n: SEQS * ROWS }]);
      expect(fx.listDir('outbox', p), `one ACK per delivery of ${p}`).toEqual(Array.from({ length: SEQS }, (_, s) => `${nameFor(s + 1)}.ack.json`));
      expect(fx.listDir('error', p)).toEqual([]);
      expect(fx.listDir('inbox', p)).toEqual([]);
    }
    expect(fx.query("SELECT count(*)::int AS n FROM deliveries WHERE outcome <> 'accepted'")).toEqual([{ n: 0 }]);
    // The dead instances' partners were taken over: the survivor holds them all.
    const survivorId = String(survivor.logs.find((l) => l.instance)?.instance ?? '');
    await until(() => held(fx).length === 1 && held(fx)[0]!.holder === survivorId && Number(held(fx)[0]!.n) === PARTNERS.length, 'the survivor holds all ten', 20_000, 200);
    const took = survivor.logs.filter((l) => /lease on partner p\d+ taken/.test(String(l.msg)));
    expect(took.length).toBeGreaterThan(3);
    if (killedId) expect(fx.query('SELECT id FROM instances WHERE id = ? AND heartbeat_at > now() - interval \'3 seconds\'', killedId)).toEqual([]);
    await survivor.stop();
  });

  it('a replay asked for while instances run is carried out once, by the partner\'s holder', SLOW, async (t) => {
    const fx = await instancesFixture(t);
    const a = await testDaemon(t, fx);
    const b = await testDaemon(t, fx);
    await fx.makeDelivery({ partner: 'p03', seq: 1 });
    await until(() => fx.listDir('outbox', 'p03').length === 1, 'the ACK', 30_000);
    // Once the two have settled on five partners each, p03 has a holder that keeps it: the replay is queued for it.
    await until(() => {
      const h = held(fx);
      return h.length === 2 && h.every((r) => Number(r.n) === 5);
    }, 'five partners each', 30_000, 100);
    const id = fx.query("SELECT id FROM deliveries WHERE partner = 'p03'")[0]!.id as string;
    const replay = await fx.runOnce({ args: ['replay', id, '--config', fx.configPath] });
    expect(replay.code, replay.stderr).toBe(0);
    expect(fx.query("SELECT count(*)::int AS n FROM deliveries WHERE replay_of = ?", id)).toEqual([{ n: 1 }]);
    expect(fx.query("SELECT state FROM replay_requests")).toEqual([{ state: 'done' }]);
    const carriedOut = [a, b].filter((d) => d.logs.some((l) => l.replay_of === id));
    expect(carriedOut.length).toBe(1);
    void msg;
    await a.stop();
    await b.stop();
  });

  it('a remote partner is pulled by its holder alone: each file read from its server once, applied once, answered once', SLOW, async (t) => {
    const p = await partnerServer(t);
    const fx = await fixture(t);
    // Sweep once a year: what an instance takes, it takes because its own pull put it there.
    await fx.writeConfig({ config: { database: { url: fx.database, lease_ttl: '3s' }, log_level: 'debug', sweep: '0 0 1 1 *', partners: { acme: { remote: remoteConfig(p), flows: { inventory: FLOW } } } } });
    const daemons = [await testDaemon(t, fx), await testDaemon(t, fx)];
    const uploaded = [];
    for (let seq = 1; seq <= 4; seq++) uploaded.push(await partnerUploads(p.inbox, seq, rowsOf(3, seq * 10)));
    await until(() => ls(p.outbox).length === 4 && ls(p.archive).length === 12, 'four ACKs in the partner outbox, twelve originals in its archive', 60_000, 100);

    const pulls = daemons.map((d) => d.count(msg('pulled from the partner server')));
    expect(pulls.reduce((a, b) => a + b, 0)).toBe(12); // each file once
    expect(pulls.filter((n) => n > 0)).toHaveLength(1); // by the one instance holding acme
    for (const d of uploaded) {
      expect(p.ops().filter((l) => l.startsWith(`open "${join(p.inbox, d.name)}" flags READ`)), d.name).toHaveLength(1);
    }
    expect(fx.query('SELECT seq, outcome, code, reason FROM deliveries ORDER BY seq')).toEqual([1, 2, 3, 4].map((seq) => ({ seq, outcome: 'accepted', code: null, reason: null })));
    expect(fx.query('SELECT count(*)::int AS n FROM dedupe')).toEqual([{ n: 4 }]);
    expect(fx.rows()).toHaveLength(12);
    expect(ls(p.outbox)).toEqual(uploaded.map((d) => `${d.name}.ack.json`));
    for (const d of daemons) await d.stop();
  });
});
