import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { createApp } from './app.ts';
import { developmentSecret } from './auth/development-secret.ts';
import { ROLES, secretKey, signToken, type Role, type Scope } from './auth/tokens.ts';
import { systemClock } from './clock.ts';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { openDatabase } from './db/client.ts';
import { claimEmbeddedDatabase } from './db/embedded-lock.ts';
import { seedDemo } from './demo.ts';
import { createLogger, flushLogs, type Logger } from './server/logger.ts';

// Before the configuration is read, the level is not known; start-up failures use this one.
let logger: Logger = createLogger();

/** Exits once the last log lines are written (the logger writes stdout asynchronously). */
function exit(code: number): void {
  void flushLogs(logger).finally(() => process.exit(code));
}

/** The longest lifetime the token policy allows a role, as a jose duration. */
function longestLifetime(config: Config, role: Role): string {
  return `${config.tokenPolicy.maxLifetimeSeconds[role]}s`;
}

function describeSeconds(seconds: number): string {
  return seconds % 3600 === 0 ? `${seconds / 3600} h` : `${seconds} s`;
}

// What each demo token may do: a member prices, reserves and reads; a service also settles
// (its role) and bills; an admin holds every right and carries no scope claim. Scoped, they are
// accepted whether or not TOKEN_SCOPES_REQUIRED is on.
const DEMO_SCOPES: Record<Role, readonly Scope[] | null> = {
  member: ['generation', 'read'],
  service: ['generation', 'read', 'billing'],
  admin: null,
};

/**
 * A banner for the developer on their own machine, not a log line: it never appears in
 * production or with AUTH_SECRET set, the only cases whose output is collected. The tokens are
 * signed afresh on every start, each as long-lived as the token rules allow its role (and with
 * the configured issuer and audience), so what is printed is exactly what is accepted.
 */
async function printDemoTokens(config: Config, organizationId: string, authKey: Uint8Array): Promise<void> {
  const lifetimes = config.tokenPolicy.maxLifetimeSeconds;
  const banner = [
    `\nOrganization: ${organizationId}\nPaste one of these into GraphiQL's headers ` +
      `(member and service valid ${describeSeconds(lifetimes.member)}, admin ${describeSeconds(lifetimes.admin)}; restart for new ones):`,
  ];
  for (const role of ROLES) {
    const token = await signToken(
      {
        subject: `demo-${role}`,
        role,
        organizationId: role === 'admin' ? null : organizationId,
        scopes: DEMO_SCOPES[role],
        expiresIn: longestLifetime(config, role),
        issuer: config.tokenPolicy.issuer,
        audience: config.tokenPolicy.audience,
      },
      authKey,
    );
    banner.push(`\n  ${role}:\n  {"Authorization": "Bearer ${token}"}`);
  }
  process.stdout.write(`${banner.join('\n')}\n\n`);
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
  logger.flush();
  logger = createLogger({ level: config.logLevel });
  const secret = config.authSecret ?? developmentSecret(config.dataDir);
  const authKey = secretKey(secret);
  if (!config.databaseUrl) {
    mkdirSync(config.dataDir, { recursive: true });
    // The claim is released at exit; a killed server leaves a stale claim, which is taken over.
    const release = claimEmbeddedDatabase(config.dataDir);
    process.on('exit', release);
  }
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
    intakeLimits: config.intakeLimits,
    graphiql: config.graphiql,
    corsOrigins: config.corsOrigins,
    tokenPolicy: config.tokenPolicy,
    subscriptionLimits: config.subscriptionLimits,
    logger,
    metricsEnabled: config.metricsEnabled,
    metricsToken: config.metricsToken,
    webhooks: { urlPolicy: config.webhookUrlPolicy },
  });
  // The demo organization exists before the first request can ask for it.
  const demo =
    !config.production && !config.authSecret ? await seedDemo({ db: database.db, clock: systemClock }) : undefined;
  if (demo?.created)
    logger.info(
      { event: 'demo', organizationId: demo.organization.id },
      `Seeded "${demo.organization.name}" on the Pro plan with a purchased pack`,
    );

  const port = await app.listen(config.port, config.host);
  // Signals are handled from the moment the server listens, before the start line says so: a
  // supervisor that stops the process as soon as it reads that line must get a clean shutdown.
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ event: 'shutdown', signal }, `${signal} received, shutting down`);
    const deadline = setTimeout(() => process.exit(1), 5000);
    deadline.unref();
    app
      .stop()
      .then(() => database.close())
      .then(() => {
        logger.info({ event: 'shutdown' }, 'stopped');
        exit(0);
      })
      .catch((error: unknown) => {
        logger.error({ event: 'shutdown', err: error }, 'shutdown failed');
        exit(1);
      });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  const where = config.databaseUrl ? 'PostgreSQL' : `embedded PGlite in ${config.dataDir}`;
  logger.info(
    {
      event: 'start',
      port,
      host: config.host,
      driver: database.driver,
      production: config.production,
      metrics: config.metricsEnabled,
      sweepIntervalMs: config.sweepIntervalMs,
    },
    `Credits API on http://localhost:${port}/graphql (${where}; listening on ${config.host})`,
  );
  if (!config.metricsEnabled)
    logger.warn({ event: 'start' }, 'GET /metrics is off: set METRICS_TOKEN to serve it in production');

  if (demo) await printDemoTokens(config, demo.organization.id, authKey);
}

main().catch((error: unknown) => {
  logger.fatal({ event: 'start', err: error }, 'start-up failed');
  exit(1);
});
