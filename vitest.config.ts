import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    // graphql 16 ships CommonJS (main) and ESM (module) builds. Node loads the CommonJS one for
    // yoga and Pothos, while Vite would pick the ESM one for our sources: two GraphQLError
    // classes, and our UNAUTHENTICATED errors would be masked. Tests use what Node uses.
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }],
  },
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    // Says which PostgreSQL suites a run without DATABASE_URL skips (and fails under CI).
    globalSetup: ['test/support/postgres-coverage.ts'],
    testTimeout: 60_000,
    // Opening a PGlite database runs initdb, which takes tens of seconds on a loaded 2-core machine.
    hookTimeout: 120_000,
    // Each file opens its own databases; two workers match the two cores of the CI machine.
    maxWorkers: 2,
  },
});
