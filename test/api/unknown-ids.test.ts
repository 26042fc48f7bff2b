import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, listenOverHttp, type TestApp } from '../support/app.ts';
import type { GraphQLResponse } from '../support/graphql.ts';
import { drivers } from '../support/database.ts';
import { BALANCE, LEDGER, QUOTE, RESERVATION } from '../support/operations.ts';
import { subscribeSse } from '../support/realtime.ts';
import { newOrganization, reserve, textCredits, type TestOrganization } from '../support/scenario.ts';

// The rule for ids that name nothing, over real HTTP (README, API): a query that returns the
// object an id names (organization, reservation, balance) answers null with no error; a field
// that reads or computes from an organization and cannot be null (ledger, creditQuote,
// balanceChanged) refuses an organization id that names nothing as BAD_USER_INPUT on
// organizationId, as it refuses a foreign cursor or an unknown model. A member or service whose
// token does not name the organization is FORBIDDEN first, whether or not it exists (contract
// decision 9).

const MISSING_ID = '00000000-0000-4000-8000-000000000000';
const ORGANIZATION = 'query ($id: ID!) { organization(id: $id) { id name } }';
const BALANCE_CHANGED = 'subscription ($id: ID!) { balanceChanged(organizationId: $id) { organizationId version } }';

/** The caller kinds that may use `MISSING_ID` as their organization: an admin, and tokens naming it. */
type Caller = 'admin' | 'member of it' | 'service of it';
const CALLERS: Caller[] = ['admin', 'member of it', 'service of it'];

describe.each(drivers)('ids that name nothing (%s)', (driver) => {
  let t: TestApp;
  let http: TestApp;
  let baseUrl: string;
  let own: TestOrganization;
  const tokens = {} as Record<Caller, string>;

  beforeAll(async () => {
    t = await createTestApp(driver);
    const listening = await listenOverHttp(t);
    http = listening.client;
    baseUrl = listening.url.replace(/\/graphql$/, '');
    own = await newOrganization(http);
    tokens.admin = own.admin;
    tokens['member of it'] = await t.token('member', MISSING_ID);
    tokens['service of it'] = await t.token('service', MISSING_ID);
  });
  afterAll(() => t.close());

  function expectNull(response: GraphQLResponse, field: string) {
    expect(response.status).toBe(200);
    expect(response.errors, JSON.stringify(response.errors)).toBeUndefined();
    expect(response.data).toEqual({ [field]: null });
  }

  function expectNoSuchOrganization(response: GraphQLResponse) {
    expect(response.status).toBe(200);
    expect(response.data ?? null).toBeNull();
    expect(response.errors).toHaveLength(1);
    expect(response.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'organizationId' });
  }

  describe.each(CALLERS)('as %s', (caller) => {
    it('answers organization with null', async () => {
      expectNull(await http.gql(ORGANIZATION, { id: MISSING_ID }, tokens[caller]), 'organization');
    });

    it('answers balance with null', async () => {
      expectNull(await http.gql(BALANCE, { id: MISSING_ID }, tokens[caller]), 'balance');
    });

    it('refuses ledger as bad input naming organizationId, also when given a cursor bound to that id', async () => {
      expectNoSuchOrganization(await http.gql(LEDGER, { id: MISSING_ID, first: 5 }, tokens[caller]));
      const forged = Buffer.from(`ledger:${MISSING_ID}:7`).toString('base64url');
      expectNoSuchOrganization(await http.gql(LEDGER, { id: MISSING_ID, after: forged }, tokens[caller]));
    });

    it('answers reservation with null', async () => {
      expectNull(await http.gql(RESERVATION, { id: MISSING_ID }, tokens[caller]), 'reservation');
    });

    it('refuses creditQuote as bad input naming organizationId', async () => {
      expectNoSuchOrganization(await http.gql(QUOTE, { id: MISSING_ID, generation: textCredits(1) }, tokens[caller]));
    });

    it('refuses the balance subscription as bad input naming organizationId, before any event', async () => {
      const subscription = subscribeSse(baseUrl, tokens[caller], BALANCE_CHANGED, { id: MISSING_ID });
      try {
        await subscription.recording.waitFor((r) => r.events.length > 0 || r.streamEnded || r.failure !== null);
        expect(subscription.recording.events).toHaveLength(1);
        expectNoSuchOrganization({ status: 200, ...subscription.recording.events[0]! } as GraphQLResponse);
      } finally {
        subscription.close();
      }
    });
  });

  it('answers a member of another organization FORBIDDEN for an unknown organization id, as for an existing one', async () => {
    for (const query of [ORGANIZATION, BALANCE, LEDGER]) {
      const response = await http.gql(query, { id: MISSING_ID }, own.member);
      expect(response.errors?.map((error) => error.extensions?.code)).toEqual(['FORBIDDEN']);
    }
    const quote = await http.gql(QUOTE, { id: MISSING_ID, generation: textCredits(1) }, own.service);
    expect(quote.errors?.map((error) => error.extensions?.code)).toEqual(['FORBIDDEN']);
  });

  it('still answers the organizations and reservations that exist, whatever the case of the id', async () => {
    const reservation = (await reserve(http, own, textCredits(2))).reservation;
    for (const token of [own.member, own.service, own.admin]) {
      const upper = own.id.toUpperCase();
      const organization = await http.gql(ORGANIZATION, { id: upper }, token);
      expect(organization.data.organization).toEqual({ id: own.id, name: 'Test org' });
      const balance = await http.gql(BALANCE, { id: upper }, token);
      expect(balance.data.balance).toMatchObject({ organizationId: own.id, available: 98, reserved: 2 });
      const ledger = await http.gql(LEDGER, { id: upper, first: 1 }, token);
      expect(ledger.data.ledger.edges.map((edge: any) => edge.node.kind)).toEqual(['RESERVE']);
      const quote = await http.gql(QUOTE, { id: upper, generation: textCredits(1) }, token);
      expect(quote.data.creditQuote).toMatchObject({ cost: 1, available: 98 });
      const found = await http.gql(RESERVATION, { id: reservation.id.toUpperCase() }, token);
      expect(found.data.reservation).toMatchObject({ id: reservation.id, amount: 2 });
    }
  });

  it('answers an organization that exists but holds no credits: an empty ledger page and a zero quote', async () => {
    const empty = await newOrganization(http);
    // Spend the whole allowance and capture it, so no lot holds credits and none is reserved.
    const { reservation } = await reserve(http, empty, textCredits(100));
    const captured = await http.gql(
      'mutation ($input: CaptureReservationInput!) { captureReservation(input: $input) { __typename } }',
      { input: { reservationId: reservation.id } },
      empty.service,
    );
    expect(captured.data.captureReservation.__typename).toBe('CaptureReservationSuccess');
    const quote = await http.gql(QUOTE, { id: empty.id, generation: textCredits(1) }, empty.member);
    expect(quote.errors).toBeUndefined();
    expect(quote.data.creditQuote).toEqual({ cost: 1, available: 0, affordable: false, affordableCount: 0 });
    const first = await http.gql(LEDGER, { id: empty.id, first: 10 }, empty.member);
    const last = first.data.ledger.pageInfo.endCursor;
    const beyond = await http.gql(LEDGER, { id: empty.id, after: last }, empty.member);
    expect(beyond.errors).toBeUndefined();
    expect(beyond.data.ledger).toEqual({
      edges: [],
      pageInfo: { hasNextPage: false, hasPreviousPage: true, startCursor: null, endCursor: null },
    });
  });
});
