import { createServer, type Server } from 'node:http';
import type { LookupFunction, Socket } from 'node:net';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { createYoga, type YogaServerInstance } from 'graphql-yoga';
import { AuthenticationError, DEFAULT_TOKEN_POLICY, type TokenPolicy } from './auth/tokens.ts';
import { VerifiedTokens } from './auth/verified-tokens.ts';
import type { Clock } from './clock.ts';
import type { GraphQLContext } from './context.ts';
import { ping, type Database } from './db/client.ts';
import { getBalance, type Balance } from './ledger/balance.ts';
import { BALANCE_ALERT_CHANNEL } from './ledger/alert-evaluation.ts';
import { findDeliveredAlertEvent, type DeliveredAlertEvent } from './ledger/alerts.ts';
import { BALANCE_CHANNEL } from './ledger/announcements.ts';
import { createAlertFeed, type AlertFeed } from './realtime/alert-feed.ts';
import { observeMovements } from './ledger/movements.ts';
import { startSweeper, type Sweeper } from './ledger/sweeper.ts';
import { createBalanceNotifier, type BalanceNotifier } from './realtime/balance-notifier.ts';
import { notificationSourcesFor } from './realtime/notification-source.ts';
import {
  DEFAULT_SUBSCRIPTION_LIMITS,
  SubscriptionSlots,
  type SubscriptionLimits,
} from './realtime/subscription-slots.ts';
import {
  authorizationHeaderOf,
  authorizationOf,
  NO_TOKEN_REASON,
  refusedToken,
  unauthorized,
} from './realtime/connection-auth.ts';
import { serveGraphQLOverWebSocket } from './realtime/websocket.ts';
import { schema } from './schema/index.ts';
import { DatabaseHealth } from './server/database-health.ts';
import { corsPolicy } from './server/browsers.ts';
import { sanitisedLogger } from './server/error-log.ts';
import { ReadinessCheck, useReadiness } from './server/health.ts';
import { logCallback, silentLogger, type Logger } from './server/logger.ts';
import { Metrics, type WebhookAttemptOutcome } from './server/metrics.ts';
import { useObservability } from './server/observability.ts';
import { observedNotificationSource, yogaLogger } from './server/log-adapters.ts';
import { errorMasker, protectionPlugins, REQUEST_BODY_BYTES_MAX, requestLimits } from './server/protection.ts';
import type { MutationRateLimit } from './server/rate-limit.ts';
import { TenantIntake, withFairIntake, type IntakeLimits } from './server/tenant-intake.ts';
import type { RetrySchedule } from './webhooks/backoff.ts';
import { createWebhookDispatcher, type WebhookDispatcher } from './webhooks/dispatcher.ts';
import { DEVELOPMENT_WEBHOOK_POLICY, type WebhookUrlPolicy } from './webhooks/url-policy.ts';

export interface AppOptions {
  database: Database;
  clock: Clock;
  authKey: Uint8Array;
  /** How often expired reservations and lots are swept and due cycles reset; null runs no sweeper. */
  sweepIntervalMs: number | null;
  debugErrors?: boolean;
  /** Answer `__schema`/`__type` queries (GraphiQL needs them); default true. */
  introspection?: boolean;
  /** "Did you mean …" hints in validation errors; default: as `introspection`. */
  fieldSuggestions?: boolean;
  /** Per-token limit on mutations; absent or null means no limit. */
  mutationRateLimit?: MutationRateLimit | null;
  serviceMutationRateLimit?: MutationRateLimit | null;
  /** All members of one organization together; absent or null means no limit. */
  organizationRateLimit?: MutationRateLimit | null;
  /** Serve GraphiQL on GET /graphql for browsers; default true (production turns it off). */
  graphiql?: boolean;
  /** Origins browsers may call from; default '*' (any, as in development). */
  corsOrigins?: readonly string[] | '*';
  /** Expiry, lifetime, issuer and audience rules for tokens; default DEFAULT_TOKEN_POLICY. */
  tokenPolicy?: TokenPolicy;
  /** Open subscriptions per token and per WebSocket connection; default 20 each. */
  subscriptionLimits?: SubscriptionLimits;
  /** Structured logs (request lines, start-up, sweeper, listener, database); none when absent. */
  logger?: Logger;
  /** Instead of `logger`, one callback for the health gate's, listener's and sweeper's messages. */
  log?: (message: string, error?: unknown) => void;
  /** Serve Prometheus metrics on GET /metrics (default true). */
  metricsEnabled?: boolean;
  /** Bearer token a scrape of /metrics must present; absent or null means none. */
  metricsToken?: string | null;
  /** Tuning of the live balance feed; the defaults suit both drivers. */
  realtime?: RealtimeOptions;
  /** Requests of one caller a process works on at once (src/server/tenant-intake.ts); absent or null: no bound. */
  intakeLimits?: IntakeLimits | null;
  /** Webhook deliveries: which URLs are accepted (default: any, as in development) and how they are sent. */
  webhooks?: WebhookOptions;
}

