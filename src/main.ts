import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createApp } from './app.ts';
import { ROLES, secretKey, signToken, type Role } from './auth/tokens.ts';
import { systemClock } from './clock.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { openDatabase } from './db/client.ts';
import { seedDemo } from './demo.ts';
import { describeError } from './server/error-log.ts';

function log(message: string, error?: unknown): void {
  // An error is logged as describeError gives it: never a query's text or parameters.
  const detail = error instanceof Error ? `: ${describeError(error)}` : error ? `: ${String(error)}` : '';
  console.error(`${new Date().toISOString()} ${message}${detail}`);
}

/**
 * Outside production a missing AUTH_SECRET is created once and kept in the data folder. It is
 * made readable by its owner only on every start, so a copy or a loose umask does not leave it
 * open to other users of the machine.
 */
function developmentSecret(config: Config): string {
  mkdirSync(config.dataDir, { recursive: true });
  const file = path.join(config.dataDir, 'auth-secret');
  if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString('base64url'), { mode: 0o600 });
  chmodSync(file, 0o600);
  return readFileSync(file, 'utf8').trim();
}

/** The longest lifetime the token policy allows a role, as a jose duration. */
function longestLifetime(config: Config, role: Role): string {
  return `${config.tokenPolicy.maxLifetimeSeconds[role]}s`;
}

function describeSeconds(seconds: number): string {
  return seconds % 3600 === 0 ? `${seconds / 3600} h` : `${seconds} s`;
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`Configuration error: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
  const secret = config.authSecret ?? developmentSecret(config);
  const authKey = secretKey(secret);
  if (!config.databaseUrl) mkdirSync(config.dataDir, { recursive: true });
  const database = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.databaseUrl ? undefined : path.join(config.dataDir, 'pglite'),
    migrate: config.migrateOnStart,
  });
  const app = createApp({
    database,
    clock: systemClock,
    authKey,
    sweepIntervalMs: config.sweepIntervalMs,
    debugErrors: config.debugErrors,
    introspection: config.introspection,
    fieldSuggestions: config.fieldSuggestions,
    mutationRateLimit: config.mutationRateLimit,
    serviceMutationRateLimit: config.serviceMutationRateLimit,
    organizationRateLimit: config.organizationRateLimit,
    graphiql: config.graphiql,
    corsOrigins: config.corsOrigins,
    tokenPolicy: config.tokenPolicy,
    subscriptionLimits: config.subscriptionLimits,
    log,
  });
  const port = await app.listen(config.port, config.host);
  const where = config.databaseUrl ? 'PostgreSQL' : `embedded PGlite in ${config.dataDir}`;
  console.log(`Credits API on http://localhost:${port}/graphql (${where}; listening on ${config.host})`);

  if (!config.production && !config.authSecret) {
    const { organization, created } = await seedDemo({ db: database.db, clock: systemClock });
    if (created) console.log(`Seeded "${organization.name}" (${organization.id}) on the Pro plan with a purchased pack.`);
    // Fresh tokens on every start, each as long-lived as the token rules allow its role (and
    // with the configured issuer and audience), so what is printed is exactly what is accepted.
    const lifetimes = config.tokenPolicy.maxLifetimeSeconds;
    console.log(
      `\nOrganization: ${organization.id}\nPaste one of these into GraphiQL's headers ` +
        `(member and service valid ${describeSeconds(lifetimes.member)}, admin ${describeSeconds(lifetimes.admin)}; restart for new ones):`,
    );
    for (const role of ROLES) {
      const token = await signToken(
        {
          subject: `demo-${role}`,
          role,
          organizationId: role === 'admin' ? null : organization.id,
          expiresIn: longestLifetime(config, role),
          issuer: config.tokenPolicy.issuer,
          audience: config.tokenPolicy.audience,
        },
        authKey,
      );
      console.log(`\n  ${role}:\n  {"Authorization": "Bearer ${token}"}`);
    }
  }

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal} received, shutting down`);
    const deadline = setTimeout(() => process.exit(1), 5000);
    deadline.unref();
    app
      .stop()
      .then(() => database.close())
      .then(() => process.exit(0))
      .catch((error: unknown) => {
        log('shutdown failed', error);
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  log('start-up failed', error);
  process.exit(1);
});
