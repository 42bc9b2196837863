/**
 * A delivery left waiting says why: the daemon logs it once (not every sweep), `run --once` lists each
 * waiting delivery in its summary (the `run complete` line and stderr), with what it waits for and until when.
 */
import { describe, expect, it } from 'vitest';
import { sleep, testDaemon } from './helpers/daemon.js';
import { fixture, nameFor } from './helpers/fixture.js';

describe('waiting deliveries', () => {
  it('run --once: one waiting for its manifest and one held by the gap policy are listed, with until when', async (t) => {
    const fx = await fixture(t, { incomplete_after: '15m', flow: { sequence_gap: 'wait', gap_wait: '1h' } });
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    await fx.makeDelivery({ seq: 3 });
    const noManifest = await fx.makeDelivery({ name: 'inventory_20250916T0300Z_001.csv', manifest: false, ageMs: 0 });
    const t0 = Date.now();
    const r = await fx.runOnce();
    expect(r.code).toBe(0);
    const summary = r.logs.find((l) => l.msg === 'run complete')!;
    expect(summary.waiting).toBe(2);
    const byFile = Object.fromEntries((summary.waits as Record<string, any>[]).map((w) => [w.file, w]));
    expect(byFile[noManifest.name]).toMatchObject({ partner: 'acme', reason: 'companion', waits_for: `${noManifest.name}.manifest.json (incomplete_after)` });
    expect(Date.parse(byFile[noManifest.name].until) - t0).toBeGreaterThan(14 * 60_000);
    expect(byFile[nameFor(3)]).toMatchObject({ reason: 'gap', waits_for: 'sequence 2 of flow inventory (gap_wait)' });
    expect(Date.parse(byFile[nameFor(3)].until) - t0).toBeGreaterThan(58 * 60_000);
    expect(r.stderr).toContain(`waiting: acme/${nameFor(3)} waits for sequence 2 of flow inventory (gap_wait) until ${byFile[nameFor(3)].until}`);
    expect(r.stderr).toContain(`waiting: acme/${noManifest.name} waits for ${noManifest.name}.manifest.json (incomplete_after) until`);
    expect(r.logs.filter((l) => l.event === 'delivery.waiting')).toHaveLength(2);
  });

  it('the daemon says once that a delivery waits, however many sweeps find it waiting', async (t) => {
    const fx = await fixture(t, { incomplete_after: '15m', flow: { sequence_gap: 'wait', gap_wait: '1h' }, config: { sweep: '*/1 * * * * *' } });
    const d = await testDaemon(t, fx, undefined, 60);
    const del = await fx.makeDelivery({ seq: 2, manifest: false });
    await d.waitFor((l) => l.event === 'delivery.waiting', 'a delivery.waiting line');
    await sleep(3500); // three scheduled sweeps more
    const said = d.logs.filter((l) => l.event === 'delivery.waiting');
    expect(said).toHaveLength(1);
    expect(said[0]).toMatchObject({ level: 'info', partner: 'acme', file: del.name, reason: 'companion', waits_for: `${del.name}.manifest.json (incomplete_after)` });
    expect(said[0]!.msg).toMatch(new RegExp(`^acme/${del.name} waits for ${del.name}.manifest.json \\(incomplete_after\\) until \\d{4}-`));
  }, 30_000);
});
