/**
 * Line formats (ndjson, fixed): every line is a record, so a file is cut into chunks at any newline,
 * and the staging threads parse them at once, as they do CSV (csv/chunk.ts). A line longer than the
 * flow's max_record_bytes rejects the file, naming the line, before it can fill memory.
 */
import { type Chunk, joinOwned } from './csv/chunk.js';
import { reject } from '../errors.js';

const LF = 0x0a;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

export class LineChunker {
  private parts: Buffer[] = [];
  private size = 0;
  /** line of the first pending byte */
  private line = 1;
  /** line ends among the pending bytes */
  private pendingLines = 0;
  /** pending bytes after the last line end: a line still growing */
  private tail = 0;
  private started = false;

  constructor(private readonly chunkBytes: number, private readonly maxLineBytes: number) {}

  /** Chunks of whole lines completed by `buf`, in order. */
  push(buf: Buffer): Chunk[] {
    if (buf.length === 0) return [];
    const last = buf.lastIndexOf(LF);
    if (last === -1) this.tail += buf.length;
    else {
      for (let i = buf.indexOf(LF); i !== -1; i = buf.indexOf(LF, i + 1)) this.pendingLines++;
      this.tail = buf.length - last - 1;
    }
    this.parts.push(buf);
    this.size += buf.length;
    if (this.tail > this.maxLineBytes) throw tooLong(this.line + this.pendingLines, this.maxLineBytes);
    return this.size - this.tail >= this.chunkBytes ? [this.take(this.size - this.tail)] : [];
  }

  /** What is left at the end of the stream: its last line needs no line end. */
  end(): Chunk[] {
    return this.size > 0 ? [this.take(this.size)] : [];
  }

  /** The first `upTo` pending bytes (whole lines) as a chunk; the rest stays pending. */
  private take(upTo: number): Chunk {
    // The chunk's own memory (see RecordChunker.take), so the tail after it is copied out: less than a line.
    const all = joinOwned(this.parts, this.size);
    let bytes = all.subarray(0, upTo);
    if (!this.started) {
      this.started = true;
      if (bytes.subarray(0, 3).equals(BOM)) bytes = bytes.subarray(3);
    }
    const chunk: Chunk = { bytes, firstLine: this.line, more: false, owned: true };
    this.line += this.pendingLines; // the tail holds no line end
    this.pendingLines = 0;
    const tail = all.subarray(upTo);
    this.parts = tail.length === 0 ? [] : [Buffer.from(tail)];
    this.size = all.length - upTo;
    return chunk;
  }
}

export const tooLong = (line: number, max: number) => reject('LIMIT_EXCEEDED', `line ${line}: a record longer than ${max} bytes (the flow's max_record_bytes)`, { line });

/** Each line of a chunk that is not blank, without its line end (LF or CRLF), with its line number. */
export function eachLine(chunk: Chunk, maxLineBytes: number, fn: (text: string, line: number) => void): void {
  const text = chunk.bytes.toString('utf8');
  for (let start = 0, line = chunk.firstLine; start < text.length; line++) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    const next = end + 1;
    if (end > start && text.charCodeAt(end - 1) === 0x0d) end--;
    // A line whole within one read passed the chunker's check unmeasured: a UTF-16 unit is 1-3 bytes.
    const record = text.slice(start, end);
    if (record.length > maxLineBytes / 3 && Buffer.byteLength(record) > maxLineBytes) throw tooLong(line, maxLineBytes);
    if (record.charCodeAt(0) > 0x20 || record.trim() !== '') fn(record, line);
    start = next;
  }
}

/** The last line of a chunk that is not blank, and its line number; undefined for a blank chunk. */
export function lastLine(chunk: Chunk): { text: string; line: number } | undefined {
  let found: { text: string; line: number } | undefined;
  eachLine(chunk, Infinity, (text, line) => (found = { text, line }));
  return found;
}
