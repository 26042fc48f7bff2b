// The audit's invariants, one small check each, over typed rows that src/ledger/audit.ts reads.
// Every check returns the findings for the rows it is given (none when they are whole), so each
// can be tried on hand-built rows (test/unit/audit-checks.test.ts). Where a query narrows the
// rows to candidates (a whole-database audit reads millions of entries), the check still states
// the rule; comparisons of timestamps stay in SQL, which has their full (microsecond) precision.

/** One place where the ledger disagrees with itself. */
export interface Violation {
  organizationId: string;
  lotId?: string;
  reservationId?: string;
  message: string;
}

/** A timestamp as the driver returned it (a Date or text), shown as it came. */
export type Timestamp = Date | string;

function finding(
  at: { organizationId: string; lotId?: string | null; reservationId?: string | null },
  message: string,
): Violation {
  return {
    organizationId: at.organizationId,
    ...(at.lotId ? { lotId: at.lotId } : {}),
    ...(at.reservationId ? { reservationId: at.reservationId } : {}),
    message,
  };
}

// --- lots --------------------------------------------------------------------------------------

/** A lot's cached numbers next to the sums of its journal. */
export interface LotRow {
  lotId: string;
  organizationId: string;
  granted: number;
  available: number;
  reserved: number;
  journalAvailable: number;
  journalReserved: number;
  journalGranted: number;
  grantEntries: number;
}

/** The cached available, reserved and granted credits equal what the journal says. */
export function lotMatchesJournal(lot: LotRow): Violation[] {
  const found: Violation[] = [];
  if (lot.available !== lot.journalAvailable) {
    found.push(finding(lot, `available ${lot.available} but the journal says ${lot.journalAvailable}`));
  }
  if (lot.reserved !== lot.journalReserved) {
    found.push(finding(lot, `reserved ${lot.reserved} but the journal says ${lot.journalReserved}`));
  }
  if (lot.granted !== lot.journalGranted) {
    found.push(finding(lot, `granted ${lot.granted} but the journal granted ${lot.journalGranted}`));
  }
  return found;
}

export function lotGrantedOnce(lot: LotRow): Violation[] {
  return lot.grantEntries === 1
    ? []
    : [finding(lot, `${lot.grantEntries} GRANT entries; a lot is granted exactly once`)];
}

export function lotNotNegative(lot: LotRow): Violation[] {
  return lot.available < 0 || lot.reserved < 0
    ? [finding(lot, `negative lot (${lot.available}, ${lot.reserved})`)]
    : [];
}

/** What a lot still holds never exceeds what it was granted. */
export function lotWithinGrant(lot: LotRow): Violation[] {
  return lot.available + lot.reserved > lot.granted
    ? [finding(lot, `holds ${lot.available} + ${lot.reserved}, more than the ${lot.granted} granted`)]
    : [];
}

export const LOT_CHECKS = [lotMatchesJournal, lotGrantedOnce, lotNotNegative, lotWithinGrant];

// --- entries and journals ------------------------------------------------------------------------

/** An entry the query found malformed or crossing organizations (its shape is judged in SQL). */
export interface MalformedEntryRow {
  entryId: string;
  organizationId: string;
  lotId: string;
  reservationId: string | null;
  kind: string;
  availableChange: number;
  reservedChange: number;
  lotOrganizationId: string | null;
  reservationOrganizationId: string | null;
}

/** Every entry could have been written by postEntries: right shape, one organization throughout. */
export function entryWellFormed(entry: MalformedEntryRow): Violation[] {
  return [
    finding(
      entry,
      `entry ${entry.entryId} (${entry.kind} ${entry.availableChange}, ${entry.reservedChange}) is malformed ` +
        `or crosses organizations (lot of ${entry.lotOrganizationId ?? 'another organization'}, ` +
        `reservation of ${entry.reservationOrganizationId ?? (entry.reservationId ? 'another organization' : 'none')})`,
    ),
  ];
}

/** How an organization's entries are numbered. */
export interface JournalNumberingRow {
  organizationId: string;
  entries: number;
  first: number;
  last: number;
}

/**
 * Each organization numbers its entries 1, 2, 3, … (the unique index rules out repeats), so a
 * journal of n entries ends at number n; anything else is a gap, a lost entry or a foreign writer.
 */
export function journalNumberedWithoutGaps(journal: JournalNumberingRow): Violation[] {
  return journal.first === 1 && journal.last === journal.entries
    ? []
    : [
        finding(
          journal,
          `${journal.entries} entries numbered ${journal.first} to ${journal.last}; a journal is numbered 1 to n without gaps`,
        ),
      ];
}

// --- reservations --------------------------------------------------------------------------------

