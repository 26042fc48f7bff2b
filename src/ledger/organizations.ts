import { randomUUID } from 'node:crypto';
import { and, eq, sql } from 'drizzle-orm';
import type { Queryable, Tx } from '../db/client.ts';
import { creditLots, organizationExternalIds, organizations, planChanges } from '../db/schema.ts';
import { cycleContaining, type BillingCycle } from './billing-cycle.ts';
import { findPlan, type Plan } from './catalog.ts';
import type { LedgerContext } from './context.ts';
import { IdempotencyConflictError, InvalidInputError, NotFoundError, invariant } from './errors.ts';
import { expireDueLots, grantAllowance } from './lots.ts';
import { evaluateBalanceAlerts } from './alert-evaluation.ts';
import { inOrganizationTransaction } from './organization-queue.ts';
import { inTransaction } from './transaction.ts';
import { bumpBalanceVersion } from './announcements.ts';
import { echoInput, requireKey, requireText, requireUuid, requireValidDate } from './validation.ts';

export type Organization = typeof organizations.$inferSelect;

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

type PlanChangeKind = (typeof planChanges.$inferInsert)['kind'];

/** A change of an organization's plan, as the plan history records it: the state after it. */
interface RecordedPlanChange {
  organizationId: string;
  kind: PlanChangeKind;
  planId: string;
  nextPlanId: string | null;
  cycleStartsAt: Date;
  now: Date;
}

/**
 * Appends the change to the organization's plan history, numbered next after its last one (under
 * the organization's lock, so the numbers run 1, 2, 3, … without gaps). Written in the transaction
 * that changes the plan, so the history and the organization never disagree; the audit holds the
 * organization, and the allowances it was granted, to this history.
 */
async function recordPlanChange(tx: Tx, change: RecordedPlanChange): Promise<void> {
  await tx.execute(sql`
    insert into ${planChanges} (organization_id, change_number, kind, plan_id, next_plan_id, cycle_starts_at, created_at)
    select ${change.organizationId}, coalesce(max(change_number), 0) + 1, ${change.kind}::plan_change_kind,
      ${change.planId}, ${change.nextPlanId}, ${change.cycleStartsAt.toISOString()}::timestamptz, ${change.now.toISOString()}::timestamptz
    from ${planChanges} where organization_id = ${change.organizationId}`);
}

function cycleLotKey(startsAt: Date): string {
  return startsAt.toISOString();
}

async function grantCycleAllowance(tx: Tx, org: Organization, plan: Plan, cycle: BillingCycle, now: Date) {
  if (plan.monthlyCredits <= 0) return;
  await grantAllowance(tx, {
    organizationId: org.id,
    type: 'SUBSCRIPTION',
    amount: plan.monthlyCredits,
    expiresAt: cycle.endsAt,
    source: 'CYCLE',
    sourceKey: cycleLotKey(cycle.startsAt),
    reason: `${plan.name} plan allowance`,
    planId: plan.id,
    cycleStartsAt: cycle.startsAt,
    now,
  });
}

/**
 * Brings a locked organization into the billing cycle that contains `now`: lots whose expiry has
 * passed expire (unused subscription credits do not roll over), a scheduled plan change takes
 * effect, and the new cycle's allowance is granted. Cycles missed while no process ran are caught
 * up in one step: only the current cycle's allowance is granted, since earlier ones would have
 * expired unused by now. Returns the organization as it is afterwards, and whether anything changed.
 */
export async function ensureCurrentCycle(
  tx: Tx,
  org: Organization,
  now: Date,
): Promise<{ org: Organization; changed: boolean }> {
  if (org.cycleEndsAt.getTime() > now.getTime()) return { org, changed: false };
  const cycle = cycleContaining(org.billingCycleAnchor, now);
  const planId = org.nextPlanId ?? org.planId;
  const plan = await findPlan(tx, planId);
  invariant(plan, `plan ${planId} of organization ${org.id} is missing`);
  // A reset expires the old allowance and grants the new one: alerts judge the two together, so
  // a balance that only dips while the allowance is replaced neither fires nor re-arms.
  await expireDueLots(tx, org.id, now, 'billing cycle ended', false);
  const [updated] = await tx
    .update(organizations)
    .set({ planId, nextPlanId: null, cycleStartsAt: cycle.startsAt, cycleEndsAt: cycle.endsAt })
    .where(eq(organizations.id, org.id))
    .returning();
  invariant(updated, `organization ${org.id} vanished while locked`);
  if (org.nextPlanId !== null) {
    // The scheduled plan is in force from the start of the new cycle, whenever this runs.
    await recordPlanChange(tx, {
      organizationId: org.id,
      kind: 'APPLIED',
      planId,
      nextPlanId: null,
      cycleStartsAt: cycle.startsAt,
      now,
    });
  }
  await grantCycleAllowance(tx, updated, plan, cycle, now);
  await evaluateBalanceAlerts(tx, org.id, now);
  const balanceVersion = await bumpBalanceVersion(tx, org.id);
  return { org: { ...updated, balanceVersion }, changed: true };
}

