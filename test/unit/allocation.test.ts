import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  afterTaking,
  allocateCost,
  type LotPart,
  type SpendableLot,
  spendableInOrder,
  splitSettlement,
} from '../../src/ledger/allocation.ts';
import type { AccountType } from '../../src/ledger/enums.ts';
import { InsufficientCreditsError, InvariantViolation } from '../../src/ledger/errors.ts';

// The expectations below come from the product's rules (credit-system.md, "Consumption order",
// and contract decision 2), not from the code: subscription credits first, then purchased, then
// promotional, then referral; within a type the soonest expiry first and never-expiring credits
// last, then the oldest; a partial capture consumes in allocation order and refunds the lots
// taken last.

const NOW = new Date('2026-03-15T12:00:00Z');
const DAY_MS = 86_400_000;
const daysFromNow = (days: number) => new Date(NOW.getTime() + days * DAY_MS);

let lotNumber = 0;
function lot(type: AccountType, available: number, more: Partial<SpendableLot> = {}): SpendableLot {
  lotNumber += 1;
  return { id: `lot-${lotNumber}`, type, available, expiresAt: null, createdAt: daysFromNow(-30), ...more };
}

/** The rule as a batch applies it: the spendable lots, sorted once, then the cost taken from them. */
const allocate = (lots: SpendableLot[], cost: number) => allocateCost(spendableInOrder(lots, NOW), cost);

function taken(parts: LotPart[] | InsufficientCreditsError): Array<[string, number]> {
  if (parts instanceof InsufficientCreditsError) throw parts;
  return parts.map((part) => [part.lotId, part.amount]);
}

describe('spendableInOrder and allocateCost: consumption order', () => {
  it('takes subscription, then purchased, then promotional, then referral credits, whatever order the lots come in', () => {
    const referral = lot('REFERRAL', 10);
    const promotional = lot('PROMOTIONAL', 10);
    const purchased = lot('PURCHASED', 10);
    const subscription = lot('SUBSCRIPTION', 10, { expiresAt: daysFromNow(10) });
    expect(taken(allocate([referral, promotional, purchased, subscription], 35))).toEqual([
      [subscription.id, 10],
      [purchased.id, 10],
      [promotional.id, 10],
      [referral.id, 5],
    ]);
  });

  it('empties a lot before touching the next and leaves later lots alone', () => {
    const subscription = lot('SUBSCRIPTION', 30, { expiresAt: daysFromNow(10) });
    const purchased = lot('PURCHASED', 100);
    expect(taken(allocate([purchased, subscription], 50))).toEqual([
      [subscription.id, 30],
      [purchased.id, 20],
    ]);
    expect(taken(allocate([purchased, subscription], 12))).toEqual([[subscription.id, 12]]);
  });

  it('within a type, takes the soonest expiry first and credits that never expire last', () => {
    const permanent = lot('PROMOTIONAL', 5, { createdAt: daysFromNow(-90) });
    const late = lot('PROMOTIONAL', 5, { expiresAt: daysFromNow(20), createdAt: daysFromNow(-60) });
    const soon = lot('PROMOTIONAL', 5, { expiresAt: daysFromNow(2), createdAt: daysFromNow(-1) });
    expect(taken(allocate([permanent, late, soon], 12))).toEqual([
      [soon.id, 5],
      [late.id, 5],
      [permanent.id, 2],
    ]);
  });

  it('among lots of one type and expiry, takes the oldest first', () => {
    const newer = lot('PURCHASED', 5, { createdAt: daysFromNow(-1) });
    const older = lot('PURCHASED', 5, { createdAt: daysFromNow(-10) });
    expect(taken(allocate([newer, older], 7))).toEqual([
      [older.id, 5],
      [newer.id, 2],
    ]);
  });

  it('never takes from an expired lot or an empty one', () => {
    const expired = lot('SUBSCRIPTION', 50, { expiresAt: NOW });
    const empty = lot('PURCHASED', 0, { createdAt: daysFromNow(-100) });
    const purchased = lot('PURCHASED', 40);
    expect(taken(allocate([expired, empty, purchased], 25))).toEqual([[purchased.id, 25]]);
  });

  it('takes nothing when the spendable lots hold less than the cost, and says how much they hold', () => {
    const lots = [lot('SUBSCRIPTION', 100, { expiresAt: daysFromNow(-1) }), lot('PURCHASED', 8), lot('REFERRAL', 2)];
    const outcome = allocate(lots, 11);
    expect(outcome).toBeInstanceOf(InsufficientCreditsError);
    expect(outcome).toMatchObject({ required: 11, available: 10 });
    expect(taken(allocate(lots, 10))).toEqual([
      [lots[1]!.id, 8],
      [lots[2]!.id, 2],
    ]);
  });

  it('takes from the lots in the order it is given them, skipping empty ones', () => {
    const lots = [
      { id: 'b', available: 3 },
      { id: 'empty', available: 0 },
      { id: 'a', available: 10 },
    ];
    expect(taken(allocateCost(lots, 5))).toEqual([
      ['b', 3],
      ['a', 2],
    ]);
  });

  it('refuses a cost that is not a positive whole number of credits (a bug in the caller)', () => {
    const lots = [lot('PURCHASED', 10)];
    for (const cost of [0, -1, 1.5, Number.NaN]) expect(() => allocate(lots, cost)).toThrow(InvariantViolation);
  });
});

