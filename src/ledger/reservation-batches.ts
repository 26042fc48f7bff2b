import { randomUUID } from 'node:crypto';
import { and, eq, inArray } from 'drizzle-orm';
import type { Clock } from '../clock.ts';
import type { Tx } from '../db/client.ts';
import { reservations } from '../db/schema.ts';
import type { LedgerContext } from './context.ts';
import { afterTaking, allocateCost, spendableInOrder } from './allocation.ts';
import { type CreditError, IdempotencyConflictError, InsufficientCreditsError } from './errors.ts';
import { postEntries, type EntryDraft } from './journal.ts';
import { afterPosting, balanceLots, balanceOf } from './balance.ts';
import { joinLane, type Lane, type LaneOutcome, type LaneRequest } from './organization-queue.ts';
import { ensureCurrentCycle, requireLockedOrganization } from './organizations.ts';
import type { PricedGeneration } from './pricing.ts';
import type { Reservation } from './reservations.ts';

/** A validated, priced reservation request waiting for its organization's next batch. */
export interface ReserveRequest {
  organizationId: string;
  idempotencyKey: string;
  priced: PricedGeneration;
  ttlSeconds: number;
}

interface QueuedReserve extends ReserveRequest, LaneRequest {}

/**
 * Reservations that arrive while their organization is busy wait for the next batch, and a batch
 * takes at most this many; so no request waits behind more than one batch, and a batch's
 * transaction stays short.
 */
const BATCH_SIZE_MAX = 100;

const reserveLane: Lane<QueuedReserve, Reservation> = {
  sizeMax: BATCH_SIZE_MAX,
  write: (tx, batch) => reserveAll(tx, batch[0]!.ctx.clock, batch),
};

/**
 * Reserves through the organization's queue (src/ledger/organization-queue.ts): the first
 * request of an idle organization is written at once (no added latency), and requests arriving
 * meanwhile are written together by the next batch. A batch locks the organization once, reads
 * its lots once, allocates in memory in arrival order, and writes every reservation and journal
 * entry with one statement, so a busy balance costs a handful of round trips per batch instead of
 * per request. Each request keeps its own outcome: a replay, an `IdempotencyConflictError` or an
 * exact `InsufficientCreditsError` answers that request alone.
 */
export function reserveInBatch(ctx: LedgerContext, request: ReserveRequest): Promise<Reservation> {
  return joinLane(reserveLane, request.organizationId, { ...request, ctx });
}

/**
 * The batch's transaction: one outcome per request, in order. Three round trips while the
 * organization is locked: the lock with the reads it needs (sent together, run in order, so the
 * reads see everything committed before the lock was granted), one statement that writes every
 * reservation, lot and entry and announces the change, and the commit.
 */
async function reserveAll(tx: Tx, clock: Clock, batch: ReserveRequest[]): Promise<LaneOutcome<Reservation>> {
  const organizationId = batch[0]!.organizationId;
  const keys = [...new Set(batch.map((item) => item.idempotencyKey))];
  const [locked, known, lotsAtLock] = await Promise.all([
    requireLockedOrganization(tx, organizationId),
    findByKeys(tx, organizationId, keys),
    balanceLots(tx, organizationId),
  ]);
  // Read after the lock: a request that waited for it must not take from a lot that expired meanwhile.
  const now = clock.now();
  const cycle = await ensureCurrentCycle(tx, locked, now);
  const balanceBefore = cycle.changed ? await balanceLots(tx, organizationId) : lotsAtLock;
  // What is left for the next request of the batch, in memory, sorted once for the whole batch.
  let lots = spendableInOrder(balanceBefore, now);

  const outcomes: Array<Reservation | CreditError> = [];
  const created: Reservation[] = [];
  const drafts: EntryDraft[] = [];
  for (const item of batch) {
    const prior = known.get(item.idempotencyKey);
    if (prior) {
      outcomes.push(replayOrConflict(prior, item.priced));
      continue;
    }
    const taken = allocateCost(lots, item.priced.cost);
    if (taken instanceof InsufficientCreditsError) {
      outcomes.push(taken);
      continue;
    }
    lots = afterTaking(lots, taken);
    const reservation = newReservation(item, now);
    known.set(item.idempotencyKey, reservation);
    created.push(reservation);
    outcomes.push(reservation);
    for (const part of taken) {
      drafts.push({
        organizationId,
        lotId: part.lotId,
        reservationId: reservation.id,
        kind: 'RESERVE',
        availableChange: -part.amount,
        reservedChange: part.amount,
        createdAt: now,
      });
    }
  }
  if (created.length === 0) return { outcomes, balance: null };
  const version = await postEntries(tx, drafts, { newReservations: created, announce: true });
  return { outcomes, balance: balanceOf(organizationId, afterPosting(balanceBefore, drafts), version!, now) };
}

async function findByKeys(tx: Tx, organizationId: string, keys: string[]): Promise<Map<string, Reservation>> {
  const rows = await tx
    .select()
    .from(reservations)
    .where(and(eq(reservations.organizationId, organizationId), inArray(reservations.idempotencyKey, keys)));
  return new Map(rows.map((row) => [row.idempotencyKey, row]));
}

function newReservation(item: ReserveRequest, now: Date): Reservation {
  return {
    id: randomUUID(),
    organizationId: item.organizationId,
    idempotencyKey: item.idempotencyKey,
    modelId: item.priced.modelId,
    resolution: item.priced.resolution,
    durationSeconds: item.priced.durationSeconds,
    count: item.priced.count,
    amount: item.priced.cost,
    capturedAmount: 0,
    refundedAmount: 0,
    status: 'PENDING',
    expiresAt: new Date(now.getTime() + item.ttlSeconds * 1000),
    createdAt: now,
    settledAt: null,
    refundReason: null,
  };
}

/** "The same input" is the same generation; the time to live is not compared. */
function replayOrConflict(existing: Reservation, priced: PricedGeneration): Reservation | CreditError {
  const same =
    existing.modelId === priced.modelId &&
    existing.resolution === priced.resolution &&
    existing.durationSeconds === priced.durationSeconds &&
    existing.count === priced.count;
  return same
    ? existing
    : new IdempotencyConflictError('This idempotency key was already used for a different generation.');
}
