/**
 * Starting, and refusing to start, through the real CLI: a failed start exits with its code within a
 * second and leaves nothing behind (issue 10); the partner tree is made of real directories inside root,
 * and the database and work directory are where no partner can reach them (issue 11, points 4 and 5);
 * one inboxd per database, work directory and root (point 6); database errors name the database, a
 * read-only one is configuration, a full disk makes /readyz say so (point 8).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, promises as fsp, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { AlertSink, FLOW, msg, spawnDaemon, testDaemon, until } from './helpers/daemon.js';
import { atLeast, type Fixture, fixture, runCli, SLOW } from './helpers/fixture.js';
import { canMount, mountTmpfs } from './helpers/mount.js';
import { loadConfig } from '../src/config/config.js';
import { lockInstance } from '../src/store/open.js';
import { createLogger } from '../src/log.js';
import { runOnce } from '../src/ingest/pass.js';

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const checkConfig = (fx: Fixture) => runCli(['check-config', '--config', fx.configPath]);

/**
 * The daemon (`inboxd run`, no --once) when its start is to fail: how it exited, what it said on
 * stderr, and how long it lived on after saying it (what it failed to give back would keep it alive).
 */
async function failedStart(fx: Fixture, configPath = fx.configPath) {
  const d = spawnDaemon(configPath, { cwd: fx.dir });
  let said = 0;
  d.child.stderr!.once('data', () => (said = Date.now()));
  const kill = setTimeout(() => d.signal('SIGKILL'), 30_000);
  const exit = await d.exited;
  clearTimeout(kill);
  return { code: exit.code ?? exit.signal, lines: d.stderr.trim().split('\n'), lingeredMs: exit.at - said };
}

/** Another configuration beside the fixture's: its YAML with `over` merged in, written to `name`. */
async function variant(fx: Fixture, name: string, over: Record<string, unknown>): Promise<string> {
  const path = join(fx.dir, name);
  await fsp.writeFile(path, stringify({ ...parse(await fsp.readFile(fx.configPath, 'utf8')), ...over }));
  return path;
}

describe.concurrent('a failed start gives back what it took and exits with its code within a second', SLOW, () => {
  it('a second daemon on the same database: 75 (DB_BUSY); the first goes on', async (t) => {
    const fx = await fixture(t);
    await testDaemon(t, fx);
    const second = await failedStart(fx);
    expect(second.code).toBe(75);
    expect(second.lines).toEqual([expect.stringMatching(new RegExp(`^inboxd: DB_BUSY: another inboxd is running on ${escape(fx.database)} \\(it holds ${escape(fx.database)}\\.lock\\)`))]);
    expect(second.lingeredMs).toBeLessThan(1000);
    const d = await fx.makeDelivery({ seq: 1 });
    await until(() => fx.listDir('outbox').includes(`${d.name}.ack.json`), 'the first daemon to answer');
  });

  it('the metrics port taken: 75 naming the address; the lock is free for run --once at once', async (t) => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    t.onTestFinished(() => void blocker.close());
    const port = (blocker.address() as { port: number }).port;
    const fx = await fixture(t, { config: { http: { listen: `127.0.0.1:${port}` } } });
    const r = await failedStart(fx);
    expect(r.code).toBe(75);
    expect(r.lines).toEqual([`inboxd: IO_ERROR: http.listen: 127.0.0.1:${port} is in use by another process; try again once it is free`]);
    expect(r.lingeredMs).toBeLessThan(1000);
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
  });

  it('a root that cannot be made, a file being in the way: 78 naming root, from run and check-config alike', async (t) => {
    const fx = await fixture(t);
    writeFileSync(fx.root, 'not a directory');
    const r = await failedStart(fx);
    const refusal = `inboxd: CONFIG_INVALID: ${fx.configPath}: root: cannot make the directory ${fx.root}: ${fx.root} is not a directory`;
    expect(r).toMatchObject({ code: 78, lines: [refusal] });
    expect(r.lingeredMs).toBeLessThan(1000);
    const once = await fx.runOnce();
    expect({ code: once.code, stderr: once.stderr }).toEqual({ code: 78, stderr: `${refusal}\n` });
    const check = await checkConfig(fx);
    expect({ code: check.code, stderr: check.stderr }).toEqual({ code: 78, stderr: `${refusal}\n` });
  });

  it('a key that no longer matches the existing table: 78 from the daemon, and check-config finds it without changing the database', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    await fx.writeConfig({ flow: { key: ['sku'] } });
    const conflict = /^inboxd: CONFIG_INVALID: table "inventory" exists with the key \(sku, warehouse\), but the configuration says \(sku\)/;
    const r = await failedStart(fx);
    expect(r.code).toBe(78);
    expect(r.lines).toEqual([expect.stringMatching(conflict)]);
    expect(r.lingeredMs).toBeLessThan(1000);
    const before = await fsp.readFile(fx.database);
    const check = await checkConfig(fx);
    expect(check.code).toBe(78);
    expect(check.stderr).toMatch(conflict);
    expect(check.stderr).toContain(fx.database);
    expect(await fsp.readFile(fx.database)).toEqual(before);
    expect(existsSync(`${fx.database}-wal`)).toBe(false);
  });

  it('two flows on one table with different keys: check-config and run refuse it, 78 naming the key path', async (t) => {
    const fx = await fixture(t, { config: { partners: { acme: { flows: { inventory: FLOW } }, beta: { flows: { stock: { ...FLOW, key: ['sku'] } } } } } });
    const refusal = `${fx.configPath}: partners.beta.flows.stock.key: table "inventory" is also written by partners.acme.flows.inventory with the key (sku, warehouse), this flow says (sku); flows sharing a table need the same key`;
    const check = await checkConfig(fx);
    expect({ code: check.code, stderr: check.stderr }).toEqual({ code: 78, stderr: `inboxd: CONFIG_INVALID: ${refusal}\n` });
    const r = await failedStart(fx);
    expect(r).toMatchObject({ code: 78, lines: [`inboxd: CONFIG_INVALID: ${refusal}`] });
  });

  it('check-config creates nothing: no database, no partner directories', async (t) => {
    const fx = await fixture(t);
    const check = await checkConfig(fx);
    expect(check.code).toBe(0);
    expect(existsSync(fx.database)).toBe(false);
    expect(existsSync(fx.root)).toBe(false);
  });

  it('run --once gives back the lock and the database when its start fails (in-process)', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    await fx.writeConfig({ flow: { key: ['sku'] } });
    const config = loadConfig(fx.configPath);
    await expect(runOnce(config, createLogger('silent'))).rejects.toThrow(/table "inventory" exists with the key/);
    // Taken in this very process again: it would be refused (busy) had the failed run kept it.
    const lock = await lockInstance(config);
    lock.release();
  });
});

