import { and, eq, inArray, sql } from 'drizzle-orm';
import type { Clock } from '../clock.ts';
import { rowsOf, type Tx } from '../db/client.ts';
import { reservationOperationKeys, reservations } from '../db/schema.ts';
import { allocateCost, isExpired, spendableInOrder, splitSettlement } from './allocation.ts';
import { afterPosting, balanceLots, balanceOf } from './balance.ts';
import type { CreditLot } from './lots.ts';
import type { LedgerContext } from './context.ts';
import {
  CreditError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  InvalidInputError,
  NotFoundError,
  ReservationStateError,
  invariant,
} from './errors.ts';
import {
  keyedPart,
  pgArray,
  postEntries,
  type EntryDraft,
  type OperationKeyRecord,
  type Settlement,
} from './journal.ts';
import { BALANCE_CREDITS_MAX, TTL_SECONDS_MAX } from './limits.ts';
import { expireDueLots } from './lots.ts';
import { joinLane, type Lane, type LaneOutcome, type LaneRequest } from './organization-queue.ts';
import { ensureCurrentCycle, lockOrganization } from './organizations.ts';
import {
  EXPIRED_REFUND_REASON,
  findReservation,
  lifetimeEnd,
  listAllocations,
  type Allocation,
  type Reservation,
} from './reservations.ts';
import { optionalText, requireIntInRange, requireKey, requireUuid } from './validation.ts';

/** What a write on an existing reservation asks for. */
type Operation =
  | { kind: 'CAPTURE'; amount: number | null }
  | { kind: 'REFUND'; reason: string | null }
  | { kind: 'EXTEND'; ttlSeconds: number }
  | { kind: 'INCREASE'; additionalCredits: number }
  /** The sweeper's: refund it if its time to live has passed, else leave it. */
  | { kind: 'EXPIRE' };

interface SettlementRequest extends LaneRequest {
  organizationId: string;
  reservationId: string;
  operation: Operation;
  idempotencyKey: string | null;
}

/** The reservation as the write left it, and whether this request changed it. */
interface SettlementAnswer {
  reservation: Reservation;
  wrote: boolean;
}

/**
 * Settlements that arrive while their organization is busy are written together, like
 * reservations (src/ledger/reservation-batches.ts): a generation backend finishing a burst of jobs
 * costs one lock, one read and one statement per batch instead of a transaction per job.
 */
const BATCH_SIZE_MAX = 100;

const settlementLane: Lane<SettlementRequest, SettlementAnswer> = {
  sizeMax: BATCH_SIZE_MAX,
  write: (tx, batch) => settleAll(tx, batch[0]!.ctx.clock, batch),
};

export interface CaptureInput {
  reservationId: string;
  /** Credits to consume, 1 to the reserved amount; absent captures everything. */
  amount?: number | null;
  /** A retry with the same key and input answers what the first request answered. */
  idempotencyKey?: string | null;
}

/**
 * Consumes `amount` of a pending reservation (all of it when absent) and returns the rest to the
 * lots it came from. How the amount splits over the lots is `splitSettlement`'s rule: captured in
 * allocation order, refunded to the lots taken last.
 */
export function captureReservation(
  ctx: LedgerContext,
  input: CaptureInput,
  scope: string | null,
): Promise<Reservation> {
  const amount = input.amount ?? null;
  if (amount !== null) requireIntInRange(amount, 1, Number.MAX_SAFE_INTEGER, 'amount');
  return write(ctx, input.reservationId, scope, { kind: 'CAPTURE', amount }, input.idempotencyKey);
}

export interface RefundInput {
  reservationId: string;
  reason?: string | null;
  idempotencyKey?: string | null;
}

/** Returns every credit of a pending reservation to the exact lots it came from. */
export function refundReservation(ctx: LedgerContext, input: RefundInput, scope: string | null): Promise<Reservation> {
  const reason = optionalText(input.reason, 'reason');
  return write(ctx, input.reservationId, scope, { kind: 'REFUND', reason }, input.idempotencyKey);
}

export interface ExtendInput {
  reservationId: string;
  ttlSeconds: number;
  idempotencyKey?: string | null;
}

/**
 * Sets a pending reservation to expire `ttlSeconds` from now (long videos need more time), but
 * never later than 24 hours after it was created; the answer carries the expiry actually set.
 * Without the cap, repeated extensions could hold credits (say, a cycle's subscription credits)
 * and capture them long after they expired.
 */
