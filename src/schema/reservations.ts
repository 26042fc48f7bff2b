import type { GraphQLContext } from '../context.ts';
import type { Balance } from '../ledger/balance.ts';
import type { LedgerContext } from '../ledger/context.ts';
import type { GenerationRequest } from '../ledger/pricing.ts';
import {
  findReservation,
  listAllocations,
  reserveCredits,
  type Allocation,
  type Reservation,
} from '../ledger/reservations.ts';
import { captureReservation, extendReservation, refundReservation } from '../ledger/settlements.ts';
import { requireUuid } from '../ledger/validation.ts';
import { allow, asQueryInput, authorizeOrganization, organizationScope, requireViewer } from './authorization.ts';
import { BalanceType, loadBalance } from './balance.ts';
import { builder } from './builder.ts';
import { CreditAccountTypeEnum, ReservationStatusEnum, ResolutionEnum } from './enums.ts';
import { RESERVE_ERRORS, SETTLEMENT_ERRORS } from './errors.ts';

export const GenerationInput = builder.inputType('GenerationInput', {
  description: 'What is about to be generated; the server prices it, the caller never names an amount.',
  fields: (t) => ({
    modelId: t.id({ required: true }),
    resolution: t.field({ type: ResolutionEnum, required: false, description: 'Required for image and video models.' }),
    durationSeconds: t.int({ required: false, description: 'Required for video models, up to the model maximum.' }),
    count: t.int({ required: false, defaultValue: 1, description: 'How many outputs, 1 to 100.' }),
  }),
});

/** The ledger's shape of a generation request, from the GraphQL input. */
export function generationRequest(input: typeof GenerationInput.$inferInput): GenerationRequest {
  return {
    modelId: String(input.modelId),
    resolution: input.resolution ?? null,
    durationSeconds: input.durationSeconds ?? null,
    count: input.count ?? 1,
  };
}

const ReservationAllocationType = builder.objectRef<Allocation>('ReservationAllocation').implement({
  description: 'Credits a reservation took from one lot.',
  fields: (t) => ({
    lotId: t.exposeID('lotId'),
    type: t.field({ type: CreditAccountTypeEnum, resolve: (allocation) => allocation.type }),
    amount: t.exposeInt('amount'),
  }),
});

export const ReservationType = builder.objectRef<Reservation>('Reservation').implement({
  description: 'Credits held for one generation until it is captured or refunded.',
  fields: (t) => ({
    id: t.exposeID('id'),
    organizationId: t.exposeID('organizationId'),
    status: t.field({ type: ReservationStatusEnum, resolve: (reservation) => reservation.status }),
    amount: t.exposeInt('amount', { description: 'Credits held, the server-computed cost of the generation.' }),
    capturedAmount: t.exposeInt('capturedAmount'),
    refundedAmount: t.exposeInt('refundedAmount'),
    expiresAt: t.field({
      type: 'DateTime',
      description: 'When a still pending reservation is refunded automatically.',
      resolve: (reservation) => reservation.expiresAt,
    }),
    createdAt: t.field({ type: 'DateTime', resolve: (reservation) => reservation.createdAt }),
    refundReason: t.exposeString('refundReason', { nullable: true }),
    allocations: t.field({
      type: [ReservationAllocationType],
      description: 'The lots the credits were taken from, in the order they were taken.',
      resolve: (reservation, _args, ctx) => listAllocations(ctx.db, [reservation.id], reservation.organizationId),
    }),
  }),
});

interface ReservationPayload {
  reservation: Reservation;
  /** The balance the write left, when it told it (read again otherwise). */
  balance?: Balance | null;
}

/**
 * Runs a reservation write with a context that keeps the balance the write reports leaving, and
 * answers both: the payload's balance then needs no second read.
 */
export async function withBalance(
  ctx: GraphQLContext,
  write: (ledger: LedgerContext) => Promise<Reservation>,
): Promise<ReservationPayload> {
  let balance: Balance | null = null;
  const reservation = await write({ ...ctx, onBalance: (after) => (balance = after) });
  return { reservation, balance };
}

export function reservationSuccessType(name: string, withBalance: boolean) {
  return builder.objectRef<ReservationPayload>(name).implement({
    fields: (t) => ({
      reservation: t.field({ type: ReservationType, resolve: (payload) => payload.reservation }),
      ...(withBalance
        ? {
            balance: t.field({
              type: BalanceType,
              description: "The organization's balance just after this change (or a later one).",
              resolve: (payload, _args, ctx) => payload.balance ?? loadBalance(ctx, payload.reservation.organizationId),
            }),
          }
        : {}),
    }),
  });
}

const ReserveCreditsSuccess = reservationSuccessType('ReserveCreditsSuccess', true);
const CaptureReservationSuccess = reservationSuccessType('CaptureReservationSuccess', true);
const RefundReservationSuccess = reservationSuccessType('RefundReservationSuccess', true);
const ExtendReservationSuccess = reservationSuccessType('ExtendReservationSuccess', false);

