import { randomUUID } from 'node:crypto';
import { and, eq, gt, inArray, sql } from 'drizzle-orm';
import type { Queryable, Tx } from '../db/client.ts';
import { rowsOf } from '../db/client.ts';
import { creditLots, organizations } from '../db/schema.ts';
import { cycleContaining } from './billing-cycle.ts';
import { findPlan, type Plan } from './catalog.ts';
import type { LedgerContext } from './context.ts';
import { InvalidInputError, NotFoundError, invariant } from './errors.ts';
import { expireDueLots, expireLots, grantLot, notExpired } from './lots.ts';
import { inTransaction } from './transaction.ts';
import { requireText, requireUuid, requireValidDate } from './validation.ts';

export type Organization = typeof organizations.$inferSelect;

/** The channel on which committed balance changes are announced as `<organizationId>:<version>`. */
export const BALANCE_CHANNEL = 'balance_changed';

/**
 * Locks the organization's row for the rest of the transaction. Every write to an
 * organization's lots happens under this lock, so one organization's writes are serialized and
 * check-then-write inside the transaction is safe.
 */
export async function lockOrganization(tx: Tx, organizationId: string): Promise<Organization | undefined> {
  const [org] = await tx.select().from(organizations).where(eq(organizations.id, organizationId)).for('update');
  return org;
}

export async function requireLockedOrganization(tx: Tx, organizationId: string): Promise<Organization> {
  const org = await lockOrganization(tx, organizationId);
  if (!org) throw new NotFoundError('No such organization.');
  return org;
}

export async function findOrganization(db: Queryable, organizationId: string): Promise<Organization | undefined> {
  const [org] = await db.select().from(organizations).where(eq(organizations.id, organizationId));
  return org;
}

/**
 * Records that the organization's balance changed: the version grows by one and a notification
 * carrying only the organization and the new version is queued. PostgreSQL delivers it at commit,
 * so listeners hear of a change if and only if it committed.
 */
export async function bumpBalanceVersion(tx: Tx, organizationId: string): Promise<number> {
  const result = await tx.execute(sql`
    with bumped as (
      update ${organizations} set balance_version = balance_version + 1
      where id = ${organizationId}
      returning id, balance_version
    )
    select balance_version, pg_notify(${BALANCE_CHANNEL}, id::text || ':' || balance_version::text)
    from bumped`);
  const [row] = rowsOf<{ balance_version: number }>(result);
  invariant(row, `organization ${organizationId} vanished while locked`);
  return Number(row.balance_version);
}

function cycleLotKey(startsAt: Date): string {
  return startsAt.toISOString();
}

async function grantCycleAllowance(tx: Tx, org: Organization, plan: Plan, cycleStartsAt: Date, cycleEndsAt: Date, now: Date) {
  if (plan.monthlyCredits <= 0) return;
  await grantLot(tx, {
    organizationId: org.id,
    type: 'SUBSCRIPTION',
    amount: plan.monthlyCredits,
    expiresAt: cycleEndsAt,
    source: 'CYCLE',
    sourceKey: cycleLotKey(cycleStartsAt),
    reason: `${plan.name} plan allowance`,
    now,
  });
}

/**
 * Brings a locked organization into the billing cycle that contains `now`: unused subscription
 * credits expire (no roll-over), a scheduled plan change takes effect, and the new cycle's
 * allowance is granted. Cycles missed while no process ran are caught up in one step: only the
 * current cycle's allowance is granted, since earlier ones would have expired unused by now.
 * Returns the organization as it is afterwards, and whether anything changed.
 */
export async function ensureCurrentCycle(tx: Tx, org: Organization, now: Date): Promise<{ org: Organization; changed: boolean }> {
  if (org.cycleEndsAt.getTime() > now.getTime()) return { org, changed: false };
  const cycle = cycleContaining(org.billingCycleAnchor, now);
  const planId = org.nextPlanId ?? org.planId;
  const plan = await findPlan(tx, planId);
  invariant(plan, `plan ${planId} of organization ${org.id} is missing`);
  await expireDueLots(tx, org.id, now, 'billing cycle ended');
  const [updated] = await tx
    .update(organizations)
    .set({ planId, nextPlanId: null, cycleStartsAt: cycle.startsAt, cycleEndsAt: cycle.endsAt })
    .where(eq(organizations.id, org.id))
    .returning();
  invariant(updated, `organization ${org.id} vanished while locked`);
  await grantCycleAllowance(tx, updated, plan, cycle.startsAt, cycle.endsAt, now);
  const balanceVersion = await bumpBalanceVersion(tx, org.id);
  return { org: { ...updated, balanceVersion }, changed: true };
}

