/**
 * The field-mapping file: a CSV an analyst can keep in a spreadsheet, in the playbook's format
 * `ours,partner,type,notes`, with optional columns `required` and `pii` (yes/no).
 * `type` is a name with an optional parameter after a colon:
 *   string[:maxLength]  integer  amount[:scale] (decimal -> integer minor units, default scale 2)
 *   datetime (ISO-8601 with Z or offset, stored as UTC Z)  date (YYYY-MM-DD)  boolean
 *   currency (ISO-4217)  enum:A|B|C
 * With `header: false` in the flow's CSV dialect, `partner` is a 1-based column number. By format:
 * ndjson: a JSON path (`item.sku`); fixed: a 1-based character range, `start-end` or `start+length`;
 * x12: an element reference, a segment id and the element's two-digit position (`LIN03`, `QTY02`).
 */
import { readFileSync } from 'node:fs';
import { parse } from 'csv-parse/sync';

export type FieldType = 'string' | 'integer' | 'amount' | 'datetime' | 'date' | 'boolean' | 'currency' | 'enum';
export const FIELD_TYPES: readonly FieldType[] = ['string', 'integer', 'amount', 'datetime', 'date', 'boolean', 'currency', 'enum'];

export interface FieldSpec {
  ours: string;
  partner: string;
  type: FieldType;
  /** string: max length; amount: scale; enum: allowed values */
  maxLength?: number;
  scale?: number;
  values?: readonly string[];
  required: boolean;
  pii: boolean;
  notes: string;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const YES = new Set(['yes', 'y', 'true', '1', 'x', 'required', 'pii']);

/** Returns the fields, or throws a message naming the line; the caller adds the file and key path. */
export function loadMapping(path: string): FieldSpec[] {
  let rows: Record<string, string>[];
  try {
    rows = parse(readFileSync(path), { bom: true, columns: (h: string[]) => h.map((c) => c.trim().toLowerCase()), skip_empty_lines: true, trim: true });
  } catch (err) {
    throw new Error(`cannot read mapping: ${(err as Error).message}`, { cause: err });
  }
  if (rows.length === 0) throw new Error('mapping has no fields');
  const seen = new Set<string>();
  return rows.map((row, i) => {
    const field = parseField(row, i + 2);
    if (seen.has(field.ours)) throw new Error(`line ${i + 2}: column "${field.ours}" is mapped twice`);
    seen.add(field.ours);
    return field;
  });
}

function parseField(row: Record<string, string>, line: number): FieldSpec {
  const ours = row.ours ?? '';
  const partner = row.partner ?? '';
  if (!IDENT.test(ours)) throw new Error(`line ${line}: "ours" must be a column name (letters, digits, _), got "${ours}"`);
  if (partner === '') throw new Error(`line ${line}: "partner" is empty`);
  const [typeName = '', param] = (row.type ?? '').split(/:(.*)/s, 2).map((s) => s.trim());
  if (!FIELD_TYPES.includes(typeName as FieldType)) {
    throw new Error(`line ${line}: unknown type "${typeName}" (one of ${FIELD_TYPES.join(', ')})`);
  }
  const field: FieldSpec = {
    ours,
    partner,
    type: typeName as FieldType,
    required: YES.has((row.required ?? '').toLowerCase()),
    pii: YES.has((row.pii ?? '').toLowerCase()),
    notes: row.notes ?? '',
  };
  if (field.type === 'enum') {
    const values = (param ?? '').split('|').map((v) => v.trim()).filter(Boolean);
    if (values.length === 0) throw new Error(`line ${line}: enum needs its values, e.g. enum:NEW|USED`);
    field.values = values;
  } else if (param !== undefined && param !== '') {
    const n = Number(param);
    const max = field.type === 'amount' ? 9 : 1_000_000;
    if (!Number.isInteger(n) || n < 0 || n > max) throw new Error(`line ${line}: bad parameter "${param}" for ${field.type}`);
    if (field.type === 'string') field.maxLength = n;
    else if (field.type === 'amount') field.scale = n;
    else throw new Error(`line ${line}: type ${field.type} takes no parameter`);
  }
  if (field.type === 'amount') field.scale ??= 2;
  return field;
}

/** Characters [start, end) of a line, 0-based: `1-10` and `1+10` are both the first ten. */
export interface CharRange {
  start: number;
  end: number;
}

export function parseRange(text: string): CharRange | undefined {
  const m = /^\s*(\d+)\s*([-+])\s*(\d+)\s*$/.exec(text);
  if (!m) return undefined;
  const [start, n] = [Number(m[1]), Number(m[3])];
  const end = m[2] === '+' ? start + n - 1 : n;
  return start >= 1 && end >= start ? { start: start - 1, end } : undefined;
}

/** The same set of column names (a key), in any order. */
export function sameColumns(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((c) => b.includes(c));
}

/** An X12 element reference: segment LIN, element 3 for `LIN03`. */
export interface ElementRef {
  segment: string;
  element: number;
}

/** `LIN03` -> segment LIN, element 3; undefined when it is not a segment id and two digits. */
export function parseElementRef(text: string): ElementRef | undefined {
  const m = /^([A-Z][A-Z0-9]{1,2})(\d{2})$/.exec(text.trim().toUpperCase());
  return m ? { segment: m[1] ?? '', element: Number(m[2]) } : undefined;
}
