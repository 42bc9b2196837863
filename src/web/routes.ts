/**
 * The operations page under `/` of the daemon's HTTP listener (http.ui: true): log in, overview,
 * deliveries, one delivery, and its actions (replay, mark resolved). Nothing but the login page and
 * htmx is served without a session; every action is a POST carrying the session's CSRF token.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import { OUTCOME_FILTERS } from '../ops/audit.js';
import type { DeliveryFilter } from '../store/types.js';
import { classify, InboxdError } from '../errors.js';
import type { Logger } from '../log.js';
import type { WebData } from './data.js';
import { deliveriesPage, detailPage, loginPage, overview, page, replayFlash } from './html.js';
import { cookieHeader, cookieOf, type Session, Sessions, sameToken } from './session.js';
import { readUsers, verifyPassword } from './users.js';

const PAGE_SIZE = 50;
const MAX_BODY = 16 * 1024;
/** how long an action waits for the daemon's loop to carry out a replay before answering "queued" */
const REPLAY_WAIT_MS = 60_000;
const HTMX = createRequire(import.meta.url).resolve('htmx.org/dist/htmx.min.js');

export interface WebOptions {
  usersFile: string;
  /** served over TLS by us: the cookie is Secure */
  tls: boolean;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  session: Session & { flash?: string };
  form: URLSearchParams;
}

export function webHandler(data: WebData, log: Logger, opts: WebOptions): Handler {
  const sessions = new Sessions();
  const secure = (req: IncomingMessage) => opts.tls || req.headers['x-forwarded-proto'] === 'https';

  async function login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const form = await body(req);
    const user = form.get('user') ?? '';
    const next = safeNext(form.get('next'));
    const ip = req.socket.remoteAddress ?? '?';
    const keys = [`ip:${ip}`, `user:${user}`];
    const wait = sessions.blockedFor(keys);
    if (wait > 0) {
      log.warn({ event: 'web.login_refused', user, ip, retry_after_s: wait }, 'login refused: too many failed logins');
      return html(res, 429, loginPage(`Too many failed logins: try again in ${Math.ceil(wait / 60)} minutes.`, next), { 'retry-after': String(wait) });
    }
    const hash = (await readUsers(opts.usersFile)).get(user);
    if (!hash || !(await verifyPassword(form.get('password') ?? '', hash))) {
      sessions.failed(keys);
      log.warn({ event: 'web.login_failed', user, ip }, 'login failed: unknown user or wrong password');
      return html(res, 401, loginPage('Wrong user name or password.', next));
    }
    const { id } = sessions.create(user);
    log.info({ event: 'web.login', user, ip }, 'logged in to the operations page');
    redirect(res, next, { 'set-cookie': cookieHeader(id, secure(req)) });
  }

  const gets: [RegExp, (c: Ctx, m: RegExpMatchArray) => Promise<void>][] = [
    [/^\/$/, async (c) => html(c.res, 200, page('Overview', overview(await data.status()), c.session))],
    [/^\/deliveries$/, async (c) => html(c.res, 200, page('Deliveries', await list(data, c.url), c.session))],
    [/^\/deliveries\/([^/]+)$/, async (c, m) => {
      const id = decodeURIComponent(m[1]!);
      const [x, csv] = await Promise.all([data.detail(id), data.errorsCsv(id)]);
      const flash = c.session.flash;
      c.session.flash = undefined;
      html(c.res, 200, page(`Delivery ${id}`, detailPage(x, c.session.csrf, flash, !!csv), c.session));
    }],
    [/^\/deliveries\/([^/]+)\/errors\.csv$/, async (c, m) => {
      const csv = await data.errorsCsv(decodeURIComponent(m[1]!));
      if (!csv) return text(c.res, 404, 'this delivery has no error CSV\n');
      c.res.writeHead(200, { ...HEADERS, 'content-type': 'text/csv; charset=utf-8', 'content-disposition': `attachment; filename="${csv.name.replace(/[^\w.-]/g, '_')}"` }).end(csv.content);
    }],
  ];
  const posts: [RegExp, (c: Ctx, m: RegExpMatchArray) => Promise<void>][] = [
    [/^\/logout$/, async (c) => {
      sessions.drop(cookieOf(c.req.headers.cookie));
      redirect(c.res, '/login', { 'set-cookie': cookieHeader('', secure(c.req), 0) });
    }],
    [/^\/deliveries\/([^/]+)\/replay$/, async (c, m) => {
      const id = decodeURIComponent(m[1]!);
      log.info({ event: 'web.replay', user: c.session.user, delivery_id: id }, 'replay asked on the operations page');
      c.session.flash = await data.replay(id, `${c.session.user} (web)`, REPLAY_WAIT_MS).then(replayFlash, refusal);
      redirect(c.res, `/deliveries/${encodeURIComponent(id)}`);
    }],
    [/^\/deliveries\/([^/]+)\/resolve$/, async (c, m) => {
      const id = decodeURIComponent(m[1]!);
      const note = c.form.get('note')?.trim();
      log.info({ event: 'web.resolve', user: c.session.user, delivery_id: id }, 'resolve asked on the operations page');
      c.session.flash = note
        ? await data.resolve(id, note, `${c.session.user} (web)`).then((done) => (done ? 'Marked resolved.' : 'It was resolved already.'), refusal)
        : 'A note is needed: why is it dealt with?';
      redirect(c.res, `/deliveries/${encodeURIComponent(id)}`);
    }],
  ];

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/static/htmx.min.js' && req.method === 'GET') {
      return void res.writeHead(200, { ...HEADERS, 'content-type': 'text/javascript', 'cache-control': 'max-age=86400' }).end(await fsp.readFile(HTMX));
    }
    if (url.pathname === '/login') {
      if (req.method === 'POST') return login(req, res);
      if (req.method === 'GET') return html(res, 200, loginPage(undefined, safeNext(url.searchParams.get('next'))));
    }
    const session = sessions.get(cookieOf(req.headers.cookie));
    if (req.method === 'GET' || req.method === 'HEAD') {
      if (!session) return redirect(res, `/login?next=${encodeURIComponent(url.pathname + url.search)}`);
      const hit = match(gets, url.pathname);
      if (!hit) return html(res, 404, page('Not found', '<p>No such page. <a href="/">Overview</a></p>', session));
      return hit[0]({ req, res, url, session, form: url.searchParams }, hit[1]);
    }
    if (req.method !== 'POST') return text(res, 405, 'GET or POST\n', { allow: 'GET, HEAD, POST' });
    if (!session) return text(res, 403, 'not logged in: log in at /login first\n');
    const form = await body(req);
    if (!sameToken(form.get('_csrf') ?? undefined, session.csrf)) {
      log.warn({ event: 'web.csrf_refused', user: session.user, path: url.pathname }, 'action refused: CSRF token missing or wrong');
      return text(res, 403, 'refused: the form\'s CSRF token is missing or wrong; reload the page and try again\n');
    }
    const hit = match(posts, url.pathname);
    if (!hit) return text(res, 404, 'no such action\n');
    return hit[0]({ req, res, url, session, form }, hit[1]);
  }

  return (req, res) => route(req, res).catch((err: unknown) => {
    const e = classify(err);
    if (e.code === 'UNKNOWN_DELIVERY') return text(res, 404, `${e.message}\n`);
    if (e.code === 'USAGE') return text(res, 400, `${e.message}\n`);
    log.error({ err, event: 'web.error' }, 'operations page failed');
    text(res, 500, `error: ${e.code}: ${e.message}\n`);
  });
}

