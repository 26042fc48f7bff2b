import { sql } from 'drizzle-orm';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { schema } from '../../src/schema/index.ts';
import { TEST_SECRET, createTestApp, type TestApp } from '../support/app.ts';
import type { GraphQLResponse } from '../support/graphql.ts';
import { drivers } from '../support/database.ts';
import {
  BALANCE,
  CAPTURE,
  CHANGE_PLAN,
  CREATE_ORGANIZATION,
  EXTEND,
  GRANT_CREDITS,
  INCREASE,
  LEDGER,
  PURCHASE_PACK,
  QUOTE,
  REFUND,
  RESERVATION,
  RESERVE,
} from '../support/operations.ts';
import { grant, newOrganization, reserve, textCredits, uniqueKey, type TestOrganization } from '../support/scenario.ts';
import { connectWs } from '../support/realtime.ts';
import { snapshot } from './http.ts';
import { DELIVERIES, REMOVE_WEBHOOK, ROTATE_SECRET, SET_WEBHOOK } from '../support/webhooks.ts';

// Every operation of the schema against every kind of caller. Each cell is one of:
//   UNAUTHENTICATED  a GraphQL error with that code (no token, bad signature, expired token)
//   FORBIDDEN        a GraphQL error with that code (wrong role or scope, or another organization's id)
//   HIDDEN           another organization's object, answered exactly like a missing one
//   ALLOWED          the operation succeeds
// A cell that is not ALLOWED must leave every balance and row unchanged.
//
// Callers come as their role alone (a token without a `scope` claim, which keeps the rights its
// role had before scopes) and as role x scope: a token whose `scope` claim names one scope.

type Outcome = 'UNAUTHENTICATED' | 'FORBIDDEN' | 'HIDDEN' | 'ALLOWED';

const CALLERS = [
  'none',
  'badSignature',
  'expired',
  'otherMember',
  'otherService',
  'member',
  'service',
  'admin',
  'memberRead',
  'memberGeneration',
  'serviceGeneration',
  'serviceBilling',
  'otherServiceBilling',
  'adminRead',
] as const;
type Caller = (typeof CALLERS)[number];

interface World {
  t: TestApp;
  own: TestOrganization;
  other: TestOrganization;
  tokens: Record<Caller, string | null>;
}

interface Operation {
  name: string;
  /** The root field whose value is classified. */
  field: string;
  expected: Record<Caller, Outcome>;
  /** Makes the object the call acts on (a fresh pending reservation), before the snapshot. */
  prepare?(world: World): Promise<string>;
  /** Runs the operation for the caller against the own organization, or the prepared object. */
  run(world: World, token: string | null, id: string): Promise<GraphQLResponse>;
  /** The same operation against an id that does not exist, to compare HIDDEN answers with. */
  runMissing?(world: World, token: string | null): Promise<GraphQLResponse>;
}

const MISSING_ID = '00000000-0000-4000-8000-000000000000';
const A = 'ALLOWED';
const F = 'FORBIDDEN';
const H = 'HIDDEN';
const U = 'UNAUTHENTICATED';

/** The cells of the callers without a scope claim; the scoped callers' come from `scoped`. */
function outcomes(
  otherMember: Outcome,
  otherService: Outcome,
  member: Outcome,
  service: Outcome,
  admin: Outcome,
  scoped: Scoped,
): Record<Caller, Outcome> {
  return { none: U, badSignature: U, expired: U, otherMember, otherService, member, service, admin, ...scoped };
}

type Scoped = Record<
  'memberRead' | 'memberGeneration' | 'serviceGeneration' | 'serviceBilling' | 'otherServiceBilling' | 'adminRead',
  Outcome
>;

/** The scoped callers' cells, in the order of the type above. */
function scoped(
  memberRead: Outcome,
  memberGeneration: Outcome,
  serviceGeneration: Outcome,
  serviceBilling: Outcome,
  otherServiceBilling: Outcome,
  adminRead: Outcome,
): Scoped {
  return { memberRead, memberGeneration, serviceGeneration, serviceBilling, otherServiceBilling, adminRead };
}

