import { describe, expect } from 'vitest';
import { it, useTestApp } from '../support/app.ts';
import { drivers } from '../support/database.ts';
import { GRANT_CREDITS, PURCHASE_PACK } from '../support/operations.ts';
import { balanceOf, grant, newOrganization, uniqueKey, type TestOrganization } from '../support/scenario.ts';

describe.each(drivers)('grants and credit packs (%s)', (driver) => {
  useTestApp(driver);

  function grantInput(org: TestOrganization, overrides: Record<string, unknown> = {}) {
    return {
      organizationId: org.id,
      type: 'PROMOTIONAL',
      amount: 10,
      reason: 'launch promo',
      idempotencyKey: uniqueKey(),
      ...overrides,
    };
  }

  it('grants each account type as a lot with the expiry its type gives', async ({ t }) => {
    const org = await newOrganization(t);
    const promo = await grant(t, org, 'PROMOTIONAL', 25, { expiresAt: '2026-02-01T00:00:00Z' });
    expect(promo.lot).toMatchObject({
      type: 'PROMOTIONAL',
      granted: 25,
      available: 25,
      expiresAt: '2026-02-01T00:00:00.000Z',
    });
    const referral = await grant(t, org, 'REFERRAL', 5);
    expect(referral.lot).toMatchObject({ type: 'REFERRAL', expiresAt: null });
    const purchased = await grant(t, org, 'PURCHASED', 7);
    expect(purchased.lot.expiresAt).toBeNull();
    // A subscription grant is a top-up that ends with the current cycle (created now: one month).
    const topUp = await grant(t, org, 'SUBSCRIPTION', 3);
    expect(topUp.lot.expiresAt).toBe('2026-02-15T12:00:00.000Z');
    expect(topUp.balance.accounts.map((a: any) => a.available)).toEqual([103, 7, 25, 5]);
    expect(topUp.balance.available).toBe(140);
  });

  it('returns the original lot for a repeated key and a conflict for other input', async ({ t }) => {
    const org = await newOrganization(t);
    const input = grantInput(org);
    const first = await t.gql(GRANT_CREDITS, { input }, org.admin);
    const again = await t.gql(GRANT_CREDITS, { input }, org.admin);
    expect(again.data.grantCredits.lot.id).toBe(first.data.grantCredits.lot.id);
    const other = await t.gql(GRANT_CREDITS, { input: { ...input, amount: 11 } }, org.admin);
    expect(other.data.grantCredits.__typename).toBe('IdempotencyConflictError');
    expect((await balanceOf(t, org)).accounts[2].available).toBe(10);
  });

  it.for<[string, Record<string, unknown>]>([
    ['amount', { amount: 0 }],
    ['amount', { amount: -5 }],
    ['amount', { amount: 1_000_000_001 }],
    ['reason', { reason: '' }],
    ['reason', { reason: 'x'.repeat(256) }],
    ['idempotencyKey', { idempotencyKey: '' }],
    ['idempotencyKey', { idempotencyKey: 'k'.repeat(256) }],
    ['expiresAt', { expiresAt: '2026-01-01T00:00:00Z' }],
    ['expiresAt', { type: 'PURCHASED', expiresAt: '2027-01-01T00:00:00Z' }],
    ['organizationId', { organizationId: 'not-an-id' }],
  ])('refuses a grant with a bad %s and writes nothing', async ([field, overrides], { t }) => {
    const org = await newOrganization(t);
    const before = await balanceOf(t, org);
    const result = await t.gql(GRANT_CREDITS, { input: grantInput(org, overrides) }, org.admin);
    expect(result.data.grantCredits).toMatchObject({ __typename: 'InvalidInputError', field });
    expect(await balanceOf(t, org)).toEqual(before);
  });

  it('caps a balance at 2,000,000,000 credits counting reserved ones', async ({ t }) => {
    const org = await newOrganization(t); // 100
    await grant(t, org, 'PURCHASED', 1_000_000_000);
    await grant(t, org, 'PURCHASED', 999_999_900);
    const over = await t.gql(GRANT_CREDITS, { input: grantInput(org, { amount: 1 }) }, org.admin);
    expect(over.data.grantCredits).toMatchObject({ __typename: 'InvalidInputError', field: 'amount' });
    expect((await balanceOf(t, org)).available).toBe(2_000_000_000);
  });

  it('answers a grant to an unknown organization with NotFoundError', async ({ t }) => {
    const admin = await t.token('admin');
    const result = await t.gql(
      GRANT_CREDITS,
      {
        input: {
          organizationId: '00000000-0000-4000-8000-000000000001',
          type: 'REFERRAL',
          amount: 1,
          reason: 'r',
          idempotencyKey: 'k',
        },
      },
      admin,
    );
    expect(result.data.grantCredits.__typename).toBe('NotFoundError');
  });

  it('grants a pack once per payment reference of the organization', async ({ t }) => {
    const org = await newOrganization(t);
    const input = { organizationId: org.id, packId: 'pack-500', paymentReference: uniqueKey('pay') };
    const first = await t.gql(PURCHASE_PACK, { input }, org.service);
    expect(first.data.purchaseCreditPack.lot).toMatchObject({ type: 'PURCHASED', granted: 500, expiresAt: null });
    const again = await t.gql(PURCHASE_PACK, { input }, org.service);
    expect(again.data.purchaseCreditPack.lot.id).toBe(first.data.purchaseCreditPack.lot.id);
    const otherPack = await t.gql(PURCHASE_PACK, { input: { ...input, packId: 'pack-2000' } }, org.service);
    expect(otherPack.data.purchaseCreditPack.__typename).toBe('IdempotencyConflictError');
    // Payment references are scoped by organization: the same string for another organization is
    // that organization's own purchase (see test/security/tenant-oracles.test.ts).
    const other = await newOrganization(t);
    const otherOrg = await t.gql(
      PURCHASE_PACK,
      { input: { ...input, organizationId: other.id, packId: 'pack-2000' } },
      other.service,
    );
    expect(otherOrg.data.purchaseCreditPack).toMatchObject({
      __typename: 'PurchaseCreditPackSuccess',
      lot: { granted: 2000 },
    });
    expect((await balanceOf(t, org)).accounts[1].available).toBe(500);
    expect((await balanceOf(t, other)).accounts[1].available).toBe(2000);
  });

  it('refuses an unknown pack and an empty payment reference', async ({ t }) => {
    const org = await newOrganization(t);
    const unknown = await t.gql(
      PURCHASE_PACK,
      { input: { organizationId: org.id, packId: 'pack-1', paymentReference: 'p' } },
      org.service,
    );
    expect(unknown.data.purchaseCreditPack).toMatchObject({ __typename: 'InvalidInputError', field: 'packId' });
    const empty = await t.gql(
      PURCHASE_PACK,
      { input: { organizationId: org.id, packId: 'pack-500', paymentReference: '' } },
      org.service,
    );
    expect(empty.data.purchaseCreditPack).toMatchObject({ __typename: 'InvalidInputError', field: 'paymentReference' });
  });
});
