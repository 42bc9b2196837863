/**
 * The decrypt step: an OpenPGP file in, a stream of plaintext bytes out, plus
 * a verdict (`done`) on integrity and signature that arrives at the end.
 *
 * Why streaming unauthenticated plaintext is safe here: openpgp can only check
 * a SEIPDv1 message's integrity (MDC) once the whole message has been read,
 * and buffering hundreds of MB to check it first would make memory grow with
 * file size. So the plaintext flows before it is authenticated, on one
 * condition the caller keeps: nothing derived from it is committed,
 * acknowledged or shown to anyone until `done` resolves. Rows land in a
 * per-delivery staging area (an open transaction) that is discarded when the
 * stream or `done` fails, so tampered or truncated files leave no trace.
 */
import { Readable, pipeline } from 'node:stream';
import { createInflate, createInflateRaw } from 'node:zlib';
import type * as openpgp from 'openpgp';
import { classify, InboxdError, reject } from '../errors.js';
import { fpr, signingKeyProblem } from './keys.js';
import { type OpenPGP, pgp } from './lib.js';

export interface DecryptOptions {
  /** several may be active at once during a key rotation */
  decryptionKeys: openpgp.PrivateKey[];
  /** the partner's keys; several may be active at once */
  verificationKeys: openpgp.PublicKey[];
  requireSignature: boolean;
  /** cap on plaintext size */
  maxDecompressedBytes: number;
  /** cap on plaintext bytes / ciphertext bytes, e.g. 100 */
  maxCompressionRatio: number;
}

export interface DecryptResult {
  /** plaintext bytes; errors with the same InboxdError as `done` and ends only after `done` resolved */
  plaintext: Readable;
  /** Resolves after the plaintext has ended and integrity (MDC/AEAD) and signature are checked;
   *  rejects with an InboxdError otherwise. Always attach a handler. */
  done: Promise<Verdict>;
}

const ENCRYPTED_NAME = /\.(pgp|gpg|asc)$/i;
export const isEncryptedName = (name: string) => ENCRYPTED_NAME.test(name);

/** Ciphers a modern sender never picks; openpgp decrypts them, so we refuse them ourselves. */
const WEAK_CIPHERS = new Set(['idea', 'tripledes', 'cast5', 'blowfish']);
/** Lets a small file with a large header or a short, highly repetitive CSV through the ratio guard. */
const RATIO_SLACK = 1024 * 1024;

const text = (err: unknown) => (err instanceof Error ? err.message : String(err));

/**
 * The one message partners get for any decryption failure (wrong key, tampered,
 * truncated, malformed, unsupported): distinguishing them would hand an
 * attacker an oracle. `details.cause` is for our logs only and must never be
 * copied into the partner's error report.
 */
export function decryptFailed(cause: unknown): InboxdError {
  return new InboxdError('DECRYPT_FAILED', 'the file could not be decrypted', { cause: text(cause) }, { cause });
}

const tooBig = (why: string) => reject('LIMIT_EXCEEDED', `the decrypted file is too large: ${why}`);

/** openpgp enforces maxDecompressedMessageSize inside the decompressor; its errors say so in these words. */
const isSizeLimitError = (err: unknown) => /maximum decompressed (message )?size exceeded/i.test(text(err));

