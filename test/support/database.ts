import { randomBytes } from 'node:crypto';
import { createDatabase, dropDatabase } from '../../scripts/citus/databases.ts';
import { openDatabase, type Database, type Driver } from '../../src/db/client.ts';

/**
 * PGlite always; PostgreSQL too whenever DATABASE_URL names one. `TEST_DRIVERS=postgres` (set by
 * `npm run test:citus`) leaves the PGlite cases out: `npm test` has run them already, and on the
 * Citus run they would only double its time.
 */
export const drivers: Driver[] = process.env.DATABASE_URL
  ? process.env.TEST_DRIVERS === 'postgres'
    ? ['postgres']
    : ['pglite', 'postgres']
  : ['pglite'];

export const hasPostgres = Boolean(process.env.DATABASE_URL);

/**
 * A throwaway database for one test file: an in-memory PGlite, or a freshly created PostgreSQL
 * database beside the one DATABASE_URL names, dropped again on close.
 */
export async function createTestDatabase(driver: Driver, maxConnections = 10): Promise<Database> {
  if (driver === 'pglite') return openDatabase({});
  const { url, drop } = await createPostgresDatabase();
  const database = await openDatabase({ databaseUrl: url, maxConnections });
  return {
    ...database,
    async close() {
      await database.close();
      await drop();
    },
  };
}

/**
 * A fresh PostgreSQL database beside the one DATABASE_URL names. On a Citus coordinator (as
 * `npm run test:citus` runs the suites) it gets the extension and the workers, and is dropped on
 * every node.
 */
export async function createPostgresDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const baseUrl = process.env.DATABASE_URL;
  if (!baseUrl) throw new Error('DATABASE_URL is not set');
  const name = `credits_test_${randomBytes(6).toString('hex')}`;
  const url = await createDatabase(baseUrl, name);
  return { url, drop: () => dropDatabase(baseUrl, name) };
}
