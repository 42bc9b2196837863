/**
 * Test fixture: per test a fresh temporary tree with its own configuration, mapping and SQLite file;
 * deliveries built and uploaded the way a partner does it (temporary name, then rename); the real CLI
 * run as a child process; and readers for what a user would check (table rows, partner directories).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fsp, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { executeBackend, freshDatabase, onPostgres, queryBackend } from './backend.js';
import { stringify } from 'yaml';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = join(REPO, 'dist', 'cli.js');
/**
 * For describe blocks that run the CLI: every run is a fresh Node process with fsyncs, and on a loaded
 * two-core machine (benchmarks, other suites) one can take many seconds; a genuinely stuck run is
 * still killed by runCli's own timeout.
 */
export const SLOW = { timeout: 180_000 };

/** Log lines name their level (`"level":"warn"`); this orders them. */
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
export const atLeast = (line: { level?: unknown }, level: string): boolean => LEVELS.indexOf(String(line.level)) >= LEVELS.indexOf(level);

/** The acme inventory mapping: every type, a PII column, a key of two columns. */
export const MAPPING = `ours,partner,type,required,pii,notes
sku,SKU,string:64,yes,,stable external id
warehouse,Warehouse,string:16,yes,,warehouse code
qty,Quantity,integer,yes,,control total
unit_cost,UnitCost,amount:2,,,minor units
currency,Currency,currency,,,ISO-4217
condition,Condition,enum:NEW|USED|REFURBISHED,,,
active,Active,boolean,,,
contact,ContactEmail,string:40,,yes,personal data
updated_at,LastModified,datetime,yes,,UTC ISO-8601
`;
export const HEADER = ['SKU', 'Warehouse', 'Quantity', 'UnitCost', 'Currency', 'Condition', 'Active', 'ContactEmail', 'LastModified'];

export type Row = Record<string, string>;

/** A valid partner row; `over` replaces columns by partner name. */
export function row(i: number, over: Row = {}): Row {
  return {
    SKU: `A-${100 + i}`, Warehouse: 'BER1', Quantity: String(10 + i), UnitCost: '1.50', Currency: 'EUR', Condition: 'NEW',
    Active: i % 2 ? 'true' : 'no', ContactEmail: `buyer${i}@example.com`, LastModified: '2025-09-16T03:55:00+02:00', ...over,
  };
}
export const rowsOf = (n: number, from = 1): Row[] => Array.from({ length: n }, (_, i) => row(from + i));

/** The playbook's own example name: `inventory_20250916T0200Z_001.csv`. */
export const nameFor = (seq: number) => `inventory_20250916T0200Z_${String(seq).padStart(3, '0')}.csv`;

export type SidecarForm = 'bare' | 'gnu' | 'gnu-binary' | 'bsd' | 'upper';

export interface DeliveryOptions {
  /** data file name; default `nameFor(seq)` */
  name?: string;
  seq?: number;
  rows?: Row[];
  header?: string[];
  /** the data file's exact content, instead of rows */
  csvText?: string | Buffer;
  delimiter?: string;
  lineEnd?: string;
  bom?: boolean;
  /** false: no sidecar; a form; or the sidecar's exact text */
  sidecar?: false | SidecarForm | { text: string };
  /** false: no manifest; otherwise fields merged over the computed manifest */
  manifest?: false | Record<string, unknown>;
  manifestText?: string;
  /** changes a byte of the data file after its checksums were computed, as a damaged transfer would */
  corrupt?: boolean;
  /** modification time this far in the past (default 60 s: settled); 0 = now */
  ageMs?: number;
  partner?: string;
  /**
   * Written in place under the final names, as WinSCP does with small files (no temporary name, no rename):
   * each file in two halves `pauseMs` apart (default 0); the modification time set at the end.
   */
  inPlace?: { pauseMs?: number };
}

export interface Delivery {
  name: string;
  sha256: string;
  data: Buffer;
  sidecar?: string;
  manifest?: string;
  /** every file uploaded, data file first */
  files: string[];
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout's JSON lines */
  logs: Record<string, any>[];
  /** stdout lines that are not JSON (should be none) */
  other: string[];
}

export type PartnerDir = 'inbox' | 'outbox' | 'archive' | 'error';

export interface FixtureOptions {
  settle_time?: string;
  incomplete_after?: string;
  /** keys merged over acme's inventory flow (csv is merged too) */
  flow?: Record<string, unknown>;
  mapping?: string;
  /** top-level keys merged over the configuration */
  config?: Record<string, unknown>;
}

export const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

