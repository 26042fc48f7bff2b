// Simultaneous reservations on PostgreSQL, through the whole GraphQL pipeline (yoga.fetch):
// however the requests interleave over the pool, an organization is never overdrawn, exactly as
// many reservations succeed as the balance covers, and nothing but typed results reaches a client.
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../../src/db/client.ts';
import { createTestApp, type TestApp } from '../support/app.ts';
import type { GraphQLResponse } from '../support/graphql.ts';
import { hasPostgres } from '../support/database.ts';
import { BALANCE, RESERVE } from '../support/operations.ts';
import { grant, newOrganization, textCredits, uniqueKey, type TestOrganization } from '../support/scenario.ts';

/** Sends `count` reservations at once, each with its own key, and waits for every answer. */
async function reserveAtOnce(
  t: TestApp,
  org: TestOrganization,
  count: number,
  credits: number,
): Promise<GraphQLResponse[]> {
  const generation = textCredits(credits);
  return Promise.all(
    Array.from({ length: count }, () =>
      t.gql(RESERVE, { input: { organizationId: org.id, idempotencyKey: uniqueKey('burst'), generation } }, org.member),
    ),
  );
}

/** Every answer is an HTTP 200 with a typed result: no masked error, deadlock or 500. */
function outcomes(responses: GraphQLResponse[]): Map<string, number> {
  const tally = new Map<string, number>();
  for (const response of responses) {
    expect(response.status).toBe(200);
    expect(response.errors).toBeUndefined();
    const name = response.data.reserveCredits.__typename as string;
    tally.set(name, (tally.get(name) ?? 0) + 1);
  }
  return tally;
}

async function lotFloor(t: TestApp, organizationId: string): Promise<{ minAvailable: number; minReserved: number }> {
  const [row] = rowsOf<{ min_available: number; min_reserved: number }>(
    await t.database.db.execute(sql`
      select min(available)::int as min_available, min(reserved)::int as min_reserved
      from credit_lots where organization_id = ${organizationId}`),
  );
  return { minAvailable: Number(row!.min_available), minReserved: Number(row!.min_reserved) };
}

/**
 * Deadlocks PostgreSQL detected in this database so far. A backend adds its counters to
 * pg_stat_database at most once a second, so first every backend of the pool is made to report
 * now (pg_stat_force_next_flush, PostgreSQL 15+; the backend reports before it answers): as many
 * statements at once as the pool has connections, which the pool hands one to each connection.
 */
async function deadlocks(t: TestApp, poolSize: number): Promise<number> {
  const pool = t.database.postgresClient!;
  const flushed = await Promise.all(
    Array.from(
      { length: poolSize },
      () => pool`select pg_backend_pid() as pid from pg_stat_force_next_flush(), pg_sleep(0.05)`,
    ),
  );
  expect(new Set(flushed.map(([row]) => row!.pid)).size).toBe(poolSize);
  const [row] = await pool`select deadlocks from pg_stat_database where datname = current_database()`;
  return Number(row!.deadlocks);
}