describe('afterTaking', () => {
  it('lowers the lots that gave credits and leaves the input unchanged', () => {
    const subscription = lot('SUBSCRIPTION', 30, { expiresAt: daysFromNow(10) });
    const purchased = lot('PURCHASED', 100);
    const lots = [subscription, purchased];
    const after = afterTaking(lots, [
      { lotId: subscription.id, amount: 30 },
      { lotId: purchased.id, amount: 20 },
    ]);
    expect(after.map((l) => l.available)).toEqual([0, 80]);
    expect(lots.map((l) => l.available)).toEqual([30, 100]);
    // A batch's next request sees only what is left.
    expect(taken(allocate(after, 5))).toEqual([[purchased.id, 5]]);
  });

  it('refuses to take more than a lot holds', () => {
    const purchased = lot('PURCHASED', 10);
    expect(() => afterTaking([purchased], [{ lotId: purchased.id, amount: 11 }])).toThrow(InvariantViolation);
  });
});

describe('splitSettlement: contract decision 2', () => {
  const allocations = [
    { lotId: 'subscription', amount: 30 },
    { lotId: 'purchased', amount: 20 },
    { lotId: 'promotional', amount: 10 },
  ];
  const split = (capture: number) =>
    splitSettlement(allocations, capture).map((part) => [part.allocation.lotId, part.captured, part.refunded]);

  it('consumes in allocation order and gives the remainder back to the lots taken last', () => {
    expect(split(40)).toEqual([
      ['subscription', 30, 0],
      ['purchased', 10, 10],
      ['promotional', 0, 10],
    ]);
  });

  it('captures everything, or refunds everything', () => {
    expect(split(60)).toEqual([
      ['subscription', 30, 0],
      ['purchased', 20, 0],
      ['promotional', 10, 0],
    ]);
    expect(split(0)).toEqual([
      ['subscription', 0, 30],
      ['purchased', 0, 20],
      ['promotional', 0, 10],
    ]);
  });

  it('refuses to capture more than the reservation holds (a bug in the caller)', () => {
    expect(() => splitSettlement(allocations, 61)).toThrow(InvariantViolation);
    expect(() => splitSettlement(allocations, -1)).toThrow(InvariantViolation);
  });
});

// --- properties ------------------------------------------------------------------------------

/** The product's order, written out here rather than read from the code under test. */
const PRIORITY: readonly AccountType[] = ['SUBSCRIPTION', 'PURCHASED', 'PROMOTIONAL', 'REFERRAL'];

/** Sort key of the consumption order: type, expiry (never last), creation, id. */
function orderKey(l: SpendableLot): [number, number, number, string] {
  return [PRIORITY.indexOf(l.type), l.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY, l.createdAt.getTime(), l.id];
}

function comesBefore(a: SpendableLot, b: SpendableLot): boolean {
  const [x, y] = [orderKey(a), orderKey(b)];
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! < y[i]!;
  return false;
}

const spendable = (l: SpendableLot) => l.available > 0 && (l.expiresAt === null || l.expiresAt > NOW);

// Few distinct days, so that ties in type, expiry and creation are common.
const lotsArbitrary = fc
  .array(
    fc.record({
      type: fc.constantFrom(...PRIORITY),
      available: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 60 })),
      expiresInDays: fc.option(fc.integer({ min: -2, max: 3 }), { nil: null }),
      createdDaysAgo: fc.integer({ min: 0, max: 3 }),
    }),
    { maxLength: 12 },
  )
  .map((specs) =>
    specs.map(
      (spec, i): SpendableLot => ({
        id: `lot-${String(i).padStart(2, '0')}`,
        type: spec.type,
        available: spec.available,
        expiresAt: spec.expiresInDays === null ? null : daysFromNow(spec.expiresInDays),
        createdAt: daysFromNow(-spec.createdDaysAgo),
      }),
    ),
  );

