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

/** The allowance lots of one organization's billing cycle, summed. */
export interface CycleAllowanceRow {
  organizationId: string;
  cycleStartsAt: Timestamp | null;
  granted: number;
  /** The largest monthly allowance among the plans the lots name; null when none is known. */
  largest: number | null;
  /** Allowance lots that name no plan or no cycle. */
  unlabelled: number;
}

/** Each billing cycle's allowance stays within the largest plan in force, and is labelled. */
export function cycleAllowanceBounded(cycle: CycleAllowanceRow): Violation[] {
  if (cycle.unlabelled > 0) {
    return [finding(cycle, `${cycle.unlabelled} allowance lot(s) without a plan or billing cycle`)];
  }
  return cycle.granted > (cycle.largest ?? 0)
    ? [
        finding(
          cycle,
          `cycle starting ${String(cycle.cycleStartsAt)} granted ${cycle.granted} allowance credits, more than the largest plan's ${cycle.largest}`,
        ),
      ]
    : [];
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