/** A reservation's recorded amounts next to the sums of its entries. */
export interface ReservationRow {
  reservationId: string;
  organizationId: string;
  status: string;
  amount: number;
  capturedAmount: number;
  refundedAmount: number;
  /** Sums of its entries: reserved by RESERVE, still held, consumed by CAPTURE, given back by REFUND. */
  reserved: number;
  held: number;
  captured: number;
  refunded: number;
}

/** What a reservation says it reserved, holds, captured and refunded is what its entries did. */
export function reservationMatchesJournal(r: ReservationRow): Violation[] {
  const expected = {
    reserved: r.amount,
    held: r.status === 'PENDING' ? r.amount : 0,
    captured: r.capturedAmount,
    refunded: r.refundedAmount,
  };
  return (Object.keys(expected) as Array<keyof typeof expected>)
    .filter((name) => r[name] !== expected[name])
    .map((name) => finding(r, `${r.status} reservation: ${name} ${expected[name]} but the journal says ${r[name]}`));
}

/** settle() marks a reservation CAPTURED exactly when it consumed something. */
export function reservationStatusAgrees(r: ReservationRow): Violation[] {
  const wrong =
    (r.status === 'CAPTURED' && r.capturedAmount === 0) || (r.status === 'REFUNDED' && r.capturedAmount !== 0);
  return wrong ? [finding(r, `${r.status} reservation with ${r.capturedAmount} captured`)] : [];
}

export const RESERVATION_CHECKS = [reservationMatchesJournal, reservationStatusAgrees];

/** What one reservation still holds in one lot, by the sum of its entries there. */
export interface AllocationRow {
  reservationId: string;
  lotId: string;
  organizationId: string;
  status: string;
  held: number;
}

/**
 * Lot by lot within a reservation: a lot never gives back more than the reservation took from it,
 * and a settled reservation holds nothing anywhere (totals alone could hide a swap).
 */
export function allocationHoldsWhatItMay(allocation: AllocationRow): Violation[] {
  const wrong = allocation.held < 0 || (allocation.status !== 'PENDING' && allocation.held !== 0);
  return wrong ? [finding(allocation, `${allocation.status} reservation holds ${allocation.held} in this lot`)] : [];
}

// --- organizations -------------------------------------------------------------------------------

export interface OrganizationTotalsRow {
  organizationId: string;
  granted: number;
  available: number;
  reserved: number;
  consumed: number;
  expired: number;
}

/** Conservation: every credit granted is available, reserved, consumed or expired. */
export function organizationConserves(o: OrganizationTotalsRow): Violation[] {
  return o.granted === o.available + o.reserved + o.consumed + o.expired
    ? []
    : [
        finding(
          o,
          `granted ${o.granted} != available ${o.available} + reserved ${o.reserved} + consumed ${o.consumed} + expired ${o.expired}`,
        ),
      ];
}

// --- lifecycle -----------------------------------------------------------------------------------

/** A lot that has an EXPIRE entry, with what it holds now. */
export interface ExpiredLotRow {
  lotId: string;
  organizationId: string;
  available: number;
}

/**
 * Once a lot has expired, a refund into it expires again at once: it never holds spendable
 * credits again. A lot that looks unexpired after an EXPIRE is how credits get minted.
 */
export function expiredLotStaysClosed(lot: ExpiredLotRow): Violation[] {
  return lot.available > 0 ? [finding(lot, `holds ${lot.available} spendable credits after it expired`)] : [];
}

/** An EXPIRE entry written before its lot's expiry (the comparison is made in SQL). */
export interface EarlyExpiryRow {
  entryId: string;
  lotId: string;
  organizationId: string;
  lotExpiresAt: Timestamp | null;
}

/** Closing a lot early moves its expiry to the moment it closed, so every EXPIRE is at or after it. */
export function expiryNotBeforeLotExpiry(entry: EarlyExpiryRow): Violation[] {
  return [
    finding(
      entry,
      `entry ${entry.entryId} expires credits before the lot's expiry (${String(entry.lotExpiresAt ?? 'never')})`,
    ),
  ];
}

/** A reservation set to expire more than 24 hours after it was created (compared in SQL). */
export interface OverlongReservationRow {
  reservationId: string;
  organizationId: string;
  expiresAt: Timestamp;
}

/** No reservation may hold credits for longer than a day. */
export function reservationLifetimeBounded(r: OverlongReservationRow): Violation[] {
  return [finding(r, `may stay pending until ${String(r.expiresAt)}, more than 24 hours after it was created`)];
}

/** A lot whose expiry passed before the last known sweep and still holds spendable credits. */
export interface UnsweptLotRow {
  lotId: string;
  organizationId: string;
  available: number;
  expiresAt: Timestamp;
}

