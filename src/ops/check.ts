/**
 * `inboxd check --partner P --flow F FILE...`: onboarding a partner. A sample delivery goes through
 * every check of the pipeline (file name, .sha256 file, manifest, decryption, CSV, mapping, control
 * totals, sequence) using the pipeline's own functions, and nothing is applied or moved: the files are
 * only read, rows are staged in a scratch file under the system temp directory, and the database is
 * opened read-only (if it exists at all). Problems are worded for the partner to act on.
 */
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { Config, FlowConfig, PartnerConfig } from '../config/config.js';
import { checkBadRows, type DataFound, decryptOptions, hashFile, manifestSum, readData } from '../ingest/delivery.js';
import { classify, InboxdError } from '../errors.js';
import { readSmall } from '../pipeline/fsx.js';
import type { Keyring } from '../pgp/keyring.js';
import { exact, type RowError } from '../pipeline/map.js';
import type { StagedRows } from '../pipeline/stage.js';
import { isTempName, manifestName, matchName, parseName, sidecarName } from '../pipeline/naming.js';
import { signerText } from '../pgp/decrypt.js';
import { databaseExists, openStore, stagingFor } from '../store/open.js';
import { table } from './table.js';
import { unpackOf } from '../formats/compression.js';
import { readTrailer } from '../formats/fixed.js';
import { checkEnvelopes, interchangeSeq, x12Reader } from '../ingest/x12.js';
import { visible } from '../visible.js';
import { checkTotals, type Manifest, parseManifest, parseSidecar } from '../pipeline/verify.js';

export type CheckStatus = 'ok' | 'fail' | 'warn' | 'skip';

export interface CheckItem {
  check: string;
  status: CheckStatus;
  /** the error code the pipeline would reject with */
  code?: string;
  message: string;
}

export interface CheckedDelivery {
  file: string;
  path: string;
  /** would be accepted if dropped into the inbox now */
  accepted: boolean;
  checks: CheckItem[];
  rowErrors: RowError[];
  rowErrorCount: number;
  /** what would be upserted (PII columns hidden) */
  preview?: { table: string; key: readonly string[]; rows: number; sample: Record<string, unknown>[] };
}

export interface CheckReport {
  partner: string;
  flow: string;
  deliveries: CheckedDelivery[];
  /** files given that belong to no data file given */
  stray: CheckItem[];
  accepted: boolean;
}

export interface CheckOptions {
  /** rows shown of what would be upserted */
  sample?: number;
  /** the keyring, loaded only when a file is encrypted */
  keyring?: () => Promise<Keyring>;
}

const ENCRYPTED = /\.(pgp|gpg|asc)$/i;

export async function checkFiles(config: Config, partner: PartnerConfig, flow: FlowConfig, paths: readonly string[], opts: CheckOptions = {}): Promise<CheckReport> {
  const given = new Map(paths.map((p) => [basename(p), p]));
  const companions = new Set<string>();
  const dataFiles = paths.filter((p) => {
    const name = basename(p);
    return !name.endsWith('.sha256') && ![...given.keys()].some((other) => other !== name && manifestName(flow.manifestName, other) === name);
  });
  const deliveries: CheckedDelivery[] = [];
  for (const path of dataFiles) {
    const name = basename(path);
    const find = (companion: string) => given.get(companion) ?? (existsSync(join(dirname(path), companion)) ? join(dirname(path), companion) : undefined);
    const sidecar = find(sidecarName(name));
    const manifest = find(manifestName(flow.manifestName, name));
    [sidecar, manifest].forEach((c) => c && companions.add(basename(c)));
    deliveries.push(await checkOne(config, partner, flow, path, sidecar, manifest, opts));
  }
  const stray = paths.filter((p) => !dataFiles.includes(p) && !companions.has(basename(p))).map((p): CheckItem => ({
    check: 'files', status: 'fail', message: `${basename(p)} belongs to no data file given: a .sha256 file or manifest is named after its data file (${flow.manifestName})`,
  }));
  const accepted = deliveries.length > 0 && stray.length === 0 && deliveries.every((d) => d.accepted);
  return { partner: partner.id, flow: flow.id, deliveries, stray, accepted };
}

