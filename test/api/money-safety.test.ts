// Regression tests for the ways a hostile customer (or a bad day) could get credits from nothing
// or hold them for ever: each one failed on the code before the money-safety fixes.
import { sql } from 'drizzle-orm';
import { describe, expect, vi } from 'vitest';
import { rowsOf } from '../../src/db/client.ts';
import type { LedgerContext } from '../../src/ledger/context.ts';
import { grantCredits } from '../../src/ledger/grants.ts';
import { expireLots } from '../../src/ledger/lots.ts';
import { createOrganization } from '../../src/ledger/organizations.ts';
import { reserveCredits, type Reservation } from '../../src/ledger/reservations.ts';
import { refundReservation } from '../../src/ledger/settlements.ts';
import { sweepOnce, sweepUntilIdle, SweepBackoff, type SweepItem } from '../../src/ledger/sweeper.ts';
import { it, useTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { databaseUrlOf, holdOrganizationLock, lockWaiters } from '../support/organization-lock.ts';
import { CAPTURE, CREATE_ORGANIZATION, EXTEND, REFUND } from '../support/operations.ts';
import {
  balanceOf,
  newOrganization,
  reserve,
  textCredits,
  uniqueKey,
  type TestOrganization,
} from '../support/scenario.ts';

const HOUR_MS = 3_600_000;

describe.each(drivers)('money safety (%s)', (driver) => {
  useTestApp(driver);
  const ctx = (t: TestApp): LedgerContext => ({ db: t.database.db, clock: t.clock });

  /** Reserves `credits` (a multiple of 500, or at most 500) in text generations through the ledger. */
  async function reserveAll(
    t: TestApp,
    org: TestOrganization,
    credits: number,
    ttlSeconds?: number,
  ): Promise<Reservation[]> {
    const made: Reservation[] = [];
    for (let left = credits; left > 0; left -= Math.min(left, 500)) {
      const generation = textCredits(Math.min(left, 500));
      made.push(
        await reserveCredits(ctx(t), { organizationId: org.id, idempotencyKey: uniqueKey(), generation, ttlSeconds }),
      );
    }
    return made;
  }

  async function refundAll(t: TestApp, org: TestOrganization, made: Reservation[]) {
    for (const reservation of made) {
      const result = await t.gql(REFUND, { input: { reservationId: reservation.id } }, org.service);
      expect(result.data.refundReservation.__typename).toBe('RefundReservationSuccess');
    }
  }

  // Only fields that existed before the fix, so that these tests show the minting on old code too
  // (appliedImmediately and effectiveAt are checked in cycles-and-expiry.test.ts).
  const CHANGE_PLAN_NOW = `
    mutation ($input: ChangePlanInput!) {
      changePlan(input: $input) { __typename ... on ChangePlanSuccess { organization { plan { id } nextPlan { id } } } }
    }`;
  const changePlanTo = (t: TestApp, org: TestOrganization, planId: string, immediately = true) =>
    t
      .gql(CHANGE_PLAN_NOW, { input: { organizationId: org.id, planId, immediately } }, org.service)
      .then((r) => r.data.changePlan);

  it('mints nothing when a downgrade is asked for immediately with the allowance held', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t, { planId: 'studio' });
    const held = await reserveAll(t, org, 20_000);
    const change = await changePlanTo(t, org, 'free');
    // A downgrade never takes effect mid-cycle: it is scheduled, and the answer says so.
    expect(change).toMatchObject({
      __typename: 'ChangePlanSuccess',
      organization: { plan: { id: 'studio' }, nextPlan: { id: 'free' } },
    });
    await refundAll(t, org, held);
    expect(await balanceOf(t, org)).toMatchObject({ available: 20_000, reserved: 0 });
    // At the cycle's end the downgrade takes effect with the free allowance only.
    t.clock.set('2026-02-10T00:00:00Z');
    await sweepUntilIdle(ctx(t));
    expect(await balanceOf(t, org)).toMatchObject({ available: 100, reserved: 0 });
  });

  it('grants only the difference on an upgrade, so reserve, upgrade and refund cycles add nothing', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t, { planId: 'starter' });
    const held = await reserveAll(t, org, 1_000);
    expect(await changePlanTo(t, org, 'pro')).toMatchObject({ organization: { plan: { id: 'pro' } } });
    await refundAll(t, org, held);
    // 1,000 of the starter allowance plus the 4,000 difference: pro's 5,000, not 6,000.
    expect((await balanceOf(t, org)).available).toBe(5_000);

    // Back and forth: down is only scheduled, up again cancels it, and nothing is granted twice.
    for (let round = 0; round < 3; round += 1) {
      const again = await reserveAll(t, org, 5_000);
      expect(await changePlanTo(t, org, 'starter')).toMatchObject({
        organization: { plan: { id: 'pro' }, nextPlan: { id: 'starter' } },
      });
      expect(await changePlanTo(t, org, 'pro')).toMatchObject({
        organization: { plan: { id: 'pro' }, nextPlan: null },
      });
      await refundAll(t, org, again);
      expect((await balanceOf(t, org)).available).toBe(5_000);
    }
    // Up once more, to studio: the difference again, and the cycle's allowance is studio's.
    expect(await changePlanTo(t, org, 'studio')).toMatchObject({ organization: { plan: { id: 'studio' } } });
    expect((await balanceOf(t, org)).available).toBe(20_000);
  });

  it('closes an early-expired lot for good: credits refunded into it expire at once', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t, { planId: 'free' });
    const [held] = await reserveAll(t, org, 60);
    const [lot] = rowsOf<{ id: string; available: number; expires_at: Date }>(
      await t.database.db.execute(
        sql`select id, available, expires_at from credit_lots where organization_id = ${org.id}`,
      ),
    );
    await t.database.db.transaction((tx) =>
      expireLots(
        tx,
        org.id,
        [{ id: lot!.id, available: lot!.available, expiresAt: new Date(lot!.expires_at) }],
        t.clock.now(),
        'closed early',
      ),
    );
    const refunded = await refundReservation(ctx(t), { reservationId: held!.id }, null);
    expect(refunded.status).toBe('REFUNDED');
    expect(await balanceOf(t, org)).toMatchObject({ available: 0, reserved: 0 });
    const [after] = rowsOf<{ expires_at: Date }>(
      await t.database.db.execute(sql`select expires_at from credit_lots where id = ${lot!.id}`),
    );
    expect(new Date(after!.expires_at).toISOString()).toBe('2026-01-10T00:00:00.000Z');
  });

  it('keeps the balance cap through cycle allowances, recording what it withholds', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t, { planId: 'free' });
    const grantInput = { organizationId: org.id, reason: 'large', type: 'PURCHASED' as const };
    await grantCredits(ctx(t), { ...grantInput, amount: 1_000_000_000, idempotencyKey: uniqueKey() });
    await grantCredits(ctx(t), { ...grantInput, amount: 999_999_900, idempotencyKey: uniqueKey() });
    // The free allowance is held across the cycle boundary; a new one would pass the cap.
    t.clock.set('2026-02-09T12:00:00Z');
    const [held] = await reserveAll(t, org, 100, 86_400);
    t.clock.set('2026-02-10T00:00:00Z');
    await sweepUntilIdle(ctx(t));
    const balance = await balanceOf(t, org);
    expect(balance.available + balance.reserved).toBe(2_000_000_000);
    const withheld = rowsOf<{ source: string; amount: number }>(
      await t.database.db.execute(sql`select source, amount from withheld_credits where organization_id = ${org.id}`),
    );
    expect(withheld).toEqual([{ source: 'CYCLE', amount: 100 }]);
    // An upgrade near the cap grants the part that fits and records the rest.
    await refundReservation(ctx(t), { reservationId: held!.id }, null);
    expect(await changePlanTo(t, org, 'starter')).toMatchObject({ organization: { plan: { id: 'starter' } } });
    const upgraded = await balanceOf(t, org);
    expect(upgraded.available + upgraded.reserved).toBe(2_000_000_000);
    const rows = rowsOf<{ source: string; amount: number }>(
      await t.database.db.execute(
        sql`select source, amount from withheld_credits where organization_id = ${org.id} order by created_at, source`,
      ),
    );
    expect(rows).toEqual([
      { source: 'CYCLE', amount: 100 },
      { source: 'PLAN_CHANGE', amount: 800 },
    ]);
  });

  it('refuses to empty the journal with TRUNCATE', async ({ t }) => {
    await newOrganization(t);
    await expect(t.database.db.execute(sql`truncate ledger_entries`)).rejects.toThrow();
    await expect(t.database.db.execute(sql`truncate organizations cascade`)).rejects.toThrow();
    const [count] = rowsOf<{ n: number }>(
      await t.database.db.execute(sql`select count(*)::int as n from ledger_entries`),
    );
    expect(count!.n).toBeGreaterThan(0);
  });

  it('ends every reservation within 24 hours of its creation, however often it is extended', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t, { planId: 'free' });
    const made = await reserve(t, org, textCredits(50), { ttlSeconds: 86_400 });
    const id = made.reservation.id;
    for (const hours of [20, 3]) {
      t.clock.advance(hours * HOUR_MS);
      const extended = await t.gql(EXTEND, { input: { reservationId: id, ttlSeconds: 86_400 } }, org.service);
      // Capped at creation + 24 h, and the answer says so.
      expect(extended.data.extendReservation.reservation.expiresAt).toBe('2026-01-11T00:00:00.000Z');
    }
    t.clock.set('2026-01-11T00:00:00Z');
    const late = await t.gql(CAPTURE, { input: { reservationId: id } }, org.service);
    expect(late.data.captureReservation).toMatchObject({ __typename: 'ReservationStateError', status: 'REFUNDED' });
    expect((await balanceOf(t, org)).available).toBe(100);
  });

  it('sweeps everything else when one item fails every time, and retries it with backoff', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const orgs = [await newOrganization(t), await newOrganization(t), await newOrganization(t)];
    const held = [];
    for (const org of orgs)
      held.push((await reserve(t, org, textCredits(10), { ttlSeconds: 60 })).reservation.id as string);
    const broken = held[0]!;
    // A permanently failing item: the database refuses to settle this one reservation.
    await t.database.db.execute(
      sql.raw(`
      create function refuse_settle() returns trigger language plpgsql as $$
      begin if new.id = '${broken}' then raise exception 'injected failure'; end if; return new; end $$`),
    );
    await triggerDdl(
      t,
      `create trigger refuse_settle before update on reservations for each row execute function refuse_settle()`,
    );
    try {
      t.clock.advance(61_000);
      const failures: SweepItem[] = [];
      const backoff = new SweepBackoff();
      const first = await sweepOnce(ctx(t), { backoff, onItemError: (item) => failures.push(item) });
      expect(first).toMatchObject({ refundedReservations: 2, failedItems: 1 });
      expect(failures).toEqual([{ kind: 'reservation-refund', id: broken }]);
      for (const org of orgs.slice(1)) expect(await balanceOf(t, org)).toMatchObject({ available: 100, reserved: 0 });
      // While it waits out its backoff it is not tried, so it cannot crowd out other work.
      expect(await sweepOnce(ctx(t), { backoff })).toMatchObject({ refundedReservations: 0, failedItems: 0 });
      // A catch-up loop ends although the item still fails.
      t.clock.advance(2_000);
      expect(await sweepUntilIdle(ctx(t), { backoff })).toMatchObject({ refundedReservations: 0, failedItems: 1 });
    } finally {
      await triggerDdl(t, 'drop trigger refuse_settle on reservations');
      await t.database.db.execute(sql`drop function refuse_settle()`);
    }
    t.clock.advance(10 * 60_000);
    expect(await sweepUntilIdle(ctx(t))).toMatchObject({ refundedReservations: 1, failedItems: 0 });
    expect(await balanceOf(t, orgs[0]!)).toMatchObject({ available: 100, reserved: 0 });
  });

  // PostgreSQL only: PGlite runs one statement or transaction at a time, so on it no ledger call
  // can read the clock and then wait for a lock held by another transaction.
  if (driver === 'postgres') {
    it('reads the time after the organization lock, so a waiting reservation skips a lot that expired meanwhile', async ({
      t,
    }) => {
      t.clock.set('2026-01-10T00:00:00Z');
      const org = await newOrganization(t, { planId: 'free' });
      // Spend the allowance so only a promotional lot that expires at noon is left.
      const [spent] = await reserveAll(t, org, 100);
      await t.gql(CAPTURE, { input: { reservationId: spent!.id } }, org.service);
      await grantCredits(ctx(t), {
        organizationId: org.id,
        type: 'PROMOTIONAL',
        amount: 10,
        expiresAt: new Date('2026-01-10T12:00:00Z'),
        reason: 'promo',
        idempotencyKey: uniqueKey(),
      });
      t.clock.set('2026-01-10T11:59:59Z');
      // Another connection holds the organization's lock while the reservation arrives.
      const lock = await holdOrganizationLock(await databaseUrlOf(t.database), org.id);
      try {
        const waiting = reserveCredits(ctx(t), {
          organizationId: org.id,
          idempotencyKey: uniqueKey(),
          generation: textCredits(5),
        }).catch((error: unknown) => error);
        await vi.waitFor(async () => expect(await lockWaiters(t.database)).toBe(1), { timeout: 10_000, interval: 20 });
        // The promotional lot expires while the reservation waits.
        t.clock.set('2026-01-10T12:00:01Z');
        await lock.release();
        expect(await waiting).toMatchObject({ name: 'InsufficientCreditsError', required: 5, available: 0 });
      } finally {
        await lock.release();
      }
    });
  }

  /** Creates or drops a fault-injecting trigger; Citus does so on a sharded table only when told it is safe. */
  async function triggerDdl(t: TestApp, statement: string): Promise<void> {
    await t.database.db.transaction(async (tx) => {
      if (t.database.citus) await tx.execute(sql`set local citus.enable_unsafe_triggers = on`);
      await tx.execute(sql.raw(statement));
    });
  }

  it('creates an organization once per externalId, and refuses the id for another organization', async ({ t }) => {
    const admin = await t.token('admin');
    const externalId = uniqueKey('customer');
    const input = { name: 'Acme', planId: 'starter', externalId };
    const first = await t.gql(CREATE_ORGANIZATION, { input }, admin);
    const again = await t.gql(CREATE_ORGANIZATION, { input }, admin);
    const id = first.data.createOrganization.organization.id;
    expect(again.data.createOrganization.organization.id).toBe(id);
    const lots = rowsOf<{ n: number }>(
      await t.database.db.execute(sql`select count(*)::int as n from credit_lots where organization_id = ${id}`),
    );
    expect(lots[0]!.n).toBe(1);
    for (const other of [
      { ...input, planId: 'pro' },
      { ...input, name: 'Other' },
    ]) {
      const conflict = await t.gql(CREATE_ORGANIZATION, { input: other }, admin);
      expect(conflict.data.createOrganization.__typename).toBe('IdempotencyConflictError');
    }
    if (driver === 'postgres') {
      // Simultaneous retries still make one organization.
      const racing = { ...input, externalId: uniqueKey('racing') };
      const results = await Promise.all(Array.from({ length: 10 }, () => createOrganization(ctx(t), racing)));
      expect(new Set(results.map((org) => org.id)).size).toBe(1);
    }
  });
});
