import { describe, expect, it } from 'vitest';
import {
  allocationHoldsWhatItMay,
  cycleAllowanceBounded,
  journalNumberedWithoutGaps,
  type LotRow,
  lotGrantedOnce,
  lotMatchesJournal,
  lotNotNegative,
  lotKeepsGrantedType,
  lotWithinGrant,
  organizationConserves,
  organizationPlanMatchesHistory,
  type PlanChangeRow,
  plansInForce,
  purchasedLotNeverExpires,
  type ReservationRow,
  reservationMatchesJournal,
  reservationStatusAgrees,
} from '../../src/ledger/audit-checks.ts';
import { reservationsFollowConsumptionOrder } from '../../src/ledger/audit-order.ts';

// Each check on hand-built rows: whole rows pass, and each kind of damage is named. The database
// cases (test/cli/audit-invariants.test.ts) show that the queries bring such rows to the checks.

const ORG = 'org-1';

// A lot granted 100: 60 available, 30 reserved, 10 consumed, and a journal that agrees.
const wholeLot: LotRow = {
  lotId: 'lot-1',
  organizationId: ORG,
  granted: 100,
  available: 60,
  reserved: 30,
  journalAvailable: 60,
  journalReserved: 30,
  journalGranted: 100,
  grantEntries: 1,
};

describe('lot checks', () => {
  it('pass a lot whose cache agrees with its journal', () => {
    for (const check of [lotMatchesJournal, lotGrantedOnce, lotNotNegative, lotWithinGrant]) {
      expect(check(wholeLot)).toEqual([]);
    }
  });

  it('name each cached number that differs from the journal', () => {
    expect(lotMatchesJournal({ ...wholeLot, available: 53, reserved: 31 })).toEqual([
      { organizationId: ORG, lotId: 'lot-1', message: 'available 53 but the journal says 60' },
      { organizationId: ORG, lotId: 'lot-1', message: 'reserved 31 but the journal says 30' },
    ]);
    expect(lotMatchesJournal({ ...wholeLot, journalGranted: 90 })).toEqual([
      { organizationId: ORG, lotId: 'lot-1', message: 'granted 100 but the journal granted 90' },
    ]);
  });

  it('name a lot granted twice or never', () => {
    expect(lotGrantedOnce({ ...wholeLot, grantEntries: 2 })[0]?.message).toBe(
      '2 GRANT entries; a lot is granted exactly once',
    );
    expect(lotGrantedOnce({ ...wholeLot, grantEntries: 0 })).toHaveLength(1);
  });

  it('name a negative lot and a lot holding more than it was granted', () => {
    expect(lotNotNegative({ ...wholeLot, reserved: -1 })[0]?.message).toBe('negative lot (60, -1)');
    expect(lotWithinGrant({ ...wholeLot, available: 71 })[0]?.message).toBe('holds 71 + 30, more than the 100 granted');
    expect(lotWithinGrant({ ...wholeLot, available: 70 })).toEqual([]);
  });
});

describe('journal numbering', () => {
  it('passes 1 to n and names a gap or a late start', () => {
    expect(journalNumberedWithoutGaps({ organizationId: ORG, entries: 5, first: 1, last: 5 })).toEqual([]);
    expect(journalNumberedWithoutGaps({ organizationId: ORG, entries: 5, first: 1, last: 6 })).toEqual([
      { organizationId: ORG, message: '5 entries numbered 1 to 6; a journal is numbered 1 to n without gaps' },
    ]);
    expect(journalNumberedWithoutGaps({ organizationId: ORG, entries: 5, first: 2, last: 5 })).toHaveLength(1);
  });
});

