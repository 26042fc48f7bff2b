import { and, asc, eq, inArray } from 'drizzle-orm';
import type { Clock } from '../clock.ts';
import type { Queryable, Tx } from '../db/client.ts';
import { creditLots, ledgerEntries, reservations } from '../db/schema.ts';
import type { LedgerContext } from './context.ts';
import { isExpired, splitSettlement } from './allocation.ts';
import { CreditError, InvalidInputError, NotFoundError, ReservationStateError, invariant } from './errors.ts';
import { postEntries, type EntryDraft } from './journal.ts';
import { afterPosting, balanceLots, balanceOf, type Balance } from './balance.ts';
import type { AccountType } from './enums.ts';
import { expireDueLots, type CreditLot } from './lots.ts';
import { RESERVATION_LIFETIME_SECONDS_MAX, TTL_SECONDS_DEFAULT, TTL_SECONDS_MAX } from './limits.ts';
import { ensureCurrentCycle, lockOrganization } from './organizations.ts';
import type { GenerationRequest } from './pricing.ts';
import { priceRequest } from './quotes.ts';
import { reserveInBatch } from './reservation-batches.ts';
import { inTransaction } from './transaction.ts';
import { optionalText, requireIntInRange, requireKey, requireUuid } from './validation.ts';

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

interface LockedReservation {
  reservation: Reservation;
  /** The lots it took its credits from, in the order it took them. */
  allocations: Allocation[];
  /** The organization's lots that count in its balance, as of the lock; null when they changed since. */
  lots: CreditLot[] | null;
  now: Date;
}

/** A reservation as a write left it, and the balance it left when the write knows it. */
interface Settled {
  reservation: Reservation;
  balance: Balance | null;
}

/**
 * Locks the reservation's organization, then reads the reservation and its allocations under
 * that lock: the lock and the reads are sent together and run in order, one round trip. A
 * caller's organization is known from its token, so it is locked straight away; only an admin's
 * request looks the reservation up first to learn its organization. On Citus that lookup by id
 * alone is the one cross-shard read of a request (it asks every shard, and locks nothing); the
 * lock and everything after it go to the organization's shard. A reservation outside the
 * caller's scope is reported exactly like a missing one.
 */
async function lockReservation(
  tx: Tx,
  reservationId: string,
  scopeOrganizationId: string | null,
  clock: Clock,
): Promise<LockedReservation> {
  const organizationId = scopeOrganizationId ?? (await findReservation(tx, reservationId, null))?.organizationId;
  if (organizationId === undefined) throw new NotFoundError('No such reservation.');
  const [org, reservation, allocations, lots] = await Promise.all([
    lockOrganization(tx, organizationId),
    findReservation(tx, reservationId, organizationId),
    listAllocations(tx, [reservationId], organizationId),
    balanceLots(tx, organizationId),
  ]);
  if (!org || !reservation) throw new NotFoundError('No such reservation.');
  // Read after the lock; like every write, a settlement first brings the organization into the
  // billing cycle that contains now. A new cycle changes no reservation or allocation, but lots.
  const now = clock.now();
  const cycle = await ensureCurrentCycle(tx, org, now);
  return { reservation, allocations, lots: cycle.changed ? null : lots, now };
}

/**
 * Consumes `captureAmount` of a pending reservation and returns the rest to the lots it came
 * from, in one statement with the settlement and the announcement. How the amount splits over the
 * lots is `splitSettlement`'s rule (captured in allocation order, refunded to the lots taken
 * last). Credits returned to a lot that has expired meanwhile expire at once.
 */
async function settle(
  tx: Tx,
  locked: LockedReservation,
  captureAmount: number,
  refundReason: string | null,
): Promise<Settled> {
  const { reservation, allocations, lots, now } = locked;
  invariant(reservation.status === 'PENDING', `settling a ${reservation.status} reservation`);
  const drafts: EntryDraft[] = [];
  const base = { organizationId: reservation.organizationId, reservationId: reservation.id, createdAt: now };
  let refundedIntoExpired = false;
  for (const { allocation, captured, refunded } of splitSettlement(allocations, captureAmount)) {
    if (captured > 0) {
      drafts.push({ ...base, lotId: allocation.lotId, kind: 'CAPTURE', availableChange: 0, reservedChange: -captured });
    }
    if (refunded > 0) {
      drafts.push({
        ...base,
        lotId: allocation.lotId,
        kind: 'REFUND',
        availableChange: refunded,
        reservedChange: -refunded,
        reason: refundReason,
      });
      if (isExpired({ expiresAt: allocation.lotExpiresAt }, now)) refundedIntoExpired = true;
    }
  }
  const settlement = {
    reservationId: reservation.id,
    status: captureAmount > 0 ? 'CAPTURED' : 'REFUNDED',
    capturedAmount: captureAmount,
    refundedAmount: reservation.amount - captureAmount,
    settledAt: now,
    refundReason: captureAmount < reservation.amount ? refundReason : null,
  } as const;
  const version = await postEntries(tx, drafts, { settlement, announce: true });
  const { reservationId: _id, ...settled } = settlement;
  const after = { ...reservation, ...settled };
  // Credits returned to a lot past its expiry expire at once, together with whatever else the
  // lot still has: an expired lot never holds available credits again. The change this makes is
  // announced with the settlement's (listeners re-read the balance once the transaction commits).
  if (refundedIntoExpired) {
    await expireDueLots(tx, reservation.organizationId, now, 'refunded to a lot that had expired');
    return { reservation: after, balance: null };
  }
  const balance = lots && balanceOf(reservation.organizationId, afterPosting(lots, drafts), version!, now);
  return { reservation: after, balance };
}

