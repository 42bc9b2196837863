/**
 * The error catalogue. Every error that crosses a boundary (partner report,
 * CLI exit code, log line) carries a stable `code` that scripts match on and a
 * `kind` that tells the engine what to do with it:
 *   reject - the partner's delivery is wrong: report it, never retry on our own;
 *   retry  - something of ours hiccupped (disk, database, remote server): roll back, try later;
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
  // ours, transient
  FILE_CHANGING: 'retry',
  IO_ERROR: 'retry',
  DB_BUSY: 'retry',
  INSTANCE_BUSY: 'retry', // another inboxd works on the same root or work directory
  REMOTE_UNAVAILABLE: 'retry',
  REMOTE_TIMEOUT: 'retry',
  CIRCUIT_OPEN: 'retry',
  // operations commands (replay, deliveries): the operator's request cannot be done as asked
  USAGE: 'reject', // the command line names a partner, flow or file that does not exist
  UNKNOWN_DELIVERY: 'reject',
  NOT_REPLAYABLE: 'reject',
  EVIDENCE_CHANGED: 'reject', // an archived file no longer has the checksum recorded when it was received
  // configuration
  CONFIG_INVALID: 'fatal',
  DB_READONLY: 'fatal', // the database (or its directory) cannot be written: permissions, an immutable file
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

/** Unknown errors (EIO, SQLITE_BUSY, a bug) are treated as ours and retryable: never blame the partner for them. */
export function classify(err: unknown): InboxdError {
  if (err instanceof InboxdError) return err;
  const e = err as { code?: string; message?: string };
  const busy = typeof e?.code === 'string' && e.code.startsWith('SQLITE_BUSY');
  return new InboxdError(busy ? 'DB_BUSY' : 'IO_ERROR', e?.message ?? String(err), { cause: e?.code }, { cause: err });
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
