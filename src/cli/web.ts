/**
 * `inboxd web adduser NAME --config F`: adds a user of the operations page (or changes its password) in
 * the users file the configuration names (`http.users`). The password is read from standard input, one
 * line, so that it shows neither in the process list nor in the shell's history.
 */
import type { Command } from 'commander';
import { loadConfig } from '../config/config.js';
import { EXIT, InboxdError } from '../errors.js';

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write('password (at least 12 characters), then Enter: ');
  let text = '';
  for await (const chunk of process.stdin.setEncoding('utf8')) {
    text += chunk as string;
    if (text.includes('\n')) break;
  }
  return text.split(/\r?\n/)[0]!;
}

export function registerWebCommands(program: Command): void {
  program
    .command('web')
    .description('the operations page (http.ui)')
    .command('adduser <name>')
    .description('add a user of the operations page, or change its password (read from standard input)')
    .requiredOption('-c, --config <file>', 'configuration file (YAML)')
    .action(async (name: string, opts: { config: string }) => {
      const config = loadConfig(opts.config);
      const file = config.http?.ui?.usersFile;
      if (!file) throw new InboxdError('CONFIG_INVALID', `${config.file}: http.users: not set (the operations page needs http.ui: true and http.users)`);
      const { addUser } = await import('../web/users.js');
      try {
        await addUser(file, name, await readStdin());
      } catch (err) {
        if (!(err instanceof InboxdError) || err.code !== 'USAGE') throw err;
        process.stderr.write(`inboxd: USAGE: ${err.message}\n`);
        process.exitCode = EXIT.USAGE;
        return;
      }
      process.stdout.write(`${name}: written to ${file}\n`);
    });
}
