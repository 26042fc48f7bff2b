import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApp, type App } from '../../src/app.ts';
import { secretKey, signToken } from '../../src/auth/tokens.ts';
import { ManualClock } from '../../src/clock.ts';
import { openDatabase, type Database } from '../../src/db/client.ts';
import { auditLedger } from '../../src/ledger/audit.ts';
import { TEST_SECRET } from '../support/app.ts';
import { createPostgresDatabase, hasPostgres } from '../support/database.ts';
import { BALANCE, CAPTURE, CREATE_ORGANIZATION, GRANT_CREDITS, RESERVE } from '../support/operations.ts';
import { textCredits, uniqueKey } from '../support/scenario.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';
import { expectNoLeak, type RawResponse } from '../security/http.ts';

// While PostgreSQL cannot be reached, every request must fail fast with SERVICE_UNAVAILABLE (not
// hang, not "Unexpected error"); once it is back the same process must serve again promptly, and
// retries with the same idempotency keys must not write anything twice.
//
// The server reaches PostgreSQL only through a TCP proxy the test controls: cutting the proxy
// drops every pooled connection and refuses new ones, as a failed database host would.

// A request sent while the database is down must be answered while it is still down: the test
// brings the database back only after those answers, so a request that waited for it would never
// be answered. This bound only turns such a hang into a failure; the answers take milliseconds (a
// refused connection is reported at once, and after the first failure the health gate refuses
// without touching the pool), so a loaded machine stays far below it.
const ANSWERED_WHILE_DOWN_MS = 10_000;
// Serving again promptly is the feature: the pool's reconnect delay is capped at 0.1 s and the
// health probe runs every 250 ms, where postgres.js's own backoff would keep the service down for
// up to 20 s after a long outage. Measured in hundreds of milliseconds; the margin is for load.
const RESUME_WITHIN_MS = 10_000;