export function expiredLotSwept(lot: UnsweptLotRow): Violation[] {
  return lot.available > 0
    ? [finding(lot, `holds ${lot.available} spendable credits though it expired at ${String(lot.expiresAt)}`)]
    : [];
}

/** A reservation still pending more than 24 hours after creation, before the last known sweep. */
export interface StalePendingRow {
  reservationId: string;
  organizationId: string;
  createdAt: Timestamp;
}

export function oldReservationSettled(r: StalePendingRow): Violation[] {
  return [finding(r, `still pending more than 24 hours after it was created (${String(r.createdAt)})`)];
}

// --- plans and lot identity ----------------------------------------------------------------------

/**
 * A billing cycle's start as the audit compares it: microseconds since the epoch, in decimal, as
 * SQL computed them (a Date would lose the microseconds).
 */
export type CycleKey = string;

const cycleOrder = (a: CycleKey, b: CycleKey) => {
  const difference = BigInt(a) - BigInt(b);
  return difference === 0n ? 0 : difference < 0n ? -1 : 1;
};

/** One row of an organization's plan history: the state after the change. */
export interface PlanChangeRow {
  organizationId: string;
  changeNumber: number;
  kind: string;
  /** The plan in force after the change, and the one scheduled for the next cycle. */
  planId: string;
  nextPlanId: string | null;
  /** The billing cycle the change belongs to (for APPLIED, the cycle it starts). */
  cycleKey: CycleKey;
}

/** Kinds that start a history: the organization's creation, or the state it was in when the history began. */
const HISTORY_STARTS = ['CREATED', 'INITIAL'];

/** The plans in force during one billing cycle, by the plan history, and whether the history covers it. */
export interface PlansInForce {
  planIds: string[];
  /**
   * The cycle began before the history did (the history starts with an INITIAL row at or after
   * it): what happened then is taken as given, so the cycle's lots' own plan labels count as in
   * force too.
   */
  beforeHistory: boolean;
}

/**
 * The plans in force at some moment of the cycle: each plan a change of this cycle put in force,
 * and the plan in force when the cycle began, unless the cycle began with a plan taking effect at
 * its start (a scheduled change applied) or with the organization's creation. `history` is one
 * organization's, in change order.
 */
export function plansInForce(history: readonly PlanChangeRow[], cycleKey: CycleKey): PlansInForce {
  const during = history.filter((change) => cycleOrder(change.cycleKey, cycleKey) === 0);
  const before = history.filter((change) => cycleOrder(change.cycleKey, cycleKey) < 0).at(-1);
  const startsFresh = during.some((change) => change.kind === 'APPLIED' || change.kind === 'CREATED');
  const planIds = new Set(during.map((change) => change.planId));
  if (before && !startsFresh) planIds.add(before.planId);
  const beforeHistory = history.some(
    (change) => change.kind === 'INITIAL' && cycleOrder(change.cycleKey, cycleKey) >= 0,
  );
  return { planIds: [...planIds], beforeHistory };
}

/** One billing cycle's allowance lots (sources CYCLE and PLAN_CHANGE), next to the plan history. */
export interface CycleAllowanceRow {
  organizationId: string;
  cycleStartsAt: Timestamp | null;
  /** Credits granted by the cycle's allowance lots, together. */
  granted: number;
  /** The plans the lots name (each once). */
  labels: string[];
  /** Allowance lots that name no plan or no cycle. */
  unlabelled: number;
  /** The monthly allowance of each plan in force during the cycle, by the plan history. */
  inForce: Record<string, number>;
}

/**
 * Within one billing cycle, the allowance credits granted never exceed the largest monthly
 * allowance of the plans in force during it, and every allowance lot names a plan that was in
 * force then. "In force" is the plan history's word, never the lots' own labels.
 */
export function cycleAllowanceBounded(cycle: CycleAllowanceRow): Violation[] {
  if (cycle.unlabelled > 0) {
    return [finding(cycle, `${cycle.unlabelled} allowance lot(s) without a plan or billing cycle`)];
  }
  const found = cycle.labels
    .filter((planId) => !(planId in cycle.inForce))
    .map((planId) =>
      finding(
        cycle,
        `cycle starting ${String(cycle.cycleStartsAt)} has an allowance lot of plan ${planId}, which the plan history never put in force during it`,
      ),
    );
  const allowances = Object.values(cycle.inForce);
  const largest = allowances.length === 0 ? 0 : Math.max(...allowances);
  if (cycle.granted > largest) {
    found.push(
      finding(
        cycle,
        `cycle starting ${String(cycle.cycleStartsAt)} granted ${cycle.granted} allowance credits, more than the largest plan's ${largest}`,
      ),
    );
  }
  return found;
}

