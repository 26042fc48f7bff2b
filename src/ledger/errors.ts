// Expected business failures. The GraphQL layer turns each into a typed member of a result
// union; anything else that is thrown stays an unexpected (masked) error.

import type { ReservationStatus } from './enums.ts';

export class CreditError extends Error {
  override name = 'CreditError';
}

export class InsufficientCreditsError extends CreditError {
  override name = 'InsufficientCreditsError';
  constructor(
    readonly required: number,
    readonly available: number,
  ) {
    super(`Insufficient credits: ${required} required, ${available} available.`);
  }
}

export class InvalidInputError extends CreditError {
  override name = 'InvalidInputError';
  constructor(
    message: string,
    readonly field: string | null,
  ) {
    super(message);
  }
}

export class NotFoundError extends CreditError {
  override name = 'NotFoundError';
}

export class ReservationStateError extends CreditError {
  override name = 'ReservationStateError';
  constructor(readonly status: ReservationStatus) {
    super(`The reservation is already ${status.toLowerCase()}.`);
  }
}

export class IdempotencyConflictError extends CreditError {
  override name = 'IdempotencyConflictError';
}

/** A broken invariant: a bug to stop on, never a condition to report to the caller. */
export class InvariantViolation extends Error {
  override name = 'InvariantViolation';
}

export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new InvariantViolation(message);
}
