import type { LookupFunction } from 'node:net';
import { count, eq } from 'drizzle-orm';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { organizationWebhooks } from '../../src/db/schema.ts';
import { WEBHOOK_ATTEMPTS_MAX } from '../../src/webhooks/backoff.ts';
import { PRODUCTION_WEBHOOK_POLICY } from '../../src/webhooks/url-policy.ts';
import { eventsOf, setAlert } from '../support/alerts.ts';
import { it, useTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { parseMetrics, valueOf } from '../ops/metrics-support.ts';
import { REFUND } from '../support/operations.ts';
import { newOrganization, reserve, textCredits, type TestOrganization } from '../support/scenario.ts';
import {
  DELIVERIES,
  REMOVE_WEBHOOK,
  ROTATE_SECRET,
  SET_WEBHOOK,
  WebhookReceiver,
  closedPort,
  deliveriesOf,
  setWebhook,
} from '../support/webhooks.ts';

const HOUR_MS = 3_600_000;

async function metricsOf(t: TestApp) {
  return parseMetrics(await t.app.metrics.registry.metrics());
}

/** An organization whose 50-credit alert is about to fire, with its webhook pointing at `url`. */
async function watchedOrganization(t: TestApp, url: string) {
  const org = await newOrganization(t); // 100 subscription credits
  await setAlert(t, org, 50);
  const { secret } = await setWebhook(t, org, url);
  return { org, secret };
}

/** Takes the organization below its alert: one event, delivered once its attempt is made. */
async function crossThreshold(t: TestApp, org: TestOrganization) {
  const reserved = await reserve(t, org, textCredits(60));
  const events = await eventsOf(t, org.id);
  const event = events.at(-1);
  expect(event).toBeDefined();
  return { ...event!, reservationId: reserved.reservation.id as string };
}

describe.each(drivers)('webhooks (%s)', (driver) => {
  // Attempts happen when an event is announced and when a test asks (deliverDue): no poll timer.
  useTestApp(driver, { app: { webhooks: { pollIntervalMs: null, attemptTimeoutMs: 1500 } } });
  let receiver: WebhookReceiver;
  beforeAll(async () => {
    receiver = await WebhookReceiver.start();
  });
  afterAll(() => receiver.close());

  it('delivers an alert event once, signed by the Standard Webhooks scheme, and shows the delivery', async ({ t }) => {
    receiver.mode = 'ok';
    const { org, secret } = await watchedOrganization(t, receiver.url);
    receiver.secrets = [secret];
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const event = await crossThreshold(t, org);
    await t.app.webhooks.deliverDue();
    const [message] = await receiver.waitForOrganization(org.id, 1);
    expect(message!.verifiedWith).toEqual([secret]);
    expect(message!.headers['webhook-id']).toBe(event.id);
    expect(Math.abs(Number(message!.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(60);
    expect(message!.payload).toEqual({
      id: event.id,
      type: 'balance.alert',
      timestamp: event.occurredAt.toISOString(),
      data: {
        organizationId: org.id,
        alertId: event.alertId,
        threshold: 50,
        available: 40,
        generationsLeft: expect.any(Number),
        modelId: expect.any(String),
        occurredAt: event.occurredAt.toISOString(),
      },
    });
    const [delivery] = await deliveriesOf(t, org);
    expect(delivery).toMatchObject({ eventId: event.id, status: 'DELIVERED', attempts: 1, lastHttpStatus: 204 });
    expect(delivery!.nextAttemptAt).toBeNull();
    // Nothing more is sent for it.
    await t.app.webhooks.deliverDue();
    expect(receiver.receivedFor(org.id)).toHaveLength(1);
    const samples = await metricsOf(t);
    expect(valueOf(samples, 'credits_balance_alerts_fired_total')).toBeGreaterThanOrEqual(1);
    expect(
      valueOf(samples, 'credits_webhook_delivery_attempts_total', { outcome: 'delivered' }),
    ).toBeGreaterThanOrEqual(1);
    expect(valueOf(samples, 'credits_webhook_delivery_lag_seconds_count')).toBeGreaterThanOrEqual(1);
  });

  it('writes no delivery for an organization without a webhook, and none for a change that fires nothing', async ({
    t,
  }) => {
    const org = await newOrganization(t);
    await setAlert(t, org, 50);
    await reserve(t, org, textCredits(60));
    expect(await eventsOf(t, org.id)).toHaveLength(1);
    expect(await deliveriesOf(t, org)).toEqual([]);
    const watched = await newOrganization(t);
    await setWebhook(t, watched, receiver.url);
    await reserve(t, watched, textCredits(10)); // no alert at all
    expect(await deliveriesOf(t, watched)).toEqual([]);
  });

  it('retries a receiver that answers 500 with growing waits and records it as failed after the last attempt', async ({
    t,
  }) => {
    receiver.mode = 'fail';
    const { org } = await watchedOrganization(t, receiver.url);
    const failedBefore = valueOf(await metricsOf(t), 'credits_webhook_deliveries_failed_total');
    await crossThreshold(t, org);
    await t.app.webhooks.deliverDue();
    const waits: number[] = [];
    for (let attempt = 1; attempt < WEBHOOK_ATTEMPTS_MAX; attempt++) {
      const [delivery] = await deliveriesOf(t, org);
      expect(delivery).toMatchObject({ status: 'PENDING', attempts: attempt, lastHttpStatus: 500 });
      expect(delivery!.lastError).toContain('500');
      const wait = Date.parse(delivery!.nextAttemptAt!) - Date.parse(delivery!.lastAttemptAt!);
      waits.push(wait);
      // Not before it is due.
      t.clock.advance(wait - 1);
      await t.app.webhooks.deliverDue();
      expect((await deliveriesOf(t, org))[0]!.attempts).toBe(attempt);
      t.clock.advance(1);
      await t.app.webhooks.deliverDue();
    }
    const [failed] = await deliveriesOf(t, org);
    expect(failed).toMatchObject({ status: 'FAILED', attempts: WEBHOOK_ATTEMPTS_MAX, nextAttemptAt: null });
    expect(receiver.receivedFor(org.id)).toHaveLength(WEBHOOK_ATTEMPTS_MAX);
    // About 5 s first, each wait longer than the one before, about a day in all.
    expect(waits[0]).toBeGreaterThanOrEqual(4000);
    expect(waits[0]).toBeLessThanOrEqual(6000);
    for (let i = 1; i < waits.length; i++) expect(waits[i]!).toBeGreaterThan(waits[i - 1]!);
    const totalHours = waits.reduce((sum, wait) => sum + wait, 0) / HOUR_MS;
    expect(totalHours).toBeGreaterThan(18);
    expect(totalHours).toBeLessThan(30);
    expect(valueOf(await metricsOf(t), 'credits_webhook_deliveries_failed_total')).toBe(failedBefore + 1);
    receiver.mode = 'ok';
  });

  it('retries a receiver that is down, and one that hangs past the attempt timeout', async ({ t }) => {
    const down = await watchedOrganization(t, `http://127.0.0.1:${await closedPort()}/hook`);
    await crossThreshold(t, down.org);
    await t.app.webhooks.deliverDue();
    const [refused] = await deliveriesOf(t, down.org);
    expect(refused).toMatchObject({ status: 'PENDING', attempts: 1, lastHttpStatus: null });
    expect(refused!.lastError).toMatch(/ECONNREFUSED/);

    receiver.mode = 'hang';
    const hanging = await watchedOrganization(t, receiver.url);
    await crossThreshold(t, hanging.org);
    const started = Date.now();
    await t.app.webhooks.deliverDue();
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    const [timedOut] = await deliveriesOf(t, hanging.org);
    expect(timedOut).toMatchObject({ status: 'PENDING', attempts: 1, lastHttpStatus: null });
    expect(timedOut!.lastError).toMatch(/no answer within 1500 ms/);
    expect(
      valueOf(await metricsOf(t), 'credits_webhook_delivery_attempts_total', { outcome: 'timeout' }),
    ).toBeGreaterThanOrEqual(1);
    receiver.mode = 'ok';
  });

  it("does not let one organization's hanging receiver hold up another's delivery", async ({ t }) => {
    const slow = await WebhookReceiver.start();
    slow.mode = 'hang';
    try {
      const stuck = await watchedOrganization(t, slow.url);
      const healthy = await watchedOrganization(t, receiver.url);
      receiver.mode = 'ok';
      await crossThreshold(t, stuck.org);
      await slow.waitFor(1); // its attempt is in flight, and will hang until the timeout
      const hungAt = Date.now();
      await crossThreshold(t, healthy.org);
      await receiver.waitForOrganization(healthy.org.id, 1);
      expect(Date.now() - hungAt).toBeLessThan(1000);
      // Its outcome is recorded right after the answer; the stuck one is still in flight.
      await expect.poll(async () => (await deliveriesOf(t, healthy.org))[0]!.status).toBe('DELIVERED');
      expect((await deliveriesOf(t, stuck.org))[0]).toMatchObject({ status: 'PENDING', lastError: null });
      await t.app.webhooks.deliverDue();
    } finally {
      await slow.close();
    }
  });

  it('signs with the new and the previous secret for 24 hours after a rotation, then with the new only', async ({
    t,
  }) => {
    receiver.mode = 'ok';
    const admin = await t.token('admin');
    const { org, secret: old } = await watchedOrganization(t, receiver.url);
    const rotated = await t.gql(ROTATE_SECRET, { input: { organizationId: org.id } }, admin);
    const answer = rotated.data.rotateWebhookSecret;
    expect(answer.__typename).toBe('RotateWebhookSecretSuccess');
    expect(answer.secret).not.toBe(old);
    expect(Date.parse(answer.webhook.previousSecretExpiresAt) - t.clock.now().getTime()).toBe(24 * HOUR_MS);
    receiver.secrets = [old, answer.secret];
    const crossing = await crossThreshold(t, org);
    await t.app.webhooks.deliverDue();
    const [both] = await receiver.waitForOrganization(org.id, 1);
    expect(both!.verifiedWith.sort()).toEqual([old, answer.secret].sort());
    expect(String(both!.headers['webhook-signature']).split(' ')).toHaveLength(2);

    // A day later the previous secret no longer signs: refunding re-arms the alert, and the next
    // crossing is delivered with the new secret's signature alone.
    const refunded = await t.gql(REFUND, { input: { reservationId: crossing.reservationId } }, org.service);
    expect(refunded.data.refundReservation.__typename).toBe('RefundReservationSuccess');
    t.clock.advance(24 * HOUR_MS + 1);
    await reserve(t, org, textCredits(60));
    await t.app.webhooks.deliverDue();
    const [, single] = await receiver.waitForOrganization(org.id, 2);
    expect(single!.verifiedWith).toEqual([answer.secret]);
    expect(String(single!.headers['webhook-signature']).split(' ')).toHaveLength(1);
  });

  it('cancels pending deliveries when the webhook is removed, and sends nothing more', async ({ t }) => {
    const down = await watchedOrganization(t, `http://127.0.0.1:${await closedPort()}/hook`);
    await crossThreshold(t, down.org);
    await t.app.webhooks.deliverDue();
    expect((await deliveriesOf(t, down.org))[0]).toMatchObject({ status: 'PENDING', attempts: 1 });
    const removed = await t.gql(REMOVE_WEBHOOK, { input: { organizationId: down.org.id } }, await t.token('admin'));
    expect(removed.data.removeOrganizationWebhook.__typename).toBe('RemoveOrganizationWebhookSuccess');
    const [cancelled] = await deliveriesOf(t, down.org);
    expect(cancelled).toMatchObject({ status: 'CANCELLED', attempts: 1, nextAttemptAt: null });
    t.clock.advance(HOUR_MS);
    await t.app.webhooks.deliverDue();
    expect((await deliveriesOf(t, down.org))[0]).toMatchObject({ status: 'CANCELLED', attempts: 1 });
    const again = await t.gql(REMOVE_WEBHOOK, { input: { organizationId: down.org.id } }, await t.token('admin'));
    expect(again.data.removeOrganizationWebhook).toMatchObject({ __typename: 'NotFoundError' });
  });

  it('replaces the webhook on a second set: one live webhook, a new secret, the organization reads it', async ({
    t,
  }) => {
    const org = await newOrganization(t);
    const first = await setWebhook(t, org, 'https://hooks.example.com/a');
    const second = await setWebhook(t, org, 'https://hooks.example.com/b');
    expect(second.webhook.id).not.toBe(first.webhook.id);
    expect(second.secret).not.toBe(first.secret);
    const [live] = await t.database.db
      .select({ live: count() })
      .from(organizationWebhooks)
      .where(eq(organizationWebhooks.organizationId, org.id));
    expect(live!.live).toBe(2);
    const read = await t.gql(
      'query ($id: ID!) { organization(id: $id) { webhook { id url } } }',
      { id: org.id },
      org.admin,
    );
    expect(read.data.organization.webhook).toEqual({ id: second.webhook.id, url: 'https://hooks.example.com/b' });
    const asMember = await t.gql(
      'query ($id: ID!) { organization(id: $id) { webhook { id } } }',
      { id: org.id },
      org.member,
    );
    expect(asMember.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it("pages deliveries newest first and refuses another organization's cursor", async ({ t }) => {
    receiver.mode = 'ok';
    const { org } = await watchedOrganization(t, receiver.url);
    await setAlert(t, org, 70);
    await setAlert(t, org, 30);
    await reserve(t, org, textCredits(55)); // 45: below 70 and 50, not 30: two events
    await t.app.webhooks.deliverDue();
    const admin = await t.token('admin');
    const page1 = await t.gql(DELIVERIES, { id: org.id, first: 1 }, admin);
    expect(page1.data.webhookDeliveries.edges).toHaveLength(1);
    expect(page1.data.webhookDeliveries.pageInfo.hasNextPage).toBe(true);
    const page2 = await t.gql(
      DELIVERIES,
      { id: org.id, first: 5, after: page1.data.webhookDeliveries.pageInfo.endCursor },
      admin,
    );
    expect(page2.data.webhookDeliveries.edges).toHaveLength(1);
    expect(page2.data.webhookDeliveries.pageInfo.hasNextPage).toBe(false);
    const ids = [page1, page2].map((p) => p.data.webhookDeliveries.edges[0].node.eventId);
    expect(new Set(ids).size).toBe(2);
    const other = await newOrganization(t);
    const foreign = await t.gql(
      DELIVERIES,
      { id: other.id, after: page1.data.webhookDeliveries.pageInfo.endCursor },
      admin,
    );
    expect(foreign.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'after' });
    const missing = await t.gql(DELIVERIES, { id: '00000000-0000-4000-8000-000000000000' }, admin);
    expect(missing.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'organizationId' });
  });
});

describe.each(drivers)('webhook addresses in production (%s)', (driver) => {
  // Production's policy, but plain http allowed so the local receiver can be reached by name; the
  // resolver is a stand-in that sends one public-looking name to this machine (DNS rebinding).
  const rebinding: LookupFunction = (hostname, options, callback) => {
    const address = hostname === 'rebound.example.com' ? '127.0.0.1' : '93.184.216.34';
    if (options.all) callback(null, [{ address, family: 4 }]);
    else callback(null, address, 4);
  };
  useTestApp(driver, {
    app: {
      webhooks: {
        urlPolicy: { ...PRODUCTION_WEBHOOK_POLICY, allowHttp: false },
        pollIntervalMs: null,
        attemptTimeoutMs: 1500,
        lookup: rebinding,
      },
    },
  });

  const HOSTILE = [
    ['ftp://hooks.example.com/x', 'https'],
    ['http://hooks.example.com/x', 'https'],
    ['https://user:secret@hooks.example.com/x', 'user name'],
    ['https://127.0.0.1/x', 'non-public'],
    ['https://2130706433/x', 'non-public'],
    ['https://0x7f.1/x', 'non-public'],
    ['https://localhost/x', 'localhost'],
    ['https://api.localhost/x', 'localhost'],
    ['https://10.0.0.8/x', 'non-public'],
    ['https://192.168.1.1/x', 'non-public'],
    ['https://169.254.169.254/latest/meta-data', 'non-public'],
    ['https://100.64.0.1/x', 'non-public'],
    ['https://0.0.0.0/x', 'non-public'],
    ['https://[::1]/x', 'non-public'],
    ['https://[::ffff:127.0.0.1]/x', 'non-public'],
    ['https://[fd00::1]/x', 'non-public'],
    ['https://[fe80::1]/x', 'non-public'],
    ['https://metadata/computeMetadata', 'public host'],
    ['not a url', 'absolute URL'],
    [`https://hooks.example.com/${'a'.repeat(2048)}`, '2048'],
  ] as const;

  it('refuses hostile URLs with InvalidInputError on url, and writes nothing', async ({ t }) => {
    const org = await newOrganization(t);
    const admin = await t.token('admin');
    for (const [url, words] of HOSTILE) {
      const result = await t.gql(SET_WEBHOOK, { input: { organizationId: org.id, url } }, admin);
      expect(result.data.setOrganizationWebhook, url).toMatchObject({ __typename: 'InvalidInputError', field: 'url' });
      expect(result.data.setOrganizationWebhook.message, url).toContain(words);
    }
    const rows = await t.database.db
      .select()
      .from(organizationWebhooks)
      .where(eq(organizationWebhooks.organizationId, org.id));
    expect(rows).toEqual([]);
    const fine = await t.gql(
      SET_WEBHOOK,
      { input: { organizationId: org.id, url: 'https://hooks.example.com/credits' } },
      admin,
    );
    expect(fine.data.setOrganizationWebhook.__typename).toBe('SetOrganizationWebhookSuccess');
  });

  it('refuses at delivery a name that resolves to a private address, and never connects', async ({ t }) => {
    const trap = await WebhookReceiver.start();
    try {
      const org = await newOrganization(t);
      await setAlert(t, org, 50);
      // Accepted when set (a public-looking name), refused when it resolves to this machine.
      await setWebhook(t, org, `https://rebound.example.com:${trap.port}/hook`);
      await crossThreshold(t, org);
      await t.app.webhooks.deliverDue();
      const [delivery] = await deliveriesOf(t, org);
      expect(delivery).toMatchObject({ status: 'PENDING', attempts: 1, lastHttpStatus: null });
      expect(delivery!.lastError).toContain('rebound.example.com resolves to a non-public address (127.0.0.1)');
      expect(trap.received).toEqual([]);
      expect(
        valueOf(await metricsOf(t), 'credits_webhook_delivery_attempts_total', { outcome: 'forbidden_address' }),
      ).toBeGreaterThanOrEqual(1);
    } finally {
      await trap.close();
    }
  });
});

describe('signature verification as a receiver does it', () => {
  it('fails for a tampered body, a wrong secret and an old timestamp', async () => {
    const { signedHeaders } = await import('../../src/webhooks/sender.ts');
    const { newWebhookSecret } = await import('../../src/ledger/webhooks.ts');
    const secret = newWebhookSecret();
    const body = JSON.stringify({ id: 'e1', type: 'balance.alert' });
    const headers = signedHeaders({ url: 'https://x.example.com', id: 'e1', body, secrets: [secret] });
    expect(new Webhook(secret).verify(body, headers)).toMatchObject({ id: 'e1' });
    expect(() => new Webhook(secret).verify(`${body} `, headers)).toThrow();
    expect(() => new Webhook(newWebhookSecret()).verify(body, headers)).toThrow();
    const old = signedHeaders(
      { url: 'https://x.example.com', id: 'e1', body, secrets: [secret] },
      new Date(Date.now() - 3600_000),
    );
    expect(() => new Webhook(secret).verify(body, old)).toThrow();
  });
});
