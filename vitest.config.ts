import { defineConfig } from 'vitest/config';

/** The contract suites: run against SQLite with everything else, and again against PostgreSQL (formats: every reader into either backend). */
const CONTRACT = ['test/ingest.test.ts', 'test/crash.test.ts', 'test/ops.test.ts', 'test/postgres*.test.ts', 'test/formats.test.ts', 'test/x12-ingest.test.ts'];

export default defineConfig({
  test: {
    // Tests spawn real processes (the CLI, sshd, gpg, postgres): give them room, and keep the two cores busy, not swamped.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'sqlite', include: ['test/**/*.test.ts'], exclude: ['test/postgres*.test.ts'] } },
      {
        extends: true,
        test: { name: 'postgres', include: CONTRACT, env: { INBOXD_TEST_BACKEND: 'postgres' }, globalSetup: ['test/helpers/postgres-setup.ts'] },
      },
    ],
  },
});
