// One organization's burst must not hold the connection pool while it waits for its own lock:
// a process runs at most one transaction per organization at a time (the organization queue),
// so every other organization keeps its connections, and settlements that pile up are written
// together. PostgreSQL only: the lock is held from another connection, as another process would.
import { describe, expect, vi } from 'vitest';
import { it, useTestApp, type TestApp } from '../support/app.ts';
import { hasPostgres } from '../support/database.ts';
import { databaseUrlOf, holdOrganizationLock, lockWaiters } from '../support/organization-lock.ts';
import { CAPTURE, CHANGE_PLAN, EXTEND, PURCHASE_PACK, REFUND } from '../support/operations.ts';
import {
  balanceOf,
  newOrganization,
  reserve,
  textCredits,
  uniqueKey,
  type TestOrganization,
} from '../support/scenario.ts';

describe.skipIf(!hasPostgres)('a noisy neighbour (postgres)', () => {
  // The test app's pool has 10 connections, as the server's default.
  useTestApp('postgres');

  async function pendingReservations(t: TestApp, org: TestOrganization, count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) ids.push((await reserve(t, org, textCredits(1))).reservation.id);
    return ids;
  }

  it('waits with one connection while its lock is held, and leaves the pool to every other organization', async ({
    t,
  }) => {
    const noisy = await newOrganization(t, { planId: 'pro' });
    const quiet = await newOrganization(t, { planId: 'free' });
    const ids = await pendingReservations(t, noisy, 40);
    const lock = await holdOrganizationLock(await databaseUrlOf(t.database), noisy.id);
    let burst: Promise<unknown[]>;
    try {
      // Every kind of write the noisy organization can send, far more than the pool holds.
      burst = Promise.all([
        ...ids.slice(0, 20).map((id) => t.gql(CAPTURE, { input: { reservationId: id } }, noisy.service)),
        ...ids.slice(20, 30).map((id) => t.gql(REFUND, { input: { reservationId: id } }, noisy.service)),
        ...ids.slice(30).map((id) => t.gql(EXTEND, { input: { reservationId: id, ttlSeconds: 3600 } }, noisy.service)),
        ...Array.from({ length: 10 }, (_, i) =>
          t.gql(CHANGE_PLAN, { input: { organizationId: noisy.id, planId: i % 2 ? 'pro' : 'free' } }, noisy.service),
        ),
        ...Array.from({ length: 10 }, () =>
          t.gql(
            PURCHASE_PACK,
            { input: { organizationId: noisy.id, packId: 'pack-500', paymentReference: uniqueKey('pay') } },
            noisy.service,
          ),
        ),
        ...Array.from({ length: 10 }, () => reserve(t, noisy, textCredits(1))),
      ]);
      await vi.waitFor(async () => expect(await lockWaiters(t.database)).toBe(1), { timeout: 10_000, interval: 20 });
      // Give the rest of the burst every chance to take more connections, then look again.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await lockWaiters(t.database)).toBe(1);
      // The quiet organization is served while the noisy one is still stuck on its lock.
      const quietReserve = await reserve(t, quiet, textCredits(7));
      expect(quietReserve.balance).toMatchObject({ available: 93, reserved: 7 });
      expect(await balanceOf(t, quiet)).toMatchObject({ available: 93, reserved: 7 });
      expect(t.database.poolStats?.().waiting ?? 0).toBe(0);
    } finally {
      await lock.release();
    }
    const answers = (await burst) as Array<{ data: Record<string, { __typename: string }> }>;
    const names = answers.map((answer) =>
      'data' in answer ? Object.values(answer.data)[0]!.__typename : (answer as { __typename: string }).__typename,
    );
    expect(names.slice(0, 20)).toEqual(Array(20).fill('CaptureReservationSuccess'));
    expect(names.slice(20, 30)).toEqual(Array(10).fill('RefundReservationSuccess'));
    expect(names.slice(30, 40)).toEqual(Array(10).fill('ExtendReservationSuccess'));
    expect(names.slice(40, 50)).toEqual(Array(10).fill('ChangePlanSuccess'));
    expect(names.slice(50, 60)).toEqual(Array(10).fill('PurchaseCreditPackSuccess'));
    expect(names.slice(60)).toEqual(Array(10).fill('ReserveCreditsSuccess'));
    expect(await t.audit()).toEqual([]);
  });

  it('writes settlements that piled up behind the lock in one batch, each with its own answer', async ({ t }) => {
    const org = await newOrganization(t, { planId: 'free' });
    const ids = await pendingReservations(t, org, 12);
    const versionBefore = (await balanceOf(t, org)).version;
    const lock = await holdOrganizationLock(await databaseUrlOf(t.database), org.id);
    let answers: Array<{ data: Record<string, any> }>;
    try {
      const burst = Promise.all([
        // The first request takes the organization's turn and waits on the lock; the rest queue
        // in memory behind it and are written together once it is through.
        t.gql(CAPTURE, { input: { reservationId: ids[0] } }, org.service),
        ...ids.slice(1, 6).map((id) => t.gql(CAPTURE, { input: { reservationId: id } }, org.service)),
        t.gql(CAPTURE, { input: { reservationId: ids[1] } }, org.service), // settled just before in the batch
        ...ids.slice(6, 11).map((id) => t.gql(REFUND, { input: { reservationId: id } }, org.service)),
        t.gql(CAPTURE, { input: { reservationId: ids[11], amount: 2 } }, org.service), // more than it holds
        t.gql(CAPTURE, { input: { reservationId: '00000000-0000-4000-8000-000000000000' } }, org.service),
      ]);
      await vi.waitFor(async () => expect(await lockWaiters(t.database)).toBe(1), { timeout: 10_000, interval: 20 });
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(await lockWaiters(t.database)).toBe(1);
      await lock.release();
      answers = (await burst) as typeof answers;
    } finally {
      await lock.release();
    }
    const results = answers.map((answer) => Object.values(answer.data)[0]);
    expect(results.map((result) => result.__typename)).toEqual([
      ...Array(6).fill('CaptureReservationSuccess'),
      'ReservationStateError',
      ...Array(5).fill('RefundReservationSuccess'),
      'InvalidInputError',
      'NotFoundError',
    ]);
    expect(results[6]).toMatchObject({ status: 'CAPTURED' });
    expect(results[12]).toMatchObject({ field: 'amount' });
    // Two transactions wrote: the first capture alone, then the batch behind it (one version each).
    expect((await balanceOf(t, org)).version - versionBefore).toBe(2);
    expect(await balanceOf(t, org)).toMatchObject({ available: 93, reserved: 1 });
    expect(await t.audit()).toEqual([]);
  });
});