export function extendReservation(ctx: LedgerContext, input: ExtendInput, scope: string | null): Promise<Reservation> {
  const ttlSeconds = requireIntInRange(input.ttlSeconds, 1, TTL_SECONDS_MAX, 'ttlSeconds');
  return write(ctx, input.reservationId, scope, { kind: 'EXTEND', ttlSeconds }, input.idempotencyKey);
}

export interface IncreaseInput {
  reservationId: string;
  additionalCredits: number;
  /** Required: a retry with the same key and input answers what the first request answered. */
  idempotencyKey: string;
}

/**
 * Grows a pending reservation by `additionalCredits`, taken from the organization's lots in
 * consumption order as they stand now, all or nothing (InsufficientCreditsError, nothing written).
 * The new credits are allocations of the reservation like the first ones, after them in its
 * allocation order, so a capture consumes the earliest first and a refund returns every credit to
 * the lot it came from. The reservation's expiry and its 24-hour lifetime do not change.
 */
export function increaseReservation(
  ctx: LedgerContext,
  input: IncreaseInput,
  scope: string | null,
): Promise<Reservation> {
  const additionalCredits = requireIntInRange(input.additionalCredits, 1, BALANCE_CREDITS_MAX, 'additionalCredits');
  const key = requireKey(input.idempotencyKey, 'idempotencyKey');
  return write(ctx, input.reservationId, scope, { kind: 'INCREASE', additionalCredits }, key);
}

/**
 * The sweeper's automatic refund; does nothing if the reservation was settled meanwhile or its
 * time to live was extended. The sweeper found the reservation with its organization.
 */
export async function refundIfExpired(
  ctx: LedgerContext,
  reservationId: string,
  organizationId: string,
): Promise<boolean> {
  const answer = await joinLane(settlementLane, organizationId, {
    ctx,
    organizationId,
    reservationId,
    operation: { kind: 'EXPIRE' },
    idempotencyKey: null,
  });
  return answer.wrote;
}

/**
 * Validates what every write on a reservation shares and sends it through the organization's
 * settlement lane. A caller's organization is known from its token; only an admin's request looks
 * the reservation up first to learn its organization (on Citus, the one cross-shard read of a
 * request; it locks nothing). A reservation outside the caller's scope is reported exactly like a
 * missing one.
 */
async function write(
  ctx: LedgerContext,
  reservationId: string,
  scope: string | null,
  operation: Operation,
  idempotencyKey: string | null | undefined,
): Promise<Reservation> {
  const id = requireUuid(reservationId, 'reservationId');
  const key = idempotencyKey == null ? null : requireKey(idempotencyKey, 'idempotencyKey');
  const organizationId = scope ?? (await findReservation(ctx.db, id, null))?.organizationId;
  if (organizationId === undefined) throw new NotFoundError('No such reservation.');
  const answer = await joinLane(settlementLane, organizationId, {
    ctx,
    organizationId,
    reservationId: id,
    operation,
    idempotencyKey: key,
  });
  return answer.reservation;
}

/** What a batch reads under the organization's lock, and what it has decided so far. */
interface BatchState {
  now: Date;
  /** Each reservation of the batch as it stands after the requests decided before. */
  reservations: Map<string, Reservation>;
  allocations: Map<string, Allocation[]>;
  keys: Map<string, OperationKeyRecord>;
  drafts: EntryDraft[];
  /** The organization's lots as the batch found them (after starting a due cycle). */
  lotsBefore: CreditLot[];
  settlements: Map<string, Settlement>;
  /** Pending reservations an increase grew, by id. */
  grown: Set<string>;
  /** Pending reservations whose expiry an extension moved and that the batch does not settle. */
  extended: Set<string>;
  newKeys: OperationKeyRecord[];
  refundedIntoExpired: boolean;
}

/**
 * The batch's transaction. The lock and every read it needs are sent together and run in order
 * (one round trip, the reads seeing everything committed before the lock was granted); the
 * requests are then decided in arrival order in memory, each seeing what the ones before it did,
 * and everything is written with one statement: the journal entries, the settled reservations,
 * the idempotency keys and the announcement.
 */
