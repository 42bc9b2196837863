/**
 * EDI X12 interchanges, read segment by segment from a stream. The ISA segment is fixed-width (106
 * characters): its 4th character is the element separator, ISA16 the component separator, and the
 * character after ISA16 the segment terminator. The envelopes are checked as they close (IEA against
 * ISA, GE against GS, SE against ST), naming the segment number (1-based, in the interchange) and the
 * element. A broken interchange structure stops the reading (answered with a TA1); a set's or a
 * group's wrong count or control number is recorded on it and reading goes on, so the 997 can name
 * every one (the file is still rejected whole). Inside a transaction set, each "line" (the loop
 * starting at the configured segment, e.g. LIN for an 846, PO1 for an 850) becomes one row; the
 * mapping's `partner` is an element reference such as `LIN03`, and header segments (before the first
 * line) repeat onto every row of their set; a segment repeated within a loop gives its last values.
 */
import { StringDecoder } from 'node:string_decoder';
import type { ElementRef } from '../config/mapping.js';
import { reject } from '../errors.js';
import { visible } from '../visible.js';

export interface Segment {
  id: string;
  /** elements[0] is the segment id, so elements[n] is element n (e.g. LIN03 is elements[3]) */
  elements: string[];
  /** 1-based position in the interchange */
  number: number;
}

export interface Separators {
  element: string;
  component: string;
  segment: string;
}

const ISA_LENGTH = 106;

/** Element n of a segment, '' when absent. */
export const el = (seg: Segment, n: number): string => seg.elements[n] ?? '';

/** The separators fixed by the ISA segment at the start of the interchange. */
export function separators(head: string): Separators {
  if (!head.startsWith('ISA') || head.length < ISA_LENGTH) {
    throw reject('BAD_ENVELOPE', 'segment 1: the file does not start with an ISA segment of 106 characters');
  }
  return { element: head.charAt(3), component: head.charAt(104), segment: head.charAt(105) };
}

/** The interchange's segments, one at a time; line breaks after a terminator are ignored. */
export async function* readSegments(source: AsyncIterable<Buffer | string> | Iterable<Buffer | string>, maxSegmentBytes = 1 << 20): AsyncGenerator<Segment> {
  let sep: Separators | undefined;
  let pending = '';
  let number = 0;
  const decoder = new StringDecoder('utf8'); // a character split between two chunks stays whole
  for await (const chunk of source) {
    pending += typeof chunk === 'string' ? chunk : decoder.write(chunk);
    if (!sep) {
      const head = pending.replace(/^\s+/, '');
      if (head.length < ISA_LENGTH) continue;
      sep = separators(head);
      pending = head;
    }
    let end: number;
    while ((end = pending.indexOf(sep.segment)) >= 0) {
      if (end > maxSegmentBytes) throw tooLong(number + 1, maxSegmentBytes);
      const text = pending.slice(0, end).replace(/^[\r\n]+/, '');
      pending = pending.slice(end + 1);
      if (text === '') continue;
      number += 1;
      const elements = text.split(sep.element);
      yield { id: elements[0] ?? '', elements, number };
    }
    if (pending.length > maxSegmentBytes) throw tooLong(number + 1, maxSegmentBytes);
  }
  if (!sep) throw reject('BAD_ENVELOPE', 'segment 1: the file does not start with an ISA segment of 106 characters');
  if (pending.trim() !== '') throw reject('BAD_ENVELOPE', `segment ${number + 1}: the file ends inside a segment (no terminator "${visible(sep.segment)}")`);
}

const tooLong = (segment: number, max: number) => reject('LIMIT_EXCEEDED', `segment ${segment}: longer than ${max} bytes (the flow's max_record_bytes)`, { segment });

/** One element problem inside a transaction set, as the 997's AK3/AK4 (or 999's IK3/IK4) name it. */
export interface ElementError {
  segmentId: string;
  /** position of the segment within its transaction set, ST being 1 */
  position: number;
  element: number;
  /** X12 element syntax error code: 1 mandatory missing, 5 too long, 6 invalid character, 7 invalid code value, 8 invalid date */
  code: string;
  value: string;
}

