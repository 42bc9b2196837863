/**
 * Builds test/fixtures/release-0.db: a database made by the last release (commit 5c32aa5, schema
 * version 0, no migrations yet), by that release's own CLI, driven by its own test helpers. Run by
 * scripts/make-release-db.sh, from a checkout of the release: `npx vite-node scripts/make-release-db.ts OUT`.
 *
 * What is in it (flow acme/inventory, the test helpers' MAPPING): sequence 1 accepted (rows A-101..A-103),
 * sequence 2 rejected (ROW_ERRORS), sequence 1 sent again (DUPLICATE), sequence 2 sent again fixed and
 * accepted (A-104, A-105), the rejection resolved by an operator, a late window judged by the daemon, and a replay of sequence 1
 * asked for while the daemon ran (through its replay queue).
 */
import { copyFileSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Fixture, row, rowsOf, runCli } from '../test/helpers/fixture.js';
import { startDaemon } from '../test/helpers/daemon.js';

const out = process.argv[2];
if (!out) throw new Error('usage: make-release-db.ts OUT.db');

function expectCode(what: string, r: { code: number | null; stderr: string }, code: number): void {
  if (r.code !== code) throw new Error(`${what}: exit ${r.code}, expected ${code}\n${r.stderr}`);
}

/** A window opening `inMs` from now (whole seconds, UTC), once a year: the daemon judges it at its close. */
function windowSoon(inMs: number, durationS: number) {
  const opens = new Date(Math.ceil((Date.now() + inMs) / 1000) * 1000);
  return { cron: `${opens.getUTCSeconds()} ${opens.getUTCMinutes()} ${opens.getUTCHours()} ${opens.getUTCDate()} ${opens.getUTCMonth() + 1} *`, duration: `${durationS}s`, timezone: 'UTC' };
}

const fx = new Fixture(await fsp.mkdtemp(join(tmpdir(), 'inboxd-release-db-')));
const ops = (...args: string[]) => runCli([...args, '--config', fx.configPath], { cwd: fx.dir });
await fx.writeConfig();
await fx.makeDelivery({ seq: 1 });
expectCode('seq 1', await fx.runOnce(), 0);
await fx.makeDelivery({ seq: 2, rows: [row(4), row(5, { Quantity: 'x' })] });
expectCode('seq 2', await fx.runOnce(), 1);
await fx.makeDelivery({ seq: 1 });
expectCode('seq 1 again', await fx.runOnce(), 0);
await fx.makeDelivery({ seq: 2, rows: rowsOf(2, 4) });
expectCode('seq 2 fixed', await fx.runOnce(), 0);
const id = (seq: number, outcome: string) => fx.query('SELECT id FROM deliveries WHERE seq = ? AND outcome = ?', seq, outcome)[0]!.id as string;
expectCode('resolve', await ops('deliveries', 'resolve', id(2, 'rejected'), '--note', 'the partner sent sequence 2 again, fixed'), 0);

await fx.writeConfig({ flow: { window: windowSoon(1500, 1) } });
const d = await startDaemon(fx.configPath, { cwd: fx.dir });
await d.waitFor((l) => l.event === 'window.late', 'window.late', 30_000);
expectCode('replay', await ops('replay', id(1, 'accepted')), 0);
d.child.kill('SIGTERM');
const exit = await d.exited;
if (exit.code !== 0) throw new Error(`daemon exit ${exit.code}\n${d.stderr}`);

// The daemon's connection was the last: closing it checkpointed the WAL into the file, all there is to copy.
copyFileSync(fx.database, out);
await fsp.rm(fx.dir, { recursive: true, force: true });
