/**
 * Sessions of the operations page, kept in memory (a restart logs everyone out): a random id in an
 * HttpOnly, SameSite=Strict cookie (Secure over TLS), a CSRF token per session that every action must
 * carry, and a limit on failed logins per address and per user name.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';

export const COOKIE = 'inboxd_session';
/** a session unused this long is gone */
const IDLE_MS = 8 * 3600_000;
/** this many failed logins within the window, per address or per name, and further tries are refused until it passes */
const MAX_FAILURES = 5;
const FAILURE_WINDOW_MS = 15 * 60_000;

export interface Session {
  user: string;
  csrf: string;
  lastSeen: number;
}

const token = () => randomBytes(32).toString('base64url');

export class Sessions {
  private readonly byId = new Map<string, Session>();
  private readonly failures = new Map<string, number[]>();

  create(user: string): { id: string; session: Session } {
    this.sweep();
    const id = token();
    const session = { user, csrf: token(), lastSeen: Date.now() };
    this.byId.set(id, session);
    return { id, session };
  }

  get(id: string | undefined): Session | undefined {
    const s = id === undefined ? undefined : this.byId.get(id);
    if (!s || Date.now() - s.lastSeen > IDLE_MS) return undefined;
    s.lastSeen = Date.now();
    return s;
  }

  drop(id: string | undefined): void {
    if (id !== undefined) this.byId.delete(id);
  }

  /** Seconds until another login may be tried from this address or for this name; 0: go ahead. */
  blockedFor(keys: string[]): number {
    const now = Date.now();
    let wait = 0;
    for (const k of keys) {
      const recent = (this.failures.get(k) ?? []).filter((t) => now - t < FAILURE_WINDOW_MS);
      if (recent.length >= MAX_FAILURES) wait = Math.max(wait, Math.ceil((recent[0]! + FAILURE_WINDOW_MS - now) / 1000));
    }
    return wait;
  }

  failed(keys: string[]): void {
    const now = Date.now();
    for (const k of keys) this.failures.set(k, [...(this.failures.get(k) ?? []).filter((t) => now - t < FAILURE_WINDOW_MS), now]);
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, s] of this.byId) if (now - s.lastSeen > IDLE_MS) this.byId.delete(id);
    for (const [k, ts] of this.failures) if (ts.every((t) => now - t >= FAILURE_WINDOW_MS)) this.failures.delete(k);
  }
}

export function sameToken(a: string | undefined, b: string): boolean {
  const x = Buffer.from(a ?? '');
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function cookieHeader(id: string, secure: boolean, maxAge?: number): string {
  return [`${COOKIE}=${id}`, 'Path=/', 'HttpOnly', 'SameSite=Strict', ...(secure ? ['Secure'] : []), ...(maxAge !== undefined ? [`Max-Age=${maxAge}`] : [])].join('; ');
}

export function cookieOf(header: string | undefined): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [k, v] = part.trim().split('=');
    if (k === COOKIE && v) return v;
  }
  return undefined;
}
