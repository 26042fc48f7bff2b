import { InvalidArgumentError } from 'commander';
import { SCOPES, type Scope } from '../auth/tokens.ts';
import { GRANT_CREDITS_MAX } from '../ledger/limits.ts';
import { isUuid } from '../ledger/validation.ts';

// Parsers for option values: each refuses bad input with one line before anything is opened.

export function wholeNumber(value: string): number {
  const number = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(number) || number < 1 || number > GRANT_CREDITS_MAX) {
    throw new InvalidArgumentError(`expected a whole number from 1 to ${GRANT_CREDITS_MAX}.`);
  }
  return number;
}

export function organizationId(value: string): string {
  if (!isUuid(value)) throw new InvalidArgumentError('expected an organization id (a UUID).');
  return value.toLowerCase();
}

export function eventId(value: string): string {
  if (!isUuid(value)) throw new InvalidArgumentError('expected an event id (a UUID).');
  return value.toLowerCase();
}

const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/** An instant: a date (midnight UTC) or an ISO 8601 date and time with a time zone. */
export function instant(value: string): Date {
  const text = DATE_ONLY.test(value) ? `${value}T00:00:00Z` : value;
  const date = new Date(text);
  const [year, month, day] = text.slice(0, 10).split('-').map(Number) as [number, number, number];
  const valid =
    DATE_TIME.test(text) &&
    !Number.isNaN(date.getTime()) &&
    month >= 1 &&
    month <= 12 &&
    day >= 1 &&
    day <= new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (!valid)
    throw new InvalidArgumentError(
      'expected a date (2026-12-31) or a date and time with a time zone (2026-12-31T18:00:00Z).',
    );
  return date;
}

/** Token scopes, comma-separated (`generation,read`): each known, none twice. */
export function scopes(value: string): Scope[] {
  const names = value.split(',').map((name) => name.trim());
  if (names.some((name) => !(SCOPES as readonly string[]).includes(name)) || new Set(names).size !== names.length) {
    throw new InvalidArgumentError(`expected distinct scopes from ${SCOPES.join(', ')}, separated by commas.`);
  }
  return names as Scope[];
}

/** A token lifetime such as 30m, 12h or 30d (at most a year). */
/** Seconds in a duration such as 30m, 12h or 30d; 0 when it is not one. */
export function durationSeconds(value: string): number {
  const match = /^(\d{1,4})([smhdw])$/.exec(value);
  return match ? Number(match[1]) * { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[match[2] as 's'] : 0;
}

export function duration(value: string): string {
  const match = /^(\d{1,4})([smhdw])$/.exec(value);
  const seconds = durationSeconds(value);
  if (!match || seconds < 1 || seconds > 366 * 86_400) {
    throw new InvalidArgumentError('expected a duration such as 30m, 12h or 30d (at most 366 days).');
  }
  return value;
}

export function listLimit(value: string): number {
  const number = Number(value);
  if (!/^\d+$/.test(value) || number < 1 || number > 10_000)
    throw new InvalidArgumentError('expected a whole number from 1 to 10000.');
  return number;
}
