/**
 * vitest globalSetup of the `postgres` project: one throwaway PostgreSQL server for the whole run
 * (helpers/postgres.ts); each fixture gets a database of its own on it (helpers/backend.ts).
 */
import type { TestProject } from 'vitest/node';
import { type Postgres, startPostgres } from './postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    pgServer: { url: string; port: number; dir: string } | undefined;
  }
}

let server: Postgres | undefined;

export async function setup(project: TestProject): Promise<void> {
  server = await startPostgres();
  project.provide('pgServer', { url: server.url, port: server.port, dir: server.dir });
}

export function teardown(): void {
  server?.destroy();
}