// The catalog is open to every scope; reads and generation work to theirs; billing to billing.
const anyValidToken = outcomes(A, A, A, A, A, scoped(A, A, A, A, A, A));
const generationOrRead = outcomes(F, F, A, A, A, scoped(A, A, A, F, F, A));
const readOnly = outcomes(F, F, A, A, A, scoped(A, F, F, F, F, A));
const objectGenerationOrRead = outcomes(H, H, A, A, A, scoped(A, A, A, F, F, A));
const reserving = outcomes(F, F, A, A, A, scoped(F, A, A, F, F, A));
const billing = outcomes(F, F, F, A, A, scoped(F, F, F, A, F, A));
const settling = outcomes(F, H, F, A, A, scoped(F, F, A, F, F, A));
// A service grants only with a billing scope claim: without one it keeps its old rights, no grants.
const granting = outcomes(F, F, F, F, A, scoped(F, F, F, A, F, A));
const adminOnly = outcomes(F, F, F, F, A, scoped(F, F, F, F, F, A));

/** A fresh pending reservation of the own organization, made by its member. */
async function pendingReservation(world: World): Promise<string> {
  const result = await reserve(world.t, world.own, textCredits(2));
  return result.reservation.id as string;
}

const BALANCE_CHANGED =
  'subscription ($id: ID!) { balanceChanged(organizationId: $id) { organizationId available version } }';
const BALANCE_ALERT = 'subscription ($id: ID!) { balanceAlert(organizationId: $id) { id threshold available } }';
const SET_ALERT = `mutation ($input: SetBalanceAlertInput!) {
  setBalanceAlert(input: $input) { __typename ... on Error { message } ... on SetBalanceAlertSuccess { alert { id } } } }`;
const REMOVE_ALERT = `mutation ($input: RemoveBalanceAlertInput!) {
  removeBalanceAlert(input: $input) { __typename ... on Error { message } ... on RemoveBalanceAlertSuccess { alert { id } } } }`;
// A service may remove its own organization's alerts with a billing scope claim (or none); another
// organization's alert is not found.
const removingAlerts = outcomes(F, H, F, A, A, scoped(F, F, F, A, H, A));

/** Gives the own organization a webhook (a new one each time), for the cells that rotate or remove it. */
async function ownWebhook(world: World): Promise<string> {
  const result = await world.t.gql(
    SET_WEBHOOK,
    { input: { organizationId: world.own.id, url: 'https://hooks.example.com/own' } },
    await world.t.token('admin'),
  );
  return result.data.setOrganizationWebhook.webhook.id as string;
}

/** Stops watching every alert of the own organization, so each cell starts below the cap of 10. */
async function clearAlerts(world: World): Promise<void> {
  await world.t.database.db.execute(
    sql`update balance_alerts set removed_at = now() where organization_id = ${world.own.id} and removed_at is null`,
  );
}

/** A fresh alert of the own organization, set by its admin. */
async function ownAlert(world: World): Promise<string> {
  await clearAlerts(world);
  const result = await world.t.gql(
    SET_ALERT,
    { input: { organizationId: world.own.id, threshold: 1, idempotencyKey: uniqueKey('alert') } },
    world.own.admin,
  );
  return result.data.setBalanceAlert.alert.id as string;
}

