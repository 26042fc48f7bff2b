import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { developmentSecret } from '../auth/development-secret.ts';
import { secretKey } from '../auth/tokens.ts';
import { ConfigError, loadConfig, type Config } from '../config.ts';
import { openDatabase, type Database, type OpenDatabaseOptions } from '../db/client.ts';
import { claimEmbeddedDatabase } from '../db/embedded-lock.ts';

/** Exit codes: 0 done, 1 refused (bad input, or an audit found violations), 2 could not run. */
export const EXIT_REFUSED = 1;
export const EXIT_CANNOT_RUN = 2;

/** A failure the command reports as one line and an exit code, never a stack trace. */
export class CliFailure extends Error {
  override name = 'CliFailure';
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

export function cliConfig(): Config {
  try {
    return loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) throw new CliFailure(`Configuration error: ${error.message}`, EXIT_CANNOT_RUN);
    throw error;
  }
}

export interface OpenOptions {
  /** May create the embedded database when it does not exist yet (writes that start a ledger). */
  create?: boolean;
  timeouts?: OpenDatabaseOptions['timeouts'];
}

/**
 * Opens the database the server uses, from the same variables: DATABASE_URL, or the embedded
 * PGlite database in DATA_DIR/pglite (claimed, so that it is never open in two processes).
 * Opening runs pending migrations, exactly as a server start would.
 */
export async function withDatabase<T>(
  config: Config,
  options: OpenOptions,
  work: (database: Database) => Promise<T>,
): Promise<T> {
  const dataDir = path.join(config.dataDir, 'pglite');
  let release = () => {};
  if (!config.databaseUrl) {
    // Reading commands must not conjure up an empty database where the server never ran.
    if (!options.create && !existsSync(dataDir)) {
      throw new CliFailure(`No database: DATABASE_URL is unset and ${dataDir} does not exist.`, EXIT_CANNOT_RUN);
    }
    mkdirSync(config.dataDir, { recursive: true });
    try {
      release = claimEmbeddedDatabase(config.dataDir);
    } catch (error) {
      throw new CliFailure(`Cannot open the database: ${(error as Error).message}`, EXIT_CANNOT_RUN);
    }
  }
  let database: Database;
  try {
    // Two connections, not one: the migration step holds one for its advisory lock while it
    // migrates on another, so a pool of one would wait on itself forever.
    database = await openDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.databaseUrl ? undefined : dataDir,
      maxConnections: 2,
      timeouts: options.timeouts,
    });
  } catch (error) {
    release();
    throw new CliFailure(
      `Cannot open the database: ${error instanceof Error ? error.message : String(error)}`,
      EXIT_CANNOT_RUN,
    );
  }
  try {
    return await work(database);
  } finally {
    await database.close();
    release();
  }
}

/** The key tokens are signed with: AUTH_SECRET, or outside production the server's development secret. */
export function signingKey(config: Config): Uint8Array {
  return secretKey(config.authSecret ?? developmentSecret(config.dataDir));
}

/** Where the command ran, for the last line of the audit. */
export function databaseLabel(config: Config): string {
  return config.databaseUrl ? 'PostgreSQL' : path.join(config.dataDir, 'pglite');
}
