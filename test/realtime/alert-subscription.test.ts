import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { eventsOf, setAlert } from '../support/alerts.ts';
import { createTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { CAPTURE } from '../support/operations.ts';
import {
  connectWs,
  subscribeSse,
  type Recording,
  type SseSubscription,
  type WsConnection,
} from '../support/realtime.ts';
import { expectSuccess, grant, newOrganization, reserve, textCredits } from '../support/scenario.ts';

// Starting an app on a fresh PGlite database can take tens of seconds on a loaded machine.
const APP_START_MS = 180_000;

const BALANCE_ALERT = `subscription ($id: ID!) {
  balanceAlert(organizationId: $id) { id alertId threshold available generationsLeft modelId occurredAt }
}`;

function alertEvents(recording: Recording): any[] {
  return recording.events.filter((event) => event.data?.balanceAlert).map((event) => event.data.balanceAlert);
}

describe.each(drivers)('live balance alerts (%s)', (driver) => {
  let t: TestApp;
  let baseUrl: string;
  const connections: WsConnection[] = [];
  const streams: SseSubscription[] = [];

  beforeAll(async () => {
    t = await createTestApp(driver, { app: { subscriptionLimits: { perConnection: 5, perToken: 2 } } });
    const port = await t.app.listen(0, '127.0.0.1');
    baseUrl = `http://127.0.0.1:${port}`;
  }, APP_START_MS);
  afterEach(async () => {
    await Promise.all(connections.splice(0).map((connection) => connection.dispose()));
    for (const stream of streams.splice(0)) stream.close();
    expect(await t.audit()).toEqual([]);
  });
  afterAll(() => t?.close());

  /** Waits until this process's feed holds `count` subscribers, so a change made next is heard. */
  async function subscribed(count: number) {
    await expect.poll(() => t.app.alertFeed.stats().subscribers, { timeout: 10_000 }).toBe(count);
  }

  it('delivers each committed crossing over graphql-ws, priced in the most used model', async () => {
    const org = await newOrganization(t); // 100 subscription credits
    const alert = await setAlert(t, org, 50);
    const connection = connectWs(baseUrl, org.member);
    connections.push(connection);
    const { recording } = connection.subscribe(BALANCE_ALERT, { id: org.id });
    await subscribed(1);

    // 60 credits of standard images: 40 left, below 50. No usage yet: the cheapest image model
    // (image-draft at SD_480P, 1 credit) prices what is left.
    const held = await reserve(t, org, { modelId: 'image-standard', resolution: 'HD_720P', count: 15 });
    await recording.waitFor((r) => alertEvents(r).length === 1);
    const [outbox] = await eventsOf(t, org.id);
    expect(alertEvents(recording)[0]).toEqual({
      id: outbox!.id,
      alertId: alert.id,
      threshold: 50,
      available: 40,
      generationsLeft: 40,
      modelId: 'image-draft',
      occurredAt: t.clock.now().toISOString(),
    });

    // Once captured, image-standard is the most used model: one generation at its lowest
    // resolution (SD_480P, half of 4) costs 2 credits.
    const captured = await t.gql(CAPTURE, { input: { reservationId: held.reservation.id } }, org.service);
    expectSuccess(captured.data.captureReservation, 'CaptureReservationSuccess');
    await grant(t, org, 'PURCHASED', 60); // 100: re-armed, nothing sent
    await reserve(t, org, textCredits(70)); // 30: fires again
    await recording.waitFor((r) => alertEvents(r).length === 2);
    expect(alertEvents(recording)[1]).toMatchObject({ available: 30, generationsLeft: 15, modelId: 'image-standard' });
    expect(recording.events).toHaveLength(2);
  });

  it("delivers over SSE to its own organization's subscribers only", async () => {
    const org = await newOrganization(t);
    const other = await newOrganization(t);
    await setAlert(t, org, 50);
    await setAlert(t, other, 50);
    const mine = subscribeSse(baseUrl, org.member, BALANCE_ALERT, { id: org.id });
    const theirs = subscribeSse(baseUrl, other.member, BALANCE_ALERT, { id: other.id });
    streams.push(mine, theirs);
    await subscribed(2);
    expect(await mine.status).toBe(200);
    await reserve(t, org, textCredits(60));
    await mine.recording.waitFor((r) => alertEvents(r).length === 1);
    expect(alertEvents(mine.recording)[0]).toMatchObject({ threshold: 50, available: 40 });
    // The other organization's change is the only one its subscriber hears.
    await reserve(t, other, textCredits(55));
    await theirs.recording.waitFor((r) => alertEvents(r).length === 1);
    expect(alertEvents(theirs.recording)[0]).toMatchObject({ available: 45 });
    expect(alertEvents(mine.recording)).toHaveLength(1);
  });

  it("refuses another organization's alerts and a missing organization, and counts against the caps", async () => {
    const org = await newOrganization(t);
    const other = await newOrganization(t);
    const connection = connectWs(baseUrl, org.member);
    connections.push(connection);
    const foreign = connection.subscribe(BALANCE_ALERT, { id: other.id }).recording;
    await foreign.waitForEnd();
    expect(JSON.stringify(foreign)).toMatch(/FORBIDDEN/);
    const admin = await t.token('admin');
    const missing = subscribeSse(baseUrl, admin, BALANCE_ALERT, { id: '00000000-0000-4000-8000-000000000000' });
    streams.push(missing);
    await missing.recording.waitForEnd();
    expect(missing.recording.events[0]?.errors?.[0]?.extensions).toMatchObject({
      code: 'BAD_USER_INPUT',
      field: 'organizationId',
    });

    // The token may hold two subscriptions: the third is refused like a balanceChanged one.
    connection.subscribe(BALANCE_ALERT, { id: org.id });
    connection.subscribe(BALANCE_ALERT, { id: org.id });
    await subscribed(2);
    const third = connection.subscribe(BALANCE_ALERT, { id: org.id }).recording;
    await third.waitForEnd();
    expect(JSON.stringify(third)).toMatch(/TOO_MANY_SUBSCRIPTIONS/);
  });
});
