import { getIntrospectionQuery } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import {
  BALANCE,
  CAPTURE,
  CHANGE_PLAN,
  CREATE_ORGANIZATION,
  EXTEND,
  GRANT_CREDITS,
  LEDGER,
  PURCHASE_PACK,
  QUOTE,
  REFUND,
  RESERVATION,
  RESERVE,
} from '../support/operations.ts';
import { grant, newOrganization, reserve, textCredits, uniqueKey, type TestOrganization } from '../support/scenario.ts';
import {
  badTokens,
  expectNoLeak,
  malformedClaimTokens,
  send,
  snapshot,
  type RawRequest,
  type SentResponse,
} from './http.ts';

// Every request below is hostile or malformed. For each one the suite asserts the answer (code,
// result type, field), the HTTP status yoga gives for it, that nothing internal leaks, and that
// no balance, version or row changed anywhere in the database.

interface Setup {
  own: TestOrganization;
  other: TestOrganization;
  ownReservationId: string;
  otherReservationId: string;
  tokens: Awaited<ReturnType<typeof badTokens>>;
  malformed: Awaited<ReturnType<typeof malformedClaimTokens>>;
}

type Outcome =
  /** A request-level GraphQL error: some error carries this code, and no data came back. */
  | { status: number; code: string; message?: RegExp }
  /** graphql-js's own variable coercion error, which has no code but names the path at fault. */
  | { status: 400; variable: string }
  /** A mutation's typed error, in the result union of the `result` root field. */
  | { status: 200; result: string; typename: string; field?: string }
  /** A query that answers with data (a foreign object reads as missing). */
  | { status: 200; data: unknown }
  /** Refused by HTTP alone, with no GraphQL body. */
  | { status: number; emptyBody: true };

interface Case {
  name: string;
  request(s: Setup): RawRequest;
  expect: Outcome;
}

// What GraphiQL 3+ asks for when it loads.
const GRAPHIQL_INTROSPECTION = {
  descriptions: true,
  specifiedByUrl: true,
  directiveIsRepeatable: true,
  schemaDescription: true,
  inputValueDeprecation: true,
};

const MISSING_ID = '00000000-0000-4000-8000-000000000000';
const KB = 1024;

function op(query: string, variables: Record<string, unknown>, token: (s: Setup) => string | null) {
  return (s: Setup): RawRequest => ({ json: { query, variables }, token: token(s) });
}
const admin = (s: Setup) => s.own.admin;
const member = (s: Setup) => s.own.member;
const service = (s: Setup) => s.own.service;

/** A grant for the own organization with one field replaced. */
function grantWith(field: string, value: unknown) {
  return (s: Setup): RawRequest => ({
    json: {
      query: GRANT_CREDITS,
      variables: {
        input: {
          organizationId: s.own.id,
          type: 'PROMOTIONAL',
          amount: 10,
          reason: 'test',
          idempotencyKey: uniqueKey(),
          [field]: value,
        },
      },
    },
    token: s.own.admin,
  });
}

/** A reservation for the own organization with the input or generation changed. */
function reserveWith(input: Record<string, unknown>, generation: Record<string, unknown> = {}) {
  return (s: Setup): RawRequest => ({
    json: {
      query: RESERVE,
      variables: {
        input: {
          organizationId: s.own.id,
          idempotencyKey: uniqueKey(),
          generation: { modelId: 'image-standard', resolution: 'HD_720P', count: 1, ...generation },
          ...input,
        },
      },
    },
    token: s.own.member,
  });
}

function stream(bytes: number): ReadableStream<Uint8Array> {
  // Sent in chunks with no Content-Length, so only the streaming check can stop it.
  const chunk = new TextEncoder().encode('{"query":"' + 'x'.repeat(16 * KB));
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= bytes) return controller.close();
      sent += chunk.byteLength;
      controller.enqueue(chunk);
    },
  });
}

