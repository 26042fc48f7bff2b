import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf, type Database } from '../../src/db/client.ts';
import { createTestDatabase, hasPostgres } from '../support/database.ts';

// The pool prepares every statement (src/db/dead-connections.ts): PostgreSQL then parses and plans
// a ledger statement once per connection instead of on every request.
describe.runIf(hasPostgres)('prepared statements (PostgreSQL)', () => {
  let database: Database;
  beforeAll(async () => {
    database = await createTestDatabase('postgres', 1);
  });
  afterAll(() => database?.close());

  it('runs the same statement as one prepared statement, parsed once per connection', async () => {
    const count = async () =>
      rowsOf<{ n: number }>(
        await database.db.execute(
          sql`select count(*)::int as n from pg_prepared_statements where statement like ${'%credits-prepared-probe%'}`,
        ),
      )[0]!.n;
    for (let i = 0; i < 3; i += 1)
      await database.db.execute(sql`select ${i}::int as value /* credits-prepared-probe */`);
    // Three runs on one connection: one prepared statement (the counting query names the marker
    // only in a parameter, so it does not count itself). A statement without parameters goes by
    // the simple protocol and is never prepared; the ledger's statements all have parameters.
    expect(await count()).toBe(1);
    await database.db.transaction(async (tx) => {
      await tx.execute(sql`select ${42}::int as answer /* credits-prepared-probe */`);
    });
    // Inside a transaction too: a second statement, prepared on the same connection.
    expect(await count()).toBe(2);
  });
});
