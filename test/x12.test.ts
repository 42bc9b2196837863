/**
 * EDI X12 (issue 16, step 6), the reader and the answer: interchanges written by hand after the
 * standard's published examples (an 846 inventory advice with LIN/QTY, an 850 purchase order with
 * PO1), read from real files segment by segment; envelope errors rejected naming the segment and
 * element; a 997/999 written for what was read. End to end (the daemon's CLI, the database, the
 * outbox) in x12-ingest.test.ts.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InboxdError } from '../src/errors.js';
import { parseElementRef } from '../src/config/mapping.js';
import { envelopeError, type Interchange, readInterchange, readSegments, type ReadOptions } from '../src/formats/x12.js';
import { type AckKind, writeAnswer } from '../src/formats/x12-ack.js';
import { interchange } from './helpers/x12.js';

const elementRef = (text: string) => parseElementRef(text)!;

/** An 846 after the X12 004010 example: two items, each a LIN loop with its QTY. */
const inventory846 = (st02 = '0001', se01 = '8', ge02 = '1') => [
  'GS*IB*ACMEWHSE*INBOXD*20250916*0200*1*X*004010',
  `ST*846*${st02}`,
  'BIA*00*SI*INV20250916*20250916*Lager Köln',
  'DTM*007*20250916',
  'LIN**SK*SKU-001*UP*012345678905',
  'QTY*33*120*EA',
  'LIN**SK*SKU-002*UP*012345678912',
  'QTY*33*7*EA',
  `SE*${se01}*0001`,
  `GE*1*${ge02}`,
];

/** An 850 after the published example: header BEG, two PO1 lines. */
const order850 = [
  'GS*PO*ACMEWHSE*INBOXD*20250916*0200*7*X*004010',
  'ST*850*0042',
  'BEG*00*SA*PO-9001**20250916',
  'PO1*1*10*EA*9.95**VP*SKU-001',
  'PO1*2*x5*EA*4.50**VP*SKU-002',
  'CTT*2',
  'SE*6*0042',
  'GE*1*7',
];

let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(join(tmpdir(), 'x12-'));
});
afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

async function read(text: string, opts: ReadOptions) {
  const path = join(dir, `in-${Math.random().toString(36).slice(2)}.x12`);
  await fsp.writeFile(path, text);
  // a tiny highWaterMark: segments and the ISA itself cross chunk boundaries
  return readInterchange(readSegments(createReadStream(path, { highWaterMark: 7 })), opts);
}

async function rejection(text: string, opts: ReadOptions): Promise<InboxdError> {
  const err = await read(text, opts).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(InboxdError);
  return err as InboxdError;
}

const lin: ReadOptions = { line: 'LIN', fields: ['BIA03', 'LIN03', 'QTY02'].map(elementRef) };
const po1: ReadOptions = {
  line: 'PO1',
  fields: ['BEG03', 'PO107', 'PO102', 'PO104'].map(elementRef),
  check: (field, value) => (field === 2 && !/^\d+$/.test(value) ? '6' : undefined), // PO102 quantity: digits
};
const at = new Date('2025-09-16T02:05:00Z');
const writeAck = (rx: Interchange, opts: { kind?: AckKind; rejected?: boolean } = {}) => writeAnswer(rx, { control: 501, at, ack: { kind: opts.kind ?? 997, rx, rejected: opts.rejected ?? true } });

