/** `inboxd mapping init SAMPLE.csv`: a field-mapping skeleton from a sample file, for the engineer to correct. */
import { createReadStream, promises as fsp } from 'node:fs';
import type { Command } from 'commander';
import { parse } from 'csv-parse';
import { guessMapping, mappingCsv } from '../config/guess.js';
import { EXIT, InboxdError } from '../errors.js';

/** The header and up to `limit` records of a sample; a large file is not read to its end. */
async function sample(file: string, delimiter: string, limit: number): Promise<string[][]> {
  const records: string[][] = [];
  const parser = createReadStream(file).pipe(parse({ bom: true, delimiter, relax_column_count: true, skip_empty_lines: true }));
  for await (const record of parser as AsyncIterable<string[]>) {
    records.push(record);
    if (records.length > limit) break;
  }
  return records;
}

export function registerMappingCommands(program: Command): void {
  program
    .command('mapping')
    .description('field mappings')
    .command('init <sample>')
    .description("write a mapping skeleton from a sample file's header, types guessed from its values (each guess noted)")
    .option('--out <file>', 'write here (never over an existing file) instead of standard output')
    .option('--delimiter <c>', 'the sample\'s delimiter', ',')
    .option('--rows <n>', 'sample rows read for the guesses', '1000')
    .action(async (file: string, opts: { out?: string; delimiter: string; rows: string }) => {
      const [header, ...rows] = await sample(file, opts.delimiter, Number(opts.rows) || 1000);
      if (!header) throw new InboxdError('CONFIG_INVALID', `${file}: no header row`);
      if (header.length === 1 && opts.delimiter === ',' && /[;\t|]/.test(header[0]!)) {
        process.stderr.write(`inboxd: ${file}: one column only; is the delimiter ";", tab or "|"? (--delimiter)\n`);
      }
      const text = mappingCsv(guessMapping(header, rows));
      if (!opts.out) return void process.stdout.write(text);
      try {
        await fsp.writeFile(opts.out, text, { flag: 'wx' });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        process.stderr.write(`inboxd: USAGE: ${opts.out} already exists; not overwritten\n`);
        return void (process.exitCode = EXIT.USAGE);
      }
      process.stdout.write(`${opts.out}: ${header.length} columns from ${rows.length} sample rows; check each type and note\n`);
    });
}
