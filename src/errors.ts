/**
 * The error catalogue. Every error that crosses a boundary (partner report,
 * CLI exit code, log line) carries a stable `code` that scripts match on and a
 * `kind` that tells the engine what to do with it:
 *   reject - the partner's delivery is wrong: report it, never retry on our own (and INTERNAL_ERROR:
 *            we gave up on it, reported like a rejection, though the fault is ours);
 *   retry  - something of ours hiccupped (disk, database, remote server): roll back, try later, a bounded
 *            number of times (max_attempts);
 *   fatal  - configuration: refuse to start (exit 78, EX_CONFIG).
 */
export type ErrorKind = 'reject' | 'retry' | 'fatal';

export const CODES = {
  // delivery (partner-facing) rejections
  INCOMPLETE: 'reject',
  UNKNOWN_FILE: 'reject',
  NOT_A_REGULAR_FILE: 'reject',
  HARD_LINK: 'reject', // a file with another link: its inode (content, mode) is shared with a file elsewhere
  BAD_FILE_NAME: 'reject',
  BAD_SIDECAR: 'reject',
  CHECKSUM_MISMATCH: 'reject',
  BAD_MANIFEST: 'reject',
  MANIFEST_CHECKSUM_MISMATCH: 'reject',
  RECORD_COUNT_MISMATCH: 'reject',
  CONTROL_TOTAL_MISMATCH: 'reject',
  MALFORMED_CSV: 'reject',
  BAD_ENCODING: 'reject',
  MISSING_COLUMN: 'reject',
  ROW_ERRORS: 'reject',
  DUPLICATE: 'reject',
  SEQUENCE_CONFLICT: 'reject',
  SEQUENCE_OUT_OF_ORDER: 'reject',
  DECRYPT_FAILED: 'reject',
  ENCRYPTION_REQUIRED: 'reject',
  SIGNATURE_REQUIRED: 'reject',
  SIGNATURE_UNKNOWN_KEY: 'reject',
  SIGNATURE_BAD: 'reject',
  SIGNATURE_KEY_EXPIRED: 'reject',
  SIGNATURE_KEY_REVOKED: 'reject',
  LIMIT_EXCEEDED: 'reject',
  BAD_COMPRESSION: 'reject', // a .gz or .zip that cannot be unpacked, or a zip not holding exactly one regular file
  BAD_TRAILER: 'reject', // a fixed-width file whose trailer record is missing or unreadable
  BAD_ENVELOPE: 'reject', // an X12 interchange whose ISA/IEA, GS/GE or ST/SE envelopes do not agree
  // ours, transient
  FILE_CHANGING: 'retry',
  IO_ERROR: 'retry',
  DB_BUSY: 'retry',
  DB_UNAVAILABLE: 'retry',
  LEASE_LOST: 'retry', // another instance took the partner over: this one's delivery is rolled back and put back // the database server cannot be reached, or lost the connection (PostgreSQL)
  INSTANCE_BUSY: 'retry', // another inboxd works on the same root or work directory
  REMOTE_UNAVAILABLE: 'retry',
  REMOTE_TIMEOUT: 'retry',
  CIRCUIT_OPEN: 'retry',
  UNEXPECTED_ERROR: 'retry', // recognised by no table: a bug, most likely; logged with its stack, retried up to max_attempts
  // ours, given up: after max_attempts the delivery is answered in error/ (the partner is told the fault is ours)
  INTERNAL_ERROR: 'reject',
  // operations commands (replay, deliveries): the operator's request cannot be done as asked
  USAGE: 'reject', // the command line names a partner, flow or file that does not exist
  UNKNOWN_DELIVERY: 'reject',
  NOT_REPLAYABLE: 'reject',
  EVIDENCE_CHANGED: 'reject', // an archived file no longer has the checksum recorded when it was received
  // configuration
  CONFIG_INVALID: 'fatal',
  DB_READONLY: 'fatal', // the database (or its directory) cannot be written: permissions, an immutable file
  DB_TOO_NEW: 'fatal', // the database's schema version is newer than this inboxd knows: a downgrade
  HOST_KEY_MISMATCH: 'fatal',
  REMOTE_AUTH_FAILED: 'fatal', // the partner's server refused our key: retrying only risks a lockout
  KEY_INVALID: 'fatal',
} as const satisfies Record<string, ErrorKind>;

