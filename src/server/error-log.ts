import { DrizzleQueryError } from 'drizzle-orm';
import { GraphQLError } from 'graphql';
import { createLogger, type YogaLogger } from 'graphql-yoga';

// What the server logs of an unexpected error, on every path that logs one (yoga's logger, the
// pino `err` serializer, the sweeper, listener and health callbacks all describe errors here).
// drizzle's query error carries the statement and every parameter in its message (idempotency
// keys, payment references, names), and a driver's message can quote a value or name the
// statement ("invalid input syntax for type uuid: \"…\"", "insert or update on table …"); a log
// line carries neither. It keeps what an operator needs: the error classes, the SQLSTATE code,
// the constraint, table and column it concerns, and the stack without its message line.

const MESSAGE_LENGTH_MAX = 300;
const QUOTED = /"[^"]*"|'[^']*'/g;
// A message that quotes a statement or its parameters, whatever wrapped it: withheld whole.
const QUERY_TEXT = /failed query|params:|\b(select|insert|update|delete)\b[\s\S]*\b(from|into|set|values|where)\b/i;

interface DatabaseErrorFields {
  code?: unknown;
  constraint?: unknown;
  constraint_name?: unknown;
  table?: unknown;
  table_name?: unknown;
  column?: unknown;
  column_name?: unknown;
}

/** A driver's error (postgres.js PostgresError or PGlite's DatabaseError): it has a SQLSTATE code. */
function isDatabaseError(error: Error): boolean {
  const code = (error as DatabaseErrorFields).code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code);
}

function bounded(text: string): string {
  return text.length > MESSAGE_LENGTH_MAX ? `${text.slice(0, MESSAGE_LENGTH_MAX)}…` : text;
}

/** A driver's error by its class, SQLSTATE and the names it concerns; its message is never read. */
function describeDatabaseError(error: Error & DatabaseErrorFields): string {
  const names = [
    ['constraint', error.constraint_name ?? error.constraint],
    ['table', error.table_name ?? error.table],
    ['column', error.column_name ?? error.column],
  ]
    .filter(([, value]) => typeof value === 'string' && value.length > 0)
    .map(([key, value]) => `${key}=${String(value)}`);
  // Nor its stack: a driver's frames point into the driver, and its message line is the message.
  return [`${error.name} ${String(error.code)} (message not logged)`, ...names].join(' ');
}

/** The first line of a message that is not a database error's, with quoted values and query text withheld. */
function safeMessage(message: string): string {
  const line = message.split('\n')[0]!;
  if (QUERY_TEXT.test(message)) return '(message not logged: it quotes a query)';
  return bounded(line.replace(QUOTED, '"…"'));
}

function stackFrames(error: Error): string {
  const frames = (error.stack ?? '').split('\n').filter((line) => line.trimStart().startsWith('at '));
  return frames.length > 0 ? `\n${frames.join('\n')}` : '';
}

/** One error as it may be logged: never a query's text or parameters, never a quoted value. */
export function describeError(error: unknown, depth = 0): string {
  if (!(error instanceof Error)) return `non-error value (${typeof error})`;
  if (depth > 3) return error.name;
  if (error instanceof GraphQLError && error.originalError) {
    const path = error.path ? ` at ${error.path.join('.')}` : '';
    return `GraphQLError${path} <- ${describeError(error.originalError, depth + 1)}`;
  }
  if (error instanceof DrizzleQueryError) {
    const described = error.cause === undefined ? 'no cause' : describeError(error.cause, depth + 1);
    return `DrizzleQueryError (query and parameters not logged) <- ${described}`;
  }
  if (isDatabaseError(error)) return describeDatabaseError(error as Error & DatabaseErrorFields);
  // An error that wraps a database error (`cause`) is described with it, never by quoting it.
  const cause = error.cause instanceof Error ? ` <- ${describeError(error.cause, depth + 1)}` : '';
  return `${error.name}: ${safeMessage(error.message)}${stackFrames(error)}${cause}`;
}

/**
 * `value` as JSON for a log line, with every error in it (at any depth) replaced by its
 * description: JSON.stringify would write a GraphQLError's message, and drizzle's query error
 * has its query and parameters as enumerable properties.
 */
export function describedJson(value: unknown, lengthMax = 500): string {
  try {
    const json = JSON.stringify(value, function (this: Record<string, unknown>, key, replaced) {
      const original = key === '' ? value : this[key];
      return original instanceof Error ? describeError(original) : replaced;
    });
    return (json ?? String(value)).slice(0, lengthMax);
  } catch {
    return `unloggable value (${typeof value})`;
  }
}

/**
 * yoga's logger, except that errors are logged as `describeError` gives them. yoga logs every
 * error it masks with `logger.error(error)`; without this, the console would get the whole error,
 * query and parameters included. With `log`, errors go there instead of to the console.
 */
export function sanitisedLogger(log?: (message: string, detail?: unknown) => void): YogaLogger {
  const base = createLogger();
  const describe = (args: unknown[]) =>
    args
      .map((arg) => (arg instanceof Error ? describeError(arg) : typeof arg === 'string' ? arg : describedJson(arg)))
      .join(' ');
  return {
    ...base,
    error: (...args: unknown[]) => (log ? log('unexpected error', describe(args)) : base.error(describe(args))),
  };
}