/** A set's or a group's envelope error: its AK5 (set) or AK9 (group) code, and the words for the partner. */
export interface EnvelopeError {
  code: string;
  message: string;
}

export interface Group {
  functionalId: string; // GS01
  control: string; // GS06
  error?: EnvelopeError;
}

export interface TransactionSet {
  type: string; // ST01, e.g. 846
  control: string; // ST02
  group: Group;
  rows: string[][];
  errors: ElementError[];
  error?: EnvelopeError;
}

/** What the ISA says, known from the first segment on. */
export interface InterchangeHeader {
  sender: string; // ISA06
  receiver: string; // ISA08
  control: string; // ISA13, the delivery's sequence for dedupe
  ackRequested: boolean; // ISA14 = 1
}

export interface Interchange extends InterchangeHeader {
  groups: Group[];
  sets: TransactionSet[];
}

export interface ReadOptions {
  /** the segment that starts a line loop, e.g. LIN, PO1, IT1 */
  line: string;
  /** mapping order: an element reference per field */
  fields: readonly ElementRef[];
  /** a check per field, returning an X12 element error code for a bad value, or undefined */
  check?: (field: number, value: string) => string | undefined;
  /** at most this many element errors are kept per set (the 997 names them; the count is in the report) */
  maxErrors?: number;
  /** fields whose X12 dates (CCYYMMDD) are written as the mapping's dates (YYYY-MM-DD) */
  dates?: readonly boolean[];
  /** each row as it is read; with it, rows are not kept in the sets (memory flat with file size) */
  onRow?: (row: string[], set: TransactionSet, segment: number) => void;
}

/**
 * TA1 interchange note codes for what stops the reading: 001 control numbers differ, 021 wrong
 * group count, 022 invalid control structure, 023 premature end of file.
 */
type Note = '001' | '021' | '022' | '023';

/** An envelope error naming the segment's number and the element (element 0: the segment itself). */
function envelope(seg: Segment, element: number, what: string, note: Note = '022') {
  return reject('BAD_ENVELOPE', `segment ${seg.number} (${visible(refName(seg.id, element))}): ${what}`, { segment: seg.number, element: refName(seg.id, element), note });
}

const refName = (id: string, element: number) => (element === 0 ? id : `${id}${String(element).padStart(2, '0')}`);

/** A row, and the segment number of its line loop's start (where an error report points). */
export interface ReadRow {
  row: string[];
  set: TransactionSet;
  segment: number;
}

/**
 * An interchange, checked segment by segment: `push` returns the rows a segment completes, `end` the
 * interchange (its sets hold their element errors and envelope errors, not their rows).
 */
export class InterchangeReader {
  header?: InterchangeHeader;
  /** the interchange, once read to its IEA and checked */
  done?: Interchange;
  private isa?: Segment;
  private gs?: Segment;
  private st?: Segment;
  private group?: Group;
  private set?: TransactionSet;
  private groups = 0;
  private setsInGroup = 0;
  private setSegments = 0;
  private loop?: { values: Map<string, string[]>; start: number };
  private values = new Map<string, string[]>();
  private ended = false;
  private readonly sets: TransactionSet[] = [];
  private readonly groupList: Group[] = [];

  constructor(private readonly opts: ReadOptions) {}

  push(seg: Segment): ReadRow[] {
    if (this.ended) throw envelope(seg, 0, 'a segment after IEA');
    if (!this.isa) {
      this.open(seg);
      return [];
    }
    switch (seg.id) {
      case 'GS':
        return this.openGroup(seg);
      case 'GE':
        return this.closeGroup(seg);
      case 'ST':
        return this.openSet(seg);
      case 'SE':
        return this.closeSet(seg);
      case 'IEA':
        return this.close(seg);
      default:
        return this.inSet(seg);
    }
  }

