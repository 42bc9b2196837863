/**
 * The operations commands: status, deliveries list/show/resolve, replay, check, prune. Each maps its
 * result to an exit code and prints a terminal view or, with --json, one JSON document on stdout; log
 * lines go to stderr (at a terminal, errors only). Exit codes:
 *   status        0 nothing needs attention · 1 an open error, late window or open circuit
 *   deliveries    0 · 64 unknown delivery or bad filter
 *   replay        0 accepted · 1 rejected again, or the stored file's checksum changed · 64 unknown
 *                 or not replayable · 75 the running daemon did not get to it within 10 minutes
 *   check         0 would be accepted · 1 would be rejected · 64 unknown partner, flow or file
 *   prune         0
 *   every one     78 configuration error · 70 internal error
 * Each command loads what it runs when it runs: starting any one stays quick.
 */
import type { Command } from 'commander';
import { OUTCOME_FILTERS } from '../ops/audit.js';
import { type Config, loadConfig } from '../config/config.js';
import { classify, EXIT, InboxdError } from '../errors.js';
import { stringifyExact } from '../json.js';
import { createLogger, type Logger } from '../log.js';
import type { AnswerPlan } from '../pipeline/answer.js';
import type { ReplayOutcome } from '../ops/replay.js';
import { openStore } from '../store/open.js';
import type { DeliveryFilter, Store } from '../store/types.js';
import { parseDuration } from '../config/units.js';
import { when } from '../ops/table.js';

const USAGE_CODES = new Set(['USAGE', 'UNKNOWN_DELIVERY', 'NOT_REPLAYABLE']);

/** Runs a command; partner-style and usage errors become exit codes here, the rest go to cli.ts. */
function action<A extends unknown[]>(fn: (...args: A) => Promise<number>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      process.exitCode = await fn(...args);
    } catch (err) {
      const e = classify(err);
      if (!(err instanceof InboxdError) || e.kind !== 'reject') throw err;
      process.stderr.write(`inboxd: ${e.code}: ${e.message}\n`);
      process.exitCode = USAGE_CODES.has(e.code) ? EXIT.USAGE : EXIT.REJECTED;
    }
  };
}

/**
 * A person at a terminal reads the command's summary (the audit trail keeps every step: `deliveries
 * show`), so log lines below error level are not shown there; redirected (cron, a script, a journal),
 * stderr gets them all as JSON lines.
 */
function setup(file: string): { config: Config; log: Logger } {
  const config = loadConfig(file);
  return { config, log: createLogger(process.stderr.isTTY ? 'error' : config.logLevel, 2) };
}

async function withStore<T>(config: Config, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore(config);
  return fn(store).finally(() => store.close());
}

const print = (text: string) => process.stdout.write(text);
/** Exact: control totals beyond 2^53 are bigints. */
const printJson = (value: unknown) => process.stdout.write(`${stringifyExact(value, 2)}\n`);
/** With --json one JSON document, otherwise the terminal view. */
const output = <T>(json: boolean | undefined, value: T, view: (value: T) => string) => (json ? printJson(value) : print(view(value)));

/** ISO-8601, or a duration back from now ("24h", "7d"). */
function timeArg(value: string | undefined, flag: string): string | undefined {
  if (value === undefined) return undefined;
  const ms = /^\d/.test(value) && !/[-T]/.test(value) ? parseDuration(value) : undefined;
  if (ms !== undefined) return new Date(Date.now() - ms).toISOString();
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new InboxdError('USAGE', `${flag}: expected an ISO-8601 time (2025-09-16, 2025-09-16T02:00:00Z) or a duration back from now (24h, 7d), got "${value}"`);
  return new Date(t).toISOString();
}

