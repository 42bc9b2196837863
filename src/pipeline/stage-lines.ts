/**
 * The end of a line format's byte stream (ndjson, fixed; UTF-8 by now): cuts it into chunks of whole
 * lines for the staging threads (stage.ts), as stagingSink does for CSV. Records arrive in mapping
 * order, so the threads take the mapping's own partner names as the "header". The file's last line is
 * kept for the caller: a fixed-width trailer is read from it.
 */
import { isUtf8 } from 'node:buffer';
import { Writable } from 'node:stream';
import type { Chunk } from '../formats/csv/chunk.js';
import { utf8ErrorLine } from '../formats/csv/parse.js';
import { lastLine, LineChunker } from '../formats/lines.js';
import type { FieldSpec } from '../config/mapping.js';
import { reject } from '../errors.js';
import { CHUNK_BYTES, type Stager } from './stage.js';

export interface LineSinkSpec {
  fields: readonly FieldSpec[];
  maxRecordBytes: number;
  encoding: string;
  /** a decoder upstream has already refused bytes that are not text */
  utf8Checked: boolean;
  chunkBytes?: number;
  /** at the end: the file's last line that is not blank */
  onLastLine?: (last: { text: string; line: number } | undefined) => void;
}

export function lineStagingSink(stager: Pick<Stager, 'start' | 'add'>, spec: LineSinkSpec): Writable {
  const chunker = new LineChunker(spec.chunkBytes ?? CHUNK_BYTES, spec.maxRecordBytes);
  stager.start(spec.fields.map((f) => f.partner), spec.fields.length);
  let last: Chunk | undefined; // the last chunk with a line in it
  const send = async (chunks: Chunk[]): Promise<void> => {
    for (const chunk of chunks) {
      if (!spec.utf8Checked && !isUtf8(chunk.bytes)) {
        const line = utf8ErrorLine(chunk);
        throw reject('BAD_ENCODING', `line ${line}: bytes that are not valid ${spec.encoding}`, { line });
      }
      // The last chunk is read again at the end, so it stays here rather than moving to a thread.
      if (spec.onLastLine && chunk.bytes.some((b) => b > 0x20)) last = chunk;
      await stager.add(spec.onLastLine ? { ...chunk, owned: false } : chunk, false);
    }
  };
  // async: a line too long, thrown by the chunker, becomes a rejection like any other
  const push = async (fn: () => Chunk[]) => send(fn());
  return new Writable({
    write(buf: Buffer, _enc, cb) {
      push(() => chunker.push(buf)).then(() => cb(), cb);
    },
    final(cb) {
      push(() => chunker.end()).then(() => spec.onLastLine?.(last && lastLine(last))).then(() => cb(), cb);
    },
  });
}