  end(): Interchange {
    if (!this.isa || !this.header) throw reject('BAD_ENVELOPE', 'segment 1: the file is empty');
    if (!this.ended) throw reject('BAD_ENVELOPE', 'the interchange ends without IEA', { element: 'IEA', note: '023' });
    this.done = { ...this.header, groups: this.groupList, sets: this.sets };
    return this.done;
  }

  private open(seg: Segment): void {
    if (seg.id !== 'ISA') throw envelope(seg, 0, 'the interchange does not start with ISA');
    if (seg.elements.length !== 17) throw envelope(seg, 16, `ISA has ${seg.elements.length - 1} elements, not 16`);
    // The delivery's sequence: a number, or nothing to dedupe by.
    if (!/^\d{9}$/.test(el(seg, 13))) throw envelope(seg, 13, `ISA13 "${visible(el(seg, 13))}" is not an interchange control number (9 digits)`);
    this.isa = seg;
    this.header = { sender: el(seg, 6).trim(), receiver: el(seg, 8).trim(), control: el(seg, 13), ackRequested: el(seg, 14) === '1' };
  }

  private openGroup(seg: Segment): ReadRow[] {
    if (this.gs) throw envelope(seg, 0, 'GS inside an open group (GE missing)');
    this.gs = seg;
    this.group = { functionalId: el(seg, 1), control: el(seg, 6) };
    this.groupList.push(this.group);
    this.groups += 1;
    this.setsInGroup = 0;
    return [];
  }

  /** AK9 codes: 4 group control numbers differ, 5 wrong count of sets. */
  private closeGroup(seg: Segment): ReadRow[] {
    const { gs, group } = this;
    if (!gs || !group || this.st) throw envelope(seg, 0, this.st ? 'GE inside an open transaction set (SE missing)' : 'GE without GS');
    if (el(seg, 2) !== el(gs, 6)) group.error ??= { code: '4', message: `segment ${seg.number} (GE02): GE02 "${visible(el(seg, 2))}" is not GS06 "${visible(el(gs, 6))}" (segment ${gs.number})` };
    if (Number(el(seg, 1)) !== this.setsInGroup) group.error ??= { code: '5', message: `segment ${seg.number} (GE01): GE01 says ${visible(el(seg, 1))} transaction sets, the group has ${this.setsInGroup}` };
    this.gs = undefined;
    return [];
  }

  private openSet(seg: Segment): ReadRow[] {
    if (!this.gs || !this.group || this.st) throw envelope(seg, 0, this.st ? 'ST inside an open transaction set (SE missing)' : 'ST outside a functional group');
    this.st = seg;
    this.setSegments = 1;
    this.setsInGroup += 1;
    this.values = new Map([['ST', withPosition(seg.elements, 1)]]);
    this.set = { type: el(seg, 1), control: el(seg, 2), group: this.group, rows: [], errors: [] };
    return [];
  }

  /** AK5 codes: 3 set control numbers differ, 4 wrong count of segments. */
  private closeSet(seg: Segment): ReadRow[] {
    const { st, set } = this;
    if (!st || !set) throw envelope(seg, 0, 'SE without ST');
    this.setSegments += 1;
    const rows = this.flush();
    if (el(seg, 2) !== el(st, 2)) set.error ??= { code: '3', message: `segment ${seg.number} (SE02): SE02 "${visible(el(seg, 2))}" is not ST02 "${visible(el(st, 2))}" (segment ${st.number})` };
    if (Number(el(seg, 1)) !== this.setSegments) set.error ??= { code: '4', message: `segment ${seg.number} (SE01): SE01 says ${visible(el(seg, 1))} segments, the set has ${this.setSegments} (ST to SE)` };
    this.sets.push(set);
    this.st = undefined;
    this.set = undefined;
    return rows;
  }

