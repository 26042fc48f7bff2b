import { describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/db/client.ts';
import { sql } from 'drizzle-orm';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';

// The pool figures behind credits_db_pool_active and credits_db_waiting_queries: postgres.js does
// not expose its queues, so the pool drizzle uses counts what is in flight on it.
describe.skipIf(!hasPostgres)('pool statistics (postgres)', () => {
  it('counts statements and transactions holding a connection, and those waiting for one', async () => {
    const { url, drop } = await createPostgresDatabase();
    const database = await openDatabase({ databaseUrl: url, maxConnections: 2 });
    try {
      expect(database.poolStats!()).toEqual({ size: 2, active: 0, waiting: 0 });
      // drizzle's statements are lazy: Promise.resolve starts each one now.
      const sleepers = [
        Promise.resolve(database.db.execute(sql`select pg_sleep(0.5)`)),
        database.db.transaction(async (tx) => {
          await tx.execute(sql`select pg_sleep(0.5)`);
        }),
        Promise.resolve(database.db.execute(sql`select pg_sleep(0.5)`)),
        Promise.resolve(database.db.execute(sql`select 1`)),
      ];
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(database.poolStats!()).toEqual({ size: 2, active: 2, waiting: 2 });
      await Promise.all(sleepers);
      expect(database.poolStats!()).toEqual({ size: 2, active: 0, waiting: 0 });
      // A failing statement is no longer in flight either.
      await expect(database.db.execute(sql`select * from no_such_table`)).rejects.toThrow();
      expect(database.poolStats!().active).toBe(0);
    } finally {
      await database.close();
      await drop();
    }
  });
});
