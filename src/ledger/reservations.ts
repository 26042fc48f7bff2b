import { and, asc, eq, inArray } from 'drizzle-orm';
import type { Queryable } from '../db/client.ts';
import { creditLots, ledgerEntries, reservations } from '../db/schema.ts';
import type { LedgerContext } from './context.ts';
import type { AccountType } from './enums.ts';
import { RESERVATION_LIFETIME_SECONDS_MAX, TTL_SECONDS_DEFAULT, TTL_SECONDS_MAX } from './limits.ts';
import type { GenerationRequest } from './pricing.ts';
import { priceRequest } from './quotes.ts';
import { reserveInBatch } from './reservation-batches.ts';
import { requireIntInRange, requireKey, requireUuid } from './validation.ts';

export type Reservation = typeof reservations.$inferSelect;

export interface Allocation {
  reservationId: string;
  lotId: string;
  type: AccountType;
  amount: number;
  lotExpiresAt: Date | null;
}

export const EXPIRED_REFUND_REASON = 'expired: neither captured nor refunded within its time to live';

export interface ReserveInput {
  organizationId: string;
  idempotencyKey: string;
  generation: GenerationRequest;
  ttlSeconds?: number | null;
}

/**
 * Pre-deducts the server-computed cost of a generation from the organization's lots, in
 * consumption order. All or nothing: either the whole cost is held, or nothing is written.
 * A repeat of the same idempotency key with the same generation returns the first reservation.
 * Input is checked and priced here, before the request joins its organization's batch
 * (src/ledger/reservation-batches.ts), so bad input never reaches a shared transaction.
 */
export async function reserveCredits(ctx: LedgerContext, input: ReserveInput): Promise<Reservation> {
  const organizationId = requireUuid(input.organizationId, 'organizationId');
  const idempotencyKey = requireKey(input.idempotencyKey, 'idempotencyKey');
  const ttlSeconds = requireIntInRange(input.ttlSeconds ?? TTL_SECONDS_DEFAULT, 1, TTL_SECONDS_MAX, 'ttlSeconds');
  const priced = await priceRequest(ctx.db, input.generation);
  return reserveInBatch(ctx, { organizationId, idempotencyKey, priced, ttlSeconds });
}

/**
 * The lots reservations took their credits from, in the order they took them (the journal's
 * order, its entry numbers). With an organization, only that organization's entries are read
 * (the lookup a sharded database routes to one shard); every caller in the service passes one.
 */
export async function listAllocations(
  db: Queryable,
  reservationIds: string[],
  organizationId?: string,
): Promise<Allocation[]> {
  if (reservationIds.length === 0) return [];
  const rows = await db
    .select({
      reservationId: ledgerEntries.reservationId,
      lotId: ledgerEntries.lotId,
      type: creditLots.type,
      amount: ledgerEntries.reservedChange,
      lotExpiresAt: creditLots.expiresAt,
    })
    .from(ledgerEntries)
    .innerJoin(
      creditLots,
      and(eq(creditLots.organizationId, ledgerEntries.organizationId), eq(creditLots.id, ledgerEntries.lotId)),
    )
    .where(
      and(
        inArray(ledgerEntries.reservationId, reservationIds),
        eq(ledgerEntries.kind, 'RESERVE'),
        organizationId === undefined ? undefined : eq(ledgerEntries.organizationId, organizationId),
      ),
    )
    .orderBy(asc(ledgerEntries.organizationId), asc(ledgerEntries.entryNumber));
  return rows.map((row) => ({ ...row, reservationId: row.reservationId! }));
}

/** A reservation of the organization in scope (any organization when the scope is null). */
export async function findReservation(
  db: Queryable,
  reservationId: string,
  scopeOrganizationId: string | null,
): Promise<Reservation | undefined> {
  const [reservation] = await db
    .select()
    .from(reservations)
    .where(
      and(
        eq(reservations.id, reservationId),
        scopeOrganizationId === null ? undefined : eq(reservations.organizationId, scopeOrganizationId),
      ),
    );
  return reservation;
}

/** The latest moment a reservation may still be pending: held credits must not outlive a day. */
export function lifetimeEnd(reservation: Pick<Reservation, 'createdAt'>): Date {
  return new Date(reservation.createdAt.getTime() + RESERVATION_LIFETIME_SECONDS_MAX * 1000);
}
