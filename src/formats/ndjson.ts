/**
 * NDJSON (JSON Lines): one JSON object per line. The mapping's `partner` is a path into the object
 * (`item.sku`, `lines.0.qty`); values are handed to the map step as the text of the value, so the
 * mapping types them exactly as it types CSV cells. A line that is not a JSON object is a bad row.
 */
import { parseExact } from '../json.js';
import type { FieldSpec } from '../config/mapping.js';
import type { Chunk } from './csv/chunk.js';
import { JsonPaths } from './json-paths.js';
import { eachLine } from './lines.js';
import type { LineReader } from './records.js';
import { visible } from '../visible.js';

export function ndjsonReader(fields: readonly FieldSpec[], maxLineBytes: number): LineReader {
  const paths = fields.map((f) => f.partner.split('.'));
  const fast = new JsonPaths(paths, numberText);
  return {
    read(chunk: Chunk, onRecord, onBad) {
      eachLine(chunk, maxLineBytes, (text, line, byteStart) => {
        const plain = byteStart === undefined ? undefined : fast.read(chunk.bytes, byteStart, text);
        if (plain) return onRecord(plain, line);
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch (err) {
          return onBad(line, `The line is not JSON: ${visible((err as Error).message)}`);
        }
        if (typeof value !== 'object' || value === null || Array.isArray(value)) return onBad(line, 'The line is not a JSON object');
        let record = new Array<string>(paths.length);
        for (let i = 0; i < paths.length; i++) record[i] = cell(at(value, paths[i]!));
        // A number a double cannot hold exactly is read again from the text, digit for digit.
        if (record.some((c) => c === INEXACT)) record = paths.map((p) => cell(at(parseExact(text), p), true));
        onRecord(record, line);
      });
    },
  };
}

const INEXACT = '\u0000inexact';

function numberText(raw: string): string | undefined {
  const text = cell(Number(raw));
  return text === INEXACT ? undefined : text;
}

/** The value at a path; undefined where the path leads nowhere. Own properties only: `__proto__` is just a key. */
function at(value: unknown, path: readonly string[]): unknown {
  let v = value;
  for (const key of path) {
    if (typeof v !== 'object' || v === null || !Object.hasOwn(v, key)) return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

/** A JSON value as the text the map step types: null and absent are empty, objects their JSON. */
function cell(v: unknown, exact = false): string {
  switch (typeof v) {
    case 'string':
      return v;
    case 'number': {
      const t = String(v);
      // Fifteen characters hold at most fifteen digits: exact in a double, the common case, no regex.
      if (exact || Number.isSafeInteger(v) || (t.length <= 15 && !t.includes('e'))) return t;
      return t.includes('e') || t.replace(/[-.]/g, '').replace(/^0+/, '').length > 15 ? INEXACT : t;
    }
    case 'bigint':
    case 'boolean':
      return String(v);
    case 'object':
      return v === null ? '' : JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? String(x) : x));
    default:
      return '';
  }
}