const cases: Case[] = [
  // Transport and request shape.
  {
    name: 'malformed JSON',
    request: () => ({ body: '{"query": "{ plans { id } }"' }),
    expect: { status: 400, code: 'BAD_REQUEST', message: /invalid JSON/ },
  },
  {
    name: 'a JSON string instead of an object',
    request: () => ({ body: '"{ plans { id } }"' }),
    expect: { status: 400, code: 'BAD_REQUEST' },
  },
  { name: 'a JSON null body', request: () => ({ body: 'null' }), expect: { status: 400, code: 'BAD_REQUEST' } },
  {
    name: 'batched operations (an array body)',
    request: (s) => ({ json: [{ query: '{ plans { id } }' }, { query: '{ plans { id } }' }], token: s.own.member }),
    expect: { status: 400, code: 'BAD_REQUEST', message: /Batching is not supported/ },
  },
  {
    name: 'a body over 100 KB',
    request: (s) => ({
      json: { query: '{ plans { id } }', variables: { pad: 'x'.repeat(101 * KB) } },
      token: s.own.member,
    }),
    expect: { status: 413, code: 'REQUEST_ENTITY_TOO_LARGE' },
  },
  {
    name: 'a chunked body over 100 KB without Content-Length',
    request: (s) => ({ body: stream(200 * KB), token: s.own.member }),
    expect: { status: 413, code: 'REQUEST_ENTITY_TOO_LARGE' },
  },
  {
    name: 'a 1 MB idempotency key',
    request: reserveWith({ idempotencyKey: 'k'.repeat(1024 * KB) }),
    expect: { status: 413, code: 'REQUEST_ENTITY_TOO_LARGE' },
  },
  {
    name: 'no query at all',
    request: (s) => ({ json: { variables: {} }, token: s.own.member }),
    expect: { status: 400, code: 'BAD_REQUEST' },
  },
  {
    name: 'a query that is not a string',
    request: (s) => ({ json: { query: 42 }, token: s.own.member }),
    expect: { status: 400, code: 'BAD_REQUEST' },
  },
  {
    name: 'variables that are not an object',
    request: (s) => ({ json: { query: BALANCE, variables: '{"id": 1}' }, token: s.own.member }),
    expect: { status: 400, code: 'BAD_REQUEST' },
  },
  {
    // With the CSRF header (without it, simple content types are refused with 403 first; see
    // test/security/hardening.test.ts).
    name: 'an unsupported content type',
    request: (s) => ({
      body: 'query { plans { id } }',
      headers: { 'content-type': 'text/plain', 'x-graphql-yoga-csrf': '1' },
      token: s.own.member,
    }),
    expect: { status: 415, emptyBody: true },
  },
  {
    name: 'a multipart (file upload) body',
    request: (s) => ({
      body: '--x\r\nContent-Disposition: form-data; name="operations"\r\n\r\n{"query":"{ plans { id } }"}\r\n--x--\r\n',
      headers: { 'content-type': 'multipart/form-data; boundary=x', 'x-graphql-yoga-csrf': '1' },
      token: s.own.member,
    }),
    expect: { status: 415, emptyBody: true },
  },
  {
    name: 'a mutation sent with GET',
    request: (s) => ({
      method: 'GET',
      body: undefined,
      search: `?query=${encodeURIComponent(`mutation { createOrganization(input: {name: "x", planId: "free"}) { __typename } }`)}`,
      token: s.own.admin,
    }),
    expect: { status: 405, code: 'BAD_REQUEST' },
  },
  {
    name: 'a GraphQL syntax error',
    request: op('mutation { grantCredits(input: { ', {}, admin),
    expect: { status: 400, code: 'GRAPHQL_PARSE_FAILED' },
  },
  {
    name: 'an unknown field',
    request: op('{ plans { id secretCost } }', {}, member),
    expect: { status: 400, code: 'GRAPHQL_VALIDATION_FAILED' },
  },
  {
    name: 'an operation name that is not in the document',
    request: (s) => ({ json: { query: 'query A { plans { id } }', operationName: 'B' }, token: s.own.member }),
    expect: { status: 400, code: 'OPERATION_RESOLUTION_FAILURE' },
  },

  // Variables that do not fit their GraphQL types: refused before any resolver runs.
  {
    name: 'a string for an Int amount',
    request: grantWith('amount', 'ten'),
    expect: { status: 400, variable: 'input.amount' },
  },
  {
    name: 'a huge number (1e20) for an Int amount',
    request: grantWith('amount', 1e20),
    expect: { status: 400, variable: 'input.amount' },
  },
  {
    name: 'an amount just past 32-bit Int (2^31)',
    request: grantWith('amount', 2 ** 31),
    expect: { status: 400, variable: 'input.amount' },
  },
  { name: 'a fractional amount', request: grantWith('amount', 1.5), expect: { status: 400, variable: 'input.amount' } },
  {
    name: 'an unknown account type',
    request: grantWith('type', 'GOLD'),
    expect: { status: 400, variable: 'input.type' },
  },
  {
    name: 'a missing required input',
    request: op(GRANT_CREDITS, {}, admin),
    expect: { status: 400, variable: '$input' },
  },
  {
    name: 'a DateTime that is not a date',
    request: grantWith('expiresAt', 'next tuesday'),
    expect: { status: 400, variable: 'input.expiresAt' },
  },
  {
    name: 'a DateTime without a time zone',
    request: grantWith('expiresAt', '2026-06-01T00:00:00'),
    expect: { status: 400, variable: 'input.expiresAt' },
  },
  {
    name: 'an impossible calendar day (30 February)',
    request: grantWith('expiresAt', '2026-02-30T00:00:00Z'),
    expect: { status: 400, variable: 'input.expiresAt' },
  },
  {
    name: 'a list where an object is expected',
    request: reserveWith({ generation: [{ modelId: 'text-draft' }] }),
    expect: { status: 400, variable: 'input.generation' },
  },

  // Values the types allow but the ledger refuses: a typed InvalidInputError naming the field.
  {
    name: 'a zero grant',
    request: grantWith('amount', 0),
    expect: { status: 200, result: 'grantCredits', typename: 'InvalidInputError', field: 'amount' },
  },
  {
    name: 'a negative grant',
    request: grantWith('amount', -500),
    expect: { status: 200, result: 'grantCredits', typename: 'InvalidInputError', field: 'amount' },
  },
  {
    name: 'a grant over 1,000,000,000',
    request: grantWith('amount', 1_000_000_001),
    expect: { status: 200, result: 'grantCredits', typename: 'InvalidInputError', field: 'amount' },
  },
  {
    name: 'an empty idempotency key',
    request: grantWith('idempotencyKey', ''),
    expect: { status: 200, result: 'grantCredits', typename: 'InvalidInputError', field: 'idempotencyKey' },
  },
  {
    name: 'an idempotency key of 256 characters',
    request: grantWith('idempotencyKey', 'k'.repeat(256)),
    expect: { status: 200, result: 'grantCredits', typename: 'InvalidInputError', field: 'idempotencyKey' },
  },
  {
    name: 'a 90 KB reason (under the body limit)',
    request: grantWith('reason', 'r'.repeat(90 * KB)),
    expect: { status: 200, result: 'grantCredits', typename: 'InvalidInputError', field: 'reason' },
  },
  {
    name: 'a promotional grant that expired yesterday',
    request: grantWith('expiresAt', '2026-01-14T12:00:00Z'),
    expect: { status: 200, result: 'grantCredits', typename: 'InvalidInputError', field: 'expiresAt' },
  },
  {
    name: 'a malformed organization id in a grant',
    request: grantWith('organizationId', "1' or '1'='1"),
    expect: { status: 200, result: 'grantCredits', typename: 'InvalidInputError', field: 'organizationId' },
  },
  {
    name: 'an unknown model',
    request: reserveWith({}, { modelId: 'gpt-ultra', resolution: null }),
    expect: { status: 200, result: 'reserveCredits', typename: 'InvalidInputError', field: 'generation.modelId' },
  },
  {
    name: 'a count of 0',
    request: reserveWith({}, { count: 0 }),
    expect: { status: 200, result: 'reserveCredits', typename: 'InvalidInputError', field: 'generation.count' },
  },
  {
    name: 'a negative count',
    request: reserveWith({}, { count: -3 }),
    expect: { status: 200, result: 'reserveCredits', typename: 'InvalidInputError', field: 'generation.count' },
  },
  {
    name: 'a count of 101',
    request: reserveWith({}, { count: 101 }),
    expect: { status: 200, result: 'reserveCredits', typename: 'InvalidInputError', field: 'generation.count' },
  },
  {
    name: 'a resolution the model lacks',
    request: reserveWith({}, { modelId: 'image-draft', resolution: 'UHD_4K' }),
    expect: { status: 200, result: 'reserveCredits', typename: 'InvalidInputError', field: 'generation.resolution' },
  },
  {
    name: 'a video without a duration',
    request: reserveWith({}, { modelId: 'video-standard', resolution: 'HD_720P' }),
    expect: {
      status: 200,
      result: 'reserveCredits',
      typename: 'InvalidInputError',
      field: 'generation.durationSeconds',
    },
  },
  {
    name: 'a video longer than the model allows',
    request: reserveWith({}, { modelId: 'video-draft', resolution: 'HD_720P', durationSeconds: 11 }),
    expect: {
      status: 200,
      result: 'reserveCredits',
      typename: 'InvalidInputError',
      field: 'generation.durationSeconds',
    },
  },
  {
    name: 'a negative video duration',
    request: reserveWith({}, { modelId: 'video-draft', resolution: 'HD_720P', durationSeconds: -10 }),
    expect: {
      status: 200,
      result: 'reserveCredits',
      typename: 'InvalidInputError',
      field: 'generation.durationSeconds',
    },
  },
  {
    name: 'a duration for an image model',
    request: reserveWith({}, { durationSeconds: 5 }),
    expect: {
      status: 200,
      result: 'reserveCredits',
      typename: 'InvalidInputError',
      field: 'generation.durationSeconds',
    },
  },
  {
    name: 'a ttl of 0 seconds',
    request: reserveWith({ ttlSeconds: 0 }),
    expect: { status: 200, result: 'reserveCredits', typename: 'InvalidInputError', field: 'ttlSeconds' },
  },
  {
    name: 'a ttl over a day',
    request: reserveWith({ ttlSeconds: 86_401 }),
    expect: { status: 200, result: 'reserveCredits', typename: 'InvalidInputError', field: 'ttlSeconds' },
  },
  {
    name: 'a reservation idempotency key of 256 characters',
    request: reserveWith({ idempotencyKey: 'k'.repeat(256) }),
    expect: { status: 200, result: 'reserveCredits', typename: 'InvalidInputError', field: 'idempotencyKey' },
  },
  {
    name: 'a capture above the reserved amount',
    request: (s) => ({
      json: { query: CAPTURE, variables: { input: { reservationId: s.ownReservationId, amount: 11 } } },
      token: s.own.service,
    }),
    expect: { status: 200, result: 'captureReservation', typename: 'InvalidInputError', field: 'amount' },
  },
  {
    name: 'a negative capture',
    request: (s) => ({
      json: { query: CAPTURE, variables: { input: { reservationId: s.ownReservationId, amount: -5 } } },
      token: s.own.service,
    }),
    expect: { status: 200, result: 'captureReservation', typename: 'InvalidInputError', field: 'amount' },
  },
  {
    name: 'a malformed reservation id',
    request: op(CAPTURE, { input: { reservationId: '../../etc/passwd' } }, service),
    expect: { status: 200, result: 'captureReservation', typename: 'InvalidInputError', field: 'reservationId' },
  },
  {
    name: 'a negative extension',
    request: (s) => ({
      json: { query: EXTEND, variables: { input: { reservationId: s.ownReservationId, ttlSeconds: -60 } } },
      token: s.own.service,
    }),
    expect: { status: 200, result: 'extendReservation', typename: 'InvalidInputError', field: 'ttlSeconds' },
  },
  {
    name: 'an unknown credit pack',
    request: (s) => ({
      json: {
        query: PURCHASE_PACK,
        variables: { input: { organizationId: s.own.id, packId: 'pack-free-money', paymentReference: uniqueKey() } },
      },
      token: s.own.service,
    }),
    expect: { status: 200, result: 'purchaseCreditPack', typename: 'InvalidInputError', field: 'packId' },
  },
  {
    name: 'an empty payment reference',
    request: (s) => ({
      json: {
        query: PURCHASE_PACK,
        variables: { input: { organizationId: s.own.id, packId: 'pack-500', paymentReference: '' } },
      },
      token: s.own.service,
    }),
    expect: { status: 200, result: 'purchaseCreditPack', typename: 'InvalidInputError', field: 'paymentReference' },
  },
  {
    name: 'an organization with a blank name',
    request: op(CREATE_ORGANIZATION, { input: { name: '   ', planId: 'free' } }, admin),
    expect: { status: 200, result: 'createOrganization', typename: 'InvalidInputError', field: 'name' },
  },
  {
    name: 'an organization on an unknown plan',
    request: op(CREATE_ORGANIZATION, { input: { name: 'Acme', planId: 'enterprise-unlimited' } }, admin),
    expect: { status: 200, result: 'createOrganization', typename: 'InvalidInputError', field: 'planId' },
  },
  {
    name: 'a plan change to an unknown plan',
    request: (s) => ({
      json: {
        query: CHANGE_PLAN,
        variables: { input: { organizationId: s.own.id, planId: 'nope', immediately: true } },
      },
      token: s.own.service,
    }),
    expect: { status: 200, result: 'changePlan', typename: 'InvalidInputError', field: 'planId' },
  },

  // Other organizations' ids: FORBIDDEN for an organizationId, "missing" for an object id.
  {
    name: "a reservation against another organization's balance",
    request: reserveWith({ organizationId: '__OTHER__' }),
    expect: { status: 200, code: 'FORBIDDEN' },
  },
  {
    name: "capturing another organization's reservation",
    request: (s) => ({
      json: { query: CAPTURE, variables: { input: { reservationId: s.otherReservationId } } },
      token: s.own.service,
    }),
    expect: { status: 200, result: 'captureReservation', typename: 'NotFoundError' },
  },
  {
    name: "reading another organization's reservation",
    request: (s) => ({ json: { query: RESERVATION, variables: { id: s.otherReservationId } }, token: s.own.member }),
    expect: { status: 200, data: { reservation: null } },
  },
  {
    name: "reading another organization's balance",
    request: (s) => ({ json: { query: BALANCE, variables: { id: s.other.id } }, token: s.own.member }),
    expect: { status: 200, code: 'FORBIDDEN' },
  },
  {
    name: 'a grant to an organization that does not exist',
    request: grantWith('organizationId', MISSING_ID),
    expect: { status: 200, result: 'grantCredits', typename: 'NotFoundError' },
  },

  // Bad input on queries: BAD_USER_INPUT naming the field.
  {
    name: 'a malformed id for a balance',
    request: op(BALANCE, { id: 'DROP TABLE organizations' }, member),
    expect: { status: 200, code: 'BAD_USER_INPUT' },
  },
  {
    name: 'a cursor that is not base64 of ours',
    request: (s) => ({
      json: { query: LEDGER, variables: { id: s.own.id, after: '!!not-a-cursor!!' } },
      token: s.own.member,
    }),
    expect: { status: 200, code: 'BAD_USER_INPUT' },
  },
  {
    name: 'a forged cursor with a negative id',
    request: (s) => ({
      json: { query: LEDGER, variables: { id: s.own.id, after: Buffer.from('ledger:-1').toString('base64url') } },
      token: s.own.member,
    }),
    expect: { status: 200, code: 'BAD_USER_INPUT' },
  },
  {
    name: 'a ledger page of 1,000,000',
    request: (s) => ({ json: { query: LEDGER, variables: { id: s.own.id, first: 1_000_000 } }, token: s.own.member }),
    expect: { status: 200, code: 'BAD_USER_INPUT' },
  },
  {
    name: 'a quote for an unknown model',
    request: (s) => ({
      json: { query: QUOTE, variables: { id: s.own.id, generation: { modelId: 'nope' } } },
      token: s.own.member,
    }),
    expect: { status: 200, code: 'BAD_USER_INPUT' },
  },

  // Tokens: every bad one is UNAUTHENTICATED, and nothing runs.
  {
    name: 'no token for a mutation',
    request: (s) => ({ ...reserveWith({})(s), token: null }),
    expect: { status: 200, code: 'UNAUTHENTICATED' },
  },
  {
    name: 'an expired token',
    request: (s) => ({ ...reserveWith({})(s), token: s.tokens.expired }),
    expect: { status: 200, code: 'UNAUTHENTICATED', message: /expired/ },
  },
  {
    name: 'a token signed with another secret',
    request: (s) => ({ ...grantWith('amount', 10)(s), token: s.tokens.forged }),
    expect: { status: 200, code: 'UNAUTHENTICATED' },
  },
  {
    name: 'an alg: none token',
    request: (s) => ({ ...grantWith('amount', 10)(s), token: s.tokens.algNone }),
    expect: { status: 200, code: 'UNAUTHENTICATED' },
  },
  {
    name: 'an HS512 token',
    request: (s) => ({ ...grantWith('amount', 10)(s), token: s.tokens.hs512 }),
    expect: { status: 200, code: 'UNAUTHENTICATED' },
  },
  {
    name: 'a tampered payload',
    request: (s) => ({ ...grantWith('amount', 10)(s), token: s.tokens.tampered }),
    expect: { status: 200, code: 'UNAUTHENTICATED' },
  },
  {
    name: 'an unknown role',
    request: (s) => ({ ...grantWith('amount', 10)(s), token: s.tokens.unknownRole }),
    expect: { status: 200, code: 'UNAUTHENTICATED' },
  },
  {
    name: 'a member token without an organization',
    request: (s) => ({ ...reserveWith({})(s), token: s.tokens.memberWithoutOrg }),
    expect: { status: 200, code: 'UNAUTHENTICATED' },
  },
  {
    name: 'a Basic Authorization header',
    request: (s) => ({ ...reserveWith({})(s), authorization: 'Basic YWRtaW46YWRtaW4=' }),
    expect: { status: 200, code: 'UNAUTHENTICATED' },
  },
  {
    name: 'a token that is not a JWT',
    request: (s) => ({ ...reserveWith({})(s), token: 'not.a.jwt' }),
    expect: { status: 200, code: 'UNAUTHENTICATED' },
  },

  // A claim of the wrong shape in a correctly signed token: UNAUTHENTICATED, never a failed
  // query, for each operation that used to pass the claim on to the database.
  ...malformedClaimCases(),

  // Query shapes meant to exhaust the server.
  {
    name: 'a deeply nested query',
    request: op(`{ __type(name: "Query") { ${'fields { type { '.repeat(6)}name${' } }'.repeat(6)} } }`, {}, member),
    expect: { status: 400, code: 'GRAPHQL_VALIDATION_FAILED', message: /depth limit/ },
  },
  {
    name: 'twenty aliases of one query',
    request: op(`{ ${Array.from({ length: 20 }, (_, i) => `a${i}: plans { id }`).join(' ')} }`, {}, member),
    expect: { status: 400, code: 'GRAPHQL_VALIDATION_FAILED', message: /Aliases limit/ },
  },
  {
    name: 'sixteen aliased grants in one mutation',
    request: (s) => ({
      json: {
        query: `mutation { ${Array.from(
          { length: 16 },
          (_, i) =>
            `g${i}: grantCredits(input: { organizationId: "${s.own.id}", type: PURCHASED, amount: 1000, reason: "x", idempotencyKey: "alias-${i}" }) { __typename }`,
        ).join(' ')} }`,
      },
      token: s.own.admin,
    }),
    expect: { status: 400, code: 'GRAPHQL_VALIDATION_FAILED', message: /Aliases limit/ },
  },
  {
    name: 'more than 1,000 tokens',
    request: op(`{ ${'plans { id } '.repeat(300)}}`, {}, member),
    expect: { status: 400, code: 'GRAPHQL_PARSE_FAILED', message: /Token limit/ },
  },
  {
    name: 'a query whose cost is over the limit',
    request: (s) => ({
      json: {
        query: `{ ${Array.from({ length: 10 }, (_, i) => `l${i}: ledger(organizationId: "${s.own.id}", first: 100) { edges { node { id kind lotId reservationId amount reservedChange reason createdAt } } }`).join(' ')} }`,
      },
      token: s.own.member,
    }),
    expect: { status: 400, code: 'GRAPHQL_VALIDATION_FAILED', message: /Cost limit/ },
  },
  {
    name: 'a pile of directives',
    request: op(`{ plans { id ${'@include(if: true) '.repeat(20)} } }`, {}, member),
    expect: { status: 400, code: 'GRAPHQL_VALIDATION_FAILED' },
  },
  {
    name: 'fragments that spread each other',
    request: op('{ plans { ...A } } fragment A on Plan { id ...B } fragment B on Plan { name ...A }', {}, member),
    expect: { status: 400, code: 'GRAPHQL_VALIDATION_FAILED' },
  },
];

