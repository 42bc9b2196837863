/**
 * What Prometheus reads, checked by Prometheus's own tool (promtool, Debian's `prometheus` package):
 * /metrics of a running daemon passes `promtool check metrics`, its counters are at zero for every
 * configured partner and flow before the first delivery, and the alert rules pass `promtool check rules`.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { testDaemon } from './helpers/daemon.js';
import { fixture } from './helpers/fixture.js';

const PROMTOOL = '/usr/bin/promtool';
const RULES = new URL('../config/prometheus-alerts.yml', import.meta.url).pathname;

/** promtool reading `text` on its standard input: its exit code and what it said. */
function promtool(args: string[], text = ''): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
    child.stdin.end(text);
  });
}

describe('promtool', () => {
  it('/metrics passes promtool check metrics; counters start at zero for every flow; inboxd_ready is 1', async (t) => {
    const fx = await fixture(t, { config: { http: { listen: '127.0.0.1:0' }, partners: { acme: { flows: { inventory: { mapping: 'acme-inventory.csv', table: 'inventory', key: ['sku', 'warehouse'], totals: ['qty'] }, stock: { mapping: 'acme-inventory.csv', table: 'stock', key: ['sku', 'warehouse'] } } } } } });
    const d = await testDaemon(t, fx, undefined, 60);
    const { port } = await d.waitFor((l) => typeof l.port === 'number', 'the http listening line');
    const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const check = await promtool(['check', 'metrics'], body);
    expect(check.out).toBe('');
    expect(check.code).toBe(0);
    for (const flow of ['inventory', 'stock']) {
      for (const outcome of ['accepted', 'rejected', 'duplicate']) {
        expect(body).toContain(`inboxd_deliveries_total{partner="acme",flow="${flow}",outcome="${outcome}"} 0\n`);
        expect(body).toContain(`inboxd_delivery_processing_seconds_count{partner="acme",flow="${flow}",outcome="${outcome}"} 0\n`);
      }
      expect(body).toContain(`inboxd_rows_upserted_total{partner="acme",flow="${flow}"} 0\n`);
    }
    expect(body).toMatch(/^inboxd_ready 1$/m);
    expect(body).toContain('inboxd_nodejs_active_handles{'); // by type; the `_total` gauge is gone
  });

  it('the alert rules pass promtool check rules, with a quiet-flow and a readiness alert', async () => {
    const { stdout } = await promisify(execFile)(PROMTOOL, ['check', 'rules', RULES]);
    expect(stdout).toContain('SUCCESS');
    const { stdout: listed } = await promisify(execFile)(PROMTOOL, ['check', 'rules', '--lint=all', RULES]);
    expect(listed).toContain('SUCCESS');
    const rules = readFileSync(RULES, 'utf8');
    expect(rules).toMatch(/alert: InboxdFlowQuiet\n\s+#[^\n]*\n(\s+#[^\n]*\n)*\s+expr: \|\n\s+inboxd_seconds_since_last_accepted/);
    expect(rules).toMatch(/alert: InboxdNotReady\n(\s+#[^\n]*\n)*\s+expr: inboxd_ready == 0/);
  });
});
