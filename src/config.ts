import path from 'node:path';
import type { TokenPolicy } from './auth/tokens.ts';
import type { SubscriptionLimits } from './realtime/subscription-slots.ts';
import type { LevelWithSilent } from 'pino';
import type { WebhookUrlPolicy } from './webhooks/url-policy.ts';

export interface Config {
  port: number;
  /** The address to listen on: every interface in production, only this machine in development. */
  host: string;
  databaseUrl: string | undefined;
  /** Apply pending migrations on start; off for a runtime role without DDL rights. */
  migrateOnStart: boolean;
  authSecret: string | undefined;
  dataDir: string;
  sweepIntervalMs: number;
  production: boolean;
  /** Unmasked internal errors in responses; only ever for local debugging. */
  debugErrors: boolean;
  /** Answer introspection queries (GraphiQL needs them); off by default in production. */
  introspection: boolean;
  /** "Did you mean …" hints in validation errors; never in production, nor without introspection. */
  fieldSuggestions: boolean;
  /** Mutations per second per token, with a burst; null when off (the default outside production). */
  mutationRateLimit: { perSecond: number; burst: number } | null;
  /** Services' (per organization) and admins' (per subject) limit; null when off. */
  serviceMutationRateLimit: { perSecond: number; burst: number } | null;
  /** All members of one organization together; null when off (the default outside production). */
  organizationRateLimit: { perSecond: number; burst: number } | null;
  /** Requests of one caller a process works on at once, and how many more may wait; null when off. */
  intakeLimits: { concurrent: number; waitingMax: number } | null;
  /** Serve the GraphiQL page on GET /graphql; off by default in production. */
  graphiql: boolean;
  /** Origins a browser may call from: a list, '*' for any (development), or none. */
  corsOrigins: string[] | '*';
  tokenPolicy: TokenPolicy;
  subscriptionLimits: SubscriptionLimits;
  /** pino level of the JSON logs on stdout. */
  logLevel: LevelWithSilent;
  /** Serve GET /metrics; in production only with a METRICS_TOKEN. */
  metricsEnabled: boolean;
  /** Bearer token a scrape of /metrics must present; null when unset. */
  metricsToken: string | null;
  /** Which webhook URLs and addresses are accepted: in production https and public addresses only. */
  webhookUrlPolicy: WebhookUrlPolicy;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const AUTH_SECRET_LENGTH_MIN = 32;
const METRICS_TOKEN_LENGTH_MIN = 16;
const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, not ${JSON.stringify(raw)}.`);
  }
  return value;
}

function flag(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (raw === '1' || raw === 'true') return true;
  if (raw === '0' || raw === 'false') return false;
  throw new ConfigError(`${name} must be 1, 0, true or false, not ${JSON.stringify(raw)}.`);
}

// Per-token mutation limit in production: generous for a generation backend's bursts, but it
// stops one leaked or buggy token from flooding the ledger.
const MUTATION_RATE_PER_SECOND_PRODUCTION = 50;
const MUTATION_RATE_BURST_DEFAULT = 200;
// Services answer for a whole organization's generations; their limit sits far above what the
// ledger serves for one organization (about a thousand reservations a second on these machines),
// so it only ever stops a runaway client.
const SERVICE_MUTATION_RATE_PER_SECOND_PRODUCTION = 5_000;
const SERVICE_MUTATION_RATE_BURST_DEFAULT = 10_000;
const CALLER_CONCURRENCY_DEFAULT = 16;
const CALLER_WAITING_MAX_DEFAULT = 10_000;

// Members of one organization together: a second member token (another `sub`) of the same
// organization draws from the same bucket, so it cannot double the organization's allowance.
const ORGANIZATION_RATE_PER_SECOND_PRODUCTION = 200;
const ORGANIZATION_RATE_BURST_DEFAULT = 1_000;

const TOKEN_LIFETIME_MAX_SECONDS_DEFAULT = 24 * 3600;
const ADMIN_TOKEN_LIFETIME_MAX_SECONDS_DEFAULT = 3600;
const TOKEN_CLOCK_SKEW_SECONDS_DEFAULT = 30;
const SUBSCRIPTIONS_MAX_DEFAULT = 20;

function optionalText(env: NodeJS.ProcessEnv, name: string): string | null {
  const raw = env[name]?.trim();
  return raw ? raw : null;
}

/**
 * `CORS_ORIGINS`: comma-separated origins (`https://app.example.com`), or `*` for any origin.
 * `null` is refused: sandboxed frames and local files all share that origin, so allowing it
 * would allow every one of them.
 */
function corsOrigins(env: NodeJS.ProcessEnv, production: boolean): string[] | '*' {
  const raw = env.CORS_ORIGINS;
  if (raw === undefined) return production ? [] : '*';
  const entries = raw
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  if (entries.length === 1 && entries[0] === '*') return '*';
  for (const entry of entries) {
    let origin: string | null = null;
    try {
      origin = new URL(entry).origin;
    } catch {
      // Reported below.
    }
    if (origin === null || origin === 'null' || origin !== entry || !/^https?:$/.test(new URL(entry).protocol)) {
      throw new ConfigError(
        `CORS_ORIGINS must list origins such as https://app.example.com (or be *), not ${JSON.stringify(entry.slice(0, 100))}.`,
      );
    }
  }
  return entries;
}

/** Reads and checks the environment; any problem is one ConfigError with a one-line message. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const production = env.NODE_ENV === 'production';
  const databaseUrl = env.DATABASE_URL || undefined;
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError('DATABASE_URL must be a postgres:// or postgresql:// connection string.');
  }
  const authSecret = env.AUTH_SECRET || undefined;
  if (production && !authSecret) throw new ConfigError('AUTH_SECRET is required when NODE_ENV=production.');
  if (authSecret && authSecret.length < AUTH_SECRET_LENGTH_MIN) {
    throw new ConfigError(`AUTH_SECRET must be at least ${AUTH_SECRET_LENGTH_MIN} characters long.`);
  }
  const debugErrors = env.DEBUG_ERRORS === '1';
  if (production && debugErrors) throw new ConfigError('DEBUG_ERRORS cannot be on when NODE_ENV=production.');
  const introspection = flag(env, 'GRAPHQL_INTROSPECTION', !production);
  const logLevel = (env.LOG_LEVEL || 'info') as LevelWithSilent;
  if (!LOG_LEVELS.includes(logLevel))
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, not ${JSON.stringify(env.LOG_LEVEL)}.`);
  const metricsToken = env.METRICS_TOKEN || null;
  if (metricsToken && metricsToken.length < METRICS_TOKEN_LENGTH_MIN) {
    throw new ConfigError(`METRICS_TOKEN must be at least ${METRICS_TOKEN_LENGTH_MIN} characters long.`);
  }
  return {
    port: integer(env, 'PORT', 4000, 0, 65_535),
    host: optionalText(env, 'HOST') ?? (production ? '0.0.0.0' : '127.0.0.1'),
    databaseUrl,
    migrateOnStart: flag(env, 'DATABASE_MIGRATE', true),
    authSecret,
    dataDir: path.resolve(env.DATA_DIR || './data'),
    sweepIntervalMs: integer(env, 'SWEEP_INTERVAL_MS', 1000, 10, 3_600_000),
    production,
    debugErrors,
    introspection,
    fieldSuggestions: introspection && !production,
    mutationRateLimit: rateLimit(
      env,
      'MUTATION_RATE',
      production ? MUTATION_RATE_PER_SECOND_PRODUCTION : 0,
      MUTATION_RATE_BURST_DEFAULT,
    ),
    serviceMutationRateLimit: rateLimit(
      env,
      'SERVICE_MUTATION_RATE',
      production ? SERVICE_MUTATION_RATE_PER_SECOND_PRODUCTION : 0,
      SERVICE_MUTATION_RATE_BURST_DEFAULT,
    ),
    organizationRateLimit: rateLimit(
      env,
      'ORGANIZATION_RATE',
      production ? ORGANIZATION_RATE_PER_SECOND_PRODUCTION : 0,
      ORGANIZATION_RATE_BURST_DEFAULT,
    ),
    intakeLimits: intakeLimits(env),
    graphiql: flag(env, 'GRAPHIQL', !production),
    corsOrigins: corsOrigins(env, production),
    tokenPolicy: {
      maxLifetimeSeconds: {
        member: integer(env, 'TOKEN_MAX_LIFETIME_SECONDS', TOKEN_LIFETIME_MAX_SECONDS_DEFAULT, 60, 31 * 24 * 3600),
        service: integer(env, 'TOKEN_MAX_LIFETIME_SECONDS', TOKEN_LIFETIME_MAX_SECONDS_DEFAULT, 60, 31 * 24 * 3600),
        admin: integer(
          env,
          'ADMIN_TOKEN_MAX_LIFETIME_SECONDS',
          ADMIN_TOKEN_LIFETIME_MAX_SECONDS_DEFAULT,
          60,
          31 * 24 * 3600,
        ),
      },
      issuer: optionalText(env, 'TOKEN_ISSUER'),
      audience: optionalText(env, 'TOKEN_AUDIENCE'),
      clockSkewSeconds: integer(env, 'TOKEN_CLOCK_SKEW_SECONDS', TOKEN_CLOCK_SKEW_SECONDS_DEFAULT, 0, 300),
      // A token without a `scope` claim holds every right of its role. Production refuses such
      // member and service tokens; TOKEN_SCOPES_REQUIRED=0 accepts them while scoped tokens are
      // rolled out (README, Authentication).
      scopesRequired: flag(env, 'TOKEN_SCOPES_REQUIRED', production),
    },
    subscriptionLimits: {
      perConnection: integer(env, 'SUBSCRIPTIONS_PER_CONNECTION', SUBSCRIPTIONS_MAX_DEFAULT, 1, 10_000),
      perToken: integer(env, 'SUBSCRIPTIONS_PER_TOKEN', SUBSCRIPTIONS_MAX_DEFAULT, 1, 10_000),
    },
    logLevel,
    // Metrics reveal traffic and money volumes, not customers' data; in production they are only
    // served to a scraper that presents the token (or not at all), elsewhere to anyone.
    metricsEnabled: !production || metricsToken !== null,
    metricsToken,
    // Outside production webhooks may point at this machine (a receiver under development);
    // production refuses plain http and every non-public address unless the operator asks.
    webhookUrlPolicy: {
      allowHttp: flag(env, 'WEBHOOK_ALLOW_HTTP', !production),
      allowPrivateAddresses: flag(env, 'WEBHOOK_ALLOW_PRIVATE_ADDRESSES', !production),
    },
  };
}

/** `CALLER_CONCURRENCY` (0: no bound) and `CALLER_WAITING_MAX`. */
function intakeLimits(env: NodeJS.ProcessEnv): { concurrent: number; waitingMax: number } | null {
  const concurrent = integer(env, 'CALLER_CONCURRENCY', CALLER_CONCURRENCY_DEFAULT, 0, 10_000);
  const waitingMax = integer(env, 'CALLER_WAITING_MAX', CALLER_WAITING_MAX_DEFAULT, 0, 1_000_000);
  return concurrent === 0 ? null : { concurrent, waitingMax };
}

/** `<prefix>_LIMIT` per second and `<prefix>_BURST`; null when the limit is 0 (off). */
function rateLimit(
  env: NodeJS.ProcessEnv,
  prefix: string,
  perSecondDefault: number,
  burstDefault: number,
): { perSecond: number; burst: number } | null {
  const perSecond = integer(env, `${prefix}_LIMIT`, perSecondDefault, 0, 1_000_000);
  const burst = integer(env, `${prefix}_BURST`, burstDefault, 1, 1_000_000);
  return perSecond > 0 ? { perSecond, burst } : null;
}
