/**
 * Cuts a UTF-8 byte stream into chunks of whole CSV records, so that several threads can parse a
 * file at once (csv-parse is the costliest step of a delivery, and a core each is what makes it fast).
 *
 * A cut is made only at a newline outside quotes, found by counting quote bytes. For any file csv-parse
 * accepts that is exact: unquoted fields hold no quote (csv-parse refuses a stray one), a quoted field
 * holds its quotes in pairs, so the count is even exactly between records. A file that offers no such
 * newline within `cap` bytes (old Mac CR line ends, an unclosed quote, quoting csv-parse will refuse) is
 * no longer cut at guesses: from there on its chunks are flagged `more` and go to ONE parser in order,
 * which then sees the bytes exactly as a single sequential parser would.
 */

export interface Chunk {
  bytes: Buffer;
  /** line number of the chunk's first byte; a line ends at LF, CRLF or a lone CR */
  firstLine: number;
  /** the chunk ends inside a record: the same parser must go on with the next chunk */
  more: boolean;
  /** `bytes` lie in memory of their own that nothing else refers to: a staging thread may take it over (stage.ts) */
  owned?: boolean;
}

/**
 * Joins `parts` into memory of its own. Not Buffer.concat: that takes a small result from Node's
 * shared pool, which must never be handed to another thread.
 */
export function joinOwned(parts: readonly Buffer[], size: number): Buffer {
  const out = Buffer.allocUnsafeSlow(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const LF = 0x0a;
const CR = 0x0d;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

export class RecordChunker {
  private parts: Buffer[] = [];
  private size = 0;
  private line = 1; // line of the first pending byte
  private pendingLines = 0;
  private inQuote = false;
  private lastByte = 0;
  private started = false;
  private sequential = false;
  /** The first chunk is the first line: it holds the header, needed before any other chunk is read. */
  private target = 1;

  constructor(private readonly quote: number, private readonly chunkBytes: number, private readonly cap: number) {}

  /** Chunks completed by `buf`, in order. */
  push(buf: Buffer): Chunk[] {
    const out: Chunk[] = [];
    if (this.sequential) {
      // Lines still counted: a chunk's first line is what names an undecodable byte in it.
      this.append(buf, 0, buf.length, this.lineEnds(buf, 0, buf.length));
      if (buf.length) this.lastByte = buf[buf.length - 1]!;
      if (this.size >= this.chunkBytes) this.cutAtCharBoundary(out);
      return out;
    }
    let from = 0;
    let lines = 0;
    if (!this.inQuote && buf.indexOf(this.quote) === -1) {
      // No quote in sight, so every newline ends a record: native searches find them, no byte loop.
      for (let at; (at = buf.indexOf(LF, from + Math.max(0, this.target - this.size - 1))) !== -1; ) {
        this.append(buf, from, at + 1, this.lineEnds(buf, from, at + 1));
        out.push(this.take(false));
        from = at + 1;
        this.target = this.chunkBytes;
      }
      lines = this.lineEnds(buf, from, buf.length);
    } else {
      for (let i = 0; i < buf.length; i++) {
        const b = buf[i];
        if (b === this.quote) this.inQuote = !this.inQuote;
        else if (b === CR) lines++;
        else if (b === LF) {
          if ((i > 0 ? buf[i - 1] : this.lastByte) !== CR) lines++;
          if (!this.inQuote && this.size + i + 1 - from >= this.target) {
            this.append(buf, from, i + 1, lines);
            out.push(this.take(false));
            from = i + 1;
            lines = 0;
            this.target = this.chunkBytes;
          }
        }
      }
    }
    this.append(buf, from, buf.length, lines);
    if (buf.length) this.lastByte = buf[buf.length - 1]!;
    if (this.size > this.cap) {
      this.sequential = true;
      this.cutAtCharBoundary(out);
    }
    return out;
  }

  /** What is left at the end of the stream; after chunks flagged `more`, always one, to end their run. */
  end(): Chunk[] {
    return this.size > 0 || this.sequential ? [this.take(false)] : [];
  }

  /** Line ends in buf[from, to): each CR and each LF, a CRLF once. */
  private lineEnds(buf: Buffer, from: number, to: number): number {
    let n = 0;
    for (let i = buf.indexOf(CR, from); i !== -1 && i < to; i = buf.indexOf(CR, i + 1)) n++;
    for (let i = buf.indexOf(LF, from); i !== -1 && i < to; i = buf.indexOf(LF, i + 1)) if ((i > 0 ? buf[i - 1] : this.lastByte) !== CR) n++;
    return n;
  }

  private append(buf: Buffer, from: number, to: number, lines: number): void {
    if (to > from) this.parts.push(buf.subarray(from, to));
    this.size += to - from;
    this.pendingLines += lines;
  }

  /**
   * Sequential mode: everything pending but a character cut short, which waits for its other bytes
   * (bytes of 0x80 and up: the line ends counted all belong to the chunk).
   */
  private cutAtCharBoundary(out: Chunk[]): void {
    const all = Buffer.concat(this.parts, this.size);
    const at = completeUtf8(all);
    this.parts = [all.subarray(0, at)];
    this.size = at;
    const chunk = this.take(true);
    if (at < all.length) {
      this.parts = [all.subarray(at)];
      this.size = all.length - at;
    }
    out.push(chunk);
  }

  private take(more: boolean): Chunk {
    // Copied even from one part (a piece of the caller's buffer): a copy is cheaper than the clone
    // posting it to a thread would make, and the chunk's own memory moves to the thread instead.
    let bytes = joinOwned(this.parts, this.size);
    if (!this.started) {
      this.started = true;
      if (bytes.subarray(0, 3).equals(BOM)) bytes = bytes.subarray(3);
    }
    const chunk: Chunk = { bytes, firstLine: this.line, more, owned: true };
    this.line += this.pendingLines;
    this.parts = [];
    this.size = 0;
    this.pendingLines = 0;
    return chunk;
  }
}

/** The length of `buf` without a UTF-8 sequence cut short at its end. */
export function completeUtf8(buf: Buffer): number {
  for (let back = 1; back <= 4 && back <= buf.length; back++) {
    const b = buf[buf.length - back]!;
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: look further back for the lead
    const need = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
    return need > back ? buf.length - back : buf.length;
  }
  return buf.length;
}