  private close(seg: Segment): ReadRow[] {
    const isa = this.isa!;
    if (this.gs) throw envelope(seg, 0, 'IEA inside an open group (GE missing)');
    if (el(seg, 2) !== el(isa, 13)) throw envelope(seg, 2, `IEA02 "${visible(el(seg, 2))}" is not ISA13 "${visible(el(isa, 13))}" (segment 1)`, '001');
    if (Number(el(seg, 1)) !== this.groups) throw envelope(seg, 1, `IEA01 says ${visible(el(seg, 1))} groups, the interchange has ${this.groups}`, '021');
    this.ended = true;
    return [];
  }

  private inSet(seg: Segment): ReadRow[] {
    if (!this.st || !this.set) throw envelope(seg, 0, `${visible(seg.id)} outside a transaction set`);
    this.setSegments += 1;
    const rows = seg.id === this.opts.line ? this.flush() : [];
    if (seg.id === this.opts.line) this.loop = { values: new Map(), start: seg.number };
    // the position within the set, for the AK3 of an element error
    (this.loop?.values ?? this.values).set(seg.id, withPosition(seg.elements, this.setSegments));
    return rows;
  }

  /** The row of the line loop just ended, if one was open. */
  private flush(): ReadRow[] {
    const { loop, set } = this;
    this.loop = undefined;
    if (!loop || !set) return [];
    return [{ row: this.row(loop.values, set), set, segment: loop.start }];
  }

  private row(line: Map<string, string[]>, set: TransactionSet): string[] {
    const { fields, check, dates, maxErrors = Infinity } = this.opts;
    return fields.map((ref, i) => {
      const elements: Positioned | undefined = line.get(ref.segment) ?? this.values.get(ref.segment);
      const raw = elements?.[ref.element] ?? '';
      const value = dates?.[i] && /^\d{8}$/.test(raw) ? `${raw.slice(0, 4)}-${raw.slice(4, 6)}-${raw.slice(6)}` : raw;
      // A segment missing altogether has no position to name: the row error in the report tells it.
      const code = elements && check?.(i, value);
      if (code && set.errors.length < maxErrors) set.errors.push({ segmentId: ref.segment, position: elements?.[POSITION] ?? 0, element: ref.element, code, value });
      return value;
    });
  }
}

/** Reads and checks a whole interchange; rows go to `onRow`, or are kept per set without it. */
export async function readInterchange(segments: AsyncIterable<Segment>, opts: ReadOptions): Promise<Interchange> {
  const reader = new InterchangeReader(opts);
  for await (const seg of segments) {
    for (const r of reader.push(seg)) {
      if (opts.onRow) opts.onRow(r.row, r.set, r.segment);
      else r.set.rows.push(r.row);
    }
  }
  return reader.end();
}

const BATCH = 64 * 1024;

/**
 * The interchange's rows as lines of JSON arrays (mapping order), as the staging threads read a line
 * format: each row on the line numbered by the segment its loop starts at (blank lines between), so a
 * row error names the segment. The reader keeps what the answer needs (header, sets, errors).
 */
export async function* x12Lines(source: AsyncIterable<Buffer>, reader: InterchangeReader, maxSegmentBytes: number): AsyncGenerator<Buffer> {
  let line = 0;
  let out = '';
  for await (const seg of readSegments(source, maxSegmentBytes)) {
    for (const r of reader.push(seg)) {
      out += `${'\n'.repeat(r.segment - 1 - line)}${JSON.stringify(r.row)}\n`;
      line = r.segment;
    }
    if (out.length >= BATCH) {
      yield Buffer.from(out);
      out = '';
    }
  }
  reader.end();
  if (out) yield Buffer.from(out);
}

/** The first envelope error of a set or a group, rejecting the file: undefined when there is none. */
export function envelopeError(rx: Interchange): EnvelopeError | undefined {
  return rx.sets.find((s) => s.error)?.error ?? rx.groups.find((g) => g.error)?.error;
}

const POSITION = Symbol('position');
type Positioned = string[] & { [POSITION]?: number };

function withPosition(elements: string[], position: number): string[] {
  const p: Positioned = elements;
  p[POSITION] = position;
  return p;
}
