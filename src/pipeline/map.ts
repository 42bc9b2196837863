/**
 * The map step: a CSV record (strings) -> typed values in mapping order, by the partner's field mapping.
 * Values are typed here, never by csv-parse's casting (which turns `0x10` into 0 and `00123` into 123).
 * Row problems are values: collected with line, column and reason, never thrown per row.
 */
import { reject } from '../errors.js';
import type { FieldSpec } from '../config/mapping.js';
import { visible } from '../visible.js';

export interface RowError {
  line: number;
  column: string;
  reason: string;
  /** the row's key columns (partner name -> value), so the partner can find the record; personal data is never shown */
  key?: Record<string, string>;
}

/** Integers and minor units: a number below 2^53, a bigint beyond it (within int64, what SQLite stores). */
export type Value = string | number | bigint | null;
export type Exact = number | bigint;
type Converted = Value | Bad;
class Bad {
  constructor(readonly reason: string) {}
}

const CURRENCIES = new Set(Intl.supportedValuesOf('currency'));
const TRUE = new Set(['true', 't', 'yes', 'y', '1']);
const FALSE = new Set(['false', 'f', 'no', 'n', '0']);
const DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function validDate(y: number, m: number, d: number): boolean {
  const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  return m >= 1 && m <= 12 && d >= 1 && d <= (m === 2 && !leap ? 28 : DAYS[m - 1]!);
}

export function convert(field: FieldSpec, raw: string): Converted {
  return converter(field)(raw);
}

/** Each field's check alone, built once: why a raw value is refused, or undefined (X12's element errors). */
export function fieldChecks(fields: readonly FieldSpec[]): ((raw: string) => string | undefined)[] {
  return fields.map((field) => {
    const convert = converter(field);
    return (raw) => {
      const v = convert(raw);
      return v instanceof Bad ? v.reason : undefined;
    };
  });
}

const NOT_AMOUNT = new Bad('is not a decimal amount');
const NOT_INTEGER = new Bad('is not an integer');
const NOT_DATETIME = new Bad('is not an ISO-8601 date-time with Z or an offset');
/** well formed, but no day of the calendar (2025-11-31, 2025-02-29) */
const NOT_REAL_DATE = new Bad('is not a real date');

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
/** What SQLite's INTEGER holds: 64 bits, for an amount in minor units. */
function outOfRange(scale: number): Bad {
  return new Bad(`is out of range (${fromMinorUnits(INT64_MIN, scale)} to ${fromMinorUnits(INT64_MAX, scale)})`);
}

