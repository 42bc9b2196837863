/**
 * `inboxd pack FILE`: what a partner sends with a data file, computed rather than written by hand: the
 * `.sha256` sidecar and the manifest with the flow's record count and control totals. The totals come
 * from the ingest's own read of the file (the same pass `run` and `check` make), so they are what
 * inboxd will find. Optionally the file is encrypted to our key and signed with the partner's first.
 */
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebStream } from 'node:stream/web';
import type { Command } from 'commander';
import { type FlowConfig, loadConfig } from '../config/config.js';
import { loadMapping } from '../config/mapping.js';
import { EXIT, InboxdError } from '../errors.js';
import { hashFile, readData } from '../ingest/delivery.js';
import { stringifyExact } from '../json.js';
import { pickFlow } from '../ops/check.js';
import { loadOpenpgp } from '../pgp/lib.js';
import { loadPrivateKeys, loadPublicKeys, readPassphrase } from '../pgp/keys.js';
import type { Exact } from '../pipeline/map.js';
import { manifestName, sidecarName } from '../pipeline/naming.js';
import { stagingFor } from '../store/open.js';

interface PackOptions {
  config?: string;
  partner?: string;
  flow?: string;
  mapping?: string;
  totals?: string;
  delimiter: string;
  header: boolean;
  manifestName: string;
  encryptTo?: string[];
  signWith?: string;
  passphraseFile?: string;
  outDir?: string;
}

/** Without a configuration: a flow made of a mapping file and the columns to total, defaults elsewhere. */
function standaloneFlow(o: PackOptions): FlowConfig {
  if (!o.mapping) throw new InboxdError('USAGE', 'give --config with --partner and --flow, or --mapping (and --totals) for a flow without a configuration');
  const fields = loadMapping(resolve(o.mapping));
  const totals = (o.totals ?? '').split(',').map((t) => t.trim()).filter(Boolean);
  for (const t of totals) {
    const f = fields.find((x) => x.ours === t);
    if (!f || (f.type !== 'integer' && f.type !== 'amount')) throw new InboxdError('USAGE', `--totals: "${t}" is not an integer or amount column of ${o.mapping}`);
  }
  return {
    partner: '', id: '', pattern: /.*/, format: 'csv', compression: 'auto', maxRecordBytes: 1024 * 1024, decompression: { maxBytes: 4 * 1024 ** 3, maxRatio: 100 }, fixed: {}, xlsx: { maxRows: 1_048_576, maxCells: 50_000_000 }, sequenceFrom: 'name', totalsFrom: 'manifest', csv: { delimiter: o.delimiter, quote: '"', header: o.header, encoding: 'utf-8', maxRecordBytes: 1024 * 1024 },
    mappingPath: resolve(o.mapping), fields, table: 'pack', key: [], totals, sidecarRequired: true, manifestRequired: true, manifestName: o.manifestName,
    maxBadRows: { count: 0 }, maxReportedErrors: 10, sequenceGap: 'ignore', gapWaitMs: 0,
  };
}

