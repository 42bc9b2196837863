/**
 * Our answer to an X12 interchange, written by us: one interchange holding a TA1 for the partner's
 * interchange when one is wanted, and a 997 functional acknowledgment (or a 999 implementation
 * acknowledgment) for each functional group received. Where the interchange could not be read, the
 * TA1 alone says so. The control number and the time come from the caller (the delivery's answer
 * plan), so writing the answer again after a crash gives the same bytes.
 */
import type { ElementError, Group, Interchange, InterchangeHeader, TransactionSet } from './x12.js';

export type AckKind = 997 | 999;
/** A accepted, E accepted with errors, R rejected */
export type SetStatus = 'A' | 'E' | 'R';

export interface AnswerSpec {
  /** our ISA13 for the answer */
  control: number;
  /** the answer's date and time, fixed in the plan */
  at: Date;
  /** the 997/999 for the groups read; none when the interchange could not be read */
  ack?: { kind: AckKind; rx: Interchange; rejected: boolean };
  /** a TA1: accepted (no note) or rejected with an X12 interchange note code (001 control numbers differ, 025 duplicate, ...) */
  ta1?: { note?: string };
}

const SEP = { element: '*', component: '>', segment: '~\n' };

const pad = (text: string, width: number) => text.slice(0, width).padEnd(width, ' ');
const digits = (n: number, width: number) => String(n).padStart(width, '0');
const ymd = (d: Date) => d.toISOString().slice(0, 10).replace(/-/g, '');
const hm = (d: Date) => d.toISOString().slice(11, 16).replace(':', '');
const seg = (...elements: string[]) => elements.join(SEP.element) + SEP.segment;

/** The answer interchange: its sender and receiver swapped from the partner's. */
export function writeAnswer(head: InterchangeHeader, spec: AnswerSpec): string {
  const five = spec.ack?.kind === 999;
  let out = seg('ISA', '00', pad('', 10), '00', pad('', 10), 'ZZ', pad(head.receiver, 15), 'ZZ', pad(head.sender, 15),
    ymd(spec.at).slice(2), hm(spec.at), five ? '^' : 'U', five ? '00501' : '00401', digits(spec.control, 9), '0', 'P', SEP.component);
  if (spec.ta1) out += seg('TA1', head.control, ymd(spec.at).slice(2), hm(spec.at), spec.ta1.note ? 'R' : 'A', spec.ta1.note ?? '000');
  const groups = spec.ack ? spec.ack.rx.groups : [];
  groups.forEach((group, i) => {
    out += functionalAck(head, spec, group, spec.ack!.rx.sets.filter((s) => s.group === group), i + 1);
  });
  return out + seg('IEA', String(groups.length), digits(spec.control, 9));
}

/** One group's 997/999, in a functional group of ours numbered `control` within the answer. */
function functionalAck(head: InterchangeHeader, spec: AnswerSpec, group: Group, sets: TransactionSet[], control: number): string {
  const { kind, rejected } = spec.ack!;
  const five = kind === 999;
  const version = five ? '005010X231A1' : '004010';
  const body: string[] = [seg('ST', String(kind), '0001', ...(five ? [version] : [])), seg('AK1', group.functionalId, group.control)];
  const statuses = sets.map((set) => {
    const [status, code] = setStatus(set, rejected);
    body.push(seg('AK2', set.type, set.control));
    for (const e of set.errors) body.push(...elementError(e, five));
    body.push(seg(five ? 'IK5' : 'AK5', status, ...(code ? [code] : [])));
    return status;
  });
  const accepted = statuses.filter((s) => s !== 'R').length;
  const status = group.error ? 'R' : statuses.includes('R') ? (accepted > 0 ? 'P' : 'R') : statuses.includes('E') ? 'E' : 'A';
  body.push(seg('AK9', status, String(sets.length), String(sets.length), String(group.error ? 0 : accepted), ...(group.error ? [group.error.code] : [])));
  body.push(seg('SE', String(body.length + 1), '0001'));
  return seg('GS', 'FA', head.receiver, head.sender, ymd(spec.at), hm(spec.at), String(control), 'X', version) + body.join('') + seg('GE', '1', String(control));
}

/**
 * A set's AK5: rejected for its own envelope error (its code), or with the file (5: segments in
 * error, named by the AK3/AK4 before it); accepted with errors when the flow tolerated its bad rows.
 */
function setStatus(set: TransactionSet, rejected: boolean): [SetStatus, string?] {
  if (set.error) return ['R', set.error.code];
  if (rejected) return ['R', '5'];
  return set.errors.length > 0 ? ['E', '5'] : ['A'];
}

/** AK3 (the segment: id, position in the set, loop, 8 segment has data element errors) and AK4 (the element). */
function elementError(e: ElementError, five: boolean): string[] {
  return [seg(five ? 'IK3' : 'AK3', e.segmentId, String(e.position), '', '8'), seg(five ? 'IK4' : 'AK4', String(e.element), '', e.code, e.value.slice(0, 99))];
}