export async function decryptStream(ciphertext: Readable, opts: DecryptOptions): Promise<DecryptResult> {
  const source = ciphertext[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const meter = { cipherBytes: 0, sourceError: undefined as unknown };

  // Armor is detected from the first bytes, not the file name: partners name files inconsistently.
  let head = Buffer.alloc(0);
  try {
    while (head.length < 64) {
      const r = await source.next();
      if (r.done) break;
      head = Buffer.concat([head, r.value]);
    }
  } catch (err) {
    throw classify(err);
  }
  meter.cipherBytes = head.length;
  const armored = head.toString('latin1').trimStart().startsWith('-----BEGIN PGP');
  const input = webStream(head, source, meter);

  const { lib, policy } = await pgp();
  const config = {
    ...policy,
    allowUnauthenticatedStream: true,
    maxDecompressedMessageSize: opts.maxDecompressedBytes,
    additionalAllowedPackets: [boundedCompressedPacket(lib)],
  };
  let result: { data: ReadableStream<Uint8Array>; signatures: Signatures };
  try {
    const message = armored
      ? await lib.readMessage({ armoredMessage: input.pipeThrough(new TextDecoderStream() as TransformStream<Uint8Array, string>), config })
      : await lib.readMessage({ binaryMessage: input, config });
    // Session keys first, so the cipher can be vetted before any plaintext is produced.
    const sessionKeys = await lib.decryptSessionKeys({ message, decryptionKeys: opts.decryptionKeys, config });
    const weak = sessionKeys.find((k) => k.algorithm && WEAK_CIPHERS.has(k.algorithm));
    if (weak) throw new Error(`refusing weak cipher ${weak.algorithm}`);
    result = await lib.decrypt({
      message, sessionKeys: sessionKeys as openpgp.SessionKey[], verificationKeys: opts.verificationKeys, format: 'binary', config,
    });
  } catch (err) {
    await source.return?.().catch(() => {}); // closes the file; `input` itself is locked by openpgp's reader by now
    if (meter.sourceError) throw classify(meter.sourceError);
    throw isSizeLimitError(err) ? tooBig(`more than ${opts.maxDecompressedBytes} bytes`) : decryptFailed(err);
  }

  let settle!: { resolve: (v: Verdict) => void; reject: (e: InboxdError) => void };
  const done = new Promise<Verdict>((resolve, rejectDone) => { settle = { resolve, reject: rejectDone }; });
  done.catch(() => {}); // the plaintext stream reports the same error; an unobserved `done` must not crash the process

  async function* pump(): AsyncGenerator<Buffer> {
    const reader = result.data.getReader();
    let plainBytes = 0;
    let ended = false;
    try {
      for (;;) {
        const r = await reader.read().catch((err: unknown) => {
          if (meter.sourceError) throw classify(meter.sourceError);
          throw isSizeLimitError(err) ? tooBig(`more than ${opts.maxDecompressedBytes} bytes`) : decryptFailed(err);
        });
        if (r.done) break;
        plainBytes += r.value.length;
        if (plainBytes > opts.maxDecompressedBytes) throw tooBig(`more than ${opts.maxDecompressedBytes} bytes`);
        if (plainBytes > opts.maxCompressionRatio * meter.cipherBytes + RATIO_SLACK) {
          throw tooBig(`expands more than ${opts.maxCompressionRatio} times`);
        }
        // An error thrown in here comes from the consumer (it destroyed the stream), not from the file.
        yield Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      }
      ended = true;
      // The stream ended without error, so integrity is proven; only now do signatures mean anything.
      settle.resolve(await checkSignatures(result.signatures, opts));
    } catch (err) {
      settle.reject(err instanceof InboxdError ? err : classify(err));
      throw err;
    } finally {
      // Whatever stopped us, stop reading the file too. Cancelling reaches the source unless openpgp's
      // stream has already errored (then cancel is a no-op), hence the direct return() as well.
      if (!ended) {
        await reader.cancel().catch(() => {});
        await source.return?.().catch(() => {});
      }
      settle.reject(new InboxdError('IO_ERROR', 'the plaintext stream was closed before its end')); // no-op once settled
    }
  }

  return { plaintext: Readable.from(pump(), { objectMode: false }), done };
}

/**
 * Node's DecompressionStream, which openpgp uses for zip/zlib, takes input
 * without backpressure (its writable side counts queued chunks, not bytes,
 * against a high-water mark of 16384), so openpgp pumps the whole compressed
 * file into it and memory grows with the file. openpgp lets a call replace a
 * packet class (`additionalAllowedPackets`, keyed by tag), so ours inflates
 * with node:zlib, pulling input only as output is read, and hands openpgp the
 * result as "uncompressed" data for the usual parsing and size limit.
 */
function boundedCompressedPacket(lib: OpenPGP) {
  // `decompress` (what `read()` calls once the algorithm octet is parsed) is private in openpgp's typings only.
  type Internals = { algorithm: number; compressed: ReadableStream<Uint8Array> | Uint8Array; decompress(config?: openpgp.Config): Promise<void> };
  const Base = lib.CompressedDataPacket as unknown as { new(config?: openpgp.Config): Internals; readonly tag: openpgp.enums.packet };
  let seen = 0;
  class BoundedCompressedDataPacket extends Base {
    override async decompress(config?: openpgp.Config): Promise<void> {
      // openpgp refuses nested compression (a bomb multiplier); replacing the class would allow it, so refuse it here.
      if (++seen > 1) throw new Error('nested compressed data packet');
      const algorithm: openpgp.enums.compression = this.algorithm;
      if (algorithm !== lib.enums.compression.zip && algorithm !== lib.enums.compression.zlib) return super.decompress(config);
      this.compressed = inflate(this.compressed, algorithm === lib.enums.compression.zip);
      this.algorithm = lib.enums.compression.uncompressed;
      try {
        await super.decompress(config);
      } finally {
        this.algorithm = algorithm;
      }
    }
  }
  return BoundedCompressedDataPacket as unknown as { new(): unknown; tag: openpgp.enums.packet };
}

/** zlib expands a whole input chunk at once (up to ~1000x), so input is fed in small slices to bound one step's output. */
const INFLATE_SLICE = 16 * 1024;

function inflate(input: ReadableStream<Uint8Array> | Uint8Array, raw: boolean): ReadableStream<Uint8Array> {
  const source = input instanceof Uint8Array ? Readable.from([input]) : Readable.fromWeb(input as import('node:stream/web').ReadableStream<Uint8Array>);
  const inflater = raw ? createInflateRaw({ chunkSize: 64 * 1024 }) : createInflate({ chunkSize: 64 * 1024 });
  async function* slices(chunks: AsyncIterable<Uint8Array>) {
    for await (const chunk of chunks) {
      for (let i = 0; i < chunk.length; i += INFLATE_SLICE) yield chunk.subarray(i, i + INFLATE_SLICE);
    }
  }
  // Errors (including openpgp's integrity error from upstream) destroy the inflater and surface in `out.next()`.
  pipeline(source, slices, inflater, () => {});
  const out = inflater[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const r = await out.next();
      if (r.done) controller.close();
      else controller.enqueue(r.value);
    },
    async cancel() {
      await out.return?.();
    },
  }, { highWaterMark: 1024 * 1024, size: (chunk) => chunk.byteLength }); // a little read-ahead keeps zlib's thread busy
}

