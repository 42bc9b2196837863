/**
 * PostgreSQL as the database (the `postgres` project; the shared contract suites run here too): the
 * configuration, the types and tables made from the mapping, what a resent snapshot costs, and the
 * faults of a server that is away, restarted or slow. The faults get a server of their own, as they
 * stop and restart it; the rest use a database of their own on the run's server (helpers/backend.ts).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { fixture, nameFor, row, rowsOf, SLOW } from './helpers/fixture.js';
import { msg, spawnDaemon, testDaemon, until } from './helpers/daemon.js';
import { freePort, type Postgres, startPostgres } from './helpers/postgres.js';
import { connectOptions, PgDb } from '../src/store/postgres/db.js';
import { classify } from '../src/errors.js';

/** The fixture's configuration with `database` replaced. */
async function withDatabase(fx: Awaited<ReturnType<typeof fixture>>, database: unknown): Promise<void> {
  const text = await fsp.readFile(fx.configPath, 'utf8');
  const { parse } = await import('yaml');
  await fsp.writeFile(fx.configPath, stringify({ ...(parse(text) as object), database }));
}

describe('database: a PostgreSQL URL or object', () => {
  it('a password in the URL is refused (exit 78, naming the key); a missing password_env too', async (t) => {
    const fx = await fixture(t);
    await withDatabase(fx, 'postgres://inboxd:secret@127.0.0.1:1/x');
    const inUrl = await fx.runOnce();
    expect(inUrl.code).toBe(78);
    expect(inUrl.stderr).toContain('database: the URL holds a password: secrets are never inline');
    await withDatabase(fx, { url: fx.database, password_env: 'INBOXD_TEST_NO_SUCH_VAR' });
    const noEnv = await fx.runOnce();
    expect(noEnv.code).toBe(78);
    expect(noEnv.stderr).toContain('INBOXD_TEST_NO_SUCH_VAR (password_env) is not set');
  });

  it('rows land typed in the target schema, inboxd\'s own tables in theirs; status and deliveries read them', async (t) => {
    const fx = await fixture(t, { flow: { table: 'sales.inventory' } });
    fx.execute('CREATE SCHEMA sales');
    await withDatabase(fx, { url: fx.database, schema: 'inboxd_ops', pool_size: 4 });
    await fx.makeDelivery({ rows: rowsOf(3) });
    const run = await fx.runOnce();
    expect(run.code, run.stderr).toBe(0);
    const types = fx.query("SELECT column_name AS c, data_type AS t FROM information_schema.columns WHERE table_schema = 'sales' AND table_name = 'inventory' ORDER BY ordinal_position");
    expect(Object.fromEntries(types.map((r) => [r.c, r.t]))).toEqual({
      sku: 'text', warehouse: 'text', qty: 'bigint', unit_cost: 'bigint', currency: 'text', condition: 'text', active: 'boolean',
      contact: 'text', updated_at: 'timestamp with time zone', _delivery_id: 'text', _updated_at: 'timestamp with time zone',
    });
    expect(fx.query('SELECT sku, qty, unit_cost, active, updated_at FROM sales.inventory ORDER BY sku')).toEqual([
      { sku: 'A-101', qty: 11, unit_cost: 150, active: 1, updated_at: '2025-09-16T01:55:00Z' },
      { sku: 'A-102', qty: 12, unit_cost: 150, active: 0, updated_at: '2025-09-16T01:55:00Z' },
      { sku: 'A-103', qty: 13, unit_cost: 150, active: 1, updated_at: '2025-09-16T01:55:00Z' },
    ]);
    expect(fx.query('SELECT outcome, seq FROM inboxd_ops.deliveries')).toEqual([{ outcome: 'accepted', seq: 1 }]);
    expect(fx.query("SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'inboxd_ops' AND tablename LIKE 'stg%'")).toEqual([{ n: 0 }]);
    expect(await fx.readJson('outbox', `${nameFor(1)}.ack.json`)).toMatchObject({ status: 'accepted', records: 3 });
    const status = await fx.runOnce({ args: ['status', '--config', fx.configPath] });
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/acme\s+inventory/);
    const list = await fx.runOnce({ args: ['deliveries', 'list', '--config', fx.configPath] });
    expect(list.stdout).toContain(nameFor(1));
  });

  it('a resent snapshot under a new sequence rewrites nothing: unchanged rows keep their delivery and time', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, rows: rowsOf(4) });
    expect((await fx.runOnce()).code).toBe(0);
    const before = fx.query('SELECT sku, _delivery_id, _updated_at FROM inventory ORDER BY sku');
    await fx.makeDelivery({ seq: 2, rows: [...rowsOf(3), row(4, { Quantity: '99' })] });
    expect((await fx.runOnce()).code).toBe(0);
    const after = fx.query('SELECT sku, qty, _delivery_id, _updated_at FROM inventory ORDER BY sku');
    expect(after.slice(0, 3).map(({ qty: _, ...r }) => r)).toEqual(before.slice(0, 3));
    expect(after[3]).toMatchObject({ sku: 'A-104', qty: 99 });
    expect(after[3]!._delivery_id).not.toBe(before[3]!._delivery_id);
    const second = fx.query("SELECT id FROM deliveries WHERE seq = 2")[0]!.id as string;
    expect(fx.query("SELECT detail FROM events WHERE delivery_id = ? AND step = 'committed'", second)).toEqual([{ detail: '1 rows written to inventory; 3 unchanged or repeated in the file' }]);
  });

  it('an existing table whose column type disagrees with the mapping: exit 78 naming the column, nothing taken', async (t) => {
    const fx = await fixture(t);
    fx.execute('CREATE TABLE inventory (sku text NOT NULL, warehouse text NOT NULL, qty text, PRIMARY KEY (sku, warehouse))');
    const d = await fx.makeDelivery();
    const run = await fx.runOnce();
    expect(run.code).toBe(78);
    expect(run.stderr).toContain('table "inventory" column "qty" is text, but the mapping makes it integer (bigint)');
    expect(fx.listDir('inbox')).toEqual([...d.files].sort());
    expect(fx.query('SELECT count(*)::int AS n FROM inventory')).toEqual([{ n: 0 }]);
  });

  it('a mapping column added later becomes a new column; old rows keep NULL in it', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    await fsp.appendFile(join(fx.dir, 'acme-inventory.csv'), 'note,Note,string:20,,,added later\n');
    await fx.makeDelivery({ seq: 2, header: [...Object.keys(row(1)), 'Note'], rows: [{ ...row(9), Note: 'hello' }] });
    const run = await fx.runOnce();
    expect(run.code, run.stderr).toBe(0);
    expect(fx.query('SELECT sku, note FROM inventory ORDER BY sku')).toEqual([
      { sku: 'A-101', note: null }, { sku: 'A-102', note: null }, { sku: 'A-103', note: null }, { sku: 'A-109', note: 'hello' },
    ]);
  });
});

