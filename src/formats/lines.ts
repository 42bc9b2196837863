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
  /** pending bytes after the last line end: a line still growing */
  private tail = 0;
  private started = false;

  constructor(private readonly chunkBytes: number, private readonly maxLineBytes: number) {}

  /** Chunks of whole lines completed by `buf`, in order. */
  push(buf: Buffer): Chunk[] {
    if (buf.length === 0) return [];
    const last = buf.lastIndexOf(LF);
    this.tail = last === -1 ? this.tail + buf.length : buf.length - last - 1;
    this.parts.push(buf);
    this.size += buf.length;
    if (this.tail > this.maxLineBytes) throw tooLong(this.line + this.parts.reduce((n, p) => n + lineEnds(p), 0), this.maxLineBytes);
    return this.size - this.tail >= this.chunkBytes ? this.take(this.size - this.tail) : [];
  }

  /** What is left at the end of the stream: its last line needs no line end. */
  end(): Chunk[] {
    return this.size > 0 ? this.take(this.size) : [];
  }

  /**
   * The first `upTo` pending bytes (whole lines) as chunks of about chunkBytes, cut at line ends: a
   * read brings several chunks' worth, and one chunk of it all would be a string too large for a
   * thread's young generation (stage.ts, CHUNK_BYTES). Each is copied into memory of its own (see
   * RecordChunker.take), the rest (less than a line) too.
   */
  private take(upTo: number): Chunk[] {
    const all = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    const chunks: Chunk[] = [];
    for (let start = 0; start < upTo; ) {
      const end = upTo - start <= this.chunkBytes ? upTo : cutAt(all, start, start + this.chunkBytes, upTo);
      let bytes = joinOwned([all.subarray(start, end)], end - start);
      const firstLine = this.line;
      this.line += lineEnds(bytes);
      if (!this.started) {
        this.started = true;
        if (bytes.subarray(0, 3).equals(BOM)) bytes = bytes.subarray(3);
      }
      chunks.push({ bytes, firstLine, more: false, owned: true });
      start = end;
    }
    this.parts = upTo < all.length ? [Buffer.from(all.subarray(upTo))] : [];
    this.size = all.length - upTo;
    return chunks;
  }
}

/** Where a chunk from `start` ends: after the last line end before `target`, or else the first after it (a long line). */
function cutAt(all: Buffer, start: number, target: number, upTo: number): number {
  const before = all.lastIndexOf(LF, target - 1);
  if (before >= start) return before + 1;
  const after = all.indexOf(LF, target);
  return after === -1 || after >= upTo ? upTo : after + 1;
}

function lineEnds(buf: Buffer): number {
  let n = 0;
  for (let i = buf.indexOf(LF); i !== -1; i = buf.indexOf(LF, i + 1)) n++;
  return n;
}

export const tooLong = (line: number, max: number) => reject('LIMIT_EXCEEDED', `line ${line}: a record longer than ${max} bytes (the flow's max_record_bytes)`, { line });

/**
 * Each line of a chunk that is not blank, without its line end (LF or CRLF), with its line number and,
 * if the line is all ASCII (one byte a character), the offset of its first byte in the chunk.
 */
export function eachLine(chunk: Chunk, maxLineBytes: number, fn: (text: string, line: number, byteStart: number | undefined) => void): void {
  const text = chunk.bytes.toString('utf8');
  const ascii = text.length === chunk.bytes.length; // valid UTF-8 (checked before): longer only where not ASCII
  let byteStart = 0;
  for (let start = 0, line = chunk.firstLine; start < text.length; line++) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    const next = end + 1;
    if (end > start && text.charCodeAt(end - 1) === 0x0d) end--;
    // A line whole within one read passed the chunker's check unmeasured: it is measured here.
    const record = text.slice(start, end);
    const bytes = ascii ? record.length : Buffer.byteLength(record);
    if (bytes > maxLineBytes) throw tooLong(line, maxLineBytes);
    if (record.charCodeAt(0) > 0x20 || record.trim() !== '') fn(record, line, bytes === record.length ? byteStart : undefined);
    byteStart += bytes + next - end; // and the line end's bytes, CR and LF
    start = next;
  }
}

/** The last line of a chunk that is not blank, and its line number; undefined for a blank chunk. */
export function lastLine(chunk: Chunk): { text: string; line: number } | undefined {
  let found: { text: string; line: number } | undefined;
  eachLine(chunk, Infinity, (text, line) => (found = { text, line }));
  return found;
}
