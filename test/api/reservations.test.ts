import { describe, expect } from 'vitest';
import { sweepUntilIdle } from '../../src/ledger/sweeper.ts';
import { it, useTestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CAPTURE, EXTEND, LEDGER, REFUND, RESERVATION } from '../support/operations.ts';
import { balanceOf, grant, newOrganization, reserve, textCredits, tryReserve, uniqueKey } from '../support/scenario.ts';

// Through yoga's whole HTTP pipeline, in process (`yoga.fetch`); test/api/http-server.test.ts
// sends the same operations to a listening server over a real socket.
describe.each(drivers)('reservations through the GraphQL pipeline in process (%s)', (driver) => {
  useTestApp(driver);

  it('pre-deducts the server-computed cost and reports the balance', async ({ t }) => {
    const org = await newOrganization(t);
    const result = await reserve(t, org, { modelId: 'image-standard', resolution: 'FHD_1080P', count: 2 });
    expect(result.__typename).toBe('ReserveCreditsSuccess');
    // 4 credits per image at 720p, x1.5 at 1080p = 6, two images.
    expect(result.reservation).toMatchObject({ status: 'PENDING', amount: 12, capturedAmount: 0, refundedAmount: 0 });
    expect(result.reservation.allocations).toEqual([{ lotId: expect.any(String), type: 'SUBSCRIPTION', amount: 12 }]);
    expect(result.balance).toMatchObject({ available: 88, reserved: 12 });
    expect(result.balance.accounts.map((a: { type: string }) => a.type)).toEqual([
      'SUBSCRIPTION',
      'PURCHASED',
      'PROMOTIONAL',
      'REFERRAL',
    ]);
  });

  it('consumes account types in priority order, spanning lots', async ({ t }) => {
    const org = await newOrganization(t); // 100 subscription
    await grant(t, org, 'REFERRAL', 50);
    await grant(t, org, 'PROMOTIONAL', 50, { expiresAt: '2026-06-01T00:00:00Z' });
    await grant(t, org, 'PURCHASED', 30);
    const result = await reserve(t, org, textCredits(100));
    expect(result.reservation.allocations).toEqual([{ lotId: expect.any(String), type: 'SUBSCRIPTION', amount: 100 }]);
    const next = await reserve(t, org, textCredits(60));
    expect(next.reservation.allocations.map((a: any) => [a.type, a.amount])).toEqual([
      ['PURCHASED', 30],
      ['PROMOTIONAL', 30],
    ]);
    const last = await reserve(t, org, textCredits(40));
    expect(last.reservation.allocations.map((a: any) => [a.type, a.amount])).toEqual([
      ['PROMOTIONAL', 20],
      ['REFERRAL', 20],
    ]);
    expect((await balanceOf(t, org)).available).toBe(30);
  });

  it('within one type uses the lot that expires first, never-expiring last, then the oldest', async ({ t }) => {
    const org = await newOrganization(t);
    const late = await grant(t, org, 'PROMOTIONAL', 10, { expiresAt: '2026-09-01T00:00:00Z' });
    const never = await grant(t, org, 'PROMOTIONAL', 10);
    const soon = await grant(t, org, 'PROMOTIONAL', 10, { expiresAt: '2026-03-01T00:00:00Z' });
    await reserve(t, org, textCredits(100)); // use up the subscription
    const result = await reserve(t, org, textCredits(25));
    expect(result.reservation.allocations.map((a: any) => [a.lotId, a.amount])).toEqual([
      [soon.lot.id, 10],
      [late.lot.id, 10],
      [never.lot.id, 5],
    ]);
  });

  it('refuses a reservation the balance does not fully cover, writing nothing', async ({ t }) => {
    const org = await newOrganization(t);
    const before = await balanceOf(t, org);
    const result = await tryReserve(t, org, textCredits(105));
    expect(result).toMatchObject({ __typename: 'InsufficientCreditsError', required: 105, available: 100 });
    expect(await balanceOf(t, org)).toEqual(before);
  });

  it('captures fully, or partially with the remainder refunded to the lots taken last', async ({ t }) => {
    const org = await newOrganization(t);
    await grant(t, org, 'PURCHASED', 50);
    const { reservation } = await reserve(t, org, textCredits(80));
    await reserve(t, org, textCredits(20)); // something else keeps the subscription busy
    const captured = await t.gql(CAPTURE, { input: { reservationId: reservation.id, amount: 90 } }, org.service);
    expect(captured.data.captureReservation).toMatchObject({ __typename: 'InvalidInputError', field: 'amount' });

    const partial = await t.gql(CAPTURE, { input: { reservationId: reservation.id, amount: 70 } }, org.service);
    expect(partial.data.captureReservation.reservation).toMatchObject({
      status: 'CAPTURED',
      capturedAmount: 70,
      refundedAmount: 10,
    });
    // The 80 came as 80 subscription; 70 consumed, 10 back to the subscription lot.
    const balance = partial.data.captureReservation.balance;
    expect(balance.accounts[0]).toMatchObject({ type: 'SUBSCRIPTION', available: 10, reserved: 20 });
    expect(balance.accounts[1]).toMatchObject({ type: 'PURCHASED', available: 50, reserved: 0 });
  });

  it('sends a partial-capture remainder back to the last lot first', async ({ t }) => {
    const org = await newOrganization(t);
    await grant(t, org, 'PURCHASED', 50);
    const { reservation } = await reserve(t, org, textCredits(130)); // 100 subscription + 30 purchased
    const result = await t.gql(CAPTURE, { input: { reservationId: reservation.id, amount: 110 } }, org.service);
    const balance = result.data.captureReservation.balance;
    expect(balance.accounts[0].available).toBe(0);
    expect(balance.accounts[1].available).toBe(40);
  });

  it('rejects a capture of 0 as invalid input', async ({ t }) => {
    const org = await newOrganization(t);
    const { reservation } = await reserve(t, org, textCredits(5));
    const result = await t.gql(CAPTURE, { input: { reservationId: reservation.id, amount: 0 } }, org.service);
    expect(result.data.captureReservation).toMatchObject({ __typename: 'InvalidInputError', field: 'amount' });
  });

  it('refunds every credit to the exact lots it came from', async ({ t }) => {
    const org = await newOrganization(t);
    await grant(t, org, 'PURCHASED', 50);
    const before = await balanceOf(t, org);
    const { reservation } = await reserve(t, org, textCredits(120));
    const result = await t.gql(
      REFUND,
      { input: { reservationId: reservation.id, reason: 'model crashed' } },
      org.service,
    );
    expect(result.data.refundReservation.reservation).toMatchObject({
      status: 'REFUNDED',
      refundedAmount: 120,
      capturedAmount: 0,
    });
    const after = result.data.refundReservation.balance;
    expect(after.accounts).toEqual(before.accounts);
    expect(after.version).toBe(before.version + 2);
  });

  it('settles a reservation exactly once', async ({ t }) => {
    const org = await newOrganization(t);
    const first = await reserve(t, org, textCredits(10));
    const id = first.reservation.id;
    await t.gql(CAPTURE, { input: { reservationId: id } }, org.service);
    const again = await t.gql(CAPTURE, { input: { reservationId: id } }, org.service);
    expect(again.data.captureReservation).toMatchObject({ __typename: 'ReservationStateError', status: 'CAPTURED' });
    const refund = await t.gql(REFUND, { input: { reservationId: id } }, org.service);
    expect(refund.data.refundReservation).toMatchObject({ __typename: 'ReservationStateError', status: 'CAPTURED' });

    const second = await reserve(t, org, textCredits(10));
    await t.gql(REFUND, { input: { reservationId: second.reservation.id } }, org.service);
    const capture = await t.gql(CAPTURE, { input: { reservationId: second.reservation.id } }, org.service);
    expect(capture.data.captureReservation).toMatchObject({ __typename: 'ReservationStateError', status: 'REFUNDED' });
    expect((await balanceOf(t, org)).available).toBe(90);
  });

  it('refunds once the time to live passes when swept, with the reason recorded', async ({ t }) => {
    const org = await newOrganization(t);
    const { reservation } = await reserve(t, org, textCredits(30), { ttlSeconds: 60 });
    t.clock.advanceSeconds(59);
    await sweepUntilIdle({ db: t.database.db, clock: t.clock });
    expect((await balanceOf(t, org)).reserved).toBe(30);
    t.clock.advanceSeconds(1);
    const swept = await sweepUntilIdle({ db: t.database.db, clock: t.clock });
    expect(swept.refundedReservations).toBeGreaterThanOrEqual(1);
    const read = await t.gql(RESERVATION, { id: reservation.id }, org.member);
    expect(read.data.reservation).toMatchObject({ status: 'REFUNDED', refundedAmount: 30 });
    expect(await balanceOf(t, org)).toMatchObject({ available: 100, reserved: 0 });
    const ledger = await t.gql(LEDGER, { id: org.id, first: 1 }, org.member);
    expect(ledger.data.ledger.edges[0].node).toMatchObject({ kind: 'REFUND', amount: 30, reservedChange: -30 });
    expect(ledger.data.ledger.edges[0].node.reason).toMatch(/expired/);
  });

  it('extends a pending reservation, and refuses to extend or capture one past its time', async ({ t }) => {
    const org = await newOrganization(t);
    const { reservation } = await reserve(t, org, textCredits(10), { ttlSeconds: 60 });
    t.clock.advanceSeconds(50);
    const extended = await t.gql(EXTEND, { input: { reservationId: reservation.id, ttlSeconds: 600 } }, org.service);
    expect(new Date(extended.data.extendReservation.reservation.expiresAt).getTime()).toBe(
      t.clock.now().getTime() + 600_000,
    );
    t.clock.advanceSeconds(599);
    expect((await sweepUntilIdle({ db: t.database.db, clock: t.clock })).refundedReservations).toBe(0);
    t.clock.advanceSeconds(1);
    const late = await t.gql(CAPTURE, { input: { reservationId: reservation.id } }, org.service);
    expect(late.data.captureReservation).toMatchObject({ __typename: 'ReservationStateError', status: 'REFUNDED' });
    expect(await balanceOf(t, org)).toMatchObject({ available: 100, reserved: 0 });
  });

  it('returns the same reservation for a repeated idempotency key, and a conflict for other input', async ({ t }) => {
    const org = await newOrganization(t);
    const key = uniqueKey();
    const first = await reserve(t, org, textCredits(10), { idempotencyKey: key, ttlSeconds: 60 });
    const again = await reserve(t, org, textCredits(10), { idempotencyKey: key, ttlSeconds: 300 });
    expect(again.reservation.id).toBe(first.reservation.id);
    const other = await tryReserve(t, org, textCredits(11), { idempotencyKey: key });
    expect(other.__typename).toBe('IdempotencyConflictError');
    expect((await balanceOf(t, org)).reserved).toBe(10);
  });

  it('does not use up a key on a refused reservation', async ({ t }) => {
    const org = await newOrganization(t);
    const key = uniqueKey();
    expect((await tryReserve(t, org, textCredits(150), { idempotencyKey: key })).__typename).toBe(
      'InsufficientCreditsError',
    );
    await grant(t, org, 'PURCHASED', 100);
    expect((await reserve(t, org, textCredits(150), { idempotencyKey: key })).__typename).toBe('ReserveCreditsSuccess');
  });

  it("answers for another organization's reservation exactly like a missing one", async ({ t }) => {
    const a = await newOrganization(t);
    const b = await newOrganization(t);
    const { reservation } = await reserve(t, a, textCredits(5));
    expect((await t.gql(RESERVATION, { id: reservation.id }, b.member)).data.reservation).toBeNull();
    const capture = await t.gql(CAPTURE, { input: { reservationId: reservation.id } }, b.service);
    const missing = await t.gql(
      CAPTURE,
      { input: { reservationId: '00000000-0000-4000-8000-000000000000' } },
      b.service,
    );
    expect(capture.data.captureReservation).toEqual(missing.data.captureReservation);
    expect(capture.data.captureReservation.__typename).toBe('NotFoundError');
  });
});