export interface WebhookOptions {
  /** Default DEVELOPMENT_WEBHOOK_POLICY (http and private addresses allowed); production passes its own. */
  urlPolicy?: WebhookUrlPolicy;
  /** How often due retries are looked for; null never (default 1 s). */
  pollIntervalMs?: number | null;
  attemptTimeoutMs?: number;
  retrySchedule?: RetrySchedule;
  /** Name resolution for receivers (tests stand in for DNS). */
  lookup?: LookupFunction;
}

export interface RealtimeOptions {
  /** How long a burst of balance notifications is collected before one read answers it (default 10 ms). */
  coalesceMs?: number;
  /** How often the listener is checked; null for never (default 5 s on PostgreSQL, never on PGlite). */
  watchdogIntervalMs?: number | null;
  /** How long (re)starting the listener may take before the watchdog tries again (default 5 s). */
  listenTimeoutMs?: number;
}

/**
 * The service, built but idle: constructing it opens nothing, starts no timer and registers
 * nothing outside itself (as graphql-yoga's `buildApp()` with its start/stop), so a caller decides
 * when background work begins and a test can build one without cleaning up after it.
 */
export interface App {
  yoga: YogaServerInstance<Record<string, unknown>, GraphQLContext>;
  server: Server;
  notifier: BalanceNotifier<Balance>;
  /** The live feed of committed balance alert events. */
  alertFeed: AlertFeed<DeliveredAlertEvent>;
  /** Sends due webhook deliveries (started with the app). */
  webhooks: WebhookDispatcher;
  metrics: Metrics;
  /**
   * Starts the background work: the balance listener, the sweeper and the movement metrics. Done
   * once however often it is called; `listen()` calls it. Tests that send requests in process
   * (`yoga.fetch`) and need live balances, metrics or a sweeper call it themselves.
   */
  start(): Promise<void>;
  /** Starts the background work if need be, then accepts connections on `port`. */
  listen(port: number, host?: string): Promise<number>;
  /** Stops whatever was started, and the server; safe to call without a start, and twice. */
  stop(): Promise<void>;
}

interface RequestAuthSource {
  request?: Request;
  connectionParams?: Record<string, unknown>;
  /** The WebSocket an operation arrived on (set by serveGraphQLOverWebSocket). */
  socket?: object;
}

