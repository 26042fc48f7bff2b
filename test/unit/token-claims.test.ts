import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import {
  AuthenticationError,
  DEFAULT_TOKEN_POLICY,
  secretKey,
  signToken,
  verifyAuthorization,
} from '../../src/auth/tokens.ts';
import { VerifiedTokens } from '../../src/auth/verified-tokens.ts';

const key = secretKey('a-secret-that-is-long-enough-for-hs256-tests');
const ORG = '3f0b8e4c-1d2a-4b5c-9e8f-7a6b5c4d3e2f';
const required = { ...DEFAULT_TOKEN_POLICY, scopesRequired: true };

async function bearer(claims: Record<string, unknown>): Promise<string> {
  const token = await new SignJWT({ role: 'service', sub: 'svc', org: ORG, ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(key);
  return `Bearer ${token}`;
}

describe('token claims', () => {
  it('reads the scope claim as OAuth 2 writes it, one space-separated string', async () => {
    const viewer = await verifyAuthorization(await bearer({ scope: 'read generation' }), key);
    expect(viewer).toMatchObject({
      subject: 'svc',
      role: 'service',
      organizationId: ORG,
      scopes: ['read', 'generation'],
    });
    // signToken writes the same claim.
    const signed = await signToken(
      { subject: 's', role: 'member', organizationId: ORG, scopes: ['generation', 'read'], expiresIn: '1h' },
      key,
    );
    expect(JSON.parse(Buffer.from(signed.split('.')[1]!, 'base64url').toString())).toMatchObject({
      scope: 'generation read',
    });
    expect((await verifyAuthorization(`Bearer ${signed}`, key)).scopes).toEqual(['generation', 'read']);
  });

  it('keeps a token without a scope claim at its role’s rights (null) unless scopes are required', async () => {
    expect((await verifyAuthorization(await bearer({}), key)).scopes).toBeNull();
    await expect(verifyAuthorization(await bearer({}), key, required)).rejects.toThrow(
      /no "scope" claim.*credits token --scope/,
    );
    await expect(verifyAuthorization(await bearer({ role: 'member' }), key, required)).rejects.toThrow(
      AuthenticationError,
    );
    // An admin holds every right whatever its claim says, so it needs none.
    await expect(
      verifyAuthorization(await bearer({ role: 'admin', org: undefined }), key, required),
    ).resolves.toMatchObject({ role: 'admin', organizationId: null, scopes: null });
    await expect(verifyAuthorization(await bearer({ scope: 'billing' }), key, required)).resolves.toMatchObject({
      scopes: ['billing'],
    });
  });

  it.each([
    ['an org that is not a UUID', { org: 'not-a-uuid-secret-ref' }, /"org" claim is not an organization id/],
    ['an org that is a number', { org: 12345 }, /must name its organization/],
    ['an admin with an org', { role: 'admin' }, /admin token .* no "org" claim/],
    ['a role that is not one', { role: 'root' }, /no valid role/],
    ['a sub that is empty', { sub: '' }, /no subject/],
    ['a sub that is a number', { sub: 7 }, /no subject/],
    ['a sub of 201 characters', { sub: 'x'.repeat(201) }, /"sub" claim must be printable text of at most 200/],
    ['a sub with a newline', { sub: 'a\nb' }, /"sub" claim must be printable/],
    ['an unknown scope', { scope: 'generation admin' }, /"scope" claim must be a space-separated list/],
    ['a scope named twice', { scope: 'read read' }, /"scope" claim/],
    ['a scope list', { scope: ['read'] }, /"scope" claim/],
    ['an empty scope', { scope: '' }, /"scope" claim/],
  ])('refuses %s', async (_name, claims, message) => {
    await expect(verifyAuthorization(await bearer(claims), key)).rejects.toThrow(message);
  });

  it('accepts a sub of 200 printable characters, and lower-cases the org', async () => {
    const viewer = await verifyAuthorization(await bearer({ sub: 'é'.repeat(200), org: ORG.toUpperCase() }), key);
    expect(viewer.subject).toHaveLength(200);
    expect(viewer.organizationId).toBe(ORG);
  });

  it('remembers a verified token with its scopes, and never a refused one', async () => {
    const tokens = new VerifiedTokens(key, required);
    const scoped = await bearer({ scope: 'generation' });
    expect((await tokens.verify(scoped)).scopes).toEqual(['generation']);
    expect((await tokens.verify(scoped)).scopes).toEqual(['generation']);
    const unscoped = await bearer({});
    for (let i = 0; i < 2; i += 1) await expect(tokens.verify(unscoped)).rejects.toThrow(/no "scope" claim/);
  });
});
