import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { createYoga, type YogaServerInstance } from 'graphql-yoga';
import { AuthenticationError, verifyAuthorization } from './auth/tokens.ts';
import type { Clock } from './clock.ts';
import type { GraphQLContext } from './context.ts';
import type { Database } from './db/client.ts';
import { startSweeper, type Sweeper } from './ledger/sweeper.ts';
import { schema } from './schema/index.ts';

export interface AppOptions {
  database: Database;
  clock: Clock;
  authKey: Uint8Array;
  /** How often expired reservations and lots are swept and due cycles reset; null runs no sweeper. */
  sweepIntervalMs: number | null;
  debugErrors?: boolean;
  log?: (message: string, error?: unknown) => void;
}

export interface App {
  yoga: YogaServerInstance<Record<string, unknown>, GraphQLContext>;
  server: Server;
  listen(port: number, host?: string): Promise<number>;
  stop(): Promise<void>;
}

interface RequestAuthSource {
  request?: Request;
  connectionParams?: Record<string, unknown>;
}

export function createApp(options: AppOptions): App {
  const log = options.log ?? (() => {});
  const yoga = createYoga<Record<string, unknown>, GraphQLContext>({
    schema,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    // Expected failures are typed results; anything else is masked, even outside production.
    maskedErrors: { isDev: options.debugErrors ?? false },
    graphiql: { title: 'Credits API' },
    renderGraphiQL,
    context: async (initial: RequestAuthSource): Promise<GraphQLContext> => {
      const header =
        initial.request?.headers.get('authorization') ??
        (typeof initial.connectionParams?.authorization === 'string' ? initial.connectionParams.authorization : null);
      try {
        const viewer = await verifyAuthorization(header, options.authKey);
        return { db: options.database.db, clock: options.clock, viewer, authFailure: null };
      } catch (error) {
        if (!(error instanceof AuthenticationError)) throw error;
        return { db: options.database.db, clock: options.clock, viewer: null, authFailure: error.message };
      }
    },
  });

  const server = createServer(yoga);
  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  let sweeper: Sweeper | null = null;
  if (options.sweepIntervalMs !== null) {
    sweeper = startSweeper({ db: options.database.db, clock: options.clock }, options.sweepIntervalMs, (error) => log('sweep failed', error));
  }

  return {
    yoga,
    server,
    listen: (port, host = '0.0.0.0') =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          const address = server.address();
          resolve(typeof address === 'object' && address ? address.port : port);
        });
      }),
    async stop() {
      await sweeper?.stop();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Idle keep-alive connections would hold close() open; end them.
        server.closeIdleConnections();
        setTimeout(() => {
          for (const socket of sockets) socket.destroy();
        }, 2000).unref();
      });
    },
  };
}
