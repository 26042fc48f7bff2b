import { sql } from 'drizzle-orm';
import { describe, expect } from 'vitest';
import { sweepUntilIdle } from '../../src/ledger/sweeper.ts';
import { SET_ALERT, eventsOf, setAlert } from '../support/alerts.ts';
import { deliveriesOf, setWebhook } from '../support/webhooks.ts';
import { it, useTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CAPTURE, CHANGE_PLAN, PURCHASE_PACK, REFUND } from '../support/operations.ts';
import {
  balanceOf,
  expectSuccess,
  grant,
  newOrganization,
  reserve,
  textCredits,
  tryReserve,
  uniqueKey,
  type TestOrganization,
} from '../support/scenario.ts';

const REMOVE_ALERT = `
  mutation ($input: RemoveBalanceAlertInput!) {
    removeBalanceAlert(input: $input) { __typename ... on Error { message } ... on RemoveBalanceAlertSuccess { alert { id threshold } } }
  }`;

const ALERTS = `query ($id: ID!) { organization(id: $id) { balanceAlerts { id threshold armed lastFiredAt } } }`;

async function alertsOf(t: TestApp, org: TestOrganization) {
  const result = await t.gql(ALERTS, { id: org.id }, org.member);
  expect(result.errors).toBeUndefined();
  return result.data.organization.balanceAlerts;
}