export interface CreateOrganizationInput {
  name: string;
  planId: string;
  billingCycleAnchor?: Date | null;
  /** The customer's id in the host application: a repeat returns the organization it created. */
  externalId?: string | null;
}

export async function createOrganization(ctx: LedgerContext, input: CreateOrganizationInput): Promise<Organization> {
  const name = requireText(input.name, 'name');
  const externalId = input.externalId == null ? null : requireKey(input.externalId, 'externalId');
  const requestedAnchor = input.billingCycleAnchor
    ? requireValidDate(input.billingCycleAnchor, 'billingCycleAnchor')
    : null;
  const plan = await findPlan(ctx.db, input.planId);
  if (!plan) throw new InvalidInputError(`There is no plan ${echoInput(input.planId)}.`, 'planId');
  return inTransaction(ctx.db, async (tx) => {
    const now = ctx.clock.now();
    const anchor = requestedAnchor ?? now;
    const cycle = cycleContaining(anchor, now);
    const id = randomUUID();
    if (externalId !== null) {
      const owner = await claimExternalId(tx, externalId, id);
      if (owner !== id) return replayOrganization(tx, owner, externalId, name, plan.id, requestedAnchor);
    }
    const [org] = await tx
      .insert(organizations)
      .values({
        id,
        externalId,
        name,
        planId: plan.id,
        billingCycleAnchor: anchor,
        cycleStartsAt: cycle.startsAt,
        cycleEndsAt: cycle.endsAt,
        createdAt: now,
      })
      .returning();
    invariant(org, `organization ${id} was not inserted`);
    await tx.insert(planChanges).values({
      organizationId: id,
      changeNumber: 1,
      kind: 'CREATED',
      planId: plan.id,
      nextPlanId: null,
      cycleStartsAt: cycle.startsAt,
      createdAt: now,
    });
    await grantCycleAllowance(tx, org, plan, cycle, now);
    const balanceVersion = await bumpBalanceVersion(tx, org.id);
    return { ...org, balanceVersion };
  });
}

/**
 * Claims the external id for the organization about to be created, and returns the organization
 * that owns it: `organizationId` when the claim is new, or the one an earlier request created. A
 * concurrent claim of the same id waits on the key until the first one commits or rolls back.
 * The claim lives in a table keyed by the external id (see organizationExternalIds): on Citus it
 * is on another shard than the organization, so a creation with an external id is a two-node
 * transaction (two-phase commit), the only one the service runs; every other write is one shard.
 */
async function claimExternalId(tx: Tx, externalId: string, organizationId: string): Promise<string> {
  const [claimed] = await tx
    .insert(organizationExternalIds)
    .values({ externalId, organizationId })
    .onConflictDoNothing({ target: organizationExternalIds.externalId })
    .returning();
  if (claimed) return claimed.organizationId;
  const [existing] = await tx
    .select()
    .from(organizationExternalIds)
    .where(eq(organizationExternalIds.externalId, externalId));
  invariant(existing, `external id ${externalId} conflicted but its claim cannot be read`);
  return existing.organizationId;
}

/**
 * The organization an earlier request with this external id created. The same name and plan (and
 * anchor, when the request names one) is a retry; anything else reuses an id for something else.
 */
async function replayOrganization(
  tx: Tx,
  organizationId: string,
  externalId: string,
  name: string,
  planId: string,
  anchor: Date | null,
): Promise<Organization> {
  const existing = await findOrganization(tx, organizationId);
  invariant(existing, `organization with external id ${externalId} was claimed but cannot be read`);
  const same =
    existing.name === name &&
    existing.planId === planId &&
    (anchor === null || existing.billingCycleAnchor.getTime() === anchor.getTime());
  if (!same) throw new IdempotencyConflictError('This externalId was already used for a different organization.');
  return existing;
}

export interface ChangePlanInput {
  organizationId: string;
  planId: string;
  /** Apply now instead of at the start of the next cycle (upgrades only). */
  immediately?: boolean | null;
}

export interface PlanChange {
  organization: Organization;
  /** True when the plan is in force now; false when it waits for the next cycle. */
  appliedImmediately: boolean;
  effectiveAt: Date;
}

