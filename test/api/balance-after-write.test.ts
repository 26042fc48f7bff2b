import { describe, expect } from 'vitest';
import { it, useTestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CAPTURE, REFUND } from '../support/operations.ts';
import { balanceOf, grant, newOrganization, reserve, textCredits } from '../support/scenario.ts';

// A reservation, capture or refund answers with the balance its own transaction left, computed
// from the lots it read under the organization's lock instead of read again. It must be exactly
// what the `balance` query reads right afterwards, in every case: several lots and types, expired
// lots with credits still held, partial captures, a refund into an expired lot, a new cycle.
describe.each(drivers)('the balance a write answers with (%s)', (driver) => {
  useTestApp(driver);

  it('equals a fresh read after reserves, partial captures and refunds across types and expiries', async ({ t }) => {
    t.clock.set('2026-01-10T00:00:00Z');
    const org = await newOrganization(t); // 100 subscription credits
    await grant(t, org, 'PURCHASED', 30);
    await grant(t, org, 'PROMOTIONAL', 20, { expiresAt: '2026-01-10T12:00:00Z' });
    await grant(t, org, 'REFERRAL', 15, { expiresAt: '2026-01-20T00:00:00Z' });

    const first = await reserve(t, org, textCredits(120), { ttlSeconds: 86_400 }); // subscription 100, purchased 20
    expect(first.balance).toEqual(await balanceOf(t, org));
    const second = await reserve(t, org, textCredits(25), { ttlSeconds: 86_400 }); // purchased 10, promotional 15
    expect(second.balance).toEqual(await balanceOf(t, org));
    expect(second.balance).toMatchObject({ available: 20, reserved: 145 });

    const partial = await t.gql(CAPTURE, { input: { reservationId: first.reservation.id, amount: 50 } }, org.service);
    const captured = partial.data.captureReservation;
    expect(captured.__typename).toBe('CaptureReservationSuccess');
    expect(captured.balance).toEqual(await balanceOf(t, org));
    expect(captured.balance.version).toBe((await balanceOf(t, org)).version);

    // The promotional lot expires while 15 of its credits are held: they stay reserved, and a
    // refund into it expires them at once (the answer is then read again, and must still agree).
    t.clock.set('2026-01-10T13:00:00Z');
    const afterExpiry = await reserve(t, org, textCredits(5)); // the expired lot gives nothing
    expect(afterExpiry.balance).toEqual(await balanceOf(t, org));
    const refunded = await t.gql(REFUND, { input: { reservationId: second.reservation.id } }, org.service);
    expect(refunded.data.refundReservation.__typename).toBe('RefundReservationSuccess');
    expect(refunded.data.refundReservation.balance).toEqual(await balanceOf(t, org));
    expect(refunded.data.refundReservation.balance.accounts[2]).toMatchObject({
      type: 'PROMOTIONAL',
      available: 0,
      reserved: 0,
    });
  });

  it('equals a fresh read when the write first starts a new billing cycle', async ({ t }) => {
    t.clock.set('2026-03-01T00:00:00Z');
    const org = await newOrganization(t);
    t.clock.set('2026-03-31T12:00:00Z');
    const held = await reserve(t, org, textCredits(40), { ttlSeconds: 86_400 });
    // The next cycle begins before the capture: the old allowance expires, a new one is granted.
    t.clock.set('2026-04-01T00:00:01Z');
    const captured = await t.gql(CAPTURE, { input: { reservationId: held.reservation.id } }, org.service);
    expect(captured.data.captureReservation.__typename).toBe('CaptureReservationSuccess');
    expect(captured.data.captureReservation.balance).toEqual(await balanceOf(t, org));
    const next = await reserve(t, org, textCredits(10));
    expect(next.balance).toEqual(await balanceOf(t, org));
    expect(next.balance).toMatchObject({ available: 90, reserved: 10 });
  });

  it('leaves out a lot that a full capture emptied, as a read does', async ({ t }) => {
    const org = await newOrganization(t);
    await grant(t, org, 'PURCHASED', 10);
    const all = await reserve(t, org, textCredits(100)); // the whole subscription lot
    const captured = await t.gql(CAPTURE, { input: { reservationId: all.reservation.id } }, org.service);
    const balance = captured.data.captureReservation.balance;
    expect(balance).toEqual(await balanceOf(t, org));
    expect(balance.accounts[0]).toMatchObject({ type: 'SUBSCRIPTION', available: 0, reserved: 0, lots: [] });
  });

  it('gives every request of a batch the balance after the whole batch, which a read confirms', async ({ t }) => {
    const org = await newOrganization(t);
    const answers = await Promise.all(Array.from({ length: 8 }, () => reserve(t, org, textCredits(5))));
    const fresh = await balanceOf(t, org);
    expect(fresh).toMatchObject({ available: 60, reserved: 40 });
    // Each answer is the balance right after its own batch: never more spent than a read shows,
    // and the last batch's answer is exactly what a read shows.
    for (const answer of answers) expect(answer.balance.version).toBeLessThanOrEqual(fresh.version);
    const latest = answers.reduce((a, b) => (a.balance.version >= b.balance.version ? a : b));
    expect(latest.balance).toEqual(fresh);
  });
});
