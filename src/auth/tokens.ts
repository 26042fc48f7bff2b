import { SignJWT, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';

export const ROLES = ['member', 'service', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** Who is calling, as proven by a verified token. */
export interface Viewer {
  subject: string;
  role: Role;
  /** The organization a member or service acts for; null for an admin, who may act for any. */
  organizationId: string | null;
  /** Seconds since the epoch at which the token stops being valid, if it says. */
  expiresAt: number | null;
}

export class AuthenticationError extends Error {
  override name = 'AuthenticationError';
}

/** What a token must satisfy beyond its signature. */
export interface TokenPolicy {
  /** The longest `exp - iat` accepted, per role, in seconds. */
  maxLifetimeSeconds: Record<Role, number>;
  /** When set, the `iss` claim must equal it. */
  issuer: string | null;
  /** When set, the `aud` claim must contain it. */
  audience: string | null;
  /** How far the issuer's clock may be from ours when `exp`, `iat` and `nbf` are checked. */
  clockSkewSeconds: number;
}

// A leaked token is only worth as much as it lives: a day for the everyday roles, an hour for an
// admin, who may grant credits to anyone.
export const DEFAULT_TOKEN_POLICY: TokenPolicy = {
  maxLifetimeSeconds: { member: 24 * 3600, service: 24 * 3600, admin: 3600 },
  issuer: null,
  audience: null,
  clockSkewSeconds: 30,
};

export function secretKey(secret: string): Uint8Array {
  return new TextEncoder().encode(secret);
}

/**
 * Verifies an `Authorization` header value (`Bearer <JWT>`, HS256) against `policy` and returns
 * its viewer. jose checks the signature, `exp`, `iat` (not in the future, not older than the
 * longest lifetime), `nbf`, `iss` and `aud`; the lifetime of each role is checked here, since the
 * role is only known once the payload is trusted.
 */
export async function verifyAuthorization(
  header: string | null | undefined,
  key: Uint8Array,
  policy: TokenPolicy = DEFAULT_TOKEN_POLICY,
): Promise<Viewer> {
  if (!header) throw new AuthenticationError('Missing Authorization header.');
  const match = /^Bearer\s+(\S+)$/i.exec(header.trim());
  if (!match) throw new AuthenticationError('The Authorization header must be "Bearer <token>".');
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(match[1]!, key, {
      algorithms: ['HS256'],
      requiredClaims: ['exp', 'iat'],
      maxTokenAge: Math.max(...Object.values(policy.maxLifetimeSeconds)),
      clockTolerance: policy.clockSkewSeconds,
      ...(policy.issuer !== null ? { issuer: policy.issuer } : {}),
      ...(policy.audience !== null ? { audience: policy.audience } : {}),
    }));
  } catch (error) {
    throw new AuthenticationError(refusal(error));
  }
  const role = payload.role;
  if (typeof payload.sub !== 'string' || payload.sub.length === 0)
    throw new AuthenticationError('The token has no subject.');
  if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) {
    throw new AuthenticationError('The token has no valid role.');
  }
  const lifetimeMax = policy.maxLifetimeSeconds[role as Role];
  if (payload.exp! - payload.iat! > lifetimeMax) {
    throw new AuthenticationError(
      `The token lives longer than a ${role} token may (${lifetimeMax} s from iat to exp).`,
    );
  }
  const org = payload.org;
  if (role !== 'admin' && (typeof org !== 'string' || org.length === 0)) {
    throw new AuthenticationError('A member or service token must name its organization.');
  }
  return {
    subject: payload.sub,
    role: role as Role,
    organizationId: role === 'admin' ? null : (org as string).toLowerCase(),
    expiresAt: payload.exp!,
  };
}

/** Why jose refused a token, in words that name the claim but echo nothing of the token. */
function refusal(error: unknown): string {
  if (error instanceof joseErrors.JWTExpired) return 'The token has expired.';
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    const claim = ['exp', 'iat', 'nbf', 'iss', 'aud'].includes(error.claim) ? error.claim : 'a';
    if (error.reason === 'missing') return `The token has no "${claim}" claim; it is required.`;
    if (claim === 'iat') return 'The token was issued in the future or too long ago.';
    if (claim === 'nbf') return 'The token is not valid yet.';
    if (claim === 'iss' || claim === 'aud') return `The token's "${claim}" claim is not the one this service accepts.`;
  }
  return 'The token is not valid.';
}

export interface TokenClaims {
  subject: string;
  role: Role;
  organizationId?: string | null;
  /** A jose duration such as '1h' or '30d'. */
  expiresIn?: string;
  issuer?: string | null;
  audience?: string | null;
}

export function signToken(claims: TokenClaims, key: Uint8Array): Promise<string> {
  const jwt = new SignJWT(
    claims.organizationId ? { role: claims.role, org: claims.organizationId } : { role: claims.role },
  )
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(claims.subject)
    .setIssuedAt();
  if (claims.expiresIn) jwt.setExpirationTime(claims.expiresIn);
  if (claims.issuer) jwt.setIssuer(claims.issuer);
  if (claims.audience) jwt.setAudience(claims.audience);
  return jwt.sign(key);
}
