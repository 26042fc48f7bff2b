import { InvalidInputError } from './errors.ts';
import { KEY_LENGTH_MAX, TEXT_LENGTH_MAX } from './limits.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function requireUuid(value: string, field: string): string {
  if (!UUID.test(value)) throw new InvalidInputError(`${field} is not a valid id.`, field);
  return value.toLowerCase();
}

export function isUuid(value: string): boolean {
  return UUID.test(value);
}

export function requireKey(value: string, field: string): string {
  if (value.length === 0 || value.length > KEY_LENGTH_MAX) {
    throw new InvalidInputError(`${field} must be 1 to ${KEY_LENGTH_MAX} characters long.`, field);
  }
  return value;
}

export function requireText(value: string, field: string, maxLength = TEXT_LENGTH_MAX): string {
  const trimmed = value.trim();
  if (trimmed.length === 0 || value.length > maxLength) {
    throw new InvalidInputError(`${field} must be 1 to ${maxLength} characters long.`, field);
  }
  return trimmed;
}

export function requireIntInRange(value: number, min: number, max: number, field: string): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidInputError(`${field} must be a whole number from ${min} to ${max}.`, field);
  }
  return value;
}

export function requireValidDate(value: Date, field: string): Date {
  if (Number.isNaN(value.getTime())) throw new InvalidInputError(`${field} is not a valid date.`, field);
  return value;
}
