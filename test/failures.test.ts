/**
 * Failures of ours (issue 10, and issue 11 point 8): a bug or a full disk is retried a bounded number of
 * times with a growing backoff, then the delivery is answered INTERNAL_ERROR in error/ and alerted, and a
 * replay takes it once the cause is gone; waiting files are not looked at more often than something can
 * change; a partner's name of any length gets answers that fit the file system; one delivery's or one
 * partner's failure never stops the others; a commit over several scratch files leaves nothing behind.
 *
 * Real causes where the machine allows: a full disk is a tiny tmpfs (mounted as root; those tests are
 * skipped where mounting is refused). A bug is the test-only INBOXD_TEST_THROW_AT hook (src/crashpoint.ts),
 * which throws a TypeError at a named point, as a mistake in our code would.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fsp, watch } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../src/store/sqlite/driver.js';
import { describe, expect, it, type TestContext } from 'vitest';
import { AlertSink, FLOW, msg, sleep, testDaemon, until } from './helpers/daemon.js';
import { atLeast, type Fixture, fixture, rowsOf, runCli, SLOW } from './helpers/fixture.js';
import { storedName } from '../src/pipeline/answer.js';
import { loadConfig } from '../src/config/config.js';
import { classify } from '../src/errors.js';

const BUG = { INBOXD_TEST_THROW_AT: 'before-commit' };
const ops = (fx: Fixture, ...args: string[]) => runCli([...args, '--config', fx.configPath], { cwd: fx.dir });
const attempts = (fx: Fixture) => fx.query('SELECT file, attempts, code, next_at FROM attempts');
const bytes = (s: string) => Buffer.byteLength(s);

/** An hour later, as far as the backoff goes: every delivery waiting for its next attempt is due now. */
function backoffOver(fx: Fixture): void {
  const db = openDatabase(fx.database);
  try {
    db.prepare('UPDATE attempts SET next_at = ?').run(new Date().toISOString());
  } finally {
    db.close();
  }
}

/** Mounts a tmpfs of `size` at `dir` for this test, unmounted when it ends; false where mounting is refused. */
function mountTmpfs(t: TestContext, dir: string, size: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
  } catch {
    return false;
  }
  // onTestFinished hooks run last registered first: unmounted before the fixture is removed.
  t.onTestFinished(() => void execFileSync('umount', ['-l', dir]));
  return true;
}

/** An HTTP endpoint taking alerts, closed when the test ends. */
async function alertSink(t: TestContext): Promise<AlertSink> {
  const sink = await AlertSink.start();
  t.onTestFinished(() => sink.close());
  return sink;
}

