import { and, eq, gt, or, sql } from 'drizzle-orm';
import type { Queryable } from '../db/client.ts';
import { creditLots, organizations } from '../db/schema.ts';
import { ACCOUNT_TYPES, accountPriority, isExpired, notExpired, type AccountType, type CreditLot } from './lots.ts';

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
 * lots together, so the numbers and the version always agree. Credits held by a pending
 * reservation count as reserved even when their lot has expired meanwhile (a refund will expire
 * them); available credits count only in unexpired lots.
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
    .orderBy(creditLots.type, sql`${creditLots.expiresAt} asc nulls last`, creditLots.createdAt, creditLots.id);
  const [first] = rows;
  if (!first) return null;
  const accounts = ACCOUNT_TYPES.map(
    (type): CreditAccount => ({ type, priority: accountPriority(type), available: 0, reserved: 0, lots: [] }),
  );
  for (const { lot } of rows) {
    if (!lot) continue;
    const account = accounts[accountPriority(lot.type) - 1]!;
    account.reserved += lot.reserved;
    if (isExpired(lot, now)) continue;
    account.available += lot.available;
    account.lots.push(lot);
  }
  return {
    organizationId,
    available: accounts.reduce((sum, account) => sum + account.available, 0),
    reserved: accounts.reduce((sum, account) => sum + account.reserved, 0),
    accounts,
    version: first.version,
  };
}

/** Spendable credits now, all account types together. */
export async function availableCredits(db: Queryable, organizationId: string, now: Date): Promise<number> {
  const [row] = await db
    .select({ available: sql<string>`coalesce(sum(${creditLots.available}), 0)::bigint` })
    .from(creditLots)
    .where(and(eq(creditLots.organizationId, organizationId), gt(creditLots.available, 0), notExpired(now)));
  return Number(row?.available ?? 0);
}
