import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';
import { describeError } from './error-log.ts';

export type { Logger };

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * Paths pino replaces with "[redacted]" wherever a line carries them: bearer tokens (in headers,
 * in a graphql-ws connection_init payload, as a field of their own), the signing secret and a
 * connection string, which may hold a password. Log calls in this service never pass these on
 * purpose; redaction is the net under a mistake, and test/ops/logs.test.ts checks it holds.
 */
export const REDACTED_PATHS = [
  'authorization',
  'Authorization',
  'token',
  'secret',
  'authSecret',
  'password',
  'databaseUrl',
  '*.authorization',
  '*.Authorization',
  '*.token',
  '*.secret',
  '*.authSecret',
  '*.password',
  '*.databaseUrl',
  'headers.authorization',
  'req.headers.authorization',
  'request.headers.authorization',
  'connectionParams.authorization',
  '*.connectionParams.authorization',
  // The other shapes a WebSocket client may send its token in (src/realtime/connection-auth.ts).
  'headers.Authorization',
  'connectionParams.Authorization',
  '*.connectionParams.Authorization',
  'connectionParams.headers.authorization',
  'connectionParams.headers.Authorization',
  '*.connectionParams.headers.authorization',
  '*.connectionParams.headers.Authorization',
];

export interface LoggerOptions {
  level?: LevelWithSilent;
  /**
   * Where lines go (tests pass a stream to read them back). By default stdout, written
   * asynchronously: a request never waits for the pipe to a slow log collector. Call
   * `flushLogs` before `process.exit` so that the last lines are not lost.
   */
  destination?: DestinationStream;
}

/** The service's JSON logger: one object per line, ISO timestamps, secrets redacted. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: 'credits' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      // Errors are logged with their class, code and message; a stack only at debug level, since
      // drivers' messages can be long and stacks add nothing an operator acts on.
      serializers: { err: errorSerializer },
    },
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** Writes out what the logger still buffers; then the process may exit. */
export function flushLogs(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}

/** A logger that writes nothing, for tests and embedded use that pass none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * An error as a log line may carry it: its class and SQLSTATE code, and its description by
 * `describeError`, never a query's text or parameters (drizzle's query error carries both in its
 * message) nor a value a driver quoted.
 */
function errorSerializer(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: `non-error value (${typeof error})` };
  const code = (error as { code?: unknown }).code;
  return {
    type: error.name,
    message: describeError(error),
    ...(typeof code === 'string' ? { code } : {}),
  };
}

/**
 * The older `(message, error?)` callback some components take (the database health gate, the
 * balance notifier), as lines of this logger with an `event` naming what happened: a line with
 * an error is a warning, one without is information.
 */
export function logCallback(logger: Logger, event: string): (message: string, error?: unknown) => void {
  return (message, error) => {
    if (error === undefined) logger.info({ event }, message);
    else logger.warn({ event, err: error }, message);
  };
}
