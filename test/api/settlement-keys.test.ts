// A client that lost the answer to a capture, refund or extension asks again with the same
// idempotency key and gets the answer the first request got, not "already captured"; the same key
// with other input is a conflict, and a refused request leaves its key free.
import { describe, expect } from 'vitest';
import { it, useTestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CAPTURE, EXTEND, LEDGER, REFUND } from '../support/operations.ts';
import { balanceOf, newOrganization, reserve, textCredits, uniqueKey } from '../support/scenario.ts';

describe.each(drivers)('idempotency keys of captures, refunds and extensions (%s)', (driver) => {
  useTestApp(driver);

  it('replays a capture retried with its key, consuming once', async ({ t }) => {
    const org = await newOrganization(t);
    const { reservation } = await reserve(t, org, textCredits(10));
    const key = uniqueKey('capture');
    const input = { reservationId: reservation.id, amount: 6, idempotencyKey: key };
    const first = (await t.gql(CAPTURE, { input }, org.service)).data.captureReservation;
    expect(first).toMatchObject({ __typename: 'CaptureReservationSuccess' });
    const retry = (await t.gql(CAPTURE, { input }, org.service)).data.captureReservation;
    expect(retry.__typename).toBe('CaptureReservationSuccess');
    expect(retry.reservation).toEqual(first.reservation);
    expect(retry.reservation).toMatchObject({ status: 'CAPTURED', capturedAmount: 6, refundedAmount: 4 });
    // Without the key, the same request is a second settlement, refused.
    const keyless = await t.gql(CAPTURE, { input: { reservationId: reservation.id, amount: 6 } }, org.service);
    expect(keyless.data.captureReservation).toMatchObject({ __typename: 'ReservationStateError', status: 'CAPTURED' });
    expect(await balanceOf(t, org)).toMatchObject({ available: 94, reserved: 0 });
    const ledger = await t.gql(LEDGER, { id: org.id, first: 10 }, org.member);
    const kinds = ledger.data.ledger.edges.map((edge: any) => edge.node.kind);
    expect(kinds.filter((kind: string) => kind === 'CAPTURE')).toHaveLength(1);
  });

  it('answers the same key with other input, another operation or another reservation as a conflict', async ({ t }) => {
    const org = await newOrganization(t);
    const { reservation } = await reserve(t, org, textCredits(10));
    const other = await reserve(t, org, textCredits(5));
    const key = uniqueKey('settle');
    await t.gql(CAPTURE, { input: { reservationId: reservation.id, amount: 6, idempotencyKey: key } }, org.service);
    const conflicts = await Promise.all([
      t.gql(CAPTURE, { input: { reservationId: reservation.id, amount: 7, idempotencyKey: key } }, org.service),
      // An amount left out is not the same input as the amount named.
      t.gql(CAPTURE, { input: { reservationId: reservation.id, idempotencyKey: key } }, org.service),
      t.gql(REFUND, { input: { reservationId: reservation.id, idempotencyKey: key } }, org.service),
      t.gql(CAPTURE, { input: { reservationId: other.reservation.id, idempotencyKey: key } }, org.service),
      t.gql(
        EXTEND,
        { input: { reservationId: other.reservation.id, ttlSeconds: 60, idempotencyKey: key } },
        org.service,
      ),
    ]);
    for (const answer of conflicts) {
      expect(Object.values(answer.data)[0]).toMatchObject({ __typename: 'IdempotencyConflictError' });
    }
    // The conflicting requests wrote nothing: the other reservation is still pending.
    expect(await balanceOf(t, org)).toMatchObject({ available: 89, reserved: 5 });
  });

  it('replays a refund and an extension with their first answers', async ({ t }) => {
    const org = await newOrganization(t);
    const refunded = await reserve(t, org, textCredits(10));
    const refundInput = {
      reservationId: refunded.reservation.id,
      reason: 'render failed',
      idempotencyKey: uniqueKey(),
    };
    const refund = (await t.gql(REFUND, { input: refundInput }, org.service)).data.refundReservation;
    const refundAgain = (await t.gql(REFUND, { input: refundInput }, org.service)).data.refundReservation;
    expect(refundAgain).toMatchObject({ __typename: 'RefundReservationSuccess' });
    expect(refundAgain.reservation).toEqual(refund.reservation);

    const extended = await reserve(t, org, textCredits(10), { ttlSeconds: 60 });
    const extendInput = { reservationId: extended.reservation.id, ttlSeconds: 600, idempotencyKey: uniqueKey() };
    const extend = (await t.gql(EXTEND, { input: extendInput }, org.service)).data.extendReservation;
    t.clock.advanceSeconds(30);
    // Retried later: the answer is the first one, not an expiry moved again from the new now.
    const extendAgain = (await t.gql(EXTEND, { input: extendInput }, org.service)).data.extendReservation;
    expect(extendAgain.reservation.expiresAt).toBe(extend.reservation.expiresAt);
    expect(extendAgain.reservation).toEqual(extend.reservation);
  });

  it('leaves the key of a refused request free', async ({ t }) => {
    const org = await newOrganization(t);
    const { reservation } = await reserve(t, org, textCredits(10));
    const key = uniqueKey();
    const tooMuch = await t.gql(
      CAPTURE,
      { input: { reservationId: reservation.id, amount: 11, idempotencyKey: key } },
      org.service,
    );
    expect(tooMuch.data.captureReservation).toMatchObject({ __typename: 'InvalidInputError', field: 'amount' });
    const missing = await t.gql(
      CAPTURE,
      { input: { reservationId: '00000000-0000-4000-8000-000000000000', idempotencyKey: key } },
      org.service,
    );
    expect(missing.data.captureReservation.__typename).toBe('NotFoundError');
    const right = await t.gql(
      CAPTURE,
      { input: { reservationId: reservation.id, amount: 10, idempotencyKey: key } },
      org.service,
    );
    expect(right.data.captureReservation).toMatchObject({ __typename: 'CaptureReservationSuccess' });
  });

  it("scopes keys to the organization: another organization's use of a key is its own", async ({ t }) => {
    const a = await newOrganization(t);
    const b = await newOrganization(t);
    const key = uniqueKey('shared');
    const ra = await reserve(t, a, textCredits(3));
    const rb = await reserve(t, b, textCredits(4));
    const captureA = await t.gql(
      CAPTURE,
      { input: { reservationId: ra.reservation.id, idempotencyKey: key } },
      a.service,
    );
    const captureB = await t.gql(
      CAPTURE,
      { input: { reservationId: rb.reservation.id, idempotencyKey: key } },
      b.service,
    );
    expect(captureA.data.captureReservation.reservation).toMatchObject({ capturedAmount: 3 });
    expect(captureB.data.captureReservation.reservation).toMatchObject({ capturedAmount: 4 });
    // B's token retrying A's request with A's key learns nothing: A's reservation is not B's.
    const probe = await t.gql(CAPTURE, { input: { reservationId: ra.reservation.id, idempotencyKey: key } }, b.service);
    expect(probe.data.captureReservation.__typename).toBe('IdempotencyConflictError');
  });

  it('replays both requests of one batch that carry the same key', async ({ t }) => {
    const org = await newOrganization(t);
    const ids = await Promise.all([1, 2, 3].map(async () => (await reserve(t, org, textCredits(2))).reservation.id));
    const key = uniqueKey();
    const answers = await Promise.all([
      t.gql(CAPTURE, { input: { reservationId: ids[0] } }, org.service),
      t.gql(CAPTURE, { input: { reservationId: ids[1], idempotencyKey: key } }, org.service),
      t.gql(CAPTURE, { input: { reservationId: ids[1], idempotencyKey: key } }, org.service),
      t.gql(REFUND, { input: { reservationId: ids[2], idempotencyKey: key } }, org.service),
    ]);
    const results = answers.map((answer) => Object.values(answer.data)[0] as any);
    expect(results.map((result) => result.__typename)).toEqual([
      'CaptureReservationSuccess',
      'CaptureReservationSuccess',
      'CaptureReservationSuccess',
      'IdempotencyConflictError',
    ]);
    expect(results[2].reservation).toEqual(results[1].reservation);
    expect(await balanceOf(t, org)).toMatchObject({ available: 94, reserved: 2 });
  });
});
