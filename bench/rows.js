// The benches' generated inventory rows: the same values in every bench, written in 64 KiB pieces.
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';

export const CSV_HEADER = 'SKU,Warehouse,Quantity,UnitCost,Currency,Condition,LastModified\r\n';
const CONDS = ['NEW', 'USED', 'REFURBISHED'];

/** Row i as a CSV line. */
export const csvRow = (i) => `SKU-${i},WH${i % 7},${i % 1000},${(i % 10000) / 100},EUR,${CONDS[i % 3]},2025-09-16T0${i % 10}:${String(i % 60).padStart(2, '0')}:00Z\r\n`;
/** Row i as an NDJSON line with nested objects: the same values. */
export const jsonRow = (i) => `${JSON.stringify({ item: { sku: `SKU-${i}`, warehouse: `WH${i % 7}` }, qty: i % 1000, price: { amount: (i % 10000) / 100, currency: 'EUR' }, condition: CONDS[i % 3], updated: `2025-09-16T0${i % 10}:${String(i % 60).padStart(2, '0')}:00Z` })}\n`;

/** Writes `header` then `rows` lines made by `line`; returns the sum of the Quantity column (the manifest's control total). */
export async function writeRows(path, rows, line = csvRow, header = CSV_HEADER) {
  const out = createWriteStream(path);
  const write = async (s) => {
    if (!out.write(s)) await once(out, 'drain');
  };
  let qty = 0;
  let buf = header;
  for (let i = 0; i < rows; i++) {
    qty += i % 1000;
    buf += line(i);
    if (buf.length > 1 << 16) {
      await write(buf);
      buf = '';
    }
  }
  await write(buf);
  out.end();
  await once(out, 'finish');
  return qty;
}
