import { and, desc, eq, lt, sql } from 'drizzle-orm';
import type { Queryable, Tx } from '../db/client.ts';
import { creditLots, ledgerEntries } from '../db/schema.ts';
import { invariant } from './errors.ts';

export type EntryKind = (typeof ledgerEntries.$inferSelect)['kind'];
export type LedgerEntry = typeof ledgerEntries.$inferSelect;

/** One movement of credits within one lot, before it is written. */
export interface EntryDraft {
  organizationId: string;
  lotId: string;
  reservationId?: string | null;
  kind: EntryKind;
  availableChange: number;
  reservedChange: number;
  reason?: string | null;
  createdAt: Date;
}

/** The shape each kind of entry must have: which way it moves available and reserved credits. */
const ENTRY_SHAPE: Record<EntryKind, (available: number, reserved: number) => boolean> = {
  GRANT: (a, r) => a > 0 && r === 0,
  RESERVE: (a, r) => a < 0 && r === -a,
  CAPTURE: (a, r) => a === 0 && r < 0,
  REFUND: (a, r) => a > 0 && r === -a,
  EXPIRE: (a, r) => a < 0 && r === 0,
};

/**
 * The only way credits move: each draft is checked against its kind, applied to its lot's cached
 * balances with a guarded update, and appended to the journal, all in the caller's transaction.
 * The caller holds the organization's lock, so a guard that fails is a bug, not a race.
 */
export async function postEntries(tx: Tx, drafts: EntryDraft[]): Promise<void> {
  if (drafts.length === 0) return;
  const changeByLot = new Map<string, { available: number; reserved: number }>();
  for (const draft of drafts) {
    invariant(
      ENTRY_SHAPE[draft.kind](draft.availableChange, draft.reservedChange),
      `malformed ${draft.kind} entry (${draft.availableChange}, ${draft.reservedChange})`,
    );
    const change = changeByLot.get(draft.lotId) ?? { available: 0, reserved: 0 };
    change.available += draft.availableChange;
    change.reserved += draft.reservedChange;
    changeByLot.set(draft.lotId, change);
  }
  for (const [lotId, change] of changeByLot) {
    if (change.available === 0 && change.reserved === 0) continue;
    const updated = await tx
      .update(creditLots)
      .set({
        available: sql`${creditLots.available} + ${change.available}`,
        reserved: sql`${creditLots.reserved} + ${change.reserved}`,
      })
      .where(
        and(
          eq(creditLots.id, lotId),
          sql`${creditLots.available} + ${change.available} >= 0`,
          sql`${creditLots.reserved} + ${change.reserved} >= 0`,
        ),
      )
      .returning({ id: creditLots.id });
    invariant(updated.length === 1, `lot ${lotId} would go negative`);
  }
  await tx.insert(ledgerEntries).values(drafts);
}

export interface LedgerPage {
  entries: LedgerEntry[];
  hasNextPage: boolean;
}

/** Entries of one organization, newest first, strictly older than the entry `beforeId`. */
export async function listLedgerEntries(
  db: Queryable,
  organizationId: string,
  first: number,
  beforeId: number | null,
): Promise<LedgerPage> {
  const rows = await db
    .select()
    .from(ledgerEntries)
    .where(
      and(
        eq(ledgerEntries.organizationId, organizationId),
        beforeId === null ? undefined : lt(ledgerEntries.id, beforeId),
      ),
    )
    .orderBy(desc(ledgerEntries.id))
    .limit(first + 1);
  return { entries: rows.slice(0, first), hasNextPage: rows.length > first };
}
