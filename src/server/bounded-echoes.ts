import { handleStreamOrSingleExecutionResult, type Plugin } from 'graphql-yoga';
import { ECHO_LENGTH_MAX } from '../ledger/limits.ts';
import { echoInput } from '../ledger/validation.ts';

// graphql-js repeats input whole in its own error messages: a variable that does not fit its type
// ("got invalid value \"…60 KB…\"", twice), an enum value that does not exist, a literal refused by
// validation, a string token a syntax error stumbled on. The ledger's own errors echo input
// through echoInput; this plugin holds graphql-js's messages, on HTTP and WebSockets alike, to the
// same bound: each quoted value longer than ECHO_LENGTH_MAX characters (or holding unprintable
// ones) is cut as echoInput cuts it, and a message as a whole stays under ERROR_MESSAGE_LENGTH_MAX.

export const ERROR_MESSAGE_LENGTH_MAX = 300;

// A double-quoted, JSON-escaped string, as graphql-js's inspect() prints input values.
const QUOTED = /"(?:[^"\\]|\\.)*"/g;
const UNPRINTABLE = /[\p{C}\u2028\u2029]/u;
const UNPRINTABLE_ALL = /[\p{C}\u2028\u2029]/gu;

/** A message with every long or unprintable quoted value shortened, and the whole bounded. */
export function boundEchoes(message: string): string {
  const shortened = message.replace(QUOTED, (quoted) => {
    let value: unknown;
    try {
      value = JSON.parse(quoted);
    } catch {
      return quoted;
    }
    if (typeof value !== 'string') return quoted;
    return Array.from(value).length > ECHO_LENGTH_MAX || UNPRINTABLE.test(value) ? echoInput(value) : quoted;
  });
  const printable = shortened.replace(UNPRINTABLE_ALL, '\uFFFD');
  return printable.length > ERROR_MESSAGE_LENGTH_MAX ? `${printable.slice(0, ERROR_MESSAGE_LENGTH_MAX)}…` : printable;
}

/**
 * The message is changed in place: the error stays the same object, so yoga still recognises it
 * as a client's error (status, code) rather than masking and logging a new one.
 */
function bound(error: unknown): void {
  if (error instanceof Error && error.message.length > 0) {
    const message = boundEchoes(error.message);
    if (message !== error.message) error.message = message;
  }
}

export function useBoundedErrorEchoes<Context extends object>(): Plugin<Context> {
  return {
    onParse:
      () =>
      ({ result }) =>
        bound(result),
    onValidate:
      () =>
      ({ result }) =>
        result.forEach(bound),
    onExecute: () => ({
      onExecuteDone: (payload) =>
        handleStreamOrSingleExecutionResult(payload, ({ result }) => result.errors?.forEach(bound)),
    }),
    onSubscribe: () => ({
      onSubscribeResult: (payload) =>
        handleStreamOrSingleExecutionResult(payload, ({ result }) => result.errors?.forEach(bound)),
    }),
  };
}
