/**
 * The better-sqlite3 build made for the Node.js that runs us. 12.x (Node 20 and later) aborts at exit
 * on Node 24.19+: its objects' destructors remove an environment cleanup hook after Node has torn the
 * environment down (`Assertion failed: (env) != nullptr`). 13.x (node-addon-api, prebuilt in the
 * package) does not, but needs Node 22. Both are dependencies; only the one for this Node is loaded.
 */
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';

const require = createRequire(import.meta.url);
const major = Number(process.versions.node.split('.')[0]);
const Driver = require(major >= 22 ? 'better-sqlite3-node22' : 'better-sqlite3') as typeof BetterSqlite3;

export type Db = BetterSqlite3.Database;
export const openDatabase = (path: string, options?: BetterSqlite3.Options): Db => new Driver(path, options);
export const SqliteError = Driver.SqliteError;
