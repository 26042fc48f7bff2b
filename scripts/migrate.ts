// `npm run db:migrate`: applies pending migrations to the database the server would open
// (DATABASE_URL, or the embedded PGlite database in DATA_DIR/pglite), then exits. Run it as the
// schema's owner when the serving processes use a runtime role with DATABASE_MIGRATE=0.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig, type Config } from '../src/config.ts';
import { openDatabase } from '../src/db/client.ts';

async function main(): Promise<number> {
  let config: Config;
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
  if (!config.databaseUrl) mkdirSync(dataDir, { recursive: true });
  // Two connections: one holds the migration lock while the other migrates.
  const database = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.databaseUrl ? undefined : dataDir,
    maxConnections: 2,
  });
  await database.close();
  console.log(`migrations applied (${config.databaseUrl ? 'PostgreSQL' : dataDir})`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`migrate failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
