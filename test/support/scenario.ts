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
    { input: { name: options.name ?? 'Test org', planId: options.planId ?? 'free', billingCycleAnchor: options.billingCycleAnchor } },
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

export async function grant(
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

/**
 * A text generation that costs exactly `credits`: text models cost 1, 2 or 5 credits per output,
 * up to 100 outputs, which is the simplest way to reserve a chosen amount.
 */
export function textCredits(credits: number) {
  for (const [modelId, unit] of [['text-draft', 1], ['text-standard', 2], ['text-premium', 5]] as const) {
    if (credits % unit === 0 && credits / unit <= 100) return { modelId, count: credits / unit };
  }
  throw new Error(`no text generation costs exactly ${credits} credits`);
}

export async function reserve(
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

/** The organization's balance as its member reads it over the API. */
export async function balanceOf(t: TestApp, org: Pick<TestOrganization, 'id' | 'member'>) {
  const result = await t.gql(BALANCE, { id: org.id }, org.member);
  expect(result.errors).toBeUndefined();
  return result.data.balance;
}
