/**
 * The answer step: what the partner sees. An ACK in outbox/ and the original in archive/ (read-only),
 * or the original and an error report in error/. The answer is decided as a plan, a pure function of
 * the delivery and of which names are taken (looked up before the commit's transaction, takenNames),
 * stored with the outcome in the same transaction, then carried out; carrying out a plan is idempotent, so after a
 * crash the same plan is simply carried out again: same names, same bytes, no second ACK.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, join } from 'node:path';
import type { PartnerDirs } from '../config/config.js';
import { crashPoint } from '../crashpoint.js';
import type { InboxdError } from '../errors.js';
import { exists, fsyncDir, writeAtomic } from './fsx.js';
import { stringifyExact } from '../json.js';
import { type Exact, fromMinorUnits, type RowError } from './map.js';

export interface AnswerPlan {
  writes: { dir: 'outbox' | 'error'; name: string; content: string }[];
  moves: { from: string; dir: 'archive' | 'error'; to: string; readOnly: boolean }[];
  /** a report kept for the record (inboxd deliveries show) and never written: a replay's, see replayPlan */
  report?: string;
}

export interface AnswerFacts {
  id: string;
  partner: string;
  flow: string | null;
  file: string;
  seq: number | null;
  sha256: string | null;
  /** the delivery's files, as named in the work directory */
  files: string[];
  processedAt: string;
  /** the delivery this one replays (replay.ts), and where that one's files were */
  replayOf?: string;
  replayFrom?: 'archive' | 'error';
  /** a format's own answer added to the plan (X12: the 997), from the outcome and, when rejected, its error */
  answer?: (plan: AnswerPlan, outcome: { outcome: string; code: string | null; decidedAt: string }, error?: InboxdError) => AnswerPlan;
}

export interface Accepted {
  records: number;
  sums: Record<string, Exact | undefined>;
  /** decimal places of each control total (0 for integers): the ACK gives the sums as decimals too */
  scales: Record<string, number>;
  badRows: number;
  errors: RowError[];
  errorCount: number;
}

export interface Rejected {
  status: 'rejected' | 'duplicate';
  code: string;
  reason: string;
  errors: RowError[];
  errorCount: number;
}

/** Whether the names a plan would give the delivery's files are taken already, in archive/ and in error/. */
export interface Taken {
  archive: boolean;
  error: boolean;
}

/**
 * Looked up before the commit, so that the plan made inside its transaction is a pure function: no file
 * system call while the write lock is held. Claiming is by name, so no other delivery takes these names
 * meanwhile.
 */
export async function takenNames(f: Pick<AnswerFacts, 'file' | 'files'>, dirs: PartnerDirs): Promise<Taken> {
  // As existsSync did: a name that cannot be looked at counts as free.
  const any = async (paths: string[]) => (await Promise.all(paths.map((p) => fsp.access(p).then(() => true, () => false)))).some(Boolean);
  const stored = (dir: 'archive' | 'error') => f.files.map((n) => join(dirs[dir], storedName(n)));
  return { archive: await any(stored('archive')), error: await any([...stored('error'), join(dirs.error, `${storedName(f.file)}.error.json`)]) };
}

export function planAccepted(f: AnswerFacts, a: Accepted, taken: Taken): AnswerPlan {
  const status = a.badRows > 0 ? 'accepted_with_errors' : 'accepted';
  const ack = {
    status, file: f.file, partner: f.partner, flow: f.flow, sequence: f.seq, sha256: f.sha256,
    records: a.records, rows_applied: a.records - a.badRows, rows_rejected: a.badRows, sums: a.sums, sums_decimal: decimalSums(a),
    processed_at: f.processedAt, delivery_id: f.id, ...(f.replayOf ? { replay_of: f.replayOf } : {}),
    ...(a.badRows > 0 ? { errors: a.errors, error_count: a.errorCount, errors_truncated: a.errorCount > a.errors.length } : {}),
  };
  const base = storedName(f.file);
  // Sums beyond 2^53 are written as their exact digits.
  const writes: AnswerPlan['writes'] = [{ dir: 'outbox', name: `${base}.ack.json`, content: `${stringifyExact(ack, 2)}\n` }];
  if (a.badRows > 0) writes.push({ dir: 'outbox', name: `${base}.errors.csv`, content: errorsCsv(a.errors) });
  return { writes, moves: placeAll(f, taken.archive, 'archive', true) };
}

/** The sums as the partner writes them in its manifest: decimals for amounts, as strings (exact at any size). */
const decimalSums = (a: Accepted) => Object.fromEntries(Object.entries(a.sums).map(([c, v]) => [c, v === undefined ? null : fromMinorUnits(v, a.scales[c] ?? 0)]));

export function planRejected(f: AnswerFacts, r: Rejected, taken: Taken): AnswerPlan {
  const moves = placeAll(f, taken.error, 'error', false);
  // Reports sit beside the original they describe, sharing its (possibly suffixed) name.
  const base = moves.find((m) => m.from === f.file)?.to ?? storedName(f.file);
  const report = {
    status: r.status, code: r.code, reason: r.reason, file: f.file, partner: f.partner, flow: f.flow, sequence: f.seq,
    sha256: f.sha256, processed_at: f.processedAt, delivery_id: f.id,
    errors: r.errors, error_count: r.errorCount, errors_truncated: r.errorCount > r.errors.length,
  };
  const writes: AnswerPlan['writes'] = [{ dir: 'error', name: `${base}.error.json`, content: `${JSON.stringify(report, null, 2)}\n` }];
  if (r.errors.length > 0) writes.push({ dir: 'error', name: `${base}.errors.csv`, content: errorsCsv(r.errors) });
  return { writes, moves };
}

