/** The SQLSTATE of a database error, looking through drizzle's query-error wrapper. */
export function sqlState(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current; depth += 1) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

export const SERIALIZATION_FAILURE = '40001';
export const DEADLOCK_DETECTED = '40P01';

// Error codes that mean "the database cannot be reached right now", not "this request is wrong":
// socket errors from Node, postgres.js's own connection codes, and the SQLSTATEs PostgreSQL
// sends when it is shutting down, starting up or out of connection slots.
const CONNECTION_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  '57P01', // admin_shutdown (also what pg_terminate_backend sends)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
]);

/**
 * Whether `error` (or anything it wraps: drizzle's query error, a GraphQL error's original error,
 * an AggregateError from trying several addresses) says the database is unreachable. Such a
 * failure is about the service, not the request: the caller may retry the same request later.
 */
export function isConnectionError(error: unknown): boolean {
  const pending: unknown[] = [error];
  // A bound on the walk, since wrappers could in principle form a cycle.
  for (let seen = 0; pending.length > 0 && seen < 16; seen += 1) {
    const current = pending.shift();
    if (!current || typeof current !== 'object') continue;
    const { code, cause, originalError, errors } = current as {
      code?: unknown;
      cause?: unknown;
      originalError?: unknown;
      errors?: unknown;
    };
    if (typeof code === 'string' && (CONNECTION_ERROR_CODES.has(code) || /^08[0-9A-Z]{3}$/.test(code))) return true;
    pending.push(cause, originalError);
    if (Array.isArray(errors)) pending.push(...errors);
  }
  return false;
}

// A connection that was open and then died: its backend was terminated (57P01, also what
// pg_terminate_backend sends), crashed (57P02), timed out an idle session (57P05, 25P03), or its
// socket closed or was reset. Not included: failures to open a connection (refused, timed out,
// "cannot connect now", too many connections), which mean the database cannot be reached now.
const LOST_CONNECTION_CODES = new Set([
  'CONNECTION_CLOSED',
  'ECONNRESET',
  'EPIPE',
  '57P01',
  '57P02',
  '57P05',
  '25P03',
  '08003',
  '08006',
]);

/** Whether `error` (as postgres.js raised it) says an established connection died. */
export function isLostConnection(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && LOST_CONNECTION_CODES.has(code);
}

// A pooled session's own limits (src/db/client.ts SESSION_TIMEOUTS): lock_timeout raises
// lock_not_available, statement_timeout raises query_canceled.
const SESSION_TIMEOUT_CODES = new Set(['55P03', '57014']);

/** Whether `error` (or what it wraps) is a lock or statement timeout of the request's session. */
export function isSessionTimeout(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current && typeof current === 'object'; depth += 1) {
    const { code, cause, originalError } = current as { code?: unknown; cause?: unknown; originalError?: unknown };
    if (typeof code === 'string' && SESSION_TIMEOUT_CODES.has(code)) return true;
    current = cause ?? originalError;
  }
  return false;
}
