/**
 * The map step: a CSV record (strings) -> typed values in mapping order, by the partner's field mapping.
 * Values are typed here, never by csv-parse's casting (which turns `0x10` into 0 and `00123` into 123).
 * Row problems are values: collected with line, column and reason, never thrown per row.
 */
import { reject } from './errors.js';
import type { FieldSpec } from './mapping.js';

export interface RowError {
  line: number;
  column: string;
  reason: string;
}

export type Value = string | number | null;
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
  const v = field.type === 'string' ? raw : raw.trim();
  if (v === '') return field.required ? new Bad('is required but empty') : null;
  switch (field.type) {
    case 'string':
      return field.maxLength !== undefined && v.length > field.maxLength ? new Bad(`is longer than ${field.maxLength} characters`) : v;
    case 'integer': {
      if (!isDigits(v, v.charCodeAt(0) === 43 || v.charCodeAt(0) === 45 ? 1 : 0)) return new Bad('is not an integer');
      const n = Number(v);
      return Number.isSafeInteger(n) ? n : new Bad('is out of range');
    }
    case 'amount':
      return toMinorUnits(v, field.scale ?? 2);
    case 'datetime':
      return toUtc(v);
    case 'date': {
      const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v);
      return m && validDate(+m[1]!, +m[2]!, +m[3]!) ? v : new Bad('is not a date (YYYY-MM-DD)');
    }
    case 'boolean': {
      const l = v.toLowerCase();
      return TRUE.has(l) ? 1 : FALSE.has(l) ? 0 : new Bad('is not a boolean (true/false, yes/no, 1/0)');
    }
    case 'currency':
      return /^[A-Z]{3}$/.test(v) && CURRENCIES.has(v) ? v : new Bad('is not an ISO-4217 currency code');
    case 'enum':
      return field.values!.includes(v) ? v : new Bad(`is not one of ${field.values!.join(', ')}`);
  }
}

/** "12.34" at scale 2 -> 1234. More decimals than the scale are refused unless they are zeros. */
export function toMinorUnits(v: string, scale: number): number | Bad {
  const m = /^([+-])?(\d+)(?:\.(\d+))?$/.exec(v);
  if (!m) return new Bad('is not a decimal amount');
  const frac = (m[3] ?? '').replace(/0+$/, '');
  if (frac.length > scale) return new Bad(`has more than ${scale} decimal places`);
  const n = Number(m[2]! + frac.padEnd(scale, '0'));
  if (!Number.isSafeInteger(n)) return new Bad('is out of range');
  return m[1] === '-' ? -n : n;
}

