/**
 * The operations page's users: a text file named by `http.users`, one `name scrypt$N$r$p$salt$hash` per
 * line (salt and hash base64), written by `inboxd web adduser`. Passwords are never stored, only their
 * scrypt hashes (node:crypto); comparing is constant-time.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { InboxdError } from '../errors.js';

const N = 16384;
const R = 8;
const P = 1;
const KEYLEN = 32;
const NAME = /^[A-Za-z0-9._@-]{1,64}$/;

function derive(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => scrypt(password, salt, KEYLEN, { N: n, r, p, maxmem: 256 * n * r }, (err, key) => (err ? reject(err) : resolve(key))));
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${(await derive(password, salt, N, R, P)).toString('base64')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [kind, n, r, p, salt, hash] = stored.split('$');
  if (kind !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const got = await derive(password, Buffer.from(salt, 'base64'), Number(n), Number(r), Number(p));
  return got.length === expected.length && timingSafeEqual(got, expected);
}

/** name -> stored hash. Read at each login, so a user added or removed counts without a restart. */
export async function readUsers(file: string): Promise<Map<string, string>> {
  const text = await fsp.readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? '' : Promise.reject(err)));
  const users = new Map<string, string>();
  for (const line of text.split('\n')) {
    const [name, hash] = line.trim().split(/\s+/);
    if (name && hash && !name.startsWith('#')) users.set(name, hash);
  }
  return users;
}

/** Adds the user or changes its password; the file is only for the daemon's user (0600). */
export async function addUser(file: string, name: string, password: string): Promise<void> {
  if (!NAME.test(name)) throw new InboxdError('USAGE', `user name: letters, digits and . _ @ - (at most 64), got "${name}"`);
  if (password.length < 12) throw new InboxdError('USAGE', 'the password needs at least 12 characters');
  const users = await readUsers(file);
  users.set(name, await hashPassword(password));
  const text = [...users].map(([n, h]) => `${n} ${h}\n`).join('');
  await fsp.writeFile(`${file}.tmp`, text, { mode: 0o600 });
  await fsp.rename(`${file}.tmp`, file);
}