describe('reservation checks', () => {
  // Reserved 50, captured 40, refunded 10.
  const captured: ReservationRow = {
    reservationId: 'r-1',
    organizationId: ORG,
    status: 'CAPTURED',
    amount: 50,
    capturedAmount: 40,
    refundedAmount: 10,
    reserved: 50,
    held: 0,
    captured: 40,
    refunded: 10,
  };

  it('pass a settled and a pending reservation that match their entries', () => {
    const pending = {
      ...captured,
      status: 'PENDING',
      capturedAmount: 0,
      refundedAmount: 0,
      held: 50,
      captured: 0,
      refunded: 0,
    };
    for (const r of [captured, pending]) {
      expect(reservationMatchesJournal(r)).toEqual([]);
      expect(reservationStatusAgrees(r)).toEqual([]);
    }
  });

  it('name a settled reservation that still holds credits, and amounts the journal does not show', () => {
    expect(reservationMatchesJournal({ ...captured, held: 5, refunded: 5 }).map((v) => v.message)).toEqual([
      'CAPTURED reservation: held 0 but the journal says 5',
      'CAPTURED reservation: refunded 10 but the journal says 5',
    ]);
  });

  it('name a status that disagrees with what was captured', () => {
    expect(reservationStatusAgrees({ ...captured, status: 'REFUNDED' })[0]?.message).toBe(
      'REFUNDED reservation with 40 captured',
    );
    expect(reservationStatusAgrees({ ...captured, capturedAmount: 0 })[0]?.message).toBe(
      'CAPTURED reservation with 0 captured',
    );
  });

  it('name a lot that gave back more than it held, or still holds credits of a settled reservation', () => {
    const allocation = { reservationId: 'r-1', lotId: 'lot-1', organizationId: ORG, status: 'PENDING', held: 10 };
    expect(allocationHoldsWhatItMay(allocation)).toEqual([]);
    expect(allocationHoldsWhatItMay({ ...allocation, held: -10 })).toHaveLength(1);
    expect(allocationHoldsWhatItMay({ ...allocation, status: 'REFUNDED' })).toEqual([
      {
        organizationId: ORG,
        reservationId: 'r-1',
        lotId: 'lot-1',
        message: 'REFUNDED reservation holds 10 in this lot',
      },
    ]);
  });
});

describe('organization and cycle checks', () => {
  it('passes granted = available + reserved + consumed + expired, and names the books that do not close', () => {
    const totals = { organizationId: ORG, granted: 200, available: 100, reserved: 30, consumed: 60, expired: 10 };
    expect(organizationConserves(totals)).toEqual([]);
    expect(organizationConserves({ ...totals, consumed: 59 })[0]?.message).toBe(
      'granted 200 != available 100 + reserved 30 + consumed 59 + expired 10',
    );
  });

  it('bounds a cycle allowance by the largest plan in force, and names unlabelled allowance lots', () => {
    const cycle = {
      organizationId: ORG,
      cycleStartsAt: '2026-01-01',
      granted: 1000,
      labels: ['free', 'starter'],
      unlabelled: 0,
      inForce: { free: 100, starter: 1000 },
    };
    expect(cycleAllowanceBounded(cycle)).toEqual([]);
    expect(cycleAllowanceBounded({ ...cycle, granted: 1100 })[0]?.message).toMatch(
      /granted 1100 allowance credits, more than the largest plan's 1000$/,
    );
    expect(cycleAllowanceBounded({ ...cycle, unlabelled: 2 })[0]?.message).toBe(
      '2 allowance lot(s) without a plan or billing cycle',
    );
  });

  it('names an allowance lot of a plan the history never put in force, however much it grants', () => {
    // Only free was ever in force: a studio lot is named even though 100 + 50 stays under studio's 20,000.
    const cycle = {
      organizationId: ORG,
      cycleStartsAt: '2026-01-01',
      granted: 150,
      labels: ['free', 'studio'],
      unlabelled: 0,
      inForce: { free: 100 },
    };
    expect(cycleAllowanceBounded(cycle).map((v) => v.message)).toEqual([
      'cycle starting 2026-01-01 has an allowance lot of plan studio, which the plan history never put in force during it',
      "cycle starting 2026-01-01 granted 150 allowance credits, more than the largest plan's 100",
    ]);
    // A cycle in which no plan was in force (before the organization existed) allows nothing.
    expect(cycleAllowanceBounded({ ...cycle, labels: ['free'], granted: 100, inForce: {} }).at(-1)?.message).toMatch(
      /granted 100 allowance credits, more than the largest plan's 0$/,
    );
  });
});

