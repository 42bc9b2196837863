/**
 * The operations page (issue 14) in a real headless Chromium (Debian's chromium, driven by
 * playwright-core) against a real daemon: log in, a rejected delivery on the overview, its row error,
 * the mapping fixed, replay pressed, the delivery accepted and the partner's ACK in its outbox; mark
 * resolved; and the refusals: no session, wrong password, too many of them, an action without its CSRF
 * token, an action through GET. Screenshots of the overview and of a delivery go to docs/screenshots/.
 */
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { describe, expect, it, type TestContext } from 'vitest';
import { type DaemonProcess, testDaemon, until } from './helpers/daemon.js';
import { CLI, type Fixture, fixture, MAPPING, row, runCli, type RunResult } from './helpers/fixture.js';

const SCREENSHOTS = fileURLToPath(new URL('../docs/screenshots/', import.meta.url));
const PASSWORD = 'correct horse battery staple';
const HTTP = { listen: '127.0.0.1:0', ui: true, users: 'users.txt' };
const FIXED = MAPPING.replace('unit_cost,UnitCost,amount:2', 'unit_cost,UnitCost,amount:3');

/** `inboxd web adduser NAME`, the password on standard input. */
function addUser(fx: Fixture, name: string, password: string): Promise<Pick<RunResult, 'code' | 'stdout' | 'stderr'>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'web', 'adduser', name, '--config', fx.configPath], { cwd: fx.dir, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject).on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(`${password}\n`);
  });
}

