import { describe, expect } from 'vitest';
import { DEFAULT_TOKEN_POLICY } from '../../src/auth/tokens.ts';
import { it, useTestApp, type TestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import type { GraphQLResponse } from '../support/graphql.ts';
import { BALANCE, CAPTURE, CHANGE_PLAN, GRANT_CREDITS, PURCHASE_PACK, RESERVE } from '../support/operations.ts';
import { balanceOf, grant, newOrganization, reserve, textCredits, uniqueKey } from '../support/scenario.ts';

// Tokens carry scopes (README, Authentication): a generation backend's token prices, reserves
// and settles, but cannot buy packs or change plans, so a leaked one mints no credits. Refusals
// say what the field needs and what the token has, and nothing about any other organization.

const MISSING_ID = '00000000-0000-4000-8000-000000000000';

function refusal(response: GraphQLResponse): { code: unknown; message: string } {
  expect(response.errors, JSON.stringify(response)).toHaveLength(1);
  const [error] = response.errors!;
  return { code: error!.extensions?.code, message: error!.message };
}

const purchase = (t: TestApp, organizationId: string, token: string) =>
  t.gql(PURCHASE_PACK, { input: { organizationId, packId: 'pack-500', paymentReference: uniqueKey('pay') } }, token);

const grantFor = (t: TestApp, organizationId: string, token: string) =>
  t.gql(
    GRANT_CREDITS,
    { input: { organizationId, type: 'PROMOTIONAL', amount: 5, reason: 'scopes', idempotencyKey: uniqueKey() } },
    token,
  );

describe.each(drivers)('token scopes (%s)', (driver) => {
  useTestApp(driver);

  it('a generation token cannot buy packs or change plans: FORBIDDEN naming the billing scope, and nothing granted', async ({
    t,
  }) => {
    const org = await newOrganization(t);
    const generation = await t.token('service', org.id, '1h', ['generation', 'read']);
    const before = await balanceOf(t, org);

    expect(refusal(await purchase(t, org.id, generation))).toEqual({
      code: 'FORBIDDEN',
      message: 'purchaseCreditPack needs the billing scope; this token has generation, read.',
    });
    const upgrade = await t.gql(
      CHANGE_PLAN,
      { input: { organizationId: org.id, planId: 'studio', immediately: true } },
      generation,
    );
    expect(refusal(upgrade)).toEqual({
      code: 'FORBIDDEN',
      message: 'changePlan needs the billing scope; this token has generation, read.',
    });
    expect(await balanceOf(t, org)).toEqual(before);

    // The same token does its own work, and the billing backend's token buys.
    await grant(t, org, 'PURCHASED', 20);
    const reservation = await reserve(t, org, textCredits(5), { token: generation });
    const captured = await t.gql(CAPTURE, { input: { reservationId: reservation.reservation.id } }, generation);
    expect(captured.data.captureReservation.__typename).toBe('CaptureReservationSuccess');
    const billing = await t.token('service', org.id, '1h', ['billing']);
    expect((await purchase(t, org.id, billing)).data.purchaseCreditPack.__typename).toBe('PurchaseCreditPackSuccess');
  });

  it('says which role a field needs and which the token has', async ({ t }) => {
    const org = await newOrganization(t);
    await grant(t, org, 'PURCHASED', 20);
    const reservation = await reserve(t, org, textCredits(5));
    const response = await t.gql(CAPTURE, { input: { reservationId: reservation.reservation.id } }, org.member);
    expect(refusal(response)).toEqual({
      code: 'FORBIDDEN',
      message: "captureReservation needs the service or admin role; this token's role is member.",
    });
    // A member whose token only reads cannot reserve.
    const reader = await t.token('member', org.id, '1h', ['read']);
    const reserved = await t.gql(
      RESERVE,
      { input: { organizationId: org.id, idempotencyKey: uniqueKey(), generation: textCredits(1) } },
      reader,
    );
    expect(refusal(reserved)).toEqual({
      code: 'FORBIDDEN',
      message: 'reserveCredits needs the generation scope; this token has read.',
    });
  });

  it('a billing service grants to its own organization only, and a service without a scope claim grants nothing', async ({
    t,
  }) => {
    const org = await newOrganization(t);
    const other = await newOrganization(t);
    const billing = await t.token('service', org.id, '1h', ['billing']);
    const start = (await balanceOf(t, org)).available;
    const otherStart = (await balanceOf(t, other)).available;
    const granted = await grantFor(t, org.id, billing);
    expect(granted.data.grantCredits.__typename).toBe('GrantCreditsSuccess');
    expect((await balanceOf(t, org)).available).toBe(start + 5);

    // Another organization, existing or not, is the same generic refusal.
    const toOther = refusal(await grantFor(t, other.id, billing));
    const toMissing = refusal(await grantFor(t, MISSING_ID, billing));
    expect(toOther).toEqual({ code: 'FORBIDDEN', message: 'This token may not act for this organization.' });
    expect(toMissing).toEqual(toOther);
    expect((await balanceOf(t, other)).available).toBe(otherStart);

    expect(refusal(await grantFor(t, org.id, org.service))).toEqual({
      code: 'FORBIDDEN',
      message:
        'grantCredits needs the billing scope named in the token\'s "scope" claim; this service token has no "scope" claim.',
    });
    expect((await balanceOf(t, org)).available).toBe(start + 5);
  });

  it('reading another organization’s balance is refused alike whether it exists or not', async ({ t }) => {
    const org = await newOrganization(t);
    const other = await newOrganization(t);
    const existing = refusal(await t.gql(BALANCE, { id: other.id }, org.member));
    const missing = refusal(await t.gql(BALANCE, { id: MISSING_ID }, org.member));
    expect(existing).toEqual({ code: 'FORBIDDEN', message: 'This token may not act for this organization.' });
    expect(missing).toEqual(existing);
  });
});

describe.each(drivers)('token scopes required (%s)', (driver) => {
  useTestApp(driver, { app: { tokenPolicy: { ...DEFAULT_TOKEN_POLICY, scopesRequired: true } } });

  it('refuses member and service tokens without a scope claim as UNAUTHENTICATED, and serves scoped ones', async ({
    t,
  }) => {
    // The admin token that creates the organization has no scope claim: admins need none.
    const org = await newOrganization(t);
    for (const token of [org.member, org.service]) {
      const { code, message } = refusal(await t.gql(BALANCE, { id: org.id }, token));
      expect(code).toBe('UNAUTHENTICATED');
      expect(message).toMatch(/no "scope" claim.*credits token --scope/);
    }
    const scoped = await t.token('member', org.id, '1h', ['read']);
    const answer = await t.gql(BALANCE, { id: org.id }, scoped);
    expect(answer.errors).toBeUndefined();
    expect(answer.data.balance.organizationId).toBe(org.id);
  });
});