describe('allocateCost: properties', () => {
  it('takes exactly the cost, never more than a lot holds, only from spendable lots, in consumption order', () => {
    fc.assert(
      fc.property(lotsArbitrary, fc.integer({ min: 1, max: 400 }), (lots, cost) => {
        const held = lots.filter(spendable).reduce((sum, l) => sum + l.available, 0);
        const outcome = allocate(lots, cost);
        if (held < cost) {
          expect(outcome).toBeInstanceOf(InsufficientCreditsError);
          expect((outcome as InsufficientCreditsError).available).toBe(held);
          return;
        }
        if (outcome instanceof InsufficientCreditsError) throw outcome;
        const byId = new Map(lots.map((l) => [l.id, l]));
        expect(outcome.reduce((sum, part) => sum + part.amount, 0)).toBe(cost);
        expect(new Set(outcome.map((part) => part.lotId)).size).toBe(outcome.length);
        for (const part of outcome) {
          const from = byId.get(part.lotId)!;
          expect(spendable(from)).toBe(true);
          expect(part.amount).toBeGreaterThan(0);
          expect(part.amount).toBeLessThanOrEqual(from.available);
        }
        // Parts come in consumption order, and every spendable lot before the last one used was emptied.
        const used = outcome.map((part) => byId.get(part.lotId)!);
        for (let i = 1; i < used.length; i++) expect(comesBefore(used[i - 1]!, used[i]!)).toBe(true);
        const last = used.at(-1)!;
        for (const l of lots.filter(spendable)) {
          if (!comesBefore(l, last)) continue;
          expect(outcome.find((part) => part.lotId === l.id)?.amount).toBe(l.available);
        }
      }),
    );
  });

  it('serves a batch in arrival order as if each request came alone, after the one before', () => {
    fc.assert(
      fc.property(lotsArbitrary, fc.array(fc.integer({ min: 1, max: 80 }), { maxLength: 6 }), (lots, costs) => {
        let left = lots;
        for (const cost of costs) {
          const before = left.filter(spendable).reduce((sum, l) => sum + l.available, 0);
          const outcome = allocate(left, cost);
          if (outcome instanceof InsufficientCreditsError) {
            expect(before).toBeLessThan(cost);
            continue;
          }
          left = afterTaking(left, outcome);
          expect(left.filter(spendable).reduce((sum, l) => sum + l.available, 0)).toBe(before - cost);
          expect(left.every((l) => l.available >= 0)).toBe(true);
        }
      }),
    );
  });
});

describe('splitSettlement: properties', () => {
  const allocationsArbitrary = fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 8 });

  it('captured and refunded add up per lot and in total; captured credits fill the earliest allocations first', () => {
    fc.assert(
      fc.property(
        allocationsArbitrary.chain((amounts) =>
          fc.tuple(
            fc.constant(amounts.map((amount, i) => ({ lotId: `lot-${i}`, amount }))),
            fc.integer({ min: 0, max: amounts.reduce((a, b) => a + b, 0) }),
          ),
        ),
        ([allocations, capture]) => {
          const parts = splitSettlement(allocations, capture);
          const held = allocations.reduce((sum, a) => sum + a.amount, 0);
          expect(parts.map((part) => part.allocation)).toEqual(allocations);
          expect(parts.reduce((sum, part) => sum + part.captured, 0)).toBe(capture);
          expect(parts.reduce((sum, part) => sum + part.refunded, 0)).toBe(held - capture);
          for (const part of parts) {
            expect(part.captured + part.refunded).toBe(part.allocation.amount);
            expect(part.captured).toBeGreaterThanOrEqual(0);
            expect(part.refunded).toBeGreaterThanOrEqual(0);
          }
          // Once a lot gives anything back, every later lot gives everything back.
          const firstRefund = parts.findIndex((part) => part.refunded > 0);
          if (firstRefund >= 0) {
            for (const part of parts.slice(firstRefund + 1)) expect(part.captured).toBe(0);
            for (const part of parts.slice(0, firstRefund)) expect(part.refunded).toBe(0);
          }
        },
      ),
    );
  });
});