/** True when v[from..] is one or more ASCII digits. A loop, not a regex: this runs for every cell. */
function isDigits(v: string, from: number, to = v.length): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) {
    const c = v.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

const num2 = (v: string, i: number) => (v.charCodeAt(i) - 48) * 10 + v.charCodeAt(i + 1) - 48;

/** The common case, already canonical: `YYYY-MM-DDTHH:MM:SSZ`, checked without a regex or a Date. */
function canonicalUtc(v: string): boolean {
  if (v.length !== 20 || v[4] !== '-' || v[7] !== '-' || v[10] !== 'T' || v[13] !== ':' || v[16] !== ':' || v[19] !== 'Z') return false;
  if (!isDigits(v, 0, 4) || !isDigits(v, 5, 7) || !isDigits(v, 8, 10) || !isDigits(v, 11, 13) || !isDigits(v, 14, 16) || !isDigits(v, 17, 19)) return false;
  return validDate(Number(v.slice(0, 4)), num2(v, 5), num2(v, 8)) && num2(v, 11) < 24 && num2(v, 14) < 60 && num2(v, 17) < 60;
}

/** ISO-8601 with `Z` or an offset -> UTC `Z`. A local time without an offset is ambiguous and refused. */
export function toUtc(v: string): string | Bad {
  if (canonicalUtc(v)) return v;
  const m = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/i.exec(v);
  if (!m || !validDate(+m[1]!, +m[2]!, +m[3]!) || +m[4]! > 23 || +m[5]! > 59 || +(m[6] ?? 0) > 59) {
    return new Bad('is not an ISO-8601 date-time with Z or an offset');
  }
  const offset = m[8]!.toUpperCase() === 'Z' ? 'Z' : m[8]!.replace(/^([+-]\d{2})(\d{2})$/, '$1:$2');
  const ms = m[7] ? m[7].slice(0, 4).padEnd(4, '0') : '';
  const t = Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6] ?? '00'}${ms}${offset}`);
  if (Number.isNaN(t)) return new Bad('is not an ISO-8601 date-time with Z or an offset');
  const iso = new Date(t).toISOString();
  return ms ? iso : iso.replace('.000Z', 'Z');
}

export interface MapStats {
  rows: number;
  badRows: number;
  errorCount: number;
  errors: RowError[];
  /** our column -> sum over rows; undefined once a value in it could not be read */
  sums: Record<string, number | undefined>;
}

export class RowMapper {
  readonly stats: MapStats;
  private index: number[];
  private readonly totalIdx: number[];

  constructor(private readonly fields: readonly FieldSpec[], totals: readonly string[], private readonly maxReported: number) {
    // Without a header the mapping's partner column is a 1-based column number.
    this.index = fields.map((f) => Number(f.partner) - 1);
    this.totalIdx = totals.map((t) => fields.findIndex((f) => f.ours === t));
    this.stats = { rows: 0, badRows: 0, errorCount: 0, errors: [], sums: Object.fromEntries(totals.map((t) => [t, 0])) };
  }

  /** Resolves each mapped column by the partner's header name. A Map, so `__proto__` is just a name. */
  header(record: readonly string[]): void {
    const pos = new Map<string, number>();
    record.forEach((name, i) => {
      const key = name.trim();
      if (pos.has(key) && this.fields.some((f) => f.partner === key)) throw reject('MALFORMED_CSV', `line 1: column "${key}" appears twice in the header`, { line: 1 });
      pos.set(key, i);
    });
    const missing = this.fields.filter((f) => !pos.has(f.partner)).map((f) => f.partner);
    if (missing.length) throw reject('MISSING_COLUMN', `line 1: the header lacks ${missing.map((m) => `"${m}"`).join(', ')}`, { line: 1, missing });
    this.index = this.fields.map((f) => pos.get(f.partner)!);
  }

  /**
   * The typed values in mapping order, or undefined for a bad row (its errors are recorded).
   * The record is `cells[offset .. offset + width]`: records travel in flat batches between threads.
   */
  map(cells: readonly string[], offset: number, width: number, line: number): Value[] | undefined {
    this.stats.rows++;
    const out: Value[] = new Array(this.fields.length);
    let bad = false;
    for (let i = 0; i < this.fields.length; i++) {
      const field = this.fields[i]!;
      const at = this.index[i]!;
      const raw = at < width ? cells[offset + at] : undefined;
      const v = raw === undefined ? new Bad('is missing') : convert(field, raw);
      if (v instanceof Bad) {
        bad = true;
        this.addError(line, field, raw, v.reason);
        out[i] = null;
      } else out[i] = v;
    }
    for (const i of this.totalIdx) {
      const column = this.fields[i]!.ours;
      const sum = this.stats.sums[column];
      if (sum === undefined) continue;
      // A value that could not be read makes the sum unverifiable; an empty one counts as 0.
      const unreadable = out[i] === null && !!cells[offset + this.index[i]!]?.trim();
      this.stats.sums[column] = unreadable ? undefined : sum + ((out[i] as number | null) ?? 0);
    }
    if (bad) {
      this.stats.badRows++;
      return undefined;
    }
    return out;
  }

  private addError(line: number, field: FieldSpec, raw: string | undefined, reason: string): void {
    this.stats.errorCount++;
    if (this.stats.errors.length >= this.maxReported) return;
    // PII values never leave this function: not in logs, not in reports.
    const shown = raw === undefined || raw === '' ? '' : field.pii ? 'the value (hidden: personal data) ' : `"${raw.length > 60 ? `${raw.slice(0, 60)}…` : raw}" `;
    this.stats.errors.push({ line, column: field.partner, reason: `${shown}${reason}`.replace(/^./, (c) => c.toUpperCase()) });
  }
}
