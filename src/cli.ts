#!/usr/bin/env node
/**
 * The command line. It maps outcomes and errors to exit codes and holds no business logic.
 *   0 all good · 1 some deliveries rejected · 64 usage · 70 internal error · 75 temporary failure, try again · 78 configuration error
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { type Config, configJsonSchema, loadConfig } from './config/config.js';
import { registerKeysCommands } from './cli/keys.js';
import { registerMappingCommands } from './cli/mapping.js';
import { registerOpsCommands } from './cli/ops.js';
import { registerPackCommand } from './cli/pack.js';
import { registerWebCommands } from './cli/web.js';
import { classify, EXIT, InboxdError } from './errors.js';
import { keySources } from './pgp/keyring.js';
import { createLogger, LOG_LEVELS, logOptions, type Logger } from './log.js';
import { runOnce, type Wait, waitFields, waitLine } from './ingest/pass.js';

const program = new Command();
const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
program.name('inboxd').description('File-ingestion daemon: partner batch files from inbox to database, exactly once').version(version, '-V, --version').exitOverride();

program
  .command('run')
  .description('process deliveries (with --once: everything ready now, then exit)')
  .requiredOption('-c, --config <file>', 'configuration file (YAML)')
  .option('--once', 'process every ready delivery and exit')
  .action(async (opts: { config: string; once?: boolean }) => {
    const config = loadConfig(opts.config);
    const log = createLogger(config.logLevel);
    if (!opts.once) return runDaemon(config, log);
    const waits: Wait[] = [];
    const tally = await runOnce(config, log, waits);
    log.info({ ...tally, waits: waits.map(waitFields) }, 'run complete');
    for (const w of waits) process.stderr.write(`waiting: ${waitLine(w)}\n`);
    process.exitCode = tally.retry > 0 ? EXIT.TEMPFAIL : tally.rejected > 0 ? EXIT.REJECTED : EXIT.OK;
  });

/** Runs until SIGTERM or SIGINT: the first stops gracefully (exit 0), a second exits at once. */
async function runDaemon(config: Config, log: Logger): Promise<void> {
  // Loaded here, not above: `run --once` and the other commands start without the daemon's modules.
  const { Daemon } = await import('./daemon/service.js');
  const daemon = new Daemon(config, log);
  let signals = 0;
  const stopped = new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      if (++signals > 1) {
        log.warn({ signal: sig }, 'second signal: exiting at once');
        process.exit(sig === 'SIGINT' ? 130 : 143);
      }
      log.info({ signal: sig }, 'signal received');
      daemon.stop().then(resolve, resolve);
    };
    process.on('SIGTERM', onSignal).on('SIGINT', onSignal);
    // The configuration is read once, at start; a hangup (the default action kills) changes nothing.
    process.on('SIGHUP', () => log.warn({ signal: 'SIGHUP' }, 'SIGHUP ignored: the configuration is read at start only; restart to apply a change (systemctl restart inboxd)'));
  });
  await daemon.start();
  await stopped;
  process.exitCode = EXIT.OK;
}

program
  .command('check-config')
  .description('what run checks at start, without starting: configuration, mappings, keys, directories, tables; creates nothing')
  .requiredOption('-c, --config <file>', 'configuration file (YAML)')
  .action(async (opts: { config: string }) => {
    const config = loadConfig(opts.config);
    const { preflight } = await import('./ingest/preflight.js');
    await preflight(config);
    const flows = config.partners.reduce((n, p) => n + p.flows.length, 0);
    process.stdout.write(`${config.file}: ok (${config.partners.length} partners, ${flows} flows)\n`);
  });

program
  .command('config')
  .description('the configuration file')
  .command('schema')
  .description('print the JSON Schema of the configuration file (for editors: yaml-language-server)')
  .action(() => {
    process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`);
  });

registerKeysCommands(program, async (file) => keySources(loadConfig(file)));
registerOpsCommands(program);
registerMappingCommands(program);
registerPackCommand(program);
registerWebCommands(program);

const DEFAULT_CONFIG = '/etc/inboxd/inboxd.yaml';
/** Where the configuration came from when --config was left out: said with a configuration error. */
let configFrom: { file: string; source: string } | undefined;

/**
 * On every command: --log-level and --pretty; where a configuration is needed, --config may be left
 * out (INBOXD_CONFIG, then /etc/inboxd/inboxd.yaml).
 */
function commonOptions(cmd: Command): void {
  cmd.commands.forEach(commonOptions);
  if (cmd.commands.length > 0) return;
  cmd.addOption(new Option('--log-level <level>', 'log lines from this level up (overrides log_level)').choices(LOG_LEVELS));
  cmd.addOption(new Option('--pretty', 'readable log lines (default when the output is a terminal)'));
  cmd.addOption(new Option('--no-pretty', 'JSON log lines, even at a terminal'));
  const config = cmd.options.find((o) => o.long === '--config');
  if (!config?.mandatory) return;
  config.makeOptionMandatory(false).description += ` (default: $INBOXD_CONFIG, then ${DEFAULT_CONFIG})`;
  const env = process.env.INBOXD_CONFIG;
  cmd.setOptionValueWithSource('config', env || DEFAULT_CONFIG, env ? 'env' : 'default');
}

program.hook('preAction', (_program, cmd) => {
  const o = cmd.opts<{ logLevel?: string; pretty?: boolean; config?: string }>();
  Object.assign(logOptions, { level: o.logLevel, pretty: o.pretty });
  const source = cmd.getOptionValueSource('config');
  if (o.config && (source === 'env' || source === 'default')) {
    configFrom = { file: resolve(o.config), source: source === 'env' ? 'from INBOXD_CONFIG' : 'the default: no --config given, INBOXD_CONFIG not set' };
  }
});
commonOptions(program);

export async function main(argv: string[]): Promise<number> {
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.OK;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    const e = classify(err);
    const from = e.code === 'CONFIG_INVALID' && configFrom && e.details.file === configFrom.file ? ` (${configFrom.source})` : '';
    process.stderr.write(`inboxd: ${e.code}: ${e.message}${from}\n`);
    if (e.kind === 'fatal') return EXIT.CONFIG;
    if (!(err instanceof InboxdError) && !(err as NodeJS.ErrnoException)?.code) {
      process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
      return EXIT.SOFTWARE;
    }
    return EXIT.TEMPFAIL;
  }
}

process.exitCode = await main(process.argv);
// Everything a command took is given back by now (releasers.ts). Should anything still hold the event
// loop (a bug), exit anyway and say so: a process that does nothing must not outlive its command, or
// systemd takes a failed start for a running daemon.
setTimeout(() => {
  process.stderr.write(`inboxd: still held open after the command ended (${process.getActiveResourcesInfo().join(', ')}); exiting\n`);
  process.exit();
}, 1000).unref();
