#!/usr/bin/env node
/**
 * The command line. It maps outcomes and errors to exit codes and holds no business logic.
 *   0 all good · 1 some deliveries rejected · 64 usage · 70 internal error · 75 temporary failure, try again · 78 configuration error
 */
import { Command, CommanderError } from 'commander';
import { loadConfig } from './config.js';
import { classify, EXIT, InboxdError } from './errors.js';
import { createLogger } from './log.js';
import { runOnce } from './run.js';

const program = new Command();
program.name('inboxd').description('File-ingestion daemon: partner batch files from inbox to database, exactly once').exitOverride();

program
  .command('run')
  .description('process deliveries (with --once: everything ready now, then exit)')
  .requiredOption('-c, --config <file>', 'configuration file (YAML)')
  .option('--once', 'process every ready delivery and exit')
  .action(async (opts: { config: string; once?: boolean }) => {
    const config = loadConfig(opts.config);
    const log = createLogger(config.logLevel);
    if (!opts.once) throw new InboxdError('CONFIG_INVALID', 'the long-running daemon is not available yet: use --once');
    const tally = await runOnce(config, log);
    log.info({ ...tally }, 'run complete');
    process.exitCode = tally.retry > 0 ? EXIT.TEMPFAIL : tally.rejected > 0 ? EXIT.REJECTED : EXIT.OK;
  });

program
  .command('check-config')
  .description('validate a configuration file and its mappings')
  .requiredOption('-c, --config <file>', 'configuration file (YAML)')
  .action((opts: { config: string }) => {
    const config = loadConfig(opts.config);
    const flows = config.partners.reduce((n, p) => n + p.flows.length, 0);
    process.stdout.write(`${config.file}: ok (${config.partners.length} partners, ${flows} flows)\n`);
  });

export async function main(argv: string[]): Promise<number> {
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.OK;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    const e = classify(err);
    process.stderr.write(`inboxd: ${e.code}: ${e.message}\n`);
    if (e.kind === 'fatal') return EXIT.CONFIG;
    if (!(err instanceof InboxdError) && !(err as NodeJS.ErrnoException)?.code) {
      process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
      return EXIT.SOFTWARE;
    }
    return EXIT.TEMPFAIL;
  }
}

process.exitCode = await main(process.argv);
