// Increases racing the settlement of the same reservation, on PostgreSQL, through two app
// instances (two pools, two organization queues: the database's lock is what orders them). Each
// increase lands wholly before the settlement or is refused after it; none is lost or half-done,
// the settlement covers exactly the credits held when it ran, and the journal stays whole.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../src/app.ts';
import { createTestApp, type TestApp } from '../support/app.ts';
import { hasPostgres } from '../support/database.ts';
import { graphqlRequest, readGraphQLResponse } from '../support/graphql.ts';
import { CAPTURE, INCREASE, REFUND } from '../support/operations.ts';
import { balanceOf, grant, newOrganization, reserve, textCredits, uniqueKey } from '../support/scenario.ts';

const INCREASES = 20;

describe.skipIf(!hasPostgres)('increases racing settlements (postgres)', () => {
  let t: TestApp;
  let second: ReturnType<typeof createApp>;

  beforeAll(async () => {
    t = await createTestApp('postgres', { maxConnections: 10 });
    second = createApp({ database: t.database, clock: t.clock, authKey: t.authKey, sweepIntervalMs: null });
  });
  afterAll(async () => {
    await second?.stop();
    await t?.close();
  });

  async function viaSecond(query: string, variables: Record<string, unknown>, token: string) {
    return readGraphQLResponse(
      await second.yoga.fetch('http://localhost/graphql', graphqlRequest(query, variables, { token })),
    );
  }

  for (const settlement of ['capture', 'refund'] as const) {
    it(`keeps every credit accounted for when ${INCREASES} increases race a ${settlement}`, async () => {
      for (let round = 0; round < 5; round++) {
        const org = await newOrganization(t); // 100 subscription
        await grant(t, org, 'PURCHASED', 1000);
        const { reservation } = await reserve(t, org, textCredits(10), { token: org.service });
        const increases = Array.from({ length: INCREASES }, (_, i) =>
          (i % 2 === 0 ? t.gql : viaSecond)(
            INCREASE,
            { input: { reservationId: reservation.id, additionalCredits: 3, idempotencyKey: uniqueKey('race') } },
            org.service,
          ),
        );
        const settled =
          settlement === 'capture'
            ? viaSecond(CAPTURE, { input: { reservationId: reservation.id } }, org.service)
            : t.gql(REFUND, { input: { reservationId: reservation.id } }, org.service);
        const answers = await Promise.all(increases);
        const final = (await settled).data[settlement === 'capture' ? 'captureReservation' : 'refundReservation'];
        const grown = answers.filter((a) => a.data.increaseReservation.__typename === 'IncreaseReservationSuccess');
        for (const answer of answers) {
          expect(['IncreaseReservationSuccess', 'ReservationStateError']).toContain(
            answer.data.increaseReservation.__typename,
          );
        }
        const amount = 10 + 3 * grown.length;
        expect(final.reservation.amount).toBe(amount);
        if (settlement === 'capture') expect(final.reservation.capturedAmount).toBe(amount);
        else expect(final.reservation.refundedAmount).toBe(amount);
        // Every success was seen before the settlement: it answered a pending reservation at most that large.
        for (const answer of grown)
          expect(answer.data.increaseReservation.reservation.amount).toBeLessThanOrEqual(amount);
        const balance = await balanceOf(t, org);
        expect(balance.reserved).toBe(0);
        expect(balance.available).toBe(settlement === 'capture' ? 1100 - amount : 1100);
      }
      expect(await t.audit()).toEqual([]);
    }, 120_000);
  }
});
