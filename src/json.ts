/**
 * JSON with exact numbers. `JSON.parse` reads every number into a double, so 9007199254740993 becomes
 * ...992, and `JSON.stringify` cannot write a bigint at all. Control totals must be exact both ways.
 */
import { randomBytes } from 'node:crypto';

/** A JSON string, or a JSON number (in valid JSON, digits appear nowhere else). */
const TOKEN = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
const INTEGER = /^-?\d+$/;

/**
 * Like JSON.parse (and with its error for invalid text), but a number a double cannot hold exactly is
 * not rounded: an integer beyond 2^53 becomes a bigint, a decimal of more than 15 significant digits
 * stays the text it was written as.
 */
export function parseExact(text: string): unknown {
  JSON.parse(text);
  // Each such number is swapped for a string no partner can know beforehand, and swapped back.
  const tag = randomBytes(8).toString('hex');
  const marked = text.replace(TOKEN, (t) => (t.startsWith('"') || doubleHolds(t) ? t : `"${tag}${t}"`));
  return JSON.parse(marked, (_key, v: unknown) => {
    if (typeof v !== 'string' || !v.startsWith(tag)) return v;
    const t = v.slice(tag.length);
    return INTEGER.test(t) ? BigInt(t) : t;
  });
}

function doubleHolds(t: string): boolean {
  if (INTEGER.test(t)) return Number.isSafeInteger(Number(t));
  const digits = t.replace(/[eE].*$/, '').replace(/[-.]/g, '').replace(/^0+/, '').replace(/0+$/, '');
  return digits.length <= 15;
}

/** Like JSON.stringify, but a bigint is written as its exact digits. */
export function stringifyExact(value: unknown, space?: number): string {
  const tag = randomBytes(8).toString('hex');
  const json = JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? `${tag}${v}` : v), space);
  return json.replace(new RegExp(`"${tag}(-?\\d+)"`, 'g'), '$1');
}
