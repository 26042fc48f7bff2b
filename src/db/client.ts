import { PGlite } from '@electric-sql/pglite';
import { sql } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { distributeTables, hasCitus, markCitus } from './citus.ts';
import { retryOnDeadConnection } from './dead-connections.ts';
import { requirePatchedDriver } from './patched-driver.ts';
import { countingPool, type PoolStats } from './pool-stats.ts';
import { schema } from './schema.ts';

/** One drizzle type for both drivers; the ledger never knows which one it talks to. */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>;

/** What a transaction callback receives; it has the same query API as `Db`. */
export type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];

/** Anything queries can run on: the database itself or an open transaction. */
export type Queryable = Db | Tx;

export type Driver = 'pglite' | 'postgres';

export interface Database {
  readonly db: Db;
  readonly driver: Driver;
  /**
   * The postgres.js client, present only on the PostgreSQL driver (for LISTEN and pool control).
   * Its `reserve()` waits forever for a new connection (see NO_TYPE_FETCH): run statements instead.
   */
  readonly postgresClient?: postgres.Sql;
  /**
   * Opens a separate postgres.js client for LISTEN alone (PostgreSQL only), named
   * `credits-listener` in pg_stat_activity. The caller owns it and ends it.
   */
  readonly connectListener?: () => postgres.Sql;
  /** What the pool is doing now (PostgreSQL only; PGlite has one connection and no pool). */
  readonly poolStats?: () => PoolStats;
  /** The PGlite instance, present only on the embedded driver. */
  readonly pglite?: PGlite;
  /**
   * True when the PostgreSQL database is a Citus coordinator (the `citus` extension is present):
   * tables are sharded by organization and balance notifications are sent by the coordinator's
   * own session (src/ledger/announcements.ts). Detected once at open.
   */
  readonly citus?: boolean;
  close(): Promise<void>;
}

export const migrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));

export interface OpenDatabaseOptions {
  /** A PostgreSQL connection string; when absent the embedded PGlite database is used. */
  databaseUrl?: string;
  /** PGlite data directory; absent means in memory. */
  dataDir?: string;
  /** Size of the postgres.js pool. */
  maxConnections?: number;
  /**
   * Apply pending migrations (the default). Off, the database is only checked to have every
   * migration applied: a runtime role without DDL rights cannot migrate, and must not start on a
   * schema older than its code.
   */
  migrate?: boolean;
  /** Server-side limits for the pool's sessions (PostgreSQL only); see `SESSION_TIMEOUTS`. */
  timeouts?: Partial<SessionTimeouts>;
}

/**
 * Limits every pooled session sets, so that one stuck transaction cannot hold an organization's
 * lock or a connection for long: waiting for a lock, running one statement, and sitting idle in
 * an open transaction. A request that hits one fails with a retryable SERVICE_UNAVAILABLE and its
 * transaction rolls back whole. Migrations run on a session of their own without these limits.
 */
export interface SessionTimeouts {
  lockTimeoutMs: number;
  statementTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
}

export const SESSION_TIMEOUTS: SessionTimeouts = {
  lockTimeoutMs: 5_000,
  statementTimeoutMs: 15_000,
  idleInTransactionTimeoutMs: 30_000,
};

export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  if (options.databaseUrl) requirePatchedDriver();
  if (options.databaseUrl && (options.migrate ?? true)) await migratePostgresDatabase(options.databaseUrl);
  const database = options.databaseUrl
    ? openPostgres(options.databaseUrl, options.maxConnections ?? 10, { ...SESSION_TIMEOUTS, ...options.timeouts })
    : await openPglite(options.dataDir);
  try {
    if (database.driver === 'pglite' && (options.migrate ?? true))
      await migratePglite(database.db as never, { migrationsFolder });
    else if (!(options.migrate ?? true)) await requireMigrated(database.db);
    if (database.postgresClient && (await hasCitus(database.postgresClient))) {
      markCitus(database.db);
      return { ...database, citus: true };
    }
  } catch (error) {
    await database.close();
    throw error;
  }
  return database;
}

/**
 * How the pool behaves while PostgreSQL is unreachable. postgres.js waits before reconnecting
 * for a delay that grows with every failed attempt (up to 20 s by default) and holds queries
 * meanwhile, so a long outage made each request hang for that long and kept the service down
 * for as long again after the database was back. A short, capped delay makes requests fail at
 * once with a connection error (reported as SERVICE_UNAVAILABLE) and lets the pool reconnect as
 * soon as the database is back. Attempts are only made for waiting queries, and the server stops
 * sending new ones while the database is down (src/server/database-health.ts), so this is no
 * reconnect storm. A connect that gets no answer gives up after `connect_timeout` seconds.
 */
const OUTAGE_TUNING = {
  connect_timeout: 3,
  backoff: (retries: number) => Math.min(0.01 * 2 ** retries, 0.1),
} as const;

/**
 * postgres.js 3.4.9 reads the database's array types on every new connection (`fetch_types`).
 * When that connection dies during the read and cannot be reopened, as in an outage, the read's
 * rejection is handled by nobody: an unhandled rejection, which ends the process (reproduced in
 * test/reliability/dead-connections.test.ts; upstream porsager/postgres#1223 for the same path).
 * The service needs none of them: drizzle sends and parses its one array column (models'
 * resolutions) as text, and the ledger passes arrays as text literals. One catch: without it,
 * postgres.js never hands a newly opened connection to `reserve()` (that call waits forever), so
 * nothing reserves connections of these clients; the migration client, which does, keeps the
 * default (it lives only while the service starts).
 */
