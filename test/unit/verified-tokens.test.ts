import { afterEach, describe, expect, it, vi } from 'vitest';
import { AuthenticationError, DEFAULT_TOKEN_POLICY, secretKey, signToken } from '../../src/auth/tokens.ts';
import { VerifiedTokens } from '../../src/auth/verified-tokens.ts';

const key = secretKey('a-secret-that-is-long-enough-for-hs256-tests');
const ORG = '3f0b8e4c-1d2a-4b5c-9e8f-7a6b5c4d3e2f';
const policy = { ...DEFAULT_TOKEN_POLICY, clockSkewSeconds: 30 };

describe('verified tokens', () => {
  afterEach(() => vi.useRealTimers());

  it('accepts a remembered token exactly as long as verifying it again would', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-05-01T00:00:00Z'));
    const tokens = new VerifiedTokens(key, policy);
    const header = `Bearer ${await signToken({ subject: 's', role: 'service', organizationId: ORG.toUpperCase(), expiresIn: '60s' }, key)}`;
    expect(await tokens.verify(header)).toMatchObject({ subject: 's', role: 'service', organizationId: ORG });
    // Within exp + skew (60 s + 30 s): still accepted, now from memory.
    vi.setSystemTime(new Date('2026-05-01T00:01:29Z'));
    expect((await tokens.verify(header)).subject).toBe('s');
    // From exp + skew on: refused, as jose refuses it.
    vi.setSystemTime(new Date('2026-05-01T00:01:30Z'));
    await expect(tokens.verify(header)).rejects.toThrow(AuthenticationError);
    await expect(tokens.verify(header)).rejects.toThrow('The token has expired.');
  });

  it('remembers nothing of a refused token, and refuses it every time', async () => {
    const tokens = new VerifiedTokens(key, policy);
    const forged = `Bearer ${await signToken({ subject: 's', role: 'admin', expiresIn: '60s' }, secretKey('another-secret-that-is-long-enough-too'))}`;
    for (let i = 0; i < 3; i += 1) await expect(tokens.verify(forged)).rejects.toThrow('The token is not valid.');
    await expect(tokens.verify(null)).rejects.toThrow('Missing Authorization header.');
  });

  it('never accepts a token another key signed, even with the same claims as a remembered one', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-05-01T00:00:00Z'));
    const tokens = new VerifiedTokens(key, policy);
    const claims = { subject: 's', role: 'member', organizationId: ORG, expiresIn: '60s' } as const;
    await tokens.verify(`Bearer ${await signToken(claims, key)}`);
    const other = `Bearer ${await signToken(claims, secretKey('another-secret-that-is-long-enough-too'))}`;
    await expect(tokens.verify(other)).rejects.toThrow('The token is not valid.');
  });
});
