import {
  type CreditError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  InvalidInputError,
  NotFoundError,
  ReservationStateError,
} from '../ledger/errors.ts';
import { builder } from './builder.ts';
import { ReservationStatusEnum } from './enums.ts';

export const ErrorInterface = builder.interfaceRef<CreditError>('Error').implement({
  description: 'An expected failure of a mutation; nothing was written.',
  fields: (t) => ({ message: t.exposeString('message') }),
});

builder.objectType(InsufficientCreditsError, {
  name: 'InsufficientCreditsError',
  description: 'The available balance does not cover the whole cost; nothing was reserved.',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    required: t.exposeInt('required'),
    available: t.exposeInt('available'),
  }),
});

builder.objectType(InvalidInputError, {
  name: 'InvalidInputError',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    field: t.exposeString('field', { nullable: true, description: 'The input field at fault, as a dotted path.' }),
  }),
});

builder.objectType(NotFoundError, {
  name: 'NotFoundError',
  description: 'No such object, or one the caller may not see (the two are answered alike).',
  interfaces: [ErrorInterface],
});

builder.objectType(ReservationStateError, {
  name: 'ReservationStateError',
  description: 'The reservation is already settled; a reservation settles exactly once.',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    status: t.field({ type: ReservationStatusEnum, resolve: (error) => error.status }),
  }),
});

builder.objectType(IdempotencyConflictError, {
  name: 'IdempotencyConflictError',
  description: 'The idempotency key (or payment reference) was already used with different input.',
  interfaces: [ErrorInterface],
});

/** What a reservation may fail with as a result-union member. */
export const RESERVE_ERRORS = [InvalidInputError, NotFoundError, InsufficientCreditsError, IdempotencyConflictError];

/** What a capture, refund or extension of a reservation may fail with. */
export const SETTLEMENT_ERRORS = [InvalidInputError, NotFoundError, ReservationStateError, IdempotencyConflictError];

/** What growing a reservation may fail with: a settlement's failures, and too few credits. */
export const INCREASE_ERRORS = [...SETTLEMENT_ERRORS, InsufficientCreditsError];