/**
 * Changes an organization's plan. An immediate upgrade (a larger monthly allowance) takes effect
 * now and grants the difference between the two allowances for the rest of the cycle; nothing
 * already granted expires and the cycle does not restart. Every other change waits for the next
 * cycle, because taking effect now could only lower an allowance that is partly spent or held.
 * Changing to the plan in force cancels a scheduled change.
 */
export async function changePlan(ctx: LedgerContext, input: ChangePlanInput): Promise<PlanChange> {
  const organizationId = requireUuid(input.organizationId, 'organizationId');
  const plan = await findPlan(ctx.db, input.planId);
  if (!plan) throw new InvalidInputError(`There is no plan ${echoInput(input.planId)}.`, 'planId');
  return inOrganizationTransaction(ctx.db, organizationId, async (tx) => {
    const locked = await requireLockedOrganization(tx, organizationId);
    const now = ctx.clock.now();
    const { org } = await ensureCurrentCycle(tx, locked, now);
    const current = await findPlan(tx, org.planId);
    invariant(current, `plan ${org.planId} of organization ${org.id} is missing`);
    if (plan.id === current.id) {
      const organization = await setNextPlan(tx, org, null, now);
      return { organization, appliedImmediately: true, effectiveAt: now };
    }
    if (!input.immediately || plan.monthlyCredits <= current.monthlyCredits) {
      return {
        organization: await setNextPlan(tx, org, plan.id, now),
        appliedImmediately: false,
        effectiveAt: org.cycleEndsAt,
      };
    }
    return { organization: await upgradeNow(tx, org, current, plan, now), appliedImmediately: true, effectiveAt: now };
  });
}

/**
 * Schedules a plan for the next cycle (null cancels the scheduled one) and records it in the plan
 * history as SCHEDULED or CANCELLED. Scheduling what is scheduled already changes nothing.
 */
async function setNextPlan(tx: Tx, org: Organization, nextPlanId: string | null, now: Date): Promise<Organization> {
  if (org.nextPlanId === nextPlanId) return org;
  const [updated] = await tx.update(organizations).set({ nextPlanId }).where(eq(organizations.id, org.id)).returning();
  invariant(updated, 'organization vanished while locked');
  await recordPlanChange(tx, {
    organizationId: org.id,
    kind: nextPlanId === null ? 'CANCELLED' : 'SCHEDULED',
    planId: org.planId,
    nextPlanId,
    cycleStartsAt: org.cycleStartsAt,
    now,
  });
  return updated;
}

/**
 * Puts a larger plan in force for the rest of the cycle. The key names the cycle and the new
 * plan: a plan only grows within a cycle, so each plan is upgraded to at most once per cycle, and
 * the unique key makes a second grant for it impossible rather than merely unlikely.
 */
async function upgradeNow(tx: Tx, org: Organization, current: Plan, plan: Plan, now: Date): Promise<Organization> {
  const [updated] = await tx
    .update(organizations)
    .set({ planId: plan.id, nextPlanId: null })
    .where(eq(organizations.id, org.id))
    .returning();
  invariant(updated, 'organization vanished while locked');
  await recordPlanChange(tx, {
    organizationId: org.id,
    kind: 'UPGRADED',
    planId: plan.id,
    nextPlanId: null,
    cycleStartsAt: org.cycleStartsAt,
    now,
  });
  const sourceKey = `${cycleLotKey(org.cycleStartsAt)}:${plan.id}`;
  const [used] = await tx
    .select({ id: creditLots.id })
    .from(creditLots)
    .where(
      and(
        eq(creditLots.organizationId, org.id),
        eq(creditLots.source, 'PLAN_CHANGE'),
        eq(creditLots.sourceKey, sourceKey),
      ),
    );
  invariant(!used, `organization ${org.id} was upgraded to ${plan.id} twice in one cycle`);
  await grantAllowance(tx, {
    organizationId: org.id,
    type: 'SUBSCRIPTION',
    amount: plan.monthlyCredits - current.monthlyCredits,
    expiresAt: org.cycleEndsAt,
    source: 'PLAN_CHANGE',
    sourceKey,
    reason: `${plan.name} plan allowance (upgrade from ${current.name})`,
    planId: plan.id,
    cycleStartsAt: org.cycleStartsAt,
    now,
  });
  const balanceVersion = await bumpBalanceVersion(tx, org.id);
  return { ...updated, balanceVersion };
}

/**
 * Organizations oldest first, for operators (the `credits org list` command). A cross-organization
 * read, never on a request's path; `limit` bounds it.
 */
export function listOrganizations(db: Queryable, limit: number): Promise<Organization[]> {
  return db.select().from(organizations).orderBy(organizations.createdAt, organizations.id).limit(limit);
}
