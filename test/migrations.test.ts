/**
 * Schema migrations (issue 12, point 4): a database made by the last release is migrated in place by
 * the real CLI with its rows, dedupe history and audit trail intact; an empty one gets every migration;
 * a second open applies nothing; a database from a newer inboxd is refused (exit 78).
 *
 * test/fixtures/release-0.db was made by the last release's own CLI (scripts/make-release-db.sh; what
 * is in it: scripts/make-release-db.ts), with the acme inventory flow of test/helpers/fixture.ts.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDatabase } from '../src/store/sqlite/driver.js';
import { describe, expect, it } from 'vitest';
import { type Fixture, fixture, rowsOf, runCli, SLOW } from './helpers/fixture.js';
import { migrate, SCHEMA_VERSION } from '../src/store/sqlite/migrations.js';

const RELEASE_DB = fileURLToPath(new URL('./fixtures/release-0.db', import.meta.url));
const ops = (fx: Fixture, ...args: string[]) => runCli([...args, '--config', fx.configPath], { cwd: fx.dir });
const json = (r: { stdout: string }) => JSON.parse(r.stdout);
const version = (fx: Fixture) => fx.query('PRAGMA user_version')[0]!.user_version as number;
/** inboxd's own tables and indexes as SQLite holds them; the flows' target tables left out. */
const schema = (fx: Fixture) => fx.query("SELECT type, name, sql FROM sqlite_master WHERE tbl_name <> 'inventory' ORDER BY name");
/** Every table of the release, in full: what must survive the upgrade. */
const RELEASE_TABLES = ['deliveries', 'dedupe', 'events', 'windows', 'resolutions', 'meta', 'replay_requests', 'inventory'];
const contents = (fx: Fixture) => Object.fromEntries(RELEASE_TABLES.map((t) => [t, fx.query(`SELECT * FROM "${t}" ORDER BY ${t === 'inventory' ? 'sku' : 'rowid'}`)]));

async function fromRelease(t: Parameters<typeof fixture>[0]): Promise<Fixture> {
  const fx = await fixture(t);
  mkdirSync(dirname(fx.database), { recursive: true });
  copyFileSync(RELEASE_DB, fx.database);
  return fx;
}

