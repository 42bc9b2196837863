/**
 * The real daemon as a child process (`inboxd run --config FILE`, no --once): started, watched through
 * its JSON log lines on stdout, stopped with a signal or killed. Plus a small HTTP sink on 127.0.0.1
 * that records alert POSTs and can be told to fail the first few.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'vitest';
import { CLI, type Fixture } from './fixture.js';

export type LogLine = Record<string, any>;
export type Match = (line: LogLine) => boolean;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** when it exited (Date.now()) */
  at: number;
}

/** A predicate on log lines: the message matches, and every given field is equal. */
export const msg = (pattern: string | RegExp, fields: LogLine = {}): Match => (l) =>
  (typeof pattern === 'string' ? l.msg === pattern : pattern.test(String(l.msg))) && Object.entries(fields).every(([k, v]) => l[k] === v);

export async function until<T>(fn: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 15_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class DaemonProcess {
  readonly logs: LogLine[] = [];
  /** stdout lines that are not JSON (there should be none) */
  readonly other: string[] = [];
  stderr = '';
  readonly exited: Promise<Exit>;
  private exit?: Exit;
  private waiters: Array<() => void> = [];
  private buffered = '';

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (d: string) => this.onData(d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.onData('\n');
        this.exit = { code, signal, at: Date.now() };
        this.wake();
        resolve(this.exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  /** The first log line (already seen or still to come) matching; fails if the process exits first. */
  async waitFor(match: Match, what = 'a log line', timeoutMs = 15_000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.logs.find(match);
      if (hit) return hit;
      if (this.exit) throw new Error(`the daemon exited (${this.exit.code ?? this.exit.signal}) before ${what}\n${this.tail()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${this.tail()}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Waits for the n-th matching line (counting from the start). */
  async waitForCount(match: Match, n: number, what = 'log lines', timeoutMs = 15_000): Promise<LogLine[]> {
    await this.waitFor(() => this.logs.filter(match).length >= n, `${n} × ${what}`, timeoutMs);
    return this.logs.filter(match);
  }

  count(match: Match): number {
    return this.logs.filter(match).length;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.child.kill(sig);
  }

  /** Sends `sig` and waits for the exit; the process is SIGKILLed (and the test fails) after `timeoutMs`. */
  async stop(sig: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<Exit & { ms: number }> {
    const t0 = Date.now();
    this.signal(sig);
    const timer = setTimeout(() => this.signal('SIGKILL'), timeoutMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return { ...exit, ms: exit.at - t0 };
  }

  kill(): Promise<Exit> {
    this.signal('SIGKILL');
    return this.exited;
  }

  /** The last log lines and stderr, for failure messages. */
  tail(n = 30): string {
    return [...this.logs.slice(-n).map((l) => JSON.stringify(l)), ...this.other.slice(-5), this.stderr.slice(-2000)].join('\n');
  }

  private onData(d: string): void {
    this.buffered += d;
    const lines = this.buffered.split('\n');
    this.buffered = lines.pop()!;
    for (const line of lines) {
      if (!line.trim()) continue;
      try {
        this.logs.push(JSON.parse(line));
      } catch {
        this.other.push(line);
      }
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }
}

const live = new Set<ChildProcess>();
process.once('exit', () => live.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')));

/** Spawns `inboxd run --config FILE`; does not wait for it to start. */
export function spawnDaemon(configPath: string, opts: { cwd?: string; env?: Record<string, string>; args?: string[] } = {}): DaemonProcess {
  const child = spawn(process.execPath, [CLI, 'run', '--config', configPath, ...(opts.args ?? [])], {
    cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  child.on('close', () => live.delete(child));
  return new DaemonProcess(child);
}

/** Spawns the daemon and waits for its 'inboxd started' line (startup recovery is done by then). */
export async function startDaemon(configPath: string, opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<DaemonProcess> {
  const d = spawnDaemon(configPath, opts);
  await d.waitFor(msg('inboxd started'), 'inboxd started', 30_000);
  return d;
}

export interface Received {
  at: number;
  body: Record<string, any>;
  status: number;
}

/** An HTTP endpoint for the alert action: records every POST; the first `failFirst` get a 500. */
export class AlertSink {
  readonly received: Received[] = [];
  failFirst = 0;
  private server!: Server;
  private attempts = 0;

  static async start(opts: { failFirst?: number } = {}): Promise<AlertSink> {
    const sink = new AlertSink();
    sink.failFirst = opts.failFirst ?? 0;
    sink.server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => {
        const status = sink.attempts++ < sink.failFirst ? 500 : 200;
        let parsed: Record<string, any>;
        try {
          parsed = JSON.parse(body);
        } catch {
          parsed = { unparsable: body };
        }
        sink.received.push({ at: Date.now(), body: parsed, status });
        res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'try again');
      });
    });
    await new Promise<void>((r) => sink.server.listen(0, '127.0.0.1', r));
    return sink;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/alerts`;
  }

  /** Alerts delivered (answered 200). */
  delivered(event?: string): Record<string, any>[] {
    return this.received.filter((r) => r.status === 200 && (!event || r.body.event === event)).map((r) => r.body);
  }

  waitFor(event: string, timeoutMs = 15_000): Promise<Record<string, any>> {
    return until(() => this.delivered(event)[0], `an alert ${event}`, timeoutMs);
  }

  close(): Promise<void> {
    return new Promise((r) => {
      this.server.closeAllConnections();
      this.server.close(() => r());
    });
  }
}

/** The acme inventory flow as fixture.ts writes it, for configurations with several partners or flows. */
export const FLOW = { mapping: 'acme-inventory.csv', table: 'inventory', key: ['sku', 'warehouse'], totals: ['qty'] };

/** A started daemon for test `t`, killed when the test ends however it ends; its log tail shown on failure. */
export async function testDaemon(t: TestContext, fx: Fixture, env?: Record<string, string>, tailLines = 60): Promise<DaemonProcess> {
  const d = spawnDaemon(fx.configPath, { cwd: fx.dir, env });
  t.onTestFinished(async () => {
    if (d.running) await d.kill();
  });
  t.onTestFailed(() => console.error(`daemon log tail:\n${d.tail(tailLines)}`));
  await d.waitFor(msg('inboxd started'), 'inboxd started', 30_000);
  return d;
}
