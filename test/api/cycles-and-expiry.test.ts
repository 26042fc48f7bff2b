import { sql } from 'drizzle-orm';
import { describe, expect } from 'vitest';
import { rowsOf } from '../../src/db/client.ts';
import { sweepUntilIdle } from '../../src/ledger/sweeper.ts';
import { it, useTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CAPTURE, CHANGE_PLAN, CREATE_ORGANIZATION, LEDGER, REFUND } from '../support/operations.ts';
import { balanceOf, grant, newOrganization, reserve, textCredits, type TestOrganization } from '../support/scenario.ts';

const DAY_MS = 86_400_000;

describe.each(drivers)('billing cycles and expiry (%s)', (driver) => {
  useTestApp(driver);

  const sweep = (t: TestApp) => sweepUntilIdle({ db: t.database.db, clock: t.clock });

  async function ledgerKinds(t: TestApp, org: TestOrganization, first = 10) {
    const result = await t.gql(LEDGER, { id: org.id, first }, org.member);
    return result.data.ledger.edges.map((edge: any) => `${edge.node.kind} ${edge.node.amount}`);
  }

  it('starts the current cycle at creation with the full allowance', async ({ t }) => {
    t.clock.set('2026-01-31T10:00:00Z');
    const admin = await t.token('admin');
    const created = await t.gql(CREATE_ORGANIZATION, { input: { name: 'Anchored', planId: 'starter' } }, admin);
    expect(created.data.createOrganization.organization).toMatchObject({
      currentCycleStartsAt: '2026-01-31T10:00:00.000Z',
      currentCycleEndsAt: '2026-02-28T10:00:00.000Z',
    });
    const past = await t.gql(
      CREATE_ORGANIZATION,
      { input: { name: 'Past anchor', planId: 'free', billingCycleAnchor: '2025-10-31T00:00:00Z' } },
      admin,
    );
    expect(past.data.createOrganization.organization).toMatchObject({
      currentCycleStartsAt: '2026-01-31T00:00:00.000Z',
      currentCycleEndsAt: '2026-02-28T00:00:00.000Z',
    });
    const unknownPlan = await t.gql(CREATE_ORGANIZATION, { input: { name: 'x', planId: 'gold' } }, admin);
    expect(unknownPlan.data.createOrganization).toMatchObject({ __typename: 'InvalidInputError', field: 'planId' });
  });

  it('resets subscription credits each cycle without roll-over, leaving other lots alone', async ({ t }) => {
    t.clock.set('2026-01-31T10:00:00Z');
    const org = await newOrganization(t, { planId: 'free' }); // 100 per cycle
    await grant(t, org, 'PURCHASED', 40);
    await grant(t, org, 'REFERRAL', 5);
    const spent = await reserve(t, org, textCredits(30));
    await t.gql(CAPTURE, { input: { reservationId: spent.reservation.id } }, org.service);
    expect((await balanceOf(t, org)).accounts[0].available).toBe(70);

    t.clock.set('2026-02-28T09:59:59Z');
    await sweep(t);
    expect((await balanceOf(t, org)).accounts[0].available).toBe(70);

    t.clock.set('2026-02-28T10:00:00Z');
    const swept = await sweep(t);
    expect(swept.resetOrganizations).toBeGreaterThanOrEqual(1);
    const after = await balanceOf(t, org);
    expect(after.accounts.map((a: any) => a.available)).toEqual([100, 40, 0, 5]);
    expect(after.accounts[0].lots).toHaveLength(1);
    expect(after.accounts[0].lots[0].expiresAt).toBe('2026-03-31T10:00:00.000Z');
    expect(await ledgerKinds(t, org, 2)).toEqual(['GRANT 100', 'EXPIRE -70']);
  });

  // Only PostgreSQL can run sweepers at the same time: four of them on separate pool connections
  // contend for the organization's row lock. PGlite has a single connection and runs one query at
  // a time, so there the same sweeps run one after another.
  const racing = driver === 'postgres';
  it(
    racing
      ? 'resets exactly once when four sweepers race on separate connections, and catches up missed cycles'
      : 'resets exactly once when swept four times in a row, and catches up missed cycles',
    async ({ t }) => {
      t.clock.set('2026-01-15T00:00:00Z');
      const org = await newOrganization(t, { planId: 'starter' });
      // Three boundaries pass while "no process ran".
      t.clock.set('2026-04-20T00:00:00Z');
      const ctx = { db: t.database.db, clock: t.clock };
      if (racing) {
        await Promise.all([sweepUntilIdle(ctx), sweepUntilIdle(ctx), sweepUntilIdle(ctx), sweepUntilIdle(ctx)]);
      } else {
        for (let i = 0; i < 4; i += 1) await sweepUntilIdle(ctx);
      }
      const balance = await balanceOf(t, org);
      expect(balance.accounts[0].available).toBe(1000);
      const rows = rowsOf<{ grants: string }>(
        await t.database.db.execute(
          sql`select count(*)::int as grants from ledger_entries where organization_id = ${org.id} and kind = 'GRANT'`,
        ),
      );
      expect(Number(rows[0]!.grants)).toBe(2);
      const orgRow = rowsOf<{ cycle_starts_at: string | Date }>(
        await t.database.db.execute(sql`select cycle_starts_at from organizations where id = ${org.id}`),
      );
      expect(new Date(orgRow[0]!.cycle_starts_at).toISOString()).toBe('2026-04-15T00:00:00.000Z');
    },
  );

  it('resets inline when a reservation arrives before the sweeper', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t, { planId: 'free' });
    await reserve(t, org, textCredits(100)).then((r) =>
      t.gql(CAPTURE, { input: { reservationId: r.reservation.id } }, org.service),
    );
    t.clock.set('2026-02-10T00:00:01Z');
    const result = await reserve(t, org, textCredits(60));
    expect(result.__typename).toBe('ReserveCreditsSuccess');
    expect(result.balance.accounts[0].available).toBe(40);
  });

  it('applies a plan change at the next cycle, or an upgrade at once when asked', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t, { planId: 'free' });
    const later = await t.gql(CHANGE_PLAN, { input: { organizationId: org.id, planId: 'starter' } }, org.service);
    expect(later.data.changePlan).toMatchObject({
      organization: { plan: { id: 'free' }, nextPlan: { id: 'starter' } },
      appliedImmediately: false,
      effectiveAt: '2026-02-10T00:00:00.000Z',
    });
    expect((await balanceOf(t, org)).accounts[0].available).toBe(100);
    t.clock.set('2026-02-10T00:00:00Z');
    await sweep(t);
    expect((await balanceOf(t, org)).accounts[0].available).toBe(1000);

    await reserve(t, org, textCredits(100)).then((r) =>
      t.gql(CAPTURE, { input: { reservationId: r.reservation.id } }, org.service),
    );
    const now = await t.gql(
      CHANGE_PLAN,
      { input: { organizationId: org.id, planId: 'pro', immediately: true } },
      org.service,
    );
    expect(now.data.changePlan).toMatchObject({
      organization: { plan: { id: 'pro' }, nextPlan: null },
      appliedImmediately: true,
      effectiveAt: '2026-02-10T00:00:00.000Z',
    });
    // The upgrade adds the difference (5,000 - 1,000) to what is left; nothing expires.
    const balance = await balanceOf(t, org);
    expect(balance.accounts[0].available).toBe(900 + 4000);
    expect(balance.accounts[0].lots.map((lot: { expiresAt: string }) => lot.expiresAt)).toEqual([
      '2026-03-10T00:00:00.000Z',
      '2026-03-10T00:00:00.000Z',
    ]);
    expect(await ledgerKinds(t, org, 1)).toEqual(['GRANT 4000']);
    const same = await t.gql(
      CHANGE_PLAN,
      { input: { organizationId: org.id, planId: 'pro', immediately: true } },
      org.service,
    );
    expect(same.data.changePlan.__typename).toBe('ChangePlanSuccess');
    expect((await balanceOf(t, org)).accounts[0].available).toBe(4900);
  });

  it('expires promotional lots with a ledger entry', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t);
    await grant(t, org, 'PROMOTIONAL', 20, { expiresAt: '2026-01-20T00:00:00Z' });
    expect((await balanceOf(t, org)).accounts[2].available).toBe(20);
    t.clock.set('2026-01-20T00:00:00Z');
    // Even before a sweep, expired credits are no longer available.
    expect((await balanceOf(t, org)).accounts[2]).toMatchObject({ available: 0, lots: [] });
    await sweep(t);
    expect(await ledgerKinds(t, org, 1)).toEqual(['EXPIRE -20']);
  });

  it('expires at once the credits a refund returns to an expired lot', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t);
    await reserve(t, org, textCredits(100)).then((r) =>
      t.gql(CAPTURE, { input: { reservationId: r.reservation.id } }, org.service),
    );
    await grant(t, org, 'PROMOTIONAL', 20, { expiresAt: '2026-01-10T01:00:00Z' });
    await grant(t, org, 'PURCHASED', 10);
    const { reservation } = await reserve(t, org, textCredits(25), { ttlSeconds: 86_400 });
    expect(reservation.allocations.map((a: any) => [a.type, a.amount])).toEqual([
      ['PURCHASED', 10],
      ['PROMOTIONAL', 15],
    ]);
    t.clock.advance(2 * 3_600_000);
    await sweep(t); // expires the 5 promotional credits left
    const refund = await t.gql(REFUND, { input: { reservationId: reservation.id } }, org.service);
    const balance = refund.data.refundReservation.balance;
    expect(balance).toMatchObject({ available: 10, reserved: 0 });
    expect(await ledgerKinds(t, org, 3)).toEqual(['EXPIRE -15', 'REFUND 15', 'REFUND 10']);
  });

  it('counts held credits of an expired lot as reserved until the reservation settles', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t);
    await reserve(t, org, textCredits(100)).then((r) =>
      t.gql(CAPTURE, { input: { reservationId: r.reservation.id } }, org.service),
    );
    await grant(t, org, 'REFERRAL', 10, { expiresAt: '2026-01-10T00:10:00Z' });
    const { reservation } = await reserve(t, org, textCredits(4), { ttlSeconds: 3600 });
    t.clock.advance(20 * 60_000);
    await sweep(t);
    expect(await balanceOf(t, org)).toMatchObject({ available: 0, reserved: 4 });
    const capture = await t.gql(CAPTURE, { input: { reservationId: reservation.id } }, org.service);
    expect(capture.data.captureReservation.balance).toMatchObject({ available: 0, reserved: 0 });
    expect(t.clock.now().getTime() - new Date('2026-01-10T00:00:00Z').getTime()).toBeLessThan(DAY_MS);
  });
});
