/**
 * Our answer to an X12 interchange: a 997 functional acknowledgment (or a 999 implementation
 * acknowledgment), written by us, one per functional group received, and a TA1 for the interchange
 * when asked. The control numbers and the time come from the caller (the delivery's answer plan),
 * so writing the answer again after a crash gives the same bytes.
 */
import type { ElementError, Interchange } from './x12.js';

export type AckKind = 997 | 999;
/** A accepted, E accepted with errors, R rejected */
export type SetStatus = 'A' | 'E' | 'R';

export interface AckPlan {
  kind: AckKind;
  /** our ISA13 and GS06 for the answer */
  interchangeControl: number;
  groupControl: number;
  /** the answer's date and time, fixed in the plan */
  at: Date;
  /** what we do with a set holding element errors */
  statusOf: (errors: readonly ElementError[]) => SetStatus;
}

const SEP = { element: '*', component: '>', segment: '~\n' };

const pad = (text: string, width: number) => text.slice(0, width).padEnd(width, ' ');
const digits = (n: number, width: number) => String(n).padStart(width, '0');
const ymd = (d: Date) => d.toISOString().slice(0, 10).replace(/-/g, '');
const hm = (d: Date) => d.toISOString().slice(11, 16).replace(':', '');
const seg = (...elements: string[]) => elements.join(SEP.element) + SEP.segment;

/** The ISA of our answer, its sender and receiver swapped from the partner's. */
function isaOf(rx: Interchange, plan: AckPlan): string {
  const version = plan.kind === 999 ? '00501' : '00401';
  return seg('ISA', '00', pad('', 10), '00', pad('', 10), 'ZZ', pad(rx.receiver, 15), 'ZZ', pad(rx.sender, 15),
    ymd(plan.at).slice(2), hm(plan.at), plan.kind === 999 ? '^' : 'U', version, digits(plan.interchangeControl, 9), '0', 'P', SEP.component);
}

/** The 997/999 for every group of the interchange, in one interchange of ours. */
export function writeAck(rx: Interchange, plan: AckPlan): string {
  const groups = new Map<string, Interchange['sets']>();
  for (const set of rx.sets) {
    const key = `${set.group.functionalId}\u0000${set.group.control}`;
    groups.set(key, [...(groups.get(key) ?? []), set]);
  }
  const version = plan.kind === 999 ? '005010X231A1' : '004010';
  let out = isaOf(rx, plan);
  let group = plan.groupControl;
  for (const sets of groups.values()) {
    const st = digits(1, 4);
    const body: string[] = [seg('ST', String(plan.kind), st, ...(plan.kind === 999 ? [version] : [])), seg('AK1', sets[0]?.group.functionalId ?? '', sets[0]?.group.control ?? '')];
    let accepted = 0;
    let worst: SetStatus = 'A';
    for (const set of sets) {
      const status = set.errors.length === 0 ? 'A' : plan.statusOf(set.errors);
      if (status !== 'R') accepted += 1;
      if (status === 'R' || (status === 'E' && worst === 'A')) worst = status;
      body.push(seg('AK2', set.type, set.control));
      for (const e of set.errors) {
        body.push(seg(plan.kind === 999 ? 'IK3' : 'AK3', e.segmentId, String(e.position), '', '8'));
        body.push(seg(plan.kind === 999 ? 'IK4' : 'AK4', String(e.element), '', e.code, e.value.slice(0, 99)));
      }
      body.push(seg(plan.kind === 999 ? 'IK5' : 'AK5', status, ...(status === 'A' ? [] : ['5'])));
    }
    const groupStatus = worst === 'R' && accepted > 0 ? 'P' : worst;
    body.push(seg('AK9', groupStatus, String(sets.length), String(sets.length), String(accepted)));
    body.push(seg('SE', String(body.length + 1), st));
    out += seg('GS', 'FA', pad(rx.receiver, 15).trim(), pad(rx.sender, 15).trim(), ymd(plan.at), hm(plan.at), String(group), 'X', version);
    out += body.join('');
    out += seg('GE', '1', String(group));
    group += 1;
  }
  return out + seg('IEA', String(groups.size), digits(plan.interchangeControl, 9));
}

/** TA1 for the interchange: A accepted, R rejected with an X12 interchange note code (e.g. 001 control numbers do not match). */
export function writeTa1(rx: { sender: string; receiver: string; control: string }, plan: AckPlan, note?: string): string {
  const at = plan.at;
  const ta1 = seg('TA1', rx.control, ymd(at).slice(2), hm(at), note ? 'R' : 'A', note ?? '000');
  return isaOf({ ...rx, ackRequested: false, sets: [] }, plan) + ta1 + seg('IEA', '0', digits(plan.interchangeControl, 9));
}
