import { SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Db } from '../../src/db/client.ts';
import { grantCredits } from '../../src/ledger/grants.ts';
import { reserveCredits } from '../../src/ledger/reservations.ts';
import { sweepUntilIdle } from '../../src/ledger/sweeper.ts';
import { QUERY_ALIASES_MAX } from '../../src/server/protection.ts';
import { createTestApp, TEST_SECRET, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CAPTURE, PURCHASE_PACK, REFUND } from '../support/operations.ts';
import {
  BALANCE_CHANGED,
  connectWs,
  subscribeSse,
  type Recording,
  type SseSubscription,
  type WsConnection,
} from '../support/realtime.ts';
import {
  balanceOf,
  grant,
  newOrganization,
  reserve,
  textCredits,
  uniqueKey,
  type TestOrganization,
} from '../support/scenario.ts';

// Starting an app on a fresh PGlite database (WebAssembly start-up, then every migration) took 20
// to 40 s on a loaded 2-core machine, more than a test's or hook's default minute allows for sure.
const APP_START_MS = 180_000;

describe.each(drivers)('live balance subscription (%s)', (driver) => {
  let t: TestApp;
  let baseUrl: string;
  const connections: WsConnection[] = [];
  const streams: SseSubscription[] = [];

  beforeAll(async () => {
    t = await createTestApp(driver);
    const port = await t.app.listen(0, '127.0.0.1');
    baseUrl = `http://127.0.0.1:${port}`;
  }, APP_START_MS);
  afterEach(async () => {
    await Promise.all(connections.splice(0).map((connection) => connection.dispose()));
    for (const stream of streams.splice(0)) stream.close();
    expect(await t.audit()).toEqual([]);
  });
  afterAll(() => t?.close());

  function ws(token: string | null): WsConnection {
    const connection = connectWs(baseUrl, token);
    connections.push(connection);
    return connection;
  }

  function subscribeWs(org: TestOrganization, token = org.member): Recording {
    return ws(token).subscribe(BALANCE_CHANGED, { id: org.id }).recording;
  }

  function subscribeOverSse(org: TestOrganization, token: string | null = org.member): SseSubscription {
    const stream = subscribeSse(baseUrl, token, BALANCE_CHANGED, { id: org.id });
    streams.push(stream);
    return stream;
  }

  /** Runs one change and expects exactly one event for it, one version newer than the last. */
  async function expectOneEvent(recording: Recording, change: () => Promise<unknown>) {
    const before = recording.versions;
    const next = before.at(-1)! + 1;
    await change();
    await recording.waitForVersion(next);
    expect(recording.versions).toEqual([...before, next]);
    return recording.lastBalance;
  }

  const sweep = () => sweepUntilIdle({ db: t.database.db, clock: t.clock });

  it('sends the current balance, then one event per change in version order (graphql-ws)', async () => {
    const org = await newOrganization(t); // free plan: 100 subscription credits
    const recording = subscribeWs(org);
    await recording.waitFor((r) => r.balances.length === 1);
    expect(recording.lastBalance).toMatchObject({ organizationId: org.id, available: 100, reserved: 0 });

    let reserved: any;
    const held = await expectOneEvent(recording, async () => {
      reserved = await reserve(t, org, textCredits(10));
    });
    expect(held).toMatchObject({ available: 90, reserved: 10 });

    const captured = await expectOneEvent(recording, () =>
      t.gql(CAPTURE, { input: { reservationId: reserved.reservation.id, amount: 4 } }, org.service),
    );
    expect(captured).toMatchObject({ available: 96, reserved: 0 });

    let pending: any;
    await expectOneEvent(recording, async () => {
      pending = await reserve(t, org, textCredits(20));
    });
    const refunded = await expectOneEvent(recording, () =>
      t.gql(REFUND, { input: { reservationId: pending.reservation.id } }, org.service),
    );
    expect(refunded).toMatchObject({ available: 96, reserved: 0 });

    const granted = await expectOneEvent(recording, () =>
      grant(t, org, 'PROMOTIONAL', 50, { expiresAt: '2026-01-15T14:00:00Z' }),
    );
    expect(granted).toMatchObject({ available: 146 });

    const purchased = await expectOneEvent(recording, () =>
      t.gql(
        PURCHASE_PACK,
        { input: { organizationId: org.id, packId: 'pack-500', paymentReference: uniqueKey('pay') } },
        org.service,
      ),
    );
    expect(purchased).toMatchObject({ available: 646 });

    // The sweeper refunds a reservation whose time to live passed; no client asks for it.
    await expectOneEvent(recording, () => reserve(t, org, textCredits(5), { ttlSeconds: 60 }));
    t.clock.advanceSeconds(61);
    const autoRefunded = await expectOneEvent(recording, sweep);
    expect(autoRefunded).toMatchObject({ available: 646, reserved: 0 });

    // The promotional lot expires.
    t.clock.set('2026-01-15T14:00:01Z');
    const expired = await expectOneEvent(recording, sweep);
    expect(expired).toMatchObject({ available: 596 });

    // A new billing cycle: the 96 unused subscription credits expire and 100 are granted.
    t.clock.set('2026-02-15T12:00:01Z');
    const reset = await expectOneEvent(recording, sweep);
    expect(reset).toMatchObject({ available: 600 });
    expect(reset.accounts[0]).toMatchObject({ type: 'SUBSCRIPTION', available: 100 });

    const versions = recording.versions;
    expect(versions).toEqual(versions.map((_, index) => versions[0]! + index));
    expect(recording.events.every((event) => event.errors === undefined)).toBe(true);
  });

  it('serves the same subscription over Server-Sent Events', async () => {
    const org = await newOrganization(t);
    const stream = subscribeOverSse(org);
    expect(await stream.status).toBe(200);
    await stream.recording.waitFor((r) => r.balances.length === 1);
    expect(stream.recording.lastBalance).toMatchObject({ organizationId: org.id, available: 100 });
    const changed = await expectOneEvent(stream.recording, () => reserve(t, org, textCredits(30)));
    expect(changed).toMatchObject({ available: 70, reserved: 30 });
  });

  it("never shows another organization's numbers", async () => {
    const mine = await newOrganization(t, { name: 'Mine' });
    const theirs = await newOrganization(t, { name: 'Theirs' });

    const overWs = ws(mine.member).subscribe(BALANCE_CHANGED, { id: theirs.id }).recording;
    await overWs.waitForEnd();
    expect(overWs.balances).toEqual([]);
    expect(overWs.events[0]?.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(overWs.events[0]?.data ?? null).toBeNull();

    const overSse = subscribeOverSse(theirs, mine.member);
    await overSse.recording.waitForEnd();
    expect(overSse.recording.balances).toEqual([]);
    expect(overSse.recording.events[0]?.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(overSse.recording.events[0]?.data ?? null).toBeNull();

    const recording = subscribeWs(mine);
    await recording.waitFor((r) => r.balances.length === 1);
    await reserve(t, theirs, textCredits(40));
    await expectOneEvent(recording, () => reserve(t, mine, textCredits(1)));
    expect(recording.balances.map((balance) => balance.organizationId)).toEqual([mine.id, mine.id]);
    expect(recording.lastBalance.available).toBe(99);
  });

  it('rejects a missing, forged or expired token with close code 4401, and over SSE with UNAUTHENTICATED', async () => {
    const org = await newOrganization(t);
    const forged = await new SignJWT({ role: 'member', org: org.id })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('intruder')
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('another-secret-that-is-long-enough-for-hs256'));
    const expired = await new SignJWT({ role: 'member', org: org.id })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('late')
      .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
      .sign(new TextEncoder().encode(TEST_SECRET));

    for (const token of [null, forged, expired, 'not-a-jwt']) {
      const connection = ws(token);
      const { recording } = connection.subscribe(BALANCE_CHANGED, { id: org.id });
      await recording.waitForEnd();
      expect(recording.events).toEqual([]);
      expect(connection.closeCode()).toBe(4401);
    }

    const overSse = subscribeOverSse(org, forged);
    await overSse.recording.waitForEnd();
    expect(overSse.recording.balances).toEqual([]);
    expect(overSse.recording.events[0]?.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });

  it('ends the subscription when the token expires while connected', async () => {
    const org = await newOrganization(t);
    const shortLived = await t.token('member', org.id, '2s');
    const overWs = subscribeWs(org, shortLived);
    const overSse = subscribeOverSse(org, shortLived);
    for (const recording of [overWs, overSse.recording]) {
      await recording.waitFor((r) => r.balances.length === 1);
      await recording.waitForEnd(15_000);
      expect(recording.events.at(-1)?.errors?.[0]).toMatchObject({
        message: 'The token has expired.',
        extensions: { code: 'UNAUTHENTICATED' },
      });
      expect(recording.balances).toHaveLength(1);
    }
    expect(overWs.completed).toBe(true);
    expect(overSse.recording.completed).toBe(true);
    await vi.waitFor(() => expect(t.app.notifier.stats().subscribers).toBe(0), { timeout: 10_000 });
  });

  it('answers a burst of 100 ledger writes committed together with one read, fanned out to every subscriber', async () => {
    const org = await newOrganization(t); // 100 subscription credits
    const recordings = Array.from({ length: 5 }, () => subscribeWs(org));
    for (const recording of recordings) await recording.waitFor((r) => r.balances.length === 1);
    const first = recordings[0]!.versions[0]!;
    const loadsBefore = t.app.notifier.stats().loads;

    // 50 grants and 50 reservations through the ledger's own functions, committed together (as a
    // batch job would, in one transaction): their 100 notifications arrive together.
    await t.database.db.transaction(async (tx) => {
      const batch = { db: tx as unknown as Db, clock: t.clock };
      for (let i = 0; i < 50; i += 1) {
        await grantCredits(batch, {
          organizationId: org.id,
          type: 'PROMOTIONAL',
          amount: 3,
          reason: 'burst',
          idempotencyKey: uniqueKey('burst-grant'),
        });
        await reserveCredits(batch, {
          organizationId: org.id,
          idempotencyKey: uniqueKey('burst-reserve'),
          generation: textCredits(2),
        });
      }
    });
    for (const recording of recordings) {
      await recording.waitForVersion(first + 100);
      expect(recording.versions).toEqual([first, first + 100]);
      expect(recording.lastBalance).toMatchObject({ available: 100 + 50 * 3 - 50 * 2, reserved: 50 * 2 });
    }
    expect(t.app.notifier.stats().loads - loadsBefore).toBe(1);
  });

  it('keeps versions growing for every subscriber under 100 concurrent reservations', async () => {
    const org = await newOrganization(t);
    await grant(t, org, 'PURCHASED', 1000);
    const recordings = [subscribeWs(org), subscribeWs(org), subscribeOverSse(org).recording];
    for (const recording of recordings) await recording.waitFor((r) => r.balances.length === 1);
    const first = recordings[0]!.versions[0]!;
    const before = t.app.notifier.stats();

    const results = await Promise.all(Array.from({ length: 100 }, () => reserve(t, org, textCredits(5))));
    expect(results.every((result) => result.__typename === 'ReserveCreditsSuccess')).toBe(true);

    // Simultaneous reservations may share a commit (and a version), so the end is a balance, not
    // a version number: every subscriber ends on the balance after all 100, versions growing.
    const final = await balanceOf(t, org);
    expect(final).toMatchObject({ available: 600, reserved: 500 });
    for (const recording of recordings) {
      await recording.waitForVersion(final.version);
      const versions = recording.versions;
      expect(versions.every((version, index) => index === 0 || version > versions[index - 1]!)).toBe(true);
      expect(recording.lastBalance).toMatchObject({ available: 600, reserved: 500, version: final.version });
    }
    const after = t.app.notifier.stats();
    const heard = after.notifications - before.notifications;
    const loads = after.loads - before.loads;
    // Every commit (one version each) was heard, and answered by reads shared by all three
    // subscribers: each read gives a newer balance that is offered to every subscriber, so the
    // distinct balances they received after their first are exactly the reads made (a read per
    // subscriber would make three times as many), and there is at most one read per change heard.
    expect(heard).toBeGreaterThanOrEqual(final.version - first);
    const received = new Set(recordings.flatMap((recording) => recording.versions.slice(1)));
    expect(loads).toBe(received.size);
    expect(loads).toBeLessThanOrEqual(heard);
  });

  it('runs graphql-ws operations through the same pipeline as HTTP (limits, queries)', async () => {
    const org = await newOrganization(t);
    const connection = ws(org.member);
    const aliases = Array.from({ length: QUERY_ALIASES_MAX + 1 }, (_, index) => `v${index}: version`).join(' ');
    const refused = connection.subscribe(
      `subscription ($id: ID!) { balanceChanged(organizationId: $id) { ${aliases} } }`,
      { id: org.id },
    ).recording;
    await refused.waitForEnd();
    expect(refused.events).toEqual([]);
    expect(JSON.stringify(refused.failure)).toContain('Aliases limit');

    // The connection stays usable, for queries as well as subscriptions.
    const query = connection.subscribe(`query ($id: ID!) { balance(organizationId: $id) { version available } }`, {
      id: org.id,
    }).recording;
    await query.waitForEnd();
    expect(query.events).toEqual([{ data: { balance: { version: 1, available: 100 } } }]);
    expect(query.completed).toBe(true);
  });

  it('releases a subscriber that leaves while idle at once', async () => {
    const org = await newOrganization(t);
    const subscription = ws(org.member).subscribe(BALANCE_CHANGED, { id: org.id });
    await subscription.recording.waitFor((r) => r.balances.length === 1);
    expect(t.app.notifier.stats().subscribers).toBe(1);
    subscription.unsubscribe();
    // No change follows, so a subscriber that waited for its next event would never be released.
    await vi.waitFor(() => expect(t.app.notifier.stats().subscribers).toBe(0), { timeout: 10_000 });
  });
});

describe.each(drivers)('live balance on shutdown (%s)', (driver) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp(driver);
  }, APP_START_MS);
  afterAll(() => t?.close());

  it('completes open subscriptions and closes their connections cleanly', async () => {
    const port = await t.app.listen(0, '127.0.0.1');
    const baseUrl = `http://127.0.0.1:${port}`;
    const org = await newOrganization(t);
    const connection = connectWs(baseUrl, org.member);
    const overWs = connection.subscribe(BALANCE_CHANGED, { id: org.id }).recording;
    const overSse = subscribeSse(baseUrl, org.member, BALANCE_CHANGED, { id: org.id });
    await overWs.waitFor((r) => r.balances.length === 1);
    await overSse.recording.waitFor((r) => r.balances.length === 1);

    await t.app.stop();
    // Each subscription was completed, not cut: a `complete` message, then a clean close of the
    // WebSocket (the server's 1001 "Going away", or the client's own 1000 once it has nothing
    // left to subscribe to, whichever comes first; a socket the server had to destroy closes with
    // 1006), and a `complete` event at the end of an SSE stream that ended cleanly (a destroyed
    // one fails).
    await overWs.waitForEnd();
    await overSse.recording.waitForEnd();
    await vi.waitFor(() => expect(connection.closeCode()).not.toBeNull(), { timeout: 10_000 });
    expect(overWs.completed).toBe(true);
    expect(overWs.failure).toBeNull();
    expect([1000, 1001]).toContain(connection.closeCode());
    await overSse.recording.waitFor((r) => r.streamEnded || r.failure !== null);
    expect(overSse.recording.completed).toBe(true);
    expect(overSse.recording.streamEnded).toBe(true);
    expect(overSse.recording.failure).toBeNull();
    await connection.dispose();
  });
});
