import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { describeError } from '../../src/server/error-log.ts';
import { createTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import {
  CAPTURE,
  CHANGE_PLAN,
  CREATE_ORGANIZATION,
  GRANT_CREDITS,
  PURCHASE_PACK,
  QUOTE,
  REFUND,
  RESERVE,
} from '../support/operations.ts';
import { connectWs } from '../support/realtime.ts';
import { grant, newOrganization, reserve, textCredits, uniqueKey, type TestOrganization } from '../support/scenario.ts';
import { expectNoLeak, send, snapshot } from './http.ts';

// Values that pass GraphQL's types but that the database cannot store as given (NUL, lone
// surrogates, instants outside its range), and values whose echo in an error would be unbounded.
// Each must be a typed InvalidInputError naming the field (BAD_USER_INPUT for a query), with
// nothing written and no log line carrying the query's parameters.

const NUL = 'nul\u0000byte';
const LONE_SURROGATE = 'half \ud800 a pair';
const HUGE = 'p'.repeat(60_000);
const ECHO_MESSAGE_MAX = 100;

interface Setup {
  own: TestOrganization;
  reservationId: string;
}

interface Case {
  name: string;
  query: string;
  variables: (s: Setup) => Record<string, unknown>;
  token: (s: Setup) => string;
  result: string;
  field: string;
}

const grantInput = (s: Setup, change: Record<string, unknown>) => ({
  input: {
    organizationId: s.own.id,
    type: 'PROMOTIONAL',
    amount: 10,
    reason: 'test',
    idempotencyKey: uniqueKey(),
    ...change,
  },
});
const reserveInput = (s: Setup, change: Record<string, unknown>, generation: Record<string, unknown> = {}) => ({
  input: {
    organizationId: s.own.id,
    idempotencyKey: uniqueKey(),
    generation: { modelId: 'text-draft', count: 1, ...generation },
    ...change,
  },
});
const purchaseInput = (s: Setup, change: Record<string, unknown>) => ({
  input: { organizationId: s.own.id, packId: 'pack-500', paymentReference: uniqueKey(), ...change },
});
const organizationInput = (change: Record<string, unknown>) => ({ input: { name: 'Acme', planId: 'free', ...change } });

const admin = (s: Setup) => s.own.admin;
const member = (s: Setup) => s.own.member;
const service = (s: Setup) => s.own.service;

const unstorable: Case[] = [
  {
    name: 'a NUL in a reservation idempotency key',
    query: RESERVE,
    variables: (s) => reserveInput(s, { idempotencyKey: NUL }),
    token: member,
    result: 'reserveCredits',
    field: 'idempotencyKey',
  },
  {
    name: 'a lone surrogate in a reservation idempotency key',
    query: RESERVE,
    variables: (s) => reserveInput(s, { idempotencyKey: LONE_SURROGATE }),
    token: member,
    result: 'reserveCredits',
    field: 'idempotencyKey',
  },
  {
    name: 'a NUL in a model id',
    query: RESERVE,
    variables: (s) => reserveInput(s, {}, { modelId: 'text-draft\u0000' }),
    token: member,
    result: 'reserveCredits',
    field: 'generation.modelId',
  },
  {
    name: 'a NUL in a grant idempotency key',
    query: GRANT_CREDITS,
    variables: (s) => grantInput(s, { idempotencyKey: NUL }),
    token: admin,
    result: 'grantCredits',
    field: 'idempotencyKey',
  },
  {
    name: 'a NUL in a grant reason',
    query: GRANT_CREDITS,
    variables: (s) => grantInput(s, { reason: NUL }),
    token: admin,
    result: 'grantCredits',
    field: 'reason',
  },
  {
    name: 'a lone surrogate in a grant reason',
    query: GRANT_CREDITS,
    variables: (s) => grantInput(s, { reason: LONE_SURROGATE }),
    token: admin,
    result: 'grantCredits',
    field: 'reason',
  },
  {
    name: 'a NUL in a payment reference',
    query: PURCHASE_PACK,
    variables: (s) => purchaseInput(s, { paymentReference: NUL }),
    token: service,
    result: 'purchaseCreditPack',
    field: 'paymentReference',
  },
  {
    name: 'a NUL in a pack id',
    query: PURCHASE_PACK,
    variables: (s) => purchaseInput(s, { packId: 'pack-500\u0000' }),
    token: service,
    result: 'purchaseCreditPack',
    field: 'packId',
  },
  {
    name: 'a NUL in an organization name',
    query: CREATE_ORGANIZATION,
    variables: () => organizationInput({ name: NUL }),
    token: admin,
    result: 'createOrganization',
    field: 'name',
  },
  {
    name: 'a NUL in a plan id',
    query: CREATE_ORGANIZATION,
    variables: () => organizationInput({ planId: 'free\u0000' }),
    token: admin,
    result: 'createOrganization',
    field: 'planId',
  },
  {
    name: 'a NUL in an external id',
    query: CREATE_ORGANIZATION,
    variables: () => organizationInput({ externalId: NUL }),
    token: admin,
    result: 'createOrganization',
    field: 'externalId',
  },
  {
    name: 'a NUL in a plan change',
    query: CHANGE_PLAN,
    variables: (s) => ({ input: { organizationId: s.own.id, planId: 'pro\u0000' } }),
    token: service,
    result: 'changePlan',
    field: 'planId',
  },
  {
    name: 'a NUL in a refund reason',
    query: REFUND,
    variables: (s) => ({ input: { reservationId: s.reservationId, reason: NUL } }),
    token: service,
    result: 'refundReservation',
    field: 'reason',
  },
  {
    name: 'a NUL in a reservation id',
    query: CAPTURE,
    variables: (s) => ({ input: { reservationId: `${s.reservationId}\u0000` } }),
    token: service,
    result: 'captureReservation',
    field: 'reservationId',
  },
  {
    name: 'a billing anchor in year 0000',
    query: CREATE_ORGANIZATION,
    variables: () => organizationInput({ billingCycleAnchor: '0000-01-01T00:00:00Z' }),
    token: admin,
    result: 'createOrganization',
    field: 'billingCycleAnchor',
  },
  {
    name: 'a billing anchor in year 9999',
    query: CREATE_ORGANIZATION,
    variables: () => organizationInput({ billingCycleAnchor: '9999-12-31T00:00:00Z' }),
    token: admin,
    result: 'createOrganization',
    field: 'billingCycleAnchor',
  },
  {
    name: 'a billing anchor before 1970',
    query: CREATE_ORGANIZATION,
    variables: () => organizationInput({ billingCycleAnchor: '1969-12-31T23:59:59Z' }),
    token: admin,
    result: 'createOrganization',
    field: 'billingCycleAnchor',
  },
  {
    name: 'an expiry in year 9999',
    query: GRANT_CREDITS,
    variables: (s) => grantInput(s, { expiresAt: '9999-12-31T23:59:59Z' }),
    token: admin,
    result: 'grantCredits',
    field: 'expiresAt',
  },
  {
    name: 'an expiry in year 3000',
    query: GRANT_CREDITS,
    variables: (s) => grantInput(s, { expiresAt: '3000-01-01T00:00:00Z' }),
    token: admin,
    result: 'grantCredits',
    field: 'expiresAt',
  },
  {
    name: 'an expiry in year 0000',
    query: GRANT_CREDITS,
    variables: (s) => grantInput(s, { expiresAt: '0000-01-01T00:00:00Z' }),
    token: admin,
    result: 'grantCredits',
    field: 'expiresAt',
  },
];

// Unknown ids whose whole echo would be long or unprintable.
const echoed: Case[] = [
  {
    name: 'a 60 KB plan id for a new organization',
    query: CREATE_ORGANIZATION,
    variables: () => organizationInput({ planId: HUGE }),
    token: admin,
    result: 'createOrganization',
    field: 'planId',
  },
  {
    name: 'a 60 KB plan id for a plan change',
    query: CHANGE_PLAN,
    variables: (s) => ({ input: { organizationId: s.own.id, planId: HUGE } }),
    token: service,
    result: 'changePlan',
    field: 'planId',
  },
  {
    name: 'a 60 KB pack id',
    query: PURCHASE_PACK,
    variables: (s) => purchaseInput(s, { packId: HUGE }),
    token: service,
    result: 'purchaseCreditPack',
    field: 'packId',
  },
  {
    name: 'a 60 KB model id',
    query: RESERVE,
    variables: (s) => reserveInput(s, {}, { modelId: HUGE }),
    token: member,
    result: 'reserveCredits',
    field: 'generation.modelId',
  },
  {
    name: 'a plan id with a right-to-left override, a bell and a line separator',
    query: CREATE_ORGANIZATION,
    variables: () => organizationInput({ planId: 'pro\u202Egnp.exe\u0007\u2028x' }),
    token: admin,
    result: 'createOrganization',
    field: 'planId',
  },
];

/** Characters an error message never carries from input. */
const UNPRINTABLE = /[\u0000-\u001f\u007f\u202a-\u202e\u2066-\u2069\u2028\u2029]/;

describe.each(drivers)('values the database cannot store, and bounded echoes (%s)', (driver) => {
  let t: TestApp;
  let setup: Setup;
  const logged: string[] = [];
  let listening: Promise<number> | null = null;
  /** The app's address on a real socket, listening from the first call on. */
  const baseUrl = async () => `http://127.0.0.1:${await (listening ??= t.app.listen(0, '127.0.0.1'))}`;

  beforeAll(async () => {
    t = await createTestApp(driver, { app: { log: (message, detail) => logged.push(`${message} ${String(detail)}`) } });
    const own = await newOrganization(t);
    await grant(t, own, 'PURCHASED', 50);
    const reservation = await reserve(t, own, textCredits(10));
    setup = { own, reservationId: reservation.reservation.id };
  });
  afterAll(() => t.close());

  it.each([...unstorable, ...echoed])('$name: InvalidInputError on $field, nothing written', async (testCase) => {
    const before = await snapshot(t);
    const response = await send(t, {
      json: { query: testCase.query, variables: testCase.variables(setup) },
      token: testCase.token(setup),
    });
    const context = `${response.status} ${response.text.slice(0, 300)}`;
    expect(response.status, context).toBe(200);
    expect(response.body.errors, context).toBeUndefined();
    const result = response.body.data[testCase.result];
    expect(result, context).toMatchObject({ __typename: 'InvalidInputError', field: testCase.field });
    expect(result.message.length, context).toBeLessThanOrEqual(ECHO_MESSAGE_MAX);
    expect(result.message, context).not.toMatch(UNPRINTABLE);
    expect(response.text.length, context).toBeLessThan(2_000);
    expectNoLeak(response);
    expect(await snapshot(t)).toEqual(before);
    expect(await t.audit()).toEqual([]);
  });

  it('refuses a NUL or a 60 KB model id in a quote with a short BAD_USER_INPUT', async () => {
    for (const modelId of ['text-draft\u0000', HUGE]) {
      const response = await send(t, {
        json: { query: QUOTE, variables: { id: setup.own.id, generation: { modelId } } },
        token: setup.own.member,
      });
      expect(response.body.data).toBeNull();
      expect(response.body.errors).toEqual([
        expect.objectContaining({
          extensions: expect.objectContaining({ code: 'BAD_USER_INPUT', field: 'generation.modelId' }),
        }),
      ]);
      expect(response.body.errors[0].message.length).toBeLessThanOrEqual(ECHO_MESSAGE_MAX);
      expect(response.text.length).toBeLessThan(1_000);
    }
  });

  it('answers the same over a WebSocket', async () => {
    const connection = connectWs(await baseUrl(), setup.own.member);
    try {
      const before = await snapshot(t);
      for (const variables of [
        reserveInput(setup, { idempotencyKey: NUL }),
        reserveInput(setup, {}, { modelId: HUGE }),
      ]) {
        const result: any = await new Promise((resolve, reject) => {
          let value: unknown;
          connection.client.subscribe(
            { query: RESERVE, variables },
            { next: (next) => void (value = next), error: reject, complete: () => resolve(value) },
          );
        });
        expect(result.errors).toBeUndefined();
        expect(result.data.reserveCredits).toMatchObject({ __typename: 'InvalidInputError' });
        expect(result.data.reserveCredits.message.length).toBeLessThanOrEqual(ECHO_MESSAGE_MAX);
      }
      expect(await snapshot(t)).toEqual(before);
    } finally {
      await connection.dispose();
    }
  });

  // graphql-js's own messages repeat input whole; they are held to the same bound.
  const graphqlEchoes: Array<{
    name: string;
    request: (s: Setup) => { query: string; variables?: Record<string, unknown> };
    token: (s: Setup) => string;
  }> = [
    {
      name: 'a 60 KB string for an Int variable',
      request: (s) => ({ query: GRANT_CREDITS, variables: grantInput(s, { amount: HUGE }) }),
      token: admin,
    },
    {
      name: 'a 60 KB enum value',
      request: (s) => ({ query: GRANT_CREDITS, variables: grantInput(s, { type: HUGE }) }),
      token: admin,
    },
    {
      name: 'a 60 KB string in a list where an object is expected',
      request: (s) => ({ query: RESERVE, variables: reserveInput(s, { generation: [HUGE] }) }),
      token: member,
    },
    {
      name: 'an unprintable string for an Int variable',
      request: (s) => ({ query: GRANT_CREDITS, variables: grantInput(s, { amount: 'ten\u202e\u0007' }) }),
      token: admin,
    },
    {
      name: 'a 60 KB string literal for an Int argument',
      request: (s) => ({ query: `{ ledger(organizationId: "${s.own.id}", first: "${HUGE}") { edges { cursor } } }` }),
      token: member,
    },
    { name: 'a syntax error at a 60 KB string', request: () => ({ query: `{ plans "${HUGE}" }` }), token: member },
  ];

  it.each(graphqlEchoes)('$name: the error repeats at most a short prefix', async (testCase) => {
    const before = await snapshot(t);
    const response = await send(t, { json: testCase.request(setup), token: testCase.token(setup) });
    expect(response.status).toBe(400);
    const messages: string[] = response.body.errors.map((error: { message: string }) => error.message);
    expect(messages.length).toBeGreaterThan(0);
    for (const message of messages) {
      expect(message.length, message).toBeLessThanOrEqual(301);
      expect(message, message).not.toMatch(UNPRINTABLE);
      expect(message, message).not.toContain('p'.repeat(41));
    }
    expect(response.text.length).toBeLessThan(2_000);
    expectNoLeak(response);
    expect(await snapshot(t)).toEqual(before);
  });

  it('bounds graphql-js echoes over a WebSocket too', async () => {
    const connection = connectWs(await baseUrl(), setup.own.admin);
    try {
      const result: any = await new Promise((resolve, reject) => {
        let value: unknown;
        connection.client.subscribe(
          { query: GRANT_CREDITS, variables: grantInput(setup, { amount: HUGE }) },
          { next: (next) => void (value = next), error: reject, complete: () => resolve(value) },
        );
      });
      expect(result.errors.length).toBeGreaterThan(0);
      for (const error of result.errors) expect(error.message.length).toBeLessThanOrEqual(301);
    } finally {
      await connection.dispose();
    }
  });

  it('logs an unexpected database error without the query or its parameters', async () => {
    // A trigger that fails inserts of one reason stands in for any unexpected database failure:
    // the failing statement carries the grant's parameters, and none of them may be logged.
    await t.database.db.execute(
      sql.raw(`
      create function test_fail_marked_lots() returns trigger language plpgsql as $$
      begin
        if new.reason like 'explode%' then raise exception 'test trigger refused the lot'; end if;
        return new;
      end $$`),
    );
    await t.database.db.execute(
      sql.raw(`
      create trigger test_fail_marked_lots before insert on credit_lots
      for each row execute function test_fail_marked_lots()`),
    );
    const secretKey = `secret-key-${uniqueKey()}`;
    const secretReason = `explode-${uniqueKey()}`;
    const printed: string[] = [];
    const capture = (...args: unknown[]) =>
      void printed.push(
        args.map((arg) => (arg instanceof Error ? `${arg.message}\n${arg.stack}` : String(arg))).join(' '),
      );
    const consoleSpies = (['error', 'warn', 'log', 'info', 'debug'] as const).map((method) =>
      vi.spyOn(console, method).mockImplementation(capture),
    );
    logged.length = 0;
    try {
      const response = await send(t, {
        json: {
          query: GRANT_CREDITS,
          variables: {
            input: {
              organizationId: setup.own.id,
              type: 'PURCHASED',
              amount: 5,
              reason: secretReason,
              idempotencyKey: secretKey,
            },
          },
        },
        token: setup.own.admin,
      });
      expect(response.body.errors?.[0]?.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
    } finally {
      for (const spy of consoleSpies) spy.mockRestore();
      await t.database.db.execute(sql.raw('drop trigger test_fail_marked_lots on credit_lots'));
      await t.database.db.execute(sql.raw('drop function test_fail_marked_lots()'));
    }
    const everything = [...logged, ...printed].join('\n');
    // The failure is logged once, with what an operator needs: the classes and the SQLSTATE.
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(
      /^unexpected error GraphQLError at grantCredits <- DrizzleQueryError \(query and parameters not logged\) <- \w+ P0001 \(message not logged\)/,
    );
    for (const secret of [secretKey, secretReason, setup.own.id, 'insert into', 'params:', 'Failed query']) {
      expect(everything).not.toContain(secret);
    }
  });

  it('describes real driver errors without the values they quote', async () => {
    const secret = `secret-${uniqueKey()}`;
    const error = await t.database.db.execute(sql`select ${secret}::uuid`).then(
      () => null,
      (failure: unknown) => failure,
    );
    expect(error).toBeInstanceOf(Error);
    const described = describeError(error);
    expect(described).toMatch(
      /DrizzleQueryError \(query and parameters not logged\) <- \w+ 22P02 \(message not logged\)/,
    );
    expect(described).not.toContain(secret);
    expect(described).not.toMatch(/select/i);
  });
});