export interface CreateOrganizationInput {
  name: string;
  planId: string;
  billingCycleAnchor?: Date | null;
}

export async function createOrganization(ctx: LedgerContext, input: CreateOrganizationInput): Promise<Organization> {
  const name = requireText(input.name, 'name');
  const now = ctx.clock.now();
  const anchor = input.billingCycleAnchor ? requireValidDate(input.billingCycleAnchor, 'billingCycleAnchor') : now;
  const plan = await findPlan(ctx.db, input.planId);
  if (!plan) throw new InvalidInputError(`There is no plan ${input.planId}.`, 'planId');
  const cycle = cycleContaining(anchor, now);
  return inTransaction(ctx.db, async (tx) => {
    const [org] = await tx
      .insert(organizations)
      .values({
        id: randomUUID(),
        name,
        planId: plan.id,
        billingCycleAnchor: anchor,
        cycleStartsAt: cycle.startsAt,
        cycleEndsAt: cycle.endsAt,
        createdAt: now,
      })
      .returning();
    invariant(org, 'organization insert returned nothing');
    await grantCycleAllowance(tx, org, plan, cycle.startsAt, cycle.endsAt, now);
    const balanceVersion = await bumpBalanceVersion(tx, org.id);
    return { ...org, balanceVersion };
  });
}

export interface ChangePlanInput {
  organizationId: string;
  planId: string;
  /** Apply now instead of at the start of the next cycle. */
  immediately?: boolean | null;
}

/**
 * Changes an organization's plan. By default the change waits for the next cycle. An immediate
 * change expires what is left of this cycle's allowance and grants the new plan's full allowance
 * for the rest of the cycle; a change to the plan already in force changes nothing.
 */
export async function changePlan(ctx: LedgerContext, input: ChangePlanInput): Promise<Organization> {
  const organizationId = requireUuid(input.organizationId, 'organizationId');
  const plan = await findPlan(ctx.db, input.planId);
  if (!plan) throw new InvalidInputError(`There is no plan ${input.planId}.`, 'planId');
  const now = ctx.clock.now();
  return inTransaction(ctx.db, async (tx) => {
    const locked = await requireLockedOrganization(tx, organizationId);
    const { org } = await ensureCurrentCycle(tx, locked, now);
    if (!input.immediately) {
      const nextPlanId = plan.id === org.planId ? null : plan.id;
      const [updated] = await tx.update(organizations).set({ nextPlanId }).where(eq(organizations.id, org.id)).returning();
      invariant(updated, 'organization vanished while locked');
      return updated;
    }
    if (plan.id === org.planId) {
      if (org.nextPlanId === null) return org;
      const [updated] = await tx.update(organizations).set({ nextPlanId: null }).where(eq(organizations.id, org.id)).returning();
      invariant(updated, 'organization vanished while locked');
      return updated;
    }
    const allowanceLots = await tx
      .select({ id: creditLots.id, available: creditLots.available })
      .from(creditLots)
      .where(
        and(
          eq(creditLots.organizationId, org.id),
          inArray(creditLots.source, ['CYCLE', 'PLAN_CHANGE']),
          gt(creditLots.available, 0),
          notExpired(now),
        ),
      );
    await expireLots(tx, org.id, allowanceLots, now, `plan changed to ${plan.name}`);
    const [updated] = await tx
      .update(organizations)
      .set({ planId: plan.id, nextPlanId: null })
      .where(eq(organizations.id, org.id))
      .returning();
    invariant(updated, 'organization vanished while locked');
    if (plan.monthlyCredits > 0) {
      await grantLot(tx, {
        organizationId: org.id,
        type: 'SUBSCRIPTION',
        amount: plan.monthlyCredits,
        expiresAt: org.cycleEndsAt,
        source: 'PLAN_CHANGE',
        sourceKey: `${cycleLotKey(org.cycleStartsAt)}:${org.balanceVersion}`,
        reason: `${plan.name} plan allowance (plan change)`,
        now,
      });
    }
    const balanceVersion = await bumpBalanceVersion(tx, org.id);
    return { ...updated, balanceVersion };
  });
}
