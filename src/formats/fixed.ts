/**
 * Fixed-width records (mainframe extracts): the mapping's `partner` is a character range of the line.
 * With a record-type column, header records are skipped, the trailer is read apart (its count and sums
 * can be the control totals), and a record of any other type is a bad row.
 */
import type { FieldSpec } from '../config/mapping.js';
import { parseRange } from '../config/mapping.js';
import type { FixedLayout } from '../config/config.js';
import type { Chunk } from './csv/chunk.js';
import { eachLine } from './lines.js';
import type { LineReader } from './records.js';
import { reject } from '../errors.js';
import { visible } from '../visible.js';

export function fixedReader(fields: readonly FieldSpec[], layout: FixedLayout, maxLineBytes: number): LineReader {
  const ranges = fields.map((f) => parseRange(f.partner)!);
  const type = layout.recordType;
  const known = type ? [type.data, type.header, type.trailer].filter((t): t is string => !!t) : [];
  return {
    read(chunk: Chunk, onRecord, onBad) {
      eachLine(chunk, maxLineBytes, (text, line) => {
        if (type) {
          const t = text.slice(type.start - 1, type.start - 1 + type.length).trim();
          if (t === type.header || t === type.trailer) return;
          if (t !== type.data) return onBad(line, `The record type "${visible(t)}" (characters ${type.start}-${type.start + type.length - 1}) is none of ${known.map((k) => `"${k}"`).join(', ')}`);
        }
        onRecord(ranges.map((r) => text.slice(r.start, r.end).trim()), line);
      });
    },
  };
}

/** The control totals a trailer record states: its record count, and each sum as written. */
export interface Trailer {
  line: number;
  records: number;
  sums: Record<string, string>;
}

/** Reads the file's last record as its trailer; rejects BAD_TRAILER when it is none, or unreadable. */
export function readTrailer(last: { text: string; line: number } | undefined, layout: FixedLayout): Trailer {
  const type = layout.recordType!;
  const spec = layout.trailer!;
  if (!last) throw reject('BAD_TRAILER', 'the file is empty: the trailer record is missing');
  const { text, line } = last;
  const t = text.slice(type.start - 1, type.start - 1 + type.length).trim();
  if (t !== type.trailer) throw reject('BAD_TRAILER', `line ${line}: the last record is of type "${visible(t)}", not the trailer "${type.trailer}"`, { line });
  const count = spec.count ? text.slice(spec.count.start, spec.count.end).trim() : '';
  if (!/^\d+$/.test(count)) throw reject('BAD_TRAILER', `line ${line}: the trailer's record count (characters ${spec.count!.start + 1}-${spec.count!.end}) is not a number: "${visible(count)}"`, { line });
  const sums = Object.fromEntries(Object.entries(spec.sums).map(([column, r]) => [column, text.slice(r.start, r.end).trim()]));
  return { line, records: Number(count), sums };
}
