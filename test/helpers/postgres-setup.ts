/**
 * vitest globalSetup of the `postgres` project: one throwaway PostgreSQL server for the whole run
 * (helpers/postgres.ts); each fixture gets a database of its own on it (helpers/backend.ts).
 */
import { type Postgres, startPostgres } from './postgres.js';

let server: Postgres | undefined;

/** The server's URL reaches the test processes through their environment (they are started after this). */
export async function setup(): Promise<void> {
  server = await startPostgres();
  process.env.INBOXD_TEST_PG_URL = server.url;
}

export function teardown(): void {
  server?.destroy();
}