const operations: Operation[] = [
  {
    name: 'models',
    field: 'models',
    expected: anyValidToken,
    run: (w, token) => w.t.gql('{ models { id } }', {}, token),
  },
  { name: 'plans', field: 'plans', expected: anyValidToken, run: (w, token) => w.t.gql('{ plans { id } }', {}, token) },
  {
    name: 'creditPacks',
    field: 'creditPacks',
    expected: anyValidToken,
    run: (w, token) => w.t.gql('{ creditPacks { id } }', {}, token),
  },
  {
    name: 'balance',
    field: 'balance',
    expected: generationOrRead,
    run: (w, token) => w.t.gql(BALANCE, { id: w.own.id }, token),
  },
  {
    name: 'organization',
    field: 'organization',
    expected: readOnly,
    run: (w, token) => w.t.gql('query ($id: ID!) { organization(id: $id) { id name } }', { id: w.own.id }, token),
  },
  {
    name: 'creditQuote',
    field: 'creditQuote',
    expected: generationOrRead,
    run: (w, token) => w.t.gql(QUOTE, { id: w.own.id, generation: { modelId: 'text-draft', count: 3 } }, token),
  },
  {
    name: 'ledger',
    field: 'ledger',
    expected: readOnly,
    run: (w, token) => w.t.gql(LEDGER, { id: w.own.id, first: 5 }, token),
  },
  {
    name: 'reservation',
    field: 'reservation',
    expected: objectGenerationOrRead,
    prepare: pendingReservation,
    run: (w, token, id) => w.t.gql(RESERVATION, { id }, token),
    runMissing: (w, token) => w.t.gql(RESERVATION, { id: MISSING_ID }, token),
  },
  {
    name: 'createOrganization',
    field: 'createOrganization',
    expected: adminOnly,
    run: (w, token) => w.t.gql(CREATE_ORGANIZATION, { input: { name: 'Matrix org', planId: 'free' } }, token),
  },
  {
    name: 'grantCredits',
    field: 'grantCredits',
    expected: granting,
    run: (w, token) =>
      w.t.gql(
        GRANT_CREDITS,
        {
          input: {
            organizationId: w.own.id,
            type: 'REFERRAL',
            amount: 5,
            reason: 'matrix',
            idempotencyKey: uniqueKey(),
          },
        },
        token,
      ),
  },
  {
    name: 'purchaseCreditPack',
    field: 'purchaseCreditPack',
    expected: billing,
    run: (w, token) =>
      w.t.gql(
        PURCHASE_PACK,
        { input: { organizationId: w.own.id, packId: 'pack-500', paymentReference: uniqueKey('pay') } },
        token,
      ),
  },
  {
    name: 'changePlan',
    field: 'changePlan',
    expected: billing,
    run: (w, token) => w.t.gql(CHANGE_PLAN, { input: { organizationId: w.own.id, planId: 'starter' } }, token),
  },
  {
    name: 'reserveCredits',
    field: 'reserveCredits',
    expected: reserving,
    run: (w, token) =>
      w.t.gql(
        RESERVE,
        { input: { organizationId: w.own.id, idempotencyKey: uniqueKey(), generation: textCredits(1) } },
        token,
      ),
  },
  {
    name: 'captureReservation',
    field: 'captureReservation',
    expected: settling,
    prepare: pendingReservation,
    run: (w, token, id) => w.t.gql(CAPTURE, { input: { reservationId: id, amount: 1 } }, token),
    runMissing: (w, token) => w.t.gql(CAPTURE, { input: { reservationId: MISSING_ID, amount: 1 } }, token),
  },
  {
    name: 'refundReservation',
    field: 'refundReservation',
    expected: settling,
    prepare: pendingReservation,
    run: (w, token, id) => w.t.gql(REFUND, { input: { reservationId: id, reason: 'matrix' } }, token),
    runMissing: (w, token) => w.t.gql(REFUND, { input: { reservationId: MISSING_ID, reason: 'matrix' } }, token),
  },
  {
    name: 'extendReservation',
    field: 'extendReservation',
    expected: settling,
    prepare: pendingReservation,
    run: (w, token, id) => w.t.gql(EXTEND, { input: { reservationId: id, ttlSeconds: 600 } }, token),
    runMissing: (w, token) => w.t.gql(EXTEND, { input: { reservationId: MISSING_ID, ttlSeconds: 600 } }, token),
  },
  {
    name: 'increaseReservation',
    field: 'increaseReservation',
    expected: settling,
    prepare: pendingReservation,
    run: (w, token, id) =>
      w.t.gql(
        INCREASE,
        { input: { reservationId: id, additionalCredits: 1, idempotencyKey: uniqueKey('grow') } },
        token,
      ),
    runMissing: (w, token) =>
      w.t.gql(
        INCREASE,
        { input: { reservationId: MISSING_ID, additionalCredits: 1, idempotencyKey: uniqueKey('grow') } },
        token,
      ),
  },
  {
    name: 'setBalanceAlert',
    field: 'setBalanceAlert',
    expected: billing,
    prepare: async (w) => {
      await clearAlerts(w);
      return '';
    },
    run: (w, token) =>
      w.t.gql(
        SET_ALERT,
        { input: { organizationId: w.own.id, threshold: 5, idempotencyKey: uniqueKey('alert') } },
        token,
      ),
  },
  {
    name: 'removeBalanceAlert',
    field: 'removeBalanceAlert',
    expected: removingAlerts,
    prepare: ownAlert,
    run: (w, token, id) => w.t.gql(REMOVE_ALERT, { input: { alertId: id } }, token),
    runMissing: (w, token) => w.t.gql(REMOVE_ALERT, { input: { alertId: MISSING_ID } }, token),
  },
  {
    name: 'setOrganizationWebhook',
    field: 'setOrganizationWebhook',
    expected: adminOnly,
    run: (w, token) =>
      w.t.gql(SET_WEBHOOK, { input: { organizationId: w.own.id, url: 'https://hooks.example.com/matrix' } }, token),
  },
  {
    name: 'rotateWebhookSecret',
    field: 'rotateWebhookSecret',
    expected: adminOnly,
    prepare: ownWebhook,
    run: (w, token) => w.t.gql(ROTATE_SECRET, { input: { organizationId: w.own.id } }, token),
  },
  {
    name: 'removeOrganizationWebhook',
    field: 'removeOrganizationWebhook',
    expected: adminOnly,
    prepare: ownWebhook,
    run: (w, token) => w.t.gql(REMOVE_WEBHOOK, { input: { organizationId: w.own.id } }, token),
  },
  {
    name: 'webhookDeliveries',
    field: 'webhookDeliveries',
    expected: adminOnly,
    run: (w, token) => w.t.gql(DELIVERIES, { id: w.own.id }, token),
  },
  {
    name: 'balanceAlert (subscription)',
    field: 'balanceAlert',
    expected: generationOrRead,
    prepare: async (w) => {
      await clearAlerts(w);
      return '';
    },
    run: (w, token) => firstAlertEvent(w, token),
  },
  {
    name: 'balanceChanged (subscription)',
    field: 'balanceChanged',
    expected: generationOrRead,
    run: (w, token) => firstEvent(w.t, BALANCE_CHANGED, { id: w.own.id }, token),
  },
];