async function settleAll(tx: Tx, clock: Clock, batch: SettlementRequest[]): Promise<LaneOutcome<SettlementAnswer>> {
  const organizationId = batch[0]!.organizationId;
  const ids = [...new Set(batch.map((request) => request.reservationId))];
  const keys = [...new Set(batch.flatMap((request) => (request.idempotencyKey ? [request.idempotencyKey] : [])))];
  const [org, found, allocations, lotsAtLock, known] = await Promise.all([
    lockOrganization(tx, organizationId),
    findReservations(tx, organizationId, ids),
    listAllocations(tx, ids, organizationId),
    balanceLots(tx, organizationId),
    findOperationKeys(tx, organizationId, keys),
  ]);
  if (!org) return { outcomes: batch.map(() => new NotFoundError('No such reservation.')), balance: null };
  // Read after the lock; like every write, a settlement first brings the organization into the
  // billing cycle that contains now. A new cycle changes no reservation or allocation, but lots.
  const now = clock.now();
  const cycle = await ensureCurrentCycle(tx, org, now);
  // A new cycle changed the lots; only an increase takes from them, and needs them as they are.
  const increases = batch.some((request) => request.operation.kind === 'INCREASE');
  const lotsBefore = cycle.changed && increases ? await balanceLots(tx, organizationId) : lotsAtLock;
  const state: BatchState = {
    now,
    reservations: new Map(found.map((reservation) => [reservation.id, reservation])),
    allocations: groupByReservation(allocations),
    keys: known,
    drafts: [],
    lotsBefore,
    settlements: new Map(),
    grown: new Set(),
    extended: new Set(),
    newKeys: [],
    refundedIntoExpired: false,
  };
  const outcomes = batch.map((request) => decide(state, request));
  const version = await writeDecisions(tx, organizationId, state);
  if (state.refundedIntoExpired) {
    // Credits returned to a lot past its expiry expire at once, together with whatever else the
    // lot still has: an expired lot never holds available credits again. Listeners re-read the
    // balance once the transaction commits.
    await expireDueLots(tx, organizationId, now, 'refunded to a lot that had expired');
    return { outcomes, balance: null };
  }
  const balance =
    version === null || cycle.changed
      ? null
      : balanceOf(organizationId, afterPosting(lotsAtLock, state.drafts), version, now);
  return { outcomes, balance };
}

/** One request's answer, given what the requests before it in the batch did. */
function decide(state: BatchState, request: SettlementRequest): SettlementAnswer | CreditError {
  const { operation, idempotencyKey } = request;
  const fingerprint = requestFingerprint(request);
  if (idempotencyKey !== null) {
    const prior = state.keys.get(idempotencyKey);
    if (prior) {
      if (prior.request !== fingerprint) {
        return new IdempotencyConflictError('This idempotency key was already used for a different request.');
      }
      return { reservation: answerOf(prior), wrote: false };
    }
  }
  const reservation = state.reservations.get(request.reservationId);
  if (!reservation) return new NotFoundError('No such reservation.');
  if (reservation.status !== 'PENDING') {
    return operation.kind === 'EXPIRE' ? { reservation, wrote: false } : new ReservationStateError(reservation.status);
  }
  // A reservation whose time to live has passed is refunded on the spot, as the sweeper would,
  // and the write that found it is told so.
  if (reservation.expiresAt.getTime() <= state.now.getTime()) {
    const refunded = settle(state, reservation, 0, EXPIRED_REFUND_REASON);
    return operation.kind === 'EXPIRE' ? { reservation: refunded, wrote: true } : new ReservationStateError('REFUNDED');
  }
  const after = apply(state, reservation, operation);
  if (after instanceof CreditError) return after;
  if (idempotencyKey !== null && operation.kind !== 'EXPIRE') {
    const record: OperationKeyRecord = {
      idempotencyKey,
      reservationId: reservation.id,
      operation: operation.kind,
      request: fingerprint,
      answer: after,
      createdAt: state.now,
    };
    state.keys.set(idempotencyKey, record);
    state.newKeys.push(record);
  }
  return { reservation: after, wrote: after !== reservation };
}