export function createApp(options: AppOptions): App {
  const logger = options.logger ?? silentLogger();
  const log = (event: string) => options.log ?? logCallback(logger, event);
  // One listening connection per process hears both balance changes and alert events.
  const [balanceSource, alertSource] = notificationSourcesFor(options.database, [
    BALANCE_CHANNEL,
    BALANCE_ALERT_CHANNEL,
  ]);
  const notifier = createBalanceNotifier<Balance>({
    source: observedNotificationSource(balanceSource!, log('listener')),
    load: (organizationId) => getBalance(options.database.db, organizationId, options.clock.now()),
    coalesceMs: options.realtime?.coalesceMs,
    listenTimeoutMs: options.realtime?.listenTimeoutMs,
    watchdogIntervalMs:
      options.realtime?.watchdogIntervalMs !== undefined
        ? options.realtime.watchdogIntervalMs
        : options.database.driver === 'postgres'
          ? 5000
          : null,
    log: log('listener'),
  });
  const webhookUrlPolicy = options.webhooks?.urlPolicy ?? DEVELOPMENT_WEBHOOK_POLICY;
  // Declared before the feed that wakes it; the metrics it reports to come later, so it calls through.
  let reportAttempt: (outcome: WebhookAttemptOutcome, lagMs: number | null, gaveUp: boolean) => void = () => {};
  const webhooks = createWebhookDispatcher({
    db: options.database.db,
    clock: options.clock,
    policy: webhookUrlPolicy,
    load: (organizationId, eventId, at) => findDeliveredAlertEvent(options.database.db, organizationId, eventId, at),
    pollIntervalMs: options.webhooks?.pollIntervalMs,
    attemptTimeoutMs: options.webhooks?.attemptTimeoutMs,
    retrySchedule: options.webhooks?.retrySchedule,
    lookup: options.webhooks?.lookup,
    onAttempt: (outcome, lagMs, gaveUp) => reportAttempt(outcome, lagMs, gaveUp),
    log: log('webhooks'),
  });
  const alertFeed = createAlertFeed({
    source: alertSource!,
    // Every committed event may have a delivery due at once, on whichever process claims it first.
    onEvent: () => webhooks.wake(),
    load: (organizationId, eventId) =>
      findDeliveredAlertEvent(options.database.db, organizationId, eventId, options.clock.now()),
    listenTimeoutMs: options.realtime?.listenTimeoutMs,
    log: log('listener'),
  });
  // Learns of an unreachable database from failed requests, and probes until it answers again.
  const databaseHealth = new DatabaseHealth(() => ping(options.database.db), log('database'));
  const tokenPolicy = options.tokenPolicy ?? DEFAULT_TOKEN_POLICY;
  const subscriptionSlots = new SubscriptionSlots(options.subscriptionLimits ?? DEFAULT_SUBSCRIPTION_LIMITS);
  const fieldSuggestions = options.fieldSuggestions ?? options.introspection ?? true;
  const maskError = errorMasker(databaseHealth, { hideSuggestions: !fieldSuggestions });
  const verifiedTokens = new VerifiedTokens(options.authKey, tokenPolicy);
  const metrics = new Metrics({
    db: options.database.db,
    poolStats: options.database.poolStats,
    notifierStats: () => notifier.stats(),
    databaseAvailable: () => databaseHealth.available,
  });
  reportAttempt = (outcome, lagMs, gaveUp) => metrics.webhookAttempt(outcome, lagMs, gaveUp);
  // First, so that a request refused by a later plugin (a limit, the health gate) is still logged.
  const operationsPlugins = [
    useObservability({
      logger,
      metrics,
      metricsEnabled: options.metricsEnabled ?? true,
      metricsToken: options.metricsToken ?? null,
    }),
    useReadiness(new ReadinessCheck(options.database.db, databaseHealth)),
  ];
  const yoga = createYoga<Record<string, unknown>, GraphQLContext>({
    schema,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    // Expected failures are typed results; anything else is masked, even outside production
    // (an unreachable database becomes SERVICE_UNAVAILABLE).
    maskedErrors: { isDev: options.debugErrors ?? false, maskError },
    // A masked error is logged without its query or parameters (src/server/error-log.ts), as a
    // line of the service's logger or through the `log` callback a caller handed in.
    logging: options.log ? sanitisedLogger(options.log) : yogaLogger(logger),
    ...requestLimits,
    plugins: [
      ...operationsPlugins,
      ...protectionPlugins({
        introspection: options.introspection ?? true,
        fieldSuggestions,
        mutationRateLimit: options.mutationRateLimit ?? null,
        serviceMutationRateLimit: options.serviceMutationRateLimit ?? null,
        organizationRateLimit: options.organizationRateLimit ?? null,
        databaseHealth,
      }),
    ],
    cors: corsPolicy(options.corsOrigins ?? '*'),
    // GraphiQL sends the CSRF header with every request, so GET queries from it keep working.
    graphiql:
      (options.graphiql ?? true) ? { title: 'Credits API', additionalHeaders: { 'X-GraphQL-Yoga-CSRF': '1' } } : false,
    renderGraphiQL,
    context: async (initial: RequestAuthSource): Promise<GraphQLContext> => {
      const shared = {
        db: options.database.db,
        clock: options.clock,
        notifier,
        alertFeed,
        subscriptionSlots,
        webhookUrlPolicy,
      };
      const header = initial.request?.headers.get('authorization') ?? authorizationHeaderOf(initial.connectionParams);
      try {
        const viewer = await verifiedTokens.verify(header);
        return { ...shared, viewer, authFailure: null, connection: initial.socket ?? null };
      } catch (error) {
        if (!(error instanceof AuthenticationError)) throw error;
        return { ...shared, viewer: null, authFailure: error.message, connection: initial.socket ?? null };
      }
    },
  });

  const intakeLimits = options.intakeLimits ?? null;
  const server = createServer(
    intakeLimits === null
      ? yoga
      : withFairIntake(yoga, new TenantIntake(intakeLimits), (authorization) => verifiedTokens.verify(authorization)),
  );
  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const webSockets = serveGraphQLOverWebSocket({
    server,
    path: '/graphql',
    yoga,
    // A frame may be no larger than an HTTP body: ws closes the socket (1009) on a longer one as
    // soon as its header announces the length, before reading or parsing it.
    maxPayloadBytes: REQUEST_BODY_BYTES_MAX,
    // Errors graphql-ws sends itself (syntax and validation) go through the same masking.
    maskError: (error) => maskError(error, 'Unexpected error.', options.debugErrors ?? false),
    authenticate: async (params) => {
      const authorization = authorizationOf(params);
      if (authorization.kind === 'none') return unauthorized(NO_TOKEN_REASON);
      if (authorization.kind === 'unreadable') return unauthorized(authorization.reason);
      return verifiedTokens.verify(authorization.value).then(
        () => null,
        // The verifier's words name the claim at fault and echo nothing of the token.
        (error) =>
          refusedToken(error instanceof AuthenticationError ? error.message : 'The token could not be checked.'),
      );
    },
  });

  let started: Promise<void> | null = null;
  let stopObservingMovements: (() => void) | null = null;
  let sweeper: Sweeper | null = null;
  let stopping: Promise<void> | null = null;
  const start = (): Promise<void> => {
    if (stopping) return Promise.reject(new Error('The app was stopped; build a new one.'));
    started ??= startBackground();
    return started;
  };
  return {
    yoga,
    server,
    notifier,
    alertFeed,
    webhooks,
    metrics,
    start,
    listen: async (port, host = '127.0.0.1') => {
      // Subscribers are only served once changes can be heard.
      await start();
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          const address = server.address();
          resolve(typeof address === 'object' && address ? address.port : port);
        });
      });
    },
    stop() {
      // Stopping twice (a signal during a test's own close) waits for the same shutdown.
      stopping ??= shutdown();
      return stopping;
    },
  };

  // The sweeper and the movement observer are in place before the first await, so a stop that
  // comes while the listener is still starting finds them.
  async function startBackground(): Promise<void> {
    stopObservingMovements = observeMovements((db, movements, alertsFired) => {
      metrics.movements(db, movements);
      if (alertsFired > 0) metrics.alertsFired.inc(alertsFired);
    });
    metrics.collectProcessMetrics();
    if (options.sweepIntervalMs !== null) {
      sweeper = startAppSweeper(options, options.sweepIntervalMs, metrics, logger, log('sweeper'));
    }
    await notifier.start();
    await alertFeed.start();
    // After the feed, so that no event announced from here on goes unheard; the first scan picks
    // up whatever was due before (events committed while no process was up).
    webhooks.start();
  }

  async function shutdown(): Promise<void> {
    stopObservingMovements?.();
    await sweeper?.stop();
    await webhooks.stop();
    await databaseHealth.stop();
    await started;
    // Stop accepting first; then complete every open subscription (SSE streams end with a
    // `complete` event, graphql-ws sends `complete` before closing with 1001) and close the listener.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    await notifier.stop();
    await alertFeed.stop();
    await webSockets.close();
    // Idle keep-alive connections would hold close() open; end them, and any stragglers later.
    server.closeIdleConnections();
    const straggling = setTimeout(() => {
      for (const socket of sockets) socket.destroy();
    }, 2000);
    straggling.unref();
    await closed;
    clearTimeout(straggling);
  }
}

/** The sweeper, with its failures and runs counted in the metrics and logged. */
function startAppSweeper(
  options: AppOptions,
  intervalMs: number,
  metrics: Metrics,
  logger: Logger,
  log: (message: string, error?: unknown) => void,
): Sweeper {
  return startSweeper(
    { db: options.database.db, clock: options.clock },
    intervalMs,
    (error) => {
      metrics.sweeperFailures.inc({ scope: 'run' });
      log('sweep failed', error);
    },
    (item, error, failures) => {
      metrics.sweeperFailures.inc({ scope: 'item' });
      log(`sweep of ${item.kind} ${item.id} failed (${failures} time(s) in a row; retried with backoff)`, error);
    },
    (result, durationMs) => {
      metrics.sweeperRun(result, durationMs);
      const worked =
        result.refundedReservations + result.resetOrganizations + result.expiredLotOrganizations + result.failedItems;
      // A line for every run that did something; idle runs (every second) only at debug level.
      logger[worked > 0 ? 'info' : 'debug'](
        { event: 'sweeper', ...result, durationMs: Math.round(durationMs) },
        'sweep',
      );
    },
  );
}