const ReserveCreditsInput = builder.inputType('ReserveCreditsInput', {
  fields: (t) => ({
    organizationId: t.id({ required: true }),
    idempotencyKey: t.string({
      required: true,
      description: 'Unique per organization; a retry with the same key returns the same reservation.',
    }),
    generation: t.field({ type: GenerationInput, required: true }),
    ttlSeconds: t.int({
      required: false,
      description: 'Seconds until an unsettled reservation is refunded, 1 to 86400 (default 900).',
    }),
  }),
});

const CaptureReservationInput = builder.inputType('CaptureReservationInput', {
  fields: (t) => ({
    reservationId: t.id({ required: true }),
    amount: t.int({
      required: false,
      description: 'Credits to consume, 1 to the reserved amount; the rest is refunded. Default: all.',
    }),
    idempotencyKey: t.string({
      required: false,
      description:
        'Optional, unique per organization among captures, refunds and extensions: a retry with the same key and input answers what the first request answered; another input is an IdempotencyConflictError. A refused request does not use up its key.',
    }),
  }),
});

const RefundReservationInput = builder.inputType('RefundReservationInput', {
  fields: (t) => ({
    reservationId: t.id({ required: true }),
    reason: t.string({ required: false }),
    idempotencyKey: t.string({
      required: false,
      description:
        'Optional, unique per organization among captures, refunds and extensions: a retry with the same key and input answers what the first request answered; another input is an IdempotencyConflictError. A refused request does not use up its key.',
    }),
  }),
});

const ExtendReservationInput = builder.inputType('ExtendReservationInput', {
  fields: (t) => ({
    reservationId: t.id({ required: true }),
    ttlSeconds: t.int({
      required: true,
      description: 'The reservation now expires this many seconds from now, 1 to 86400.',
    }),
    idempotencyKey: t.string({
      required: false,
      description:
        'Optional, unique per organization among captures, refunds and extensions: a retry with the same key and input answers what the first request answered; another input is an IdempotencyConflictError. A refused request does not use up its key.',
    }),
  }),
});

builder.queryField('reservation', (t) =>
  t.field({
    type: ReservationType,
    nullable: true,
    description: "The reservation with this id; null when there is none, or it is another organization's.",
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: ['generation', 'read'] }),
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) =>
      asQueryInput(async () => {
        const viewer = requireViewer(ctx);
        const id = requireUuid(String(args.id), 'id');
        return (await findReservation(ctx.db, id, organizationScope(viewer))) ?? null;
      }),
  }),
);

builder.mutationFields((t) => ({
  reserveCredits: t.field({
    type: ReserveCreditsSuccess,
    description: 'Pre-deducts the cost of a generation before it runs.',
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: ['generation'] }),
    errors: { types: RESERVE_ERRORS },
    args: { input: t.arg({ type: ReserveCreditsInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const organizationId = authorizeOrganization(ctx, input.organizationId);
      return withBalance(ctx, (ledger) =>
        reserveCredits(ledger, {
          organizationId,
          idempotencyKey: input.idempotencyKey,
          generation: generationRequest(input.generation),
          ttlSeconds: input.ttlSeconds,
        }),
      );
    },
  }),
  captureReservation: t.field({
    type: CaptureReservationSuccess,
    description: 'Consumes held credits after a successful generation; capturing less refunds the rest.',
    authScopes: allow({ roles: ['service', 'admin'], scopes: ['generation'] }),
    errors: { types: SETTLEMENT_ERRORS },
    args: { input: t.arg({ type: CaptureReservationInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const viewer = requireViewer(ctx);
      return withBalance(ctx, (ledger) =>
        captureReservation(
          ledger,
          { reservationId: String(input.reservationId), amount: input.amount, idempotencyKey: input.idempotencyKey },
          organizationScope(viewer),
        ),
      );
    },
  }),
  refundReservation: t.field({
    type: RefundReservationSuccess,
    description: 'Returns every held credit to the lots it came from, after a failed generation.',
    authScopes: allow({ roles: ['service', 'admin'], scopes: ['generation'] }),
    errors: { types: SETTLEMENT_ERRORS },
    args: { input: t.arg({ type: RefundReservationInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const viewer = requireViewer(ctx);
      return withBalance(ctx, (ledger) =>
        refundReservation(
          ledger,
          { reservationId: String(input.reservationId), reason: input.reason, idempotencyKey: input.idempotencyKey },
          organizationScope(viewer),
        ),
      );
    },
  }),
  extendReservation: t.field({
    type: ExtendReservationSuccess,
    description: 'Pushes out the automatic refund of a pending reservation (long videos).',
    authScopes: allow({ roles: ['service', 'admin'], scopes: ['generation'] }),
    errors: { types: SETTLEMENT_ERRORS },
    args: { input: t.arg({ type: ExtendReservationInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const viewer = requireViewer(ctx);
      const reservation = await extendReservation(
        ctx,
        {
          reservationId: String(input.reservationId),
          ttlSeconds: input.ttlSeconds,
          idempotencyKey: input.idempotencyKey,
        },
        organizationScope(viewer),
      );
      return { reservation };
    },
  }),
}));