async function browser(t: TestContext, selfSigned = false): Promise<BrowserContext> {
  const profile = await fsp.mkdtemp(join(tmpdir(), 'inboxd-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium', headless: true, viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: selfSigned,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.onTestFinished(async () => {
    await context.close();
    await fsp.rm(profile, { recursive: true, force: true });
  });
  return context;
}

async function start(t: TestContext, fx: Fixture): Promise<{ d: DaemonProcess; base: string }> {
  const d = await testDaemon(t, fx);
  const { port } = await d.waitFor((l) => typeof l.port === 'number', 'the http listening line');
  return { d, base: `http://127.0.0.1:${port}` };
}

/** On the login page (where a page asked for without a session led), or at /login. */
async function login(page: Page, base: string, password = PASSWORD): Promise<void> {
  if (!page.url().startsWith(`${base}/login`)) await page.goto(`${base}/login`);
  await page.getByLabel('User').fill('alice');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
}

/** A fixture with the page on, user alice, and a delivery rejected for a three-decimal unit cost. */
async function rejected(t: TestContext): Promise<{ fx: Fixture; d: DaemonProcess; base: string; id: string; name: string }> {
  const fx = await fixture(t, { config: { http: HTTP } });
  expect(await addUser(fx, 'alice', PASSWORD)).toMatchObject({ code: 0 });
  const del = await fx.makeDelivery({ seq: 1, rows: [row(1), row(2, { UnitCost: '2.125' }), row(3)] });
  const { d, base } = await start(t, fx);
  await until(() => fx.listDir('error').includes(`${del.name}.error.json`), 'the error report');
  return { fx, d, base, id: fx.query('SELECT id FROM deliveries')[0]!.id as string, name: del.name };
}

describe.concurrent('the operations page', { timeout: 180_000 }, () => {
  it('log in, a rejected delivery and its row error, the mapping fixed, replay: accepted, the partner ACKed', async (t) => {
    const { fx, d, base, id, name } = await rejected(t);
    const page = await (await browser(t)).newPage();

    // Without a session: the login page, and back to the page asked for once logged in.
    await page.goto(`${base}/deliveries/${id}`);
    expect(new URL(page.url()).pathname).toBe('/login');
    await login(page, base);
    await page.goto(base);
    const open = page.locator('#overview table').nth(1);
    expect(await open.innerText()).toContain(id);
    expect(await open.innerText()).toContain('ROW_ERRORS');
    await page.screenshot({ path: join(SCREENSHOTS, 'overview.png'), fullPage: true });

    await open.getByRole('link', { name: id }).click();
    expect(new URL(page.url()).pathname).toBe(`/deliveries/${id}`);
    const errors = page.locator('h3:has-text("Row errors") + table');
    expect(await errors.locator('tbody tr').allInnerTexts()).toEqual([expect.stringMatching(/^3\tUnitCost\t.*2\.125.*/)]);
    const content = await page.content();
    for (const i of [1, 2, 3]) expect(content).not.toContain(`buyer${i}@example.com`); // personal data never shown
    await page.screenshot({ path: join(SCREENSHOTS, 'delivery.png'), fullPage: true });
    // The error CSV the partner got.
    const csv = await page.request.get(`${base}${await page.getByRole('link', { name: /Download the error CSV/ }).getAttribute('href')}`);
    expect(csv.headers()['content-type']).toContain('text/csv');
    expect(await csv.text()).toBe(await fx.readText('error', `${name}.errors.csv`));

    // The mapping fixed (three decimals), and inboxd restarted to read it: a restart logs everyone out.
    expect((await d.stop()).code).toBe(0);
    await fx.writeConfig({ mapping: FIXED, config: { http: HTTP } });
    const again = await start(t, fx);
    await page.goto(`${again.base}/deliveries/${id}`);
    expect(new URL(page.url()).pathname).toBe('/login');
    await login(page, again.base);
    expect(new URL(page.url()).pathname).toBe(`/deliveries/${id}`);
    await page.getByRole('button', { name: 'Replay' }).click();
    const flash = await page.getByRole('status').innerText();
    expect(flash).toMatch(/^Replayed as \S+: accepted; resolves /);
    const replayId = /Replayed as (\S+):/.exec(flash)![1]!;

    expect(await fx.readJson('outbox', `${name}.ack.json`)).toMatchObject({ status: 'accepted', records: 3, replay_of: id, delivery_id: replayId });
    expect(fx.rows().map((r) => [r.sku, r.unit_cost])).toEqual([['A-101', 1500], ['A-102', 2125], ['A-103', 1500]]);
    // Who asked is in the audit trail; the overview lists nothing open any more.
    expect(fx.query("SELECT detail FROM events WHERE delivery_id = ? AND step = 'replay asked'", id)).toEqual([{ detail: expect.stringMatching(/^by alice \(web\) \(request \d+\)$/) }]);
    await page.goto(again.base);
    expect(await page.locator('#overview').innerText()).toContain('Rejected deliveries not yet dealt with (0)');
    // The list, newest first, filtered by outcome and partner.
    const listed = async (query: string) => {
      await page.goto(`${again.base}/deliveries?${query}`);
      return page.locator('tbody tr td:first-child').allInnerTexts();
    };
    expect(await listed('')).toEqual([replayId, id]);
    expect(await listed('outcome=accepted&partner=acme&since=24h')).toEqual([replayId]);
    expect(await listed('outcome=open')).toEqual([]);
    expect(await page.locator('main').innerText()).toContain('No deliveries match.');
  });

  it('mark resolved with a note, recorded with who did it; refused: wrong password, too many, no CSRF token, GET, no session', async (t) => {
    const { fx, d, base, id } = await rejected(t);
    const page = await (await browser(t)).newPage();

    await login(page, base, 'wrong password!');
    expect(await page.getByRole('alert').innerText()).toBe('Wrong user name or password.');
    expect(new URL(page.url()).pathname).toBe('/login');
    expect(d.logs.filter((l) => l.event === 'web.login_failed')).toEqual([expect.objectContaining({ user: 'alice', ip: '127.0.0.1', level: 'warn' })]);

    await login(page, base);
    await page.goto(`${base}/deliveries/${id}`);
    // An action without the session's CSRF token (as a foreign page's form would post it) changes nothing.
    const forged = await page.request.post(`${base}/deliveries/${id}/resolve`, { form: { note: 'forged' }, maxRedirects: 0 });
    expect(forged.status()).toBe(403);
    expect(await forged.text()).toContain('CSRF token');
    const wrong = await page.request.post(`${base}/deliveries/${id}/resolve`, { form: { note: 'forged', _csrf: 'x'.repeat(43) }, maxRedirects: 0 });
    expect(wrong.status()).toBe(403);
    // No action through GET; none without a session.
    expect((await page.request.get(`${base}/deliveries/${id}/resolve`)).status()).toBe(404);
    expect((await fetch(`${base}/deliveries/${id}/replay`, { method: 'POST', redirect: 'manual' })).status).toBe(403);
    expect(fx.query('SELECT * FROM resolutions')).toEqual([]);

    await page.getByLabel('Note').fill('partner resends it tomorrow');
    await page.getByRole('button', { name: 'Mark resolved' }).click();
    expect(await page.getByRole('status').innerText()).toBe('Marked resolved.');
    expect(fx.query('SELECT note FROM resolutions WHERE delivery_id = ?', id)).toEqual([{ note: 'resolved by alice (web): partner resends it tomorrow' }]);
    expect(await page.locator('dl').innerText()).toContain('resolved by alice (web): partner resends it tomorrow');

    // Logged out: the session is gone.
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.goto(base);
    expect(new URL(page.url()).pathname).toBe('/login');

    // Failed logins are limited: after five, even the right password is refused for a while.
    const post = (password: string) => fetch(`${base}/login`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ user: 'alice', password }) });
    for (let i = 0; i < 4; i++) expect((await post('still wrong')).status).toBe(401);
    const blocked = await post(PASSWORD);
    expect(blocked.status).toBe(429);
    expect(await blocked.text()).toContain('Too many failed logins');
    expect(d.logs.some((l) => l.event === 'web.login_refused' && l.user === 'alice')).toBe(true);
  });

  it('off unless http.ui: true; ui needs a users file; the cookie is HttpOnly and SameSite=Strict', async (t) => {
    const fx = await fixture(t, { config: { http: { listen: '127.0.0.1:0', ui: true } } });
    expect(await runCli(['check-config', '--config', fx.configPath])).toMatchObject({ code: 78, stderr: expect.stringContaining('http.users: ui: true needs users') });
    await fx.writeConfig({ config: { http: { listen: '127.0.0.1:0' } } });
    const { base } = await start(t, fx);
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/login`)).status).toBe(404);

    const on = await fixture(t, { config: { http: HTTP } });
    expect(await addUser(on, 'alice', 'short')).toMatchObject({ code: 64, stderr: expect.stringContaining('at least 12 characters') });
    expect(await addUser(on, 'alice', PASSWORD)).toMatchObject({ code: 0 });
    expect(((await fsp.stat(join(on.dir, 'users.txt'))).mode & 0o777).toString(8)).toBe('600');
    expect(await fsp.readFile(join(on.dir, 'users.txt'), 'utf8')).not.toContain(PASSWORD);
    const s = await start(t, on);
    const res = await fetch(`${s.base}/login`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ user: 'alice', password: PASSWORD }) });
    expect(res.status).toBe(303);
    expect(res.headers.get('set-cookie')).toMatch(/^inboxd_session=[\w-]{43}; Path=\/; HttpOnly; SameSite=Strict$/);
    expect(existsSync(SCREENSHOTS)).toBe(true);
  });

  it('over TLS (http.tls): the page and the metrics by HTTPS, the session cookie Secure', async (t) => {
    const fx = await fixture(t, { config: { http: { ...HTTP, tls: { cert: 'cert.pem', key: 'key.pem' } } } });
    await new Promise((resolve, reject) => spawn('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-keyout', 'key.pem', '-out', 'cert.pem'], { cwd: fx.dir, stdio: 'ignore' }).on('close', resolve).on('error', reject));
    expect(await addUser(fx, 'alice', PASSWORD)).toMatchObject({ code: 0 });
    const { base } = await start(t, fx);
    const page = await (await browser(t, true)).newPage();
    const https = base.replace('http:', 'https:');
    await page.goto(`${https}/`);
    await login(page, https);
    expect(new URL(page.url()).pathname).toBe('/');
    const [cookie] = await page.context().cookies();
    expect(cookie).toMatchObject({ name: 'inboxd_session', httpOnly: true, secure: true, sameSite: 'Strict' });
    expect((await page.request.get(`${https}/metrics`)).status()).toBe(200);
  });
});
