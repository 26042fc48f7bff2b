import { describe, expect } from 'vitest';
import { it, useTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CAPTURE, INCREASE, LEDGER, REFUND, RESERVATION } from '../support/operations.ts';
import {
  balanceOf,
  expectSuccess,
  grant,
  newOrganization,
  reserve,
  textCredits,
  uniqueKey,
  type TestOrganization,
} from '../support/scenario.ts';

// Rules (README, Growing a reservation): the additional credits come from the lots in
// consumption order as they stand at the increase, all or nothing; they are allocations of the
// reservation after its first ones, so capture consumes the earliest allocations first and returns
// the rest to the lots taken last; a refund returns every credit to its lot; nothing about the
// reservation's expiry changes; only a pending reservation may grow.

async function increase(
  t: TestApp,
  org: TestOrganization,
  reservationId: string,
  additionalCredits: number,
  key = uniqueKey('increase'),
) {
  const result = await t.gql(
    INCREASE,
    { input: { reservationId, additionalCredits, idempotencyKey: key } },
    org.service,
  );
  expect(result.errors).toBeUndefined();
  return result.data.increaseReservation;
}

async function byType(t: TestApp, org: TestOrganization) {
  const balance = await balanceOf(t, org);
  return Object.fromEntries(
    balance.accounts.map((a: { type: string; available: number; reserved: number }) => [
      a.type,
      [a.available, a.reserved],
    ]),
  );
}

async function entryCount(t: TestApp, org: TestOrganization): Promise<number> {
  const result = await t.gql(LEDGER, { id: org.id, first: 100 }, org.member);
  return result.data.ledger.edges.length;
}

describe.each(drivers)('growing a pending reservation (%s)', (driver) => {
  useTestApp(driver);

  /** 100 subscription (free plan), 50 purchased, 20 promotional; a reservation of 90. */
  async function funded(t: TestApp) {
    const org = await newOrganization(t);
    await grant(t, org, 'PURCHASED', 50);
    await grant(t, org, 'PROMOTIONAL', 20, { expiresAt: '2026-06-01T00:00:00Z' });
    const { reservation } = await reserve(t, org, textCredits(90), { token: org.service });
    return { org, reservation };
  }

  it('takes the additional credits in consumption order, after the first allocations', async ({ t }) => {
    const { org, reservation } = await funded(t);
    const grown = expectSuccess(await increase(t, org, reservation.id, 30), 'IncreaseReservationSuccess');
    expect(grown.reservation).toMatchObject({ id: reservation.id, status: 'PENDING', amount: 120 });
    expect(grown.reservation.expiresAt).toBe(reservation.expiresAt);
    expect(grown.reservation.allocations.map((a: { type: string; amount: number }) => [a.type, a.amount])).toEqual([
      ['SUBSCRIPTION', 90],
      ['SUBSCRIPTION', 10],
      ['PURCHASED', 20],
    ]);
    expect(grown.balance).toMatchObject({ available: 50, reserved: 120 });
    expect(await byType(t, org)).toMatchObject({ SUBSCRIPTION: [0, 100], PURCHASED: [30, 20], PROMOTIONAL: [20, 0] });
  });

  it('captures the earliest allocations first and returns the rest to the lots taken last', async ({ t }) => {
    const { org, reservation } = await funded(t);
    await increase(t, org, reservation.id, 30);
    const captured = await t.gql(CAPTURE, { input: { reservationId: reservation.id, amount: 105 } }, org.service);
    expect(captured.data.captureReservation.reservation).toMatchObject({
      status: 'CAPTURED',
      amount: 120,
      capturedAmount: 105,
      refundedAmount: 15,
    });
    // 100 subscription and 5 purchased consumed; 15 purchased back.
    expect(await byType(t, org)).toMatchObject({ SUBSCRIPTION: [0, 0], PURCHASED: [45, 0], PROMOTIONAL: [20, 0] });
  });

  it('refunds every credit of a grown reservation to the lot it came from', async ({ t }) => {
    const { org, reservation } = await funded(t);
    const before = await byType(t, org);
    await increase(t, org, reservation.id, 40); // 10 subscription, 30 purchased
    await increase(t, org, reservation.id, 30); // 20 purchased, 10 promotional
    const refunded = await t.gql(REFUND, { input: { reservationId: reservation.id } }, org.service);
    expect(refunded.data.refundReservation.reservation).toMatchObject({
      status: 'REFUNDED',
      amount: 160,
      refundedAmount: 160,
    });
    expect(await byType(t, org)).toEqual({
      ...before,
      SUBSCRIPTION: [100, 0],
      PURCHASED: [50, 0],
      PROMOTIONAL: [20, 0],
    });
  });

  it('refuses more than is available with InsufficientCreditsError, and writes nothing', async ({ t }) => {
    const { org, reservation } = await funded(t);
    const entries = await entryCount(t, org);
    const refused = await increase(t, org, reservation.id, 81); // 80 available
    expect(refused).toMatchObject({ __typename: 'InsufficientCreditsError', required: 81, available: 80 });
    expect(await entryCount(t, org)).toBe(entries);
    const read = await t.gql(RESERVATION, { id: reservation.id }, org.member);
    expect(read.data.reservation.amount).toBe(90);
    // Its key was not used up: a retry after a top-up succeeds.
    const key = uniqueKey('after-top-up');
    expect((await increase(t, org, reservation.id, 81, key)).__typename).toBe('InsufficientCreditsError');
    await grant(t, org, 'PURCHASED', 1);
    expect((await increase(t, org, reservation.id, 81, key)).__typename).toBe('IncreaseReservationSuccess');
  });

  it('grows once per key, and refuses the key for another amount', async ({ t }) => {
    const { org, reservation } = await funded(t);
    const key = uniqueKey('once');
    const first = await increase(t, org, reservation.id, 5, key);
    const again = await increase(t, org, reservation.id, 5, key);
    expect(again).toEqual(first);
    expect((await balanceOf(t, org)).reserved).toBe(95);
    expect(await increase(t, org, reservation.id, 6, key)).toMatchObject({ __typename: 'IdempotencyConflictError' });
    expect((await balanceOf(t, org)).reserved).toBe(95);
  });

  it('refuses a settled or expired reservation, bad amounts and another organization’s reservation', async ({ t }) => {
    const { org, reservation } = await funded(t);
    expect(await increase(t, org, reservation.id, 0)).toMatchObject({
      __typename: 'InvalidInputError',
      field: 'additionalCredits',
    });
    const stranger = await newOrganization(t);
    const hidden = await t.gql(
      INCREASE,
      { input: { reservationId: reservation.id, additionalCredits: 1, idempotencyKey: uniqueKey() } },
      stranger.service,
    );
    expect(hidden.data.increaseReservation.__typename).toBe('NotFoundError');
    await t.gql(CAPTURE, { input: { reservationId: reservation.id } }, org.service);
    expect(await increase(t, org, reservation.id, 1)).toMatchObject({
      __typename: 'ReservationStateError',
      status: 'CAPTURED',
    });

    const { reservation: shortLived } = await reserve(t, org, textCredits(1), { token: org.service, ttlSeconds: 60 });
    t.clock.advanceSeconds(61);
    expect(await increase(t, org, shortLived.id, 1)).toMatchObject({
      __typename: 'ReservationStateError',
      status: 'REFUNDED',
    });
  });
});
