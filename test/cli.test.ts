/** The command line as a new user meets it: on the PATH, --version, where the configuration comes from, readable logs, signals. */
import { execFile } from 'node:child_process';
import { promises as fsp, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Gpg } from './helpers/gpg.js';
import { testDaemon } from './helpers/daemon.js';
import { CLI, fixture, row, runCli, SLOW } from './helpers/fixture.js';

const run = promisify(execFile);
const REPO = join(CLI, '..', '..');
const { version } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };

describe.concurrent('on the PATH, and installable', SLOW, () => {
  it('the built bin is executable and prints its version (--version, -V)', async () => {
    expect(statSync(CLI).mode & 0o111).toBe(0o111);
    for (const flag of ['--version', '-V']) {
      const { stdout } = await run(CLI, [flag]); // run as a program, not through node: the shebang and the mode
      expect(stdout.trim()).toBe(version);
    }
  });

  it('npm pack makes a tarball holding what runs, and it runs unpacked elsewhere', async (t) => {
    const dir = await fsp.mkdtemp(join(tmpdir(), 'inboxd-pack-'));
    t.onTestFinished(() => fsp.rm(dir, { recursive: true, force: true }));
    // dist/ is built already (npm test builds first); --ignore-scripts spares a second build.
    const { stdout } = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir], { cwd: REPO });
    const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string; mode: number }[] }[];
    const files = packed!.files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['dist/cli.js', 'package.json', 'README.md', 'config/inboxd.schema.json', 'config/inboxd.example.yaml', 'config/inboxd.production.yaml', 'systemd/inboxd.service', 'scripts/install.sh']));
    expect(files.filter((f) => /^(src|test)\/|\.map$|tsbuildinfo/.test(f))).toEqual([]);
    expect(packed!.files.find((f) => f.path === 'dist/cli.js')!.mode & 0o111).toBe(0o111);
    await run('tar', ['-xzf', join(dir, packed!.filename), '-C', dir]);
    await fsp.symlink(join(REPO, 'node_modules'), join(dir, 'package', 'node_modules'));
    expect((await run(join(dir, 'package', 'dist', 'cli.js'), ['--version'])).stdout.trim()).toBe(version);
    const schema = JSON.parse((await run(join(dir, 'package', 'dist', 'cli.js'), ['config', 'schema'])).stdout) as { properties: object };
    expect(Object.keys(schema.properties)).toContain('partners');
  });
});

describe.concurrent('where the configuration comes from', SLOW, () => {
  it('--config may be left out: INBOXD_CONFIG, then /etc/inboxd/inboxd.yaml; an error says which was used', async (t) => {
    const fx = await fixture(t);
    const fromEnv = await runCli(['check-config'], { env: { INBOXD_CONFIG: fx.configPath } });
    expect(fromEnv.code).toBe(0);
    expect(fromEnv.stdout).toContain(`${fx.configPath}: ok`);
    const missing = join(fx.dir, 'nowhere.yaml');
    const badEnv = await runCli(['status'], { env: { INBOXD_CONFIG: missing } });
    expect(badEnv.code).toBe(78);
    expect(badEnv.stderr).toMatch(new RegExp(`CONFIG_INVALID: ${missing}: cannot read: .*\\(from INBOXD_CONFIG\\)`));
    const env = { ...process.env };
    delete env.INBOXD_CONFIG;
    const byDefault = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, [CLI, 'run', '--once'], { env }, (err, _out, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? null : 0, stderr }));
    });
    expect(byDefault.code).toBe(78);
    expect(byDefault.stderr).toContain('/etc/inboxd/inboxd.yaml');
    expect(byDefault.stderr).toContain('(the default: no --config given, INBOXD_CONFIG not set)');
  });
});