function malformedClaimCases(): Case[] {
  // The names of the tokens, taken from a throwaway set (the set is built again in the setup).
  const names = [
    'an org that is not a UUID',
    'an org that is a number',
    'an org with a trailing newline',
    'admin role and an org',
    'a role that is a number',
    'a role that is a list',
    'a role in capitals',
    'a sub that is empty',
    'a sub that is a number',
    'a sub over 200 characters',
    'a sub with a control character',
    'a sub with a bidirectional override',
    'a scope naming an unknown scope',
    'a scope naming a scope twice',
    'a scope that is a list',
    'a scope that is empty',
    'a scope with two spaces',
  ] as const satisfies ReadonlyArray<keyof Setup['malformed']>;
  const operations: Array<[string, (s: Setup) => RawRequest['json']]> = [
    ['captureReservation', (s) => ({ query: CAPTURE, variables: { input: { reservationId: s.ownReservationId } } })],
    [
      'refundReservation',
      (s) => ({ query: REFUND, variables: { input: { reservationId: s.ownReservationId, reason: 'x' } } }),
    ],
    [
      'extendReservation',
      (s) => ({ query: EXTEND, variables: { input: { reservationId: s.ownReservationId, ttlSeconds: 60 } } }),
    ],
    ['reservation', (s) => ({ query: RESERVATION, variables: { id: s.ownReservationId } })],
  ];
  return names.flatMap((name) =>
    operations.map(([field, json]) => ({
      name: `${field} with a token whose claims have ${name}`,
      request: (s: Setup) => ({ json: json(s), token: s.malformed[name] }),
      expect: { status: 200, code: 'UNAUTHENTICATED' },
    })),
  );
}