/**
 * The first event of a balanceAlert subscription over server-sent events. A refused one answers
 * at once; an accepted one registers with the app's alert feed and waits, so then an alert is
 * made to fire (an armed one at the balance, and a reservation of one credit) and its event read.
 */
async function firstAlertEvent(w: World, token: string | null): Promise<GraphQLResponse> {
  const subscribers = w.t.app.alertFeed.stats().subscribers;
  const first = firstEvent(w.t, BALANCE_ALERT, { id: w.own.id }, token);
  const opened = (async () => {
    while (w.t.app.alertFeed.stats().subscribers === subscribers) await new Promise((r) => setTimeout(r, 10));
  })();
  const winner = await Promise.race([first.then(() => 'event' as const), opened.then(() => 'open' as const)]);
  if (winner === 'open') {
    const balance = await w.t.gql(BALANCE, { id: w.own.id }, w.own.admin);
    const alert = await w.t.gql(
      SET_ALERT,
      {
        input: {
          organizationId: w.own.id,
          threshold: balance.data.balance.available,
          idempotencyKey: uniqueKey('alert'),
        },
      },
      w.own.admin,
    );
    expect(alert.data.setBalanceAlert.__typename).toBe('SetBalanceAlertSuccess');
    await reserve(w.t, w.own, textCredits(1));
  }
  return first;
}

/**
 * The first event of a subscription over yoga's server-sent events transport, which runs the
 * same context (and so the same token checks) as the WebSocket transport; the stream is then
 * cancelled so the subscription ends.
 */
