import { and, eq, gt, or, sql } from 'drizzle-orm';
import type { Queryable } from '../db/client.ts';
import { creditLots, organizations } from '../db/schema.ts';
import { accountPriority, isExpired } from './allocation.ts';
import { invariant } from './errors.ts';
import type { EntryDraft } from './journal.ts';
import { ACCOUNT_TYPES, type AccountType } from './enums.ts';
import { CONSUMPTION_ORDER, notExpired, type CreditLot } from './lots.ts';

export interface CreditAccount {
  type: AccountType;
  priority: number;
  available: number;
  reserved: number;
  /** Unexpired lots that still hold credits, in consumption order. */
  lots: CreditLot[];
}

export interface Balance {
  organizationId: string;
  available: number;
  reserved: number;
  accounts: CreditAccount[];
  version: number;
}

/**
 * The organization's balance as of one snapshot: a single statement reads the version and the
 * lots together, so the numbers and the version always agree.
 */
export async function getBalance(db: Queryable, organizationId: string, now: Date): Promise<Balance | null> {
  const rows = await db
    .select({ version: organizations.balanceVersion, lot: creditLots })
    .from(organizations)
    .leftJoin(
      creditLots,
      and(
        eq(creditLots.organizationId, organizations.id),
        or(gt(creditLots.reserved, 0), and(gt(creditLots.available, 0), notExpired(now))),
      ),
    )
    .where(eq(organizations.id, organizationId))
    .orderBy(...CONSUMPTION_ORDER);
  const [first] = rows;
  if (!first) return null;
  return balanceOf(
    organizationId,
    rows.flatMap(({ lot }) => (lot ? [lot] : [])),
    first.version,
    now,
  );
}

/**
 * The balance that lots in consumption order make at `now`. Credits held by a pending
 * reservation count as reserved even when their lot has expired meanwhile (a refund will expire
 * them); available credits count only in unexpired lots. Lots that hold nothing are left out.
 */
export function balanceOf(organizationId: string, lots: CreditLot[], version: number, now: Date): Balance {
  const accounts = ACCOUNT_TYPES.map(
    (type): CreditAccount => ({ type, priority: accountPriority(type), available: 0, reserved: 0, lots: [] }),
  );
  for (const lot of lots) {
    const account = accounts[accountPriority(lot.type) - 1]!;
    account.reserved += lot.reserved;
    if (isExpired(lot, now) || (lot.available === 0 && lot.reserved === 0)) continue;
    account.available += lot.available;
    account.lots.push(lot);
  }
  return {
    organizationId,
    available: accounts.reduce((sum, account) => sum + account.available, 0),
    reserved: accounts.reduce((sum, account) => sum + account.reserved, 0),
    accounts,
    version,
  };
}

/**
 * Every lot that counts in the balance (holding available or reserved credits, expired or not),
 * in consumption order: what a write reads together with its lock, so that it can allocate from
 * them and tell the balance it leaves without reading it again.
 */
export function balanceLots(tx: Queryable, organizationId: string): Promise<CreditLot[]> {
  return tx
    .select()
    .from(creditLots)
    .where(
      and(eq(creditLots.organizationId, organizationId), or(gt(creditLots.available, 0), gt(creditLots.reserved, 0))),
    )
    .orderBy(...CONSUMPTION_ORDER);
}

/** The lots as they are after the drafts moved credits in them (the lots passed are not changed). */
export function afterPosting(lots: CreditLot[], drafts: EntryDraft[]): CreditLot[] {
  const changed = new Map(lots.map((lot) => [lot.id, { ...lot }]));
  for (const draft of drafts) {
    const lot = changed.get(draft.lotId);
    invariant(lot, `lot ${draft.lotId} moved credits without being read`);
    lot.available += draft.availableChange;
    lot.reserved += draft.reservedChange;
  }
  return [...changed.values()];
}

/** Spendable credits now, all account types together. */
export async function availableCredits(db: Queryable, organizationId: string, now: Date): Promise<number> {
  const [row] = await db
    .select({ available: sql<string>`coalesce(sum(${creditLots.available}), 0)::bigint` })
    .from(creditLots)
    .where(and(eq(creditLots.organizationId, organizationId), gt(creditLots.available, 0), notExpired(now)));
  return Number(row?.available ?? 0);
}