/** Applies an operation to a pending reservation that has not expired. */
function apply(state: BatchState, reservation: Reservation, operation: Operation): Reservation | CreditError {
  switch (operation.kind) {
    case 'CAPTURE': {
      const amount = operation.amount ?? reservation.amount;
      if (amount > reservation.amount) {
        return new InvalidInputError(`amount must be from 1 to the reserved ${reservation.amount} credits.`, 'amount');
      }
      return settle(state, reservation, amount, amount < reservation.amount ? 'partial capture' : null);
    }
    case 'REFUND':
      return settle(state, reservation, 0, operation.reason ?? 'refunded');
    case 'EXTEND': {
      const requested = state.now.getTime() + operation.ttlSeconds * 1000;
      const extended = {
        ...reservation,
        expiresAt: new Date(Math.min(requested, lifetimeEnd(reservation).getTime())),
      };
      state.reservations.set(reservation.id, extended);
      state.extended.add(reservation.id);
      return extended;
    }
    case 'INCREASE':
      return grow(state, reservation, operation.additionalCredits);
    case 'EXPIRE':
      return reservation;
  }
}

/**
 * Takes `additional` credits for a pending reservation from the lots as the batch has left them
 * so far, in consumption order, and records them as allocations after its others.
 */
function grow(state: BatchState, reservation: Reservation, additional: number): Reservation | CreditError {
  if (reservation.amount + additional > BALANCE_CREDITS_MAX) {
    return new InvalidInputError(
      `A reservation may hold at most ${BALANCE_CREDITS_MAX} credits; it holds ${reservation.amount}.`,
      'additionalCredits',
    );
  }
  const lots = spendableInOrder(afterPosting(state.lotsBefore, state.drafts), state.now);
  const taken = allocateCost(lots, additional);
  if (taken instanceof InsufficientCreditsError) return taken;
  const byId = new Map(lots.map((lot) => [lot.id, lot]));
  const allocations = state.allocations.get(reservation.id) ?? [];
  for (const part of taken) {
    const lot = byId.get(part.lotId)!;
    state.drafts.push({
      organizationId: reservation.organizationId,
      lotId: part.lotId,
      reservationId: reservation.id,
      kind: 'RESERVE',
      availableChange: -part.amount,
      reservedChange: part.amount,
      createdAt: state.now,
    });
    allocations.push({
      reservationId: reservation.id,
      lotId: part.lotId,
      type: lot.type,
      amount: part.amount,
      lotExpiresAt: lot.expiresAt,
    });
  }
  state.allocations.set(reservation.id, allocations);
  const grown = { ...reservation, amount: reservation.amount + additional };
  state.reservations.set(reservation.id, grown);
  state.grown.add(reservation.id);
  return grown;
}

/**
 * Consumes `captureAmount` of a pending reservation and drafts the return of the rest to the lots
 * it came from; the settled reservation is what later requests of the batch see.
 */
function settle(state: BatchState, reservation: Reservation, captureAmount: number, refundReason: string | null) {
  invariant(reservation.status === 'PENDING', `settling a ${reservation.status} reservation`);
  const allocations = state.allocations.get(reservation.id) ?? [];
  const base = { organizationId: reservation.organizationId, reservationId: reservation.id, createdAt: state.now };
  for (const { allocation, captured, refunded } of splitSettlement(allocations, captureAmount)) {
    if (captured > 0) {
      state.drafts.push({
        ...base,
        lotId: allocation.lotId,
        kind: 'CAPTURE',
        availableChange: 0,
        reservedChange: -captured,
      });
    }
    if (refunded > 0) {
      state.drafts.push({
        ...base,
        lotId: allocation.lotId,
        kind: 'REFUND',
        availableChange: refunded,
        reservedChange: -refunded,
        reason: refundReason,
      });
      if (isExpired({ expiresAt: allocation.lotExpiresAt }, state.now)) state.refundedIntoExpired = true;
    }
  }
  const settlement: Settlement = {
    reservationId: reservation.id,
    status: captureAmount > 0 ? 'CAPTURED' : 'REFUNDED',
    capturedAmount: captureAmount,
    refundedAmount: reservation.amount - captureAmount,
    settledAt: state.now,
    refundReason: captureAmount < reservation.amount ? refundReason : null,
    expiresAt: reservation.expiresAt,
    amount: reservation.amount,
  };
  state.settlements.set(reservation.id, settlement);
  state.extended.delete(reservation.id);
  // The settlement writes the grown amount itself.
  state.grown.delete(reservation.id);
  const { reservationId: _id, ...settled } = settlement;
  const after: Reservation = { ...reservation, ...settled };
  state.reservations.set(reservation.id, after);
  return after;
}

