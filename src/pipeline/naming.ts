/** File names: which flow a data file belongs to, its sequence number and timestamp, and its companions. */

export interface FlowPattern {
  id: string;
  pattern: RegExp;
  manifestName: string;
  /** 'interchange': the sequence is in the file (X12's ISA13); a number in the name is optional */
  sequenceFrom?: 'name' | 'interchange';
}

export interface ParsedName {
  flow: string;
  seq: number;
  /** the file's own timestamp, ISO-8601 UTC, when the pattern has a (?<ts>) group */
  fileTime?: string;
}

export const sidecarName = (dataFile: string) => `${dataFile}.sha256`;

export function manifestName(template: string, dataFile: string): string {
  const stem = dataFile.replace(/\.[^.]+$/, '');
  return template.replaceAll('{file}', dataFile).replaceAll('{stem}', stem);
}

export function isTempName(name: string, tempPatterns: readonly RegExp[]): boolean {
  return tempPatterns.some((re) => re.test(name));
}

/**
 * The first flow whose pattern matches, or undefined. A matching name with an unusable timestamp, or a
 * sequence that is not a decimal number a double holds exactly, is not a match.
 */
export function parseName(name: string, flows: readonly FlowPattern[]): ParsedName | undefined {
  const m = matchName(name, flows);
  return m?.problem ? undefined : m;
}

/** A name a flow's pattern matches, with what makes it unusable nonetheless, if anything. */
export interface MatchedName extends ParsedName {
  /** the timestamp is not a real instant: what is wrong with it, in words */
  problem?: string;
}

/** Like parseName, but a name whose only fault is its timestamp is returned too, with the problem. */
export function matchName(name: string, flows: readonly FlowPattern[]): MatchedName | undefined {
  let faulty: MatchedName | undefined;
  for (const flow of flows) {
    const m = flow.pattern.exec(name);
    // An interchange named without a number sorts as 0 (by arrival, then): its sequence is read from it.
    const seq = m?.groups?.seq ?? (flow.sequenceFrom === 'interchange' ? '0' : undefined);
    if (!m || seq === undefined) continue;
    // Beyond 2^53 two sequence numbers can become the same number: 20250916020000123 is ...124.
    if (!/^\d+$/.test(seq) || !Number.isSafeInteger(Number(seq))) continue;
    const ts = m.groups?.ts;
    if (ts === undefined) return { flow: flow.id, seq: Number(seq) };
    const time = readCompactTime(ts);
    if ('iso' in time) return { flow: flow.id, seq: Number(seq), fileTime: time.iso };
    faulty ??= { flow: flow.id, seq: Number(seq), problem: `the timestamp ${ts} in the file name is not a real instant: ${time.problem}` };
  }
  return faulty;
}

/** `20250916T0200Z` or `20250916T020000Z` -> `2025-09-16T02:00:00Z`; undefined when not a real instant. */
export function parseCompactTime(ts: string): string | undefined {
  const time = readCompactTime(ts);
  return 'iso' in time ? time.iso : undefined;
}

const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function readCompactTime(ts: string): { iso: string } | { problem: string } {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})?Z$/.exec(ts);
  if (!m) return { problem: 'it is not of the form YYYYMMDDThhmmZ or YYYYMMDDThhmmssZ' };
  const [, y = '', mo = '', d = '', h = '', mi = '', s = '00'] = m;
  const leap = (+y % 4 === 0 && +y % 100 !== 0) || +y % 400 === 0;
  const days = +mo === 2 && leap ? 29 : DAYS[+mo - 1];
  const problem =
    days === undefined ? `there is no month ${mo}`
      : +d < 1 || +d > days ? `${y}-${mo} has no day ${d}`
        : +h > 23 ? `there is no hour ${h} (00 to 23)`
          : +mi > 59 ? `there is no minute ${mi} (00 to 59)`
            : +s > 59 ? `there is no second ${s} (00 to 59)` : undefined;
  return problem ? { problem } : { iso: `${y}-${mo}-${d}T${h}:${mi}:${s}Z` };
}
