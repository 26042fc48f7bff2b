import { SignJWT, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { isUuid } from '../ledger/validation.ts';

export const ROLES = ['member', 'service', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/**
 * What a token may be used for, on top of its role (least privilege, like restricted API keys):
 * `generation` prices, reserves and settles generations and reads the balance, `read` reads,
 * `billing` buys packs, changes plans and grants credits.
 */
export const SCOPES = ['generation', 'read', 'billing'] as const;
export type Scope = (typeof SCOPES)[number];

/** The longest `sub` accepted; a subject is a name for logs and rate limits, not a document. */
export const SUBJECT_LENGTH_MAX = 200;
// Controls, format characters (bidirectional overrides among them), unassigned code points and
// line separators: a subject is echoed into logs, where it must stay one readable line.
const UNPRINTABLE = /[\p{C}\u2028\u2029]/u;

/** Who is calling, as proven by a verified token. */
export interface Viewer {
  subject: string;
  role: Role;
  /** The organization a member or service acts for; null for an admin, who may act for any. */
  organizationId: string | null;
  /** Seconds since the epoch at which the token stops being valid, if it says. */
  expiresAt: number | null;
  /**
   * The scopes the token's `scope` claim lists; null for a token without one, which keeps every
   * right of its role (accepted only while scopes are not required).
   */
  scopes: readonly Scope[] | null;
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
  /** A member or service token must carry a `scope` claim (TOKEN_SCOPES_REQUIRED). */
  scopesRequired: boolean;
}

// A leaked token is only worth as much as it lives: a day for the everyday roles, an hour for an
// admin, who may grant credits to anyone.
export const DEFAULT_TOKEN_POLICY: TokenPolicy = {
  maxLifetimeSeconds: { member: 24 * 3600, service: 24 * 3600, admin: 3600 },
  issuer: null,
  audience: null,
  clockSkewSeconds: 30,
  scopesRequired: false,
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
  const subject = checkedSubject(payload.sub);
  const role = checkedRole(payload.role);
  const lifetimeMax = policy.maxLifetimeSeconds[role];
  if (payload.exp! - payload.iat! > lifetimeMax) {
    throw new AuthenticationError(
      `The token lives longer than a ${role} token may (${lifetimeMax} s from iat to exp).`,
    );
  }
  const scopes = checkedScopes(payload.scope);
  if (scopes === null && role !== 'admin' && policy.scopesRequired) {
    throw new AuthenticationError(
      `The token has no "scope" claim, which a ${role} token must carry here; mint one with scopes ` +
        '(credits token --scope generation,read).',
    );
  }
  return {
    subject,
    role,
    organizationId: checkedOrganization(payload.org, role),
    expiresAt: payload.exp!,
    scopes,
  };
}

// The claims are checked for shape before anything reads them: a value the service would pass
// on to the database (an `org` that is no UUID) is a bad token, never a failed query.

/** A subject the service accepts: printable text of 1 to SUBJECT_LENGTH_MAX characters. */
export function isAcceptableSubject(sub: string): boolean {
  return sub.length > 0 && sub.length <= SUBJECT_LENGTH_MAX && !UNPRINTABLE.test(sub);
}

function checkedSubject(sub: unknown): string {
  if (typeof sub !== 'string' || sub.length === 0) throw new AuthenticationError('The token has no subject.');
  if (!isAcceptableSubject(sub)) {
    throw new AuthenticationError(
      `The token's "sub" claim must be printable text of at most ${SUBJECT_LENGTH_MAX} characters.`,
    );
  }
  return sub;
}

function checkedRole(role: unknown): Role {
  if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) {
    throw new AuthenticationError('The token has no valid role.');
  }
  return role as Role;
}

/** A member's or service's organization, lower-cased; an admin acts for every one and names none. */
function checkedOrganization(org: unknown, role: Role): string | null {
  if (role === 'admin') {
    if (org !== undefined)
      throw new AuthenticationError('An admin token acts for every organization; it has no "org" claim.');
    return null;
  }
  if (typeof org !== 'string' || org.length === 0) {
    throw new AuthenticationError('A member or service token must name its organization.');
  }
  if (!isUuid(org)) throw new AuthenticationError('The token\'s "org" claim is not an organization id (a UUID).');
  return org.toLowerCase();
}

/**
 * The `scope` claim as OAuth 2 writes it (RFC 8693): one string of scope names separated by
 * single spaces, such as "generation read". Null when the token has none; an empty, unknown or
 * repeated name makes the token invalid rather than quietly narrower.
 */
function checkedScopes(scope: unknown): readonly Scope[] | null {
  if (scope === undefined) return null;
  const refused = () =>
    new AuthenticationError(
      `The token's "scope" claim must be a space-separated list of distinct scopes from ${SCOPES.join(', ')}.`,
    );
  if (typeof scope !== 'string' || scope.length === 0) throw refused();
  const names = scope.split(' ');
  if (names.some((name) => !(SCOPES as readonly string[]).includes(name)) || new Set(names).size !== names.length) {
    throw refused();
  }
  return names as Scope[];
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
  /** Written as the `scope` claim; absent or null for a token without one (all its role's rights). */
  scopes?: readonly Scope[] | null;
  /** A jose duration such as '1h' or '30d'. */
  expiresIn?: string;
  issuer?: string | null;
  audience?: string | null;
}

export function signToken(claims: TokenClaims, key: Uint8Array): Promise<string> {
  const jwt = new SignJWT({
    role: claims.role,
    ...(claims.organizationId ? { org: claims.organizationId } : {}),
    ...(claims.scopes ? { scope: claims.scopes.join(' ') } : {}),
  })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(claims.subject)
    .setIssuedAt();
  if (claims.expiresIn) jwt.setExpirationTime(claims.expiresIn);
  if (claims.issuer) jwt.setIssuer(claims.issuer);
  if (claims.audience) jwt.setAudience(claims.audience);
  return jwt.sign(key);
}
