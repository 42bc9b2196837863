/** X12 interchanges written the way the standard's published examples lay them out, for the tests. */
const pad = (t: string, w: number) => t.padEnd(w, ' ');

/** A fixed-width ISA (106 characters with its terminator). `ack` '1' asks for a TA1 (ISA14). */
export const isa = (control: string, ack = '0') =>
  ['ISA', '00', pad('', 10), '00', pad('', 10), 'ZZ', pad('ACMEWHSE', 15), 'ZZ', pad('INBOXD', 15), '260915', '0200', 'U', '00401', control, ack, 'P', '>'].join('*') + '~';

export function interchange(control: string, body: string[], opts: { iea?: string; ack?: string } = {}): string {
  return [isa(control, opts.ack), ...body.map((s) => `${s}~`), `IEA*1*${opts.iea ?? control}~`].join('\n') + '\n';
}

/** An 846 after the X12 004010 example: a header BIA (report date) and N1 (warehouse), then a LIN loop with its QTY per item. */
export function inventory846(items: { sku: string; qty: string }[], o: { st02?: string; se01?: string; ge02?: string } = {}): string[] {
  const lines = items.flatMap((it) => [`LIN**SK*${it.sku}*UP*012345678905`, `QTY*33*${it.qty}*EA`]);
  const body = ['BIA*00*SI*INV20250916*20250916', 'N1*WH*Lager Koeln*92*BER1', ...lines];
  return [
    'GS*IB*ACMEWHSE*INBOXD*20250916*0200*1*X*004010',
    `ST*846*${o.st02 ?? '0001'}`,
    ...body,
    `SE*${o.se01 ?? body.length + 2}*0001`,
    `GE*1*${o.ge02 ?? '1'}`,
  ];
}
