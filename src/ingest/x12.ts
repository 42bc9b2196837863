/**
 * EDI X12 in a delivery: the reader a flow's interchange is read with (its element references, its
 * fields' checks for the 997's AK3/AK4), and the answer the partner's translator expects in the
 * outbox, a 997 or 999 and a TA1 when wanted, added to the delivery's answer plan.
 */
import type { FlowConfig } from '../config/config.js';
import { parseElementRef, type FieldSpec } from '../config/mapping.js';
import { type InboxdError, reject } from '../errors.js';
import { envelopeError, type Interchange, InterchangeReader } from '../formats/x12.js';
import { writeAnswer, type AnswerSpec } from '../formats/x12-ack.js';
import type { AnswerPlan } from '../pipeline/answer.js';
import { fieldChecks } from '../pipeline/map.js';

/** X12 element syntax codes for a value the mapping refuses: 1 missing, 5 too long, 7 not a code, 8 not a date, 6 otherwise. */
function elementCode(field: FieldSpec, raw: string): string {
  if (raw.trim() === '') return '1';
  if (field.type === 'string') return '5';
  if (field.type === 'date' || field.type === 'datetime') return '8';
  return field.type === 'enum' || field.type === 'currency' ? '7' : '6';
}

export function x12Reader(flow: FlowConfig): InterchangeReader {
  const checks = fieldChecks(flow.fields);
  return new InterchangeReader({
    line: flow.x12!.line,
    fields: flow.fields.map((f) => parseElementRef(f.partner)!),
    dates: flow.fields.map((f) => f.type === 'date'),
    check: (i, value) => (checks[i]!(value) === undefined ? undefined : elementCode(flow.fields[i]!, value)),
    maxErrors: flow.maxReportedErrors,
  });
}

/** ISA13 as the delivery's sequence (the reader checked it is 9 digits). */
export const interchangeSeq = (rx: Pick<Interchange, 'control'>) => Number(rx.control);

/** A set's or group's envelope error (recorded while reading on) rejects the whole file. */
export function checkEnvelopes(rx: Interchange): void {
  const broken = envelopeError(rx);
  if (broken) throw reject('BAD_ENVELOPE', broken.message);
}

/** Our report's name in a plan: the X12 answer is named after it. */
const REPORT = /\.(ack|error)\.json$/;

/**
 * The plan with the X12 answer in the outbox. An interchange read: a 997/999 for its groups (sets
 * accepted, accepted with errors, or rejected with the file), in place of the JSON ACK (kept as the
 * plan's report). Not read (its envelope broken, or refused before: checksum, decryption): a TA1
 * rejecting it, when one is wanted. A resend of an interchange already answered: a TA1 saying
 * duplicate (025), when wanted, and no second 997.
 */
export function withX12Answer(flow: FlowConfig, reader: InterchangeReader, plan: AnswerPlan, rec: { outcome: string; code: string | null; decidedAt: string }, error?: InboxdError): AnswerPlan {
  const head = reader.header;
  const opts = flow.x12!;
  if (!head) return plan;
  const wantTa1 = opts.ta1 === 'always' || (opts.ta1 === 'requested' && head.ackRequested);
  const spec: AnswerSpec = { control: interchangeSeq(head), at: new Date(rec.decidedAt) };
  const duplicate = rec.code === 'DUPLICATE' || rec.code === 'SEQUENCE_CONFLICT';
  if (!duplicate && reader.done && opts.ack !== 'none') spec.ack = { kind: opts.ack, rx: reader.done, rejected: rec.outcome !== 'accepted' };
  if (wantTa1) spec.ta1 = duplicate ? { note: '025' } : reader.done ? {} : { note: noteOf(error) };
  if (!spec.ack && !spec.ta1) return plan;
  const report = plan.writes.find((w) => REPORT.test(w.name))!;
  const name = `${report.name.replace(REPORT, '')}.${spec.ack ? spec.ack.kind : 'ta1'}`;
  const answer = { dir: 'outbox' as const, name, content: writeAnswer(head, spec) };
  if (rec.outcome !== 'accepted' || !spec.ack) return { ...plan, writes: [...plan.writes, answer] };
  // Accepted: the partner's translator reads X12, so the outbox holds the 997 alone.
  return { ...plan, writes: [answer, ...plan.writes.filter((w) => w.dir !== 'outbox')], report: report.content };
}

/** The TA1 note for why the interchange was not read: the reader's, or 024 (invalid interchange content). */
function noteOf(error: InboxdError | undefined): string {
  const note = error?.details.note;
  return typeof note === 'string' ? note : '024';
}
