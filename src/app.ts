import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { createYoga, type YogaServerInstance } from 'graphql-yoga';
import { AuthenticationError, DEFAULT_TOKEN_POLICY, type TokenPolicy } from './auth/tokens.ts';
import { VerifiedTokens } from './auth/verified-tokens.ts';
import type { Clock } from './clock.ts';
import type { GraphQLContext } from './context.ts';
import { ping, type Database } from './db/client.ts';
import { getBalance, type Balance } from './ledger/balance.ts';
import { BALANCE_CHANNEL } from './ledger/announcements.ts';
import { startSweeper, type Sweeper } from './ledger/sweeper.ts';
import { createBalanceNotifier, type BalanceNotifier } from './realtime/balance-notifier.ts';
import { notificationSourceFor } from './realtime/notification-source.ts';
import { DEFAULT_SUBSCRIPTION_LIMITS, SubscriptionSlots, type SubscriptionLimits } from './realtime/subscription-slots.ts';
import { serveGraphQLOverWebSocket } from './realtime/websocket.ts';
import { schema } from './schema/index.ts';
import { DatabaseHealth } from './server/database-health.ts';
import { corsPolicy } from './server/browsers.ts';
import { sanitisedLogger } from './server/error-log.ts';
import { errorMasker, protectionPlugins, REQUEST_BODY_BYTES_MAX, requestLimits } from './server/protection.ts';
import type { MutationRateLimit } from './server/rate-limit.ts';

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
  log?: (message: string, error?: unknown) => void;
  /** Tuning of the live balance feed; the defaults suit both drivers. */
  realtime?: RealtimeOptions;
}

export interface RealtimeOptions {
  /** How long a burst of balance notifications is collected before one read answers it (default 10 ms). */
  coalesceMs?: number;
  /** How often the listener is checked; null for never (default 5 s on PostgreSQL, never on PGlite). */
  watchdogIntervalMs?: number | null;
  /** How long (re)starting the listener may take before the watchdog tries again (default 5 s). */
  listenTimeoutMs?: number;
}

export interface App {
  yoga: YogaServerInstance<Record<string, unknown>, GraphQLContext>;
  server: Server;
  notifier: BalanceNotifier<Balance>;
  listen(port: number, host?: string): Promise<number>;
  stop(): Promise<void>;
}

interface RequestAuthSource {
  request?: Request;
  connectionParams?: Record<string, unknown>;
  /** The WebSocket an operation arrived on (set by serveGraphQLOverWebSocket). */
  socket?: object;
}

export function createApp(options: AppOptions): App {
  const log = options.log ?? (() => {});
  const notifier = createBalanceNotifier<Balance>({
    source: notificationSourceFor(options.database, BALANCE_CHANNEL),
    load: (organizationId) => getBalance(options.database.db, organizationId, options.clock.now()),
    coalesceMs: options.realtime?.coalesceMs,
    listenTimeoutMs: options.realtime?.listenTimeoutMs,
    watchdogIntervalMs:
      options.realtime?.watchdogIntervalMs !== undefined
        ? options.realtime.watchdogIntervalMs
        : options.database.driver === 'postgres'
          ? 5000
          : null,
    log,
  });
  const notifierStarted = notifier.start();
  // Learns of an unreachable database from failed requests, and probes until it answers again.
  const databaseHealth = new DatabaseHealth(() => ping(options.database.db), log);
  const tokenPolicy = options.tokenPolicy ?? DEFAULT_TOKEN_POLICY;
  const subscriptionSlots = new SubscriptionSlots(options.subscriptionLimits ?? DEFAULT_SUBSCRIPTION_LIMITS);
  const fieldSuggestions = options.fieldSuggestions ?? options.introspection ?? true;
  const maskError = errorMasker(databaseHealth, { hideSuggestions: !fieldSuggestions });
  const verifiedTokens = new VerifiedTokens(options.authKey, tokenPolicy);
  const yoga = createYoga<Record<string, unknown>, GraphQLContext>({
    schema,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    // Expected failures are typed results; anything else is masked, even outside production
    // (an unreachable database becomes SERVICE_UNAVAILABLE).
    maskedErrors: { isDev: options.debugErrors ?? false, maskError },
    // A masked error is logged without its query or parameters (src/server/error-log.ts).
    logging: sanitisedLogger(options.log),
    ...requestLimits,
    plugins: protectionPlugins({
      introspection: options.introspection ?? true,
      fieldSuggestions,
      mutationRateLimit: options.mutationRateLimit ?? null,
      serviceMutationRateLimit: options.serviceMutationRateLimit ?? null,
      organizationRateLimit: options.organizationRateLimit ?? null,
      databaseHealth,
    }),
    cors: corsPolicy(options.corsOrigins ?? '*'),
    // GraphiQL sends the CSRF header with every request, so GET queries from it keep working.
    graphiql: (options.graphiql ?? true) ? { title: 'Credits API', additionalHeaders: { 'X-GraphQL-Yoga-CSRF': '1' } } : false,
    renderGraphiQL,
    context: async (initial: RequestAuthSource): Promise<GraphQLContext> => {
      const shared = { db: options.database.db, clock: options.clock, notifier, subscriptionSlots };
      const header =
        initial.request?.headers.get('authorization') ??
        (typeof initial.connectionParams?.authorization === 'string' ? initial.connectionParams.authorization : null);
      try {
        const viewer = await verifiedTokens.verify(header);
        return { ...shared, viewer, authFailure: null, connection: initial.socket ?? null };
      } catch (error) {
        if (!(error instanceof AuthenticationError)) throw error;
        return { ...shared, viewer: null, authFailure: error.message, connection: initial.socket ?? null };
      }
    },
  });

  const server = createServer(yoga);
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
      const authorization = typeof params?.authorization === 'string' ? params.authorization : null;
      return verifiedTokens.verify(authorization).then(
        () => true,
        () => false,
      );
    },
  });

  let sweeper: Sweeper | null = null;
  if (options.sweepIntervalMs !== null) {
    sweeper = startSweeper(
      { db: options.database.db, clock: options.clock },
      options.sweepIntervalMs,
      (error) => log('sweep failed', error),
      (item, error, failures) => log(`sweep of ${item.kind} ${item.id} failed (${failures} time(s) in a row; retried with backoff)`, error),
    );
  }

  let stopping: Promise<void> | null = null;
  return {
    yoga,
    server,
    notifier,
    listen: async (port, host = '127.0.0.1') => {
      // Subscribers are only served once changes can be heard.
      await notifierStarted;
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

  async function shutdown(): Promise<void> {
    await sweeper?.stop();
    await databaseHealth.stop();
    await notifierStarted;
    // Stop accepting first; then complete every open subscription (SSE streams end with a
    // `complete` event, graphql-ws sends `complete` before closing with 1001) and close the listener.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    await notifier.stop();
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