describe('X12 reader', () => {
  it('846: each LIN loop is a row, the header BIA repeats onto each', async () => {
    const rx = await read(interchange('000000123', inventory846()), lin);
    expect(rx.control).toBe('000000123');
    expect(rx.sender).toBe('ACMEWHSE');
    expect(rx.sets).toHaveLength(1);
    expect(rx.sets[0]?.rows).toEqual([
      ['INV20250916', 'SKU-001', '120'],
      ['INV20250916', 'SKU-002', '7'],
    ]);
  });

  it('with onRow, rows are handed on as read and not kept', async () => {
    const seen: string[] = [];
    const rx = await read(interchange('000000123', inventory846()), { ...lin, onRow: (r, set) => seen.push(`${set.control}:${r.join('|')}`) });
    expect(seen).toEqual(['0001:INV20250916|SKU-001|120', '0001:INV20250916|SKU-002|7']);
    expect(rx.sets[0]?.rows).toEqual([]);
  });

  it('a character split between two chunks is read whole', async () => {
    const bytes = Buffer.from(interchange('000000123', inventory846()));
    const cut = bytes.indexOf(Buffer.from('ö')) + 1; // between the two bytes of ö
    const rx = await readInterchange(readSegments([bytes.subarray(0, cut), bytes.subarray(cut)]), { line: 'LIN', fields: [elementRef('BIA05')] });
    expect(rx.sets[0]?.rows[0]).toEqual(['Lager Köln']);
  });

  it('a wrong SE count is recorded on its set (AK5 code 4), naming the segment and SE01', async () => {
    const rx = await read(interchange('000000123', inventory846('0001', '9')), lin);
    expect(rx.sets[0]?.error).toEqual({ code: '4', message: 'segment 10 (SE01): SE01 says 9 segments, the set has 8 (ST to SE)' });
    expect(envelopeError(rx)?.message).toBe('segment 10 (SE01): SE01 says 9 segments, the set has 8 (ST to SE)');
    expect(writeAck(rx)).toContain('AK2*846*0001~\nAK5*R*4~\nAK9*R*1*1*0~');
  });

  it('SE02 not ST02 is recorded on its set (AK5 code 3)', async () => {
    const rx = await read(interchange('000000123', inventory846('0002')), lin);
    expect(rx.sets[0]?.error).toEqual({ code: '3', message: 'segment 10 (SE02): SE02 "0001" is not ST02 "0002" (segment 3)' });
  });

  it('GE02 not GS06 is recorded on its group (AK9 code 4)', async () => {
    const rx = await read(interchange('000000123', inventory846('0001', '8', '2')), lin);
    expect(envelopeError(rx)).toEqual({ code: '4', message: 'segment 11 (GE02): GE02 "2" is not GS06 "1" (segment 2)' });
    expect(writeAck(rx, { rejected: false })).toContain('AK5*A~\nAK9*R*1*1*0*4~');
  });

  it('IEA02 not ISA13 stops the reading, with TA1 note 001', async () => {
    const err = await rejection(interchange('000000123', inventory846(), { iea: '000000124' }), lin);
    expect(err.message).toBe('segment 12 (IEA02): IEA02 "000000124" is not ISA13 "000000123" (segment 1)');
    expect(err.details.note).toBe('001');
  });

  it('an ISA13 that is not nine digits is refused: it is the sequence deliveries are deduplicated by', async () => {
    const err = await rejection(interchange('00000012X', inventory846()), lin);
    expect(err.message).toBe('segment 1 (ISA13): ISA13 "00000012X" is not an interchange control number (9 digits)');
  });

  it('a segment without a terminator longer than the limit is refused', async () => {
    const text = interchange('000000123', inventory846()).replace('BIA*00*SI*INV20250916*20250916*Lager Köln~', `BIA*${'x'.repeat(5000)}`);
    for (const chunks of [[text], text.match(/[^]{1,64}/g)!]) {
      const err = await readInterchange(readSegments(chunks, 1000), lin).then(() => undefined, (e: unknown) => e as InboxdError);
      expect(err?.code).toBe('LIMIT_EXCEEDED');
      expect(err?.message).toBe("segment 4: longer than 1000 bytes (the flow's max_record_bytes)");
    }
  });

  it('the separators are those the ISA fixes (| elements, ^ components, ! terminator, CRLF between)', async () => {
    const text = interchange('000000126', inventory846()).replace(/\*/g, '|').replace(/~/g, '!').replace(/\n/g, '\r\n').replace('|>!', '|^!');
    const rx = await read(text, lin);
    expect(rx.sets[0]?.rows).toEqual([
      ['INV20250916', 'SKU-001', '120'],
      ['INV20250916', 'SKU-002', '7'],
    ]);
  });

  it('two groups, each counted on its own; an ST with no SE before it is rejected', async () => {
    const rx = await read(interchange('000000127', [...inventory846(), ...order850]).replace('IEA*1*', 'IEA*2*'), lin);
    expect(rx.sets.map((s) => `${s.group.functionalId}${s.group.control}/${s.type}`)).toEqual(['IB1/846', 'PO7/850']);
    const noSe = inventory846().filter((s) => !s.startsWith('SE'));
    const err = await rejection(interchange('000000128', [...noSe.slice(0, 4), 'ST*846*0002', ...noSe.slice(4)]), lin);
    expect(err.message).toBe('segment 6 (ST): ST inside an open transaction set (SE missing)');
  });

  it('a file that is not an interchange is rejected at segment 1', async () => {
    const err = await rejection('Sku,Quantity\nSKU-001,3\n'.repeat(10), lin);
    expect(err.message).toMatch(/^segment 1: the file does not start with an ISA segment/);
  });

  it('an interchange cut short (no IEA) is rejected', async () => {
    const text = interchange('000000123', inventory846()).replace(/IEA\*1\*000000123~\n$/, '');
    expect((await rejection(text, lin)).message).toBe('the interchange ends without IEA');
  });
});

