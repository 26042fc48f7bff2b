import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestApp, type TestApp } from '../support/app.ts';
import { hasPostgres } from '../support/database.ts';
import { BALANCE_CHANGED, connectWs, type Recording, type WsConnection } from '../support/realtime.ts';
import { newOrganization, reserve, textCredits, type TestOrganization } from '../support/scenario.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';

// PostgreSQL only: PGlite runs in process and its listener cannot drop.
describe.skipIf(!hasPostgres)('live balance when the listening connection fails (postgres)', () => {
  let t: TestApp;
  let proxy: TcpProxy;
  let baseUrl: string;
  let databaseName: string;
  // A database cannot refuse connections to itself, so that switch is thrown from the base one.
  let admin: postgres.Sql;
  const connections: WsConnection[] = [];

  beforeAll(async () => {
    const target = new URL(process.env.DATABASE_URL!);
    admin = postgres(process.env.DATABASE_URL!, { max: 1, onnotice: () => {} });
    proxy = await startTcpProxy(target.hostname, Number(target.port || 5432));
    t = await createTestApp('postgres', {
      // A quick watchdog, yet slow enough that a ping delayed by a loaded machine does not make it
      // replace a working listener (which would leave a moment with no listener at all).
      app: { realtime: { watchdogIntervalMs: 500, listenTimeoutMs: 2000 } },
      // Only the listener goes through the proxy, so a test can silence it and nothing else.
      adaptDatabase: (database) => ({
        ...database,
        connectListener: () => {
          const url = new URL(target);
          url.hostname = '127.0.0.1';
          url.port = String(proxy.port);
          url.pathname = `/${database.postgresClient!.options.database}`;
          return postgres(url.toString(), {
            max: 1,
            onnotice: () => {},
            connect_timeout: 2,
            connection: { application_name: 'credits-listener' },
          });
        },
      }),
    });
    databaseName = t.database.postgresClient!.options.database;
    baseUrl = `http://127.0.0.1:${await t.app.listen(0, '127.0.0.1')}`;
  });
  afterEach(async () => {
    await Promise.all(connections.splice(0).map((connection) => connection.dispose()));
  });
  afterAll(async () => {
    await t?.close();
    await proxy?.close();
    await admin?.end();
  });

  async function subscribe(org: TestOrganization): Promise<Recording> {
    const connection = connectWs(baseUrl, org.member);
    connections.push(connection);
    const { recording } = connection.subscribe(BALANCE_CHANGED, { id: org.id });
    await recording.waitFor((r) => r.balances.length === 1);
    return recording;
  }

  /**
   * Waits until the watchdog has heard two of its pings come back: the listener is connected and
   * hearing (an earlier test may have left it reconnecting). The wait is for that state, however
   * long a loaded machine takes to reach it.
   */
  async function listenerHearing(): Promise<void> {
    const answered = t.app.notifier.stats().pingsAnswered;
    await vi.waitFor(() => expect(t.app.notifier.stats().pingsAnswered).toBeGreaterThanOrEqual(answered + 2), {
      timeout: 30_000,
    });
  }

  /** The value of one of the app's own counters, as GET /metrics would show it. */
  async function counter(name: string): Promise<number> {
    const text = await t.app.metrics.registry.getSingleMetricAsString(name);
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  }

  async function listenerBackends(): Promise<number> {
    const [row] =
      await admin`select count(*)::int as n from pg_stat_activity where datname = ${databaseName} and application_name = 'credits-listener'`;
    return row!.n as number;
  }

  /** Terminates the listener's backend; returns what pg_terminate_backend said for each one found. */
  async function terminateListener(): Promise<boolean[]> {
    const rows = await t.database.postgresClient!`
      select pg_terminate_backend(pid) as terminated from pg_stat_activity
      where datname = current_database() and application_name = 'credits-listener'`;
    return rows.map((row) => row.terminated as boolean);
  }

  it("re-sends every subscriber its organization's balance after the listener's backend is terminated", async () => {
    const first = await newOrganization(t);
    const second = await newOrganization(t);
    const recordings = [await subscribe(first), await subscribe(first), await subscribe(second)];
    await listenerHearing();
    const listensBefore = t.app.notifier.stats().listens;
    const reconnectsBefore = await counter('credits_listener_reconnects_total');

    expect(await terminateListener()).toEqual([true]);
    for (const recording of recordings) {
      const [version] = recording.versions;
      // Resent, unchanged (more than once if the watchdog also replaced the reconnected listener).
      await recording.waitFor((r) => r.versions.length >= 2);
      expect(recording.versions).toEqual(recording.versions.map(() => version));
    }
    expect(t.app.notifier.stats().listens).toBeGreaterThan(listensBefore);
    expect(await counter('credits_listener_reconnects_total')).toBeGreaterThan(reconnectsBefore);

    // Listening goes on afterwards.
    await reserve(t, first, textCredits(10));
    const [version] = recordings[0]!.versions;
    await recordings[0]!.waitForVersion(version! + 1);
    expect(recordings[0]!.lastBalance).toMatchObject({ available: 90, reserved: 10 });
  });

  it('delivers a change committed while nobody listened once the listener is back', async () => {
    const org = await newOrganization(t);
    const recording = await subscribe(org);
    const [version] = recording.versions;
    // Several concurrent queries leave several pool connections open for use during the gap.
    const pool = t.database.postgresClient!;
    await Promise.all(Array.from({ length: 5 }, () => pool`select pg_sleep(0.05)`));
    await listenerHearing();
    // New connections are refused, so the listener cannot come back until this is undone; the
    // pool keeps the connections it already has, so the change below still commits.
    await admin.unsafe(`alter database "${databaseName}" allow_connections false`);
    try {
      expect(await terminateListener()).toEqual([true]);
      // Nobody listens when the change commits.
      await expect.poll(listenerBackends, { timeout: 30_000 }).toBe(0);
      await reserve(t, org, textCredits(25));
    } finally {
      await admin.unsafe(`alter database "${databaseName}" allow_connections true`);
    }
    // The change's own notification was lost; only the resync after listening again brings it.
    await recording.waitForVersion(version! + 1);
    expect(recording.versions.at(-1)).toBe(version! + 1);
    expect(recording.versions.every((v, index, all) => index === 0 || v >= all[index - 1]!)).toBe(true);
    expect(recording.lastBalance).toMatchObject({ available: 75, reserved: 25 });
  });

  it('replaces a listener that silently stopped hearing its channel (watchdog)', async () => {
    const org = await newOrganization(t);
    const recording = await subscribe(org);
    const [version] = recording.versions;
    // Start from a listener the watchdog has seen working.
    await listenerHearing();
    const restartsBefore = t.app.notifier.stats().restarts;
    const restartMetricBefore = await counter('credits_listener_restarts_total');

    // The listener's connection stays open but nothing reaches it any more: its notification for
    // this change is lost, and only the watchdog's missing ping reveals the problem.
    proxy.freeze();
    await reserve(t, org, textCredits(30));
    await recording.waitForVersion(version! + 1);
    expect(recording.lastBalance).toMatchObject({ available: 70, reserved: 30 });
    expect(t.app.notifier.stats().restarts).toBeGreaterThan(restartsBefore);
    expect(await counter('credits_listener_restarts_total')).toBeGreaterThan(restartMetricBefore);

    // The new listener hears the next change as usual.
    await reserve(t, org, textCredits(1));
    await recording.waitForVersion(version! + 2);
  });
});
