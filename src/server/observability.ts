import { randomUUID, timingSafeEqual } from 'node:crypto';
import { GraphQLError, getOperationAST, type DocumentNode, type ExecutionResult } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { GraphQLContext } from '../context.ts';
import { isConnectionError, isSessionTimeout } from '../db/errors.ts';
import { onceClosed } from '../realtime/once-closed.ts';
import { collectResolvedErrors } from '../schema/resolved-errors.ts';
import type { Logger } from './logger.ts';
import type { Metrics, OperationType, Transport } from './metrics.ts';

export const REQUEST_ID_HEADER = 'x-request-id';
const REQUEST_ID_LENGTH_MAX = 128;
// Letters, digits and the separators request ids use in practice (UUIDs, ULIDs, trace ids): no
// spaces, quotes or control characters that could forge or break a log line.
const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:@/+=-]+$/;

/** The caller's request id when it is short and plain, else a new one. */
export function requestIdFrom(header: string | null | undefined): string {
  if (header && header.length <= REQUEST_ID_LENGTH_MAX && REQUEST_ID_PATTERN.test(header)) return header;
  return randomUUID();
}

/** What one HTTP request's log line says, filled in as the request goes through yoga. */
interface RequestRecord {
  requestId: string;
  startedAt: number;
  /** Probes and scrapes log at debug level only, so that they do not bury the traffic. */
  routine: boolean;
  operation?: string;
  operationType?: OperationType;
  organizationId?: string | null;
  role?: string | null;
  outcome?: string;
}

/** One operation in flight: its labels, its start, and the typed errors its resolvers return. */
interface OperationRecord {
  name: string;
  type: OperationType;
  transport: Transport;
  startedAt: number;
  typedErrors: string[];
  /** The HTTP request it came in, whose log line takes its name, caller and outcome. */
  request?: RequestRecord;
}

export interface ObservabilityOptions {
  logger: Logger;
  metrics: Metrics;
  /** Bearer token required on /metrics; null serves it to anyone who reaches the port. */
  metricsToken: string | null;
  /** Whether /metrics is served at all. */
  metricsEnabled: boolean;
}

const ROUTINE_PATHS = new Set(['/health', '/ready', '/metrics']);

/**
 * Request ids, one log line per request (and per WebSocket operation), and the GraphQL
 * operation and subscription metrics; also serves /metrics. Put first among the plugins, so that
 * a request refused by a later one (a limit, the health gate) is still logged and counted.
 */
