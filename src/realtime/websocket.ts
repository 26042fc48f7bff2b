import type { Server } from 'node:http';
import { GraphQLError, type DocumentNode, type ExecutionArgs } from 'graphql';
import { CloseCode } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import type { YogaServerInstance } from 'graphql-yoga';
import { WebSocket, WebSocketServer } from 'ws';
import { closeReason, NOT_INITIALISED_REASON, type ConnectionRefusal } from './connection-auth.ts';

export interface WebSocketEndpoint {
  /**
   * Waits (up to `timeoutMs`) until every operation has sent its `complete`, then closes all
   * sockets with 1001 "Going away" and stops the WebSocket server.
   */
  close(timeoutMs?: number): Promise<void>;
}

type Enveloped = ReturnType<YogaServerInstance<Record<string, unknown>, Record<string, unknown>>['getEnveloped']>;

type EnvelopedOperation = Pick<Enveloped, 'execute' | 'subscribe'>;

/**
 * Serves the graphql-transport-ws protocol (graphql-ws) on `path` of the HTTP server. Every
 * operation goes through yoga's envelop pipeline, so the same context (and so the same token
 * check), limits and error masking apply as over HTTP. The token arrives once, in the
 * connection_init payload; `authenticate` refuses a connection (4401 when the token is missing or
 * bad) before any operation runs, with a reason that says what to do.
 */
export function serveGraphQLOverWebSocket(options: {
  server: Server;
  path: string;
  yoga: YogaServerInstance<Record<string, unknown>, any>;
  /** The largest frame accepted; a longer one closes the socket with 1009 before it is read. */
  maxPayloadBytes: number;
  /** Applied to the syntax and validation errors graphql-ws sends itself (outside yoga's masking). */
  maskError?: (error: GraphQLError) => Error;
  /** Null accepts the connection; a refusal closes it with its code and reason. */
  authenticate(connectionParams: Readonly<Record<string, unknown>> | undefined): Promise<ConnectionRefusal | null>;
}): WebSocketEndpoint {
  const wsServer = new WebSocketServer({
    server: options.server,
    path: options.path,
    maxPayload: options.maxPayloadBytes,
    WebSocket: ExplainedWebSocket,
  });
  const masked = (errors: readonly GraphQLError[]): GraphQLError[] =>
    options.maskError ? errors.map((error) => toGraphQLError(options.maskError!(error))) : [...errors];
  // The acknowledged connections; graphql-ws keeps each one's running operations in `subscriptions`.
  const connections = new Set<{ readonly subscriptions: Readonly<Record<string, unknown>> }>();
  // Each operation's execute and subscribe, from the envelop pipeline `onSubscribe` built for it.
  // graphql-ws hands `execute`/`subscribe` nothing but the arguments `onSubscribe` returned, the
  // same object, so that object is the key; yoga's example parks the functions in `rootValue`
  // instead, which would make them the root value every resolver is handed.
  const operations = new WeakMap<ExecutionArgs, EnvelopedOperation>();
  const enveloped = (args: ExecutionArgs): EnvelopedOperation => {
    const operation = operations.get(args);
    if (!operation) throw new Error('An operation reached execution without passing onSubscribe.');
    return operation;
  };

  const disposable = useServer(
    {
      execute: (args) => enveloped(args).execute(args),
      subscribe: (args) => enveloped(args).subscribe(args),
      onConnect: async (ctx) => {
        const refusal = await options.authenticate(ctx.connectionParams);
        if (refusal) {
          // graphql-ws would answer `false` with 4403 "Forbidden" at once; closing first gives
          // the refusal's own code and reason, and graphql-ws's close then does nothing.
          ctx.extra.socket.close(refusal.code, refusal.reason);
          return false;
        }
        connections.add(ctx);
        return true;
      },
      onClose: (ctx) => {
        connections.delete(ctx);
      },
      onSubscribe: async (ctx, _id, params) => {
        const { schema, execute, subscribe, contextFactory, parse, validate } = options.yoga.getEnveloped({
          ...ctx,
          req: ctx.extra.request,
          socket: ctx.extra.socket,
          params,
          connectionParams: ctx.connectionParams,
        });
        let document: DocumentNode;
        try {
          document = parse(params.query);
        } catch (error) {
          // A syntax error (or a refused token count) is the client's fault: answer it as an
          // error message for this operation instead of letting graphql-ws close the socket.
          if (error instanceof GraphQLError) return masked([error]);
          throw error;
        }
        const args: ExecutionArgs = {
          schema,
          operationName: params.operationName,
          document,
          variableValues: params.variables,
          contextValue: await contextFactory(),
        };
        const errors = validate(args.schema, args.document);
        if (errors.length > 0) return masked(errors);
        operations.set(args, { execute, subscribe });
        return args;
      },
    },
    wsServer,
  );

  // A frame over maxPayload makes ws close the socket with 1009 and emit an error; without a
  // listener that error would be thrown as uncaught.
  wsServer.on('connection', (socket) => socket.on('error', () => {}));

  const busy = () => [...connections].some((ctx) => Object.keys(ctx.subscriptions).length > 0);

  return {
    async close(timeoutMs = 1000) {
      // graphql-ws removes an operation only after its `complete` message was written, so an
      // empty table means every client has been told its subscription ended.
      const deadline = Date.now() + timeoutMs;
      while (busy() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      await disposable.dispose();
    },
  };
}

/**
 * The sockets of the server: every 4401 and 4403 close carries a reason that fits a close frame,
 * and graphql-ws's own bare "Unauthorized" (a subscribe sent before the connection was
 * acknowledged) says what the client should have done.
 */
class ExplainedWebSocket extends WebSocket {
  override close(code?: number, reason?: string | Buffer): void {
    super.close(
      code,
      code === CloseCode.Unauthorized || code === CloseCode.Forbidden ? explained(code, reason) : reason,
    );
  }
}

function explained(code: number, reason: string | Buffer | undefined): string {
  const text = String(reason ?? '');
  return closeReason(code === CloseCode.Unauthorized && text === 'Unauthorized' ? NOT_INITIALISED_REASON : text);
}

function toGraphQLError(error: Error): GraphQLError {
  return error instanceof GraphQLError ? error : new GraphQLError(error.message);
}