async function firstEvent(
  t: TestApp,
  query: string,
  variables: Record<string, unknown>,
  token: string | null,
): Promise<GraphQLResponse> {
  const controller = new AbortController();
  const headers: Record<string, string> = { accept: 'text/event-stream', 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await t.app.yoga.fetch('http://localhost/graphql', {
    method: 'POST',
    headers,
    body: JSON.stringify({ query, variables }),
    signal: controller.signal,
  });
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the event stream ended without an event: ${buffer}`);
      buffer += decoder.decode(value, { stream: true });
      const match = /event: next\ndata: (.*)\n\n/.exec(buffer);
      if (match) {
        const body = JSON.parse(match[1]!) as { data?: any; errors?: GraphQLResponse['errors'] };
        return { status: response.status, data: body.data, errors: body.errors };
      }
    }
  } finally {
    controller.abort();
    await reader.cancel().catch(() => {});
  }
}

function classify(response: GraphQLResponse, field: string): Outcome {
  const codes = (response.errors ?? []).map((error) => error.extensions?.code);
  if (codes.length > 0) {
    // Only the two refusals are expected here; any other error is a failure of the test.
    expect(new Set(codes).size, JSON.stringify(response.errors)).toBe(1);
    expect(['UNAUTHENTICATED', 'FORBIDDEN'], JSON.stringify(response.errors)).toContain(codes[0]);
    return codes[0] as Outcome;
  }
  const value = response.data?.[field];
  if (value === null || value?.__typename === 'NotFoundError') return 'HIDDEN';
  expect(value, JSON.stringify(response.data)).toBeTruthy();
  if (typeof value.__typename === 'string' && value.__typename !== field.replace(/^./, (c) => c.toUpperCase())) {
    expect(value.__typename, JSON.stringify(value)).toMatch(/Success$/);
  }
  return 'ALLOWED';
}

describe.each(drivers)('authorization matrix (%s)', (driver) => {
  const world = {} as World;

  beforeAll(async () => {
    world.t = await createTestApp(driver);
    world.own = await newOrganization(world.t);
    world.other = await newOrganization(world.t);
    // Enough credits for every allowed reservation of the matrix.
    await grant(world.t, world.own, 'PURCHASED', 10_000);
    const key = new TextEncoder().encode(TEST_SECRET);
    world.tokens = {
      none: null,
      // Admin claims, so that accepting either token would grant everything.
      badSignature: await new SignJWT({ role: 'admin' })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('mallory')
        .setExpirationTime('1h')
        .sign(new TextEncoder().encode('not-the-secret-but-just-as-long-as-it')),
      expired: await new SignJWT({ role: 'admin' })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('former-admin')
        .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
        .sign(key),
      otherMember: world.other.member,
      otherService: world.other.service,
      member: world.own.member,
      service: world.own.service,
      admin: world.own.admin,
      memberRead: await world.t.token('member', world.own.id, '1h', ['read']),
      memberGeneration: await world.t.token('member', world.own.id, '1h', ['generation']),
      serviceGeneration: await world.t.token('service', world.own.id, '1h', ['generation']),
      serviceBilling: await world.t.token('service', world.own.id, '1h', ['billing']),
      otherServiceBilling: await world.t.token('service', world.other.id, '1h', ['billing']),
      adminRead: await world.t.token('admin', undefined, '1h', ['read']),
    };
  });
  afterAll(() => world.t.close());

  it('covers every root field of the schema', () => {
    const fields = [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()].flatMap((type) =>
      type ? Object.keys(type.getFields()) : [],
    );
    expect(operations.map((operation) => operation.field).sort()).toEqual(fields.sort());
  });

  describe.each(operations)('$name', (operation) => {
    it.each(CALLERS)('as %s', async (caller) => {
      const token = world.tokens[caller];
      const id = operation.prepare ? await operation.prepare(world) : '';
      const before = await snapshot(world.t);
      const response = await operation.run(world, token, id);
      const outcome = classify(response, operation.field);
      expect(outcome, JSON.stringify(response)).toBe(operation.expected[caller]);

      if (outcome !== 'ALLOWED') expect(await snapshot(world.t)).toEqual(before);
      if (outcome === 'HIDDEN') {
        const missing = await operation.runMissing!(world, token);
        expect(response.data).toEqual(missing.data);
        expect(response.errors).toEqual(missing.errors);
      }
      expect(await world.t.audit()).toEqual([]);
    });
  });

  // The same subscription over WebSockets (graphql-ws), where a bad token is refused when the
  // connection opens: the socket closes with 4401 before any operation runs.
  describe('balanceChanged over WebSocket', () => {
    let baseUrl: string;
    beforeAll(async () => {
      baseUrl = `http://127.0.0.1:${await world.t.app.listen(0, '127.0.0.1')}`;
    });

    it.each(CALLERS)('as %s', async (caller) => {
      const connection = connectWs(baseUrl, world.tokens[caller]);
      try {
        const { recording } = connection.subscribe(BALANCE_CHANGED, { id: world.own.id });
        await recording.waitFor((r) => r.events.length > 0 || r.failure !== null || r.completed);
        let outcome: Outcome;
        if (recording.events.length > 0) {
          outcome = classify({ status: 200, ...recording.events[0]! } as GraphQLResponse, 'balanceChanged');
        } else if (Array.isArray(recording.failure)) {
          outcome = classify({ status: 200, data: null, errors: recording.failure }, 'balanceChanged');
        } else {
          expect(connection.closeCode(), String(recording.failure)).toBe(4401);
          outcome = 'UNAUTHENTICATED';
        }
        expect(outcome).toBe(generationOrRead[caller]);
      } finally {
        await connection.dispose();
      }
    });
  });
});