describe.concurrent('schema migrations', SLOW, () => {
  it('a database made by the last release is migrated in place: its rows, dedupe history and audit trail intact', async (t) => {
    const fx = await fromRelease(t);
    expect(version(fx)).toBe(0);
    const before = contents(fx);
    const id = (seq: number, outcome: string, replay = false) => before.deliveries!.find((d) => d.seq === seq && d.outcome === outcome && !!d.replay_of === replay)!.id as string;
    const [first, rejected, duplicate, second, replay] = [id(1, 'accepted'), id(2, 'rejected'), id(1, 'duplicate'), id(2, 'accepted'), id(1, 'accepted', true)];

    // A resend of the old sequence 1, byte for byte, and a new sequence 3.
    const resent = await fx.makeDelivery({ seq: 1 });
    expect(resent.sha256).toBe(before.dedupe!.find((d) => d.seq === 1)!.sha256);
    const r = await fx.runOnce();
    expect(r.code, r.stderr).toBe(0);
    await fx.makeDelivery({ seq: 3, rows: rowsOf(1, 6) });
    expect((await fx.runOnce()).code).toBe(0);

    expect(version(fx)).toBe(SCHEMA_VERSION);
    expect(fx.query("SELECT name FROM sqlite_master WHERE name = 'attempts'")).toHaveLength(1);
    // Every row of the release is still there, unchanged; the new ones come after.
    const after = contents(fx);
    for (const table of RELEASE_TABLES) expect(after[table]!.slice(0, before[table]!.length), table).toEqual(before[table]);
    expect(fx.rows().map((row) => [row.sku, row.qty])).toEqual([['A-101', 11], ['A-102', 12], ['A-103', 13], ['A-104', 14], ['A-105', 15], ['A-106', 16]]);
    // The dedupe history: the resend is a duplicate of what the release applied last for sequence 1 (its replay).
    expect(await fx.errorReport()).toMatchObject({ status: 'duplicate', code: 'DUPLICATE', sequence: 1, sha256: resent.sha256 });
    const newDup = after.deliveries!.find((d) => d.outcome === 'duplicate' && d.id !== duplicate)!;
    expect(newDup.reason).toContain(`(delivery ${replay})`);

    // The audit trail, through the operations commands.
    const list = json(await ops(fx, 'deliveries', 'list', '--json'));
    expect(list.map((d: any) => d.id)).toEqual(expect.arrayContaining([first, rejected, duplicate, second, replay]));
    const shown = json(await ops(fx, 'deliveries', 'show', rejected, '--json'));
    expect(shown.timeline.map((e: any) => e.step)).toEqual(['received', 'ready', 'verified', 'rejected', 'answered', 'resolved']);
    expect(shown.resolution).toMatchObject({ byDelivery: null, note: 'resolved by an operator: the partner sent sequence 2 again, fixed' });
    expect(json(await ops(fx, 'deliveries', 'show', replay, '--json')).delivery).toMatchObject({ replayOf: first, outcome: 'accepted', seq: 1 });
    const status = json(await ops(fx, 'status', '--json'));
    expect(status.flows).toEqual([expect.objectContaining({ partner: 'acme', flow: 'inventory', lastSeqApplied: 3, lateWindows: [expect.objectContaining({ opensAt: before.windows![0]!.opens_at })] })]);
    expect(status.openErrors).toEqual([]);

    // The same tables, indexes and definitions as a database that never knew the release.
    const fresh = await fixture(t);
    expect((await fresh.runOnce()).code).toBe(0);
    expect(schema(fx)).toEqual(schema(fresh));
  });

  it('an empty database gets every migration, in one go; a second open applies nothing', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'inboxd-migrate-'));
    t.onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const db = openDatabase(join(dir, 'empty.db'));
    try {
      expect(migrate(db, 'empty.db')).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1));
      expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
      expect(tables).toEqual(['attempts', 'dedupe', 'deliveries', 'events', 'meta', 'remote_files', 'remote_state', 'remote_uploads', 'replay_requests', 'resolutions', 'windows']);
      const createdAt = db.prepare("SELECT value FROM meta WHERE key = 'created_at'").pluck().get();
      expect(migrate(db, 'empty.db')).toEqual([]);
      expect(db.prepare("SELECT value FROM meta WHERE key = 'created_at'").pluck().get()).toBe(createdAt);
    } finally {
      db.close();
    }

    // Through the CLI: a new database is at the latest version, and stays there.
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    expect(version(fx)).toBe(SCHEMA_VERSION);
    expect((await fx.runOnce()).code).toBe(0);
    expect(version(fx)).toBe(SCHEMA_VERSION);
    expect(fx.rows()).toHaveLength(3);
  });

  it('a database from a newer inboxd is refused (exit 78, naming both versions), and left as it is', async (t) => {
    const fx = await fromRelease(t);
    const future = SCHEMA_VERSION + 1;
    const db = openDatabase(fx.database);
    db.pragma(`user_version = ${future}`);
    db.close();
    const before = contents(fx);
    await fx.makeDelivery({ seq: 3 });

    const words = new RegExp(`DB_TOO_NEW.*database ${fx.database.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} has schema version ${future}, and this inboxd knows versions up to ${SCHEMA_VERSION}`);
    for (const run of [() => fx.runOnce(), () => ops(fx, 'status'), () => runCli(['check-config', '--config', fx.configPath])]) {
      const r = await run();
      expect(r.code, r.stderr).toBe(78);
      expect(r.stderr).toMatch(words);
    }
    expect(version(fx)).toBe(future);
    expect(contents(fx)).toEqual(before);
    expect(fx.listDir('inbox')).toHaveLength(3);
  });
});
