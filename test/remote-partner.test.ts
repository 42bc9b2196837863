/**
 * Issue 5 end to end: a partner keeps its files on its own SFTP server (a real OpenSSH sshd on
 * 127.0.0.1, test/helpers/sshd.ts) and the real daemon pulls them, ingests them through the local
 * pipeline, moves the originals on the partner's server and pushes the ACK back. Asserts what a user
 * checks: rows in the SQLite file, the files on the partner's server (its inbox, outbox and archive
 * are directories of the sshd's temp dir), the local partner tree, the remote_files / remote_uploads /
 * remote_state rows, the JSON log lines, and the server's own log of SFTP operations (sftp-server -l INFO).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, promises as fsp, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { type Db, openDatabase } from '../src/store/sqlite/driver.js';
import { describe, expect, it, type TestContext } from 'vitest';
import type { AnswerPlan } from '../src/pipeline/answer.js';
import { SqliteRemoteLedger } from '../src/store/sqlite/remote-ledger.js';
import { migrate } from '../src/store/sqlite/migrations.js';
import { type LogLine, msg, sleep, spawnDaemon, testDaemon, FLOW, until } from './helpers/daemon.js';
import { atLeast, type Fixture, fixture, row, rowsOf } from './helpers/fixture.js';
import { buildDelivery, ls, partnerServer, type PartnerServer, partnerUploads, remoteConfig, type RemoteDelivery } from './helpers/partner-server.js';

async function remoteFixture(t: TestContext, p: PartnerServer, remote: Record<string, unknown> = {}): Promise<Fixture> {
  // Sweep once a year: what the daemon takes, it takes because the pull put it there (watcher or `pulled` hook).
  return fixture(t, { config: { log_level: 'debug', sweep: '0 0 1 1 *', partners: { acme: { remote: remoteConfig(p, remote), flows: { inventory: FLOW } } } } });
}

const daemon = (t: TestContext, fx: Fixture, env?: Record<string, string>) => testDaemon(t, fx, env, 80);

const ackName = (d: RemoteDelivery) => `${d.name}.ack.json`;
const remoteFiles = (fx: Fixture) => fx.query('SELECT name, state, delivery_id, size FROM remote_files ORDER BY name');
const remoteUploads = (fx: Fixture) => fx.query('SELECT dir, name, state, attempts, last_error FROM remote_uploads ORDER BY name');
const remoteState = (fx: Fixture) => fx.query("SELECT circuit, failures, last_error FROM remote_state WHERE partner = 'acme'")[0];
const ms = (l: LogLine) => Date.parse(l.time);

describe('pull, ingest, move the original, push the ACK', () => {
  it('a delivery in the partner inbox is pulled and applied, the originals go to its archive, the ACK to its outbox via a temporary name', async (t) => {
    const p = await partnerServer(t);
    const fx = await remoteFixture(t, p);
    const d = await daemon(t, fx);
    const del = await partnerUploads(p.inbox, 1);

    await until(() => ls(p.outbox).includes(ackName(del)) && ls(p.archive).length === 3, 'the ACK in the partner outbox and the originals in its archive', 20_000);

    // The partner's server
    expect(ls(p.inbox)).toEqual([]);
    expect(ls(p.archive)).toEqual([...del.files].sort());
    expect(readFileSync(join(p.archive, del.name))).toEqual(del.data);
    expect(ls(p.outbox)).toEqual([ackName(del)]); // no temporary file left behind
    const ack = JSON.parse(readFileSync(join(p.outbox, ackName(del)), 'utf8'));
    expect(ack).toMatchObject({ status: 'accepted', file: del.name, sequence: 1, sha256: del.sha256, records: 3, rows_applied: 3 });
    // What the server saw: the ACK written under a temporary name, then renamed; the originals renamed, never rewritten.
    const ops = p.ops();
    const tmp = join(p.outbox, `.${ackName(del)}.tmp`);
    const openTmp = ops.findIndex((l) => l.startsWith(`open "${tmp}" flags WRITE`));
    const renameAck = ops.findIndex((l) => l === `posix-rename old "${tmp}" new "${join(p.outbox, ackName(del))}"`);
    expect(openTmp).toBeGreaterThanOrEqual(0);
    expect(renameAck).toBeGreaterThan(openTmp);
    expect(ops.some((l) => l.startsWith(`open "${join(p.outbox, ackName(del))}"`))).toBe(false);
    for (const f of del.files) expect(ops).toContain(`posix-rename old "${join(p.inbox, f)}" new "${join(p.archive, f)}"`);
    expect(ops.filter((l) => / flags WRITE/.test(l) && l.includes(p.inbox))).toEqual([]);

    // Our side: the rows, one accepted delivery, the local answer, nothing left over
    expect(fx.rows()).toHaveLength(3);
    const deliveries = fx.query('SELECT id, outcome, answered_at FROM deliveries');
    expect(deliveries).toEqual([{ id: ack.delivery_id, outcome: 'accepted', answered_at: expect.any(String) }]);
    expect(fx.listDir('inbox')).toEqual([]);
    expect(fx.listDir('archive')).toEqual([...del.files].sort());
    expect(fx.listDir('outbox')).toEqual([ackName(del)]);
    expect(fx.listDir('error')).toEqual([]);
    expect(fx.listWork()).toEqual([]);

    // The ledger (the files appear on the server a moment before the ledger records it)
    await d.waitFor(msg('answer uploaded to the partner', { file: ackName(del) }));
    await until(() => remoteFiles(fx).every((r) => r.state === 'done'), 'remote_files done');
    expect(remoteFiles(fx)).toEqual(del.files.map((name) => ({ name, state: 'done', delivery_id: ack.delivery_id, size: expect.any(Number) })).sort((a, b) => a.name.localeCompare(b.name)));
    expect(remoteUploads(fx)).toEqual([{ dir: 'outbox', name: ackName(del), state: 'done', attempts: 1, last_error: null }]);
    expect(remoteState(fx)).toMatchObject({ circuit: 'closed', failures: 0 });

    // The log
    expect(d.count(msg('pulled from the partner server'))).toBe(3);
    expect(d.logs.find(msg('pulled from the partner server', { file: del.name }))).toMatchObject({ partner: 'acme', bytes: del.data.length });
    expect(d.logs.filter((l) => atLeast(l, 'error'))).toEqual([]);
    expect(d.other).toEqual([]);
  });

  it('deliveries pulled in one round are applied in sequence order, whatever order the server lists them in', async (t) => {
    const p = await partnerServer(t);
    const fx = await remoteFixture(t, p);
    // Uploaded newest first, before the daemon starts: the first round sees all four.
    const uploaded = [];
    for (const seq of [4, 3, 2, 1]) uploaded.push(await partnerUploads(p.inbox, seq, rowsOf(3, seq * 10)));
    const d = await daemon(t, fx);
    await until(() => ls(p.outbox).length === 4, 'four ACKs in the partner outbox', 30_000);
    expect(fx.query('SELECT seq, outcome, code FROM deliveries ORDER BY decided_at')).toEqual([1, 2, 3, 4].map((seq) => ({ seq, outcome: 'accepted', code: null })));
    expect(fx.rows()).toHaveLength(12);
    expect(d.count(msg('pulled from the partner server'))).toBe(12);
  });

  it('after_pull: delete removes the originals from the partner inbox instead of archiving them', async (t) => {
    const p = await partnerServer(t);
    const fx = await remoteFixture(t, p, { after_pull: 'delete' });
    await daemon(t, fx);
    const del = await partnerUploads(p.inbox, 1);

    await until(() => ls(p.outbox).includes(ackName(del)) && ls(p.inbox).length === 0, 'the ACK, and the partner inbox emptied', 20_000);
    expect(ls(p.archive)).toEqual([]);
    expect(ls(p.outbox)).toEqual([ackName(del)]);
    for (const f of del.files) expect(p.ops()).toContain(`remove name "${join(p.inbox, f)}"`);
    expect(fx.rows()).toHaveLength(3);
    expect(fx.listDir('archive')).toEqual([...del.files].sort()); // our own copy is kept
    await until(() => remoteFiles(fx).every((r) => r.state === 'done') && remoteFiles(fx).length === 3, 'remote_files done');
  });

  it('a file still growing under its final name on the partner side is pulled only once it stayed the same across two listings', async (t) => {
    const p = await partnerServer(t);
    const fx = await remoteFixture(t, p, { stable_for: '1s' });
    const d = await daemon(t, fx);
    const rows = rowsOf(60);
    const { d: del, contents } = buildDelivery(1, rows);
    // Some clients write in place under the final name: the data file grows a few rows every 100 ms for 3 s.
    const dataPath = join(p.inbox, del.name);
    const step = Math.ceil(del.data.length / 30);
    for (let at = 0; at < del.data.length; at += step) {
      await fsp.appendFile(dataPath, del.data.subarray(at, at + step));
      await sleep(100);
    }
    const grownAt = Date.now();
    expect(d.count(msg('pulled from the partner server'))).toBe(0);
    expect(remoteFiles(fx)).toEqual([]);
    expect(fx.listDir('inbox')).toEqual([]);
    for (const [file, content] of contents.slice(1)) await fsp.writeFile(join(p.inbox, file), content);

    await until(() => ls(p.outbox).includes(ackName(del)), 'the ACK', 20_000);
    const pulled = d.logs.find(msg('pulled from the partner server', { file: del.name }))!;
    expect(ms(pulled)).toBeGreaterThanOrEqual(grownAt + 1000 - 50); // stable_for on our clock, after the last write
    expect(pulled.bytes).toBe(del.data.length);
    expect(fx.rows()).toHaveLength(60);
    expect(fx.query('SELECT outcome FROM deliveries')).toEqual([{ outcome: 'accepted' }]);
    expect(fx.listDir('error')).toEqual([]);
  });
});

describe('trust', () => {
  it('a server presenting another host key is refused and reported once, nothing is read, and the partner is not tried again', async (t) => {
    const p = await partnerServer(t);
    const wrong = `SHA256:${randomBytes(32).toString('base64').replace(/=+$/, '')}`;
    const fx = await remoteFixture(t, p, { host_key: wrong });
    const del = await partnerUploads(p.inbox, 1);
    const connections = () => p.sshd.logs().split('\n').filter((l) => l.startsWith('Connection from 127.0.0.1'));
    const before = connections().length; // the harness's own readiness probe
    const d = await daemon(t, fx);

    const refused = await d.waitFor((l) => l.code === 'HOST_KEY_MISMATCH', 'HOST_KEY_MISMATCH', 10_000);
    expect(refused).toMatchObject({ level: 'error', partner: 'acme', host: '127.0.0.1' });
    expect(refused.err).toContain(p.sshd.hostKeyFingerprint); // names what the server presented...
    expect(refused.err).toContain(wrong); // ...and what was expected
    await sleep(4000); // four scheduled rounds

    expect(connections()).toHaveLength(before + 1);
    expect(p.sshd.logs()).not.toMatch(/Accepted publickey/); // we hung up before authenticating
    expect(p.ops()).toEqual([]);
    expect(d.count(msg('remote round failed; retrying'))).toBe(0);
    expect(d.count((l) => l.code === 'HOST_KEY_MISMATCH')).toBe(1);
    expect(ls(p.inbox)).toEqual([...del.files].sort());
    expect(fx.listDir('inbox')).toEqual([]);
    expect(remoteFiles(fx)).toEqual([]);
    expect(remoteState(fx)).toMatchObject({ circuit: 'halted', last_error: expect.stringMatching(/^HOST_KEY_MISMATCH: /) });
  });
});

describe('trust: our key', () => {
  it('a server refusing our key halts the partner too (retrying risks a lockout): one attempt, REMOTE_AUTH_FAILED', async (t) => {
    const p = await partnerServer(t);
    const otherKey = join(p.sshd.dir, 'not-authorised');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey]);
    const fx = await remoteFixture(t, p, { private_key: otherKey });
    await partnerUploads(p.inbox, 1);
    const connections = () => p.sshd.logs().split('\n').filter((l) => l.startsWith('Connection from 127.0.0.1'));
    const before = connections().length; // the harness's own readiness probe
    const d = await daemon(t, fx);
    const refused = await d.waitFor((l) => l.code === 'REMOTE_AUTH_FAILED', 'REMOTE_AUTH_FAILED', 10_000);
    expect(refused).toMatchObject({ level: 'error', partner: 'acme' });
    await sleep(3000);
    expect(d.count((l) => l.code === 'REMOTE_AUTH_FAILED')).toBe(1);
    expect(connections()).toHaveLength(before + 1);
    expect(remoteState(fx)).toMatchObject({ circuit: 'halted', last_error: expect.stringMatching(/^REMOTE_AUTH_FAILED: /) });
    expect(fx.listDir('inbox')).toEqual([]);
  });
});

describe('failures', () => {
  it('server down: rounds fail with jittered backoff, the circuit opens; once the server is back and the cool-down over, a probe closes it and the delivery is pulled', async (t) => {
    const p = await partnerServer(t);
    const fx = await remoteFixture(t, p, { retry: '4,4000,full', breaker_failures: 4, breaker_cooldown: '3s', connect_timeout: '5s' });
    const del = await partnerUploads(p.inbox, 1);
    await p.sshd.stop();
    const d = await daemon(t, fx);

    const opened = await d.waitFor(msg(/^circuit open/), 'the circuit opening', 20_000);
    expect(opened).toMatchObject({ level: 'error', partner: 'acme', from: 'closed', to: 'open' });
    const retries = d.logs.filter(msg('remote round failed; retrying'));
    expect(retries.map((l) => l.attempt)).toEqual([1, 2, 3]);
    // Full jitter: each delay is random in [0, min(cap, 1 s * 2^n)]
    retries.forEach((l, n) => expect(l.retry_in_ms).toBeLessThanOrEqual(1000 * 2 ** n));
    expect(new Set(retries.map((l) => l.retry_in_ms)).size).toBe(3);
    for (let i = 1; i < retries.length; i++) expect(ms(retries[i]!) - ms(retries[i - 1]!)).toBeGreaterThanOrEqual(retries[i - 1]!.retry_in_ms - 5);
    await until(() => remoteState(fx)?.circuit === 'open', "remote_state.circuit = 'open'");
    expect(remoteState(fx)).toMatchObject({ failures: 4, last_error: expect.stringMatching(/^REMOTE_UNAVAILABLE: connect to 127\.0\.0\.1/) });
    // While open, rounds are refused without touching the network, and say so at most once per round.
    await sleep(1500);
    expect(d.count((l) => l.code === 'CIRCUIT_OPEN' && atLeast(l, 'error'))).toBe(0);

    await p.sshd.start();
    const halfOpen = await d.waitFor(msg(/^circuit half-open/), 'the probe', 10_000);
    expect(ms(halfOpen) - ms(opened)).toBeGreaterThanOrEqual(3000 - 50); // not before the cool-down
    const closed = await d.waitFor(msg(/^circuit closed/), 'the circuit closing', 10_000);
    expect(closed).toMatchObject({ from: 'half-open', to: 'closed' });
    expect(p.sshd.logs().split('\n').filter((l) => l.startsWith('Connection from')).length).toBeGreaterThanOrEqual(1);

    await until(() => ls(p.outbox).includes(ackName(del)) && ls(p.archive).length === 3, 'the ACK and the move after the server came back', 20_000);
    expect(fx.rows()).toHaveLength(3);
    expect(ls(p.archive)).toEqual([...del.files].sort());
    await until(() => remoteState(fx)?.circuit === 'closed', "remote_state.circuit = 'closed'");
    expect(remoteState(fx)).toMatchObject({ failures: 0, last_error: null });
  });

  it('server killed in the middle of a large download: nothing partial is ingested or rejected, and the delivery succeeds on retry', async (t) => {
    const p = await partnerServer(t);
    const fx = await remoteFixture(t, p, { retry: '3,300,full', breaker_failures: 3, breaker_cooldown: '1s' });
    const d = await daemon(t, fx);
    // ~33 MB: long keys make it bytes rather than rows (ingesting rows is what takes the time here)
    const rows = Array.from({ length: 220_000 }, (_, i) => row(i, { SKU: `A-${String(i).padStart(60, '0')}` }));
    const del = await partnerUploads(p.inbox, 1, rows);
    expect(del.data.length).toBeGreaterThan(30e6);

    // Freeze the server the moment the download starts, see that it is partial, then kill it.
    const part = fx.path('inbox', `${del.name}.part`);
    await until(() => (statSync(part, { throwIfNoEntry: false })?.size ?? 0) > 0, `${del.name}.part`, 20_000, 1);
    p.sshd.signal('SIGSTOP');
    await sleep(200);
    const partial = statSync(part).size;
    p.sshd.kill();
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThan(del.data.length);

    await d.waitFor(msg('remote round failed; retrying'), 'a failed round', 10_000);
    await until(() => !existsSync(part), 'the .part removed', 10_000);
    await sleep(1500); // the local pipeline has every chance to (wrongly) take something
    expect(fx.listDir('inbox').filter((n) => n.startsWith(del.name) && !n.endsWith('.sha256') && !n.endsWith('.manifest.json'))).toEqual([]);
    expect(fx.rows()).toEqual([]);
    expect(fx.query('SELECT id FROM deliveries')).toEqual([]);
    expect(fx.listDir('error')).toEqual([]);
    expect(remoteFiles(fx).find((r) => r.name === del.name)).toMatchObject({ state: 'downloading' });

    await p.sshd.start();
    await until(() => ls(p.outbox).includes(ackName(del)), 'the ACK after the restart', 60_000);
    expect(JSON.parse(readFileSync(join(p.outbox, ackName(del)), 'utf8'))).toMatchObject({ status: 'accepted', sha256: del.sha256, records: rows.length });
    expect(fx.query('SELECT count(*) AS n FROM inventory')[0]!.n).toBe(rows.length);
    expect(fx.query('SELECT outcome FROM deliveries')).toEqual([{ outcome: 'accepted' }]);
    expect(fx.listDir('error')).toEqual([]);
    expect(readFileSync(fx.path('archive', del.name)).equals(del.data)).toBe(true);
    await until(() => ls(p.archive).length === 3, 'the originals archived on the partner server');
  });

  it('a crash between the local commit and the remote move: no second apply, and the move and the ACK complete after the restart', async (t) => {
    const p = await partnerServer(t);
    const fx = await remoteFixture(t, p);
    const del = await partnerUploads(p.inbox, 1);
    const first = spawnDaemon(fx.configPath, { cwd: fx.dir, env: { INBOXD_TEST_CRASH_AT: 'after-commit' } });
    t.onTestFinished(async () => {
      if (first.running) await first.kill();
    });
    expect(await first.exited).toMatchObject({ signal: 'SIGKILL' });

    // Committed here; not answered, so the partner's files stay where they are.
    expect(fx.rows()).toHaveLength(3);
    expect(fx.query('SELECT outcome, answered_at FROM deliveries')).toEqual([{ outcome: 'accepted', answered_at: null }]);
    expect(remoteFiles(fx).map((r) => r.state)).toEqual(['downloaded', 'downloaded', 'downloaded']);
    expect(ls(p.inbox)).toEqual([...del.files].sort());
    expect(ls(p.outbox)).toEqual([]);

    const d = await daemon(t, fx);
    await until(() => ls(p.outbox).includes(ackName(del)) && ls(p.archive).length === 3, 'the ACK and the move after the restart', 20_000);
    await sleep(2500); // more rounds: the originals are not pulled again
    const deliveries = fx.query('SELECT id, outcome FROM deliveries');
    expect(deliveries).toEqual([{ id: expect.any(String), outcome: 'accepted' }]);
    expect(fx.query('SELECT DISTINCT _delivery_id AS id FROM inventory')).toEqual([{ id: deliveries[0]!.id }]);
    expect(fx.rows()).toHaveLength(3);
    expect(fx.query('SELECT count(*) AS n FROM dedupe')[0]!.n).toBe(1);
    expect(d.count(msg('pulled from the partner server'))).toBe(0);
    expect(d.count(msg('recovered: answer completed after an interruption'))).toBe(1);
    expect(ls(p.inbox)).toEqual([]);
    expect(ls(p.outbox)).toEqual([ackName(del)]);
    expect(JSON.parse(readFileSync(join(p.outbox, ackName(del)), 'utf8')).delivery_id).toBe(deliveries[0]!.id);
    expect(remoteFiles(fx).map((r) => r.state)).toEqual(['done', 'done', 'done']);
    expect(remoteUploads(fx)).toEqual([{ dir: 'outbox', name: ackName(del), state: 'done', attempts: 1, last_error: null }]);
    expect(fx.listDir('error')).toEqual([]);
  });

  it('an ACK upload that fails is kept pending in the database, does not stop pulling, survives a restart, and is uploaded once the outbox is back', async (t) => {
    const p = await partnerServer(t);
    const fx = await remoteFixture(t, p);
    rmSync(p.outbox, { recursive: true });
    const d = await daemon(t, fx);
    const one = await partnerUploads(p.inbox, 1);

    await until(() => remoteUploads(fx)[0]?.attempts >= 2, 'two failed upload attempts', 20_000);
    const [pending] = remoteUploads(fx);
    expect(pending).toMatchObject({ dir: 'outbox', name: ackName(one), state: 'pending', last_error: expect.stringMatching(/no such file/i) });
    expect(d.logs.find(msg('answer upload failed; kept pending'))).toMatchObject({ level: 'warn', file: ackName(one), partner: 'acme' });
    expect(remoteState(fx)).toMatchObject({ circuit: 'closed' }); // the server is fine; one directory is not

    // Pulling goes on meanwhile.
    const two = await partnerUploads(p.inbox, 2, rowsOf(2, 50));
    await until(() => fx.rows().length === 5, 'the second delivery applied', 20_000);
    await until(() => ls(p.archive).length === 6, 'both deliveries archived on the partner server');
    await until(() => remoteUploads(fx).length === 2 && remoteUploads(fx).every((u) => u.attempts >= 1), 'both ACKs tried');

    const stopped = await d.stop('SIGTERM');
    expect(stopped.code).toBe(0);
    expect(remoteUploads(fx)).toEqual([ackName(one), ackName(two)].map((name) => ({ dir: 'outbox', name, state: 'pending', attempts: expect.any(Number), last_error: expect.stringMatching(/no such file/i) })));
    expect(existsSync(p.outbox)).toBe(false);

    mkdirSync(p.outbox);
    const again = await daemon(t, fx);
    await until(() => remoteUploads(fx).every((u) => u.state === 'done'), 'both ACKs uploaded after the restart', 20_000);
    expect(ls(p.outbox)).toEqual([ackName(one), ackName(two)]); // and no temporary file
    expect(remoteUploads(fx)).toEqual([ackName(one), ackName(two)].map((name) => ({ dir: 'outbox', name, state: 'done', attempts: expect.any(Number), last_error: null })));
    expect(await again.waitForCount(msg('answer uploaded to the partner'), 2, 'upload log lines')).toHaveLength(2); // the ledger is written just before the line
    expect(fx.query('SELECT outcome FROM deliveries ORDER BY seq')).toEqual([{ outcome: 'accepted' }, { outcome: 'accepted' }]);
  });

  it('an archive directory missing on the partner server: the originals stay put and are not pulled again, and are moved once it is back', async (t) => {
    const p = await partnerServer(t);
    const fx = await remoteFixture(t, p);
    rmSync(p.archive, { recursive: true });
    const d = await daemon(t, fx);
    const del = await partnerUploads(p.inbox, 1);

    await until(() => ls(p.outbox).includes(ackName(del)), 'the ACK', 20_000);
    await d.waitForCount(msg('pulled original could not be archived on the partner server; tried again next round'), 6, 'failed moves (two rounds)', 10_000);
    expect(ls(p.inbox)).toEqual([...del.files].sort());
    expect(remoteFiles(fx).map((r) => r.state)).toEqual(['answered', 'answered', 'answered']);
    expect(d.count(msg('pulled from the partner server'))).toBe(3); // once, not again
    expect(fx.query('SELECT outcome FROM deliveries')).toEqual([{ outcome: 'accepted' }]);
    expect(remoteState(fx)).toMatchObject({ circuit: 'closed' });

    mkdirSync(p.archive);
    await until(() => ls(p.archive).length === 3, 'the originals archived', 10_000);
    await until(() => remoteFiles(fx).every((r) => r.state === 'done'), 'remote_files done');
    expect(ls(p.inbox)).toEqual([]);
    expect(fx.query('SELECT outcome FROM deliveries')).toEqual([{ outcome: 'accepted' }]);
  });

  it('stopping while a round waits to retry ends the wait at once instead of holding the shutdown', async (t) => {
    const p = await partnerServer(t);
    // No jitter: the waits are exactly 1 s, 2 s, 4 s, 8 s...
    const fx = await remoteFixture(t, p, { retry: '10,600000,none', breaker_failures: 20 });
    await p.sshd.stop();
    const d = await daemon(t, fx);
    const third = await d.waitFor((l) => l.msg === 'remote round failed; retrying' && l.attempt === 3, 'the third retry', 15_000);
    expect(third.retry_in_ms).toBe(4000);
    const stopped = await d.stop('SIGTERM');
    expect(stopped.code).toBe(0);
    expect(stopped.ms).toBeLessThan(3000); // not the 4 s wait, let alone the 30 s shutdown timeout
    expect(d.logs.find(msg('remote round abandoned: inboxd is stopping'))).toBeDefined();
    expect(d.logs.filter((l) => atLeast(l, 'error'))).toEqual([]);
  });
});

describe('the ledger', () => {
  const ledger = () => {
    const db = openDatabase(':memory:');
    migrate(db, ':memory:');
    return { db, l: new SqliteRemoteLedger(db) };
  };
  const plan = (files: string[]): AnswerPlan => ({ writes: [{ dir: 'outbox', name: `${files[0]}.ack.json`, content: '{}' }], moves: files.map((f) => ({ from: f, dir: 'archive', to: f, readOnly: true })) });
  const stateOf = (db: Db, name: string) => (db.prepare('SELECT state FROM remote_files WHERE name = ?').get(name) as { state: string }).state;

  it('the local pipeline answering a file before its download was recorded as done: the answer wins, the file is released', async () => {
    const { db, l } = ledger();
    await l.downloading('acme', 'a.csv', 10, 0);
    // The download renamed a.csv into the inbox; the watcher was quicker than the bookkeeping.
    await l.answered('acme', 'd1', plan(['a.csv']));
    await l.downloaded('acme', 'a.csv');
    expect(stateOf(db, 'a.csv')).toBe('answered');
    expect(await l.toRelease('acme')).toEqual(['a.csv']);
    expect(await l.isHeld('acme', 'a.csv')).toBe(true);
  });

  it('an answer file gone before its upload is recorded as lost with the reason, not as uploaded', async () => {
    const { db, l } = ledger();
    await l.answered('acme', 'd1', plan(['a.csv']));
    const [u] = await l.pendingUploads('acme');
    await l.uploadFailed('acme', u!, 'No such file');
    await l.uploadLost('acme', u!, 'the local answer file is gone');
    expect(db.prepare('SELECT state, attempts, last_error FROM remote_uploads').get()).toEqual({ state: 'lost', attempts: 1, last_error: 'the local answer file is gone' });
    expect(await l.pendingUploads('acme')).toEqual([]);
  });

  it('remote_state keeps the last error until a round succeeds, which clears it', async () => {
    const { db, l } = ledger();
    const row = () => db.prepare('SELECT circuit, failures, last_error FROM remote_state').get();
    await l.setCircuit('acme', 'closed', 1, 'REMOTE_UNAVAILABLE: refused');
    await l.setCircuit('acme', 'open', 5);
    expect(row()).toEqual({ circuit: 'open', failures: 5, last_error: 'REMOTE_UNAVAILABLE: refused' });
    await l.setCircuit('acme', 'closed', 0, null);
    expect(row()).toEqual({ circuit: 'closed', failures: 0, last_error: null });
  });
});