/**
 * Writes what the batch decided: one statement for the entries, settlements and keys (with the
 * announcement), and one more only when extensions or keys remain that no entry carries. Returns
 * the new balance version when credits moved.
 */
async function writeDecisions(tx: Tx, organizationId: string, state: BatchState): Promise<number | null> {
  let version: number | null = null;
  let keysLeft = state.newKeys;
  if (state.drafts.length > 0) {
    version = await postEntries(tx, state.drafts, {
      settlements: [...state.settlements.values()],
      grownReservations: [...state.grown].map((id) => ({
        reservationId: id,
        amount: state.reservations.get(id)!.amount,
      })),
      operationKeys: keysLeft,
      announce: true,
    });
    keysLeft = [];
  }
  const extended = [...state.extended].map((id) => state.reservations.get(id)!);
  if (extended.length > 0 || keysLeft.length > 0) {
    await writeExtensions(tx, organizationId, extended, keysLeft);
  }
  return version;
}

/** Moves the expiry of extended pending reservations and records the keys left, in one statement. */
async function writeExtensions(
  tx: Tx,
  organizationId: string,
  extended: Reservation[],
  keys: OperationKeyRecord[],
): Promise<void> {
  const result = await tx.execute(sql`
    with extended as (
      update ${reservations} as r set expires_at = e.expires_at
      from unnest(
        ${pgArray(extended.map((reservation) => reservation.id))}::uuid[],
        ${pgArray(extended.map((reservation) => reservation.expiresAt.toISOString()))}::timestamptz[]
      ) as e(id, expires_at)
      where r.organization_id = ${organizationId} and r.id = e.id and r.status = 'PENDING'
      returning 1
    ), ${keyedPart(organizationId, keys)}
    select (select count(*) from extended)::int as extended, (select count(*) from keyed)::int as keyed`);
  const [row] = rowsOf<{ extended: number; keyed: number }>(result);
  invariant(Number(row?.extended) === extended.length, 'an extended reservation was not pending');
  invariant(Number(row?.keyed) === keys.length, 'an idempotency key seen free under the lock was taken');
}

async function findReservations(tx: Tx, organizationId: string, ids: string[]): Promise<Reservation[]> {
  return tx
    .select()
    .from(reservations)
    .where(and(eq(reservations.organizationId, organizationId), inArray(reservations.id, ids)));
}

async function findOperationKeys(
  tx: Tx,
  organizationId: string,
  keys: string[],
): Promise<Map<string, OperationKeyRecord>> {
  if (keys.length === 0) return new Map();
  const rows = await tx
    .select()
    .from(reservationOperationKeys)
    .where(
      and(
        eq(reservationOperationKeys.organizationId, organizationId),
        inArray(reservationOperationKeys.idempotencyKey, keys),
      ),
    );
  return new Map(
    rows.map((row) => [
      row.idempotencyKey,
      { ...row, operation: row.operation as OperationKeyRecord['operation'] } satisfies OperationKeyRecord,
    ]),
  );
}

function groupByReservation(allocations: Allocation[]): Map<string, Allocation[]> {
  const byReservation = new Map<string, Allocation[]>();
  for (const allocation of allocations) {
    const list = byReservation.get(allocation.reservationId) ?? [];
    list.push(allocation);
    byReservation.set(allocation.reservationId, list);
  }
  return byReservation;
}

/**
 * "The same input" for a key: the same operation on the same reservation with the same fields as
 * given (an amount left out is not the same as the full amount named).
 */
function requestFingerprint({ reservationId, operation }: SettlementRequest): string {
  return JSON.stringify({ reservationId, ...operation });
}

/** The reservation a stored answer holds, with its instants as dates again. */
function answerOf(record: OperationKeyRecord): Reservation {
  const stored = record.answer as Record<string, unknown>;
  const instant = (value: unknown) => (value === null || value === undefined ? null : new Date(String(value)));
  return {
    ...(stored as unknown as Reservation),
    expiresAt: instant(stored.expiresAt)!,
    createdAt: instant(stored.createdAt)!,
    settledAt: instant(stored.settledAt),
  };
}