describe.each(drivers)('hostile GraphQL input (%s)', (driver) => {
  let t: TestApp;
  let setup: Setup;

  beforeAll(async () => {
    t = await createTestApp(driver);
    const own = await newOrganization(t);
    const other = await newOrganization(t);
    await grant(t, own, 'PURCHASED', 50);
    const ownReservation = await reserve(t, own, textCredits(10));
    const otherReservation = await reserve(t, other, textCredits(5));
    setup = {
      own,
      other,
      ownReservationId: ownReservation.reservation.id,
      otherReservationId: otherReservation.reservation.id,
      tokens: await badTokens(own.id),
      malformed: await malformedClaimTokens(own.id),
    };
  });
  afterAll(() => t.close());

  it('has at least 40 cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
  });

  it('tells a body that is not JSON apart from a JSON answer, and refuses to read it as one', async () => {
    // The GraphiQL page is HTML: the helper must report it as unparsable, never as an empty object.
    const page = await send(t, { method: 'GET', headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    expect(page.text).toContain('GraphiQL');
    expect(page.bodyKind).toBe('unparsable');
    expect(() => page.body).toThrow(/expected a JSON object body, got unparsable body/);
    const answer = await send(t, { json: { query: '{ __typename }' }, token: setup.own.member });
    expect(answer.bodyKind).toBe('json');
    expect(answer.body).toEqual({ data: { __typename: 'Query' } });
  });

  it.each(cases)('$name', async (testCase) => {
    const before = await snapshot(t);
    let request = testCase.request(setup);
    if (JSON.stringify(request.json ?? null).includes('__OTHER__')) {
      request = { ...request, json: JSON.parse(JSON.stringify(request.json).replaceAll('__OTHER__', setup.other.id)) };
    }
    const response = await send(t, request);

    expectOutcome(response, testCase.expect);
    expectNoLeak(response);
    expect(await snapshot(t)).toEqual(before);
    expect(await t.audit()).toEqual([]);
  });
});

function expectOutcome(response: SentResponse, outcome: Outcome): void {
  const context = `${response.status} ${response.text.slice(0, 500)}`;
  expect(response.status, context).toBe(outcome.status);
  if ('emptyBody' in outcome) {
    expect(response.text).toBe('');
    return;
  }
  expect(response.bodyKind, context).toBe('json');
  if ('code' in outcome) {
    const errors: Array<{ message: string; extensions?: { code?: string } }> = response.body.errors ?? [];
    const matching = errors.find((error) => error.extensions?.code === outcome.code);
    expect(matching, context).toBeDefined();
    if (outcome.message) expect(matching!.message).toMatch(outcome.message);
    // A request-level refusal returns no data; a refused field leaves its (non-null) root null.
    expect(
      Object.values(response.body.data ?? {}).filter((value) => value !== null),
      context,
    ).toEqual([]);
  } else if ('variable' in outcome) {
    expect(response.body.data, context).toBeUndefined();
    const message: string = response.body.errors?.[0]?.message ?? '';
    expect(
      message.includes(`at "${outcome.variable}"`) || message.includes(`Variable "${outcome.variable}"`),
      context,
    ).toBe(true);
  } else if ('result' in outcome) {
    expect(response.body.errors, context).toBeUndefined();
    const result = response.body.data[outcome.result];
    expect(result.__typename, context).toBe(outcome.typename);
    expect(result.message, context).toEqual(expect.any(String));
    if (outcome.field !== undefined) expect(result.field, context).toBe(outcome.field);
  } else {
    expect(response.body.errors, context).toBeUndefined();
    expect(response.body.data).toEqual(outcome.data);
  }
}

describe.each(drivers)('introspection, suggestions and the mutation rate limit (%s)', (driver) => {
  it("answers GraphiQL's introspection query and suggests field names by default", async () => {
    const t = await createTestApp(driver);
    try {
      const org = await newOrganization(t);
      const introspection = await send(t, {
        json: { query: getIntrospectionQuery(GRAPHIQL_INTROSPECTION) },
        token: org.member,
      });
      expect(introspection.status).toBe(200);
      expect(introspection.body.errors).toBeUndefined();
      expect(introspection.body.data.__schema.mutationType.name).toBe('Mutation');
      const typo = await send(t, { json: { query: '{ plans { nam } }' }, token: org.member });
      expect(typo.body.errors[0].message).toMatch(/Did you mean "name"\?/);
    } finally {
      await t.close();
    }
  });

  it('refuses introspection and hides suggestions when turned off, as in production', async () => {
    const t = await createTestApp(driver, { app: { introspection: false, fieldSuggestions: false } });
    try {
      const org = await newOrganization(t);
      for (const query of [
        getIntrospectionQuery(GRAPHIQL_INTROSPECTION),
        '{ __type(name: "Balance") { fields { name } } }',
      ]) {
        const response = await send(t, { json: { query }, token: org.member });
        expect(response.status).toBe(400);
        expect(response.body.errors[0]).toMatchObject({ extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } });
        expect(response.body.errors[0].message).toMatch(/introspection/);
        expect(response.body.data).toBeUndefined();
      }
      // __typename is not introspection of the schema; clients rely on it for unions.
      const typename = await send(t, { json: { query: '{ __typename plans { id } }' }, token: org.member });
      expect(typename.body).toMatchObject({ data: { __typename: 'Query' } });
      const typo = await send(t, {
        json: { query: '{ plans { nam } reservaton(id: "x") { id } }' },
        token: org.member,
      });
      expect(typo.status).toBe(400);
      expect(typo.text).not.toMatch(/Did you mean/);
      expect(typo.text).not.toMatch(/"name"|reservation\b/);
    } finally {
      await t.close();
    }
  });

  it('limits mutations per token, refusing the whole request with RATE_LIMITED and writing nothing', async () => {
    let nowMs = 0;
    const t = await createTestApp(driver, { app: { mutationRateLimit: { perSecond: 1, burst: 3, now: () => nowMs } } });
    try {
      // Organizations are created before the limit matters: the admin token has its own bucket.
      const org = await newOrganization(t);
      const neighbour = await newOrganization(t);
      for (let i = 0; i < 3; i += 1)
        expect((await reserve(t, org, textCredits(1))).__typename).toBe('ReserveCreditsSuccess');

      const before = await snapshot(t);
      const limited = await send(t, reserveWith({ organizationId: org.id })({ own: org } as Setup));
      expect(limited.status).toBe(429);
      expect(limited.headers.get('retry-after')).toBe('1');
      expect(limited.body.data).toBeUndefined();
      expect(limited.body.errors).toEqual([
        expect.objectContaining({
          extensions: expect.objectContaining({ code: 'RATE_LIMITED', retryAfterSeconds: 1 }),
        }),
      ]);
      expectNoLeak(limited);
      // Reads draw from the same bucket (issue 13); other tokens are not limited.
      expect((await t.gql(BALANCE, { id: org.id }, org.member)).errors?.[0]?.extensions?.code).toBe('RATE_LIMITED');
      expect((await reserve(t, neighbour, textCredits(1))).__typename).toBe('ReserveCreditsSuccess');
      const afterRefusal = await snapshot(t);
      expect(afterRefusal.balances.find((b) => b.id === org.id)).toEqual(before.balances.find((b) => b.id === org.id));

      // One second refills one mutation; a request with two root mutations needs two and is
      // refused as a whole, so neither of its reservations is written.
      nowMs += 1000;
      const two = await send(t, {
        json: {
          query: `mutation ($a: ReserveCreditsInput!, $b: ReserveCreditsInput!) {
            a: reserveCredits(input: $a) { __typename } b: reserveCredits(input: $b) { __typename } }`,
          variables: Object.fromEntries(
            ['a', 'b'].map((name) => [
              name,
              { organizationId: org.id, idempotencyKey: uniqueKey(), generation: textCredits(1) },
            ]),
          ),
        },
        token: org.member,
      });
      expect(two.status).toBe(429);
      expect((await snapshot(t)).balances).toEqual(afterRefusal.balances);
      expect((await reserve(t, org, textCredits(1))).__typename).toBe('ReserveCreditsSuccess');
      expect(await t.audit()).toEqual([]);
    } finally {
      await t.close();
    }
  });
});

