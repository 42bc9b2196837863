/**
 * The verify step: the sidecar checksum, the manifest, and the control totals found while streaming.
 * Pure functions over values; the orchestrator reads the files and decides.
 */
import { z } from 'zod';
import { reject } from '../errors.js';
import { parseExact } from '../json.js';
import type { Exact } from './map.js';
import { visible } from '../visible.js';

const HEX = /^[0-9a-f]{64}$/i;

/**
 * The sidecar forms partners produce: a bare digest; GNU `sha256sum` (`<hex>  <name>`, `<hex> *<name>`);
 * BSD `SHA256 (<name>) = <hex>`. Upper or lower case. A name, when present, must be the data file's.
 */
export function parseSidecar(text: string, dataFile: string): string {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  if (lines.length !== 1) throw reject('BAD_SIDECAR', `the .sha256 file must hold one checksum line, found ${lines.length}`);
  const line = lines[0]!;
  let hex: string | undefined;
  let name: string | undefined;
  let m: RegExpExecArray | null;
  if (HEX.test(line)) hex = line;
  else if ((m = /^([0-9a-f]{64}) [ *](.+)$/i.exec(line))) [hex, name] = [m[1], m[2]];
  else if ((m = /^SHA256 \((.+)\) = ([0-9a-f]{64})$/i.exec(line))) [name, hex] = [m[1], m[2]];
  if (!hex) throw reject('BAD_SIDECAR', 'the .sha256 file holds no SHA-256 checksum in a known form (bare hex, sha256sum or BSD)');
  if (name !== undefined && baseName(name) !== dataFile) {
    throw reject('BAD_SIDECAR', `the .sha256 file names "${visible(name)}", not "${visible(dataFile)}"`);
  }
  return hex.toLowerCase();
}

const baseName = (p: string) => p.replace(/^.*[\\/]/, '');

const manifestSchema = z.object({
  file: z.string(),
  records: z.number().int().min(0),
  // A sum beyond 2^53 is a bigint (parseExact), read exactly like one given as a string.
  sums: z.record(z.string(), z.union([z.number(), z.bigint(), z.string()])).default({}),
  generated_at: z.string().optional(),
  sha256: z.string().regex(HEX, 'expected 64 hex digits').optional(),
  schema_version: z.number().int().optional(),
});
export type Manifest = z.infer<typeof manifestSchema>;

export function parseManifest(text: string, dataFile: string): Manifest {
  let json: unknown;
  try {
    // A byte-order mark is ignored, as in the CSV and the sidecar (Windows tools write one).
    json = parseExact(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    throw reject('BAD_MANIFEST', `the manifest is not valid JSON: ${visible((err as Error).message)}`);
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw reject('BAD_MANIFEST', `manifest field "${visible(issue.path.join('.')) || '(root)'}": ${issue.message}`);
  }
  const m = parsed.data;
  if (m.file !== baseName(m.file) || m.file === '..' || m.file === '.') {
    throw reject('BAD_MANIFEST', `manifest "file" must be a bare file name, got "${visible(m.file)}"`);
  }
  if (m.file !== dataFile) throw reject('BAD_MANIFEST', `the manifest is for "${visible(m.file)}", not "${visible(dataFile)}"`);
  return m;
}

/**
 * The manifest's sums under our column names. A sum may be named by the partner's column instead
 * (`Quantity` for our `qty`), when that name is no other control total of ours; one column named
 * both ways is refused, since the two could differ.
 */
export function sumsByOurName(sums: Manifest['sums'], partnerNames: ReadonlyMap<string, string>): Manifest['sums'] {
  const ours = new Set(partnerNames.keys());
  const alias = new Map([...partnerNames].filter(([, p]) => !ours.has(p)).map(([o, p]) => [p, o]));
  const seen = new Set<string>();
  const entries = Object.entries(sums).map(([name, v]) => {
    const column = ours.has(name) ? name : alias.get(name) ?? name;
    if (seen.has(column)) throw reject('BAD_MANIFEST', `the manifest gives the sum of "${column}" twice, as "${column}" and as "${visible(partnerNames.get(column)!)}"; give it once`);
    seen.add(column);
    return [column, v] as const;
  });
  // fromEntries defines own properties: a key `__proto__` stays a key.
  return Object.fromEntries(entries);
}

export interface Found {
  sha256: string;
  records: number;
  /** our column -> exact sum; undefined when a value in that column could not be read (bad row) */
  sums: Record<string, Exact | undefined>;
}

/**
 * The manifest's control totals against what was found. `toMinor` converts a manifest sum to our units,
 * exactly. `source`: what stated the totals, in the messages (a fixed-width file's trailer, say).
 */
export function checkTotals(manifest: Pick<Manifest, 'records' | 'sums' | 'sha256'>, found: Found, toMinor: (column: string, v: number | bigint | string) => Exact | undefined, source = 'the manifest'): void {
  if (manifest.sha256 && manifest.sha256.toLowerCase() !== found.sha256) {
    throw reject('MANIFEST_CHECKSUM_MISMATCH', `the manifest's sha256 ${manifest.sha256.toLowerCase()} does not match the file's ${found.sha256}`);
  }
  if (manifest.records !== found.records) {
    throw reject('RECORD_COUNT_MISMATCH', `${source} says ${manifest.records} records, the file has ${found.records}`, { expected: manifest.records, found: found.records });
  }
  for (const column of Object.keys(found.sums)) {
    if (!Object.hasOwn(manifest.sums, column)) throw reject('BAD_MANIFEST', `${source} has no sum for "${column}"`);
  }
  for (const [column, expectedRaw] of Object.entries(manifest.sums)) {
    if (!Object.hasOwn(found.sums, column)) {
      const totals = Object.keys(found.sums).map((c) => `"${c}"`).join(', ') || 'none';
      throw reject('BAD_MANIFEST', `the manifest has a sum for "${visible(column)}", which is not a control-total column of this flow (its control totals: ${totals})`);
    }
    const expected = toMinor(column, expectedRaw);
    if (expected === undefined) throw reject('BAD_MANIFEST', `${source}'s sum for "${column}" is not a number: ${typeof expectedRaw === 'string' ? visible(JSON.stringify(expectedRaw)) : expectedRaw}`);
    const got = found.sums[column];
    if (got !== undefined && got !== expected) {
      throw reject('CONTROL_TOTAL_MISMATCH', `the sum of "${column}" is ${got}, ${source} says ${expected}`, { column, expected, found: got });
    }
  }
}
