import { InvalidInputError } from './errors.ts';
import { ECHO_LENGTH_MAX, INSTANT_MAX, INSTANT_MIN, KEY_LENGTH_MAX, TEXT_LENGTH_MAX } from './limits.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// PostgreSQL text cannot hold NUL, and a lone UTF-16 surrogate is stored as U+FFFD, so two
// different keys would become one. Text with either is refused before it reaches the database.
const NUL = /\u0000/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

// Characters an echo replaces: controls, format characters (bidirectional overrides among them),
// private-use and unassigned code points, lone surrogates, and line and paragraph separators.
const UNPRINTABLE = /[\p{C}\u2028\u2029]/gu;

/**
 * A required input field left out (or null). The schema leaves some fields nullable because only
 * some requests need them (a video's duration); whichever rule requires one says so in the same
 * words, naming the field by its last name in the message and by its whole path in `field`.
 */
export function requiredInput(field: string, detail?: string): InvalidInputError {
  const name = field.slice(field.lastIndexOf('.') + 1);
  return new InvalidInputError(detail ? `${name} is required. ${detail}` : `${name} is required.`, field);
}

function requirePresent<T>(value: T | null | undefined, field: string): T {
  if (value === null || value === undefined) throw requiredInput(field);
  return value;
}

export function requireUuid(present: string | null | undefined, field: string): string {
  const value = requirePresent(present, field);
  if (!UUID.test(value)) throw new InvalidInputError(`${field} is not a valid id.`, field);
  return value.toLowerCase();
}

export function isUuid(value: string): boolean {
  return UUID.test(value);
}

/** True for text the database stores exactly as given. */
export function isStorableText(value: string): boolean {
  return !NUL.test(value) && !LONE_SURROGATE.test(value);
}

function requireStorableText(value: string, field: string): void {
  if (NUL.test(value)) throw new InvalidInputError(`${field} must not contain NUL (\\u0000) characters.`, field);
  if (LONE_SURROGATE.test(value)) throw new InvalidInputError(`${field} must be well-formed Unicode text.`, field);
}

export function requireKey(present: string | null | undefined, field: string): string {
  const value = requirePresent(present, field);
  if (value.length === 0 || value.length > KEY_LENGTH_MAX) {
    throw new InvalidInputError(`${field} must be 1 to ${KEY_LENGTH_MAX} characters long.`, field);
  }
  requireStorableText(value, field);
  return value;
}

export function requireText(present: string | null | undefined, field: string, maxLength = TEXT_LENGTH_MAX): string {
  const value = requirePresent(present, field);
  const trimmed = value.trim();
  if (trimmed.length === 0 || value.length > maxLength) {
    throw new InvalidInputError(`${field} must be 1 to ${maxLength} characters long.`, field);
  }
  requireStorableText(value, field);
  return trimmed;
}

/** Optional text: absent or blank gives null; otherwise as `requireText`. */
export function optionalText(
  value: string | null | undefined,
  field: string,
  maxLength = TEXT_LENGTH_MAX,
): string | null {
  if (value === null || value === undefined) return null;
  if (value.length > maxLength)
    throw new InvalidInputError(`${field} must be at most ${maxLength} characters long.`, field);
  return value.trim().length === 0 ? null : requireText(value, field, maxLength);
}

export function requireIntInRange(present: number | null | undefined, min: number, max: number, field: string): number {
  const value = requirePresent(present, field);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidInputError(`${field} must be a whole number from ${min} to ${max}.`, field);
  }
  return value;
}

/**
 * An instant the ledger can store and compute billing cycles from. The bounds keep every derived
 * instant (a cycle's end is a month after its start) well inside what PostgreSQL accepts, which
 * has no year 0 and no year past 9999 in ISO form.
 */
export function requireValidDate(present: Date | null | undefined, field: string): Date {
  const value = requirePresent(present, field);
  if (Number.isNaN(value.getTime())) throw new InvalidInputError(`${field} is not a valid date.`, field);
  if (value.getTime() < INSTANT_MIN.getTime() || value.getTime() >= INSTANT_MAX.getTime()) {
    throw new InvalidInputError(
      `${field} must be from ${day(INSTANT_MIN)} up to (not including) ${day(INSTANT_MAX)}.`,
      field,
    );
  }
  return value;
}

function day(instant: Date): string {
  return instant.toISOString().slice(0, 10);
}

/**
 * Caller input as it may appear in an error message: at most ECHO_LENGTH_MAX characters,
 * unprintable characters replaced, quoted, and marked with "…" when cut. Error messages never
 * carry more of what the caller sent than this.
 */
export function echoInput(value: string): string {
  const characters = Array.from(value);
  const prefix = characters.slice(0, ECHO_LENGTH_MAX).join('').replace(UNPRINTABLE, '\uFFFD');
  return `${JSON.stringify(prefix)}${characters.length > ECHO_LENGTH_MAX ? '…' : ''}`;
}