/**
 * What a replay tells the partner. Only a delivery rejected before and accepted now changes what the
 * partner was told: it gets an ACK (naming the replay) and its files a copy in archive/, the archive
 * holding every file applied. Otherwise the partner hears nothing again: no second ACK for data it was
 * already told about, no second error report for a file it already knows is wrong. The working copies
 * are then dropped (the original evidence stays where it was) and the report is kept in the plan only.
 */
export function replayPlan(plan: AnswerPlan, accepted: boolean, originalIn: 'archive' | 'error'): AnswerPlan {
  if (accepted && originalIn === 'error') return plan;
  const report = plan.writes.find((w) => w.name.endsWith('.ack.json') || w.name.endsWith('.error.json'))?.content;
  return { writes: [], moves: [], report };
}

/**
 * Target names: the original name, or, when a file of that name is already there (`taken`: a delivery
 * rejected twice), the name with the delivery id inserted before the data file's extension
 * (`x_002.<id>.csv`, `x_002.<id>.csv.sha256`), so no evidence is ever overwritten and each file still
 * opens by its extension; shortened to fit the file system (storedName).
 */
function placeAll(f: AnswerFacts, taken: boolean, dir: 'archive' | 'error', readOnly: boolean): AnswerPlan['moves'] {
  const suffix = taken ? `.${f.id}` : '';
  const stem = f.file.replace(EXTENSION, '');
  return f.files.map((from) => ({ from, dir, to: storedName(from, suffix, from.startsWith(stem) ? stem.length : from.length), readOnly }));
}

/** A file name's extensions: `.csv`, `.csv.gpg`; not a dotted date (`.20250916`). */
const EXTENSION = /(\.[A-Za-z][A-Za-z0-9]{0,4})+$/;

/**
 * NAME_MAX is 255 bytes (of UTF-8). An answer's name adds at most 11 (`.error.json`, `.errors.csv`) to
 * the stored name of its data file, and writeAtomic's temporary name 29 more (`.` + name +
 * `.<delivery id>.tmp`): what is stored, a delivery-id suffix included, keeps to the rest.
 */
const MAX_STORED_BYTES = 255 - 11 - 29;

/**
 * `name` with `suffix` inserted at `at` (the end by default), or, when that is too long for the file
 * system, the name shortened: its head, a hash of the whole name (names that share a head stay apart),
 * the suffix and its last bytes (the extension). Reports and ACKs keep the full name in their `file` field.
 */
export function storedName(name: string, suffix = '', at = name.length): string {
  const whole = name.slice(0, at) + suffix + name.slice(at);
  if (Buffer.byteLength(whole) <= MAX_STORED_BYTES) return whole;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 16);
  const tail = utf8Slice(name, -32);
  const room = MAX_STORED_BYTES - Buffer.byteLength(`~${hash}~${suffix}${tail}`);
  return `${utf8Slice(name, room)}~${hash}~${suffix}${tail}`;
}

/** The first `n` bytes of `s` (the last -n when negative), never cutting a character in two. */
function utf8Slice(s: string, n: number): string {
  const buf = Buffer.from(s);
  const continuation = (i: number) => i > 0 && i < buf.length && (buf[i]! & 0xc0) === 0x80;
  if (n >= 0) {
    let end = Math.min(n, buf.length);
    while (continuation(end)) end--;
    return buf.subarray(0, end).toString();
  }
  let start = Math.max(0, buf.length + n);
  while (continuation(start)) start++;
  return buf.subarray(start).toString();
}

/** Carries out a plan. Every step is safe to repeat: a crash anywhere is finished by running it again. */
export async function carryOut(plan: AnswerPlan, dirs: PartnerDirs, workDir: string): Promise<void> {
  // Originals first, the ACK or report last: when a partner sees its answer, everything is in place.
  const touched = new Set<string>();
  for (const m of plan.moves) {
    const from = join(workDir, m.from);
    if (!(await exists(from))) continue; // moved before the crash
    // The partner owns what it uploaded, so under the production permissions only the archive
    // directory (ours alone) protects it; making the file read-only is best effort.
    if (m.readOnly) await fsp.chmod(from, 0o440).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'EPERM') throw err; });
    await fsp.rename(from, join(dirs[m.dir], m.to));
    crashPoint('mid-archive');
    touched.add(dirs[m.dir]);
  }
  for (const d of touched) await fsyncDir(d);
  // The working directory is named for the delivery id: the tag of the answers' temporary names.
  for (const w of plan.writes) await writeAtomic(join(dirs[w.dir], w.name), w.content, 0o640, basename(workDir));
  crashPoint('after-ack');
  await fsp.rm(workDir, { recursive: true, force: true });
}

/**
 * Line errors as CSV that is safe to open in a spreadsheet: no cell starts a formula. The row's key
 * columns (under the partner's names) follow the line number, so the partner can find the record.
 */
export function errorsCsv(errors: readonly RowError[]): string {
  const keys = Object.keys(errors[0]?.key ?? {});
  const rows = [['line', ...keys, 'column', 'reason'], ...errors.map((e) => [String(e.line), ...keys.map((k) => e.key?.[k] ?? ''), e.column, e.reason])];
  return `${rows.map((r) => r.map(csvCell).join(',')).join('\r\n')}\r\n`;
}

export function csvCell(value: string): string {
  const safe = /^[=+\-@\t\r|%]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}
