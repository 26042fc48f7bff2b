import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openDatabase } from '../../src/db/client.ts';
import { createApp } from '../../src/app.ts';
import { secretKey } from '../../src/auth/tokens.ts';
import { ManualClock } from '../../src/clock.ts';
import { createTestApp, listenOverHttp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CAPTURE, REFUND, RESERVE } from '../support/operations.ts';
import { connectWs, subscribeSse, BALANCE_CHANGED } from '../support/realtime.ts';
import { newOrganization, textCredits, uniqueKey, type TestOrganization } from '../support/scenario.ts';
import { scrape, valueOf, type Sample } from './metrics-support.ts';

// GET /health, /ready and /metrics, and the x-request-id header, over real HTTP; the metrics must
// move with what the ledger did (a reservation, a capture, a refund, a sweeper refund).

const NAMED_RESERVE = RESERVE.replace('mutation (', 'mutation Reserve(');
const NAMED_CAPTURE = CAPTURE.replace('mutation (', 'mutation Capture(');

describe.each(drivers)('operating endpoints (%s)', (driver) => {
  let t: TestApp;
  let base: string;
  let org: TestOrganization;

  beforeAll(async () => {
    // A fast sweeper: the test moves the clock past a reservation's expiry and waits for it.
    t = await createTestApp(driver, { app: { sweepIntervalMs: 25 } });
    const { url, client } = await listenOverHttp(t);
    base = url.replace(/\/graphql$/, '');
    t = { ...t, gql: client.gql };
    org = await newOrganization(t);
  });
  afterAll(() => t?.close());

  it('GET /health answers 200 and GET /ready answers 200 {"status":"ready"} while the database answers', async () => {
    expect((await fetch(`${base}/health`)).status).toBe(200);
    const ready = await fetch(`${base}/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready' });
  });

  it("returns the caller's x-request-id, and a fresh one when the header is absent, too long or not plain", async () => {
    const post = (headers: Record<string, string>) =>
      fetch(`${base}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${org.member}`, ...headers },
        body: JSON.stringify({ query: '{ plans { id } }' }),
      });
    expect((await post({ 'x-request-id': 'req-42.a:b' })).headers.get('x-request-id')).toBe('req-42.a:b');
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    const absent = (await post({})).headers.get('x-request-id');
    expect(absent).toMatch(uuid);
    expect((await post({})).headers.get('x-request-id')).not.toBe(absent);
    expect((await post({ 'x-request-id': 'x'.repeat(129) })).headers.get('x-request-id')).toMatch(uuid);
    expect((await post({ 'x-request-id': 'two words"}' })).headers.get('x-request-id')).toMatch(uuid);
    // Refused requests carry one too (here: a body that is not JSON).
    const refused = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'refused-1' },
      body: '{',
    });
    expect((await refused.json()).errors).toHaveLength(1);
    expect(refused.headers.get('x-request-id')).toBe('refused-1');
  });

  it('counts reservations, captures, refunds and credits by account type, and operations by name and outcome', async () => {
    const before = await scrape(base);
    const reserve = async (credits: number, ttlSeconds?: number) => {
      const result = await t.gql(
        NAMED_RESERVE,
        {
          input: { organizationId: org.id, idempotencyKey: uniqueKey(), generation: textCredits(credits), ttlSeconds },
        },
        org.member,
      );
      return result.data.reserveCredits;
    };
    const first = await reserve(10);
    expect(first.__typename).toBe('ReserveCreditsSuccess');
    const partial = await t.gql(
      NAMED_CAPTURE,
      { input: { reservationId: first.reservation.id, amount: 6 } },
      org.service,
    );
    expect(partial.data.captureReservation.__typename).toBe('CaptureReservationSuccess');
    const second = await reserve(5);
    expect(
      (await t.gql(NAMED_CAPTURE, { input: { reservationId: second.reservation.id } }, org.service)).data
        .captureReservation.__typename,
    ).toBe('CaptureReservationSuccess');
    const third = await reserve(3);
    expect(
      (
        await t.gql(
          REFUND,
          { input: { reservationId: third.reservation.id, reason: 'generation failed' } },
          org.service,
        )
      ).data.refundReservation.__typename,
    ).toBe('RefundReservationSuccess');
    expect((await reserve(100)).__typename).toBe('InsufficientCreditsError');

    const delta = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
      valueOf(samples, name, labels) - valueOf(before, name, labels);
    // Credits by account type are counted once the lots' types are known (read after the commit).
    let after: Sample[] = [];
    await expect
      .poll(async () => {
        after = await scrape(base);
        return delta(after, 'credits_moved_total', { movement: 'refunded', account_type: 'SUBSCRIPTION' });
      })
      .toBe(4 + 3);
    expect(delta(after, 'credits_reservations_total', { outcome: 'reserved' })).toBe(3);
    expect(delta(after, 'credits_reservations_total', { outcome: 'partially_captured' })).toBe(1);
    expect(delta(after, 'credits_reservations_total', { outcome: 'captured' })).toBe(1);
    expect(delta(after, 'credits_reservations_total', { outcome: 'refunded', reason: 'requested' })).toBe(1);
    expect(delta(after, 'credits_reservations_total', { outcome: 'insufficient' })).toBe(1);
    expect(delta(after, 'credits_moved_total', { movement: 'reserved', account_type: 'SUBSCRIPTION' })).toBe(18);
    expect(delta(after, 'credits_moved_total', { movement: 'captured', account_type: 'SUBSCRIPTION' })).toBe(11);
    expect(
      delta(after, 'credits_graphql_operations_total', { operation: 'Reserve', type: 'mutation', outcome: 'success' }),
    ).toBe(3);
    expect(
      delta(after, 'credits_graphql_operations_total', {
        operation: 'Reserve',
        type: 'mutation',
        outcome: 'InsufficientCreditsError',
      }),
    ).toBe(1);
    expect(
      delta(after, 'credits_graphql_operations_total', { operation: 'Capture', type: 'mutation', outcome: 'success' }),
    ).toBe(2);
    expect(
      delta(after, 'credits_graphql_operation_duration_seconds_count', { operation: 'Reserve', type: 'mutation' }),
    ).toBe(4);
    // An operation refused for its token is counted with its error code.
    await t.gql('query Plans { plans { id } }', {}, null);
    expect(
      valueOf(await scrape(base), 'credits_graphql_operations_total', {
        operation: 'Plans',
        outcome: 'UNAUTHENTICATED',
      }),
    ).toBeGreaterThanOrEqual(1);
    // Default process and Node.js metrics are there too.
    expect(valueOf(after, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(after.some((sample) => sample.name === 'nodejs_eventloop_lag_seconds')).toBe(true);
    if (driver === 'postgres') expect(valueOf(after, 'credits_db_pool_size')).toBe(10);
    expect(valueOf(after, 'credits_database_up')).toBe(1);
  });

  it("counts the sweeper's runs and its refund of an expired reservation", async () => {
    const before = await scrape(base);
    const reserved = await t.gql(
      NAMED_RESERVE,
      { input: { organizationId: org.id, idempotencyKey: uniqueKey(), generation: textCredits(7), ttlSeconds: 60 } },
      org.member,
    );
    expect(reserved.data.reserveCredits.__typename).toBe('ReserveCreditsSuccess');
    t.clock.advance(61_000);
    let after: Sample[] = [];
    const delta = (name: string, labels: Record<string, string> = {}) =>
      valueOf(after, name, labels) - valueOf(before, name, labels);
    // The refund is counted once its transaction commits, the sweeper's item once its whole run
    // ends: wait for both, or a scrape between the two would see only the first.
    await expect
      .poll(
        async () => {
          after = await scrape(base);
          return [
            delta('credits_moved_total', { movement: 'refunded', account_type: 'SUBSCRIPTION' }),
            delta('credits_sweeper_items_total', { kind: 'reservation-refund' }),
          ];
        },
        { timeout: 15_000 },
      )
      .toEqual([7, 1]);
    expect(delta('credits_reservations_total', { outcome: 'refunded', reason: 'expired' })).toBe(1);
    expect(delta('credits_sweeper_items_total', { kind: 'reservation-refund' })).toBe(1);
    expect(delta('credits_sweeper_runs_total')).toBeGreaterThan(0);
    expect(valueOf(after, 'credits_sweeper_lag_seconds')).toBeLessThan(10);
    expect(delta('credits_sweeper_failures_total')).toBe(0);
  });

  it('counts open subscriptions by transport, and forgets them when they end', async () => {
    const open = async () => {
      const samples = await scrape(base);
      return [
        valueOf(samples, 'credits_subscriptions_open', { transport: 'ws' }),
        valueOf(samples, 'credits_subscriptions_open', { transport: 'sse' }),
      ];
    };
    expect(await open()).toEqual([0, 0]);
    const ws = connectWs(base, org.member);
    const wsSubscription = ws.subscribe(BALANCE_CHANGED, { id: org.id });
    const sse = subscribeSse(base, org.member, BALANCE_CHANGED, { id: org.id });
    await vi.waitFor(
      () => {
        expect(wsSubscription.recording.events).not.toHaveLength(0);
        expect(sse.recording.events).not.toHaveLength(0);
      },
      { timeout: 10_000 },
    );
    expect(await open()).toEqual([1, 1]);
    wsSubscription.unsubscribe();
    sse.close();
    await expect.poll(open, { timeout: 10_000 }).toEqual([0, 0]);
    await ws.dispose();
  });

  it('keeps operation names bounded: past 100 distinct names every new one counts as "other"', async () => {
    const admin = await t.token('admin');
    for (let i = 0; i < 120; i += 1) await t.gql(`query Distinct${i} { plans { id } }`, {}, admin);
    const names = new Set(
      (await scrape(base))
        .filter((sample) => sample.name === 'credits_graphql_operations_total')
        .map((sample) => sample.labels.operation),
    );
    // 100 names, "anonymous" (other tests' documents) and "other".
    expect(names.size).toBeLessThanOrEqual(102);
    expect(names).toContain('other');
    // A document that does not parse or validate never names a series.
    await t.gql('query Unparsed { nope', {}, admin);
    await t.gql('query Invalid { noSuchField }', {}, admin);
    const after = new Set((await scrape(base)).map((sample) => sample.labels.operation));
    expect(after).not.toContain('Unparsed');
    expect(after).not.toContain('Invalid');
  });
});

describe('GET /metrics with a METRICS_TOKEN, and GET /ready with migrations pending (pglite)', () => {
  it('serves /metrics only to a scraper presenting the token', async () => {
    const token = 'metrics-token-0123456789';
    const t = await createTestApp('pglite', { app: { metricsToken: token } });
    try {
      const { url } = await listenOverHttp(t);
      const base = url.replace(/\/graphql$/, '');
      expect((await fetch(`${base}/metrics`)).status).toBe(401);
      expect(
        (await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status,
      ).toBe(401);
      expect((await scrape(base, token)).length).toBeGreaterThan(0);
    } finally {
      await t.close();
    }
    const off = await createTestApp('pglite', { app: { metricsEnabled: false } });
    try {
      const { url } = await listenOverHttp(off);
      expect((await fetch(url.replace(/\/graphql$/, '/metrics'))).status).toBe(404);
    } finally {
      await off.close();
    }
  });

  it('answers 503 {"reason":"migrations pending"} on a database older than the code', async () => {
    const database = await openDatabase({});
    // As if this code shipped a migration the database has not had yet.
    await database.db.execute(
      sql`delete from drizzle.__drizzle_migrations where created_at = (select max(created_at) from drizzle.__drizzle_migrations)`,
    );
    const app = createApp({
      database,
      clock: new ManualClock(),
      authKey: secretKey('x'.repeat(32)),
      sweepIntervalMs: null,
    });
    try {
      const response = await app.yoga.fetch('http://localhost/ready');
      expect(response.status).toBe(503);
      expect(await response.json()).toEqual({ status: 'unavailable', reason: 'migrations pending' });
      expect((await app.yoga.fetch('http://localhost/health')).status).toBe(200);
    } finally {
      await app.stop();
      await database.close();
    }
  });
});