describe.concurrent('configuration help', SLOW, () => {
  it('config schema prints the JSON Schema shipped in config/, which the example configuration names', async () => {
    const r = await runCli(['config', 'schema']);
    expect(r.code).toBe(0);
    // The committed file is the one the zod schema generates (regenerate: inboxd config schema > config/inboxd.schema.json).
    expect(r.stdout).toBe(readFileSync(join(REPO, 'config', 'inboxd.schema.json'), 'utf8'));
    const schema = JSON.parse(r.stdout) as { properties: Record<string, { default?: unknown; enum?: unknown }>; required: string[] };
    expect(schema.required).toEqual(expect.arrayContaining(['root', 'database', 'partners']));
    expect(schema.properties.settle_time!.default).toBe('500ms');
    expect(schema.properties.log_level!.enum).toContain('warn');
    expect(readFileSync(join(REPO, 'config', 'inboxd.example.yaml'), 'utf8').split('\n')[0]).toBe('# yaml-language-server: $schema=./inboxd.schema.json');
  });
});

describe.concurrent('logs a person can read', SLOW, () => {
  it('JSON lines name their level; --log-level chooses which; --pretty makes them readable', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    const json = await fx.runOnce();
    expect(json.code).toBe(0);
    expect(json.logs.find((l) => l.msg === 'run complete')).toMatchObject({ level: 'info' });
    expect(json.stdout).not.toMatch(/"level":\d/);
    await fx.makeDelivery({ seq: 2 });
    const quiet = await fx.runOnce({ args: ['run', '--once', '--config', fx.configPath, '--log-level', 'warn'] });
    expect(quiet.code).toBe(0);
    expect(quiet.logs.filter((l) => l.level === 'info')).toEqual([]);
    expect(fx.listDir('outbox')).toHaveLength(2);
    await fx.makeDelivery({ seq: 3 });
    const pretty = await fx.runOnce({ args: ['run', '--once', '--config', fx.configPath, '--pretty'] });
    expect(pretty.code).toBe(0);
    expect(pretty.stdout).not.toMatch(/^\{/m); // no JSON line
    expect(pretty.stdout).toMatch(/INFO.*: run complete/);
    const bad = await fx.runOnce({ args: ['run', '--once', '--config', fx.configPath, '--log-level', 'loud'] });
    expect(bad.code).toBe(64);
    expect(bad.stderr).toMatch(/--log-level.*loud.*trace, debug, info, warn, error, fatal|Allowed choices are trace, debug, info, warn, error, fatal/);
  });

  it('SIGHUP is logged and ignored: the daemon goes on, and stops on SIGTERM with 0', async (t) => {
    const fx = await fixture(t);
    const d = await testDaemon(t, fx);
    d.signal('SIGHUP');
    await d.waitFor((l) => l.signal === 'SIGHUP' && l.level === 'warn', 'the SIGHUP line');
    expect(d.logs.find((l) => l.signal === 'SIGHUP')?.msg).toMatch(/restart to apply a change \(systemctl restart inboxd\)/);
    await fx.makeDelivery({ seq: 1 });
    await d.waitFor((l) => l.msg === 'delivery accepted', 'the delivery after SIGHUP');
    expect((await d.stop()).code).toBe(0);
  });
});