/** Counts ciphertext bytes for the ratio guard and remembers our own read errors, which must not be blamed on the partner. */
function webStream(head: Buffer, source: AsyncIterator<Buffer>, meter: { cipherBytes: number; sourceError: unknown }) {
  let pending: Buffer | null = head.length ? head : null;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (pending) {
        controller.enqueue(pending);
        pending = null;
        return;
      }
      try {
        const r = await source.next();
        if (r.done) return controller.close();
        meter.cipherBytes += r.value.length;
        controller.enqueue(r.value);
      } catch (err) {
        meter.sourceError = err;
        controller.error(err);
      }
    },
    async cancel() {
      await source.return?.();
    },
  }, { highWaterMark: 0 });
}

/** Who signed: a key of the partner's (`signedBy`), or, accepted without `require_signature`, a key we do not know. */
export type Verdict = { signedBy?: string; unknownSigner?: string };

/** The signature verdict in words, for the audit trail. */
export const signerText = (v: Verdict) => (v.signedBy ? `signed by ${v.signedBy}` : v.unknownSigner ? `signed by an unknown key ${v.unknownSigner}` : 'not signed');
type Signatures = openpgp.DecryptMessageResult['signatures'];

/**
 * Accepts if any signature is good and made by a key valid both when it signed
 * and now (openpgp checks only the former; a key the partner let expire or
 * revoked since must not be trusted). Otherwise reports the most telling reason.
 */
async function checkSignatures(signatures: Signatures, opts: DecryptOptions): Promise<Verdict> {
  if (signatures.length === 0) {
    if (opts.requireSignature) throw reject('SIGNATURE_REQUIRED', 'the file is not signed, and this partner must sign files');
    return {};
  }
  const now = new Date();
  const failures: InboxdError[] = [];
  for (const sig of signatures) {
    const keyId = sig.keyID.toHex().toUpperCase();
    const key = opts.verificationKeys.find((k) => k.getKeys(sig.keyID).length > 0);
    if (!key) {
      const issuer = (await sig.signature.catch(() => undefined))?.packets[0]?.issuerFingerprint;
      const fingerprint = issuer ? Buffer.from(issuer).toString('hex').toUpperCase() : keyId;
      failures.push(reject('SIGNATURE_UNKNOWN_KEY', `the file is signed by key ${keyId}, which is not a key we hold for this partner`, { keyId, fingerprint }));
      continue;
    }
    const outcome = await sig.verified.then(() => null, (err: unknown) => err);
    let problem = await signingKeyProblem(key, sig.keyID, now);
    if (!problem && outcome) {
      const created = (await sig.signature.catch(() => undefined))?.packets[0]?.created;
      if (created) problem = await signingKeyProblem(key, sig.keyID, created);
    }
    const details = { keyId, fingerprint: fpr(key), cause: outcome ? text(outcome) : undefined };
    if (problem === 'revoked') failures.push(reject('SIGNATURE_KEY_REVOKED', `the file is signed by key ${keyId}, which has been revoked`, details));
    else if (problem === 'expired') failures.push(reject('SIGNATURE_KEY_EXPIRED', `the file is signed by key ${keyId}, which has expired`, details));
    else if (problem) failures.push(reject('SIGNATURE_BAD', `the file is signed by key ${keyId}, which is not acceptable for signing (weak or unsupported algorithm)`, details));
    else if (outcome) failures.push(reject('SIGNATURE_BAD', `the signature by key ${keyId} does not match the file`, details));
    else return { signedBy: fpr(key) };
  }
  // Without a signature requirement, signatures by keys we do not know are just ignored; known keys must still be valid.
  if (!opts.requireSignature && failures.every((f) => f.code === 'SIGNATURE_UNKNOWN_KEY')) return { unknownSigner: String(failures[0]!.details.fingerprint) };
  const rank = ['SIGNATURE_KEY_REVOKED', 'SIGNATURE_KEY_EXPIRED', 'SIGNATURE_BAD', 'SIGNATURE_UNKNOWN_KEY'];
  failures.sort((a, b) => rank.indexOf(a.code) - rank.indexOf(b.code));
  throw failures[0]!;
}