/** 1234 at scale 2 -> "12.34", exactly (toMinorUnits the other way round). */
export function fromMinorUnits(n: Exact, scale: number): string {
  const text = String(n);
  if (scale === 0) return text;
  const sign = text.startsWith('-') ? '-' : '';
  const digits = text.slice(sign.length).padStart(scale + 1, '0');
  return `${sign}${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
}

/** A number while a double holds it exactly, a bigint beyond: one form per value, so `===` compares. */
export const exact = (n: bigint): Exact => (n >= -Number.MAX_SAFE_INTEGER && n <= Number.MAX_SAFE_INTEGER ? Number(n) : n);

const int64 = (n: bigint, scale = 0): Exact | Bad => (n < INT64_MIN || n > INT64_MAX ? outOfRange(scale) : exact(n));

/** An exact sum: in a double while it stays below 2^53 (the common case, and cheap), in a bigint beyond. */
export function addExact(a: Exact, b: Exact): Exact {
  if (typeof a === 'number' && typeof b === 'number') {
    const s = a + b; // correctly rounded, so exact whenever the true sum is below 2^53
    if (s <= Number.MAX_SAFE_INTEGER && s >= -Number.MAX_SAFE_INTEGER) return s;
  }
  return exact(BigInt(a) + BigInt(b));
}

/** A field's conversion, built once per file: the per-cell path makes no lookups it can avoid. */
function converter(field: FieldSpec): (raw: string) => Converted {
  const empty = field.required ? new Bad('is required but empty') : null;
  const typed = typedConverter(field);
  if (field.type === 'string') return (raw) => (raw === '' ? empty : typed(raw));
  return (raw) => {
    const v = trim(raw);
    return v === '' ? empty : typed(v);
  };
}

function typedConverter(field: FieldSpec): (v: string) => Converted {
  switch (field.type) {
    case 'string': {
      const max = field.maxLength;
      return max === undefined ? (v) => v : (v) => (v.length > max ? new Bad(`is longer than ${max} characters`) : v);
    }
    case 'integer':
      return (v) => {
        if (!isDigits(v, v.charCodeAt(0) === 43 || v.charCodeAt(0) === 45 ? 1 : 0)) return NOT_INTEGER;
        const n = Number(v);
        return Number.isSafeInteger(n) ? n : int64(BigInt(v));
      };
    case 'amount': {
      const scale = field.scale ?? 2;
      return (v) => toMinorUnits(v, scale);
    }
    case 'datetime':
      return toUtc;
    case 'date':
      return (v) => {
        const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v);
        if (!m) return new Bad('is not a date (YYYY-MM-DD)');
        return validDate(+m[1]!, +m[2]!, +m[3]!) ? v : NOT_REAL_DATE;
      };
    case 'boolean':
      return (v) => {
        const l = v.toLowerCase();
        return TRUE.has(l) ? 1 : FALSE.has(l) ? 0 : new Bad('is not a boolean (true/false, yes/no, 1/0)');
      };
    case 'currency':
      return (v) => (CURRENCIES.has(v) ? v : new Bad('is not an ISO-4217 currency code'));
    case 'enum': {
      const values = new Set(field.values);
      return (v) => (values.has(v) ? v : new Bad(`is not one of ${field.values!.join(', ')}`));
    }
  }
}

/** `trim()` without its cost when there is nothing to trim: printable ASCII at both ends. */
function trim(s: string): string {
  const a = s.charCodeAt(0);
  const z = s.charCodeAt(s.length - 1);
  return a > 32 && a < 127 && z > 32 && z < 127 ? s : s.trim();
}

/**
 * "12.34" at scale 2 -> 1234. More decimals than the scale are refused unless they are zeros.
 * Digit by digit in a double, exact below 2^53; beyond it the text is read again as a bigint. A value
 * must fit in 64 bits; a sum (`bounded` false) need not.
 */
export function toMinorUnits(v: string, scale: number, bounded = true): Exact | Bad {
  const sign = v.charCodeAt(0);
  let i = sign === 43 || sign === 45 ? 1 : 0;
  const whole = i;
  let n = 0;
  for (let c = v.charCodeAt(i); c >= 48 && c <= 57; c = v.charCodeAt(++i)) n = n * 10 + (c - 48);
  if (i === whole) return NOT_AMOUNT;
  let decimals = 0;
  let excess = false;
  if (i < v.length) {
    if (v.charCodeAt(i) !== 46 || i + 1 === v.length) return NOT_AMOUNT;
    for (i++; i < v.length; i++) {
      const c = v.charCodeAt(i);
      if (c < 48 || c > 57) return NOT_AMOUNT;
      if (decimals < scale) {
        n = n * 10 + (c - 48);
        decimals++;
      } else if (c !== 48) excess = true;
    }
  }
  if (excess) return new Bad(`has more than ${scale} decimal places`);
  for (; decimals < scale; decimals++) n *= 10;
  // Every step grew n, so a result below 2^53 had no rounding on the way; one beyond may have.
  if (!Number.isSafeInteger(n)) return bigMinorUnits(v, scale, bounded);
  return sign === 45 && n !== 0 ? -n : n;
}

/** toMinorUnits for text already checked, whose value is beyond 2^53. */
function bigMinorUnits(v: string, scale: number, bounded: boolean): Exact | Bad {
  const [whole = '', decimals = ''] = v.replace(/^[+-]/, '').split('.');
  const n = BigInt(whole + decimals.slice(0, scale).padEnd(scale, '0')) * (v.startsWith('-') ? -1n : 1n);
  return bounded ? int64(n, scale) : exact(n);
}

/** True when v[from..] is one or more ASCII digits. A loop, not a regex: this runs for every cell. */
function isDigits(v: string, from: number): boolean {
  if (v.length <= from) return false;
  for (let i = from; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** The digit at v[i], or a negative number large enough to make any sum of digits below it negative. */
const digit = (v: string, i: number) => {
  const d = v.charCodeAt(i) - 48;
  return d >= 0 && d <= 9 ? d : -1e6;
};
const num2 = (v: string, i: number) => digit(v, i) * 10 + digit(v, i + 1);

/** The common case, already canonical: `YYYY-MM-DDTHH:MM:SSZ`, checked without a regex or a Date. */
function canonicalUtc(v: string): boolean {
  if (v.length !== 20 || v.charCodeAt(4) !== 45 || v.charCodeAt(7) !== 45 || v.charCodeAt(10) !== 84 || v.charCodeAt(13) !== 58 || v.charCodeAt(16) !== 58 || v.charCodeAt(19) !== 90) return false;
  const year = num2(v, 0) * 100 + num2(v, 2);
  const hour = num2(v, 11);
  const minute = num2(v, 14);
  const second = num2(v, 17);
  return year >= 0 && validDate(year, num2(v, 5), num2(v, 8)) && hour >= 0 && hour < 24 && minute >= 0 && minute < 60 && second >= 0 && second < 60;
}

/** ISO-8601 with `Z` or an offset -> UTC `Z`. A local time without an offset is ambiguous and refused. */
export function toUtc(v: string): string | Bad {
  if (canonicalUtc(v)) return v;
  const m = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/i.exec(v);
  if (!m || +m[4]! > 23 || +m[5]! > 59 || +(m[6] ?? 0) > 59) return NOT_DATETIME;
  if (!validDate(+m[1]!, +m[2]!, +m[3]!)) return NOT_REAL_DATE;
  const offset = m[8]!.toUpperCase() === 'Z' ? 'Z' : m[8]!.replace(/^([+-]\d{2})(\d{2})$/, '$1:$2');
  const ms = m[7] ? m[7].slice(0, 4).padEnd(4, '0') : '';
  const t = Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6] ?? '00'}${ms}${offset}`);
  if (Number.isNaN(t)) return NOT_DATETIME;
  const iso = new Date(t).toISOString();
  return ms ? iso : iso.replace('.000Z', 'Z');
}

