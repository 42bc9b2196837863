/**
 * EDI X12 interchanges, read segment by segment from a stream. The ISA segment is fixed-width (106
 * characters): its 4th character is the element separator, ISA16 the component separator, and the
 * character after ISA16 the segment terminator. The envelopes are checked as they close (IEA against
 * ISA, GE against GS, SE against ST); an envelope error rejects the file, naming the segment number
 * (1-based, in the interchange) and the element. Inside a transaction set, each "line" (the loop
 * starting at the configured segment, e.g. LIN for an 846, PO1 for an 850) becomes one row; the
 * mapping's `partner` is an element reference such as `LIN03`, and header segments (before the first
 * line) repeat onto every row of their set.
 */
import { StringDecoder } from 'node:string_decoder';
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
export async function* readSegments(source: AsyncIterable<Buffer | string> | Iterable<Buffer | string>): AsyncGenerator<Segment> {
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
      const text = pending.slice(0, end).replace(/^[\r\n]+/, '');
      pending = pending.slice(end + 1);
      if (text === '') continue;
      number += 1;
      const elements = text.split(sep.element);
      yield { id: elements[0] ?? '', elements, number };
    }
  }
  if (!sep) throw reject('BAD_ENVELOPE', 'segment 1: the file does not start with an ISA segment of 106 characters');
  if (pending.trim() !== '') throw reject('BAD_ENVELOPE', `segment ${number + 1}: the file ends inside a segment (no terminator "${visible(sep.segment)}")`);
}

/** One element problem inside a transaction set, as the 997's AK3/AK4 (or 999's IK3/IK4) name it. */
export interface ElementError {
  segmentId: string;
  /** position of the segment within its transaction set, ST being 1 */
  position: number;
  element: number;
  /** X12 element syntax error code: 1 mandatory missing, 6 invalid character, 7 invalid code value, ... */
  code: string;
  value: string;
}

export interface TransactionSet {
  type: string; // ST01, e.g. 846
  control: string; // ST02
  group: { functionalId: string; control: string };
  rows: string[][];
  errors: ElementError[];
}

export interface Interchange {
  sender: string; // ISA06
  receiver: string; // ISA08
  control: string; // ISA13, the delivery's sequence for dedupe
  ackRequested: boolean; // ISA14 = 1
  sets: TransactionSet[];
}

export interface ElementRef {
  segment: string;
  element: number;
}

/** `LIN03` -> segment LIN, element 3. */
export function elementRef(text: string): ElementRef {
  const m = /^([A-Z][A-Z0-9]{1,2})(\d{2})$/.exec(text.trim().toUpperCase());
  if (!m) throw new Error(`"${text}" is not an X12 element reference (a segment id and two digits, e.g. LIN03)`);
  return { segment: m[1] ?? '', element: Number(m[2]) };
}

export interface ReadOptions {
  /** the segment that starts a line loop, e.g. LIN, PO1, IT1 */
  line: string;
  /** mapping order: an element reference per field */
  fields: readonly ElementRef[];
  /** a check per field, returning an X12 element error code for a bad value, or undefined */
  check?: (field: number, value: string) => string | undefined;
  /** each row as it is read; with it, rows are not kept in the sets (memory flat with file size) */
  onRow?: (row: string[], set: TransactionSet) => void;
}

/** An envelope error naming the segment's number and the element (element 0: the segment itself). */
function envelope(seg: Segment, element: number, what: string) {
  const name = element === 0 ? seg.id : `${seg.id}${String(element).padStart(2, '0')}`;
  return reject('BAD_ENVELOPE', `segment ${seg.number} (${visible(name)}): ${what}`, { segment: seg.number, element: name });
}

