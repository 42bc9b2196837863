/**
 * Crash safety of the daemon, proven with real processes: the SIGKILL campaign (test/helpers/campaign.js,
 * shared with `npm run soak`) kills the daemon dozens of times at random moments while deliveries
 * stream in, and the end state must be exactly that of one clean run. Plus the crash moments too
 * narrow for random kills to hit often, set up by hand.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCampaign } from './helpers/campaign.js';
import { atLeast, fixture } from './helpers/fixture.js';

describe('SIGKILL campaign', () => {
  it('killed at dozens of random moments while deliveries stream in: the end state is exactly that of one clean run', async (t) => {
    const kills = Number(process.env.INBOXD_CAMPAIGN_KILLS ?? 30);
    const seed = process.env.INBOXD_CAMPAIGN_SEED === undefined ? undefined : Number(process.env.INBOXD_CAMPAIGN_SEED);
    const dir = await fsp.mkdtemp(join(tmpdir(), 'inboxd-campaign-'));
    const seen: { seed?: number } = {};
    t.onTestFailed(() => console.error(`campaign trees kept for inspection: ${dir} (replay with INBOXD_CAMPAIGN_SEED=${seen.seed})`));
    const result = await runCampaign({ dir, kills, seed, largeRows: [20_000, 50_000], log: (s: string) => console.log(s) });
    seen.seed = result.seed;
    const { problems, errors, ...summary } = result;
    console.log(`campaign: ${JSON.stringify(summary)}`);
    if (errors.length) console.log(`error-level log lines:\n${errors.map((e) => JSON.stringify(e)).join('\n')}`);
    expect(problems).toEqual([]);
    expect(result.kills).toBe(kills);
    expect(Object.values(result.outcomes).reduce((a, b) => a + b, 0)).toBe(result.uploads);
    // A crash is no excuse for an error: recovery puts everything right without one.
    expect(errors).toEqual([]);
    if (!process.env.INBOXD_KEEP_FIXTURES) await fsp.rm(dir, { recursive: true, force: true });
  }, 600_000);
});

describe('crash moments set up by hand', () => {
  it('killed between link and unlink while a delivery was put back: the next run takes it once and leaves nothing behind', async (t) => {
    // moveNoClobber is link + unlink; a crash between the two leaves the data file in the inbox and in the work dir.
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1 });
    const work = join(fx.workDir, '20250916T020000Z-0a0b0c');
    await fsp.mkdir(work, { recursive: true });
    await fsp.link(fx.path('inbox', d.name), join(work, d.name));
    for (const f of d.files.slice(1)) await fsp.rename(fx.path('inbox', f), join(work, f));

    const first = await fx.runOnce();
    expect(first.code).toBe(0);
    expect(first.logs.filter((l) => atLeast(l, 'error'))).toEqual([]);
    const second = await fx.runOnce();
    expect(second.code).toBe(0);
    expect(fx.query('SELECT outcome, count(*) AS n FROM deliveries GROUP BY outcome')).toEqual([{ outcome: 'accepted', n: 1 }]);
    expect(fx.listDir('outbox')).toEqual([`${d.name}.ack.json`]);
    expect(fx.listDir('archive')).toEqual([...d.files].sort());
    expect(fx.listDir('error')).toEqual([]);
    expect(fx.listDir('inbox')).toEqual([]);
    expect(fx.listWork()).toEqual([]);
  });
});
