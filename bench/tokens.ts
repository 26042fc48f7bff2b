// The bench is a client: it signs its own tokens with the server's AUTH_SECRET, with the claims
// src/auth/tokens.ts verifies (sub, role member|service|admin, org for member and service).
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';

export type Role = 'member' | 'service' | 'admin';

export function newSecret(): string {
  return randomBytes(36).toString('base64url');
}

// Production (which the bench runs as) requires scopes on member and service tokens: a member reads
// and reserves, a generation backend also captures; neither buys credits.
const SCOPES: Record<Role, string | null> = { member: 'generation read', service: 'generation read', admin: null };

export function signToken(secret: string, subject: string, role: Role, organizationId?: string): Promise<string> {
  const scope = SCOPES[role];
  const claims = { role, ...(organizationId ? { org: organizationId } : {}), ...(scope ? { scope } : {}) };
  return (
    new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(subject)
      .setIssuedAt()
      // The server refuses admin tokens that live longer than an hour (member and service: a day).
      .setExpirationTime(role === 'admin' ? '1h' : '6h')
      .sign(new TextEncoder().encode(secret))
  );
}