export interface MapStats {
  rows: number;
  badRows: number;
  errorCount: number;
  errors: RowError[];
  /** our column -> exact sum over rows; undefined once a value in it could not be read */
  sums: Record<string, Exact | undefined>;
}

/** Stats of parts of one file mapped apart (one per staging thread), as if mapped in one go. */
export function mergeStats(parts: readonly MapStats[], totals: readonly string[], maxReported: number): MapStats {
  const out: MapStats = { rows: 0, badRows: 0, errorCount: 0, errors: [], sums: Object.fromEntries(totals.map((t) => [t, 0])) };
  for (const p of parts) {
    out.rows += p.rows;
    out.badRows += p.badRows;
    out.errorCount += p.errorCount;
    out.errors.push(...p.errors);
    for (const [column, sum] of Object.entries(p.sums)) {
      const before = out.sums[column];
      out.sums[column] = before === undefined || sum === undefined ? undefined : addExact(before, sum);
    }
  }
  // Each part kept its first errors by line; the first of all of them are among those.
  out.errors = out.errors.sort((a, b) => a.line - b.line).slice(0, maxReported);
  return out;
}

export class RowMapper {
  private rows = 0;
  private badRows = 0;
  private errorCount = 0;
  private readonly errors: RowError[] = [];
  private index: number[];
  private readonly convert: Array<(raw: string) => Converted>;
  private readonly totalIdx: number[];
  /** by control-total column, in `totals` order */
  private readonly sums: Array<Exact | undefined>;
  /** the fields of the flow's key that are no personal data, by position in `fields` */
  private readonly keyIdx: number[];

  /** `keys`: the flow's key (our names), shown with each row error */
  constructor(private readonly fields: readonly FieldSpec[], private readonly totals: readonly string[], private readonly maxReported: number, keys: readonly string[] = []) {
    // Without a header the mapping's partner column is a 1-based column number.
    this.index = fields.map((f) => Number(f.partner) - 1);
    this.convert = fields.map(converter);
    this.totalIdx = totals.map((t) => fields.findIndex((f) => f.ours === t));
    this.sums = totals.map(() => 0);
    this.keyIdx = keys.map((k) => fields.findIndex((f) => f.ours === k)).filter((i) => i >= 0 && !fields[i]!.pii);
  }