describe('protection configuration', () => {
  const secret = { AUTH_SECRET: 'x'.repeat(32) };

  it('turns introspection and suggestions on in development, off in production', () => {
    expect(loadConfig({})).toMatchObject({ introspection: true, fieldSuggestions: true, mutationRateLimit: null });
    expect(loadConfig({ NODE_ENV: 'production', ...secret })).toMatchObject({
      introspection: false,
      fieldSuggestions: false,
      mutationRateLimit: { perSecond: 50, burst: 200 },
    });
    // Introspection may be turned on in production; suggestions still stay off there.
    expect(loadConfig({ NODE_ENV: 'production', GRAPHQL_INTROSPECTION: '1', ...secret })).toMatchObject({
      introspection: true,
      fieldSuggestions: false,
    });
    expect(loadConfig({ GRAPHQL_INTROSPECTION: 'false' })).toMatchObject({
      introspection: false,
      fieldSuggestions: false,
    });
    expect(loadConfig({ MUTATION_RATE_LIMIT: '5', MUTATION_RATE_BURST: '10' })).toMatchObject({
      mutationRateLimit: { perSecond: 5, burst: 10 },
    });
    expect(loadConfig({ NODE_ENV: 'production', MUTATION_RATE_LIMIT: '0', ...secret })).toMatchObject({
      mutationRateLimit: null,
    });
  });

  it('refuses malformed settings with one line naming the variable', () => {
    expect(() => loadConfig({ GRAPHQL_INTROSPECTION: 'yes' })).toThrow(/GRAPHQL_INTROSPECTION/);
    expect(() => loadConfig({ MUTATION_RATE_LIMIT: '-1' })).toThrow(/MUTATION_RATE_LIMIT/);
    expect(() => loadConfig({ MUTATION_RATE_BURST: '0' })).toThrow(/MUTATION_RATE_BURST/);
  });
});