/** A refused action (not replayable, not rejected...) as the words shown; anything else is a failure. */
function refusal(err: unknown): string {
  const e = classify(err);
  if (err instanceof InboxdError && e.kind === 'reject') return `Refused: ${e.code}: ${e.message}`;
  throw err;
}

async function list(data: WebData, url: URL): Promise<string> {
  const q = url.searchParams;
  const filter: Record<string, string> = {};
  for (const k of ['partner', 'flow', 'outcome', 'since', 'until']) if (q.get(k)) filter[k] = q.get(k)!;
  const pageNo = Math.max(1, Number(q.get('page')) || 1);
  const outcome = (OUTCOME_FILTERS as readonly string[]).includes(filter.outcome ?? '') ? (filter.outcome as DeliveryFilter['outcome']) : undefined;
  const rows = await data.deliveries({ partner: filter.partner, flow: filter.flow, outcome, since: time(filter.since), until: time(filter.until), limit: pageNo * PAGE_SIZE + 1 });
  const shown = rows.slice((pageNo - 1) * PAGE_SIZE, pageNo * PAGE_SIZE);
  return deliveriesPage({ rows: shown, filter, page: pageNo, more: rows.length > pageNo * PAGE_SIZE, outcomes: OUTCOME_FILTERS });
}

/** As `deliveries list --since`: ISO-8601, or hours/days back from now ("24h", "7d"). */
function time(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const back = /^(\d+)([hd])$/.exec(v);
  const t = back ? Date.now() - Number(back[1]) * (back[2] === 'h' ? 3600_000 : 86400_000) : Date.parse(v);
  return Number.isNaN(t) ? undefined : new Date(t).toISOString();
}

function match<T>(routes: [RegExp, T][], path: string): [T, RegExpMatchArray] | undefined {
  for (const [re, fn] of routes) {
    const m = re.exec(path);
    if (m) return [fn, m];
  }
  return undefined;
}

/** Only a path of this site: never an open redirect to another one. */
function safeNext(next: string | null | undefined): string {
  return next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') ? next : '/';
}

async function body(req: IncomingMessage): Promise<URLSearchParams> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new InboxdError('USAGE', `a form of more than ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

const HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'x-frame-options': 'DENY',
  'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
};

function html(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...HEADERS, 'content-type': 'text/html; charset=utf-8', ...headers }).end(body);
}

function text(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) return void res.end();
  res.writeHead(status, { ...HEADERS, 'content-type': 'text/plain; charset=utf-8', ...headers }).end(body);
}

function redirect(res: ServerResponse, to: string, headers: Record<string, string> = {}): void {
  res.writeHead(303, { ...HEADERS, location: to, ...headers }).end();
}
