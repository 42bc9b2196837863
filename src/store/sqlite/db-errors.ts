/**
 * SQLite's errors say what went wrong ("disk I/O error", "database or disk is full") but not where. The
 * store's connection is wrapped so that every error it, its statements or its transactions throw names
 * the database file and carries the code that tells the engine what to do with it: busy is retried
 * (DB_BUSY), a database that cannot be written is configuration (DB_READONLY, exit 78), anything else
 * is ours and retried (IO_ERROR).
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { SqliteError } from './driver.js';
import { type ErrorCode, InboxdError } from '../../errors.js';

export function dbError(path: string, err: unknown): unknown {
  if (!(err instanceof SqliteError)) return err;
  const code: ErrorCode = /^SQLITE_(BUSY|LOCKED)/.test(err.code) ? 'DB_BUSY' : err.code.startsWith('SQLITE_READONLY') ? 'DB_READONLY' : 'IO_ERROR';
  const hint = code === 'DB_READONLY' ? ': inboxd must be able to write it and its directory (for the -wal and -shm files beside it)' : '';
  return new InboxdError(code, `database ${path}: ${err.message}${hint}`, { cause: err.code }, { cause: err });
}

/**
 * SQLite opens a file it may not write read-only without a word, and a read that changes nothing
 * never finds out: ask the file system (permissions, an immutable file, a read-only mount) first.
 */
export function assertWritable(path: string): void {
  for (const p of existsSync(path) ? [path, dirname(path)] : [dirname(path)]) {
    try {
      accessSync(p, constants.W_OK);
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code ?? String(err);
      throw new InboxdError('DB_READONLY', `database ${path}: ${p} cannot be written (${why}): inboxd must be able to write it and its directory (for the -wal and -shm files beside it)`, { cause: why }, { cause: err });
    }
  }
}

export function guard<T>(path: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw dbError(path, err);
  }
}

type Fn = (...args: unknown[]) => unknown;

/** The connection (or a statement) with every error it throws named by dbError; its statements and transactions too. */
export function naming<T extends object>(target: T, path: string): T {
  const proxy: T = new Proxy(target, {
    get(obj, prop) {
      const value: unknown = Reflect.get(obj, prop);
      if (typeof value !== 'function' || prop === 'constructor') return value;
      return (...args: unknown[]) => {
        const result = guard(path, () => (value as Fn).apply(obj, args));
        if (result === obj) return proxy; // chaining: stmt.pluck().all()
        if (prop === 'prepare') return naming(result as object, path);
        return prop === 'transaction' ? namedTransaction(result as Fn & Record<string, Fn>, path) : result;
      };
    },
  });
  return proxy;
}

/** A transaction function and its variants (.immediate, …): plain wrappers, their own properties being frozen. */
function namedTransaction(tx: Fn & Record<string, Fn>, path: string): Fn {
  const wrap = (fn: Fn): Fn => (...args) => guard(path, () => fn(...args));
  return Object.assign(wrap(tx), Object.fromEntries(['deferred', 'immediate', 'exclusive'].map((k) => [k, wrap(tx[k]!)])));
}
