import { expect } from 'vitest';
import type { TestApp } from './app.ts';
import { BALANCE, CREATE_ORGANIZATION, GRANT_CREDITS, RESERVE } from './operations.ts';

export interface TestOrganization {
  id: string;
  admin: string;
  member: string;
  service: string;
}

/** A new organization (free plan: 100 subscription credits unless stated) with a token per role. */
export async function newOrganization(
  t: TestApp,
  options: { planId?: string; billingCycleAnchor?: string; name?: string } = {},
): Promise<TestOrganization> {
  const admin = await t.token('admin');
  const result = await t.gql(
    CREATE_ORGANIZATION,
    {
      input: {
        name: options.name ?? 'Test org',
        planId: options.planId ?? 'free',
        billingCycleAnchor: options.billingCycleAnchor,
      },
    },
    admin,
  );
  expect(result.errors).toBeUndefined();
  const id = result.data.createOrganization.organization.id as string;
  return { id, admin, member: await t.token('member', id), service: await t.token('service', id) };
}

let keyCounter = 0;
export function uniqueKey(prefix = 'key'): string {
  keyCounter += 1;
  return `${prefix}-${process.pid}-${keyCounter}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * The `…Success` member of a mutation's result union, failing the test with the whole result
 * when the mutation answered an error member instead (a helper must never hand a typed failure
 * to a test that did not ask for one).
 */
export function expectSuccess<T extends { __typename?: string }>(result: T, typename: string): T {
  expect(result?.__typename, `expected ${typename}, got ${JSON.stringify(result)}`).toBe(typename);
  return result;
}

/** Grants credits as the organization's admin and returns the `grantCredits` result, whichever member of the union it is. */
export async function tryGrant(
  t: TestApp,
  org: TestOrganization,
  type: string,
  amount: number,
  extra: { expiresAt?: string; idempotencyKey?: string; reason?: string } = {},
) {
  const result = await t.gql(
    GRANT_CREDITS,
    {
      input: {
        organizationId: org.id,
        type,
        amount,
        reason: extra.reason ?? 'test grant',
        idempotencyKey: extra.idempotencyKey ?? uniqueKey('grant'),
        expiresAt: extra.expiresAt,
      },
    },
    org.admin,
  );
  expect(result.errors).toBeUndefined();
  return result.data.grantCredits;
}

/** Grants credits and asserts the grant succeeded (`tryGrant` for a grant that may be refused). */
export async function grant(
  t: TestApp,
  org: TestOrganization,
  type: string,
  amount: number,
  extra: { expiresAt?: string; idempotencyKey?: string; reason?: string } = {},
) {
  return expectSuccess(await tryGrant(t, org, type, amount, extra), 'GrantCreditsSuccess');
}

/**
 * A text generation that costs exactly `credits`: text models cost 1, 2 or 5 credits per output,
 * up to 100 outputs, which is the simplest way to reserve a chosen amount.
 */
export function textCredits(credits: number) {
  for (const [modelId, unit] of [
    ['text-draft', 1],
    ['text-standard', 2],
    ['text-premium', 5],
  ] as const) {
    if (credits % unit === 0 && credits / unit <= 100) return { modelId, count: credits / unit };
  }
  throw new Error(`no text generation costs exactly ${credits} credits`);
}

/** Reserves credits (as the member unless `token` says otherwise) and returns the `reserveCredits` result, whichever member of the union it is. */
export async function tryReserve(
  t: TestApp,
  org: TestOrganization,
  generation: Record<string, unknown>,
  extra: { idempotencyKey?: string; ttlSeconds?: number; token?: string } = {},
) {
  const result = await t.gql(
    RESERVE,
    {
      input: {
        organizationId: org.id,
        idempotencyKey: extra.idempotencyKey ?? uniqueKey('reserve'),
        generation,
        ttlSeconds: extra.ttlSeconds,
      },
    },
    extra.token ?? org.member,
  );
  expect(result.errors).toBeUndefined();
  return result.data.reserveCredits;
}

/** Reserves credits and asserts the reservation succeeded (`tryReserve` for one that may be refused). */
export async function reserve(
  t: TestApp,
  org: TestOrganization,
  generation: Record<string, unknown>,
  extra: { idempotencyKey?: string; ttlSeconds?: number; token?: string } = {},
) {
  return expectSuccess(await tryReserve(t, org, generation, extra), 'ReserveCreditsSuccess');
}

/** The organization's balance as its member reads it over the API. */
export async function balanceOf(t: TestApp, org: Pick<TestOrganization, 'id' | 'member'>) {
  const result = await t.gql(BALANCE, { id: org.id }, org.member);
  expect(result.errors).toBeUndefined();
  return result.data.balance;
}
