/**
 * The alert action (and the notify actions, notify.ts): a command run with the alert as JSON on its
 * standard input, or an HTTP POST of that JSON. Failures are retried with backoff and full jitter; an alert that still fails is the
 * caller's to log. It never throws into the daemon.
 */
import { execFile } from 'node:child_process';
import type { AlertAction } from '../config/config.js';
import { InboxdError } from '../errors.js';
import type { Logger } from '../log.js';
import { withRetry } from '../retry.js';

export interface Alert {
  event: 'window.late' | 'window.at_risk' | 'window.resolved' | 'sequence.gap' | 'partner.refused' | 'delivery.failed';
  severity: 'critical' | 'warning' | 'info';
  partner: string;
  /** absent for an alert about a whole partner */
  flow?: string;
  message: string;
  at: string;
  [key: string]: unknown;
}

function runCommand(argv: readonly string[], body: string, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(argv[0]!, argv.slice(1), { timeout: 30_000, signal }, (err, _out, stderr) => {
      if (err) reject(new InboxdError('IO_ERROR', `action command ${argv[0]} failed: ${err.message}${stderr ? `: ${stderr.trim()}` : ''}`));
      else resolve();
    });
    child.stdin?.end(body);
  });
}

async function post(url: string, body: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const timeout = AbortSignal.timeout(timeoutMs);
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: signal ? AbortSignal.any([timeout, signal]) : timeout });
  if (!res.ok) throw new InboxdError('IO_ERROR', `POST to ${url} answered ${res.status}`);
}

/** What an action is sent: an alert, or a notification (notify.ts). */
type Payload = { event: string; partner: string; flow?: string | null; [key: string]: unknown };

/** `signal` abandons the alert, retries included (the daemon stopping). */
export async function sendAlert(action: AlertAction, alert: Payload, onRetry?: (err: unknown, attempt: number, delayMs: number) => void, signal?: AbortSignal): Promise<void> {
  const body = JSON.stringify(alert);
  await withRetry(() => (action.command ? runCommand(action.command, body, signal) : post(action.http!.url, body, action.http!.timeoutMs, signal)), action.retry, {
    signal,
    onRetry,
    isRetryable: () => true,
  });
}

/** Sends an alert (or a notification) in the background of its caller, logging each retry and the outcome; never rejects. */
export function sendLogged(action: AlertAction, alert: Payload, log: Logger, signal?: AbortSignal, kind: 'alert' | 'notification' = 'alert'): Promise<void> {
  const onRetry = (err: unknown, attempt: number, ms: number) => log.warn({ err: String(err), attempt, retry_in_ms: Math.round(ms), event: alert.event }, `${kind} failed; retrying`);
  return sendAlert(action, alert, onRetry, signal)
    .then(() => log.info({ event: alert.event, partner: alert.partner, flow: alert.flow }, `${kind} sent`))
    .catch((err) => log.error({ err: String(err), event: alert.event, partner: alert.partner, flow: alert.flow, [kind]: alert }, `${kind} could not be sent`));
}
