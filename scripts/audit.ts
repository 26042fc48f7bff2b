// `npm run audit`: recomputes every lot, reservation and organization from the journal and
// prints each invariant violation. Exit code 0 means the ledger is consistent, 1 that it is not,
// 2 that the audit could not run at all (bad configuration, unreachable database).
//
// It opens the same database the server would, from the same variables: DATABASE_URL, or the
// embedded PGlite database in DATA_DIR/pglite. Opening runs pending migrations, exactly as a
// server start would; they are idempotent and taken under an advisory lock on PostgreSQL.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig } from '../src/config.ts';
import { openDatabase, type Database } from '../src/db/client.ts';
import { auditLedger, type Violation } from '../src/ledger/audit.ts';

function describe(violation: Violation): string {
  const where = [`organization ${violation.organizationId}`];
  if (violation.lotId) where.push(`lot ${violation.lotId}`);
  if (violation.reservationId) where.push(`reservation ${violation.reservationId}`);
  return `${where.join(' ')}: ${violation.message}`;
}

async function main(): Promise<number> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`Configuration error: ${error.message}`);
      return 2;
    }
    throw error;
  }
  const dataDir = path.join(config.dataDir, 'pglite');
  // An audit must not conjure up an empty database where the server never ran.
  if (!config.databaseUrl && !existsSync(dataDir)) {
    console.error(`No database: DATABASE_URL is unset and ${dataDir} does not exist.`);
    return 2;
  }
  let database: Database;
  try {
    // Two connections, not one: the migration step holds one for its advisory lock while it
    // migrates on another, so a pool of one would wait on itself forever.
    // No statement timeout: the audit reads the whole journal, which may take long on a big one.
    database = await openDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.databaseUrl ? undefined : dataDir,
      maxConnections: 2,
      timeouts: { statementTimeoutMs: 0, idleInTransactionTimeoutMs: 0 },
    });
  } catch (error) {
    console.error(`Cannot open the database: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  try {
    // One snapshot for every check, so writes committed by a running server between two of the
    // audit's statements cannot look like a violation.
    const violations = await database.db.transaction((tx) => auditLedger(tx), {
      isolationLevel: 'repeatable read',
      accessMode: 'read only',
    });
    for (const violation of violations) console.log(describe(violation));
    const where = config.databaseUrl ? 'PostgreSQL' : dataDir;
    if (violations.length > 0) {
      console.log(`audit: ${violations.length} violation${violations.length === 1 ? '' : 's'} (${where})`);
      return 1;
    }
    console.log(`audit: ledger consistent (${where})`);
    return 0;
  } finally {
    await database.close();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`audit failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(2);
  },
);
