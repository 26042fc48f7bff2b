import { BALANCE_CREDITS_MAX } from '../ledger/limits.ts';
import { increaseReservation } from '../ledger/settlements.ts';
import { allow, organizationScope, requireViewer } from './authorization.ts';
import { builder } from './builder.ts';
import { INCREASE_ERRORS } from './errors.ts';
import { reservationSuccessType, withBalance } from './reservations.ts';

const IncreaseReservationInput = builder.inputType('IncreaseReservationInput', {
  description: 'More credits for a pending reservation, when a generation turns out to need more than reserved.',
  fields: (t) => ({
    reservationId: t.id({ required: true, description: 'A pending reservation of the caller’s organization.' }),
    additionalCredits: t.int({
      required: true,
      description: `Whole credits to add, 1 to ${BALANCE_CREDITS_MAX.toLocaleString('en-US')}, taken from the lots in consumption order now.`,
    }),
    idempotencyKey: t.string({
      required: true,
      description:
        'Unique per organization among captures, refunds, extensions and increases: a retry with the same key and input answers what the first request answered (it does not grow the reservation twice); another input is an IdempotencyConflictError. A refused request does not use up its key.',
    }),
  }),
});

const IncreaseReservationSuccess = reservationSuccessType('IncreaseReservationSuccess', true);

builder.mutationField('increaseReservation', (t) =>
  t.field({
    type: IncreaseReservationSuccess,
    description:
      'Grows a pending reservation, all or nothing: the additional credits are pre-deducted from the lots in ' +
      'consumption order (subscription, purchased, promotional, referral) as they stand now, as allocations after ' +
      "the reservation's first ones, so a capture consumes the earliest first and a refund returns every credit " +
      'to its lot. The expiry and the 24-hour lifetime stay as they were. Too few available credits is ' +
      'InsufficientCreditsError and nothing is written; a settled or expired reservation is ReservationStateError.',
    authScopes: allow({ roles: ['service', 'admin'], scopes: ['generation'] }),
    errors: { types: INCREASE_ERRORS },
    args: { input: t.arg({ type: IncreaseReservationInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const viewer = requireViewer(ctx);
      return withBalance(ctx, (ledger) =>
        increaseReservation(
          ledger,
          {
            reservationId: String(input.reservationId),
            additionalCredits: input.additionalCredits,
            idempotencyKey: input.idempotencyKey,
          },
          organizationScope(viewer),
        ),
      );
    },
  }),
);
