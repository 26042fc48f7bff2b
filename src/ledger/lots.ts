import { randomUUID } from 'node:crypto';
import { and, asc, eq, gt, inArray, isNull, lte, or, sql } from 'drizzle-orm';
import type { Queryable, Tx } from '../db/client.ts';
import { creditLots, withheldCredits } from '../db/schema.ts';
import { isExpired } from './allocation.ts';
import type { AccountType, LotSource } from './enums.ts';
import { InvalidInputError } from './errors.ts';
import { postEntries } from './journal.ts';
import { BALANCE_CREDITS_MAX } from './limits.ts';

export type CreditLot = typeof creditLots.$inferSelect;

/** A lot's not-yet-expired condition, as SQL. */
export function notExpired(now: Date) {
  return or(isNull(creditLots.expiresAt), gt(creditLots.expiresAt, now));
}

export interface LotGrant {
  organizationId: string;
  type: AccountType;
  amount: number;
  expiresAt: Date | null;
  source: LotSource;
  sourceKey: string;
  reason: string;
  packId?: string | null;
  /** For plan allowance lots: whose allowance, and for which billing cycle. */
  planId?: string | null;
  cycleStartsAt?: Date | null;
  now: Date;
}

/**
 * Creates a lot and its GRANT entry. The lot starts empty and the entry fills it, so a lot's
 * balance is always what its journal says. Returns null when a lot with the same source key
 * exists already (the caller decides whether that is a replay or a conflict).
 */
export async function grantLot(tx: Tx, grant: LotGrant): Promise<CreditLot | null> {
  const [lot] = await tx
    .insert(creditLots)
    .values({
      id: randomUUID(),
      organizationId: grant.organizationId,
      type: grant.type,
      granted: grant.amount,
      available: 0,
      reserved: 0,
      expiresAt: grant.expiresAt,
      createdAt: grant.now,
      source: grant.source,
      sourceKey: grant.sourceKey,
      packId: grant.packId ?? null,
      planId: grant.planId ?? null,
      cycleStartsAt: grant.cycleStartsAt ?? null,
      reason: grant.reason,
    })
    .onConflictDoNothing()
    .returning();
  if (!lot) return null;
  await postEntries(tx, [
    {
      organizationId: grant.organizationId,
      lotId: lot.id,
      kind: 'GRANT',
      availableChange: grant.amount,
      reservedChange: 0,
      reason: grant.reason,
      createdAt: grant.now,
      lotType: grant.type,
    },
  ]);
  return { ...lot, available: grant.amount };
}

/**
 * Consumption order in SQL: account type priority (the enum's declaration order, which is
 * ACCOUNT_TYPES), then the soonest expiry (never-expiring last), then the oldest; the same order
 * as `compareConsumption` (src/ledger/allocation.ts), which allocation sorts by.
 */
export const CONSUMPTION_ORDER = [
  asc(creditLots.type),
  sql`${creditLots.expiresAt} asc nulls last`,
  asc(creditLots.createdAt),
  asc(creditLots.id),
];

/**
 * Expires the remaining credits of every lot of the organization whose expiry has passed. With
 * `evaluateAlerts` false the posting leaves balance alerts to the caller, which judges the net
 * effect of a change made of several postings (a billing cycle's reset).
 */
export async function expireDueLots(
  tx: Tx,
  organizationId: string,
  now: Date,
  reason = 'lot expired',
  evaluateAlerts = true,
): Promise<number> {
  const due = await tx
    .select({ id: creditLots.id, available: creditLots.available, expiresAt: creditLots.expiresAt })
    .from(creditLots)
    .where(
      and(eq(creditLots.organizationId, organizationId), gt(creditLots.available, 0), lte(creditLots.expiresAt, now)),
    );
  await expireLots(tx, organizationId, due, now, reason, evaluateAlerts);
  return due.length;
}

/**
 * Expires the available credits of the given lots. A lot expired before its own expiry is closed
 * for good: its expiry becomes `now`, so credits refunded into it later expire at once instead of
 * becoming spendable again.
 */
export async function expireLots(
  tx: Tx,
  organizationId: string,
  lots: Array<Pick<CreditLot, 'id' | 'available' | 'expiresAt'>>,
  now: Date,
  reason: string,
  evaluateAlerts = true,
): Promise<void> {
  const closedEarly = lots.filter((lot) => !isExpired(lot, now)).map((lot) => lot.id);
  if (closedEarly.length > 0) {
    await tx
      .update(creditLots)
      .set({ expiresAt: now })
      .where(and(eq(creditLots.organizationId, organizationId), inArray(creditLots.id, closedEarly)));
  }
  await postEntries(
    tx,
    lots
      .filter((lot) => lot.available > 0)
      .map((lot) => ({
        organizationId,
        lotId: lot.id,
        kind: 'EXPIRE' as const,
        availableChange: -lot.available,
        reservedChange: 0,
        reason,
        createdAt: now,
      })),
    { evaluateAlerts },
  );
}

/** Credits the organization holds now: available in unexpired lots plus everything reserved. */
export async function heldCredits(db: Queryable, organizationId: string, now: Date): Promise<number> {
  const [row] = await db
    .select({
      held: sql<string>`coalesce(sum(case when ${notExpired(now)} then ${creditLots.available} else 0 end + ${creditLots.reserved}), 0)::bigint`,
    })
    .from(creditLots)
    .where(eq(creditLots.organizationId, organizationId));
  return Number(row?.held ?? 0);
}

/** Refuses a grant that would lift the organization's balance over the cap. */
export async function assertBalanceCap(
  tx: Tx,
  organizationId: string,
  amount: number,
  now: Date,
  field = 'amount',
): Promise<void> {
  const held = await heldCredits(tx, organizationId, now);
  if (held + amount > BALANCE_CREDITS_MAX) {
    throw new InvalidInputError(
      `This grant would lift the balance over ${BALANCE_CREDITS_MAX} credits (it holds ${held}).`,
      field,
    );
  }
}

/**
 * Grants a plan allowance as far as it fits under the balance cap. Allowances are owed by the
 * plan, not asked for, so instead of refusing the grant the part that does not fit is recorded in
 * `withheld_credits`. Returns the lot, or null when nothing fit (or the key was used already).
 */
export async function grantAllowance(tx: Tx, grant: LotGrant): Promise<CreditLot | null> {
  const held = await heldCredits(tx, grant.organizationId, grant.now);
  const fits = Math.max(0, Math.min(grant.amount, BALANCE_CREDITS_MAX - held));
  if (fits < grant.amount) {
    await tx
      .insert(withheldCredits)
      .values({
        organizationId: grant.organizationId,
        source: grant.source,
        sourceKey: grant.sourceKey,
        amount: grant.amount - fits,
        reason: `${grant.reason}: over the ${BALANCE_CREDITS_MAX} credit balance cap`,
        createdAt: grant.now,
      })
      .onConflictDoNothing();
  }
  return fits > 0 ? grantLot(tx, { ...grant, amount: fits }) : null;
}