async function checkOne(config: Config, partner: PartnerConfig, flow: FlowConfig, path: string, sidecarPath: string | undefined, manifestPath: string | undefined, opts: CheckOptions): Promise<CheckedDelivery> {
  const file = basename(path);
  const checks: CheckItem[] = [];
  const ok = (check: string, message: string) => checks.push({ check, status: 'ok', message });
  const fail = (check: string, err: unknown, hint = '') => {
    const e = classify(err);
    checks.push({ check, status: e.kind === 'reject' ? 'fail' : 'skip', code: e.code, message: `${e.message}${hint ? `. ${hint}` : ''}` });
  };
  const out: CheckedDelivery = { file, path, accepted: false, checks, rowErrors: [], rowErrorCount: 0 };

  // Name
  const matched = matchName(file, [flow]);
  const name = matched?.problem ? undefined : matched;
  if (isTempName(file, config.tempPatterns)) checks.push({ check: 'name', status: 'fail', message: `"${visible(file)}" is a temporary name (${config.tempPatterns.map((r) => r.source).join(', ')}): inboxd never reads it. Rename the file to its final name once the upload is complete` });
  else if (matched?.problem) checks.push({ check: 'name', status: 'fail', code: 'BAD_FILE_NAME', message: `${matched.problem}. Name files like ${exampleName(partner.id, flow)}` });
  else if (!name) {
    const other = parseName(file, partner.flows);
    checks.push({ check: 'name', status: 'fail', code: 'BAD_FILE_NAME', message: `"${visible(file)}" does not match the file-name pattern of ${partner.id}/${flow.id}${other ? ` (it matches flow ${other.flow})` : ''}. Name files like ${exampleName(partner.id, flow)}` });
  } else ok('name', `flow ${flow.id}, sequence ${name.seq}${name.fileTime ? `, file time ${name.fileTime}` : ''}`);

  // The .sha256 file and the manifest
  let sidecarHex: string | undefined;
  if (!sidecarPath) {
    if (flow.sidecarRequired) checks.push({ check: 'sidecar', status: 'fail', code: 'INCOMPLETE', message: `${sidecarName(file)} is missing; this flow requires it. Make it with: sha256sum ${file} > ${sidecarName(file)}` });
    else checks.push({ check: 'sidecar', status: 'skip', message: 'no .sha256 file (optional for this flow)' });
  } else {
    try {
      sidecarHex = parseSidecar(await readSmall(sidecarPath, 4096), file);
      ok('sidecar', `${basename(sidecarPath)} holds a SHA-256 checksum`);
    } catch (err) {
      fail('sidecar', err);
    }
  }
  let manifest: Manifest | undefined;
  const expectedManifest = manifestName(flow.manifestName, file);
  if (!manifestPath) {
    if (flow.manifestRequired) checks.push({ check: 'manifest', status: 'fail', code: 'INCOMPLETE', message: `${expectedManifest} is missing; this flow requires a manifest (file, records, sums of ${flow.totals.join(', ') || 'no columns'}, sha256)` });
    else checks.push({ check: 'manifest', status: 'skip', message: 'no manifest (optional for this flow)' });
  } else {
    try {
      manifest = parseManifest(await readSmall(manifestPath, 1 << 20), file);
      ok('manifest', `${basename(manifestPath)}: ${manifest.records} records`);
    } catch (err) {
      fail('manifest', err);
    }
  }

  // Decryption, then the one streaming pass of the pipeline: hash, decode, parse, map, stage.
  let decrypt;
  try {
    const keyring = ENCRYPTED.test(file) && opts.keyring ? await opts.keyring() : undefined;
    decrypt = decryptOptions({ partner, keyring }, file);
    checks.push(decrypt ? { check: 'decryption', status: 'ok', message: 'encrypted: decrypted with our key during the CSV check below' } : { check: 'decryption', status: 'skip', message: 'not encrypted' });
  } catch (err) {
    fail('decryption', err);
  }
  const scratch = await fsp.mkdtemp(join(tmpdir(), 'inboxd-check-'));
  let found: DataFound | undefined;
  // An interchange: its envelopes checked, and its ISA13 the sequence.
  const x12 = flow.format === 'x12' ? x12Reader(flow) : undefined;
  try {
    const staging = join(scratch, 'staging');
    if (checks.some((c) => c.check === 'decryption' && c.status !== 'fail') || !ENCRYPTED.test(file)) {
      try {
        found = await readData(path, { flow, staging, writer: stagingFor().writer, x12 }, undefined, undefined, decrypt);
        if (x12?.done) checkEnvelopes(x12.done);
        ok(flow.format, `${formatText(flow, file)}: ${found.stats!.rows} records${flow.format === 'csv' ? '; the header has every mapped column' : ''}`);
        if (decrypt) ok('signature', signerText(found));
      } catch (err) {
        const e = classify(err);
        fail(e.code === 'MISSING_COLUMN' ? 'mapping' : e.code.startsWith('SIGNATURE') || e.code === 'DECRYPT_FAILED' ? 'decryption' : flow.format, e);
      }
    } else checks.push({ check: flow.format, status: 'skip', message: 'not checked: the file could not be decrypted' });
    const sha = found?.sha256 ?? (await hashFile(path));
    if (sidecarHex) {
      if (sidecarHex === sha) ok('checksum', `SHA-256 ${sha} matches the .sha256 file`);
      else checks.push({ check: 'checksum', status: 'fail', code: 'CHECKSUM_MISMATCH', message: `the file's SHA-256 is ${sha}, the .sha256 file says ${sidecarHex}. Compute the checksum after the file is written completely, and upload in binary mode` });
    }
    const stats = found?.stats;
    if (stats) {
      out.rowErrors = stats.errors;
      out.rowErrorCount = stats.errorCount;
      try {
        checkBadRows(flow, stats);
        ok('mapping', stats.badRows ? `${stats.badRows} of ${stats.rows} rows are invalid, within the ${describeAllowed(flow)} allowed: the good rows would be applied and the bad ones listed with the ACK` : `all ${stats.rows} rows are valid`);
      } catch (err) {
        fail('mapping', err, 'Every invalid value is listed below by line and column');
      }
      if (flow.totalsFrom === 'trailer') {
        try {
          const trailer = readTrailer(found!.lastLine, flow.fixed);
          checkTotals(trailer, { sha256: sha, records: stats.rows, sums: stats.sums }, (c, v) => manifestSum(flow, c, v), `the trailer (line ${trailer.line})`);
          ok('control totals', `the trailer's record count and sums (${Object.keys(trailer.sums).join(', ') || 'none'}) match`);
        } catch (err) {
          fail('control totals', err);
        }
      } else if (manifest) {
        try {
          checkTotals(manifest, { sha256: sha, records: stats.rows, sums: stats.sums }, (c, v) => manifestSum(flow, c, v));
          ok('control totals', `the manifest's record count${Object.keys(manifest.sums).length ? ` and sums (${Object.keys(manifest.sums).join(', ')})` : ''}${manifest.sha256 ? ' and sha256' : ''} match`);
        } catch (err) {
          fail('control totals', err);
        }
      }
      out.preview = { table: flow.table, key: flow.key, rows: stats.rows - stats.badRows, sample: await stagedSample(config, found!.staged, flow, opts.sample ?? 5) };
    }
    const seq = x12 ? (x12.done && interchangeSeq(x12.done)) : name?.seq;
    if (seq !== undefined) checks.push(await sequenceCheck(config, flow, seq, sha));
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
  out.accepted = checks.every((c) => c.status !== 'fail');
  return out;
}

/** What the dedupe table says of this sequence now: read-only, and only if the database exists. */
async function sequenceCheck(config: Config, flow: FlowConfig, seq: number, sha256: string): Promise<CheckItem> {
  if (!(await databaseExists(config))) return { check: 'sequence', status: 'skip', message: 'no database yet: nothing applied, any sequence is new' };
  const store = await openStore(config, { readonly: true });
  try {
    const applied = await store.applied(flow.partner, flow.id, seq);
    const last = await store.lastSeq(flow.partner, flow.id);
    if (applied && applied.sha256 === sha256) return { check: 'sequence', status: 'fail', code: 'DUPLICATE', message: `sequence ${seq} was already applied with this very content (delivery ${applied.deliveryId}): it would be answered as a duplicate and change nothing` };
    if (applied) return { check: 'sequence', status: 'fail', code: 'SEQUENCE_CONFLICT', message: `sequence ${seq} was already applied with different content (delivery ${applied.deliveryId}): send new data under a new sequence number` };
    if (flow.sequenceGap !== 'ignore' && last !== undefined && seq < last) return { check: 'sequence', status: 'fail', code: 'SEQUENCE_OUT_OF_ORDER', message: `sequence ${last} is already applied; ${seq} is older and would not be applied. Use a number above ${last}` };
    if (flow.sequenceGap !== 'ignore' && last !== undefined && seq > last + 1) return { check: 'sequence', status: 'warn', message: `sequence ${last + 1} is next; ${seq} leaves a gap${flow.sequenceGap === 'wait' ? ', and the file would wait for the missing ones for a while' : ''}` };
    return { check: 'sequence', status: 'ok', message: last === undefined ? `sequence ${seq}: nothing applied yet for this flow` : `sequence ${seq} follows ${last}` };
  } finally {
    await store.close();
  }
}

/** The first rows staged, by our column names; PII columns are hidden as they are in logs. */
async function stagedSample(config: Config, staged: StagedRows | undefined, flow: FlowConfig, n: number): Promise<Record<string, unknown>[]> {
  if (!staged) return [];
  const rows = await stagingFor().sample(staged, n);
  // Integers beyond 2^53 are shown exactly, not as the nearest double.
  const value = (v: unknown) => (typeof v === 'bigint' ? exact(v) : v);
  return rows.map((r) => Object.fromEntries(flow.fields.map((f, i) => [f.ours, f.pii && r[i] !== null ? '(hidden: personal data)' : value(r[i])])));
}

/** The flow's format as the operator configured it, and the compression this file gets. */
function formatText(flow: FlowConfig, file: string): string {
  const unpack = unpackOf(flow.compression, file);
  return `format ${flow.format}${unpack ? `, ${unpack}-compressed` : ''}`;
}

function describeAllowed(flow: FlowConfig): string {
  return 'count' in flow.maxBadRows ? `${flow.maxBadRows.count}` : `${flow.maxBadRows.fraction * 100}%`;
}

/** A name the flow's pattern accepts, for the default pattern; otherwise the pattern itself. */
export function exampleName(partner: string, flow: FlowConfig): string {
  const ext = { csv: 'csv', ndjson: 'ndjson', fixed: 'dat', xlsx: 'xlsx', x12: 'x12' }[flow.format];
  const candidate = `${partner}_${flow.id}_20250916T020000Z_000001.${ext}`;
  return parseName(candidate, [flow]) ? candidate : `the pattern ${flow.pattern.source}`;
}

export function formatCheck(r: CheckReport): string {
  const out: string[] = [];
  for (const d of r.deliveries) {
    out.push(`${r.partner}/${r.flow}: ${d.file}`);
    for (const c of d.checks) out.push(`  ${c.status.toUpperCase().padEnd(5)} ${c.check.padEnd(15)}${c.code ? `${c.code}: ` : ''}${c.message}`);
    if (d.rowErrors.length) {
      out.push('', `  Invalid values (${d.rowErrorCount}${d.rowErrorCount > d.rowErrors.length ? `, the first ${d.rowErrors.length} listed` : ''}):`);
      out.push(indent(table(['LINE', 'COLUMN', 'PROBLEM'], d.rowErrors.map((e) => [e.line, e.column, e.reason]), 100)));
    }
    if (d.preview) {
      const what = d.accepted ? `Would upsert ${plural(d.preview.rows, 'row')} into ${d.preview.table}` : `Once the problems are fixed, would upsert rows into ${d.preview.table}; ${plural(d.preview.rows, 'row')} pass the mapping now`;
      out.push('', `  ${what} (key ${d.preview.key.join(', ')})${d.preview.sample.length ? `; the first ${d.preview.sample.length}:` : ''}`);
      const cols = Object.keys(d.preview.sample[0] ?? {});
      if (cols.length) out.push(indent(table(cols, d.preview.sample.map((row) => cols.map((c) => row[c])), 30)));
    }
    out.push('', `  => ${d.accepted ? 'would be ACCEPTED' : `would be REJECTED (${plural(d.checks.filter((c) => c.status === 'fail').length, 'problem')})`}. Nothing was applied or moved.`, '');
  }
  for (const s of r.stray) out.push(`FAIL  ${s.message}`);
  if (r.deliveries.length === 0) out.push('No data file given: name the data file (its .sha256 file and manifest are found beside it).');
  return `${out.join('\n')}\n`;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
const indent = (text: string) => text.split('\n').map((l) => `    ${l}`).join('\n');

/** The partner and flow named on the command line, or a usage error naming what exists. */
export function pickFlow(config: Config, partnerId: string, flowId: string): { partner: PartnerConfig; flow: FlowConfig } {
  const partner = config.partners.find((p) => p.id === partnerId);
  if (!partner) throw new InboxdError('USAGE', `no partner "${partnerId}" in ${config.file} (partners: ${config.partners.map((p) => p.id).join(', ')})`);
  const flow = partner.flows.find((f) => f.id === flowId);
  if (!flow) throw new InboxdError('USAGE', `partner ${partnerId} has no flow "${flowId}" (flows: ${partner.flows.map((f) => f.id).join(', ')})`);
  return { partner, flow };
}
