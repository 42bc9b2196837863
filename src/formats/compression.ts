/**
 * The unpack step, after decryption and before parsing: a .gz is inflated as it streams; a .zip (which
 * needs random access to its directory) is spooled to the delivery's work directory first and must
 * hold exactly one regular file, named without `..` or an absolute path. Both are held to the same
 * limits as OpenPGP's compression (size, ratio) against bombs.
 */
import { createGunzip } from 'node:zlib';
import { Readable, Transform } from 'node:stream';
import type { Entry, ZipFile } from 'yauzl';
import type { Compression, DecompressionLimits } from '../config/config.js';
import { InboxdError, reject } from '../errors.js';
import { visible } from '../visible.js';

export type Unpack = 'gzip' | 'zip';

/** Lets a small file with a large header or a short, highly repetitive CSV through the ratio guard. */
export const RATIO_SLACK = 1024 * 1024;
const ENCRYPTED_NAME = /\.(pgp|gpg|asc)$/i;

/** The flow's setting applied to a file name: `auto` goes by the extension before any OpenPGP one. */
export function unpackOf(setting: Compression, file: string): Unpack | undefined {
  if (setting === 'none') return undefined;
  if (setting !== 'auto') return setting;
  const name = file.replace(ENCRYPTED_NAME, '');
  return /\.gz$/i.test(name) ? 'gzip' : /\.zip$/i.test(name) ? 'zip' : undefined;
}

export const tooBig = (why: string) => reject('LIMIT_EXCEEDED', `the decompressed file is too large: ${why}`);

/** Passes bytes on, counting them; `packed()` is how many compressed bytes they came from. */
function meter(limits: DecompressionLimits, packed: () => number): Transform {
  let out = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      out += chunk.length;
      if (out > limits.maxBytes) return cb(tooBig(`more than ${limits.maxBytes} bytes`));
      if (out > limits.maxRatio * packed() + RATIO_SLACK) return cb(tooBig(`it expands more than ${limits.maxRatio} times`));
      cb(null, chunk);
    },
  });
}

/** A gzip stream inflated (several members, as `cat a.gz b.gz` makes, are one file), within the limits. */
export function gunzip(limits: DecompressionLimits): Transform[] {
  let packed = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      packed += chunk.length;
      cb(null, chunk);
    },
  });
  // Output in large pieces: zlib's default 16 KiB would mean sixteen times the per-chunk work downstream.
  return [counter, createGunzip({ chunkSize: 256 * 1024 }), meter(limits, () => packed)];
}

/** zlib's own errors (Z_DATA_ERROR: not gzip, damaged; Z_BUF_ERROR: cut short) as the partner's fault. */
export function compressionError(err: unknown): InboxdError | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string' || !code.startsWith('Z_')) return undefined;
  const why = code === 'Z_BUF_ERROR' ? 'it ends before the compressed data does (truncated)' : `it is not valid gzip data (${(err as Error).message})`;
  return reject('BAD_COMPRESSION', `the file cannot be decompressed: ${why}`, { cause: (err as Error).message });
}

/** yauzl, loaded with the first zip (or workbook) a run reads, not at every start. */
export const loadYauzl = async () => (await import('yauzl')).default;

const badZip = (why: string) => reject('BAD_COMPRESSION', `the zip file ${why}`);
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;

/**
 * The one file a spooled zip holds, as a stream within the limits. Anything else (two files, a link,
 * a path out of the directory, an encrypted entry, a damaged archive) is rejected before a byte is read.
 */
export async function soleEntry(path: string, limits: DecompressionLimits): Promise<Readable> {
  let zip: ZipFile;
  try {
    const yauzl = await loadYauzl();
    zip = await yauzl.openPromise(path, { lazyEntries: true, autoClose: false, decodeStrings: true, validateEntrySizes: true, strictFileNames: false });
  } catch (err) {
    throw badZip(`cannot be read: ${visible((err as Error).message)}`);
  }
  try {
    const entry = checkEntry(await fileEntries(zip), limits);
    const stream = await zip.openReadStreamPromise(entry).catch((err: Error) => {
      throw badZip(`entry "${visible(entry.fileName)}" cannot be unpacked: ${visible(err.message)}`);
    });
    return Readable.from(inflated(zip, entry, stream, limits), { objectMode: false });
  } catch (err) {
    zip.close();
    throw err;
  }
}

/** The entry's bytes, counted against the limits; its damage (sizes, CRC, deflate data) is the partner's fault. */
async function* inflated(zip: ZipFile, entry: Entry, stream: Readable, limits: DecompressionLimits): AsyncGenerator<Buffer> {
  let out = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      out += chunk.length;
      if (out > limits.maxBytes) throw tooBig(`more than ${limits.maxBytes} bytes`);
      yield chunk;
    }
  } catch (err) {
    if (err instanceof InboxdError) throw err;
    throw badZip(`entry "${visible(entry.fileName)}" is damaged: ${visible((err as Error).message)}`);
  } finally {
    stream.destroy();
    zip.close();
  }
}

/** Every entry but directories (which hold no data); a name that yauzl refuses (`..`, absolute) rejects the zip. */
function fileEntries(zip: ZipFile): Promise<Entry[]> {
  const entries: Entry[] = [];
  return new Promise((resolve, fail) => {
    zip.on('entry', (e: Entry) => {
      if (!e.fileName.endsWith('/')) entries.push(e);
      if (entries.length > 1) return fail(badZip(`holds more than one file ("${visible(entries[0]!.fileName)}", "${visible(e.fileName)}"); it must hold exactly one`));
      zip.readEntry();
    });
    zip.on('end', () => resolve(entries));
    zip.on('error', (err: Error) => fail(badZip(`is damaged or unsafe: ${visible(err.message)}`)));
    zip.readEntry();
  });
}

function checkEntry(entries: Entry[], limits: DecompressionLimits): Entry {
  const entry = entries[0];
  if (!entry) throw badZip('holds no file; it must hold exactly one');
  const name = visible(entry.fileName);
  const mode = (entry.externalFileAttributes >>> 16) & S_IFMT;
  // Unix zips record the file type; a zip from elsewhere records none (0), which is a file too.
  if (mode !== 0 && mode !== S_IFREG) throw badZip(`entry "${name}" is not a regular file (a link or a device); it must hold one regular file`);
  if (entry.isEncrypted()) throw badZip(`entry "${name}" is encrypted; encrypt the file with OpenPGP instead`);
  if (entry.uncompressedSize > limits.maxBytes) throw tooBig(`the zip says "${name}" is ${entry.uncompressedSize} bytes, more than ${limits.maxBytes}`);
  if (entry.uncompressedSize > limits.maxRatio * entry.compressedSize + RATIO_SLACK) throw tooBig(`"${name}" expands more than ${limits.maxRatio} times`);
  return entry;
}
