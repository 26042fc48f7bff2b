import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { migrationsFolder, openDatabase, type Database, type Driver } from '../../src/db/client.ts';
import { createPostgresDatabase } from './database.ts';

export type Cleanups = Array<() => Promise<void> | void>;

/** A copy of the migrations folder holding only the first `count` migrations. */
function firstMigrations(count: number): string {
  const folder = mkdtempSync(path.join(tmpdir(), 'credits-migrations-'));
  mkdirSync(path.join(folder, 'meta'));
  const journal = JSON.parse(readFileSync(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8'));
  journal.entries = journal.entries.slice(0, count);
  writeFileSync(path.join(folder, 'meta', '_journal.json'), JSON.stringify(journal));
  for (const entry of journal.entries)
    copyFileSync(path.join(migrationsFolder, `${entry.tag}.sql`), path.join(folder, `${entry.tag}.sql`));
  return folder;
}

/**
 * A database built by the first `count` migrations and holding `fill` (plain SQL), then opened,
 * and so migrated the rest of the way, as the service opens it. What it leaves behind is undone
 * by `cleanups`, newest first.
 */
export async function upgradedFromFilled(
  driver: Driver,
  options: { count: number; fill: string },
  cleanups: Cleanups,
): Promise<Database> {
  const before = firstMigrations(options.count);
  cleanups.push(() => rmSync(before, { recursive: true, force: true }));
  if (driver === 'pglite') {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-pglite-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const pglite = new PGlite(dataDir);
    await migratePglite(drizzlePglite(pglite), { migrationsFolder: before });
    await pglite.exec(options.fill);
    await pglite.close();
    return openDatabase({ dataDir });
  }
  const { url, drop } = await createPostgresDatabase();
  cleanups.push(drop);
  const client = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await migratePostgres(drizzlePostgres(client), { migrationsFolder: before });
    await client.unsafe(options.fill);
  } finally {
    await client.end();
  }
  return openDatabase({ databaseUrl: url });
}
