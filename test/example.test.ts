/** The README's first command, `npm run example`: the bundled example ingests its sample deliveries. */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDatabase } from '../src/store/sqlite/driver.js';
import { expect, it } from 'vitest';

const repo = fileURLToPath(new URL('..', import.meta.url));

it('npm run example ingests both sample deliveries, answers them and shows the rows', (t) => {
  // A copy of the parts the command uses, so the run writes its var/ there and not into the checkout.
  const dir = mkdtempSync(join(tmpdir(), 'inboxd-example-'));
  t.onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  for (const d of ['config', 'scripts']) cpSync(join(repo, d), join(dir, d), { recursive: true });
  for (const d of ['dist', 'node_modules']) symlinkSync(join(repo, d), join(dir, d));
  const script = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.example!;
  expect(script).toMatch(/^npm run build && /); // `npm test` has built dist/ already
  const run = spawnSync('sh', ['-c', script.replace(/^npm run build && /, '')], { cwd: dir, encoding: 'utf8', timeout: 50_000 });
  expect(run.status, run.stderr).toBe(0);

  const summary = run.stdout.split('\n').filter((l) => l.startsWith('{"')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'run complete');
  expect(summary).toMatchObject({ accepted: 2, rejected: 0, waiting: 0 });
  for (const [partner, file] of [['acme', 'inventory_20250916T0200Z_001.csv'], ['globex', 'globex_orders_20250916T020000Z_000042.csv']] as const) {
    const manifest = JSON.parse(readFileSync(join(repo, 'config/samples', partner, `${file}.manifest.json`), 'utf8')) as { records: number };
    const ackPath = join(dir, 'var/partners', partner, 'outbox', `${file}.ack.json`);
    expect(existsSync(ackPath), ackPath).toBe(true);
    expect(JSON.parse(readFileSync(ackPath, 'utf8'))).toMatchObject({ status: 'accepted', partner, file, records: manifest.records });
    expect(run.stdout).toContain(`== ${partner}/outbox/${file}.ack.json`);
  }
  const db = openDatabase(join(dir, 'var/inboxd.db'), { readonly: true });
  t.onTestFinished(() => void db.close());
  expect(db.prepare('SELECT count(*) AS n FROM inventory').get()).toEqual({ n: 3 });
  expect(db.prepare('SELECT count(*) AS n FROM orders').get()).toEqual({ n: 2 });
  expect(run.stdout).toContain('== table orders');
}, 60_000);
