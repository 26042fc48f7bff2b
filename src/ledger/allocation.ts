import { ACCOUNT_TYPES, type AccountType } from './enums.ts';
import { InsufficientCreditsError, invariant } from './errors.ts';

// The rules that decide which lots pay for a generation and which get credits back when it is
// settled. They are pure (no database, no clock: `now` is passed in) so that they can be tested
// on their own, case by case and by property (test/unit/allocation.test.ts); the reserve and
// settle paths read the lots, call these, and write what they return in one statement.

/** What the consumption order and the allocation need to know of a lot. */
export interface SpendableLot {
  id: string;
  type: AccountType;
  available: number;
  expiresAt: Date | null;
  createdAt: Date;
}

/** Credits taken from (or held in) one lot. */
export interface LotPart {
  lotId: string;
  amount: number;
}

/** What settling one allocation does: `captured` is consumed, `refunded` goes back to the lot. */
export interface SettlementPart<T extends LotPart = LotPart> {
  allocation: T;
  captured: number;
  refunded: number;
}

export function isExpired(lot: { expiresAt: Date | null }, now: Date): boolean {
  return lot.expiresAt !== null && lot.expiresAt.getTime() <= now.getTime();
}

/** 1 for the account type consumed first: the order ACCOUNT_TYPES (the database enum) declares. */
export function accountPriority(type: AccountType): number {
  return ACCOUNT_TYPES.indexOf(type) + 1;
}

/**
 * Consumption order: account type priority, then the soonest expiry (a lot that never expires
 * last, as it loses nothing by waiting), then the oldest, then the id so that the order is total.
 * It is the order `CONSUMPTION_ORDER` (src/ledger/lots.ts) sorts by in SQL.
 */
export function compareConsumption(a: SpendableLot, b: SpendableLot): number {
  return (
    accountPriority(a.type) - accountPriority(b.type) ||
    expiryRank(a) - expiryRank(b) ||
    a.createdAt.getTime() - b.createdAt.getTime() ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

function expiryRank(lot: SpendableLot): number {
  return lot.expiresAt === null ? Number.POSITIVE_INFINITY : lot.expiresAt.getTime();
}

/**
 * The lots that can pay at `now` (unexpired, holding available credits), in consumption order:
 * the list `allocateCost` takes from. A batch sorts once and allocates many times.
 */
export function spendableInOrder<T extends SpendableLot>(lots: readonly T[], now: Date): T[] {
  return lots.filter((lot) => lot.available > 0 && !isExpired(lot, now)).sort(compareConsumption);
}

/**
 * Takes `cost` credits from the lots in the order given, which is the consumption order
 * (`spendableInOrder`), each lot giving as much as it has before the next is touched. All or
 * nothing: when they hold less than the cost, nothing is taken and the error says how much they
 * hold.
 */
export function allocateCost(
  lots: ReadonlyArray<Pick<SpendableLot, 'id' | 'available'>>,
  cost: number,
): LotPart[] | InsufficientCreditsError {
  invariant(Number.isSafeInteger(cost) && cost > 0, `a cost is a positive whole number of credits, not ${cost}`);
  const available = lots.reduce((sum, lot) => sum + lot.available, 0);
  if (available < cost) return new InsufficientCreditsError(cost, available);
  const parts: LotPart[] = [];
  let remaining = cost;
  for (const lot of lots) {
    if (remaining === 0) break;
    const amount = Math.min(lot.available, remaining);
    if (amount === 0) continue;
    parts.push({ lotId: lot.id, amount });
    remaining -= amount;
  }
  return parts;
}

/**
 * The lots as they are once the parts were taken from them (the lots passed are not changed).
 * Parts come from the front of a list in consumption order, so the walk stops at the last lot a
 * part names: a batch of many requests over many lots stays linear in what it takes.
 */
export function afterTaking<T extends Pick<SpendableLot, 'id' | 'available'>>(
  lots: readonly T[],
  parts: readonly LotPart[],
): T[] {
  const taken = new Map<string, number>();
  for (const part of parts) taken.set(part.lotId, (taken.get(part.lotId) ?? 0) + part.amount);
  const after = lots.slice();
  let unmatched = taken.size;
  for (let i = 0; i < after.length && unmatched > 0; i++) {
    const lot = after[i]!;
    const amount = taken.get(lot.id);
    if (amount === undefined) continue;
    invariant(amount <= lot.available, `lot ${lot.id} gives ${amount} credits but holds ${lot.available}`);
    after[i] = { ...lot, available: lot.available - amount };
    unmatched -= 1;
  }
  invariant(unmatched === 0, 'credits were taken from a lot that is not in the list');
  return after;
}

/**
 * Splits a settlement over a reservation's allocations (in the order they were taken, which is
 * the consumption order): the captured credits are consumed from the first allocations, each in
 * full before the next, and the remainder goes back to the lots taken last. One part per
 * allocation, in the same order.
 */
export function splitSettlement<T extends LotPart>(
  allocations: readonly T[],
  captureAmount: number,
): Array<SettlementPart<T>> {
  const held = allocations.reduce((sum, allocation) => sum + allocation.amount, 0);
  invariant(
    Number.isSafeInteger(captureAmount) && captureAmount >= 0 && captureAmount <= held,
    `cannot capture ${captureAmount} of a reservation that holds ${held}`,
  );
  let toCapture = captureAmount;
  return allocations.map((allocation) => {
    const captured = Math.min(allocation.amount, toCapture);
    toCapture -= captured;
    return { allocation, captured, refunded: allocation.amount - captured };
  });
}