/** An organization's plan columns next to its plan history (in change order). */
export interface OrganizationPlanRow {
  organizationId: string;
  planId: string;
  nextPlanId: string | null;
  history: PlanChangeRow[];
}

/**
 * Whether a change can follow the one before it: a schedule or a cancellation leaves the plan in
 * force alone, an applied change puts the scheduled plan in force at a later cycle, an upgrade
 * puts a plan with a larger allowance in force and cancels what was scheduled.
 */
function followsFrom(change: PlanChangeRow, previous: PlanChangeRow, allowances: Record<string, number>): boolean {
  switch (change.kind) {
    case 'SCHEDULED':
      return change.planId === previous.planId && change.nextPlanId !== null;
    case 'CANCELLED':
      return change.planId === previous.planId && change.nextPlanId === null && previous.nextPlanId !== null;
    case 'APPLIED':
      return (
        change.planId === previous.nextPlanId &&
        change.nextPlanId === null &&
        cycleOrder(change.cycleKey, previous.cycleKey) > 0
      );
    case 'UPGRADED':
      return change.nextPlanId === null && (allowances[change.planId] ?? 0) > (allowances[previous.planId] ?? Infinity);
    default:
      return false;
  }
}

/**
 * The plan history is numbered 1 to n, starts with the organization's creation (or the state it
 * was in when the history began) and only there, each change follows from the one before, and
 * its last state is the organization's plan and scheduled plan.
 */
export function organizationPlanMatchesHistory(
  org: OrganizationPlanRow,
  allowances: Record<string, number>,
): Violation[] {
  const { history } = org;
  const last = history.at(-1);
  if (!last) return [finding(org, 'no plan history')];
  const found: Violation[] = [];
  if (history.some((change, index) => change.changeNumber !== index + 1)) {
    found.push(finding(org, `plan history of ${history.length} changes is not numbered 1 to ${history.length}`));
  }
  if (!HISTORY_STARTS.includes(history[0]!.kind)) {
    found.push(finding(org, `plan history starts with ${history[0]!.kind}, not with the organization's creation`));
  }
  for (let i = 1; i < history.length; i += 1) {
    if (!followsFrom(history[i]!, history[i - 1]!, allowances)) {
      found.push(
        finding(
          org,
          `plan change ${history[i]!.changeNumber} (${history[i]!.kind} to ${history[i]!.planId}, next ${history[i]!.nextPlanId ?? 'none'}) cannot follow the one before it`,
        ),
      );
    }
  }
  if (org.planId !== last.planId || org.nextPlanId !== last.nextPlanId) {
    found.push(
      finding(
        org,
        `plan ${org.planId} (next ${org.nextPlanId ?? 'none'}) but the plan history says ${last.planId} (next ${last.nextPlanId ?? 'none'})`,
      ),
    );
  }
  return found;
}

/** A lot whose type the query found at odds with its source or with its GRANT entry. */
export interface LotIdentityRow {
  lotId: string;
  organizationId: string;
  type: string;
  source: string;
  /** The account type its GRANT entry names; null for grants written before the journal named one. */
  grantedAs: string | null;
}

/** The account type each source grants; operators' grants (GRANT) may be of any type. */
const TYPE_OF_SOURCE: Record<string, string> = {
  PURCHASE: 'PURCHASED',
  CYCLE: 'SUBSCRIPTION',
  PLAN_CHANGE: 'SUBSCRIPTION',
};

/** A lot keeps the account type it was granted as, which its source allows. */
export function lotKeepsGrantedType(lot: LotIdentityRow): Violation[] {
  const found: Violation[] = [];
  if (lot.grantedAs !== null && lot.grantedAs !== lot.type) {
    found.push(finding(lot, `${lot.type} lot, but its GRANT entry granted ${lot.grantedAs} credits`));
  }
  const expected = TYPE_OF_SOURCE[lot.source];
  if (expected !== undefined && expected !== lot.type) {
    found.push(finding(lot, `${lot.type} lot from a ${lot.source} grant, which grants ${expected} credits`));
  }
  return found;
}

/** A PURCHASED lot the query found with an expiry. */
export interface ExpiringPurchaseRow {
  lotId: string;
  organizationId: string;
  expiresAt: Timestamp | null;
}

/** Purchased credits never expire, and no lot of them is ever closed early. */
export function purchasedLotNeverExpires(lot: ExpiringPurchaseRow): Violation[] {
  return lot.expiresAt === null
    ? []
    : [finding(lot, `PURCHASED lot expires at ${String(lot.expiresAt)}; purchased credits never expire`)];
}
