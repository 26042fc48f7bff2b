import { accountPriority } from './allocation.ts';
import type { Timestamp, Violation } from './audit-checks.ts';
import type { AccountType } from './enums.ts';

// The audit's replay of the consumption order: the journal is walked in order, and each
// reservation is checked against the lots as they stood when it was made. Pure, like the other
// checks; src/ledger/audit.ts reads the rows.

/** A lot as the replay needs it. */
export interface OrderLotRow {
  lotId: string;
  organizationId: string;
  type: AccountType;
  expiresAt: Timestamp | null;
  createdAt: Timestamp;
  /** When the lot's first EXPIRE entry was written, if it has one. */
  firstExpiredAt: Timestamp | null;
}

/** An entry as the replay needs it, in journal order. */
export interface OrderEntryRow {
  lotId: string;
  reservationId: string | null;
  kind: string;
  availableChange: number;
  createdAt: Timestamp;
}

interface ReplayLot {
  id: string;
  organizationId: string;
  priority: number;
  expiresAtMs: number;
  createdAtMs: number;
  firstExpiredAtMs: number | null;
  available: number;
}

const millis = (at: Timestamp) => new Date(at).getTime();

/**
 * Lots that tie here may be taken in either order (the id breaks the tie in the ledger, but the
 * audit does not insist on it): only type, expiry and age are the product's rule.
 */
function compareLots(a: ReplayLot, b: ReplayLot): number {
  return a.priority - b.priority || a.expiresAtMs - b.expiresAtMs || a.createdAtMs - b.createdAtMs;
}

/**
 * Replays the journal and checks each reservation against the consumption order at the moment
 * it was made: every spendable lot that comes before the last lot it took from was emptied, and
 * among lots that tie with that last lot at most one was left partly used.
 */
export function reservationsFollowConsumptionOrder(
  lotRows: readonly OrderLotRow[],
  entries: readonly OrderEntryRow[],
): Violation[] {
  const lots = new Map<string, ReplayLot>();
  for (const row of lotRows) {
    lots.set(row.lotId, {
      id: row.lotId,
      organizationId: row.organizationId,
      priority: accountPriority(row.type) || 99,
      expiresAtMs: row.expiresAt === null ? Number.POSITIVE_INFINITY : millis(row.expiresAt),
      createdAtMs: millis(row.createdAt),
      firstExpiredAtMs: row.firstExpiredAt === null ? null : millis(row.firstExpiredAt),
      available: 0,
    });
  }
  // Each reservation is checked against its own organization's lots only.
  const lotsByOrganization = new Map<string, ReplayLot[]>();
  for (const lot of lots.values()) {
    const list = lotsByOrganization.get(lot.organizationId) ?? [];
    list.push(lot);
    lotsByOrganization.set(lot.organizationId, list);
  }
  const violations: Violation[] = [];
  for (let i = 0; i < entries.length; ) {
    const entry = entries[i]!;
    if (entry.kind !== 'RESERVE') {
      const lot = lots.get(entry.lotId);
      if (lot) lot.available += entry.availableChange;
      i += 1;
      continue;
    }
    // One reservation's RESERVE entries are written by one statement, so they are consecutive.
    const taken = new Map<string, number>();
    let j = i;
    while (j < entries.length && entries[j]!.kind === 'RESERVE' && entries[j]!.reservationId === entry.reservationId) {
      const lotId = entries[j]!.lotId;
      taken.set(lotId, (taken.get(lotId) ?? 0) - entries[j]!.availableChange);
      j += 1;
    }
    const problem = checkOrder(lots, lotsByOrganization, taken, millis(entry.createdAt));
    if (problem) {
      violations.push({
        organizationId: lots.get(entry.lotId)?.organizationId ?? '',
        reservationId: String(entry.reservationId),
        message: problem,
      });
    }
    for (const [lotId, amount] of taken) {
      const lot = lots.get(lotId);
      if (lot) lot.available -= amount;
    }
    i = j;
  }
  return violations;
}

/**
 * Whether a lot could be spent at `atMs`: surely while it has credits and its expiry is later. At
 * the very instant of its expiry, with its EXPIRE entry written at that instant too, either
 * reading fits the rules: a lot closed early has its expiry moved to the moment it closed, so a
 * reservation made just before the closing could spend it, while a lot that reached its own
 * expiry could not be spent then. Such a lot may be used, and may be skipped.
 */
function spendableAt(lot: ReplayLot, atMs: number): 'surely' | 'possibly' | false {
  if (lot.available <= 0) return false;
  if (lot.expiresAtMs > atMs) return 'surely';
  return lot.expiresAtMs === atMs && lot.firstExpiredAtMs === atMs ? 'possibly' : false;
}

function checkOrder(
  lots: Map<string, ReplayLot>,
  lotsByOrganization: Map<string, ReplayLot[]>,
  taken: Map<string, number>,
  atMs: number,
): string | null {
  const organizationId = lots.get(taken.keys().next().value!)?.organizationId ?? '';
  const spendable = (lotsByOrganization.get(organizationId) ?? []).filter((lot) => spendableAt(lot, atMs) !== false);
  const used = [...taken.keys()].map((id) => lots.get(id));
  for (const lot of used) {
    if (!lot || !spendable.includes(lot) || lot.available < taken.get(lot.id)!) {
      return `took credits from a lot that could not give them (${lot?.id ?? 'unknown lot'})`;
    }
  }
  const last = (used as ReplayLot[]).reduce((a, b) => (compareLots(a, b) >= 0 ? a : b));
  let partlyUsedTies = 0;
  for (const lot of spendable) {
    const order = compareLots(lot, last);
    const amount = taken.get(lot.id) ?? 0;
    if (order < 0 && amount < lot.available && spendableAt(lot, atMs) === 'surely') {
      return `skipped ${lot.available - amount} credits of lot ${lot.id}, which comes first in consumption order`;
    }
    if (order === 0 && amount > 0 && amount < lot.available) partlyUsedTies += 1;
  }
  return partlyUsedTies > 1 ? `left ${partlyUsedTies} tied lots partly used` : null;
}
