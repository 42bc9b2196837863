// X12 reader: an 846 of N LIN/QTY lines (default 200k, ~10 MB) read from a file, rows counted, not kept.
// The file is written by a child process, so the RSS printed is the reader's own.
// Usage: npm run bench:x12 [-- lines]
import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseElementRef } from '../dist/config/mapping.js';
import { readInterchange, readSegments } from '../dist/formats/x12.js';

const [, self, arg, out] = process.argv;
if (arg === 'write') {
  const n = Number(process.argv[4]);
  const pad = (t, w) => t.padEnd(w, ' ');
  const file = createWriteStream(out);
  file.write(['ISA', '00', pad('', 10), '00', pad('', 10), 'ZZ', pad('ACME', 15), 'ZZ', pad('INBOXD', 15), '260915', '0200', 'U', '00401', '000000001', '0', 'P', '>'].join('*') + '~\n');
  file.write('GS*IB*ACME*INBOXD*20250916*0200*1*X*004010~\nST*846*0001~\nBIA*00*SI*INV1*20250916~\n');
  for (let i = 0; i < n; i++) if (!file.write(`LIN**SK*SKU-${i}*UP*012345678905~\nQTY*33*${i}*EA~\n`)) await new Promise((r) => file.once('drain', r));
  file.end(`SE*${2 * n + 3}*0001~\nGE*1*1~\nIEA*1*000000001~\n`);
  await new Promise((r) => file.once('finish', r));
} else {
  const n = Number(arg ?? 200_000);
  const path = join(tmpdir(), `x12-bench-${process.pid}.x12`);
  execFileSync(process.execPath, [self, 'write', path, String(n)]);
  const start = Date.now();
  let rows = 0;
  await readInterchange(readSegments(createReadStream(path)), { line: 'LIN', fields: ['BIA03', 'LIN03', 'QTY02'].map((t) => parseElementRef(t)), onRow: () => rows++ });
  const ms = Date.now() - start;
  console.log(`${rows} rows, ${(statSync(path).size / 1e6).toFixed(1)} MB: ${ms} ms, ${Math.round(process.memoryUsage().rss / 1e6)} MB rss`);
  rmSync(path);
}