/** Reads and checks a whole interchange; rows go to `onRow`, or are kept per set without it. */
export async function readInterchange(segments: AsyncIterable<Segment>, opts: ReadOptions): Promise<Interchange> {
  let isa: Segment | undefined;
  let gs: Segment | undefined;
  let st: Segment | undefined;
  let groups = 0;
  let setsInGroup = 0;
  let setSegments = 0;
  let header = new Map<string, string[]>();
  let line: Map<string, string[]> | undefined;
  let set: TransactionSet | undefined;
  let ended = false;
  const sets: TransactionSet[] = [];

  const flush = () => {
    if (line && set) {
      const r = row(header, line, set, opts);
      if (opts.onRow) opts.onRow(r, set);
      else set.rows.push(r);
    }
    line = undefined;
  };

  for await (const seg of segments) {
    if (ended) throw envelope(seg, 0, 'a segment after IEA');
    if (!isa) {
      if (seg.id !== 'ISA') throw envelope(seg, 0, 'the interchange does not start with ISA');
      if (seg.elements.length !== 17) throw envelope(seg, 16, `ISA has ${seg.elements.length - 1} elements, not 16`);
      isa = seg;
      continue;
    }
    switch (seg.id) {
      case 'GS':
        if (gs) throw envelope(seg, 0, 'GS inside an open group (GE missing)');
        gs = seg;
        groups += 1;
        setsInGroup = 0;
        break;
      case 'GE':
        if (!gs || st) throw envelope(seg, 0, st ? 'GE inside an open transaction set (SE missing)' : 'GE without GS');
        if (el(seg, 2) !== el(gs, 6)) throw envelope(seg, 2, `GE02 "${visible(el(seg, 2))}" is not GS06 "${visible(el(gs, 6))}" (segment ${gs.number})`);
        if (Number(el(seg, 1)) !== setsInGroup) throw envelope(seg, 1, `GE01 says ${visible(el(seg, 1))} transaction sets, the group has ${setsInGroup}`);
        gs = undefined;
        break;
      case 'ST':
        if (!gs || st) throw envelope(seg, 0, st ? 'ST inside an open transaction set (SE missing)' : 'ST outside a functional group');
        st = seg;
        setSegments = 1;
        setsInGroup += 1;
        header = new Map([['ST', seg.elements]]);
        set = { type: el(seg, 1), control: el(seg, 2), group: { functionalId: el(gs, 1), control: el(gs, 6) }, rows: [], errors: [] };
        break;
      case 'SE':
        if (!st || !set) throw envelope(seg, 0, 'SE without ST');
        setSegments += 1;
        flush();
        if (el(seg, 2) !== el(st, 2)) throw envelope(seg, 2, `SE02 "${visible(el(seg, 2))}" is not ST02 "${visible(el(st, 2))}" (segment ${st.number})`);
        if (Number(el(seg, 1)) !== setSegments) throw envelope(seg, 1, `SE01 says ${visible(el(seg, 1))} segments, the set has ${setSegments} (ST to SE)`);
        sets.push(set);
        st = undefined;
        set = undefined;
        break;
      case 'IEA':
        if (gs) throw envelope(seg, 0, 'IEA inside an open group (GE missing)');
        if (el(seg, 2) !== el(isa, 13)) throw envelope(seg, 2, `IEA02 "${visible(el(seg, 2))}" is not ISA13 "${visible(el(isa, 13))}" (segment 1)`);
        if (Number(el(seg, 1)) !== groups) throw envelope(seg, 1, `IEA01 says ${visible(el(seg, 1))} groups, the interchange has ${groups}`);
        ended = true;
        break;
      default:
        if (!st || !set) throw envelope(seg, 0, `${visible(seg.id)} outside a transaction set`);
        setSegments += 1;
        if (seg.id === opts.line) {
          flush();
          line = new Map();
        }
        // the position within the set, for the AK3 of an element error
        (line ?? header).set(seg.id, withPosition(seg.elements, setSegments));
    }
  }
  if (!isa) throw reject('BAD_ENVELOPE', 'segment 1: the file is empty');
  if (!ended) throw reject('BAD_ENVELOPE', 'the interchange ends without IEA', { element: 'IEA' });
  return { sender: el(isa, 6).trim(), receiver: el(isa, 8).trim(), control: el(isa, 13), ackRequested: el(isa, 14) === '1', sets };
}

const POSITION = Symbol('position');
type Positioned = string[] & { [POSITION]?: number };

function withPosition(elements: string[], position: number): string[] {
  const p: Positioned = elements;
  p[POSITION] = position;
  return p;
}

function row(header: Map<string, string[]>, line: Map<string, string[]>, set: TransactionSet, opts: ReadOptions): string[] {
  return opts.fields.map((ref, i) => {
    const elements: Positioned | undefined = line.get(ref.segment) ?? header.get(ref.segment);
    const value = elements?.[ref.element] ?? '';
    const code = elements && opts.check?.(i, value);
    if (elements && code) set.errors.push({ segmentId: ref.segment, position: elements[POSITION] ?? 0, element: ref.element, code, value });
    return value;
  });
}