export type ErrorCode = keyof typeof CODES;

export class InboxdError extends Error {
  readonly code: ErrorCode;
  readonly kind: ErrorKind;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InboxdError';
    this.code = code;
    this.kind = CODES[code];
    this.details = details;
  }
}

export const reject = (code: ErrorCode, message: string, details?: Record<string, unknown>) =>
  new InboxdError(code, message, details);

/**
 * Causes of ours that pass (a full disk, a busy database, a lost connection), by the code the system
 * or the driver gives them, never by their words. SQLite's extended codes (SQLITE_IOERR_WRITE) go by
 * their primary code. PostgreSQL's SQLSTATEs are here for a second database.
 */
const RETRYABLE: Readonly<Record<string, 'IO_ERROR' | 'DB_BUSY'>> = {
  SQLITE_BUSY: 'DB_BUSY', SQLITE_LOCKED: 'DB_BUSY', SQLITE_PROTOCOL: 'DB_BUSY',
  SQLITE_FULL: 'IO_ERROR', SQLITE_IOERR: 'IO_ERROR', SQLITE_CANTOPEN: 'IO_ERROR', SQLITE_READONLY: 'IO_ERROR', SQLITE_NOMEM: 'IO_ERROR',
  // the disk, the file system and its permissions (an operator fixes them; the delivery then goes through)
  ENOSPC: 'IO_ERROR', EDQUOT: 'IO_ERROR', EIO: 'IO_ERROR', EROFS: 'IO_ERROR', ESTALE: 'IO_ERROR', EACCES: 'IO_ERROR', EPERM: 'IO_ERROR',
  ENOENT: 'IO_ERROR', ENOTDIR: 'IO_ERROR', EISDIR: 'IO_ERROR', EBUSY: 'IO_ERROR', EMFILE: 'IO_ERROR', ENFILE: 'IO_ERROR', ENOMEM: 'IO_ERROR',
  EAGAIN: 'IO_ERROR', EINTR: 'IO_ERROR',
  // the network (alert endpoints, partner servers)
  ETIMEDOUT: 'IO_ERROR', ECONNRESET: 'IO_ERROR', ECONNREFUSED: 'IO_ERROR', EHOSTUNREACH: 'IO_ERROR', ENETUNREACH: 'IO_ERROR', EPIPE: 'IO_ERROR', EAI_AGAIN: 'IO_ERROR',
  // a delivery rolled back because we are stopping
  ABORT_ERR: 'IO_ERROR',
  // PostgreSQL: serialization failure, deadlock, too many connections, disk full, out of memory, shutdown, connection lost
  '40001': 'DB_BUSY', '40P01': 'DB_BUSY', '53300': 'DB_BUSY',
  '53100': 'IO_ERROR', '53200': 'IO_ERROR', '57P01': 'IO_ERROR', '08000': 'IO_ERROR', '08003': 'IO_ERROR', '08006': 'IO_ERROR',
};

/** The retryable code of an error or of one of its causes, if any. */
function retryableCode(err: unknown): { code: 'IO_ERROR' | 'DB_BUSY'; cause: string } | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.code !== 'string') continue;
    const primary = /^SQLITE_[A-Z]+/.exec(e.code)?.[0] ?? e.code;
    const code = Object.hasOwn(RETRYABLE, primary) ? RETRYABLE[primary] : undefined;
    if (code) return { code, cause: e.code };
  }
  return undefined;
}

/**
 * Errors from outside the catalogue: a cause in the table of retryable codes is ours and transient
 * (IO_ERROR, DB_BUSY); anything else is UNEXPECTED_ERROR, a bug as far as we know. Both are ours,
 * retried a bounded number of times, never blamed on the partner.
 */
export function classify(err: unknown): InboxdError {
  if (err instanceof InboxdError) return err;
  const e = err as { code?: unknown; message?: string };
  const known = retryableCode(err);
  const cause = known?.cause ?? (typeof e?.code === 'string' ? e.code : undefined);
  return new InboxdError(known?.code ?? 'UNEXPECTED_ERROR', e?.message ?? String(err), { cause }, { cause: err });
}

/** sysexits(3): what `inboxd` exits with. */
export const EXIT = {
  OK: 0,
  REJECTED: 1,
  USAGE: 64,
  SOFTWARE: 70,
  TEMPFAIL: 75,
  CONFIG: 78,
} as const;
