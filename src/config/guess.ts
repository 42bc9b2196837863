/**
 * A mapping skeleton from a sample file: one field per header column, its type guessed from the
 * sample's values, with a note on each guess. Only a start for the engineer, who corrects it: the
 * pipeline itself never guesses a type.
 */

export interface GuessedField {
  ours: string;
  partner: string;
  type: string;
  required: boolean;
  pii: boolean;
  notes: string;
}

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?\d+\.(\d+)$/;
const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;
const BOOLEAN = new Set(['true', 'false', 'yes', 'no', 'y', 'n', 't', 'f']);
const CURRENCIES = new Set(Intl.supportedValuesOf('currency'));
const PERSONAL = /e-?mail|phone|mobile|name|address|street|birth|iban|contact/i;
const MAX_ENUM = 8;

/** `UnitCost` -> `unit_cost`, `Order Number` -> `order_number`: a column name our tables accept. */
export function columnName(header: string, taken: Set<string>): string {
  let name = header.trim().replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '') || 'column';
  if (/^\d/.test(name)) name = `c_${name}`;
  let unique = name;
  for (let i = 2; taken.has(unique); i++) unique = `${name}_${i}`;
  taken.add(unique);
  return unique;
}

/** One column's type from its non-empty sample values, and why. */
export function guessType(values: readonly string[]): { type: string; note: string } {
  const n = values.length;
  const all = (test: (v: string) => boolean) => n > 0 && values.every(test);
  const of = `all ${n} sample values`;
  if (n === 0) return { type: 'string', note: 'guessed string: the sample has no values in this column' };
  if (all((v) => INTEGER.test(v))) {
    if (values.some((v) => /^[+-]?0\d/.test(v))) return { type: 'string', note: `guessed string: ${of} are digits, some with leading zeros (a code, not a number?)` };
    return { type: 'integer', note: `guessed integer: ${of} are whole numbers` };
  }
  if (all((v) => INTEGER.test(v) || DECIMAL.test(v))) {
    const scale = Math.max(...values.map((v) => DECIMAL.exec(v)?.[1]?.length ?? 0));
    return { type: `amount:${scale}`, note: `guessed amount:${scale}: ${of} are decimals with up to ${scale} places (stored in minor units)` };
  }
  if (all((v) => DATETIME.test(v))) return { type: 'datetime', note: `guessed datetime: ${of} are ISO-8601 times with an offset` };
  if (all((v) => DATE.test(v))) return { type: 'date', note: `guessed date: ${of} are YYYY-MM-DD` };
  if (all((v) => BOOLEAN.has(v.toLowerCase()))) return { type: 'boolean', note: `guessed boolean: ${of} are yes/no words` };
  if (all((v) => /^[A-Z]{3}$/.test(v) && CURRENCIES.has(v))) return { type: 'currency', note: `guessed currency: ${of} are ISO-4217 codes` };
  const distinct = [...new Set(values)];
  if (n >= 2 * distinct.length && distinct.length <= MAX_ENUM && distinct.every((v) => /^[A-Za-z0-9_-]+$/.test(v))) {
    return { type: `enum:${distinct.sort().join('|')}`, note: `guessed enum: only ${distinct.length} distinct values in ${n} (add any the sample lacks)` };
  }
  const longest = Math.max(...values.map((v) => v.length));
  return { type: 'string', note: `guessed string: free text, the longest sample value has ${longest} characters` };
}

export function guessMapping(header: readonly string[], rows: readonly (readonly string[])[]): GuessedField[] {
  const taken = new Set<string>();
  return header.map((partner, i) => {
    const cells = rows.map((r) => (r[i] ?? '').trim());
    const values = cells.filter((v) => v !== '');
    const { type, note } = guessType(values);
    const required = values.length > 0 && values.length === cells.length;
    const pii = PERSONAL.test(partner);
    const notes = [note, required ? 'required: no empty value in the sample' : '', pii ? 'pii: the name suggests personal data' : ''].filter(Boolean).join('; ');
    return { ours: columnName(partner, taken), partner, type, required, pii, notes };
  });
}

/** The mapping file (mapping.ts reads it back): a CSV an analyst can keep in a spreadsheet. */
export function mappingCsv(fields: readonly GuessedField[]): string {
  const cell = (v: string) => (/[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  const lines = fields.map((f) => [f.ours, f.partner, f.type, f.required ? 'yes' : '', f.pii ? 'yes' : '', f.notes].map(cell).join(','));
  return `${['ours', 'partner', 'type', 'required', 'pii', 'notes'].join(',')}\n${lines.join('\n')}\n`;
}