// Cycles as the audit compares them: microseconds since the epoch. January, February, March 2026.
const JAN = String(Date.UTC(2026, 0, 1) * 1000);
const FEB = String(Date.UTC(2026, 1, 1) * 1000);
const MAR = String(Date.UTC(2026, 2, 1) * 1000);
const change = (
  changeNumber: number,
  kind: string,
  planId: string,
  nextPlanId: string | null,
  cycleKey: string,
): PlanChangeRow => ({ organizationId: ORG, changeNumber, kind, planId, nextPlanId, cycleKey });
const ALLOWANCES = { free: 100, starter: 1000, pro: 5000, studio: 20000 };

describe('plans in force, by the plan history', () => {
  it('is the plan the organization was created on, in its first cycle and every later one until a change', () => {
    const history = [change(1, 'CREATED', 'free', null, JAN)];
    expect(plansInForce(history, JAN)).toEqual({ planIds: ['free'], beforeHistory: false });
    expect(plansInForce(history, MAR)).toEqual({ planIds: ['free'], beforeHistory: false });
  });

  it('holds no plan for a cycle before the organization was created', () => {
    expect(plansInForce([change(1, 'CREATED', 'free', null, FEB)], JAN).planIds).toEqual([]);
  });

  it('counts the plan before an immediate upgrade and the plan after it, in the cycle of the upgrade', () => {
    const history = [change(1, 'CREATED', 'free', null, JAN), change(2, 'UPGRADED', 'pro', null, FEB)];
    expect(plansInForce(history, JAN).planIds).toEqual(['free']);
    expect(plansInForce(history, FEB).planIds.sort()).toEqual(['free', 'pro']);
    expect(plansInForce(history, MAR).planIds).toEqual(['pro']);
  });

  it('puts a scheduled plan in force from the start of the cycle it applies in, not before, and the old plan no longer', () => {
    const history = [
      change(1, 'CREATED', 'studio', null, JAN),
      change(2, 'SCHEDULED', 'studio', 'free', JAN),
      change(3, 'APPLIED', 'free', null, MAR),
    ];
    expect(plansInForce(history, JAN).planIds).toEqual(['studio']);
    // February had no change at all (nothing ran then): studio was still in force.
    expect(plansInForce(history, FEB).planIds).toEqual(['studio']);
    expect(plansInForce(history, MAR).planIds).toEqual(['free']);
  });

  it('takes the lots of cycles before the history began as given', () => {
    const history = [change(1, 'INITIAL', 'pro', null, FEB)];
    expect(plansInForce(history, JAN)).toEqual({ planIds: [], beforeHistory: true });
    expect(plansInForce(history, FEB)).toEqual({ planIds: ['pro'], beforeHistory: true });
    expect(plansInForce(history, MAR)).toEqual({ planIds: ['pro'], beforeHistory: false });
  });
});