describe.each(drivers)('low-balance alerts (%s)', (driver) => {
  useTestApp(driver);
  const sweep = (t: TestApp) => sweepUntilIdle({ db: t.database.db, clock: t.clock });

  it('fires once per crossing: reserve below, further drops, refund above, and down again', async ({ t }) => {
    const org = await newOrganization(t); // 100 subscription credits
    const alert = await setAlert(t, org, 50);
    expect(alert).toMatchObject({ threshold: 50, armed: true, lastFiredAt: null });

    await reserve(t, org, textCredits(40)); // 60 left
    expect(await eventsOf(t, org.id)).toHaveLength(0);
    const crossing = await reserve(t, org, textCredits(20)); // 40 left: fires
    let events = await eventsOf(t, org.id);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ alertId: alert.id, threshold: 50, available: 40 });
    expect(events[0]!.balanceVersion).toBe(crossing.balance.version);
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: false, lastFiredAt: t.clock.now().toISOString() });

    await reserve(t, org, textCredits(10)); // 30: still below, nothing more
    expect(await eventsOf(t, org.id)).toHaveLength(1);

    const refunded = await t.gql(REFUND, { input: { reservationId: crossing.reservation.id } }, org.service);
    expectSuccess(refunded.data.refundReservation, 'RefundReservationSuccess'); // 50: re-armed
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: true });
    expect(await eventsOf(t, org.id)).toHaveLength(1);

    await reserve(t, org, textCredits(1)); // 49: fires again
    events = await eventsOf(t, org.id);
    expect(events.map((e) => e.available)).toEqual([40, 49]);
  });

  it('arms a new alert only when available credits stand at or above its threshold', async ({ t }) => {
    const org = await newOrganization(t);
    expect(await setAlert(t, org, 100)).toMatchObject({ armed: true });
    expect(await setAlert(t, org, 101)).toMatchObject({ armed: false });
    await reserve(t, org, textCredits(1)); // 99: the 100 alert fires; the 101 one was never armed
    expect((await eventsOf(t, org.id)).map((e) => e.threshold)).toEqual([100]);
  });

  it('fires every alert one change takes below its threshold, each with an event of its own', async ({ t }) => {
    const org = await newOrganization(t);
    const high = await setAlert(t, org, 80);
    const low = await setAlert(t, org, 60);
    const untouched = await setAlert(t, org, 40);
    await reserve(t, org, textCredits(50)); // 50: below 80 and 60, not 40
    const events = await eventsOf(t, org.id);
    expect(events.map((e) => e.alertId).sort()).toEqual([high.id, low.id].sort());
    expect(new Set(events.map((e) => e.id)).size).toBe(2);
    expect((await alertsOf(t, org)).map((a: any) => [a.threshold, a.armed])).toEqual([
      [40, true],
      [60, false],
      [80, false],
    ]);
    expect(untouched.armed).toBe(true);
  });

  it('capture leaves available unchanged; a partial capture refunds the rest and may re-arm', async ({ t }) => {
    const org = await newOrganization(t);
    await setAlert(t, org, 80);
    const held = await reserve(t, org, textCredits(30)); // 70: fires
    expect(await eventsOf(t, org.id)).toHaveLength(1);
    const partial = await t.gql(CAPTURE, { input: { reservationId: held.reservation.id, amount: 10 } }, org.service);
    expectSuccess(partial.data.captureReservation, 'CaptureReservationSuccess'); // 90 available: re-armed
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: true });
    const full = await reserve(t, org, textCredits(5)); // 85: still above
    const captured = await t.gql(CAPTURE, { input: { reservationId: full.reservation.id } }, org.service);
    expectSuccess(captured.data.captureReservation, 'CaptureReservationSuccess');
    expect(await eventsOf(t, org.id)).toHaveLength(1);
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: true });
  });

  it('re-arms on a grant and on a credit pack', async ({ t }) => {
    const org = await newOrganization(t);
    await setAlert(t, org, 120); // 100 available: not armed
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: false });
    await grant(t, org, 'PROMOTIONAL', 30); // 130: armed
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: true });
    await reserve(t, org, textCredits(20)); // 110: fires
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: false });
    const pack = await t.gql(
      PURCHASE_PACK,
      { input: { organizationId: org.id, packId: 'pack-500', paymentReference: uniqueKey('pay') } },
      org.service,
    );
    expectSuccess(pack.data.purchaseCreditPack, 'PurchaseCreditPackSuccess'); // 610: armed
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: true });
    await reserve(t, org, textCredits(100)); // 510: above
    expect(await eventsOf(t, org.id)).toHaveLength(1);
  });

  it('fires when a lot expires, written by the sweeper', async ({ t }) => {
    t.clock.set('2026-05-10T00:00:00Z');
    const org = await newOrganization(t);
    await grant(t, org, 'PROMOTIONAL', 30, { expiresAt: '2026-05-11T00:00:00Z' }); // 130
    await setAlert(t, org, 120);
    t.clock.set('2026-05-11T00:00:01Z');
    await sweep(t);
    const events = await eventsOf(t, org.id);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ threshold: 120, available: 100 });
  });

  it('re-arms when the sweeper refunds an expired reservation', async ({ t }) => {
    const org = await newOrganization(t);
    await setAlert(t, org, 90);
    await reserve(t, org, textCredits(20), { ttlSeconds: 60 }); // 80: fires
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: false });
    t.clock.advance(61_000);
    await sweep(t);
    expect((await balanceOf(t, org)).available).toBe(100);
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: true });
    expect(await eventsOf(t, org.id)).toHaveLength(1);
  });

  it('judges a billing cycle reset on its net change: replacing the allowance neither fires nor re-arms', async ({
    t,
  }) => {
    t.clock.set('2026-03-01T00:00:00Z');
    const org = await newOrganization(t); // 100 per cycle, unused
    await setAlert(t, org, 50);
    t.clock.set('2026-04-01T00:00:01Z');
    await sweep(t); // expires 100, grants 100
    expect((await balanceOf(t, org)).available).toBe(100);
    expect(await eventsOf(t, org.id)).toHaveLength(0);
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: true, lastFiredAt: null });

    // A reset that leaves less than the threshold fires once: 70 held over the boundary.
    await reserve(t, org, textCredits(70), { ttlSeconds: 86_400 }); // 30: fires
    expect(await eventsOf(t, org.id)).toHaveLength(1);
    t.clock.set('2026-05-01T00:00:01Z');
    await sweep(t); // the held 70 go back and expire with the old allowance, the new 100 are granted
    expect((await balanceOf(t, org)).available).toBe(100);
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: true });
    expect(await eventsOf(t, org.id)).toHaveLength(1);
  });

  it('re-arms when an upgrade grants the difference of allowances', async ({ t }) => {
    const org = await newOrganization(t); // free, 100
    await setAlert(t, org, 500);
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: false });
    const changed = await t.gql(
      CHANGE_PLAN,
      { input: { organizationId: org.id, planId: 'starter', immediately: true } },
      org.admin,
    );
    expect(changed.data.changePlan.__typename).toBe('ChangePlanSuccess');
    expect((await balanceOf(t, org)).available).toBe(1000);
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: true });
  });

  it('fires once when a batch of concurrent reservations crosses the threshold', async ({ t }) => {
    const org = await newOrganization(t);
    await setAlert(t, org, 50);
    const results = await Promise.all(Array.from({ length: 20 }, () => tryReserve(t, org, textCredits(5))));
    expect(results.every((r) => r.__typename === 'ReserveCreditsSuccess')).toBe(true);
    const events = await eventsOf(t, org.id);
    expect(events).toHaveLength(1);
    expect(events[0]!.available).toBeLessThan(50);
    expect(events[0]!.available).toBeGreaterThanOrEqual(45 - 5 * 19); // somewhere in the run, once
  });

  it('fires nothing, and queues no webhook delivery, for a change that rolls back', async ({ t }) => {
    const org = await newOrganization(t);
    await setAlert(t, org, 50);
    await setWebhook(t, org, 'https://hooks.example.com/doomed');
    const doomed = uniqueKey('doomed');
    await t.database.db.execute(
      sql.raw(`
      create function refuse_alert_doomed() returns trigger language plpgsql as $$
      begin if new.idempotency_key = '${doomed}' then raise exception 'injected failure'; end if; return new; end $$`),
    );
    await t.database.db.transaction(async (tx) => {
      if (t.database.citus) await tx.execute(sql`set local citus.enable_unsafe_triggers = on`);
      await tx.execute(
        sql.raw(
          'create trigger refuse_alert_doomed before insert on reservations for each row execute function refuse_alert_doomed()',
        ),
      );
    });
    try {
      const result = await t.gql(
        `mutation ($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename } }`,
        { input: { organizationId: org.id, idempotencyKey: doomed, generation: textCredits(60) } },
        org.member,
      );
      expect(result.errors?.length).toBe(1);
    } finally {
      await t.database.db.transaction(async (tx) => {
        if (t.database.citus) await tx.execute(sql`set local citus.enable_unsafe_triggers = on`);
        await tx.execute(sql`drop trigger refuse_alert_doomed on reservations`);
      });
      await t.database.db.execute(sql`drop function refuse_alert_doomed()`);
    }
    expect((await balanceOf(t, org)).available).toBe(100);
    expect(await eventsOf(t, org.id)).toHaveLength(0);
    expect((await alertsOf(t, org))[0]).toMatchObject({ armed: true, lastFiredAt: null });
    expect(await deliveriesOf(t, org)).toEqual([]);
  });

  it('answers a retry with the same key and threshold with the same alert, refuses another threshold', async ({
    t,
  }) => {
    const org = await newOrganization(t);
    const key = uniqueKey('alert');
    const first = await setAlert(t, org, 30, key);
    expect(await setAlert(t, org, 30, key)).toEqual(first);
    const conflict = await t.gql(
      SET_ALERT,
      { input: { organizationId: org.id, threshold: 31, idempotencyKey: key } },
      org.service,
    );
    expect(conflict.data.setBalanceAlert.__typename).toBe('IdempotencyConflictError');
    expect(await alertsOf(t, org)).toHaveLength(1);
  });

  it('refuses thresholds out of range and an eleventh alert, naming the field', async ({ t }) => {
    const org = await newOrganization(t);
    for (const threshold of [0, -1, 2_000_000_001]) {
      const result = await t.gql(
        SET_ALERT,
        { input: { organizationId: org.id, threshold, idempotencyKey: uniqueKey() } },
        org.service,
      );
      expect(result.data.setBalanceAlert).toMatchObject({ __typename: 'InvalidInputError', field: 'threshold' });
    }
    await setAlert(t, org, 2_000_000_000);
    for (let i = 1; i <= 9; i += 1) await setAlert(t, org, i);
    const eleventh = await t.gql(
      SET_ALERT,
      { input: { organizationId: org.id, threshold: 77, idempotencyKey: uniqueKey() } },
      org.service,
    );
    expect(eleventh.data.setBalanceAlert.__typename).toBe('InvalidInputError');
    expect(eleventh.data.setBalanceAlert.message).toContain('at most 10');
    expect(await alertsOf(t, org)).toHaveLength(10);
    // Removing one frees a place.
    const [lowest] = await alertsOf(t, org);
    const removed = await t.gql(REMOVE_ALERT, { input: { alertId: lowest.id } }, org.service);
    expectSuccess(removed.data.removeBalanceAlert, 'RemoveBalanceAlertSuccess');
    expect(await setAlert(t, org, 77)).toMatchObject({ threshold: 77 });
  });

  it('names a missing organization NotFoundError', async ({ t }) => {
    const admin = await t.token('admin');
    const result = await t.gql(
      SET_ALERT,
      { input: { organizationId: '00000000-0000-4000-8000-000000000000', threshold: 5, idempotencyKey: 'k' } },
      admin,
    );
    expect(result.data.setBalanceAlert.__typename).toBe('NotFoundError');
  });

  it("removes an alert; another organization's alert answers like a missing one", async ({ t }) => {
    const org = await newOrganization(t);
    const other = await newOrganization(t);
    const alert = await setAlert(t, org, 50);
    const foreign = await t.gql(REMOVE_ALERT, { input: { alertId: alert.id } }, other.service);
    const missing = await t.gql(
      REMOVE_ALERT,
      { input: { alertId: '00000000-0000-4000-8000-000000000000' } },
      other.service,
    );
    expect(foreign.data.removeBalanceAlert).toEqual(missing.data.removeBalanceAlert);
    expect(foreign.data.removeBalanceAlert.__typename).toBe('NotFoundError');
    const removed = await t.gql(REMOVE_ALERT, { input: { alertId: alert.id } }, org.service);
    expectSuccess(removed.data.removeBalanceAlert, 'RemoveBalanceAlertSuccess');
    expect(await alertsOf(t, org)).toHaveLength(0);
    await reserve(t, org, textCredits(60)); // would have fired
    expect(await eventsOf(t, org.id)).toHaveLength(0);
    const again = await t.gql(REMOVE_ALERT, { input: { alertId: alert.id } }, org.service);
    expect(again.data.removeBalanceAlert.__typename).toBe('NotFoundError');
  });
});