describe.skipIf(!hasPostgres)('simultaneous reservations (postgres)', () => {
  describe('200 at once over a pool of 10 connections', () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await createTestApp('postgres', { maxConnections: 10 });
    });
    afterAll(() => t?.close());

    it('lets exactly the half the balance covers succeed, across several lots and types', async () => {
      const org = await newOrganization(t); // 100 subscription credits
      await grant(t, org, 'PURCHASED', 100);
      await grant(t, org, 'PROMOTIONAL', 50, { expiresAt: '2026-06-01T00:00:00Z' });
      await grant(t, org, 'REFERRAL', 50);
      // 300 credits; 200 requests of 3 credits each ask for 600.
      const responses = await reserveAtOnce(t, org, 200, 3);
      const tally = outcomes(responses);
      expect(Object.fromEntries(tally)).toEqual({ ReserveCreditsSuccess: 100, InsufficientCreditsError: 100 });
      for (const response of responses) {
        const result = response.data.reserveCredits;
        if (result.__typename === 'InsufficientCreditsError') expect(result.required).toBe(3);
      }

      const ids = responses
        .filter((r) => r.data.reserveCredits.__typename === 'ReserveCreditsSuccess')
        .map((r) => r.data.reserveCredits.reservation.id);
      expect(new Set(ids).size).toBe(100);
      const balance = await t.gql(BALANCE, { id: org.id }, org.member);
      expect(balance.data.balance).toMatchObject({ available: 0, reserved: 300 });
      const floor = await lotFloor(t, org.id);
      expect(floor.minAvailable).toBe(0); // every lot drained to zero, none below
      expect(floor.minReserved).toBeGreaterThanOrEqual(0);
      expect(await t.audit()).toEqual([]);
    });
  });

  describe('1,000 at once over a pool of 24 connections', () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await createTestApp('postgres', { maxConnections: 24 });
    });
    afterAll(() => t?.close());

    it('lets exactly 500 succeed against a balance of 500, with no deadlock in the database and no 500 for a client', async () => {
      const org = await newOrganization(t); // 100 subscription credits
      await grant(t, org, 'PURCHASED', 250);
      await grant(t, org, 'PROMOTIONAL', 150, { expiresAt: '2026-12-01T00:00:00Z' });
      const deadlocksBefore = await deadlocks(t, 24);
      const started = performance.now();
      const responses = await reserveAtOnce(t, org, 1000, 1);
      const seconds = (performance.now() - started) / 1000;
      const tally = outcomes(responses);
      expect(Object.fromEntries(tally)).toEqual({ ReserveCreditsSuccess: 500, InsufficientCreditsError: 500 });
      const balance = await t.gql(BALANCE, { id: org.id }, org.member);
      expect(balance.data.balance).toMatchObject({ available: 0, reserved: 500 });
      const floor = await lotFloor(t, org.id);
      expect(floor.minAvailable).toBeGreaterThanOrEqual(0);
      expect(floor.minReserved).toBeGreaterThanOrEqual(0);
      const [count] = rowsOf<{ n: number }>(
        await t.database.db.execute(sql`select count(*)::int as n from reservations where organization_id = ${org.id}`),
      );
      expect(Number(count!.n)).toBe(500);
      expect(await t.audit()).toEqual([]);
      // Every write takes the organization's row lock first, so the database sees no deadlock at
      // all (one retried inside the ledger would not reach a client, but would still be a defect).
      console.log(`1,000 reservations in ${seconds.toFixed(1)} s`);
      expect((await deadlocks(t, 24)) - deadlocksBefore).toBe(0);
    });

    it('creates exactly one reservation for 50 simultaneous requests with one idempotency key', async () => {
      const org = await newOrganization(t);
      const key = uniqueKey('same');
      const generation = { modelId: 'image-standard', resolution: 'HD_720P', count: 2 }; // 8 credits
      const responses = await Promise.all(
        Array.from({ length: 50 }, () =>
          t.gql(
            RESERVE,
            { input: { organizationId: org.id, idempotencyKey: key, generation, ttlSeconds: 600 } },
            org.member,
          ),
        ),
      );
      expect(Object.fromEntries(outcomes(responses))).toEqual({ ReserveCreditsSuccess: 50 });
      const ids = new Set(responses.map((r) => r.data.reserveCredits.reservation.id));
      expect(ids.size).toBe(1);
      const [rows] = rowsOf<{ n: number; amount: number }>(
        await t.database.db.execute(sql`
          select count(*)::int as n, sum(amount)::int as amount from reservations
          where organization_id = ${org.id} and idempotency_key = ${key}`),
      );
      expect({ n: Number(rows!.n), amount: Number(rows!.amount) }).toEqual({ n: 1, amount: 8 });
      const balance = await t.gql(BALANCE, { id: org.id }, org.member);
      expect(balance.data.balance).toMatchObject({ available: 92, reserved: 8 });
      expect(await t.audit()).toEqual([]);
    });
  });
});