/** Fills the file system of `dir` to the last byte; returns the filler, to be removed to make room. */
async function fill(dir: string): Promise<string> {
  const filler = join(dir, '.filler.part');
  const fh = await fsp.open(filler, 'w');
  try {
    for (const block = Buffer.alloc(4096); ; ) await fh.write(block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await fh.close();
  }
  return filler;
}

describe('failures are classified by code, never by their words', () => {
  it('the table of retryable codes; anything else is a bug', () => {
    const coded = (code: string, message = 'x') => Object.assign(new Error(message), { code });
    expect(classify(coded('SQLITE_BUSY_SNAPSHOT'))).toMatchObject({ code: 'DB_BUSY', kind: 'retry', details: { cause: 'SQLITE_BUSY_SNAPSHOT' } });
    expect(classify(coded('SQLITE_IOERR_WRITE'))).toMatchObject({ code: 'IO_ERROR', kind: 'retry' });
    expect(classify(coded('SQLITE_FULL'))).toMatchObject({ code: 'IO_ERROR' });
    expect(classify(coded('ENOSPC'))).toMatchObject({ code: 'IO_ERROR' });
    expect(classify(coded('40P01'))).toMatchObject({ code: 'DB_BUSY' }); // PostgreSQL: deadlock detected
    expect(classify(new Error('wrapped', { cause: coded('EMFILE') }))).toMatchObject({ code: 'IO_ERROR', details: { cause: 'EMFILE' } });
    // A bug, however it is worded: unknown, not retryable by code.
    expect(classify(new TypeError("Cannot read properties of undefined (reading 'x')"))).toMatchObject({ code: 'UNEXPECTED_ERROR', kind: 'retry' });
    expect(classify(new Error('database is locked'))).toMatchObject({ code: 'UNEXPECTED_ERROR' });
    expect(classify(coded('SQLITE_CONSTRAINT_NOTNULL'))).toMatchObject({ code: 'UNEXPECTED_ERROR', details: { cause: 'SQLITE_CONSTRAINT_NOTNULL' } });
  });

  it('max_attempts and retry_backoff: defaults, and checked', async (t) => {
    const fx = await fixture(t);
    expect(loadConfig(fx.configPath)).toMatchObject({ maxAttempts: 5, retryBackoffMs: 60_000 });
    await fx.writeConfig({ config: { max_attempts: 0 } });
    expect((await runCli(['check-config', '--config', fx.configPath])).stderr).toMatch(/max_attempts/);
  });
});

describe.concurrent('a bug is retried a bounded number of times (run --once)', SLOW, () => {
  it('logged with its stack, held for its backoff, then answered INTERNAL_ERROR in error/; a replay applies it once fixed', async (t) => {
    const sink = await alertSink(t);
    const fx = await fixture(t, { config: { max_attempts: 2, retry_backoff: '1h', alert: { http: { url: sink.url } } } });
    const d = await fx.makeDelivery({ seq: 1 });

    const first = await fx.runOnce({ env: BUG });
    expect(first.code).toBe(75);
    const bug = first.logs.find((l) => l.level === 'error' && l.code === 'UNEXPECTED_ERROR');
    expect(bug).toMatchObject({ partner: 'acme', flow: 'inventory', file: d.name, seq: 1, attempt: 1, max_attempts: 2, err: { type: 'TypeError', stack: expect.stringMatching(/TypeError: Cannot read properties.*\n\s+at /) } });
    expect(fx.listDir('inbox')).toEqual([...d.files].sort());
    expect(fx.rows()).toEqual([]);
    expect(attempts(fx)).toEqual([{ file: d.name, attempts: 1, code: 'UNEXPECTED_ERROR', next_at: expect.any(String) }]);

    // Within its backoff the delivery is not taken again (not even read), and the run says so: 75.
    const held = await fx.runOnce({ env: BUG });
    expect(held.code).toBe(75);
    expect(held.logs.filter(msg('delivery claimed'))).toEqual([]);
    expect(attempts(fx)).toHaveLength(1);

    const next = Date.parse(attempts(fx)[0]!.next_at) - Date.now();
    expect(next).toBeGreaterThan(30 * 60_000); // half an hour at least, an hour at most (equal jitter)
    expect(next).toBeLessThanOrEqual(60 * 60_000);
    backoffOver(fx);
    const last = await fx.runOnce({ env: BUG });
    expect(last.code).toBe(1);
    expect(fx.listDir('inbox')).toEqual([]);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ status: 'rejected', code: 'INTERNAL_ERROR', file: d.name, sequence: 1 });
    expect(report.reason).toContain(d.name);
    expect(report.reason).toMatch(/on our side, not in the file.*operations team has been alerted/);
    expect(report.reason).not.toMatch(/TypeError|undefined/); // what broke is ours to read, in the log
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`].sort());
    expect(last.logs.find((l) => l.event === 'delivery.failed')).toMatchObject({ level: 'error', partner: 'acme', flow: 'inventory', file: d.name, attempts: 2, code: 'UNEXPECTED_ERROR' });
    expect(attempts(fx)).toEqual([]);
    const id = fx.query("SELECT id FROM deliveries WHERE code = 'INTERNAL_ERROR'")[0]!.id as string;
    expect(sink.delivered()).toEqual([expect.objectContaining({ event: 'delivery.failed', severity: 'critical', partner: 'acme', flow: 'inventory', file: d.name, delivery_id: id, attempts: 2 })]);
    expect(JSON.parse((await ops(fx, 'status', '--json')).stdout).openErrors).toEqual([expect.objectContaining({ id, code: 'INTERNAL_ERROR' })]);

    // The bug fixed (the hook unset): the replay takes the delivery from error/, applies it, answers it.
    const replay = await ops(fx, 'replay', id, '--json');
    expect(replay.code).toBe(0);
    expect(fx.rows()).toHaveLength(3);
    expect(await fx.readJson('outbox', `${d.name}.ack.json`)).toMatchObject({ status: 'accepted', replay_of: id, records: 3 });
    expect(JSON.parse((await ops(fx, 'status', '--json')).stdout).openErrors).toEqual([]);
  });

  it('a new upload under the same name is not held back by the failures of the file before it', async (t) => {
    const fx = await fixture(t, { config: { max_attempts: 3, retry_backoff: '1h' } });
    const d = await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce({ env: BUG })).code).toBe(75);
    // The partner sends the file again (a new file under the same names): taken at once, and applied.
    for (const f of d.files) await fsp.rm(fx.path('inbox', f));
    await fx.makeDelivery({ seq: 1 });
    const again = await fx.runOnce();
    expect(again.code).toBe(0);
    expect(fx.rows()).toHaveLength(3);
    expect(attempts(fx)).toEqual([]);
  });
});

describe.concurrent('a full disk (a tmpfs) is a retryable cause', SLOW, () => {
  it('retried by its code with a warning (no stack), not re-read within its backoff, applied once there is room', async (t) => {
    const fx = await fixture(t, { config: { retry_backoff: '1h' } });
    await fsp.mkdir(fx.root, { recursive: true });
    if (!mountTmpfs(t, fx.root, '2m')) return t.skip();
    const d = await fx.makeDelivery({ seq: 1, rows: rowsOf(50) });
    const filler = await fill(fx.root);

    const full = await fx.runOnce();
    expect(full.code).toBe(75);
    const put = full.logs.find(msg('delivery put back to be tried again'));
    expect(put).toMatchObject({ level: 'warn', partner: 'acme', flow: 'inventory', file: d.name, code: 'IO_ERROR', cause: expect.stringMatching(/^(SQLITE_FULL|SQLITE_IOERR|ENOSPC)/), attempt: 1 });
    expect(put!.err).toMatch(/full/); // words, no stack: this is no bug
    expect(full.logs.filter((l) => l.code === 'UNEXPECTED_ERROR')).toEqual([]);
    expect(fx.listDir('inbox')).toEqual([...d.files].sort());
    expect(fx.listWork()).toEqual([]);

    const held = await fx.runOnce();
    expect(held.code).toBe(75);
    expect(held.logs.filter(msg('delivery claimed'))).toEqual([]);

    await fsp.rm(filler);
    backoffOver(fx);
    const room = await fx.runOnce();
    expect(room.code).toBe(0);
    expect(fx.rows()).toHaveLength(50);
    expect(fx.listDir('outbox')).toEqual([`${d.name}.ack.json`]);
    expect(attempts(fx)).toEqual([]);
  });
});

describe.concurrent('the daemon: backoff, alert, and no looking more often than something can change', SLOW, () => {
  it('a bug: tried max_attempts times at growing intervals, then given up with a delivery.failed alert; replayed once fixed', async (t) => {
    const sink = await alertSink(t);
    const fx = await fixture(t, { config: { max_attempts: 3, retry_backoff: '1s', alert: { http: { url: sink.url } } } });
    const d0 = await fx.makeDelivery({ seq: 1 });
    const d = await testDaemon(t, fx, BUG);
    const alert = await sink.waitFor('delivery.failed', 30_000);
    expect(alert).toMatchObject({ severity: 'critical', partner: 'acme', flow: 'inventory', file: d0.name, attempts: 3, code: 'UNEXPECTED_ERROR' });
    const claimed = d.logs.filter(msg('delivery claimed')).map((l) => Date.parse(l.time));
    expect(claimed).toHaveLength(3); // taken once per attempt, never in between
    const gaps = claimed.slice(1).map((at, i) => at - claimed[i]!);
    // Half to all of 1 s, then half to all of 2 s.
    expect(gaps[0]).toBeGreaterThanOrEqual(500);
    expect(gaps[1]).toBeGreaterThanOrEqual(1000);
    await d.waitFor(msg('delivery rejected', { code: 'INTERNAL_ERROR' }), 'the answer');
    expect(await fx.errorReport()).toMatchObject({ code: 'INTERNAL_ERROR', file: d0.name });
    await sleep(1500);
    expect(d.count(msg('delivery claimed'))).toBe(3);
    await d.stop();

    const id = alert.delivery_id as string;
    expect((await ops(fx, 'replay', id)).code).toBe(0);
    expect(fx.rows()).toHaveLength(3);
  });

  it('files waiting for their companions or to be overdue are not swept again until one can be (sweep set to once a year)', async (t) => {
    const fx = await fixture(t, { incomplete_after: '1h', config: { log_level: 'debug', sweep: '0 0 1 1 *' } });
    await fx.makeDelivery({ seq: 1, manifest: false });
    await fsp.writeFile(fx.path('inbox', 'notes.txt'), 'a stray file');
    const d = await testDaemon(t, fx);
    await d.waitFor(msg('sweep done', { partner: 'acme' }), 'the first sweep');
    await sleep(500); // the start sweeps once, and once more when the watcher is ready
    const atStart = d.count(msg('sweep done', { partner: 'acme' }));
    expect(atStart).toBeLessThanOrEqual(2);
    await sleep(3000);
    expect(d.count(msg('sweep done', { partner: 'acme' }))).toBe(atStart);
    const last = d.logs.filter(msg('sweep done', { partner: 'acme' })).at(-1);
    expect(last).toMatchObject({ waiting: 2, next_sweep_in_ms: expect.any(Number) });
    expect(last!.next_sweep_in_ms).toBeGreaterThan(55 * 60_000); // they become overdue in an hour
    // The manifest arriving is an event: the delivery is taken at once.
    const full = await fx.makeDelivery({ seq: 1 });
    await until(() => existsSync(fx.path('outbox', `${full.name}.ack.json`)), 'the ACK', 10_000);
  });
});

describe.concurrent('names of any length fit the file system (NAME_MAX, 255 bytes)', SLOW, () => {
  it('a 250-byte stray file is rejected with a report under a shortened name holding the full one; the next run is clean', async (t) => {
    const fx = await fixture(t, { incomplete_after: '1s' });
    const name = 'x'.repeat(250);
    await fsp.mkdir(fx.path('inbox'), { recursive: true });
    await fsp.writeFile(fx.path('inbox', name), 'not a delivery');
    await sleep(1100);
    const first = await fx.runOnce();
    expect(first.code).toBe(1);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ code: 'UNKNOWN_FILE', file: name });
    for (const f of fx.listDir('error')) expect(bytes(f)).toBeLessThanOrEqual(255);
    expect(fx.listDir('error')).toEqual([storedName(name), `${storedName(name)}.error.json`].sort());
    expect(fx.listDir('inbox')).toEqual([]);
    expect((await fx.runOnce()).code).toBe(0);
  });

  it('a 230-byte data file name that the pattern allows is applied and answered: the ACK under a shortened name, the full name inside', async (t) => {
    const fx = await fixture(t, { flow: { pattern: '^(?<seq>\\d{3})_x+\\.csv$' } });
    const name = `001_${'x'.repeat(222)}.csv`;
    expect(bytes(name)).toBe(230);
    const d = await fx.makeDelivery({ name });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows()).toHaveLength(3);
    const [ackName] = fx.listDir('outbox');
    expect(ackName).toBe(`${storedName(name)}.ack.json`);
    expect(await fx.readJson('outbox', ackName!)).toMatchObject({ status: 'accepted', file: name, records: 3 });
    expect(fx.listDir('archive')).toEqual(d.files.map((f) => storedName(f)).sort());
    // The archived originals are where `deliveries show` says, and a replay finds them.
    const id = fx.query('SELECT id FROM deliveries')[0]!.id as string;
    const shown = JSON.parse((await ops(fx, 'deliveries', 'show', id, '--json')).stdout);
    expect(shown.files.map((f: { present: boolean }) => f.present)).toEqual([true, true, true]);
    expect((await ops(fx, 'replay', id)).code).toBe(0);
  });

  it('one committed delivery whose answer cannot be written does not keep recovery from answering the others', async (t) => {
    const fx = await fixture(t);
    const one = await fx.makeDelivery({ seq: 1 });
    // A directory where the ACK of sequence 1 goes: its answer cannot be renamed into place (EISDIR).
    await fsp.mkdir(fx.path('outbox', `${one.name}.ack.json`), { recursive: true });
    const crash = { INBOXD_TEST_CRASH_AT: 'after-commit' };
    expect((await fx.runOnce({ env: crash })).signal).toBe('SIGKILL'); // 1 committed, not answered
    const two = await fx.makeDelivery({ seq: 2, rows: rowsOf(2, 10) });
    const second = await fx.runOnce({ env: crash }); // recovery fails on 1, goes on; 2 committed, not answered
    expect(second.signal).toBe('SIGKILL');
    expect(second.logs.find((l) => atLeast(l, 'warn') && l.seq === 1)).toMatchObject({ partner: 'acme', flow: 'inventory', file: one.name, code: 'IO_ERROR' });
    expect(fx.query('SELECT seq FROM deliveries WHERE answered_at IS NULL ORDER BY seq').map((r) => r.seq)).toEqual([1, 2]);

    const third = await fx.runOnce();
    expect(third.code).toBe(75); // 1 is still owed its answer
    expect(await fx.readJson('outbox', `${two.name}.ack.json`)).toMatchObject({ status: 'accepted', sequence: 2 });
    expect(fx.listWork()).toHaveLength(1); // 1's files wait for its answer, kept
    await fsp.rmdir(fx.path('outbox', `${one.name}.ack.json`));
    expect((await fx.runOnce()).code).toBe(0);
    expect(await fx.readJson('outbox', `${one.name}.ack.json`)).toMatchObject({ status: 'accepted', sequence: 1 });
    expect(fx.listDir('archive')).toEqual([...one.files, ...two.files].sort());
    expect(fx.listWork()).toEqual([]);
  });
});

describe.concurrent('one partner\'s failure does not stop the others', SLOW, () => {
  it('run --once: a partner whose outbox is full is logged and retried (exit 75); the other partner is applied and answered', async (t) => {
    const partners = { acme: { flows: { inventory: FLOW } }, beta: { flows: { inventory: FLOW } } };
    const fx = await fixture(t, { config: { partners } });
    // Root writes through any permission, so "not writable" is a full file system: a tiny tmpfs as acme's
    // outbox, filled. Any start-up check of the directory passes (it exists, it is writable); the
    // answer's bytes do not fit.
    const outbox = fx.path('outbox');
    await fsp.mkdir(outbox, { recursive: true });
    if (!mountTmpfs(t, outbox, '64k')) return t.skip();
    const filler = await fill(outbox);
    const a = await fx.makeDelivery({ seq: 1 });
    const b = await fx.makeDelivery({ seq: 1, partner: 'beta' });

    const run = await fx.runOnce();
    expect(run.code).toBe(75);
    expect(run.logs.find((l) => atLeast(l, 'warn') && l.partner === 'acme' && l.code === 'IO_ERROR')).toMatchObject({ flow: 'inventory', file: a.name, seq: 1, delivery_id: expect.any(String) });
    expect(await fx.readJson('outbox', `${b.name}.ack.json`, 'beta')).toMatchObject({ status: 'accepted', partner: 'beta' });
    expect(fx.query('SELECT partner FROM deliveries WHERE answered_at IS NULL')).toEqual([{ partner: 'acme' }]);

    await fsp.rm(filler);
    expect((await fx.runOnce()).code).toBe(0);
    expect(await fx.readJson('outbox', `${a.name}.ack.json`)).toMatchObject({ status: 'accepted', partner: 'acme' });
    expect(fx.listDir('archive')).toEqual([...a.files].sort());
  });
});

describe.concurrent('one partner\'s failure does not stop the others (the daemon)', SLOW, () => {
  it('the other partner is answered at once; the answer owed is written after retry_backoff once there is room, with no sweep scheduled', async (t) => {
    const partners = { acme: { flows: { inventory: FLOW } }, beta: { flows: { inventory: FLOW } } };
    const fx = await fixture(t, { config: { partners, retry_backoff: '1s', sweep: '0 0 1 1 *' } });
    const outbox = fx.path('outbox'); // a full tmpfs, as above
    await fsp.mkdir(outbox, { recursive: true });
    if (!mountTmpfs(t, outbox, '64k')) return t.skip();
    const filler = await fill(outbox);
    const d = await testDaemon(t, fx);
    const a = await fx.makeDelivery({ seq: 1 });
    const b = await fx.makeDelivery({ seq: 1, partner: 'beta' });
    await until(() => existsSync(fx.path('outbox', `${b.name}.ack.json`, 'beta')), 'beta\'s ACK', 15_000);
    await d.waitFor((l) => atLeast(l, 'warn') && l.partner === 'acme' && l.file === a.name && l.code === 'IO_ERROR', 'acme\'s failure');
    await fsp.rm(filler);
    await until(() => existsSync(fx.path('outbox', `${a.name}.ack.json`)), 'acme\'s ACK, written by recovery', 15_000);
    // The ACK is written first, then the delivery recorded as answered.
    await until(() => fx.query('SELECT count(*) AS n FROM deliveries WHERE answered_at IS NULL')[0]!.n === 0, 'acme\'s delivery recorded as answered', 5_000);
  });
});

describe.concurrent('a commit over several scratch files (issue 11, point 8)', SLOW, () => {
  it('writes no super-journal beside the database (watched: one is made and removed within each such commit)', async (t) => {
    if (availableParallelism() < 2) return t.skip(); // one staging thread, one scratch file: no such commit
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, rows: rowsOf(3000) });
    const varDir = join(fx.dir, 'var');
    await fsp.mkdir(varDir, { recursive: true });
    await fsp.mkdir(fx.workDir, { recursive: true });
    const seen = { db: new Set<string>(), work: new Set<string>() };
    const watchers = [watch(varDir, (_e, f) => f && seen.db.add(f)), watch(fx.workDir, { recursive: true }, (_e, f) => f && seen.work.add(f))];
    t.onTestFinished(() => watchers.forEach((w) => w.close()));
    // Small chunks: the file is staged by two threads, into two scratch files.
    const run = await fx.runOnce({ env: { INBOXD_TEST_CHUNK_BYTES: '4096' } });
    expect(run.code).toBe(0);
    await sleep(100);
    expect([...seen.work].filter((f) => /staging-\d+\.db$/.test(f)).length).toBeGreaterThanOrEqual(2);
    expect([...seen.db].filter((f) => /-mj/.test(f))).toEqual([]);
    expect([...seen.work].filter((f) => /-journal$/.test(f))).toEqual([]); // scratch files need no rollback journal either
    expect(fx.rows()).toHaveLength(3000);
  });
});