/** A sum as the manifest carries it: amounts as decimals ("1234.50"), which inboxd reads back to minor units. */
function manifestValue(flow: FlowConfig, column: string, sum: Exact): Exact | string {
  const scale = flow.fields.find((f) => f.ours === column)?.scale;
  if (flow.fields.find((f) => f.ours === column)?.type !== 'amount' || !scale) return sum;
  const digits = (sum < 0 ? -BigInt(sum) : BigInt(sum)).toString().padStart(scale + 1, '0');
  return `${sum < 0 ? '-' : ''}${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
}

/** The records and sums of the plain file, by the ingest's own read; a file it would reject is refused here. */
async function totalsOf(file: string, flow: FlowConfig): Promise<{ records: number; sums: Record<string, Exact | string> }> {
  const scratch = await fsp.mkdtemp(join(tmpdir(), 'inboxd-pack-'));
  try {
    const { stats } = await readData(file, { flow, staging: join(scratch, 'staging'), writer: stagingFor().writer }, undefined);
    if (stats!.badRows > 0) {
      const first = stats!.errors[0];
      throw new InboxdError('ROW_ERRORS', `${stats!.badRows} of ${stats!.rows} rows are invalid${first ? ` (line ${first.line}, ${first.column}: ${first.reason})` : ''}; inboxd check shows them all`);
    }
    return { records: stats!.rows, sums: Object.fromEntries(flow.totals.map((t) => [t, manifestValue(flow, t, stats!.sums[t]!)])) };
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}

/** Streams the file through OpenPGP: encrypted to our public key(s), signed with the partner's key if given. */
async function encrypt(file: string, out: string, o: PackOptions): Promise<void> {
  const encryptionKeys = await loadPublicKeys(o.encryptTo!.map((k) => resolve(k)));
  const passphrase = await readPassphrase({ file: o.passphraseFile });
  const signingKeys = o.signWith ? await loadPrivateKeys([resolve(o.signWith)], passphrase) : undefined;
  const openpgp = await loadOpenpgp();
  const message = await openpgp.createMessage({ binary: Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array> });
  const encrypted = (await openpgp.encrypt({ message, encryptionKeys, signingKeys, format: 'binary' })) as unknown as WebStream<Uint8Array>;
  await pipeline(Readable.fromWeb(encrypted), createWriteStream(out, { flags: 'wx' }));
}

async function pack(file: string, o: PackOptions): Promise<string[]> {
  const flow = o.config ? pickFlow(loadConfig(o.config), o.partner ?? '', o.flow ?? '').flow : standaloneFlow(o);
  const { records, sums } = await totalsOf(file, flow);
  const outDir = o.outDir ?? dirname(file);
  let data = resolve(file);
  if (o.encryptTo?.length) {
    data = join(outDir, `${basename(file)}.pgp`);
    await encrypt(file, data, o);
  } else if (o.signWith) throw new InboxdError('USAGE', '--sign-with signs while encrypting: give --encrypt-to too');
  const name = basename(data);
  const sha256 = await hashFile(data);
  const manifest = { file: name, records, sums, generated_at: new Date().toISOString().replace(/\.\d+Z$/, 'Z'), sha256, schema_version: 1 };
  const written = [join(outDir, sidecarName(name)), join(outDir, manifestName(flow.manifestName, name))];
  await fsp.writeFile(written[0]!, `${sha256}  ${name}\n`);
  await fsp.writeFile(written[1]!, `${stringifyExact(manifest, 2)}\n`);
  return data === resolve(file) ? written : [data, ...written];
}

export function registerPackCommand(program: Command): void {
  program
    .command('pack <file>')
    .description("write a data file's .sha256 sidecar and its manifest with the flow's control totals (optionally encrypt and sign)")
    .option('-c, --config <file>', 'take the flow from this configuration (with --partner and --flow)')
    .option('--partner <id>')
    .option('--flow <id>')
    .option('--mapping <file>', 'without --config: the flow\'s field-mapping CSV')
    .option('--totals <columns>', 'without --config: our columns to sum, comma-separated (qty,amount)')
    .option('--delimiter <c>', 'without --config: the CSV delimiter', ',')
    .option('--no-header', 'without --config: the file has no header row')
    .option('--manifest-name <template>', 'without --config: the manifest\'s name', '{file}.manifest.json')
    .option('--encrypt-to <key...>', 'encrypt to these armored public key files (ours), writing FILE.pgp')
    .option('--sign-with <key>', "sign with this armored private key file (the partner's)")
    .option('--passphrase-file <file>', "the signing key's passphrase")
    .option('--out-dir <dir>', 'write here instead of next to the file')
    .action(async (file: string, o: PackOptions) => {
      try {
        for (const f of await pack(file, o)) process.stdout.write(`${f}\n`);
      } catch (err) {
        if (!(err instanceof InboxdError) || err.kind !== 'reject') throw err;
        process.stderr.write(`inboxd: ${err.code}: ${file}: ${err.message}\n`);
        process.exitCode = err.code === 'USAGE' ? EXIT.USAGE : EXIT.REJECTED;
      }
    });
}