describe.each(drivers)('reservations with the background sweeper running (%s)', (driver) => {
  // The app's own sweeper runs every 20 ms (real time) against the test's manual clock; nothing
  // in this block sweeps by hand.
  useTestApp(driver, { app: { sweepIntervalMs: 20 } });

  it('refunds automatically once the time to live passes, and leaves one still within it', async ({ t }) => {
    const org = await newOrganization(t); // 100
    const short = await reserve(t, org, textCredits(30), { ttlSeconds: 60 });
    const long = await reserve(t, org, textCredits(20), { ttlSeconds: 120 });
    const statusOf = async (id: string) => (await t.gql(RESERVATION, { id }, org.member)).data.reservation.status;

    t.clock.advanceSeconds(60);
    await expect.poll(() => statusOf(short.reservation.id), { timeout: 15_000, interval: 20 }).toBe('REFUNDED');
    // A sweep at this time has run (it refunded the first); the second has 60 s left and stays.
    expect(await statusOf(long.reservation.id)).toBe('PENDING');
    expect(await balanceOf(t, org)).toMatchObject({ available: 80, reserved: 20 });
    const ledger = await t.gql(LEDGER, { id: org.id, first: 1 }, org.member);
    expect(ledger.data.ledger.edges[0].node).toMatchObject({
      kind: 'REFUND',
      amount: 30,
      reservedChange: -30,
      reservationId: short.reservation.id,
    });
    expect(ledger.data.ledger.edges[0].node.reason).toMatch(/expired/);

    t.clock.advanceSeconds(60);
    await expect.poll(() => statusOf(long.reservation.id), { timeout: 15_000, interval: 20 }).toBe('REFUNDED');
    expect(await balanceOf(t, org)).toMatchObject({ available: 100, reserved: 0 });
  });
});