const NO_TYPE_FETCH = { fetch_types: false } as const;

function openPostgres(url: string, max: number, timeouts: SessionTimeouts): Database {
  const client = postgres(url, {
    max,
    onnotice: () => {},
    ...OUTAGE_TUNING,
    ...NO_TYPE_FETCH,
    connection: {
      lock_timeout: timeouts.lockTimeoutMs,
      statement_timeout: timeouts.statementTimeoutMs,
      idle_in_transaction_session_timeout: timeouts.idleInTransactionTimeoutMs,
    },
  });
  // Queries go through a pool that does not fail a request for a connection that died before it
  // was used (src/db/dead-connections.ts); `postgresClient` stays the plain pool.
  const pool = countingPool(retryOnDeadConnection(client, max), max);
  const db = drizzlePostgres(pool.sql, { schema }) as unknown as Db;
  return {
    db,
    driver: 'postgres',
    postgresClient: client,
    poolStats: pool.stats,
    connectListener: () =>
      postgres(url, {
        max: 1,
        onnotice: () => {},
        connect_timeout: 5,
        ...NO_TYPE_FETCH,
        connection: { application_name: 'credits-listener' },
      }),
    close: () => client.end({ timeout: 5 }),
  };
}

/**
 * Settings for an embedded database on disk: PGlite's default 128 MB of shared buffers costs
 * about 130 MB of resident memory in the serving process, far more than an embedded ledger needs.
 */
const EMBEDDED_POSTGRESQL_CONF = ['shared_buffers=16MB'];

async function openPglite(dataDir: string | undefined): Promise<Database> {
  if (dataDir && !existsSync(path.join(dataDir, 'PG_VERSION'))) await initialisePgliteFolder(dataDir);
  const pglite = dataDir ? new PGlite(dataDir, { postgresqlconf: EMBEDDED_POSTGRESQL_CONF }) : new PGlite();
  await pglite.waitReady;
  const db = drizzlePglite(pglite, { schema }) as unknown as Db;
  return {
    db,
    driver: 'pglite',
    pglite,
    close: () => pglite.close(),
  };
}

/** Runs PGlite's initdb for a new data folder in a child process (see src/db/pglite-init.ts). */
async function initialisePgliteFolder(dataDir: string): Promise<void> {
  const here = fileURLToPath(import.meta.url);
  const script = path.join(path.dirname(here), `pglite-init${path.extname(here)}`);
  // Under tsx (development, tests) the script is TypeScript; compiled, it is JavaScript.
  const args = script.endsWith('.ts') ? ['--import', 'tsx', script, dataDir] : [script, dataDir];
  const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('exit', (exitCode) => resolve({ code: exitCode, stderr }));
  });
  if (code !== 0)
    throw new Error(
      `could not initialise the embedded database in ${dataDir}: ${stderr.trim().split('\n').at(-1) ?? code}`,
    );
}

// An arbitrary constant that names the migration lock among this database's advisory locks.
const MIGRATION_LOCK_ID = 7_206_001;

/**
 * Applies pending migrations on a short-lived client of its own, without the pool's timeouts (a
 * migration may rightly take long, and so may waiting for another process's). Several processes
 * may start together; the session-level advisory lock makes them migrate one at a time, on one
 * reserved connection while a second one runs the migration.
 */
async function migratePostgresDatabase(url: string): Promise<void> {
  const client = postgres(url, { max: 2, onnotice: () => {}, connect_timeout: OUTAGE_TUNING.connect_timeout });
  try {
    const reserved = await client.reserve();
    try {
      await reserved`select pg_advisory_lock(${MIGRATION_LOCK_ID})`;
      await migratePostgres(drizzlePostgres(client, { schema }) as never, { migrationsFolder });
      // On a Citus coordinator the migrated tables are then sharded by organization (once).
      if (await hasCitus(reserved)) await distributeTables(reserved);
    } finally {
      await reserved`select pg_advisory_unlock(${MIGRATION_LOCK_ID})`.catch(() => {});
      reserved.release();
    }
  } finally {
    await client.end({ timeout: 5 });
  }
}

export class MigrationsPendingError extends Error {
  override name = 'MigrationsPendingError';
}

/** Refuses a database that lacks migrations this code needs (checked when not migrating on start). */
export async function requireMigrated(db: Db): Promise<void> {
  const journal = JSON.parse(readFileSync(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as {
    entries: Array<{ when: number }>;
  };
  const latest = Math.max(...journal.entries.map((entry) => entry.when));
  const [table] = rowsOf<{ present: boolean }>(
    await db.execute(sql`select to_regclass('drizzle.__drizzle_migrations') is not null as present`),
  );
  const [row] = table?.present
    ? rowsOf<{ applied: string | null }>(
        await db.execute(sql`select max(created_at)::text as applied from drizzle.__drizzle_migrations`),
      )
    : [];
  if (Number(row?.applied ?? 0) < latest) {
    throw new MigrationsPendingError(
      'The database lacks migrations this version needs; run `npm run db:migrate` as its owner.',
    );
  }
}

/** Rows of a raw `execute()`, whose result shape differs between the two drivers. */
export function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return ((result as { rows?: T[] }).rows ?? []) as T[];
}

export async function ping(db: Db): Promise<void> {
  await db.execute(sql`select 1`);
}