describe.concurrent('partner directories are real directories inside root', SLOW, () => {
  it('a symlinked inbox is refused at start (78 naming the partner) and the directory it points to is left alone', async (t) => {
    const fx = await fixture(t, { incomplete_after: '1s' });
    const elsewhere = join(fx.dir, 'elsewhere');
    await fsp.mkdir(elsewhere);
    await fsp.writeFile(join(elsewhere, 'notes.txt'), 'not a delivery');
    await fsp.mkdir(join(fx.root, 'acme'), { recursive: true });
    await fsp.symlink(elsewhere, fx.path('inbox'));
    await new Promise((r) => setTimeout(r, 1100)); // older than incomplete_after
    const refusal = `inboxd: CONFIG_INVALID: ${fx.configPath}: partners.acme: ${fx.path('inbox')} is a symbolic link; partner directories must be real directories inside root`;
    const once = await fx.runOnce();
    expect({ code: once.code, stderr: once.stderr }).toEqual({ code: 78, stderr: `${refusal}\n` });
    expect((await checkConfig(fx)).stderr).toBe(`${refusal}\n`);
    expect(await failedStart(fx)).toMatchObject({ code: 78, lines: [refusal] });
    expect(await fsp.readdir(elsewhere)).toEqual(['notes.txt']);
    expect(fx.listDir('error')).toEqual([]);
  });

  it('an inbox replaced by a symlink while the daemon runs: that partner is left out (error log, one alert), the other goes on', async (t) => {
    const sink = await AlertSink.start();
    t.onTestFinished(() => sink.close());
    const fx = await fixture(t, {
      incomplete_after: '1s',
      config: { sweep: '*/1 * * * * *', alert: { http: { url: sink.url } }, partners: { acme: { flows: { inventory: FLOW } }, beta: { flows: { inventory: FLOW } } } },
    });
    const d = await testDaemon(t, fx);
    const elsewhere = join(fx.dir, 'elsewhere');
    await fsp.mkdir(elsewhere);
    await fsp.writeFile(join(elsewhere, 'notes.txt'), 'not a delivery');
    await fsp.rename(fx.path('inbox'), join(fx.root, 'acme', 'inbox.real'));
    await fsp.symlink(elsewhere, fx.path('inbox'));
    const refused = msg(`partner acme left out of this sweep: ${fx.path('inbox')} is a symbolic link; partner directories must be real directories inside root`, { partner: 'acme', dir: fx.path('inbox'), level: 'error' });
    await d.waitFor(refused, 'acme refused');
    const beta = await fx.makeDelivery({ seq: 1, partner: 'beta' });
    await until(() => fx.listDir('outbox', 'beta').includes(`${beta.name}.ack.json`), "beta's ACK");
    await d.waitForCount(refused, 3, 'acme refused at three sweeps', 20_000);
    expect(sink.delivered('partner.refused')).toEqual([expect.objectContaining({ event: 'partner.refused', severity: 'critical', partner: 'acme', dir: fx.path('inbox') })]);
    expect(await fsp.readdir(elsewhere)).toEqual(['notes.txt']);
    expect(fx.listDir('error')).toEqual([]);
    // Put right: acme is swept again.
    await fsp.unlink(fx.path('inbox'));
    await fsp.rename(join(fx.root, 'acme', 'inbox.real'), fx.path('inbox'));
    const acme = await fx.makeDelivery({ seq: 1 });
    await until(() => fx.listDir('outbox').includes(`${acme.name}.ack.json`), "acme's ACK");
  });
});

