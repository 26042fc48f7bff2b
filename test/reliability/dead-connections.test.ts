import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, ping, rowsOf, type Database } from '../../src/db/client.ts';
import { isConnectionError } from '../../src/db/errors.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';

// A pooled connection whose backend died must not fail the next request that is given it.
//
// postgres.js 3.4.9 keeps the error of a connection whose backend was terminated while a query
// ran on it, and fails the first query it is given after reconnecting with that old error
// (57P01), however long after (porsager/postgres#1215). With a pool of one connection every
// statement here is given that connection, so each case is deterministic: without the retry in
// src/db/dead-connections.ts the statement after each termination fails.

describe.skipIf(!hasPostgres)('dead pooled connections (postgres)', () => {
  let database: Database;
  let admin: postgres.Sql;
  let drop: () => Promise<void>;
  let databaseName: string;

  beforeAll(async () => {
    const created = await createPostgresDatabase();
    drop = created.drop;
    databaseName = new URL(created.url).pathname.slice(1);
    admin = postgres(created.url, { max: 1, onnotice: () => {} });
    // Migrating takes two connections (one holds the migration lock); the pool under test has one.
    await (await openDatabase({ databaseUrl: created.url, maxConnections: 2 })).close();
    database = await openDatabase({ databaseUrl: created.url, maxConnections: 1, migrate: false });
    await database.db.execute(sql`create table probe (n int not null)`);
  });

  afterAll(async () => {
    await database?.close();
    await admin?.end();
    await drop?.();
  });

  /** Waits until the pool's backend sleeps in pg_sleep, then terminates it. */
  async function terminateSleepingBackend(): Promise<void> {
    const sleeping = async () =>
      (await admin`select pid from pg_stat_activity where datname = ${databaseName} and wait_event = 'PgSleep'`).map((row) => row.pid as number);
    await expect.poll(sleeping, { timeout: 10_000 }).toHaveLength(1);
    const [pid] = await sleeping();
    const [row] = await admin`select pg_terminate_backend(${pid!}::int) as terminated`;
    expect(row!.terminated).toBe(true);
  }

  async function probeRows(): Promise<number> {
    const [row] = await admin`select count(*)::int as n from probe`;
    return row!.n as number;
  }

  it('serves the next read and the next transaction after a transaction is terminated mid-statement', async () => {
    const killed = database.db.transaction(async (tx) => {
      await tx.execute(sql`insert into probe values (1)`);
      await tx.execute(sql`select pg_sleep(30)`);
    });
    const outcome = killed.then(
      () => null,
      (error: unknown) => error,
    );
    await terminateSleepingBackend();
    // Its work had begun, so it is not run again: the caller hears of the lost connection.
    const error = await outcome;
    expect(isConnectionError(error), String(error)).toBe(true);
    expect(await probeRows()).toBe(0);

    // The same (only) pooled connection serves the next read at once …
    await ping(database.db);
    // … and, after the same kind of termination, the next transaction.
    const again = database.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_sleep(30)`);
    });
    const againOutcome = again.then(
      () => null,
      (failure: unknown) => failure,
    );
    await terminateSleepingBackend();
    expect(isConnectionError(await againOutcome)).toBe(true);
    const written = await database.db.transaction(async (tx) => {
      await tx.execute(sql`insert into probe values (2)`);
      return rowsOf<{ n: number }>(await tx.execute(sql`select count(*)::int as n from probe`))[0]!.n;
    });
    expect(written).toBe(1);
  });

  it('runs a read again when its connection dies under it, but never a write outside a transaction', async () => {
    // (drizzle runs a statement when it is awaited: `then` starts it now.)
    const read = database.db.execute(sql`select 42 as answer from pg_sleep(1)`).then((result) => rowsOf<{ answer: number }>(result));
    await terminateSleepingBackend();
    expect(await read).toEqual([{ answer: 42 }]);

    const before = await probeRows();
    const write = database.db.execute(sql`insert into probe select 3 from pg_sleep(30)`).then(
      () => null,
      (error: unknown) => error,
    );
    await terminateSleepingBackend();
    const error = await write;
    expect(isConnectionError(error), String(error)).toBe(true);
    expect(await probeRows()).toBe(before);
    // And the connection the write died on serves the next statement.
    await ping(database.db);
  });
});