  get stats(): MapStats {
    const sums = Object.fromEntries(this.totals.map((t, i) => [t, this.sums[i]]));
    return { rows: this.rows, badRows: this.badRows, errorCount: this.errorCount, errors: [...this.errors], sums };
  }

  /**
   * Resolves each mapped column by the partner's header name. A Map, so `__proto__` is just a name.
   * `delimiter`, the flow's, is named when the header looks split at another one.
   */
  header(record: readonly string[], delimiter?: string): void {
    const pos = new Map<string, number>();
    record.forEach((name, i) => {
      const key = name.trim();
      if (pos.has(key) && this.fields.some((f) => f.partner === key)) throw reject('MALFORMED_CSV', `line 1: column "${visible(key)}" appears twice in the header`, { line: 1 });
      pos.set(key, i);
    });
    const missing = this.fields.filter((f) => !pos.has(f.partner)).map((f) => f.partner);
    if (missing.length) throw reject('MISSING_COLUMN', `line 1: the header lacks ${missing.map((m) => `"${m}"`).join(', ')}${delimiterHint(record, delimiter)}`, { line: 1, missing });
    this.index = this.fields.map((f) => pos.get(f.partner)!);
  }

  /**
   * Appends the record's typed values, in mapping order, to `out` and returns true; a bad row appends
   * nothing, its errors are recorded, and the answer is false.
   */
  map(record: readonly string[], line: number, out: Value[]): boolean {
    this.rows++;
    const start = out.length;
    let bad = false;
    for (let i = 0; i < this.fields.length; i++) {
      const raw = record[this.index[i]!];
      const v = raw === undefined ? new Bad('is missing') : this.convert[i]!(raw);
      if (v instanceof Bad) {
        bad = true;
        this.addError(line, this.fields[i]!, raw, v.reason, record);
        out.push(null);
      } else out.push(v);
    }
    for (let t = 0; t < this.totalIdx.length; t++) {
      const sum = this.sums[t];
      if (sum === undefined) continue;
      // A value that could not be read makes the sum unverifiable; an empty one counts as 0.
      const i = this.totalIdx[t]!;
      const value = out[start + i] as Exact | null;
      const unreadable = value === null && !!record[this.index[i]!]?.trim();
      this.sums[t] = unreadable ? undefined : value === null ? sum : addExact(sum, value);
    }
    if (!bad) return true;
    this.badRows++;
    out.length = start;
    return false;
  }

  /**
   * A record that could not be read into fields at all (an NDJSON line that is not JSON): a bad row
   * with its reason. Its values are unknown, so the control totals cannot be checked.
   */
  unreadable(line: number, reason: string): void {
    this.rows++;
    this.badRows++;
    this.errorCount++;
    if (this.errors.length < this.maxReported) this.errors.push({ line, column: '', reason });
    this.sums.fill(undefined);
  }

  private addError(line: number, field: FieldSpec, raw: string | undefined, reason: string, record: readonly string[]): void {
    this.errorCount++;
    if (this.errors.length >= this.maxReported) return;
    // PII values never leave this function: not in logs, not in reports.
    const shown = raw === undefined || raw === '' ? '' : field.pii ? 'the value (hidden: personal data) ' : `"${short(raw)}" `;
    const error: RowError = { line, column: field.partner, reason: `${shown}${reason}`.replace(/^./, (c) => c.toUpperCase()) };
    if (this.keyIdx.length) error.key = Object.fromEntries(this.keyIdx.map((i) => [this.fields[i]!.partner, short(record[this.index[i]!] ?? '')]));
    this.errors.push(error);
  }
}

const short = (raw: string) => visible(raw.length > 60 ? `${raw.slice(0, 60)}…` : raw);

/** A header of one column holding another common delimiter: the file is likely delimited by that one. */
function delimiterHint(record: readonly string[], delimiter: string | undefined): string {
  const other = [';', ',', '\t', '|'].find((d) => d !== delimiter && record.length === 1 && record[0]!.includes(d));
  if (!other || !delimiter) return '';
  const name = (d: string) => (d === '\t' ? 'a tab' : `"${d}"`);
  return `; the header is a single column: the file seems to be delimited by ${name(other)}, but this flow's csv.delimiter is ${name(delimiter)}`;
}