describe.concurrent("the database and the work directory are outside every partner's reach", SLOW, () => {
  it.for<[string, Record<string, unknown>, string]>([
    ["the database in a partner's inbox", { database: 'partners/acme/inbox/inboxd.db' }, "database: {dir}/partners/acme/inbox/inboxd.db is inside partner acme's directory {dir}/partners/acme: the partner could read, move or replace it; put it outside every partner's directory"],
    ["the database in a partner's outbox", { database: 'partners/acme/outbox/inboxd.db' }, "database: {dir}/partners/acme/outbox/inboxd.db is inside partner acme's directory"],
    ['the database in the work directory', { database: 'partners/.work/inboxd.db' }, 'database: {dir}/partners/.work/inboxd.db is inside the work directory {dir}/partners/.work, which recovery clears'],
    ["the work directory in a partner's inbox", { work_dir: 'partners/acme/inbox/work' }, "work_dir: {dir}/partners/acme/inbox/work is inside partner acme's directory {dir}/partners/acme: the partner could take files out of it"],
    ["the work directory above the partners' directories", { work_dir: 'partners' }, "work_dir: {dir}/partners holds partner acme's directory"],
  ])('%s: 78 naming the key, nothing made or moved', async ([, over, message], t) => {
    const fx = await fixture(t, { config: over });
    const d = await fx.makeDelivery({ seq: 1 });
    const expected = `inboxd: CONFIG_INVALID: ${fx.configPath}: ${message.replaceAll('{dir}', fx.dir)}`;
    for (const r of [await fx.runOnce(), await checkConfig(fx)]) {
      expect(r.code).toBe(78);
      expect(r.stderr.startsWith(expected)).toBe(true);
    }
    expect(await failedStart(fx)).toMatchObject({ code: 78 });
    expect(fx.listDir('inbox')).toEqual([...d.files].sort());
    expect(existsSync(join(fx.dir, over.database as string ?? 'var/inboxd.db'))).toBe(false);
  });

  it.skipIf(!canMount)('the work directory on another file system: 78 naming work_dir, not EXDEV at every delivery', async (t) => {
    const fx = await fixture(t, { config: { work_dir: 'work' } });
    mountTmpfs(t, join(fx.dir, 'work'), '8m');
    await fx.makeDelivery({ seq: 1 });
    const r = await fx.runOnce();
    expect(r.code).toBe(78);
    expect(r.stderr).toBe(`inboxd: CONFIG_INVALID: ${fx.configPath}: work_dir: ${join(fx.dir, 'work')} is on another file system than ${fx.path('inbox')}: deliveries are moved between them by rename; put work_dir on the file system of root\n`);
    expect((await checkConfig(fx)).code).toBe(78);
    expect(fx.listDir('inbox')).toHaveLength(3);
  });
});