export function csvLine(cells: readonly string[], delimiter = ','): string {
  return cells.map((c) => (c.includes(delimiter) || /["\r\n]/.test(c) ? `"${c.replaceAll('"', '""')}"` : c)).join(delimiter);
}

async function writeInHalves(path: string, content: Buffer, pauseMs: number): Promise<void> {
  const fh = await fsp.open(path, 'w');
  try {
    const half = Math.floor(content.length / 2);
    await fh.write(content.subarray(0, half));
    await new Promise((r) => setTimeout(r, pauseMs));
    await fh.write(content.subarray(half));
  } finally {
    await fh.close();
  }
}

export function sidecarText(form: SidecarForm, hex: string, name: string): string {
  switch (form) {
    case 'bare': return `${hex}\n`;
    case 'gnu': return `${hex}  ${name}\n`;
    case 'gnu-binary': return `${hex} *${name}\n`;
    case 'bsd': return `SHA256 (${name}) = ${hex}\n`;
    case 'upper': return `${hex.toUpperCase()}  ${name}\n`;
  }
}

/** dist/ must be built from the current sources: `npm test` builds first; single runs need `npx tsc -p tsconfig.json`. */
let checked = false;
function checkBuilt(): void {
  if (checked) return;
  checked = true;
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npx tsc -p tsconfig.json\` (npm test does it) before these tests`);
  const stale = (readdirSync(join(REPO, 'src'), { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).filter((f) => {
    const js = join(REPO, 'dist', f.replace(/\.ts$/, '.js'));
    return existsSync(js) && statSync(js).mtimeMs < statSync(join(REPO, 'src', f)).mtimeMs;
  });
  if (stale.length) console.warn(`dist/ is older than src/${stale.join(', src/')}: run \`npx tsc -p tsconfig.json\``);
}

export class Fixture {
  readonly configPath: string;
  readonly root: string;
  /** the SQLite file, or the PostgreSQL URL (a test may point it at a server of its own before writing the configuration) */
  database: string;

  constructor(readonly dir: string) {
    this.configPath = join(dir, 'inboxd.yaml');
    this.root = join(dir, 'partners');
    this.database = onPostgres ? freshDatabase() : join(dir, 'var', 'inboxd.db');
  }

  async writeConfig(opts: FixtureOptions = {}): Promise<void> {
    await fsp.writeFile(join(this.dir, 'acme-inventory.csv'), opts.mapping ?? MAPPING);
    const { csv, ...flowRest } = opts.flow ?? {};
    const flow = {
      mapping: 'acme-inventory.csv', table: 'inventory', key: ['sku', 'warehouse'], totals: ['qty'],
      ...flowRest, csv: { delimiter: ',', header: true, encoding: 'utf-8', ...(csv as object | undefined) },
    };
    const config = {
      root: 'partners', database: onPostgres ? { url: this.database } : 'var/inboxd.db', settle_time: opts.settle_time ?? '0s', incomplete_after: opts.incomplete_after ?? '15m',
      log_level: 'info', partners: { acme: { flows: { inventory: flow } } }, ...opts.config,
    };
    await fsp.writeFile(this.configPath, `# written by test/helpers/fixture.ts\n${stringify(config)}`);
  }

  path(which: PartnerDir, name = '', partner = 'acme'): string {
    return join(this.root, partner, which, name);
  }

  get workDir(): string {
    return join(this.root, '.work', 'acme');
  }

  /** Uploads a delivery into the inbox as a partner does: each file under a temporary name, then renamed. */
  async makeDelivery(o: DeliveryOptions = {}): Promise<Delivery> {
    const name = o.name ?? nameFor(o.seq ?? 1);
    const rows = o.rows ?? rowsOf(3);
    const header = o.header ?? HEADER;
    const eol = o.lineEnd ?? '\n';
    let data = o.csvText !== undefined
      ? Buffer.from(o.csvText)
      : Buffer.from(`${o.bom ? '\uFEFF' : ''}${[header, ...rows.map((r) => header.map((h) => r[h] ?? ''))].map((cells) => csvLine(cells, o.delimiter) + eol).join('')}`);
    const hex = sha256(data);
    const qty = rows.reduce((s, r) => s + (/^\d+$/.test(r.Quantity ?? '') ? Number(r.Quantity) : 0), 0);
    if (o.corrupt) {
      data = Buffer.from(data);
      const at = data.lastIndexOf('1'.charCodeAt(0));
      data[at] = '2'.charCodeAt(0);
    }
    const inbox = this.path('inbox', '', o.partner);
    await fsp.mkdir(inbox, { recursive: true });
    const files: [string, Buffer | string][] = [[name, data]];
    const delivery: Delivery = { name, sha256: hex, data, files: [name] };
    if (o.sidecar !== false) {
      delivery.sidecar = `${name}.sha256`;
      const s = o.sidecar ?? 'gnu';
      files.push([delivery.sidecar, typeof s === 'object' ? s.text : sidecarText(s, hex, name)]);
    }
    if (o.manifest !== false) {
      delivery.manifest = `${name}.manifest.json`;
      const manifest = { file: name, records: rows.length, sums: { qty }, generated_at: '2025-09-16T02:00:03Z', sha256: hex, schema_version: 1, ...o.manifest };
      files.push([delivery.manifest, o.manifestText ?? `${JSON.stringify(manifest, null, 2)}\n`]);
    }
    const t = new Date(Date.now() - (o.ageMs ?? 60_000));
    for (const [file, content] of files) {
      if (o.inPlace) {
        await writeInHalves(join(inbox, file), Buffer.from(content), o.inPlace.pauseMs ?? 0);
        await fsp.utimes(join(inbox, file), t, t);
        continue;
      }
      const tmp = join(inbox, `${file}.part`);
      await fsp.writeFile(tmp, content);
      await fsp.utimes(tmp, t, t);
      await fsp.rename(tmp, join(inbox, file));
    }
    delivery.files = files.map(([f]) => f);
    return delivery;
  }

  /** `inboxd run --once` as a real process. */
  runOnce(opts: { env?: Record<string, string>; args?: string[] } = {}): Promise<RunResult> {
    return runCli(opts.args ?? ['run', '--once', '--config', this.configPath], { cwd: this.dir, env: opts.env });
  }

  /** A table's rows, read-only, in key order; [] before the first run. */
  rows(table = 'inventory', orderBy = 'sku, warehouse'): Record<string, unknown>[] {
    return this.query(`SELECT * FROM "${table}" ORDER BY ${orderBy}`);
  }

  /** Rows of a query (`?` placeholders) on the fixture's database, SQLite or PostgreSQL (helpers/backend.ts). */
  query(sql: string, ...params: unknown[]): Record<string, any>[] {
    return queryBackend(this.database, sql, params);
  }

  /** Changes rows behind inboxd's back (a test setting the scene), on either backend. */
  execute(sql: string, ...params: unknown[]): void {
    executeBackend(this.database, sql, params);
  }

  listDir(which: PartnerDir, partner = 'acme'): string[] {
    const dir = this.path(which, '', partner);
    return existsSync(dir) ? readdirSync(dir).sort() : [];
  }

  listWork(): string[] {
    return existsSync(this.workDir) ? readdirSync(this.workDir).sort() : [];
  }

  async readJson(which: PartnerDir, name: string, partner = 'acme'): Promise<Record<string, any>> {
    return JSON.parse(await fsp.readFile(this.path(which, name, partner), 'utf8'));
  }

  readFile(which: PartnerDir, name: string, partner = 'acme'): Promise<Buffer> {
    return fsp.readFile(this.path(which, name, partner));
  }

  readText(which: PartnerDir, name: string, partner = 'acme'): Promise<string> {
    return fsp.readFile(this.path(which, name, partner), 'utf8');
  }

  /** The single error report in error/ (`*.error.json`), failing when there is not exactly one. */
  async errorReport(): Promise<Record<string, any>> {
    const reports = this.listDir('error').filter((n) => n.endsWith('.error.json'));
    if (reports.length !== 1) throw new Error(`expected one error report in error/, found: ${this.listDir('error').join(', ') || 'nothing'}`);
    return this.readJson('error', reports[0]!);
  }
}

/** What fixture() needs of vitest's test context (the context's hook works for concurrent tests too). */
export interface TestHooks {
  onTestFinished: (fn: (ctx: { task: { result?: { state?: string } } }) => void | Promise<void>) => void;
}

/** A fresh fixture for test `t`, removed when it passes (kept, and its path printed, when it fails). */
export async function fixture(t: TestHooks, opts: FixtureOptions = {}): Promise<Fixture> {
  checkBuilt();
  const fx = new Fixture(await fsp.mkdtemp(join(tmpdir(), 'inboxd-test-')));
  await fx.writeConfig(opts);
  t.onTestFinished(async (ctx) => {
    if (ctx.task.result?.state === 'fail' || process.env.INBOXD_KEEP_FIXTURES) console.error(`fixture kept for inspection: ${fx.dir}`);
    else await fsp.rm(fx.dir, { recursive: true, force: true });
  });
  return fx;
}

export function runCli(args: string[], opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 150_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const logs: Record<string, any>[] = [];
      const other: string[] = [];
      for (const line of stdout.split('\n').filter(Boolean)) {
        try {
          logs.push(JSON.parse(line));
        } catch {
          other.push(line);
        }
      }
      resolve({ code, signal, stdout, stderr, logs, other });
    });
  });
}
