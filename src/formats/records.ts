/**
 * The record-format seam: how a staging thread turns a chunk of a line format into records, strings in
 * mapping order, for the map step. CSV has its own reader (csv/parse.ts); every other format is one
 * reader here, and the pipeline after it is the same for all.
 */
import type { FieldSpec } from '../config/mapping.js';
import type { FixedLayout } from '../config/config.js';
import type { Chunk } from './csv/chunk.js';
import { fixedReader } from './fixed.js';
import { ndjsonReader } from './ndjson.js';
import { rowsReader } from './xlsx.js';

export type LineFormat =
  | { kind: 'ndjson'; maxLineBytes: number }
  | { kind: 'fixed'; maxLineBytes: number; layout: FixedLayout }
  /** rows of a workbook, read in the main thread (xlsx.ts): JSON arrays in mapping order */
  | { kind: 'rows'; maxLineBytes: number };

export interface LineReader {
  /**
   * `onRecord` for each record, its values in mapping order; `onBad` for a line that cannot be read
   * as a record at all (a row error, named by line). Throws what rejects the whole file.
   */
  read(chunk: Chunk, onRecord: (record: string[], line: number) => void, onBad: (line: number, reason: string) => void): void;
}

export function lineReader(format: LineFormat, fields: readonly FieldSpec[]): LineReader {
  switch (format.kind) {
    case 'ndjson':
      return ndjsonReader(fields, format.maxLineBytes);
    case 'fixed':
      return fixedReader(fields, format.layout, format.maxLineBytes);
    case 'rows':
      return rowsReader(format.maxLineBytes);
  }
}