describe('PostgreSQL faults', () => {
  let pg: Postgres;
  beforeAll(async () => {
    pg = await startPostgres();
  });
  afterAll(() => pg?.destroy());

  /** A fixture on this block's own server, which the tests stop and restart; deliveries failed for it are retried after a second. */
  async function faultFixture(t: Parameters<typeof fixture>[0], name: string) {
    const fx = await fixture(t);
    fx.database = pg.database(name);
    await fx.writeConfig({ config: { retry_backoff: '1s' } });
    return fx;
  }

  it('the database down at start: run --once exits 75 and takes nothing; the daemon waits for it, then works', SLOW, async (t) => {
    const fx = await faultFixture(t, 'down_at_start');
    const port = await freePort();
    await fx.writeConfig({ config: { retry_backoff: '1s', http: { listen: `127.0.0.1:${port}` } } });
    const d = await fx.makeDelivery();
    pg.stop();
    try {
      const once = await fx.runOnce();
      expect(once.code).toBe(75);
      expect(once.stderr).toMatch(/DB_UNAVAILABLE: database postgres:\/\/inboxd@127\.0\.0\.1:\d+\/down_at_start/);
      expect(fx.listDir('inbox')).toEqual([...d.files].sort());
      const daemon = spawnTestDaemon(t, fx);
      await daemon.waitFor(msg(/waiting for the database, trying again in/), 'waiting for the database', 20_000);
      // Not ready, and saying why, while it waits.
      const waiting = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(waiting.status).toBe(503);
      expect((await waiting.json()).checks.database).toMatch(/^not usable: database postgres:\/\/.*ECONNREFUSED/);
      pg.start();
      await daemon.waitFor(msg('inboxd started'), 'started once the database is up', 60_000);
      await until(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200, 'ready once started', 20_000, 100);
      await until(() => fx.listDir('outbox').length === 1, 'the ACK', 30_000);
      expect(fx.rows().length).toBe(3);
      await daemon.stop();
    } finally {
      if (!pgRunning(pg)) pg.start();
    }
  });

  it('PostgreSQL restarted (pg_ctl restart -m fast) while deliveries stream: each applied once, none lost', SLOW, async (t) => {
    const fx = await faultFixture(t, 'restart');
    const daemon = await testDaemon(t, fx);
    const total = 12;
    for (let seq = 1; seq <= total; seq++) {
      await fx.makeDelivery({ seq, rows: rowsOf(2000, seq * 10_000) });
      if (seq === 4) pg.restart();
      if (seq === 8) pg.restart();
      await new Promise((r) => setTimeout(r, 150));
    }
    await until(() => fx.listDir('outbox').filter((n) => n.endsWith('.ack.json')).length === total, `${total} ACKs`, 120_000, 200);
    expect(fx.query("SELECT seq FROM deliveries WHERE outcome = 'accepted' ORDER BY seq").map((r) => r.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    expect(fx.query('SELECT count(*)::int AS n FROM inventory')).toEqual([{ n: total * 2000 }]);
    expect(fx.query('SELECT count(*)::int AS n FROM dedupe')).toEqual([{ n: total }]);
    expect(fx.listDir('inbox')).toEqual([]);
    expect(fx.listDir('error')).toEqual([]);
    await daemon.stop();
  });

  it('the server gone mid-delivery: the delivery goes back to the inbox, nothing half-applied; applied once it is back', SLOW, async (t) => {
    const fx = await faultFixture(t, 'lost_mid');
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    const daemon = await testDaemon(t, fx);
    // A delivery large enough to be streaming when the server goes: its rows are in staging, none committed.
    await fx.makeDelivery({ seq: 2, rows: rowsOf(150_000, 100) });
    await daemon.waitFor(msg('delivery claimed', { seq: 2 }), 'sequence 2 claimed', 30_000);
    pg.stop();
    try {
      await daemon.waitFor((l) => /put back to be tried again/.test(String(l.msg)), 'put back', 30_000);
      expect(fx.listDir('inbox')).toContain(nameFor(2));
    } finally {
      pg.start();
    }
    // Never half-applied: read in one snapshot, either as sequence 1 left it, or (the retry was quick) all of sequence 2.
    const seen = fx.query('SELECT (SELECT count(*) FROM inventory)::int AS rows, (SELECT count(*) FROM dedupe)::int AS seqs')[0];
    expect([{ rows: 3, seqs: 1 }, { rows: 150_003, seqs: 2 }]).toContainEqual(seen);
    await until(() => fx.listDir('outbox').includes(`${nameFor(2)}.ack.json`), 'the ACK of sequence 2', 120_000, 200);
    expect(fx.query('SELECT count(*)::int AS n FROM inventory')).toEqual([{ n: 150_003 }]);
    expect(fx.query('SELECT seq FROM dedupe ORDER BY seq').map((r) => r.seq)).toEqual([1, 2]);
    await daemon.stop();
  });

  it('statement timeouts, deadlocks and serialization failures are retried by SQLSTATE', async () => {
    const open = (timeoutMs: number) => new PgDb('faults', 'inboxd', connectOptions({ url: pg.database('sqlstate'), schema: 'inboxd', poolSize: 4, ssl: false, statementTimeoutMs: timeoutMs, leaseTtlMs: 15_000 }), 4);
    const quick = open(200);
    const db = open(30_000);
    try {
      const timeout = classify(await quick.query('SELECT pg_sleep(2)').catch((e: unknown) => e));
      expect({ code: timeout.code, cause: timeout.details.cause, kind: timeout.kind }).toEqual({ code: 'DB_BUSY', cause: '57014', kind: 'retry' });
      const serial = classify(await db.query("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END $$").catch((e: unknown) => e));
      expect([serial.code, serial.details.cause]).toEqual(['DB_BUSY', '40001']);
      await db.query('CREATE TABLE d (id int PRIMARY KEY, v int)');
      await db.query('INSERT INTO d VALUES (1, 0), (2, 0)');
      // A real deadlock: two transactions taking the same two rows in opposite order; the server cancels one.
      let step!: () => void;
      const bothHaveOne = new Promise<void>((r) => (step = r));
      let held = 0;
      const cross = (first: number, second: number) => db.tx(async (c) => {
        await c.query('UPDATE d SET v = v + 1 WHERE id = $1', [first]);
        if (++held === 2) step();
        await bothHaveOne;
        await c.query('UPDATE d SET v = v + 1 WHERE id = $1', [second]);
      });
      const outcomes = await Promise.allSettled([cross(1, 2), cross(2, 1)]);
      const failures = outcomes.filter((o) => o.status === 'rejected').map((o) => classify((o).reason));
      expect(failures.map((f) => [f.code, f.details.cause])).toEqual([['DB_BUSY', '40P01']]);
    } finally {
      await quick.close();
      await db.close();
    }
  });
});

function pgRunning(pg: Postgres): boolean {
  try {
    pg.sql('SELECT 1');
    return true;
  } catch {
    return false;
  }
}

/** A daemon that may not start yet (it waits for the database): spawned, not waited for; killed when the test ends. */
function spawnTestDaemon(t: Parameters<typeof fixture>[0], fx: Awaited<ReturnType<typeof fixture>>) {
  const d = spawnDaemon(fx.configPath, { cwd: fx.dir });
  t.onTestFinished(async () => {
    if (d.running) await d.kill();
  });
  return d;
}
