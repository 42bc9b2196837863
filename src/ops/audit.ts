/**
 * The audit trail's read side, beyond the store's queries (store.audit, store/types.ts): what a
 * delivery's committed plan says of its files and its report. Nothing here changes a row.
 */
import type { AnswerPlan } from '../pipeline/answer.js';
import type { DeliveryRecord } from '../store/types.js';

export const OUTCOME_FILTERS = ['accepted', 'rejected', 'duplicate', 'open', 'late', 'replay'] as const;

export interface EvidenceFile {
  /** the name it was delivered under */
  name: string;
  dir: 'archive' | 'error';
  /** the name it has there (suffixed with the delivery id when the name was taken) */
  stored: string;
}

/** Where a delivery's files were put, as its committed plan says; [] for a replay that kept none. */
export function evidenceOf(rec: DeliveryRecord): EvidenceFile[] {
  return (JSON.parse(rec.plan) as AnswerPlan).moves.map((m) => ({ name: m.from, dir: m.dir, stored: m.to }));
}

/** The report the partner got (error report or ACK), or the one kept for a replay. */
export function reportOf(rec: DeliveryRecord): Record<string, unknown> | undefined {
  const plan = JSON.parse(rec.plan) as AnswerPlan;
  const text = plan.writes.find((w) => w.name.endsWith('.error.json'))?.content ?? plan.report ?? plan.writes.find((w) => w.name.endsWith('.ack.json'))?.content;
  return text === undefined ? undefined : (JSON.parse(text) as Record<string, unknown>);
}

/** The line errors' CSV the partner got (`<file>.errors.csv` in error/ or outbox/), when there was one. */
export function errorsCsvOf(rec: DeliveryRecord): { name: string; content: string } | undefined {
  return (JSON.parse(rec.plan) as AnswerPlan).writes.find((w) => w.name.endsWith('.errors.csv'));
}