describe('X12 answers', () => {
  it('a good 846 gets a 997 with AK9*A, sender and receiver swapped, control numbers from the plan', async () => {
    const rx = await read(interchange('000000123', inventory846()), lin);
    const ack = writeAck(rx, { rejected: false });
    expect(ack.split('\n')).toEqual([
      'ISA*00*          *00*          *ZZ*INBOXD         *ZZ*ACMEWHSE       *250916*0205*U*00401*000000501*0*P*>~',
      'GS*FA*INBOXD*ACMEWHSE*20250916*0205*1*X*004010~',
      'ST*997*0001~',
      'AK1*IB*1~',
      'AK2*846*0001~',
      'AK5*A~',
      'AK9*A*1*1*1~',
      'SE*6*0001~',
      'GE*1*1~',
      'IEA*1*000000501~',
      '',
    ]);
    expect(ack.indexOf('~')).toBe(105); // our ISA is 106 characters too
    expect(writeAck(rx, { rejected: false })).toBe(ack); // the same plan, the same bytes (a re-answer after a crash)
  });

  it('850 with a bad PO102: the 997 names the segment (AK3) and element (AK4), set rejected', async () => {
    const rx = await read(interchange('000000124', order850), po1);
    expect(rx.sets[0]?.rows).toEqual([
      ['PO-9001', 'SKU-001', '10', '9.95'],
      ['PO-9001', 'SKU-002', 'x5', '4.50'],
    ]);
    expect(rx.sets[0]?.errors).toEqual([{ segmentId: 'PO1', position: 4, element: 2, code: '6', value: 'x5' }]);
    const ack = writeAck(rx);
    expect(ack).toContain('AK2*850*0042~\nAK3*PO1*4**8~\nAK4*2**6*x5~\nAK5*R*5~\nAK9*R*1*1*0~');
  });

  it('999 when configured: IK3/IK4/IK5; accepted with errors gives E', async () => {
    const rx = await read(interchange('000000124', order850), po1);
    const ack = writeAck(rx, { kind: 999, rejected: false });
    expect(ack).toContain('ST*999*0001*005010X231A1~');
    expect(ack).toContain('IK3*PO1*4**8~\nIK4*2**6*x5~\nIK5*E*5~\nAK9*E*1*1*1~');
  });

  it('TA1 for the interchange when asked (ISA14=1)', async () => {
    const rx = await read(interchange('000000125', inventory846(), { ack: '1' }), lin);
    expect(rx.ackRequested).toBe(true);
    expect(writeAnswer(rx, { control: 501, at, ta1: {} })).toContain('TA1*000000125*250916*0205*A*000~\nIEA*0*000000501~');
    expect(writeAnswer(rx, { control: 501, at, ta1: { note: '025' } })).toContain('TA1*000000125*250916*0205*R*025~');
  });
});
