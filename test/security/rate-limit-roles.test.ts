// Mutation limits by role: a member's token is throttled on its own, while a service (the
// generation backend, one token for a whole organization) draws from one bucket per organization
// with a far higher limit, so rotating service tokens buys nothing and one organization's backend
// never eats another's allowance.
import { describe, expect, it } from 'vitest';
import { signToken } from '../../src/auth/tokens.ts';
import { loadConfig } from '../../src/config.ts';
import { createTestApp, type TestApp } from '../support/app.ts';
import { RESERVE } from '../support/operations.ts';
import { newOrganization, textCredits, uniqueKey } from '../support/scenario.ts';

async function reserveAs(t: TestApp, organizationId: string, token: string): Promise<string> {
  const result = await t.gql(
    RESERVE,
    { input: { organizationId, idempotencyKey: uniqueKey(), generation: textCredits(1) } },
    token,
  );
  return result.errors?.[0]?.extensions?.code ?? result.data.reserveCredits.__typename;
}

describe('mutation rate limits by role (pglite)', () => {
  it('throttles a member per token, and a service per organization at its own, higher limit', async () => {
    const nowMs = 0;
    const t = await createTestApp('pglite', {
      app: {
        mutationRateLimit: { perSecond: 1, burst: 2, now: () => nowMs },
        serviceMutationRateLimit: { perSecond: 1, burst: 5, now: () => nowMs },
      },
    });
    try {
      const org = await newOrganization(t);
      const other = await newOrganization(t);
      // A member: two, then refused; its service is not affected.
      expect([
        await reserveAs(t, org.id, org.member),
        await reserveAs(t, org.id, org.member),
        await reserveAs(t, org.id, org.member),
      ]).toEqual(['ReserveCreditsSuccess', 'ReserveCreditsSuccess', 'RATE_LIMITED']);
      // Two service tokens of one organization share five.
      const second = await signToken(
        { subject: 'another-backend', role: 'service', organizationId: org.id, expiresIn: '1h' },
        t.authKey,
      );
      const outcomes = [];
      for (let i = 0; i < 6; i += 1) outcomes.push(await reserveAs(t, org.id, i % 2 === 0 ? org.service : second));
      expect(outcomes).toEqual([...Array(5).fill('ReserveCreditsSuccess'), 'RATE_LIMITED']);
      // Another organization's service has its own bucket.
      expect(await reserveAs(t, other.id, other.service)).toBe('ReserveCreditsSuccess');
    } finally {
      await t.close();
    }
  });

  it('defaults: members 50/s per token and services 5,000/s per organization in production, both off elsewhere', () => {
    const secret = { AUTH_SECRET: 'x'.repeat(32) };
    expect(loadConfig({ NODE_ENV: 'production', ...secret })).toMatchObject({
      mutationRateLimit: { perSecond: 50, burst: 200 },
      serviceMutationRateLimit: { perSecond: 5_000, burst: 10_000 },
    });
    expect(loadConfig({})).toMatchObject({ mutationRateLimit: null, serviceMutationRateLimit: null });
    expect(loadConfig({ SERVICE_MUTATION_RATE_LIMIT: '7', SERVICE_MUTATION_RATE_BURST: '9' })).toMatchObject({
      serviceMutationRateLimit: { perSecond: 7, burst: 9 },
    });
    expect(() => loadConfig({ SERVICE_MUTATION_RATE_LIMIT: 'x' })).toThrow(/SERVICE_MUTATION_RATE_LIMIT/);
  });
});