export function registerOpsCommands(program: Command): void {
  program
    .command('status')
    .description('per partner and flow: last delivery, last sequence, backlog, late windows, circuits; rejected deliveries not dealt with')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--json', 'one JSON document')
    .action(action(async (opts: { config: string; json?: boolean }) => {
      const { config } = setup(opts.config);
      const { formatStatus, status } = await import('../ops/status.js');
      const s = await withStore(config, (store) => status(store, config));
      output(opts.json, s, formatStatus);
      return s.attention ? EXIT.REJECTED : EXIT.OK;
    }));

  const deliveries = program.command('deliveries').description('what arrived and what became of it');
  deliveries
    .command('list')
    .description('deliveries, newest first')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--partner <id>')
    .option('--flow <id>')
    .option('--outcome <outcome>', `one of ${OUTCOME_FILTERS.join(', ')} (open: rejected and not dealt with)`)
    .option('--since <time>', 'received at or after: ISO-8601, or a duration back from now (24h)')
    .option('--until <time>', 'received before: ISO-8601, or a duration back from now')
    .option('--limit <n>', 'at most this many', '50')
    .option('--json', 'one JSON document')
    .action(action(async (opts: { config: string; partner?: string; flow?: string; outcome?: string; since?: string; until?: string; limit: string; json?: boolean }) => {
      const { config } = setup(opts.config);
      if (opts.outcome && !(OUTCOME_FILTERS as readonly string[]).includes(opts.outcome)) throw new InboxdError('USAGE', `--outcome: one of ${OUTCOME_FILTERS.join(', ')}, got "${opts.outcome}"`);
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new InboxdError('USAGE', `--limit: a positive whole number, got "${opts.limit}"`);
      const filter: DeliveryFilter = { partner: opts.partner, flow: opts.flow, outcome: opts.outcome as DeliveryFilter['outcome'], since: timeArg(opts.since, '--since'), until: timeArg(opts.until, '--until'), limit };
      const { formatList, summary } = await import('../ops/deliveries.js');
      const rows = await withStore(config, (store) => store.audit.list(filter));
      if (opts.json) printJson(rows.map(summary));
      else print(formatList(rows));
      return EXIT.OK;
    }));
  deliveries
    .command('show <id>')
    .description('one delivery: timeline, checksum, files, control totals, the report the partner got')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--json', 'one JSON document')
    .action(action(async (id: string, opts: { config: string; json?: boolean }) => {
      const { config } = setup(opts.config);
      const { detail, formatDetail } = await import('../ops/deliveries.js');
      const d = await withStore(config, (store) => detail(store, config, id));
      output(opts.json, d, formatDetail);
      return EXIT.OK;
    }));
  deliveries
    .command('resolve <id>')
    .description('mark a rejected delivery dealt with (the partner was told, the data is not needed...): status stops listing it')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .requiredOption('--note <text>', 'why, for the audit trail')
    .action(action(async (id: string, opts: { config: string; note: string }) => {
      const { config } = setup(opts.config);
      const { resolveDelivery } = await import('../ops/deliveries.js');
      return withStore(config, async (store) => {
        print((await resolveDelivery(store, id, opts.note)) ? `${id}: resolved\n` : `${id}: was already resolved\n`);
        return EXIT.OK;
      });
    }));

  program
    .command('replay <id>')
    .description('take an archived (or rejected) delivery through the pipeline again, e.g. after a mapping fix')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--json', 'one JSON document')
    .action(action(async (id: string, opts: { config: string; json?: boolean }) => {
      const { config, log } = setup(opts.config);
      const { replay } = await import('../ops/replay.js');
      const o = await replay(config, log, id);
      if (opts.json) printJson(replayJson(o));
      else print(formatReplay(o));
      return o.result.status === 'accepted' ? EXIT.OK : o.result.status === 'retry' ? EXIT.TEMPFAIL : EXIT.REJECTED;
    }));

  program
    .command('check <files...>')
    .description('onboarding dry run: every check on a sample delivery, nothing applied or moved')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .requiredOption('--partner <id>')
    .requiredOption('--flow <id>')
    .option('--sample <n>', 'rows shown of what would be upserted', '5')
    .option('--json', 'one JSON document')
    .action(action(async (files: string[], opts: { config: string; partner: string; flow: string; sample: string; json?: boolean }) => {
      const { config, log } = setup(opts.config);
      const [{ checkFiles, formatCheck, pickFlow }, { openKeyring }] = await Promise.all([import('../ops/check.js'), import('../ingest/startup.js')]);
      const { partner, flow } = pickFlow(config, opts.partner, opts.flow);
      const r = await checkFiles(config, partner, flow, files, { sample: Number(opts.sample) || 0, keyring: () => openKeyring(config, log) });
      output(opts.json, r, formatCheck);
      return r.accepted ? EXIT.OK : EXIT.REJECTED;
    }));

  program
    .command('prune')
    .description('remove archive/error files and database rows older than their retention days')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .option('--dry-run', 'show what would be removed, remove nothing')
    .option('--json', 'one JSON document')
    .action(action(async (opts: { config: string; dryRun?: boolean; json?: boolean }) => {
      const { config } = setup(opts.config);
      const { formatPrune, prune } = await import('../ops/prune.js');
      const r = await withStore(config, (store) => prune(store, config, { dryRun: opts.dryRun }));
      output(opts.json, r, formatPrune);
      return EXIT.OK;
    }));
}

function replayJson(o: ReplayOutcome): Record<string, unknown> {
  const r = o.record;
  return {
    original: { id: o.original.id, outcome: o.original.outcome, code: o.original.code, file: o.original.file, seq: o.original.seq },
    from: o.from,
    verifiedSha256: o.verifiedSha256,
    status: o.result.status,
    replay: r ? { id: r.id, outcome: r.outcome, code: r.code, reason: r.reason, records: r.records, badRows: r.badRows } : null,
    partnerTold: r ? (JSON.parse(r.plan) as AnswerPlan).writes.length > 0 : false,
    resolved: o.resolved,
    timeline: o.timeline,
    error: 'error' in o.result && o.result.error ? { code: o.result.error.code, message: o.result.error.message } : null,
  };
}

function formatReplay(o: ReplayOutcome): string {
  const r = o.record;
  const lines = [
    `replay of ${o.original.id} (${o.original.partner}/${o.original.flow}, sequence ${o.original.seq}, ${o.original.file}, ${o.original.outcome}) from ${o.from}/`,
    `  checksum   ${o.verifiedSha256 ? `SHA-256 ${o.verifiedSha256} as recorded` : 'none was recorded (rejected before the file was read); the .sha256 file is checked as usual'}`,
  ];
  if (!r) lines.push(`  result     ${o.result.status}${'error' in o.result && o.result.error ? `: ${o.result.error.code}: ${o.result.error.message}` : ''}; nothing was applied, run the replay again`);
  else {
    lines.push(`  replay     ${r.id}: ${r.outcome}${r.code ? ` ${r.code}: ${r.reason}` : ''}`);
    const committed = o.timeline.find((e) => e.step === 'committed');
    if (committed) lines.push(`  rows       ${r.records} read; ${committed.detail}`);
    const writes = (JSON.parse(r.plan) as { writes: { dir: string; name: string }[] }).writes;
    lines.push(`  partner    ${writes.length ? `told: ${writes.map((w) => `${w.dir}/${w.name}`).join(', ')}` : 'not told again (it was answered when the file arrived)'}`);
    if (o.resolved.length) lines.push(`  resolves   ${o.resolved.join(', ')}`);
    lines.push(`  details    inboxd deliveries show ${r.id}`);
  }
  lines.push('', ...o.timeline.map((e) => `  ${when(e.at)}  ${e.step.padEnd(10)} ${e.detail ?? ''}`));
  return `${lines.join('\n')}\n`;
}
