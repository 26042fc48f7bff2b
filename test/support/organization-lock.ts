import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { type Database, rowsOf } from '../../src/db/client.ts';

export interface HeldLock {
  /** Commits the holding transaction and closes its connection (once, however often called). */
  release(): Promise<void>;
}

/**
 * Takes an organization's row lock in a transaction on a connection of its own (PostgreSQL), as
 * another process's writer would, and holds it until released.
 */
export async function holdOrganizationLock(url: string, organizationId: string): Promise<HeldLock> {
  const client = postgres(url, { max: 1, onnotice: () => {} });
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const holding = new Promise<void>((resolve) => (locked = resolve));
  const transaction = client.begin(async (tx) => {
    await tx`select id from organizations where id = ${organizationId} for update`;
    locked();
    await released;
  });
  await Promise.race([holding, transaction]);
  let ended: Promise<void> | null = null;
  return {
    release() {
      ended ??= (async () => {
        release();
        await transaction;
        await client.end();
      })();
      return ended;
    },
  };
}

/** The URL of the PostgreSQL database `database` is connected to, for a connection of a test's own. */
export async function databaseUrlOf(database: Database): Promise<string> {
  const [row] = rowsOf<{ name: string }>(await database.db.execute(sql`select current_database() as name`));
  const url = new URL(process.env.DATABASE_URL!);
  url.pathname = `/${row!.name}`;
  return url.toString();
}

/** Sessions of the database waiting for a lock now (a lock's holder waits on nothing). */
export async function lockWaiters(database: Database): Promise<number> {
  // On Citus the lock is waited for on the worker that holds the organization's shard, which
  // Citus's cluster-wide view of lock waits shows.
  const [row] = rowsOf<{ n: number }>(
    await database.db.execute(
      database.citus
        ? sql`select count(*)::int as n from citus_lock_waits`
        : sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
    ),
  );
  return row!.n;
}
