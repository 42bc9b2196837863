/**
 * A real, throwaway PostgreSQL server for tests: `initdb` into a temporary directory, `pg_ctl` on a free
 * 127.0.0.1 port, its socket in that directory. Run as the unprivileged `postgres` user when the tests
 * run as root (the server refuses to run as root). Debian's `postgresql` package provides the binaries.
 *
 *   const pg = await startPostgres();   // pg.url: postgres://inboxd@127.0.0.1:PORT/inboxd
 *   await pg.restart();                 // pg_ctl restart -m fast
 *   await pg.destroy();                 // stopped and removed
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from './net.js';

export { freePort };

export interface Postgres {
  /** superuser `inboxd`, database `inboxd`, trust authentication on 127.0.0.1 */
  url: string;
  port: number;
  dir: string;
  /** a URL of another database on this server, created on demand */
  database(name: string): string;
  /** psql -c, as the superuser: the text it prints (unaligned, tuples only) */
  sql(statement: string, db?: string): string;
  stop(): void;
  start(): void;
  /** `pg_ctl restart -m fast`: every connection is cut */
  restart(): void;
  destroy(): void;
}

const live = new Set<string>();
process.once('exit', () => { for (const dir of live) ctl(dir, ['stop', '-m', 'immediate'], true); });

export function postgresBin(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] && join(root, versions[0], 'bin');
}

/** The user the server runs as: ourselves, or `postgres` when we are root. */
function runAs(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

function run(cmd: string, args: string[], allowFail = false): string {
  const as = runAs();
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...(as ?? {}), cwd: '/' });
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

function ctl(dir: string, args: string[], allowFail = false): string {
  return run(join(postgresBin()!, 'pg_ctl'), ['-D', join(dir, 'data'), '-w', '-t', '60', ...args], allowFail);
}

export async function startPostgres(): Promise<Postgres> {
  const bin = postgresBin();
  if (!bin) throw new Error('PostgreSQL is not installed: apt-get install -y postgresql');
  const dir = mkdtempSync(join(tmpdir(), 'inboxd-pg-'));
  const as = runAs();
  if (as) chownSync(dir, as.uid, as.gid);
  const data = join(dir, 'data');
  run(join(bin, 'initdb'), ['-D', data, '-U', 'inboxd', '-A', 'trust', '-E', 'UTF8', '--no-locale', '--no-sync']);
  const port = await freePort();
  // Durability stays on (fsync): the crash tests rely on a commit being a commit.
  writeFileSync(join(data, 'postgresql.auto.conf'), [
    `port = ${port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${dir}'`,
    'max_connections = 200', 'shared_buffers = 128MB', "log_min_messages = 'warning'", 'logging_collector = off',
  ].join('\n') + '\n');
  if (as) chownSync(join(data, 'postgresql.auto.conf'), as.uid, as.gid);
  const start = () => { ctl(dir, ['start', '-l', join(dir, 'server.log')]); };
  start();
  live.add(dir);
  const psql = (statement: string, db = 'inboxd') =>
    run(join(bin, 'psql'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'inboxd', '-d', db, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', statement]);
  psql('CREATE DATABASE inboxd', 'postgres');
  const url = (db: string) => `postgres://inboxd@127.0.0.1:${port}/${db}`;
  const made = new Set<string>(['inboxd']);
  return {
    url: url('inboxd'),
    port,
    dir,
    database(name) {
      if (!made.has(name)) psql(`CREATE DATABASE "${name}"`, 'postgres');
      made.add(name);
      return url(name);
    },
    sql: psql,
    stop: () => { ctl(dir, ['stop', '-m', 'fast']); },
    start,
    restart: () => { ctl(dir, ['restart', '-m', 'fast', '-l', join(dir, 'server.log')]); },
    destroy() {
      ctl(dir, ['stop', '-m', 'immediate'], true);
      live.delete(dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
