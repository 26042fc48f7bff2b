import type { YogaLogger } from 'graphql-yoga';
import type { NotificationSource } from '../realtime/notification-source.ts';
import { describedJson } from './error-log.ts';
import type { Logger } from './logger.ts';

/**
 * yoga's own messages (an unexpected error it masked, a bad request it refused) as lines of the
 * service's logger. An Error among the arguments is logged as `err` (which the logger's
 * serializer describes without its message), the rest as the message; an error's own message
 * never becomes the line's `msg`, since drizzle's carries the query and its parameters.
 */
export function yogaLogger(logger: Logger): YogaLogger {
  const at =
    (level: 'debug' | 'info' | 'warn' | 'error') =>
    (...args: unknown[]) => {
      const err = args.find((arg) => arg instanceof Error);
      const message = args
        .filter((arg) => !(arg instanceof Error))
        .map((arg) => (typeof arg === 'string' ? arg : describedJson(arg)))
        .join(' ');
      logger[level]({ event: 'yoga', ...(err ? { err } : {}) }, message || (err ? 'unexpected error' : 'yoga'));
    };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/**
 * The balance listener's source, telling `log` whenever listening starts again after the first
 * time: the listener's connection was lost and is back (postgres.js reconnected it, or the
 * watchdog replaced it), and every subscriber is being sent its balance again.
 */
export function observedNotificationSource(
  source: NotificationSource,
  log: (message: string) => void,
): NotificationSource {
  let listens = 0;
  return {
    ...source,
    start: (handlers) =>
      source.start({
        ...handlers,
        onListen() {
          listens += 1;
          if (listens > 1) log('balance listener listening again; resending every subscriber its balance');
          handlers.onListen();
        },
      }),
  };
}