/**
 * Runs `work` on a locked pending reservation. A reservation whose time to live has passed is
 * refunded on the spot (as the sweeper would), committed, and then reported as refunded.
 */
async function withPendingReservation(
  ctx: LedgerContext,
  reservationId: string,
  scopeOrganizationId: string | null,
  work: (tx: Tx, locked: LockedReservation) => Promise<Settled>,
): Promise<Reservation> {
  const id = requireUuid(reservationId, 'reservationId');
  const outcome = await inTransaction(ctx.db, async (tx): Promise<Settled | CreditError> => {
    const locked = await lockReservation(tx, id, scopeOrganizationId, ctx.clock);
    const { reservation, now } = locked;
    if (reservation.status !== 'PENDING') return new ReservationStateError(reservation.status);
    if (reservation.expiresAt.getTime() <= now.getTime()) {
      const refunded = await settle(tx, locked, 0, EXPIRED_REFUND_REASON);
      return new ReservationStateError(refunded.reservation.status);
    }
    return work(tx, locked);
  });
  if (outcome instanceof CreditError) throw outcome;
  // Only once committed: the balance a rolled-back write computed never existed.
  if (outcome.balance) ctx.onBalance?.(outcome.balance);
  return outcome.reservation;
}

export interface CaptureInput {
  reservationId: string;
  /** Credits to consume, 1 to the reserved amount; absent captures everything. */
  amount?: number | null;
}

export function captureReservation(
  ctx: LedgerContext,
  input: CaptureInput,
  scope: string | null,
): Promise<Reservation> {
  if (input.amount !== undefined && input.amount !== null)
    requireIntInRange(input.amount, 1, Number.MAX_SAFE_INTEGER, 'amount');
  return withPendingReservation(ctx, input.reservationId, scope, (tx, locked) => {
    const { reservation } = locked;
    const amount = input.amount ?? reservation.amount;
    if (amount > reservation.amount) {
      throw new InvalidInputError(`amount must be from 1 to the reserved ${reservation.amount} credits.`, 'amount');
    }
    return settle(tx, locked, amount, amount < reservation.amount ? 'partial capture' : null);
  });
}

export interface RefundInput {
  reservationId: string;
  reason?: string | null;
}

export function refundReservation(ctx: LedgerContext, input: RefundInput, scope: string | null): Promise<Reservation> {
  const reason = optionalText(input.reason, 'reason') ?? 'refunded';
  return withPendingReservation(ctx, input.reservationId, scope, (tx, locked) => settle(tx, locked, 0, reason));
}

export interface ExtendInput {
  reservationId: string;
  ttlSeconds: number;
}

/** The latest moment a reservation may still be pending: held credits must not outlive a day. */
export function lifetimeEnd(reservation: Pick<Reservation, 'createdAt'>): Date {
  return new Date(reservation.createdAt.getTime() + RESERVATION_LIFETIME_SECONDS_MAX * 1000);
}

/**
 * Sets a pending reservation to expire `ttlSeconds` from now (long videos need more time), but
 * never later than 24 hours after it was created; the answer carries the expiry actually set.
 * Without the cap, repeated extensions could hold credits (say, a cycle's subscription credits)
 * and capture them long after they expired.
 */
export function extendReservation(ctx: LedgerContext, input: ExtendInput, scope: string | null): Promise<Reservation> {
  const ttlSeconds = requireIntInRange(input.ttlSeconds, 1, TTL_SECONDS_MAX, 'ttlSeconds');
  return withPendingReservation(ctx, input.reservationId, scope, async (tx, { reservation, now }) => {
    const requested = now.getTime() + ttlSeconds * 1000;
    const [extended] = await tx
      .update(reservations)
      .set({ expiresAt: new Date(Math.min(requested, lifetimeEnd(reservation).getTime())) })
      .where(and(eq(reservations.organizationId, reservation.organizationId), eq(reservations.id, reservation.id)))
      .returning();
    invariant(extended, 'reservation vanished while locked');
    return { reservation: extended, balance: null };
  });
}

/**
 * The sweeper's automatic refund; does nothing if the reservation was settled meanwhile. The
 * sweeper found the reservation with its organization, so the lock goes straight to that
 * organization's shard.
 */
export async function refundIfExpired(
  ctx: LedgerContext,
  reservationId: string,
  organizationId: string,
): Promise<boolean> {
  return inTransaction(ctx.db, async (tx) => {
    const locked = await lockReservation(tx, reservationId, organizationId, ctx.clock);
    const { reservation, now } = locked;
    if (reservation.status !== 'PENDING' || reservation.expiresAt.getTime() > now.getTime()) return false;
    await settle(tx, locked, 0, EXPIRED_REFUND_REASON);
    return true;
  });
}