describe.concurrent('helpers for partners and engineers', SLOW, () => {
  it('pack writes the sidecar and a manifest with the control totals that run --once accepts (amounts as decimals)', async (t) => {
    const fx = await fixture(t, { flow: { totals: ['qty', 'unit_cost'] } });
    const d = await fx.makeDelivery({ seq: 1, rows: [row(1, { UnitCost: '1.05' }), row(2, { UnitCost: '20.10' })] });
    const data = fx.path('inbox', d.name);
    await Promise.all([d.sidecar!, d.manifest!].map((f) => fsp.rm(fx.path('inbox', f))));
    // Packed elsewhere, as a partner does before uploading, then moved in.
    const out = join(fx.dir, 'packed');
    await fsp.mkdir(out);
    const packed = await runCli(['pack', data, '--config', fx.configPath, '--partner', 'acme', '--flow', 'inventory', '--out-dir', out]);
    expect(packed.code).toBe(0);
    const manifest = JSON.parse(readFileSync(join(out, `${d.name}.manifest.json`), 'utf8'));
    expect(manifest).toMatchObject({ file: d.name, records: 2, sums: { qty: 23, unit_cost: '21.15' }, sha256: d.sha256, schema_version: 1 });
    expect(readFileSync(join(out, `${d.name}.sha256`), 'utf8')).toBe(`${d.sha256}  ${d.name}\n`);
    for (const f of [`${d.name}.sha256`, `${d.name}.manifest.json`]) await fsp.rename(join(out, f), fx.path('inbox', f));
    const r = await fx.runOnce();
    expect(r.code).toBe(0);
    expect(JSON.parse(readFileSync(fx.path('outbox', `${d.name}.ack.json`), 'utf8'))).toMatchObject({ status: 'accepted', records: 2, sums: { qty: 23, unit_cost: 2115 } });
    expect(fx.rows().map((x) => x.unit_cost)).toEqual([105, 2010]);
  });

  it('pack --encrypt-to --sign-with: the .pgp file and its companions are accepted by a partner config that requires signatures', async (t) => {
    const gpg = await Gpg.create();
    t.onTestFinished(() => gpg.cleanup());
    await gpg.genKey('inboxd@us', 'ed25519');
    await gpg.genKey('partner@acme', 'ed25519');
    const fx = await fixture(t);
    const keys = { ours: join(fx.dir, 'ours.asc'), oursPublic: join(fx.dir, 'ours.pub.asc'), partner: join(fx.dir, 'acme.asc'), partnerSecret: join(fx.dir, 'acme.sec.asc') };
    await fsp.writeFile(keys.ours, await gpg.exportSecret('inboxd@us'));
    await fsp.writeFile(keys.oursPublic, await gpg.run(['--armor', '--export', '<inboxd@us>']));
    await fsp.writeFile(keys.partner, await gpg.run(['--armor', '--export', '<partner@acme>']));
    await fsp.writeFile(keys.partnerSecret, await gpg.exportSecret('partner@acme'));
    const config = (await fsp.readFile(fx.configPath, 'utf8'))
      .replace(/^partners:\n {2}acme:\n/m, 'pgp:\n  keys: [ours.asc]\npartners:\n  acme:\n    pgp:\n      verification_keys: [acme.asc]\n      require_signature: true\n      require_encryption: true\n');
    await fsp.writeFile(fx.configPath, config);
    const d = await fx.makeDelivery({ seq: 1, manifest: false, sidecar: false });
    const plain = join(fx.dir, d.name);
    await fsp.rename(fx.path('inbox', d.name), plain);
    const out = join(fx.dir, 'packed');
    await fsp.mkdir(out);
    const packed = await runCli(['pack', plain, '--config', fx.configPath, '--partner', 'acme', '--flow', 'inventory', '--encrypt-to', keys.oursPublic, '--sign-with', keys.partnerSecret, '--out-dir', out]);
    expect(packed.code, packed.stderr).toBe(0);
    const name = `${d.name}.pgp`;
    const files = [name, `${name}.sha256`, `${name}.manifest.json`];
    expect(readdirSync(out).sort()).toEqual(files.sort());
    expect(JSON.parse(readFileSync(join(out, `${name}.manifest.json`), 'utf8'))).toMatchObject({ file: name, records: 3, sums: { qty: 36 } });
    for (const f of files) await fsp.rename(join(out, f), fx.path('inbox', f));
    const r = await fx.runOnce();
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(readFileSync(fx.path('outbox', `${name}.ack.json`), 'utf8'))).toMatchObject({ status: 'accepted', records: 3 });
    expect(fx.rows()).toHaveLength(3);
    const [decrypted] = fx.query("SELECT detail FROM events WHERE step = 'decrypted'");
    expect(decrypted?.detail).toBe(`signed by ${await gpg.fingerprint('partner@acme')}`);
  });

  it('pack without a configuration (--mapping, --totals) gives the same totals; a file with bad rows is refused', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, manifest: false, sidecar: false });
    const r = await runCli(['pack', fx.path('inbox', d.name), '--mapping', join(fx.dir, 'acme-inventory.csv'), '--totals', 'qty']);
    expect(r.code).toBe(0);
    expect(JSON.parse(readFileSync(fx.path('inbox', `${d.name}.manifest.json`), 'utf8'))).toMatchObject({ records: 3, sums: { qty: 36 } });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.listDir('outbox')).toEqual([`${d.name}.ack.json`]);
    const bad = await fx.makeDelivery({ seq: 2, manifest: false, sidecar: false, rows: [row(1, { Quantity: 'x1' })] });
    const refused = await runCli(['pack', fx.path('inbox', bad.name), '--mapping', join(fx.dir, 'acme-inventory.csv'), '--totals', 'qty']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/ROW_ERRORS: .*1 of 1 rows are invalid \(line 2, Quantity: "x1" is not an integer\)/);
  });

  it('mapping init writes a skeleton from a sample, types guessed and noted, that the configuration accepts', async (t) => {
    const fx = await fixture(t);
    const sample = join(fx.dir, 'sample.csv');
    await fsp.writeFile(sample, 'Order No,CustomerEmail,Total,Currency,Placed,Status,Gift,Code\n1,a@x.de,12.50,EUR,2025-09-16T02:00:00Z,NEW,yes,007\n2,b@x.de,3,USD,2025-09-16T03:00:00+02:00,NEW,no,010\n3,,4.125,EUR,2025-09-17T00:00:00Z,SHIPPED,no,020\n4,c@x.de,1,EUR,2025-09-17T00:00:00Z,NEW,yes,030\n');
    const out = join(fx.dir, 'guessed.csv');
    const r = await runCli(['mapping', 'init', sample, '--out', out]);
    expect(r.code).toBe(0);
    const lines = readFileSync(out, 'utf8').trim().split('\n');
    expect(lines[0]).toBe('ours,partner,type,required,pii,notes');
    expect(lines.slice(1).map((l) => l.split(',').slice(0, 5).join(','))).toEqual([
      'order_no,Order No,integer,yes,', 'customer_email,CustomerEmail,string,,yes', 'total,Total,amount:3,yes,', 'currency,Currency,currency,yes,',
      'placed,Placed,datetime,yes,', 'status,Status,enum:NEW|SHIPPED,yes,', 'gift,Gift,boolean,yes,', 'code,Code,string,yes,',
    ]);
    expect(lines[8]).toMatch(/leading zeros/);
    expect((await runCli(['mapping', 'init', sample, '--out', out])).code).toBe(64); // never overwritten
    await fx.writeConfig({ flow: { mapping: 'guessed.csv', table: 'orders', key: ['order_no'], totals: ['total'] } });
    expect((await runCli(['check-config', '--config', fx.configPath])).code).toBe(0);
  });
});

describe.concurrent('ops install', SLOW, () => {
  it('the production configuration example passes check-config', async () => {
    const r = await runCli(['check-config', '--config', join(REPO, 'config', 'inboxd.production.yaml')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('scripts/install.sh parses, and a dry run shows every step: user, directories, package, config, unit', async () => {
    const script = join(REPO, 'scripts', 'install.sh');
    await run('bash', ['-n', script]);
    const { stdout } = await run(script, ['inboxd-0.1.0.tgz'], { env: { ...process.env, DRY_RUN: '1', USER_NAME: 'inboxd-no-such-user', CONFIG_DIR: '/nonexistent/etc' } });
    for (const step of [/useradd --system .* inboxd-no-such-user/, /tar -xzf inboxd-0\.1\.0\.tgz -C \/opt\/inboxd/, /npm install --prefix \/opt\/inboxd --omit=dev/, /ln -sfn \/opt\/inboxd\/dist\/cli\.js \/usr\/local\/bin\/inboxd/, /inboxd\.production\.yaml \/nonexistent\/etc\/inboxd\.yaml/, /systemctl enable inboxd/]) {
      expect(stdout).toMatch(step);
    }
  });
});