describe.skipIf(!hasPostgres)('database outage (postgres)', () => {
  let proxy: TcpProxy;
  let database: Database;
  let app: App;
  let drop: () => Promise<void>;
  let databaseName: string;
  let admin: postgres.Sql;
  let tokens: { admin: string; member: string; service: string };
  let organizationId: string;
  const logged: string[] = [];

  async function post(
    query: string,
    variables: Record<string, unknown>,
    token: string,
  ): Promise<RawResponse & { ms: number }> {
    const started = performance.now();
    const response = await app.yoga.fetch('http://localhost/graphql', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json',
        authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ query, variables }),
    });
    const text = await response.text();
    return {
      status: response.status,
      headers: response.headers,
      text,
      body: JSON.parse(text),
      ms: performance.now() - started,
    };
  }

  function expectUnavailable(response: RawResponse & { ms: number }) {
    expect(response.status, response.text).toBe(503);
    expect(response.body.errors, response.text).toEqual([
      expect.objectContaining({
        message: expect.stringMatching(/database is unavailable/),
        extensions: { code: 'SERVICE_UNAVAILABLE' },
      }),
    ]);
    expect(response.headers.get('retry-after')).toBe('1');
    expect(response.ms).toBeLessThan(ANSWERED_WHILE_DOWN_MS);
    expectNoLeak(response);
  }

  /**
   * Polls a cheap read until it succeeds, within RESUME_WITHIN_MS; until then every answer must
   * be a proper SERVICE_UNAVAILABLE.
   */
  async function servingAgain(): Promise<void> {
    // waitUntil, not waitFor: a wrong answer must fail the test at once, not be retried.
    await vi.waitUntil(
      async () => {
        const response = await post(BALANCE, { id: organizationId }, tokens.member);
        if (response.status === 200 && !response.body.errors) return true;
        expectUnavailable(response);
        return false;
      },
      { timeout: RESUME_WITHIN_MS, interval: 50 },
    );
  }

  async function reservationsWithKey(key: string): Promise<number> {
    const [row] = await admin`select count(*)::int as n from reservations where idempotency_key = ${key}`;
    return row!.n as number;
  }

  async function balance() {
    const response = await post(BALANCE, { id: organizationId }, tokens.member);
    expect(response.body.errors, response.text).toBeUndefined();
    return response.body.data.balance as { available: number; reserved: number; version: number };
  }

  beforeAll(async () => {
    const created = await createPostgresDatabase();
    drop = created.drop;
    const direct = new URL(created.url);
    databaseName = direct.pathname.slice(1);
    // Two connections: one may be reserved to hold a lock while the other inspects.
    admin = postgres(created.url, { max: 2, onnotice: () => {} });
    proxy = new TcpProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
    const proxied = new URL(created.url);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(await proxy.start());
    database = await openDatabase({ databaseUrl: proxied.toString(), maxConnections: 10 });
    const authKey = secretKey(TEST_SECRET);
    app = createApp({
      database,
      clock: new ManualClock('2026-01-15T12:00:00Z'),
      authKey,
      // The sweeper keeps running through the outage, as in production; it must survive it too.
      sweepIntervalMs: 200,
      log: (message) => logged.push(message),
    });
    await app.start();
    const adminToken = await signToken({ subject: 'outage-admin', role: 'admin', expiresIn: '1h' }, authKey);
    const created_ = await post(CREATE_ORGANIZATION, { input: { name: 'Outage org', planId: 'free' } }, adminToken);
    organizationId = created_.body.data.createOrganization.organization.id;
    const granted = await post(
      GRANT_CREDITS,
      {
        input: {
          organizationId,
          type: 'PURCHASED',
          amount: 10_000,
          reason: 'outage test',
          idempotencyKey: uniqueKey(),
        },
      },
      adminToken,
    );
    expect(granted.body.data.grantCredits.__typename).toBe('GrantCreditsSuccess');
    tokens = {
      admin: adminToken,
      member: await signToken({ subject: 'outage-member', role: 'member', organizationId, expiresIn: '1h' }, authKey),
      service: await signToken(
        { subject: 'outage-service', role: 'service', organizationId, expiresIn: '1h' },
        authKey,
      ),
    };
  });

  // A failed test must not leave the next one without its database.
  afterEach(() => proxy?.restore());
  afterAll(async () => {
    await proxy?.restore();
    await app?.stop();
    await database?.close();
    await admin?.end();
    await proxy?.close();
    await drop?.();
  });

  it('takes the instance out of a load balancer during the outage: GET /ready answers 503, then 200 once the database is back', async () => {
    const ready = async () => {
      const started = performance.now();
      const response = await app.yoga.fetch('http://localhost/ready');
      return {
        status: response.status,
        body: (await response.json()) as Record<string, string>,
        ms: performance.now() - started,
      };
    };
    expect(await ready()).toMatchObject({ status: 200, body: { status: 'ready' } });

    await proxy.cut();
    // The probe itself notices the outage (no request has to fail first), answers within its own
    // bound while the database cannot be reached, and /health still says the process serves.
    const down = await ready();
    expect(down).toMatchObject({ status: 503, body: { status: 'unavailable', reason: 'database unavailable' } });
    expect(down.ms).toBeLessThan(ANSWERED_WHILE_DOWN_MS);
    expect((await ready()).status).toBe(503);
    expect((await app.yoga.fetch('http://localhost/health')).status).toBe(200);
    const metrics = await (await app.yoga.fetch('http://localhost/metrics')).text();
    expect(metrics).toMatch(/^credits_database_up 0$/m);
    expect(logged).toContain('database unreachable; refusing requests until it answers again');

    await proxy.restore();
    const started = performance.now();
    await expect.poll(async () => (await ready()).status, { timeout: RESUME_WITHIN_MS, interval: 100 }).toBe(200);
    expect(performance.now() - started).toBeLessThan(RESUME_WITHIN_MS);
    expect(logged).toContain('database reachable again');
    expect(await (await app.yoga.fetch('http://localhost/metrics')).text()).toMatch(/^credits_database_up 1$/m);
  });

  it('fails fast with SERVICE_UNAVAILABLE while the database is unreachable, and serves again once it is back', async () => {
    const pending = await post(
      RESERVE,
      { input: { organizationId, idempotencyKey: uniqueKey(), generation: textCredits(10) } },
      tokens.member,
    );
    const reservationId = pending.body.data.reserveCredits.reservation.id as string;
    const before = await balance();

    await proxy.cut();
    // Requests keep coming during the outage (reads, reserves, captures), as real traffic would;
    // each must be refused, also after the driver has failed to reconnect many times: at least
    // three rounds, and for at least 2.5 s (ten probes that cannot connect).
    const key = uniqueKey('during-outage');
    const outageStarted = performance.now();
    let rounds = 0;
    while (rounds < 3 || performance.now() - outageStarted < 2_500) {
      expectUnavailable(await post(BALANCE, { id: organizationId }, tokens.member));
      expectUnavailable(
        await post(
          RESERVE,
          { input: { organizationId, idempotencyKey: key, generation: textCredits(5) } },
          tokens.member,
        ),
      );
      expectUnavailable(await post(CAPTURE, { input: { reservationId } }, tokens.service));
      rounds += 1;
    }

    await proxy.restore();
    await servingAgain();

    // The refused requests changed nothing; their retries now succeed, once.
    expect(await balance()).toEqual(before);
    const retried = await post(
      RESERVE,
      { input: { organizationId, idempotencyKey: key, generation: textCredits(5) } },
      tokens.member,
    );
    const again = await post(
      RESERVE,
      { input: { organizationId, idempotencyKey: key, generation: textCredits(5) } },
      tokens.member,
    );
    expect(retried.body.data.reserveCredits.__typename).toBe('ReserveCreditsSuccess');
    expect(again.body.data.reserveCredits.reservation.id).toBe(retried.body.data.reserveCredits.reservation.id);
    expect(await reservationsWithKey(key)).toBe(1);
    const captured = await post(CAPTURE, { input: { reservationId } }, tokens.service);
    expect(captured.body.data.captureReservation.__typename).toBe('CaptureReservationSuccess');
    expect(await auditLedger(database.db)).toEqual([]);
  });

  it('writes each reservation once when the database goes away in the middle of a burst', async () => {
    const before = await balance();
    const keys = Array.from({ length: 40 }, () => uniqueKey('burst'));
    const reserveWith = (key: string) =>
      post(RESERVE, { input: { organizationId, idempotencyKey: key, generation: textCredits(3) } }, tokens.member);

    // Cut as soon as the first of them has been written, so that the others are caught at every
    // stage: queued for a connection, inside their transaction, or waiting for the commit's answer.
    const burst = keys.map((key) => reserveWith(key));
    await Promise.race(burst);
    await proxy.cut();
    const cutAt = performance.now();
    const first = await Promise.all(burst);
    // Every request caught by the cut is answered while the database is still down (each one's
    // own time includes its wait for a pooled connection before the cut, so the bound is taken
    // from the cut).
    expect(performance.now() - cutAt).toBeLessThan(ANSWERED_WHILE_DOWN_MS);
    await proxy.restore();

    const outcomes = first.map((response) =>
      response.status === 200 ? response.body.data.reserveCredits.__typename : response.body.errors[0].extensions.code,
    );
    for (const outcome of outcomes) expect(['ReserveCreditsSuccess', 'SERVICE_UNAVAILABLE']).toContain(outcome);
    for (const response of first) if (response.status !== 200) expectUnavailable({ ...response, ms: 0 });
    // The cut came after the first answer (a success) and caught the rest of the burst: the
    // reservations of one organization run one at a time behind its row lock, so dozens are still
    // queued or inside their transactions when the first one is answered.
    expect(outcomes).toContain('ReserveCreditsSuccess');
    expect(outcomes.filter((outcome) => outcome === 'SERVICE_UNAVAILABLE').length).toBeGreaterThan(0);

    await servingAgain();
    // A client retries every request that did not get an answer it trusts, with the same key.
    const retried = await Promise.all(
      keys.map((key, i) => (outcomes[i] === 'ReserveCreditsSuccess' ? first[i]! : reserveWith(key))),
    );
    const ids = retried.map((response) => response.body.data.reserveCredits.reservation.id as string);
    expect(new Set(ids).size).toBe(keys.length);
    for (const [i, response] of first.entries()) {
      if (outcomes[i] === 'ReserveCreditsSuccess')
        expect(response.body.data.reserveCredits.reservation.id).toBe(ids[i]);
    }
    for (const key of keys) expect(await reservationsWithKey(key)).toBe(1);
    const after = await balance();
    expect(after.reserved - before.reserved).toBe(3 * keys.length);
    expect(before.available - after.available).toBe(3 * keys.length);
    expect(await auditLedger(database.db)).toEqual([]);
  });

  it('answers SERVICE_UNAVAILABLE when its backend is terminated mid-request, then serves again', async () => {
    // Hold the organization's row lock from outside, so that a reservation is certainly waiting
    // inside its transaction when its backend is terminated.
    const blocker = await admin.reserve();
    const key = uniqueKey('terminated');
    try {
      await blocker`begin`;
      await blocker`select id from organizations where id = ${organizationId} for update`;
      const blockerPid = (await blocker`select pg_backend_pid() as pid`)[0]!.pid as number;
      const waiting = post(
        RESERVE,
        { input: { organizationId, idempotencyKey: key, generation: textCredits(7) } },
        tokens.member,
      );
      const waitingPids = async () =>
        (
          await admin`select pid from pg_stat_activity where datname = ${databaseName} and wait_event_type = 'Lock'`
        ).map((row) => row.pid as number);
      await expect.poll(waitingPids, { timeout: 15_000 }).toHaveLength(1);
      const [waitingPid] = await waitingPids();
      // Every backend of the service (its pool, with the waiting reservation, and its listener).
      const terminated = await admin`
        select pid, pg_terminate_backend(pid) as terminated from pg_stat_activity
        where datname = ${databaseName} and pid <> pg_backend_pid() and pid <> ${blockerPid}`;
      expect(terminated.map((row) => row.pid)).toContain(waitingPid);
      expect(terminated.map((row) => row.terminated)).toEqual(terminated.map(() => true));
      expectUnavailable(await waiting);
    } finally {
      await blocker`rollback`;
      blocker.release();
    }

    // Every pooled connection died with its backend; none of them may fail a request now, also
    // when a burst needs every one of them.
    await servingAgain();
    const reads = await Promise.all(
      Array.from({ length: 20 }, () => post(BALANCE, { id: organizationId }, tokens.member)),
    );
    for (const read of reads) expect(read.body.errors, read.text).toBeUndefined();
    const retried = await post(
      RESERVE,
      { input: { organizationId, idempotencyKey: key, generation: textCredits(7) } },
      tokens.member,
    );
    expect(retried.body.data.reserveCredits.__typename).toBe('ReserveCreditsSuccess');
    expect(await reservationsWithKey(key)).toBe(1);
    expect(await auditLedger(database.db)).toEqual([]);
  });
});
