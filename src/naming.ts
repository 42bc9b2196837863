/** File names: which flow a data file belongs to, its sequence number and timestamp, and its companions. */

export interface FlowPattern {
  id: string;
  pattern: RegExp;
  manifestName: string;
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
  for (const flow of flows) {
    const m = flow.pattern.exec(name);
    const seq = m?.groups?.seq;
    if (!m || seq === undefined) continue;
    // Beyond 2^53 two sequence numbers can become the same number: 20250916020000123 is ...124.
    if (!/^\d+$/.test(seq) || !Number.isSafeInteger(Number(seq))) continue;
    const ts = m.groups?.ts;
    const fileTime = ts === undefined ? undefined : parseCompactTime(ts);
    if (ts !== undefined && fileTime === undefined) continue;
    return { flow: flow.id, seq: Number(seq), fileTime };
  }
  return undefined;
}

/** `20250916T0200Z` or `20250916T020000Z` -> `2025-09-16T02:00:00Z`; undefined when not a real instant. */
export function parseCompactTime(ts: string): string | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})?Z$/.exec(ts);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s = '00'] = m;
  const iso = `${y}-${mo}-${d}T${h}:${mi}:${s}Z`;
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) || t.toISOString().slice(0, 19) + 'Z' !== iso ? undefined : iso;
}