describe('an organization against its plan history', () => {
  const org = (planId: string, nextPlanId: string | null, history: PlanChangeRow[]) => ({
    organizationId: ORG,
    planId,
    nextPlanId,
    history,
  });
  const lived = [
    change(1, 'CREATED', 'free', null, JAN),
    change(2, 'SCHEDULED', 'free', 'starter', JAN),
    change(3, 'CANCELLED', 'free', null, JAN),
    change(4, 'UPGRADED', 'pro', null, JAN),
    change(5, 'SCHEDULED', 'pro', 'free', JAN),
    change(6, 'APPLIED', 'free', null, MAR),
    change(7, 'SCHEDULED', 'free', 'studio', MAR),
  ];

  it('passes a history every change of which follows from the one before, ending where the organization is', () => {
    expect(organizationPlanMatchesHistory(org('free', 'studio', lived), ALLOWANCES)).toEqual([]);
  });

  it("names an organization whose plan or scheduled plan is not the history's last state", () => {
    expect(organizationPlanMatchesHistory(org('studio', 'studio', lived), ALLOWANCES).map((v) => v.message)).toEqual([
      'plan studio (next studio) but the plan history says free (next studio)',
    ]);
    expect(organizationPlanMatchesHistory(org('free', null, lived), ALLOWANCES)[0]?.message).toMatch(
      /^plan free \(next none\) but the plan history says free \(next studio\)$/,
    );
  });

  it('names an organization without a history, and a history with a gap or a second beginning', () => {
    expect(organizationPlanMatchesHistory(org('free', null, []), ALLOWANCES)[0]?.message).toBe('no plan history');
    const gap = [lived[0]!, { ...lived[1]!, changeNumber: 3 }];
    expect(organizationPlanMatchesHistory(org('free', 'starter', gap), ALLOWANCES)[0]?.message).toBe(
      'plan history of 2 changes is not numbered 1 to 2',
    );
    const reborn = [lived[0]!, change(2, 'CREATED', 'studio', null, JAN)];
    expect(organizationPlanMatchesHistory(org('studio', null, reborn), ALLOWANCES)[0]?.message).toMatch(
      /^plan change 2 \(CREATED to studio/,
    );
  });

  it('names changes the product cannot make: an upgrade to a smaller plan, an applied plan never scheduled, a plan switched by a schedule', () => {
    const cases: PlanChangeRow[][] = [
      [change(1, 'CREATED', 'pro', null, JAN), change(2, 'UPGRADED', 'starter', null, JAN)],
      [change(1, 'CREATED', 'free', null, JAN), change(2, 'APPLIED', 'studio', null, FEB)],
      [change(1, 'CREATED', 'free', 'pro', JAN), change(2, 'APPLIED', 'pro', null, JAN)],
      [change(1, 'CREATED', 'free', null, JAN), change(2, 'SCHEDULED', 'studio', 'pro', JAN)],
      [change(1, 'CREATED', 'free', null, JAN), change(2, 'CANCELLED', 'free', null, JAN)],
    ];
    for (const history of cases) {
      const last = history.at(-1)!;
      expect(
        organizationPlanMatchesHistory(org(last.planId, last.nextPlanId, history), ALLOWANCES).map((v) => v.message),
      ).toEqual([expect.stringMatching(/^plan change 2 .* cannot follow the one before it$/)]);
    }
  });
});

describe('lot identity', () => {
  const lot = { lotId: 'lot-1', organizationId: ORG, type: 'PROMOTIONAL', source: 'GRANT', grantedAs: 'PROMOTIONAL' };

  it('names a lot whose type is not the one its GRANT entry granted', () => {
    expect(lotKeepsGrantedType(lot)).toEqual([]);
    expect(lotKeepsGrantedType({ ...lot, type: 'PURCHASED' }).map((v) => v.message)).toEqual([
      'PURCHASED lot, but its GRANT entry granted PROMOTIONAL credits',
    ]);
    // A grant from before the journal named types is taken as given.
    expect(lotKeepsGrantedType({ ...lot, type: 'PURCHASED', grantedAs: null })).toEqual([]);
  });

  it('names a lot of a type its source never grants: purchases are PURCHASED, allowances SUBSCRIPTION', () => {
    expect(lotKeepsGrantedType({ ...lot, type: 'PURCHASED', source: 'PURCHASE', grantedAs: null })).toEqual([]);
    expect(lotKeepsGrantedType({ ...lot, source: 'PURCHASE', grantedAs: null })[0]?.message).toBe(
      'PROMOTIONAL lot from a PURCHASE grant, which grants PURCHASED credits',
    );
    for (const source of ['CYCLE', 'PLAN_CHANGE']) {
      expect(lotKeepsGrantedType({ ...lot, type: 'SUBSCRIPTION', source, grantedAs: 'SUBSCRIPTION' })).toEqual([]);
      expect(lotKeepsGrantedType({ ...lot, type: 'PURCHASED', source, grantedAs: null })).toHaveLength(1);
    }
  });

  it('names a PURCHASED lot with an expiry: purchased credits never expire', () => {
    const purchase = { lotId: 'lot-1', organizationId: ORG, expiresAt: '2026-02-01T00:00:00Z' };
    expect(purchasedLotNeverExpires({ ...purchase, expiresAt: null })).toEqual([]);
    expect(purchasedLotNeverExpires(purchase)[0]?.message).toBe(
      'PURCHASED lot expires at 2026-02-01T00:00:00Z; purchased credits never expire',
    );
  });
});

describe('consumption order replay', () => {
  const at = '2026-01-10T00:00:00.000Z';
  const lots = [
    {
      lotId: 'sub',
      organizationId: ORG,
      type: 'SUBSCRIPTION' as const,
      expiresAt: '2026-02-01T00:00:00.000Z',
      createdAt: at,
      firstExpiredAt: null,
    },
    {
      lotId: 'bought',
      organizationId: ORG,
      type: 'PURCHASED' as const,
      expiresAt: null,
      createdAt: at,
      firstExpiredAt: null,
    },
  ];
  const grants = [
    { lotId: 'sub', reservationId: null, kind: 'GRANT', availableChange: 30, createdAt: at },
    { lotId: 'bought', reservationId: null, kind: 'GRANT', availableChange: 100, createdAt: at },
  ];
  const reserve = (lotId: string, amount: number) => ({
    lotId,
    reservationId: 'r-1',
    kind: 'RESERVE',
    availableChange: -amount,
    createdAt: '2026-01-11T00:00:00.000Z',
  });

  it('passes a reservation that emptied the subscription lot before taking purchased credits', () => {
    expect(reservationsFollowConsumptionOrder(lots, [...grants, reserve('sub', 30), reserve('bought', 5)])).toEqual([]);
  });

  it('names a reservation that took purchased credits while subscription credits were left', () => {
    expect(reservationsFollowConsumptionOrder(lots, [...grants, reserve('sub', 20), reserve('bought', 15)])).toEqual([
      {
        organizationId: ORG,
        reservationId: 'r-1',
        message: 'skipped 10 credits of lot sub, which comes first in consumption order',
      },
    ]);
  });

  // A subscription lot that expires at the very instant of a reservation, and whose EXPIRE entry is
  // written at that instant after the reservation: the lot may have reached its own expiry (not
  // spendable) or been closed early by that write (spendable just before). Both readings pass.
  describe('at the instant a lot expires, with its EXPIRE entry written then', () => {
    const instant = '2026-01-11T00:00:00.000Z';
    const closing = [{ ...lots[0]!, expiresAt: instant, firstExpiredAt: instant }, lots[1]!];
    const atInstant = (lotId: string, amount: number, reservationId: string) => ({
      ...reserve(lotId, amount),
      reservationId,
      createdAt: instant,
    });
    const expire = (amount: number) => ({
      lotId: 'sub',
      reservationId: null,
      kind: 'EXPIRE',
      availableChange: -amount,
      createdAt: instant,
    });

    it('passes a reservation that skipped the lot, and one that used it', () => {
      expect(
        reservationsFollowConsumptionOrder(closing, [...grants, atInstant('bought', 5, 'r-1'), expire(30)]),
      ).toEqual([]);
      expect(reservationsFollowConsumptionOrder(closing, [...grants, atInstant('sub', 10, 'r-2'), expire(20)])).toEqual(
        [],
      );
    });

    it('still names a reservation that skipped a lot expiring later', () => {
      expect(reservationsFollowConsumptionOrder(lots, [...grants, atInstant('bought', 5, 'r-1')])[0]?.message).toBe(
        'skipped 30 credits of lot sub, which comes first in consumption order',
      );
    });
  });

  it('names a reservation that took more than a lot held', () => {
    expect(reservationsFollowConsumptionOrder(lots, [...grants, reserve('sub', 31)])[0]?.message).toBe(
      'took credits from a lot that could not give them (sub)',
    );
  });
});
