/**
 * The sequence-gap rule (a flow's `sequence_gap`), as a pure function: the sweep decides with it whether
 * the next ready delivery of a flow may go, and `inboxd status` tells with it which sequence a held flow
 * waits for and until when.
 */
export interface GapPolicy {
  sequenceGap: 'wait' | 'warn' | 'ignore';
  gapWaitMs: number;
  /** 'interchange' (X12): the sequence is known once the file is read, so there is nothing to judge before */
  sequenceFrom?: 'name' | 'interchange';
}

export type GapVerdict =
  | { kind: 'go' }
  /** `wait`: held until `expected` arrives, or until `untilMs` (then it goes on with a gap) */
  | { kind: 'hold'; expected: number; untilMs: number }
  /** goes on although `expected` never arrived: report the gap */
  | { kind: 'gap'; expected: number };

/** `seq` is the flow's first ready delivery, arrived at `arrivedMs`; `lastSeq` the last one applied. */
export function gapVerdict(flow: GapPolicy, lastSeq: number | undefined, seq: number, arrivedMs: number, now: number): GapVerdict {
  if (flow.sequenceGap === 'ignore' || flow.sequenceFrom === 'interchange' || lastSeq === undefined || seq <= lastSeq + 1) return { kind: 'go' };
  const expected = lastSeq + 1;
  const untilMs = arrivedMs + flow.gapWaitMs;
  if (flow.sequenceGap === 'wait' && now < untilMs) return { kind: 'hold', expected, untilMs };
  return { kind: 'gap', expected };
}