export function useObservability(options: ObservabilityOptions): Plugin<GraphQLContext> {
  const { logger, metrics } = options;
  const requests = new WeakMap<Request, RequestRecord>();
  // Keyed by the operation's context object, which yoga creates afresh for each operation.
  const operations = new WeakMap<object, OperationRecord>();

  const operationOf = (context: object): OperationRecord => {
    let record = operations.get(context);
    if (!record) {
      record = {
        name: 'anonymous',
        type: 'unknown',
        transport: transportOf(context),
        startedAt: performance.now(),
        typedErrors: [],
      };
      operations.set(context, record);
    }
    return record;
  };

  const start = (
    document: DocumentNode,
    operationName: string | null | undefined,
    context: GraphQLContext & { request?: Request },
  ) => {
    const operation = operationOf(context);
    const ast = getOperationAST(document, operationName);
    // Only operations that parsed and validated get here, so the name is a GraphQL name; it is
    // still cut and capped, since the client chooses it.
    operation.name = metrics.operationName(ast?.name?.value);
    operation.type = ast?.operation ?? 'unknown';
    operation.startedAt = performance.now();
    const request = context.request && operation.transport !== 'ws' ? requests.get(context.request) : undefined;
    if (request) {
      operation.request = request;
      request.operation = operation.name;
      request.operationType = operation.type;
      request.organizationId = context.viewer?.organizationId ?? null;
      request.role = context.viewer?.role ?? null;
    }
    return operation;
  };

  const finish = (operation: OperationRecord, context: GraphQLContext, result: ExecutionResult | null) => {
    const outcome = result ? outcomeOf(result, operation.typedErrors) : 'success';
    const seconds = (performance.now() - operation.startedAt) / 1000;
    metrics.operation(operation.name, operation.type, outcome, seconds);
    metrics.insufficientReservations(
      operation.typedErrors.filter((name) => name === 'InsufficientCreditsError').length,
    );
    if (operation.request) operation.request.outcome = outcome;
    if (operation.transport === 'ws') {
      logger.info(
        {
          event: 'operation',
          transport: 'ws',
          requestId: randomUUID(),
          operation: operation.name,
          operationType: operation.type,
          organizationId: context.viewer?.organizationId ?? null,
          role: context.viewer?.role ?? null,
          outcome,
          durationMs: Math.round(seconds * 1000),
        },
        'operation',
      );
    }
  };

  return {
    onRequest({ request, url, endResponse }) {
      const record: RequestRecord = {
        requestId: requestIdFrom(request.headers.get(REQUEST_ID_HEADER)),
        startedAt: performance.now(),
        routine: ROUTINE_PATHS.has(url.pathname),
      };
      requests.set(request, record);
      if (url.pathname === '/metrics' && options.metricsEnabled) {
        if (!authorizedScrape(request, options.metricsToken)) {
          endResponse(new Response('Unauthorized\n', { status: 401, headers: { 'www-authenticate': 'Bearer' } }));
          return;
        }
        return metrics.registry.metrics().then((body) => {
          endResponse(new Response(body, { headers: { 'content-type': metrics.registry.contentType } }));
        });
      }
    },
    instrumentation: {
      execute: ({ context }, wrapped) => collectResolvedErrors(operationOf(context).typedErrors, wrapped),
      subscribe: ({ context }, wrapped) => collectResolvedErrors(operationOf(context).typedErrors, wrapped),
    },
    onExecute({ args }) {
      const operation = start(args.document, args.operationName, args.contextValue);
      return {
        onExecuteDone({ result }) {
          finish(operation, args.contextValue, isAsyncIterable(result) ? null : result);
        },
      };
    },
    onSubscribe({ args }) {
      const operation = start(args.document, args.operationName, args.contextValue);
      return {
        onSubscribeResult({ result, setResult }) {
          if (!isAsyncIterable(result)) {
            finish(operation, args.contextValue, result);
            return;
          }
          finish(operation, args.contextValue, null);
          const transport = operation.transport === 'ws' ? 'ws' : 'sse';
          metrics.subscriptions.inc({ transport });
          setResult(onceClosed(result, () => metrics.subscriptions.dec({ transport })));
        },
        onSubscribeError({ error }) {
          finish(operation, args.contextValue, {
            errors: [
              error instanceof GraphQLError
                ? error
                : new GraphQLError('subscribe failed', { originalError: error as Error }),
            ],
          });
        },
      };
    },
    onExecutionResult({ request, result }) {
      const record = requests.get(request);
      if (!record || !result || isAsyncIterable(result)) return;
      const { errors } = result as ExecutionResult;
      if (errors?.length) record.outcome = errorCodeOf(errors[0]!);
      else record.outcome ??= 'success';
    },
    onResponse({ request, response }) {
      const record = requests.get(request);
      if (!record) return;
      response.headers.set(REQUEST_ID_HEADER, record.requestId);
      const url = new URL(request.url);
      const line = {
        event: 'request',
        requestId: record.requestId,
        method: request.method,
        path: url.pathname,
        status: response.status,
        durationMs: Math.round(performance.now() - record.startedAt),
        operation: record.operation ?? null,
        operationType: record.operationType ?? null,
        organizationId: record.organizationId ?? null,
        role: record.role ?? null,
        outcome: record.outcome ?? (response.status < 400 ? 'success' : `HTTP_${response.status}`),
      };
      if (record.routine) logger.debug(line, 'request');
      else logger.info(line, 'request');
    },
  };
}

function transportOf(context: object): Transport {
  // graphql-ws operations get their context from src/realtime/websocket.ts, which adds the socket.
  if ('socket' in context && 'connectionParams' in context) return 'ws';
  return 'http';
}

/** A result's outcome: the first error's code, else the first typed error, else success. */
function outcomeOf(result: ExecutionResult, typedErrors: readonly string[]): string {
  if (result.errors?.length) return errorCodeOf(result.errors[0]!);
  return typedErrors[0] ?? 'success';
}

/** The code a client will see for `error`, whether or not it has been masked yet. */
export function errorCodeOf(error: GraphQLError): string {
  const code = error.extensions?.code;
  if (typeof code === 'string' && /^[A-Z0-9_]{1,64}$/.test(code)) return code;
  const original = error.originalError;
  if (original && (isConnectionError(original) || isSessionTimeout(original))) return 'SERVICE_UNAVAILABLE';
  if (!original) return 'GRAPHQL_ERROR';
  return 'INTERNAL_SERVER_ERROR';
}

function authorizedScrape(request: Request, token: string | null): boolean {
  if (token === null) return true;
  const match = /^Bearer\s+(\S+)$/i.exec(request.headers.get('authorization')?.trim() ?? '');
  if (!match) return false;
  const given = Buffer.from(match[1]!);
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function isAsyncIterable<T>(value: unknown): value is AsyncIterableIterator<T> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}
