import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, ping, rowsOf, type Database } from '../../src/db/client.ts';
import { isConnectionError } from '../../src/db/errors.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';

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
  let url: string;

  beforeAll(async () => {
    const created = await createPostgresDatabase();
    drop = created.drop;
    url = created.url;
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
      (await admin`select pid from pg_stat_activity where datname = ${databaseName} and wait_event = 'PgSleep'`).map(
        (row) => row.pid as number,
      );
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
    const read = database.db
      .execute(sql`select 42 as answer from pg_sleep(1)`)
      .then((result) => rowsOf<{ answer: number }>(result));
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

  it('sends nothing more for a transaction whose connection died, even once the pool reconnected', async () => {
    // The transaction's backend is terminated while its code is busy with something else; the
    // pool then reconnects its one connection for the next request. postgres.js 3.4.9 would run the
    // dead transaction's later statements (and its COMMIT or ROLLBACK) on whatever that connection
    // serves by then: outside any transaction, committed (porsager/postgres#1216), or, sent before
    // the new connection's start-up message, a connection that waits forever.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let inserted!: () => void;
    const firstInsert = new Promise<void>((resolve) => (inserted = resolve));
    let lateStatement: unknown = 'not tried';
    const dying = database.db.transaction(async (tx) => {
      await tx.execute(sql`insert into probe values (10)`);
      inserted();
      await gate;
      lateStatement = await tx.execute(sql`insert into probe values (11)`).then(
        () => 'written',
        (error: unknown) => error,
      );
    });
    const outcome = dying.then(
      () => null,
      (error: unknown) => error,
    );
    await firstInsert;
    const idleInTransaction = async () =>
      (
        await admin`select pid from pg_stat_activity where datname = ${databaseName} and state = 'idle in transaction'`
      ).map((row) => row.pid as number);
    await expect.poll(idleInTransaction, { timeout: 10_000 }).toHaveLength(1);
    const [pid] = await idleInTransaction();
    expect((await admin`select pg_terminate_backend(${pid!}::int) as terminated`)[0]!.terminated).toBe(true);
    expect(isConnectionError(await outcome)).toBe(true);

    // The next request gets the reconnected connection; then the dead transaction's code goes on.
    await ping(database.db);
    release();
    await expect.poll(() => lateStatement !== 'not tried', { timeout: 10_000 }).toBe(true);
    expect(isConnectionError(lateStatement), String(lateStatement)).toBe(true);
    await ping(database.db);
    expect((await admin`select n from probe where n in (10, 11)`).map((row) => row.n)).toEqual([]);
  });

  it('leaves no unhandled rejection when the database goes away while a connection starts', async () => {
    // postgres.js 3.4.9 fetches the array types on every new connection by default. When that
    // connection then dies and cannot be reopened, the type query's rejection is handled by
    // nobody: an unhandled rejection, which ends a Node process (seen in the outage test).
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const target = new URL(url);
    const proxy = new TcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    const proxied = new URL(url);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(await proxy.start());
    const viaProxy = await openDatabase({ databaseUrl: proxied.toString(), maxConnections: 1, migrate: false });
    try {
      // Its one connection goes, and the next one is cut as it sends its first statement.
      await proxy.cut();
      await proxy.restore();
      proxy.cutAtFirstStatement();
      const error = await ping(viaProxy.db).then(
        () => null,
        (failure: unknown) => failure,
      );
      expect(isConnectionError(error), String(error)).toBe(true);
      // A rejection nobody handles is reported once the current tasks are done.
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setTimeout(resolve, 0));
      expect(unhandled.map(String)).toEqual([]);

      await proxy.restore();
      await ping(viaProxy.db);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await viaProxy.close();
      await proxy.close();
    }
  });
});
