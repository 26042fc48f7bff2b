import { and, asc, eq, gt, lte } from 'drizzle-orm';
import { creditLots, organizations, reservations } from '../db/schema.ts';
import type { LedgerContext } from './context.ts';
import { expireDueLots } from './lots.ts';
import { bumpBalanceVersion, ensureCurrentCycle, lockOrganization } from './organizations.ts';
import { refundIfExpired } from './reservations.ts';
import { inTransaction } from './transaction.ts';

const BATCH_SIZE = 100;

export interface SweepResult {
  refundedReservations: number;
  resetOrganizations: number;
  expiredLotOrganizations: number;
}

/**
 * One pass of the housekeeping that keeps "you never lose credits" true without any client:
 * refunds reservations whose time to live passed, starts due billing cycles, and expires lots.
 * Each item runs in its own transaction under its organization's lock and re-checks its state
 * there, so several processes sweeping at once do each thing exactly once.
 */
export async function sweepOnce(ctx: LedgerContext): Promise<SweepResult> {
  const now = ctx.clock.now();
  const due = await ctx.db
    .select({ id: reservations.id })
    .from(reservations)
    .where(and(eq(reservations.status, 'PENDING'), lte(reservations.expiresAt, now)))
    .orderBy(asc(reservations.expiresAt))
    .limit(BATCH_SIZE);
  let refundedReservations = 0;
  for (const { id } of due) {
    if (await refundIfExpired(ctx, id)) refundedReservations += 1;
  }

  const dueCycles = await ctx.db
    .select({ id: organizations.id })
    .from(organizations)
    .where(lte(organizations.cycleEndsAt, now))
    .limit(BATCH_SIZE);
  let resetOrganizations = 0;
  for (const { id } of dueCycles) {
    const changed = await inTransaction(ctx.db, async (tx) => {
      const org = await lockOrganization(tx, id);
      return org ? (await ensureCurrentCycle(tx, org, now)).changed : false;
    });
    if (changed) resetOrganizations += 1;
  }

  const dueLots = await ctx.db
    .selectDistinct({ organizationId: creditLots.organizationId })
    .from(creditLots)
    .where(and(gt(creditLots.available, 0), lte(creditLots.expiresAt, now)))
    .limit(BATCH_SIZE);
  let expiredLotOrganizations = 0;
  for (const { organizationId } of dueLots) {
    const expired = await inTransaction(ctx.db, async (tx) => {
      if (!(await lockOrganization(tx, organizationId))) return 0;
      const count = await expireDueLots(tx, organizationId, now);
      if (count > 0) await bumpBalanceVersion(tx, organizationId);
      return count;
    });
    if (expired > 0) expiredLotOrganizations += 1;
  }
  return { refundedReservations, resetOrganizations, expiredLotOrganizations };
}

/** Sweeps until a pass finds nothing to do (tests and catch-up after downtime). */
export async function sweepUntilIdle(ctx: LedgerContext): Promise<SweepResult> {
  const total: SweepResult = { refundedReservations: 0, resetOrganizations: 0, expiredLotOrganizations: 0 };
  for (;;) {
    const pass = await sweepOnce(ctx);
    total.refundedReservations += pass.refundedReservations;
    total.resetOrganizations += pass.resetOrganizations;
    total.expiredLotOrganizations += pass.expiredLotOrganizations;
    if (pass.refundedReservations + pass.resetOrganizations + pass.expiredLotOrganizations === 0) return total;
  }
}

export interface Sweeper {
  stop(): Promise<void>;
}

/** Runs a sweep every `intervalMs`; passes never overlap, and a failed pass is retried next time. */
export function startSweeper(ctx: LedgerContext, intervalMs: number, onError: (error: unknown) => void): Sweeper {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = sweepUntilIdle(ctx)
      .then(() => undefined, onError)
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, intervalMs);
      });
  };
  timer = setTimeout(tick, intervalMs);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