describe.concurrent('one inboxd per database, work directory and root', SLOW, () => {
  it('another configuration on the same root or work directory exits 75 naming the lock file it would need; once the holder is killed, it runs', async (t) => {
    const fx = await fixture(t);
    const first = await testDaemon(t, fx);
    const workLock = join(fx.root, '.work', '.inboxd.lock');
    const sameRoot = await variant(fx, 'same-root.yaml', { database: 'var/other.db', work_dir: 'work2' });
    let r = await runCli(['run', '--once', '--config', sameRoot], { cwd: fx.dir });
    expect(r.code).toBe(75);
    expect(r.stderr).toBe(`inboxd: INSTANCE_BUSY: another inboxd works on root ${fx.root} (pid ${first.pid}, configuration ${fx.configPath}; it holds ${workLock}); two on one root take each other's deliveries: stop it, or give this configuration a root of its own\n`);
    const sameWork = await variant(fx, 'same-work.yaml', { root: 'partners2', database: 'var/third.db', work_dir: 'partners/.work' });
    r = await runCli(['run', '--once', '--config', sameWork], { cwd: fx.dir });
    expect(r.code).toBe(75);
    expect(r.stderr).toMatch(new RegExp(`^inboxd: INSTANCE_BUSY: another inboxd works in ${escape(join(fx.root, '.work'))} \\(it holds ${escape(workLock)}\\)`));
    expect((await failedStart(fx, sameRoot)).code).toBe(75);
    // The kernel drops every lock with the process, however it ends.
    await first.kill();
    await fx.makeDelivery({ seq: 1 });
    r = await runCli(['run', '--once', '--config', sameRoot], { cwd: fx.dir });
    expect(r.code).toBe(0);
    expect(fx.listDir('outbox')).toHaveLength(1);
  });
});

/** chattr +i works here: root, on a file system with the immutable flag (ext4; not tmpfs or overlayfs). */
function chattrWorks(): boolean {
  const dir = mkdtempSync(join(tmpdir(), 'inboxd-chattr-'));
  try {
    writeFileSync(join(dir, 'f'), '');
    execFileSync('chattr', ['+i', join(dir, 'f')], { stdio: 'ignore' });
    execFileSync('chattr', ['-i', join(dir, 'f')], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe.concurrent('the database', SLOW, () => {
  it.skipIf(!chattrWorks())('one that cannot be written is a configuration error: 78 naming the file', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    execFileSync('chattr', ['+i', fx.database]); // even root cannot write it now
    t.onTestFinished(() => void execFileSync('chattr', ['-i', fx.database]));
    const d = await fx.makeDelivery({ seq: 2 });
    const refusal = new RegExp(`^inboxd: DB_READONLY: database ${escape(fx.database)}: .*cannot be written.*: inboxd must be able to write it`);
    const r = await fx.runOnce();
    expect(r.code).toBe(78);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(refusal)]);
    const daemon = await failedStart(fx);
    expect(daemon).toMatchObject({ code: 78, lines: [expect.stringMatching(refusal)] });
    expect(fx.listDir('inbox')).toEqual([...d.files].sort());
  });

  it.skipIf(!canMount)('a full disk: /readyz is not ready, errors name the database file; with space back the delivery is applied', async (t) => {
    const fx = await fixture(t, { config: { http: { listen: '127.0.0.1:0' } } });
    mountTmpfs(t, join(fx.dir, 'var'), '32m');
    const d = await testDaemon(t, fx);
    const { port } = await d.waitFor((l) => typeof l.port === 'number', 'the http listening line');
    const readyz = async () => {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`);
      return { status: res.status, database: (await res.json()).checks.database as string };
    };
    expect(await readyz()).toEqual({ status: 200, database: 'ok' });
    const filler = join(fx.dir, 'var', 'filler');
    const fh = await fsp.open(filler, 'w');
    await (async () => {
      for (const chunk = Buffer.alloc(1 << 20, 1); ;) await fh.write(chunk);
    })().catch((err: NodeJS.ErrnoException) => expect(err.code).toBe('ENOSPC'));
    await fh.close();
    expect(await readyz()).toEqual({ status: 503, database: expect.stringMatching(new RegExp(`^disk full: \\d+ bytes free on the file system of ${escape(join(fx.dir, 'var'))}`)) });
    const big = await fx.makeDelivery({ seq: 1, rows: Array.from({ length: 2000 }, (_, i) => ({ SKU: `S-${i}`, Warehouse: 'BER1', Quantity: '1', LastModified: '2025-09-16T03:55:00Z' })) });
    const named = new RegExp(`database ${escape(fx.database)}: (database or disk is full|disk I/O error)`);
    await d.waitFor((l) => atLeast(l, 'warn') && named.test(JSON.stringify(l)), 'a log line naming the database');
    await fsp.rm(filler);
    expect(await readyz()).toEqual({ status: 200, database: 'ok' });
    await until(() => fx.listDir('outbox').includes(`${big.name}.ack.json`), 'the ACK once space is back', 30_000);
    expect(fx.rows()).toHaveLength(2000);
  });
});
